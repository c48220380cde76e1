"""Shared fixtures: one real smoke run that several test modules inspect."""

import os
from pathlib import Path

import pytest

from benchmark.cli import main


def cli(cwd: Path, *args: str) -> int:
    """``python -m benchmark ARGS`` run in-process from ``cwd``; returns the exit code."""
    old = Path.cwd()
    os.chdir(cwd)
    try:
        return main(list(args))
    finally:
        os.chdir(old)


def run_cli(cwd: Path, *args: str) -> int:
    return cli(cwd, "run", *args, "--quiet")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("smoke")
    assert run_cli(cwd, "--suite", "smoke", "--heartbeat", "1") == 0
    return cwd
