"""The run's ETA: units weighted by their estimated cost, only this session's work sets the rate; bars in a log."""

import io
import os
import pty
import re
import sys

import pytest
from conftest import cli
from tqdm import tqdm

from benchmark.prior_stage import run_prior_stage
from benchmark.progress import CostEta, LogLines, progress_bar
from benchmark.runner import run_suite
from benchmark.search import run_search
from benchmark.search_space import SearchSettings
from benchmark.storage import StoreConfig
from benchmark.suites import get_suite


@pytest.fixture
def clock():
    now = [100.0]
    return now, lambda: now[0]


def test_a_vq_vae_3_unit_is_estimated_to_cost_many_gaussian_vae_units():
    costs = get_suite("quick").unit_seconds()
    assert costs["vq-vae/3/baseline"] > 5 * costs["vae/1/baseline"]
    assert costs["vae/1/multidecoder/exact"] > costs["vae/1/baseline"]


def test_units_done_before_this_session_do_not_set_the_rate(clock):
    now, tick = clock
    eta = CostEta({"a": 1.0, "b": 1.0, "c": 8.0}, tick)
    eta.settle({"a"})  # resumed: done in an earlier session
    now[0] = 130.0
    assert str(eta) == "?"  # nothing done here yet
    eta.settle({"a", "b"})
    assert str(eta) == tqdm.format_interval(30 / 1.0 * 8.0)  # 30 s for a cost of 1; 8 left


def test_units_in_training_count_by_their_finished_epochs_and_once_settled_only_once(clock):
    now, tick = clock
    eta = CostEta({f"k#{fold}": 2.0 for fold in range(5)}, tick)
    eta.settle(set())
    now[0] = 110.0
    for fold in range(5):  # five folds trained stacked, half done
        eta.progress(f"k#{fold}", 0.5)
    assert str(eta) == tqdm.format_interval(10 / 5.0 * 5.0)
    eta.progress("k#0", 1.0)
    eta.settle({"k#0"})  # the finished fold is no longer counted as in training
    assert eta.in_training.keys() == {f"k#{fold}" for fold in range(1, 5)}
    assert str(eta) == tqdm.format_interval(10 / 6.0 * 4.0)


def test_the_estimates_match_a_measured_quick_run():
    # Seconds per unit of a `quick` run on the Intel Xeon (float32, one process), baseline.
    measured = {"vae/1/baseline": 1.21, "vae/2/baseline": 0.97, "vq-vae/1/baseline": 0.57,
                "vq-vae/2/baseline": 12.03, "vq-vae/3/baseline": 19.96}
    costs = get_suite("quick").unit_seconds()
    for config_id, seconds in measured.items():
        assert costs[config_id] == pytest.approx(seconds, rel=0.3)


def test_time_spent_waiting_for_a_dead_worker_s_unit_does_not_set_the_rate(clock):
    now, tick = clock
    eta = CostEta({"a": 1.0, "b": 1.0}, tick)
    with eta.waiting():
        now[0] += 50.0  # five beats of a dead worker's silence
    now[0] += 10.0
    eta.progress("a", 0.5)
    assert str(eta) == tqdm.format_interval(10 / 0.5 * 1.5)


def test_a_bar_in_a_log_is_a_plain_line_at_start_at_most_every_interval_and_at_its_end(clock):
    now, tick = clock
    log = io.StringIO()
    bar = tqdm(total=4, desc="run", bar_format="{desc}: {n}/{total}{postfix}", mininterval=0,
               file=LogLines(log, interval=60, clock=tick))
    for seconds, postfix in ((10, "epoch 1"), (59, "epoch 2"), (70, "epoch 3"), (80, "epoch 4")):
        now[0] = 100 + seconds
        bar.set_postfix_str(postfix, refresh=False)
        bar.update()
        tqdm.write("a finished line", file=log)  # the way runner and search print beside their bar
    bar.clear()  # blanks, as tqdm writes them on a terminal: no line of their own, nor the state's loss
    bar.close()
    # not each redraw after a carriage return, padded, which a file keeps as written; the first redraw at once
    assert log.getvalue().splitlines() == ["run: 0/4", "run: 1/4, epoch 1", "a finished line", "a finished line",
                                           "run: 3/4, epoch 3", "a finished line", "a finished line",
                                           "run: 4/4, epoch 4"]


def test_a_resumed_run_s_count_is_in_the_log_at_once_not_a_minute_later(clock):
    now, tick = clock
    log = io.StringIO()
    bar = tqdm(total=6, desc="run", bar_format="{desc}: {n}/{total}", file=LogLines(log, clock=tick))
    now[0] += 1
    bar.n = 4  # as runner and search set the units done in earlier sessions, once they look
    bar.refresh()
    assert log.getvalue().splitlines() == ["run: 0/6", "run: 4/6"]  # it said 0/6 for a minute


