"""Shared fixtures: one real smoke run that several test modules inspect."""

import os
from pathlib import Path

import pytest

from benchmark.cli import main


def run_cli(cwd: Path, *args: str) -> int:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        return main(["run", *args, "--quiet"])
    finally:
        os.chdir(old)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("smoke")
    assert run_cli(cwd, "--suite", "smoke", "--heartbeat", "1") == 0
    return cwd
