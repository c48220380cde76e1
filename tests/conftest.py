"""Shared fixtures and helpers: one real smoke run that several test modules inspect, and what
more than one module needs (the CLI in-process, MNIST files, figure checks, blob images, text tables,
search studies)."""

import collections
import contextlib
import multiprocessing
import os
import re
import struct
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

from benchmark.cli import main
from benchmark.search_space import SearchSettings
from benchmark.storage import StoreConfig, open_storage, stored_attr, versioned


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


def text_table(lines: list[str]) -> tuple[list[str], list[str], list[list[str]]]:
    """A table as tabulate's "simple" format prints it (a header, a rule of dashes, the rows): the
    column names, each column's alignment ("left", "right", else "neither") and the rows' cells,
    cut where the rule's dashes mark the columns. tabulate pads a header two wider than its name,
    so the header alone never fills its column and tells the two alignments apart."""
    header, rule, *rows = lines
    spans = [match.span() for match in re.finditer("-+", rule)]
    columns = [[line[start:end] for line in [header, *rows]] for start, end in spans]

    def alignment(cells: list[str], width: int) -> str:
        shown = [cell for cell in cells if cell.strip()]
        if all(len(cell) == width and not cell.endswith(" ") for cell in shown):
            return "right"
        return "left" if not any(cell.startswith(" ") for cell in shown) else "neither"

    return ([column[0].strip() for column in columns],
            [alignment(column, end - start) for column, (start, end) in zip(columns, spans)],
            [[column[i].strip() for column in columns] for i in range(1, len(rows) + 1)])


@pytest.fixture(autouse=True)
def idle_machine(monkeypatch):
    """Output as on an idle machine: the tests' own load must not add the busy warnings of run and bench."""
    monkeypatch.setattr("benchmark.processes.os.getloadavg", lambda: (0.0, 0.0, 0.0))


def no_shared_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sharing a tensor fails as torch's does in a container's 64 MB ``/dev/shm``."""
    def no_room(self):
        raise RuntimeError("unable to allocate shared memory(shm) for file </torch_1_2_0>: "
                           "No space left on device (28)")

    monkeypatch.setattr(torch.Tensor, "share_memory_", no_room)


def given_to_workers(monkeypatch: pytest.MonkeyPatch, run_workers: str, room: bool) -> list:
    """What each worker is given as its images once ``run_workers`` (the name patched: it starts none)
    is called; without ``room``, sharing memory fails (``no_shared_memory``)."""
    given = []
    monkeypatch.setattr(run_workers, lambda target, args, ended: given.extend(a[-1] for a in args) or [])
    if not room:
        no_shared_memory(monkeypatch)
    return given


def check_given(given: list, pool: torch.Tensor, room: bool, err: str) -> None:
    """Two workers were given ``pool`` in shared memory, or, without ``room``, nothing and a note."""
    note = "note: each worker process loads the dataset itself and holds its own copy"
    assert (note in err) == (not room), err
    if room:
        assert len(given) == 2 and all(images.is_shared() and torch.equal(images, pool) for images in given)
    else:
        assert given == [None, None]


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


def write_idx_images(path: Path, images: np.ndarray) -> None:
    n, rows, cols = images.shape
    path.write_bytes(struct.pack(">IIII", 2051, n, rows, cols) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    path.write_bytes(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


def write_mnist(root: Path, train: np.ndarray, train_y: np.ndarray, test: np.ndarray, test_y: np.ndarray) -> None:
    """MNIST's four idx files under ``root``, as torchvision reads them."""
    # torchvision 0.29 reads the *uncompressed* files from MNIST/raw (the .gz files are only
    # extracted by download()), and _check_exists wants all four whichever split is asked for.
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx_images(raw / "train-images-idx3-ubyte", train)
    write_idx_labels(raw / "train-labels-idx1-ubyte", train_y)
    write_idx_images(raw / "t10k-images-idx3-ubyte", test)
    write_idx_labels(raw / "t10k-labels-idx1-ubyte", test_y)


def assert_figure(path: Path, min_width: int = 0) -> None:
    """A PDF starts as one; a PNG is a whole image, at least ``min_width`` wide, not of one colour."""
    if path.suffix == ".pdf":
        assert path.read_bytes()[:4] == b"%PDF", path.name
    elif path.suffix == ".png":
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            low, high = image.convert("L").getextrema()
            assert image.size[0] >= min_width and high - low > 10, f"{path.name}: {image.size}, {low}..{high}"


def blobs(side: int, centres: list[tuple[float, float]]) -> torch.Tensor:
    """Gaussian blobs on black at ``centres`` (x, y in [-1, 1]): (len(centres), 1, side, side) in [0, 1]."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
    return torch.stack([torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 0.1) for x, y in centres])[:, None]


@contextlib.contextmanager
def one_torch_thread():
    # Two shared cores: several torch threads per process slow tiny models down many times.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def terminal(monkeypatch) -> None:
    """Captured stderr taken for a terminal, where a progress bar is redrawn at each change, not written
    as a line a minute (``benchmark.progress.LogLines``)."""
    monkeypatch.setattr("benchmark.progress.redrawn", lambda stream: True)


def miss_the_first_look(monkeypatch, target: str) -> list[str]:
    """Patch ``target`` (a module's ``stored_attr``) to find nothing the first time, as when another
    process makes the study between a command's look and its opening it; returns the keys looked up."""
    looks: list[str] = []

    def before_the_other_made_it(url, study, key):
        looks.append(key)
        return None if len(looks) == 1 else stored_attr(url, study, key)

    monkeypatch.setattr(target, before_the_other_made_it)
    return looks


def searched(studies: Path, name: str, settings: SearchSettings) -> None:
    """A search study ``name`` in ``studies/<name>.db``, as `search` leaves it, with one complete trial."""
    studies.mkdir(exist_ok=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{studies / name}.db")
    study.set_user_attr("settings", versioned(settings.to_dict()))
    distributions = {k: optuna.distributions.FloatDistribution(r.low, r.high, log=r.log)
                     for k, r in settings.ranges.items()}
    params = {k: (r.low * r.high) ** 0.5 for k, r in settings.ranges.items()}
    study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=0.1))


# A suite of two configurations that a search of `vae 1 single gaussian` tunes one of, quick to run.
TUNED_SUITE = """
name = "tuned"
limit = 150
folds = 2
[train]
epochs = 1
batch_size = 32
[[configurations]]
family = "vae"
config = 1
method = "single"
sampling = "gaussian"
exponent = 40
[[configurations]]
family = "vae"
config = 1
method = "baseline"
"""
