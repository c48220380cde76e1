import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import no_shared_memory, worker_pids

from benchmark.processes import Interrupts, shared_with_workers, signals_deferred, terminate_as_interrupt

# A worker whose start-up (it imports this module, as a real worker imports torch) takes long
# enough for Ctrl-C to arrive in the middle of it.
SLOW_WORKER = """
import multiprocessing
import os
import time

if multiprocessing.current_process().name != "MainProcess":  # in a worker
    os.write(1, b"importing\\n")  # one write: the two workers' lines never interleave
    time.sleep(4)


def work():
    time.sleep(60)
"""

PARENT = """
import sys

import slow_worker
from benchmark.processes import run_workers

if __name__ == "__main__":
    try:
        run_workers(slow_worker.work, [(), ()])
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
"""


def start(cwd: Path) -> subprocess.Popen:
    """The parent of two slow workers, in a session of its own (a terminal's process group), once
    its first worker is in the middle of its start-up."""
    (cwd / "slow_worker.py").write_text(textwrap.dedent(SLOW_WORKER))
    (cwd / "parent.py").write_text(textwrap.dedent(PARENT))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), str(Path(__file__).parents[1])])}
    process = subprocess.Popen([sys.executable, "parent.py"], cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert process.stdout.readline() == "importing\n"
    return process


def ended_interrupted(process: subprocess.Popen, within: float) -> bool:
    """Whether ``process`` ended as interrupted, saying so alone (no traceback), within ``within`` seconds."""
    started = time.monotonic()
    _, err = process.communicate(timeout=90)
    return process.returncode == 130 and err == "interrupted\n" and time.monotonic() - started < within


def test_ctrl_c_while_workers_start_stops_them_without_a_traceback(tmp_path):
    process = start(tmp_path)
    os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the workers that still import too
    assert ended_interrupted(process, 20)  # once started, not after the parent's patience (60 s)


def test_an_interrupt_of_the_parent_alone_while_workers_start_stops_them(tmp_path):
    process = start(tmp_path)
    os.kill(process.pid, signal.SIGINT)  # kill -INT: passed on to the workers, which ignore Ctrl-C while they start
    assert ended_interrupted(process, 20)


def test_ctrl_c_reaches_workers_that_have_started(tmp_path):
    process = start(tmp_path)
    time.sleep(8)  # past the start-up: the workers sleep in work()
    os.killpg(process.pid, signal.SIGINT)
    assert ended_interrupted(process, 10)


def test_deferred_signals_act_after_the_block_as_before_it_and_an_ignored_one_stays_ignored():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("after the Ctrl-C")
    assert done == ["after the Ctrl-C"] and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a job started in the background gets it
    try:
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # and no KeyboardInterrupt above
    finally:
        signal.signal(signal.SIGINT, previous)


# A worker that takes a second to store its work as interrupted, as a search worker tells Optuna its trial.
RECORDING_WORKER = """
import os
import time


def work(folder):
    try:
        os.write(1, b"working\\n")
        time.sleep(60)
    except KeyboardInterrupt:
        time.sleep(1)
        open(os.path.join(folder, f"stored-{os.getpid()}"), "w").close()
        raise
"""

RECORDING_PARENT = """
import os
import sys

import recording_worker
from benchmark.processes import run_workers

if __name__ == "__main__":
    try:
        run_workers(recording_worker.work, [(sys.argv[1],), (sys.argv[1],)])
    except KeyboardInterrupt:
        print(f"{len(os.listdir(sys.argv[1]))} stored", file=sys.stderr)
        sys.exit(130)
"""


def start_recording(cwd: Path, ctrl_c: signal.Handlers) -> subprocess.Popen:
    """The parent of two ``RECORDING_WORKER``s, in a session of its own, with Ctrl-C's disposition
    ``ctrl_c``, once both work."""
    (cwd / "recording_worker.py").write_text(textwrap.dedent(RECORDING_WORKER))
    (cwd / "parent.py").write_text(textwrap.dedent(RECORDING_PARENT))
    (cwd / "stored").mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), str(Path(__file__).parents[1])])}
    process = subprocess.Popen([sys.executable, "parent.py", str(cwd / "stored")], cwd=cwd, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, ctrl_c))
    assert [process.stdout.readline() for _ in range(2)] == ["working\n"] * 2
    return process


def test_a_signal_sent_twice_as_timeout_does_waits_for_the_workers_to_store_their_work(tmp_path):
    # `timeout -s INT` signals the parent and then its process group: the second signal cut the parent's
    # wait short, and it reported the workers' trials as running while they were storing them.
    process = start_recording(tmp_path, signal.SIG_DFL)
    os.kill(process.pid, signal.SIGINT)
    time.sleep(0.2)  # a moment later, as a second Ctrl-C would come: the same for the parent's wait
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130 and err == "2 stored\n"


def test_workers_of_a_run_that_ignores_ctrl_c_ignore_it_and_stop_on_its_sigterm(tmp_path):
    process = start_recording(tmp_path, signal.SIG_IGN)  # as a shell script starts `benchmark run ... &`
    os.killpg(process.pid, signal.SIGINT)  # the terminal's Ctrl-C, meant for the script's foreground command
    time.sleep(2)  # a worker that heeded it would have stored its work within a second
    assert process.poll() is None and not os.listdir(tmp_path / "stored")
    process.terminate()  # the run is stopped its own way: passed on as a signal the workers heed
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130 and err == "2 stored\n"


