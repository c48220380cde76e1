"""Worker processes on one machine (`run --workers`, `search --workers`): started together,
stopped together.

Ctrl-C in a terminal reaches every worker; ``kill -INT`` or SIGTERM (``timeout``, Slurm,
systemd) reaches the parent alone, which passes it on; a worker whose parent died (``kill -9``)
stops itself. No worker trains on unseen: the next run takes its unit or trial up again.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

WORKER_GRACE = 3.0  # seconds workers get to stop on their own after Ctrl-C


def stop_with_parent() -> None:
    """Interrupt this worker process (as Ctrl-C) when its parent dies."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=lambda: (parent.join(), os.kill(os.getpid(), signal.SIGINT)), daemon=True).start()


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises ``KeyboardInterrupt`` within the block, as Ctrl-C does."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_workers(processes: Sequence[multiprocessing.process.BaseProcess], grace: float = WORKER_GRACE) -> None:
    """After Ctrl-C: a terminal's reached the workers as well and they stop within ``grace``
    seconds; a ``kill -INT`` of the parent alone did not, so it is passed on to them."""
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            os.kill(process.pid, signal.SIGINT)
    for process in processes:
        process.join()


def run_workers(processes: Sequence[multiprocessing.process.BaseProcess]) -> None:
    """Start ``processes`` and wait for them; on Ctrl-C or SIGTERM, stop them first and re-raise."""
    with terminate_as_interrupt():
        try:
            for process in processes:
                process.start()
            for process in processes:
                process.join()
        except KeyboardInterrupt:
            stop_workers([p for p in processes if p.pid is not None])
            raise
