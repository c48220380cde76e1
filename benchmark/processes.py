"""Worker processes on one machine (`run --workers`, `search --workers`): started together,
stopped together.

Ctrl-C in a terminal reaches every worker (none heeds it in a run that ignores it, as a shell
starts one with ``&``); ``kill -INT`` or SIGTERM (``timeout``, Slurm, systemd) reaches the parent
alone, which passes it on; a worker whose parent died (``kill -9``) stops itself. No worker
trains on unseen: the next run takes its unit or trial up again.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    import torch

Summary = TypeVar("Summary")

WORKER_GRACE = 3.0  # seconds workers get to stop on their own after Ctrl-C
WORKER_PATIENCE = 60.0  # seconds after which a worker whose interrupt was lost is ended


class Interrupted(KeyboardInterrupt, Generic[Summary]):
    """Ctrl-C or SIGTERM, raised once the work done is stored; carries the command's summary of it."""

    def __init__(self, summary: Summary) -> None:
        super().__init__()
        self.summary = summary


class Interrupts:
    """Ctrl-C or SIGTERM in a worker: raised at once while it trains or waits, elsewhere at the next check.

    Raised inside a storage call, a ``KeyboardInterrupt`` broke SQLAlchemy's clean-up ("Error
    closing cursor" and a traceback on the terminal) or vanished in one of its callbacks and
    left a run that did not stop (2 of 40 Ctrl-C tests). Outside the training and waiting
    regions, where the storage is used, the interrupt is only noted; ``check`` raises it.
    """

    def __init__(self) -> None:
        self.requested = False
        self._signal = signal.SIGTERM  # the one that came, which ``_unraisable`` sends again
        self._immediate = False
        self._hook = sys.unraisablehook  # the one ``handling`` replaces, and puts back
        self._again: threading.Timer | None = None  # an interrupt to raise again (``_unraisable``)

    def on_signal(self, signum: int, frame: object) -> None:
        self.requested = True
        self._signal = signum
        if self._immediate:
            raise KeyboardInterrupt

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    @contextmanager
    def immediate(self) -> Iterator[None]:
        """A region that an interrupt can cut short without leaving a storage call half done."""
        self.check()
        self._immediate = True
        try:
            yield
        finally:
            self._immediate = False

    def _unraisable(self, unraisable: sys.UnraisableHookArgs) -> None:
        """An interrupt raised while a weakref callback or ``__del__`` ran is ignored there, with an
        "Exception ignored" traceback on the terminal: raised again instead, once that code is done."""
        if not (isinstance(unraisable.exc_value, KeyboardInterrupt) and self.requested):
            self._hook(unraisable)
        elif self._immediate:  # a moment later, from a timer: a handler run now would raise inside the hook
            self._again = threading.Timer(0.05, os.kill, (os.getpid(), self._signal))
            self._again.daemon = True
            self._again.start()

    @contextmanager
    def handling(self) -> Iterator[None]:
        """SIGINT and SIGTERM go to ``on_signal`` within the block. A Ctrl-C ignored stays ignored,
        as Python leaves it: a shell starts a command run with ``&`` so, for the terminal's Ctrl-C to
        stop the foreground command alone."""
        signals = [sig for sig in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(sig) is not signal.SIG_IGN]
        previous = {sig: signal.signal(sig, self.on_signal) for sig in signals}
        hook = sys.unraisablehook
        if hook != self._unraisable:  # not this block's own, nested: it would pass others to itself
            self._hook = hook
        sys.unraisablehook = self._unraisable
        try:
            yield
        finally:
            if self._again is not None:  # the interrupt was raised by then: not after the block, elsewhere
                self._again.cancel()
            sys.unraisablehook = hook
            for sig, handler in previous.items():  # one that came all the same is only noted, as it runs first
                signal.signal(sig, handler)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block has run, then act as they would have (their earlier
    handlers back first): for steps that must not stop half done. One the block's own error ends
    is not raised again. Off the main thread, which Python's signal handlers never interrupt,
    and for a signal ignored, nothing to do."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig, handler in previous.items():
        if handler not in (signal.SIG_IGN, None):  # None: a handler set outside Python, left as it is
            signal.signal(sig, lambda signum, frame: arrived.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler not in (signal.SIG_IGN, None):
                signal.signal(sig, handler)
    if arrived:
        signal.raise_signal(arrived[0])


def worker_id(pid: int | None = None) -> str:
    """``host:pid``: which process trained a trial, as its ``worker`` user attribute records; this one's,
    or process ``pid``'s of this machine."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9; real-time signals have no name of their own."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def worker_exits(processes: Sequence[multiprocessing.process.BaseProcess]) -> tuple[int, list[str]]:
    """How ``run_workers``' processes ended: how many stopped with an error (its traceback is on
    their stderr), and the signals that killed the others that did not end well."""
    return (sum(process.exitcode > 0 for process in processes),
            [signal_name(-process.exitcode) for process in processes if process.exitcode < 0])


def exit_warnings(workers: int, failures: int, killed: list[str], unfinished: str) -> list[str]:
    """The warnings on worker processes that did not end well (``worker_exits``); ``unfinished``
    says what becomes of the work a killed one held."""
    lines = []
    if killed:  # no traceback to point to: say what stopped them
        lines.append(f"warning: {len(killed)} of {workers} worker processes were killed ({', '.join(killed)}); "
                     + unfinished)
    if failures:
        lines.append(f"warning: {failures} of {workers} worker processes stopped with an error (messages above)")
    return lines


def check_workers(count: int) -> None:
    """``ValueError`` unless a run asks for at least one worker process."""
    if count < 1:
        raise ValueError(f"--workers must be >= 1, got {count}")


def usable_cores() -> int:
    """The cores this process may run on (its affinity: what Slurm, taskset or a container allow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_threads(workers: int) -> int:
    """The torch threads of each of ``workers`` processes: the usable cores shared among them (N
    workers × all cores each would thrash), or fewer where OMP_NUM_THREADS asks for fewer, as torch
    takes it in one process."""
    share = max(1, usable_cores() // workers)
    asked = os.environ.get("OMP_NUM_THREADS", "")
    return min(share, int(asked)) if asked.isdigit() and int(asked) >= 1 else share


def training_threads(workers: int) -> int:
    """The torch threads each of ``workers`` processes trains with: one keeps torch's own (a thread per
    core, or OMP_NUM_THREADS), several share the usable cores (``worker_threads``)."""
    import torch

    return torch.get_num_threads() if workers == 1 else worker_threads(workers)


CPUINFO = Path("/proc/cpuinfo")  # Linux's description of the CPU; other systems have none


def cpuinfo(field: str) -> str | None:
    """The first value of ``field`` (``vendor_id``, ``model name``) in Linux's description of the CPU;
    '' where it gives none, None on a system without one."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return None
    found = re.search(rf"^{re.escape(field)}\s*:[ \t]*(.*?)\s*$", text, re.MULTILINE)
    return found.group(1) if found else ""


def _machine_cpus() -> int:
    return os.cpu_count() or 1  # the load average is the machine's, whatever our affinity


def our_load(workers: int) -> int:
    """The load average a run of ``workers`` processes keeps up by itself: its training threads, at
    most one per core, and at least one per process (processes beyond the cores take turns, and the
    load counts those waiting)."""
    return max(min(_machine_cpus(), training_threads(workers) * workers), workers)


def busy_load(load: float | None = None, cpus: int | None = None, ours: int | None = None) -> float | None:
    """The last minute's load average when other work takes cores from ours, else None: over the
    cores (or ``ours``, the load our own work keeps up (``our_load``; default one per core), where
    that is more), by half a load per core of ours. Work that leaves cores free takes none."""
    load = os.getloadavg()[0] if load is None else load
    cpus = cpus or _machine_cpus()
    ours = cpus if ours is None else ours
    return load if load > max(cpus, ours) + 0.5 * min(ours, cpus) else None


def busy_note(during: str, consequence: str, load: float | None = None, cpus: int | None = None,
              ours: int | None = None) -> str | None:
    """A warning when other work shared the machine's cores ``during`` ours (``busy_load``), saying
    its ``consequence``."""
    cpus = cpus or _machine_cpus()
    load = busy_load(load, cpus, ours)
    if load is None:
        return None
    return (f"warning: the machine was busy while {during} (load average {load:.1f} on {cpus} cores): other work "
            f"took cores from it, so {consequence}")


def shared_threads_note(threads: int, load: float | None = None, cpus: int | None = None) -> str | None:
    """A note before CPU training, where other work already holds the machine's cores: each step split
    over ``threads`` threads waits for the slowest, whose core the other work holds (on 2 busy cores,
    5 times slower than one thread)."""
    cpus = cpus or _machine_cpus()
    if threads < 2 or (load := busy_load(load, cpus)) is None:
        return None
    return (f"note: the machine is busy (load average {load:.1f} on {cpus} cores): each training step is split "
            f"over {threads} threads, which wait for one another while other work holds their cores; on a shared "
            "machine, OMP_NUM_THREADS=1 before the command trains several times faster")


def crowded_note(workers: int, cores: int | None = None) -> str | None:
    """A warning when ``workers`` processes outnumber the ``cores`` (default: ``usable_cores``):
    each then gets one thread, and they take turns on the cores, slower than fewer workers."""
    cores = cores or usable_cores()
    if workers <= cores:
        return None
    return (f"warning: {workers} worker processes on {cores} core{'s' * (cores != 1)}: workers beyond one per core "
            f"take turns and slow each other down; --workers {cores} is the most that helps here")


def stop_with_parent(patience: float = WORKER_PATIENCE) -> None:
    """Interrupt this worker process (as Ctrl-C) when its parent dies; end it after ``patience``
    seconds if the interrupt was lost (the trial it leaves RUNNING is taken up by heartbeat)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os.kill(os.getpid(), signal.SIGTERM)  # heeded as Ctrl-C is, even where Ctrl-C is ignored
        time.sleep(patience)
        os._exit(130)

    threading.Thread(target=watch, daemon=True).start()


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises ``KeyboardInterrupt`` within the block, as Ctrl-C does; not where it is
    ignored, nor off the main thread (which signals never reach)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def interrupts_ignored() -> Iterator[None]:
    """Ctrl-C and SIGTERM are ignored within the block (in the main thread; elsewhere signals
    cannot be set, nor do they arrive). One caught before it still raises as the block begins
    (``signal.signal`` runs pending handlers first); the handlers set by then are restored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, signal.SIG_IGN)
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_workers(processes: Sequence[multiprocessing.process.BaseProcess], grace: float = WORKER_GRACE,
                 patience: float = WORKER_PATIENCE) -> None:
    """After Ctrl-C: a terminal's reached the workers as well and they stop within ``grace``
    seconds; a ``kill -INT`` or SIGTERM of the parent alone did not, so it is passed on to them (as
    SIGTERM, which they heed where Ctrl-C is ignored), and a worker still running ``patience``
    seconds later is killed.

    Within the grace another interrupt is ignored: ``timeout -s INT`` sends its signal to the parent
    twice (to it and to its process group), and a parent that stopped waiting there reported the
    workers' trials as running while the workers were still storing them as interrupted. One
    during the patience kills the workers left at once."""
    deadline = time.monotonic() + grace
    with interrupts_ignored():
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
    alive = [process for process in processes if process.is_alive()]
    for process in alive:
        os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + patience
    try:
        for process in alive:
            process.join(max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:  # asked again: stop now
        pass
    for process in alive:
        if process.is_alive():  # the interrupt was lost: its unit or trial is taken up by heartbeat
            process.kill()
            process.join()


def heeds_ctrl_c() -> bool:
    """Whether this process heeds Ctrl-C: a shell starts a command run with ``&`` with it ignored,
    and its workers then ignore it too (``heed_ctrl_c``)."""
    return signal.getsignal(signal.SIGINT) is not signal.SIG_IGN


def heed_ctrl_c(parent_heeds: bool) -> None:
    """In a worker started by ``start_shielded`` (Ctrl-C ignored): heed it again where the parent does."""
    if parent_heeds:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def start_shielded(processes: Sequence[multiprocessing.process.BaseProcess]) -> None:
    """Start spawned ``processes`` with Ctrl-C ignored, so that one arriving while they still import
    torch prints no import traceback; each sets its own handler once started. A worker inherits an
    ignored signal through exec; the parent ignores it only for the milliseconds that starting one
    takes (a Ctrl-C within them is lost: a second one stops the command)."""
    for process in processes:
        previous = signal.getsignal(signal.SIGINT)
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            process.start()
        finally:
            signal.signal(signal.SIGINT, previous)


def shared_with_workers(images: torch.Tensor) -> torch.Tensor | None:
    """``images`` moved into shared memory, which spawned workers given them map rather than each
    loading and holding a copy of its own (CelebA's training split is 8 GB as float32); None, said on
    stderr, where that fails, mostly as ``/dev/shm`` has no room for them (a container's is 64 MB
    unless ``--shm-size``)."""
    try:
        return images.share_memory_()
    except RuntimeError as err:  # torch: "unable to allocate shared memory(shm) ...: No space left on device"
        print(f"note: each worker process loads the dataset itself and holds its own copy "
              f"({images.nbytes / 2**20:,.0f} MiB): it could not be put in shared memory ({err})", file=sys.stderr)
        return None


def run_workers(target: Callable[..., None], args: Sequence[tuple],
                ended: Callable[[multiprocessing.process.BaseProcess], None] | None = None
                ) -> list[multiprocessing.process.BaseProcess]:
    """Run ``target(*a)`` for each ``a`` in ``args`` in a worker process of its own and wait for them,
    calling ``ended`` with each as it ends while the others go on; on Ctrl-C or SIGTERM (or an error of
    ``ended``), stop them first and re-raise. Returns the processes, with their exit codes.

    Workers are spawned (fork and torch's threads do not mix) and start with Ctrl-C ignored: one
    that arrived while a worker still imported torch printed that import's traceback. A worker
    stopped that way learns it from ``stop`` once started, or, still starting after the grace of
    ``stop_workers``, is ended by its SIGTERM (it holds no work yet); a later Ctrl-C reaches it as
    usual, unless this process ignores Ctrl-C: then its workers do too."""
    context = multiprocessing.get_context("spawn")
    # a flag in shared memory, not an Event: an Event's five semaphores outlived a parent killed by
    # ``kill -9``, and the resource tracker warned of them as leaked
    stop = context.RawValue(ctypes.c_bool, False)
    processes = [context.Process(target=_worker_main, args=(stop, heeds_ctrl_c(), target, a)) for a in args]
    with terminate_as_interrupt():
        try:
            start_shielded(processes)
            running = list(processes)
            while running:
                multiprocessing.connection.wait([process.sentinel for process in running])
                for process in [process for process in running if not process.is_alive()]:
                    process.join()
                    running.remove(process)
                    if ended is not None:
                        ended(process)
        except BaseException:
            started = [p for p in processes if p.pid is not None]
            try:
                stop.value = True
                stop_workers(started)
            except KeyboardInterrupt:  # a second signal that came before stop_workers could ignore it
                stop.value = True
                stop_workers(started)
            raise
    return processes


def _worker_main(stop: ctypes.c_bool, parent_heeds: bool, target: Callable[..., None],
                 args: tuple) -> None:
    try:
        heed_ctrl_c(parent_heeds)
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # the parent's way to stop it (``stop_workers``)
        from tqdm import tqdm

        # tqdm's default lock is a multiprocessing semaphore of this process alone (a spawned worker shares
        # none), which a killed worker leaks: the run then ended with the resource tracker's warning
        tqdm.set_lock(threading.RLock())
        if not stop.value:  # else the run was stopped while this worker started
            target(*args)
    except KeyboardInterrupt:  # the target's own work is stored or handed back; the parent reports
        pass
    finally:
        # Done: a Ctrl-C now would only interrupt the exit handlers (tqdm's, torch's), printing a traceback
        # each; one that does not end is killed by the parent (``stop_workers``).
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
