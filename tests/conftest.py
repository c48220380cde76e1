"""Shared fixtures and helpers: one real smoke run that several test modules inspect."""

import collections
import multiprocessing
import os
import time
from pathlib import Path

import optuna
import pytest

from benchmark.cli import main
from benchmark.storage import StoreConfig, open_storage


def cli(cwd: Path, *args: str) -> int:
    """``python -m benchmark ARGS`` run in-process from ``cwd``; returns the exit code."""
    old = Path.cwd()
    os.chdir(cwd)
    try:
        return main(list(args))
    finally:
        os.chdir(old)


def one_line_error(capsys) -> str:
    """The one ``error:`` line a command printed on stderr (no traceback), read from ``capsys``."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in captured.err, captured.err
    return lines[0]


@pytest.fixture(autouse=True)
def idle_machine(monkeypatch):
    """Output as on an idle machine: the tests' own load must not add the busy warnings of run and bench."""
    monkeypatch.setattr("benchmark.processes.os.getloadavg", lambda: (0.0, 0.0, 0.0))


def run_cli(cwd: Path, *args: str) -> int:
    return cli(cwd, "run", *args, "--quiet")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("smoke")
    assert run_cli(cwd, "--suite", "smoke", "--heartbeat", "1") == 0
    return cwd


def worker_pids(parent: int) -> list[int]:
    """The worker processes (multiprocessing's spawn) of process ``parent``."""
    children = [int(p) for p in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]
    return [pid for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


def stopped(pids: list[int], timeout: float = 60) -> bool:
    """Whether every process of ``pids`` has ended within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.5)
    return not any(_alive(pid) for pid in pids)


def _claim_until_none_waits(url: str, start: multiprocessing.Barrier, claimed: multiprocessing.Queue) -> None:
    study = optuna.load_study(study_name="race", storage=open_storage(url, StoreConfig(storage=url)))
    start.wait()
    mine = []
    # What Optuna's optimize claims with (`search`); `run` claims through the same storage update.
    while (trial_id := study._pop_waiting_trial_id()) is not None:
        mine.append(trial_id)
    claimed.put(mine)


def times_claimed(url: str, workers: int = 6, trials: int = 60) -> collections.Counter:
    """How often each of ``trials`` waiting trials was claimed by ``workers`` racing processes."""
    study = optuna.create_study(study_name="race", storage=open_storage(url, StoreConfig(storage=url)))
    for i in range(trials):
        study.enqueue_trial({"x": i})
    context = multiprocessing.get_context("spawn")
    start, claimed = context.Barrier(workers), context.Queue()
    processes = [context.Process(target=_claim_until_none_waits, args=(url, start, claimed)) for _ in range(workers)]
    for process in processes:
        process.start()
    counts = collections.Counter(trial_id for _ in processes for trial_id in claimed.get(timeout=120))
    for process in processes:
        process.join()
    return counts