def test_progress_bar_writes_lines_where_stderr_is_no_terminal(capsys, monkeypatch):
    bar = progress_bar(3, "smoke", "unit")
    inner = progress_bar(2, "inner", "step")  # a second bar open at once: tqdm puts it below, after a newline
    for step in range(4):
        inner.set_postfix_str(f"step {step}")  # a redraw each
    inner.close()
    bar.update(3)
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    assert [line.split(":")[0] for line in lines] == ["smoke", "inner", "inner", "inner", "smoke"]  # not each redraw
    assert lines[0].startswith("smoke:   0%|") and lines[-1].startswith("smoke: 100%|##########| 3/3")
    quiet = progress_bar(3, "smoke", "unit", show=False)
    quiet.update(3)
    quiet.close()
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("MTVAE_BENCH_PROGRESS", "bar")  # e.g. under `| tee`: redrawn all the same
    bar = progress_bar(3, "smoke", "unit")
    bar.update(3)
    bar.close()
    assert "\r" in capsys.readouterr().err
    monkeypatch.setenv("MTVAE_BENCH_PROGRESS", "line")
    with pytest.raises(ValueError, match=re.escape("unknown MTVAE_BENCH_PROGRESS value 'line' (did you mean 'lines'?); "
                                                   "choose one of: bar, lines")):
        progress_bar(3, "smoke", "unit")


def test_a_terminal_that_reports_no_size_shows_the_bar_at_80_columns(monkeypatch):
    # tqdm takes a terminal's size less one: in a 0 × 0 one (`docker exec -t`) a run showed no progress at all
    monkeypatch.delenv("MTVAE_BENCH_PROGRESS", raising=False)
    master, slave = pty.openpty()
    try:
        with open(slave, "w") as terminal:
            if tuple(os.get_terminal_size(terminal.fileno())) != (0, 0):  # a new pseudo-terminal's, on Linux
                pytest.skip("a new pseudo-terminal here reports a size")
            monkeypatch.setattr(sys, "stderr", terminal)
            bar = progress_bar(3, "smoke", "unit")
            bar.update(3)
            bar.close()
        shown = os.read(master, 1 << 16).decode()
    finally:
        os.close(master)
    last = shown.strip().split("\r")[-1]
    assert last.startswith("smoke: 100%|") and last.endswith("| 3/3 [00:00]") and len(last) == 79


def test_a_mistyped_progress_variable_stops_a_command_before_it_starts(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MTVAE_BENCH_PROGRESS", "line")
    assert cli(tmp_path, "run", "--suite", "smoke") == 2  # not once the run's study and its bar are made
    assert capsys.readouterr().err == ("error: unknown MTVAE_BENCH_PROGRESS value 'line' (did you mean 'lines'?); "
                                       "choose one of: bar, lines\n")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("start", [
    lambda folder: run_suite(get_suite("smoke"), StoreConfig(studies_dir=folder / "studies", results_dir=folder)),
    lambda folder: run_search(SearchSettings("vae", 1, "baseline", limit=200), f"sqlite:///{folder / 's.db'}"),
    lambda folder: run_prior_stage(folder, "smoke"),
], ids=["run_suite", "run_search", "run_prior_stage"])
def test_a_mistyped_progress_variable_stops_a_library_call_before_it_starts(tmp_path, monkeypatch, start):
    monkeypatch.setenv("MTVAE_BENCH_PROGRESS", "line")
    with pytest.raises(ValueError, match="unknown MTVAE_BENCH_PROGRESS value 'line'"):
        start(tmp_path)
    assert not list(tmp_path.iterdir())  # no study, no results: not once its bar is made


def test_what_a_run_trains_is_in_the_log_once_it_is_first_said_not_a_minute_later(clock):
    # A smoke run (under a minute) logged only "0/30" and "30/30": the first configuration, fold and epoch never.
    now, tick = clock
    log = io.StringIO()
    bar = tqdm(total=30, desc="smoke", bar_format="{desc}: {n}/{total}{postfix}", file=LogLines(log, clock=tick))
    bar.refresh()  # the runner's look at the units done before: none
    for postfix in ("config 1/6 | epoch 0/2", "config 1/6 | epoch 1/2", "config 1/6 | epoch 2/2"):
        now[0] += 1  # a second an epoch
        bar.set_postfix_str(postfix)
    assert log.getvalue().splitlines() == ["smoke: 0/30", "smoke: 0/30, config 1/6 | epoch 0/2"]  # then a minute