def test_interrupts_leave_an_ignored_ctrl_c_ignored():
    interrupts = Interrupts()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts.handling():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            assert not interrupts.requested
            assert signal.getsignal(signal.SIGTERM) == interrupts.on_signal
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


BAR_WORKER = """
import os
import sys
import time

from tqdm.auto import tqdm

from benchmark.processes import stop_with_parent


def work():
    stop_with_parent()  # as a run's or search's worker does
    tqdm(total=1, file=sys.stderr)  # and shows its progress
    os.write(1, b"working\\n")
    time.sleep(60)
"""

BAR_PARENT = """
import bar_worker
from benchmark.processes import run_workers

if __name__ == "__main__":
    run_workers(bar_worker.work, [()])
"""


EXITING_WORKER = """
import atexit
import os
import time


def slow_exit():  # as tqdm's and torch's exit handlers take their time
    os.write(1, b"exiting\\n")
    time.sleep(3)


def work():
    atexit.register(slow_exit)
"""


def test_a_ctrl_c_while_a_worker_that_is_done_exits_prints_no_traceback(tmp_path):
    # Ctrl-C at the very end of a run interrupted the workers' exit handlers, a traceback each.
    (tmp_path / "exiting_worker.py").write_text(textwrap.dedent(EXITING_WORKER))
    (tmp_path / "parent.py").write_text(textwrap.dedent(BAR_PARENT.replace("bar_worker", "exiting_worker")))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).parents[1])])}
    process = subprocess.Popen([sys.executable, "parent.py"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "exiting\n"
    (worker,) = worker_pids(process.pid)
    os.kill(worker, signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0 and err == ""


@pytest.mark.parametrize("killed", ["worker", "parent"])
def test_a_killed_process_leaves_no_leaked_semaphore_warning(tmp_path, killed):
    (tmp_path / "bar_worker.py").write_text(textwrap.dedent(BAR_WORKER))
    (tmp_path / "parent.py").write_text(textwrap.dedent(BAR_PARENT))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).parents[1])])}
    process = subprocess.Popen([sys.executable, "parent.py"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "working\n"
    (worker,) = worker_pids(process.pid)
    os.kill(worker if killed == "worker" else process.pid, signal.SIGKILL)  # out of memory, or a user's kill -9
    # the pipe ends once the worker and the resource tracker, which warns as it ends, have ended too
    err = process.stderr.read()
    assert process.wait(timeout=60) == (0 if killed == "worker" else -signal.SIGKILL)
    assert "leaked" not in err, err


def test_sigterm_is_an_interrupt_in_the_block_but_an_ignored_one_stays_ignored_and_other_threads_be():
    def elsewhere(*args):  # the handler before the block; not the default, which would end pytest
        pass

    previous = signal.signal(signal.SIGTERM, elsewhere)
    try:
        with pytest.raises(KeyboardInterrupt), terminate_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # a handler runs between bytecodes: the signal arrives here at the latest
        assert signal.getsignal(signal.SIGTERM) is elsewhere
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as a launcher that wants it ignored sets it
        with terminate_as_interrupt():
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)
    errors = []

    def off_the_main_thread():  # main() called from a thread: signal.signal would raise there
        try:
            with terminate_as_interrupt():
                pass
        except ValueError as error:
            errors.append(error)

    thread = threading.Thread(target=off_the_main_thread)
    thread.start()
    thread.join()
    assert errors == []


SHARING_WORKER = """
def work(images, index):
    images[index] = index + 1  # seen by the parent only where the worker maps the parent's memory
"""

SHARING_PARENT = """
import torch

import sharing_worker
from benchmark.processes import run_workers, shared_with_workers

if __name__ == "__main__":
    images = shared_with_workers(torch.zeros(2))
    shared = images.is_shared()  # before run_workers, whose pickling would share it too
    run_workers(sharing_worker.work, [(images, 0), (images, 1)])
    print(shared, images.tolist())
"""


def test_workers_map_the_images_shared_with_them_instead_of_holding_copies(tmp_path):
    (tmp_path / "sharing_worker.py").write_text(textwrap.dedent(SHARING_WORKER))
    (tmp_path / "parent.py").write_text(textwrap.dedent(SHARING_PARENT))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).parents[1])])}
    done = subprocess.run([sys.executable, "parent.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.stdout == "True [1.0, 2.0]\n" and done.stderr == "", done.stderr  # no note of loading apart


def test_images_shared_memory_has_no_room_for_are_left_for_each_worker_to_load(monkeypatch, capsys):
    no_shared_memory(monkeypatch)
    assert shared_with_workers(torch.zeros(3, 1024, 1024)) is None
    assert capsys.readouterr().err == (
        "note: each worker process loads the dataset itself and holds its own copy (12 MiB): it could not be put in "
        "shared memory (unable to allocate shared memory(shm) for file </torch_1_2_0>: No space left on device (28))\n")
