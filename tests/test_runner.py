"""The suite runner end to end: smoke suite, resume after SIGKILL, two workers, NaN units, bad input."""

import contextlib
import errno
import json
import math
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import weakref
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import sqlalchemy
import pandas as pd
import pytest
import torch
from conftest import (check_given, cli, given_to_workers, miss_the_first_look, one_line_error, run_cli, stopped,
                      worker_pids)
from optuna.trial import TrialState

from benchmark.cli.run import command_line
from benchmark.cv import fold_indices, fold_label
from benchmark.data import load_dataset
from benchmark.export import load_checkpoint
from benchmark.files import write_whole
from benchmark.processes import busy_load, crowded_note, our_load, shared_threads_note, worker_threads
from benchmark.runner import Heartbeats, Interrupts, _Worker, long_on_cpu_note
from benchmark.storage import METRICS_VERSION, StoreConfig, status_counts, trial_status
from benchmark.store import (UNIT_PARAM, enqueue_missing, open_suite_study, parse_unit, unit_key, unit_keys, unit_of,
                             unit_states)
from benchmark.suites import get_suite
from benchmark.train import device_name, native_bf16, resolve_device

METRICS = ["best_epoch", "recon", "latent", "recon_cond", "total"]


def study_of(cwd: Path, suite: str) -> optuna.Study:
    return optuna.load_study(study_name=f"suite-{suite}", storage=f"sqlite:///{cwd / 'studies' / f'{suite}.db'}")


def complete_per_unit(study: optuna.Study) -> dict[str, int]:
    return {k: sum(t.state == TrialState.COMPLETE for t in ts) for k, ts in unit_states(study).items()}


def test_smoke_suite_trains_every_configuration_on_five_folds(smoke_run):
    suite = get_suite("smoke")
    study = study_of(smoke_run, "smoke")
    counts = complete_per_unit(study)
    assert len(counts) == 30 and set(counts.values()) == {1}
    table = pd.read_csv(smoke_run / "results" / "smoke.csv")
    assert len(table) == 30
    assert (table.groupby("config_id")["fold"].nunique() == 5).all()
    assert set(table["config_id"]) == {c.id for c in suite.configurations}
    assert (table["state"] == "COMPLETE").all()
    assert table["recon"].between(0, 1).all()
    assert (table["n_train"] == 4 * table["n_val"]).all()  # train and validation are not swapped
    trained_on = device_name(resolve_device("auto"))  # the CPU's model here; the GPU's where there is one
    assert (table["device"] == trained_on).all() and (table["torch"] == torch.__version__).all()
    # by hand: the mean of fold 2's training images taken as each of its validation images' reconstruction
    images = load_dataset(suite.dataset, limit=suite.limit, seed=suite.seed).train
    train_idx, val_idx = fold_indices(len(images), suite.folds, suite.seed)[2]
    expected = float(((images[val_idx] - images[train_idx].mean(0)) ** 2).mean())
    assert table.loc[table["fold"] == 2, "recon_mean_image"].to_numpy() == pytest.approx([expected] * 6, rel=1e-5)
    history = pd.read_csv(smoke_run / "results" / "smoke_history.csv")
    assert len(history) == 30 * suite.train.epochs
    assert {"recon", "latent", "recon_cond", "total"} <= set(history.columns)
    # each unit's row is its history at the epoch of the lowest validation total
    lowest = history.loc[history.groupby(["config_id", "fold"])["total"].idxmin()]
    best = table.merge(lowest, on=["config_id", "fold"], suffixes=("", "_history"))
    assert len(best) == 30 and (best["best_epoch"] == best["epoch"]).all()
    for metric in ("recon", "latent", "recon_cond", "total"):
        assert best[metric].to_numpy() == pytest.approx(best[f"{metric}_history"].to_numpy(), nan_ok=True)
    assert all(Path(smoke_run / p).exists() for p in table["checkpoint"])


def smoke_run_until(cwd: Path, units: int, *args: str) -> subprocess.Popen:
    """`run --suite smoke` in a subprocess, returned once ``units`` units are COMPLETE."""
    cmd = [sys.executable, "-m", "benchmark", "run", "--suite", "smoke", "--heartbeat", "1", "--quiet", *args]
    # A session of its own, so that Ctrl-C can be sent to the whole process group, as a terminal
    # does; and Ctrl-C's default action, which a shell takes away from a job it starts with `&`
    # (Python then leaves SIGINT ignored, and the run would not stop).
    process = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    db = cwd / "studies" / "smoke.db"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        time.sleep(0.5)
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=30) as con:
                    done = con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
            except sqlite3.OperationalError:
                continue
            if done >= units:
                break
    assert process.poll() is None, f"the run finished before it could be stopped: {process.communicate()}"
    return process


def wait_until_training(db: Path, process: subprocess.Popen) -> tuple[int, str]:
    """Once the run in ``process``, whose study is in ``db``, trains a unit: the trial id and ``worker`` of a
    RUNNING trial labelled with its run, the last of a claim's labels."""
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
        if not db.exists():
            continue
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
            try:
                found = con.execute(
                    "select a.trial_id, a.value_json from trials t join trial_user_attributes a on a.trial_id = "
                    "t.trial_id join trial_user_attributes r on r.trial_id = t.trial_id where t.state = 'RUNNING' "
                    "and a.key = 'worker' and r.key = 'run'").fetchone()
            except sqlite3.OperationalError:  # Optuna's tables not made yet
                continue
        if found:
            return found[0], json.loads(found[1])
    raise AssertionError(f"the run trained no further unit: {process.communicate() if process.poll() else ''}")


def test_killed_run_resumes_without_training_a_unit_twice(smoke_run, tmp_path, capsys):
    process = smoke_run_until(tmp_path, 8)
    wait_until_training(tmp_path / "studies" / "smoke.db", process)  # a unit takes seconds: the kill lands inside it
    process.send_signal(signal.SIGKILL)
    process.wait()
    study = study_of(tmp_path, "smoke")
    finished_before = {k for k, n in complete_per_unit(study).items() if n == 1}
    assert 8 <= len(finished_before) < 30
    killed = [unit_key(t.user_attrs["config_id"], t.user_attrs["fold"])
              for t in study.trials if t.state == TrialState.RUNNING]
    assert len(killed) == 1
    # exported while it trained: a report after the kill shows finished units, as the study holds them
    exported = pd.read_csv(tmp_path / "results" / "smoke.csv")
    done = exported[exported["state"] == "COMPLETE"]
    assert len(done) >= 1
    by_unit = {unit_key(t.user_attrs["config_id"], t.user_attrs["fold"]): t.user_attrs["metrics"]["recon"]
               for t in study.trials if t.state == TrialState.COMPLETE}
    for row in done.itertuples():
        assert row.recon == pytest.approx(by_unit[unit_key(row.config_id, row.fold)], rel=1e-9)

    capsys.readouterr()
    assert run_cli(tmp_path, "--suite", "smoke", "--heartbeat", "1") == 0
    # a quiet run says why it may wait for the killed worker's unit
    said = "1 in training elsewhere, or on a worker that died: such a unit is taken up again 5 s after"
    assert said in capsys.readouterr().err
    study = study_of(tmp_path, "smoke")
    states = unit_states(study)
    assert set(complete_per_unit(study).values()) == {1} and len(states) == 30
    for key in finished_before:  # finished units are never retrained
        assert len(states[key]) == 1
    assert [t.state for t in states[killed[0]]] == [TrialState.FAIL, TrialState.COMPLETE]  # retried once
    resumed = pd.read_csv(tmp_path / "results" / "smoke.csv").sort_values(["config_id", "fold"])
    straight = pd.read_csv(smoke_run / "results" / "smoke.csv").sort_values(["config_id", "fold"])
    pd.testing.assert_frame_equal(resumed[["config_id", "fold", *METRICS]].reset_index(drop=True),
                                  straight[["config_id", "fold", *METRICS]].reset_index(drop=True),
                                  rtol=1e-4)


SMALL_SUITE = """
name = "small"
limit = 120
folds = {folds}
[train]
epochs = 1
[[configurations]]
family = "vq-vae"
config = 1
method = "baseline"
[[configurations]]
family = "vae"
config = 1
method = "multidecoder"
sampling = "exact"
w1 = {w1}
"""


def test_the_idle_softadapt_note_is_said_of_configurations_the_run_trains_only(tmp_path, capsys):
    # A rerun said it of SoftAdapt configurations done before, as a tuned run of those it took.
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0).replace("w1 = 1.0", "softadapt = true"))
    idle = "note: SoftAdapt re-weights every 100 steps, but a fold trains only 1 step here"
    assert run_cli(tmp_path, "--suite", "small.toml") == 0
    assert idle in capsys.readouterr().err
    assert run_cli(tmp_path, "--suite", "small.toml") == 0
    err = capsys.readouterr().err
    assert "resuming: 4 of 4 units already done" in err and idle not in err


def test_each_unit_records_its_metrics_version_and_whether_other_work_kept_the_machine_busy(tmp_path, monkeypatch,
                                                                                            capsys):
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0))
    cores = os.cpu_count() or 1
    monkeypatch.setattr("benchmark.processes.os.getloadavg", lambda: (2.0 * cores, 0.0, 0.0))
    assert run_cli(tmp_path, "--suite", "small.toml") == 0
    assert "warning: the machine was busy while this run trained" in capsys.readouterr().err
    table = pd.read_csv(tmp_path / "results" / "small.csv")
    assert (table["busy_load"] == 2.0 * cores).all()
    # A study shared with another file's later run tells this version's folds from older ones by it.
    assert [t.user_attrs["metrics_version"] for t in study_of(tmp_path, "small").trials] == [METRICS_VERSION] * 4
    assert all(load_checkpoint(tmp_path / path)[1]["metrics_version"] == METRICS_VERSION
               for path in table["checkpoint"])


def test_two_workers_share_a_suite_without_duplicates(tmp_path):
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=5, w1=1.0))
    assert run_cli(tmp_path, "--suite", "small.toml", "--workers", "2", "--heartbeat", "1") == 0
    study = study_of(tmp_path, "small")
    assert set(complete_per_unit(study).values()) == {1} and len(complete_per_unit(study)) == 10
    trained = [t for t in study.get_trials() if "metrics" in t.user_attrs]
    assert len(trained) == 10 and len({(t.user_attrs["config_id"], t.user_attrs["fold"]) for t in trained}) == 10
    # a trial claimed by both workers is trained twice, so its weights are uploaded twice
    assert [len(optuna.artifacts.get_all_artifact_meta(t, storage=study._storage)) for t in trained] == [1] * 10
    assert len(list((tmp_path / "results" / "small" / "artifacts").iterdir())) == 10
    assert len(pd.read_csv(tmp_path / "results" / "small.csv")) == 10


def test_a_run_says_how_many_units_it_trained_of_those_done_with_another_run_beside_it(tmp_path, capsys,
                                                                                        monkeypatch):
    # two runs sharing a study each said "done 4", though each trained a part
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0))
    work = _Worker.work

    def another_run_beside(self):  # as this run starts, another one trains a unit
        waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))[0]
        self.study._storage.set_trial_state_values(waiting._trial_id, TrialState.RUNNING)
        self.study._storage.set_trial_user_attr(waiting._trial_id, "run", "another")
        self.study._storage.set_trial_state_values(waiting._trial_id, TrialState.COMPLETE, [0.5])
        work(self)

    monkeypatch.setattr(_Worker, "work", another_run_beside)
    assert run_cli(tmp_path, "--suite", "small.toml") == 0
    assert capsys.readouterr().out.startswith("done 4 (3 by this run), failed 0, not finished 0 of 4 units in ")


def test_a_unit_enqueued_twice_is_not_claimed_as_a_sibling_while_it_runs_or_once_done(tmp_path):
    """Two machines starting a shared study at once can enqueue a unit twice; stacking folds
    must not take its second trial when the first is already running or done."""
    suite = get_suite("smoke").override(folds=5)
    store = StoreConfig(studies_dir=tmp_path)
    study, _ = open_suite_study(suite, store)
    enqueue_missing(study, unit_keys(suite))
    config_id = suite.configurations[0].id
    for fold in (1, 2, 3):
        study.enqueue_trial({UNIT_PARAM: unit_key(config_id, fold)})  # the other machine's copy
    states = unit_states(study)
    storage = study._storage
    storage.set_trial_state_values(states[unit_key(config_id, 1)][0]._trial_id, TrialState.RUNNING)
    storage.set_trial_state_values(states[unit_key(config_id, 2)][0]._trial_id, TrialState.RUNNING)
    storage.set_trial_state_values(states[unit_key(config_id, 2)][0]._trial_id, TrialState.COMPLETE, [0.0])
    diverged = states[unit_key(config_id, 3)][0]._trial_id  # failed for good
    storage.set_trial_state_values(diverged, TrialState.RUNNING)
    storage.set_trial_user_attr(diverged, "error", "diverged: the loss is nan")
    storage.set_trial_state_values(diverged, TrialState.FAIL)
    worker = _Worker(suite, store, show_progress=False, fold_parallel=True, images=torch.rand(50, 1, 32, 32))
    claimed = worker._claim_siblings(config_id, 0)
    assert [fold for _, fold in claimed] == [4]
    waiting = {k: [t.state for t in ts] for k, ts in unit_states(study).items() if k.startswith(config_id + "#")}
    assert waiting[unit_key(config_id, 1)] == [TrialState.RUNNING, TrialState.WAITING]
    assert waiting[unit_key(config_id, 2)] == [TrialState.COMPLETE, TrialState.WAITING]
    assert waiting[unit_key(config_id, 3)] == [TrialState.FAIL, TrialState.WAITING]


@pytest.mark.parametrize("first", [TrialState.COMPLETE, TrialState.RUNNING, TrialState.FAIL])
def test_the_copy_of_a_unit_enqueued_twice_is_pruned_untrained_while_the_first_runs_or_once_settled(
        tmp_path, monkeypatch, first):
    suite = get_suite("smoke").override(folds=2)
    store = StoreConfig(studies_dir=tmp_path)
    study, _ = open_suite_study(suite, store)
    key = unit_keys(suite)[0]
    study.enqueue_trial({UNIT_PARAM: key})
    study.enqueue_trial({UNIT_PARAM: key})  # the other machine's copy
    oldest, copy = unit_states(study)[key]
    study._storage.set_trial_state_values(oldest._trial_id, TrialState.RUNNING)
    if first == TrialState.COMPLETE:
        study._storage.set_trial_state_values(oldest._trial_id, TrialState.COMPLETE, [0.0])
    if first == TrialState.FAIL:  # diverged: failed for good
        study._storage.set_trial_user_attr(oldest._trial_id, "error", "diverged: the loss is nan")
        study._storage.set_trial_state_values(oldest._trial_id, TrialState.FAIL)
    study._storage.set_trial_state_values(copy._trial_id, TrialState.RUNNING)  # this worker's claim
    monkeypatch.setattr("benchmark.runner.train_fold", lambda *args, **kwargs: pytest.fail("trained a unit twice"))
    worker = _Worker(suite, store, show_progress=False, images=torch.rand(40, 1, 32, 32))
    worker._train_claimed(copy._trial_id, key)
    assert [t.state for t in unit_states(study)[key]] == [first, TrialState.PRUNED]
    # a copy, not a unit the run pruned (a suite prunes none): `studies show` counts it as surplus
    assert status_counts(study.get_trials())["surplus"] == 1 and status_counts(study.get_trials())["pruned"] == 0


def test_a_sibling_claim_that_loses_a_units_trial_does_not_take_its_copy(tmp_path, monkeypatch):
    """Another worker claims the unit's oldest trial after this one read the study: the copy
    enqueued beside it would be the same unit trained twice."""
    suite = get_suite("smoke").override(folds=3)
    store = StoreConfig(studies_dir=tmp_path)
    study, _ = open_suite_study(suite, store)
    enqueue_missing(study, unit_keys(suite))
    config_id = suite.configurations[0].id
    study.enqueue_trial({UNIT_PARAM: unit_key(config_id, 1)})  # the other machine's copy
    read_before = unit_states(study)
    study._storage.set_trial_state_values(read_before[unit_key(config_id, 1)][0]._trial_id, TrialState.RUNNING)
    monkeypatch.setattr("benchmark.runner.unit_states", lambda _: read_before)
    worker = _Worker(suite, store, show_progress=False, fold_parallel=True, images=torch.rand(30, 1, 32, 32))
    assert [fold for _, fold in worker._claim_siblings(config_id, 0)] == [2]
    monkeypatch.undo()
    assert [t.state for t in unit_states(study)[unit_key(config_id, 1)]] == [TrialState.RUNNING, TrialState.WAITING]


def test_a_runs_first_worker_exports_when_exporting_has_taken_at_most_5_percent_of_the_time(tmp_path, monkeypatch):
    clock, exports = [0.0], []

    def export(*args):  # each export takes a second
        exports.append(clock[0])
        clock[0] += 1.0

    monkeypatch.setattr("benchmark.runner.time.monotonic", lambda: clock[0])
    monkeypatch.setattr("benchmark.runner.export", export)
    store, images = StoreConfig(studies_dir=tmp_path), torch.rand(40, 1, 32, 32)
    first, second = (_Worker(get_suite("smoke"), store, position, show_progress=False, images=images)
                     for position in (0, 1))
    for now in (0.0, 10.0, 20.0, 21.5, 30.0):  # units finished at these times
        clock[0] = now
        first._export_when_due()
        second._export_when_due()
    # after 1 s of exporting, the next export waits until 20 s have passed since the last one ended
    assert exports == [0.0, 21.5]


def test_a_live_export_shows_the_unit_in_training_as_running(tmp_path, monkeypatch):
    # Exported once a unit was told, before the next one was claimed, the unit in training read WAITING.
    from benchmark import runner

    suite = get_suite("smoke").override(folds=2)
    store = StoreConfig(studies_dir=tmp_path, results_dir=tmp_path)
    monkeypatch.setattr(runner, "EXPORT_SHARE", math.inf)  # every unit exports
    worker = _Worker(suite, store, show_progress=False, images=torch.rand(40, 1, 32, 32))
    seen, train = [], runner.train_fold

    def train_fold(*args):
        seen.append(list(pd.read_csv(tmp_path / "smoke.csv")["state"][:3]))
        return train(*args)

    monkeypatch.setattr(runner, "train_fold", train_fold)
    enqueue_missing(worker.study, worker.keys)
    for _ in range(2):
        worker._train_claimed(*worker._claim_next(unit_states(worker.study)))
    assert seen == [["RUNNING", "WAITING", "WAITING"], ["COMPLETE", "RUNNING", "WAITING"]]


def test_an_interrupted_unit_is_trained_again_before_the_units_after_it(tmp_path):
    """Its new trial is the newest in the study; taking the oldest waiting trial, as Optuna
    does, would leave its configuration a fold short until the whole suite had run."""
    suite = get_suite("smoke").override(folds=2)
    store = StoreConfig(studies_dir=tmp_path)
    study, _ = open_suite_study(suite, store)
    keys = unit_keys(suite)
    enqueue_missing(study, keys)
    first = unit_states(study)[keys[0]][0]._trial_id
    study._storage.set_trial_state_values(first, TrialState.RUNNING)
    study._storage.set_trial_state_values(first, TrialState.FAIL)  # Ctrl-C: no reason recorded
    assert enqueue_missing(study, keys) == 1
    requeued = unit_states(study)[keys[0]][1]
    assert requeued.state == TrialState.WAITING and requeued.number == len(keys)  # last in the study
    worker = _Worker(suite, store, show_progress=False, images=torch.rand(40, 1, 32, 32))
    seen = unit_states(study)  # one snapshot, gone stale after the first claim, as in `work`
    claimed = [worker._claim_next(seen) for _ in range(3)]
    assert claimed[0] == (requeued._trial_id, keys[0])
    state = {t._trial_id: (key, t.state) for key, ts in unit_states(study).items() for t in ts}
    assert [state[i] for i, _ in claimed] == [(key, TrialState.RUNNING) for key in keys[:3]]
    assert [key for _, key in claimed] == keys[:3]


def test_the_progress_line_names_a_fold_by_the_number_its_files_use(tmp_path):
    suite = get_suite("smoke").override(folds=5, repeats=2)
    worker = _Worker(suite, StoreConfig(studies_dir=tmp_path), show_progress=False, images=torch.rand(40, 1, 32, 32))
    config_id = suite.configurations[1].id
    worker._progress(config_id, 7)(3, {"recon": 0.25, "latent": 1.5})
    assert f"config 2/{len(suite.configurations)} {config_id} | fold 7 (3rd of 5 in repeat 1) | epoch 3/" in worker.bar.postfix
    assert worker.bar.postfix.endswith("val recon 0.25 latent 1.5")


def test_each_of_several_workers_names_its_bar_and_a_lone_worker_none(tmp_path):
    suite, store, images = get_suite("smoke"), StoreConfig(studies_dir=tmp_path), torch.rand(40, 1, 32, 32)
    bars = [_Worker(suite, store, position, images=images).bar for position in (None, 0, 1)]
    assert [bar.desc for bar in bars] == ["smoke", "smoke w0", "smoke w1"]
    for bar in bars:
        bar.close()


@pytest.mark.parametrize("fold, folds, repeats, label", [
    (0, 5, 1, "fold 0 (1st of 5)"), (1, 5, 1, "fold 1 (2nd of 5)"), (2, 5, 1, "fold 2 (3rd of 5)"),
    (3, 5, 1, "fold 3 (4th of 5)"), (10, 20, 1, "fold 10 (11th of 20)"), (11, 20, 1, "fold 11 (12th of 20)"),
    (20, 25, 1, "fold 20 (21st of 25)"), (21, 25, 1, "fold 21 (22nd of 25)"), (5, 5, 2, "fold 5 (1st of 5 in repeat 1)")])
def test_fold_labels_name_the_results_numbers_and_the_place(fold, folds, repeats, label):
    assert fold_label(fold, folds, repeats) == label


def test_a_diverging_unit_is_recorded_as_failed_and_the_others_go_on(tmp_path, capsys):
    (tmp_path / "nan.toml").write_text(SMALL_SUITE.format(folds=2, w1="1e39").replace('"small"', '"nan"'))
    assert run_cli(tmp_path, "--suite", "nan.toml", "--heartbeat", "1") == 1  # failed units: exit 1
    out = capsys.readouterr().out
    assert "  failed vae/1/multidecoder/exact/w=1e+39,1,1 fold 1 (2nd of 2): loss diverged" in out  # as progress names it
    table = pd.read_csv(tmp_path / "results" / "nan.csv")
    failed = table[table["config_id"].str.startswith("vae/")]
    assert (failed["state"] == "FAIL").all() and failed["error"].str.contains("diverged").all()
    assert (table[table["config_id"].str.startswith("vq-vae/")]["state"] == "COMPLETE").all()
    # a rerun does not retry a unit that failed for a reason
    before = len(study_of(tmp_path, "nan").get_trials())
    assert run_cli(tmp_path, "--suite", "nan.toml", "--heartbeat", "1") == 1
    assert len(study_of(tmp_path, "nan").get_trials()) == before


@pytest.mark.parametrize("workers, whom", [("1", "group"), ("2", "group"), ("2", "parent"), ("1", "term"),
                                           ("2", "term")])
def test_ctrl_c_exports_the_finished_units_and_says_so_in_one_line(tmp_path, workers, whom):
    process = smoke_run_until(tmp_path, 4, "--workers", workers)
    if whom == "group":
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the workers too
    elif whom == "parent":
        process.send_signal(signal.SIGINT)  # `kill -INT`: the parent passes it on to its workers
    else:
        process.send_signal(signal.SIGTERM)  # `timeout`, Slurm, systemd: stopped as by Ctrl-C
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in err and err.count("interrupted: finished work is stored") == 1, err
    table = pd.read_csv(tmp_path / "results" / "smoke.csv")  # exported: `report` can show the partial suite
    done = int((table["state"] == "COMPLETE").sum())
    assert 4 <= done < len(table) == 30  # and the workers did stop
    assert f"done {done}, failed 0, not finished {30 - done} of 30 units" in out  # the summary, as at the end


@pytest.mark.parametrize("step", ["enqueue_missing", "export"])
def test_sigterm_before_training_or_in_the_last_export_stops_the_run_as_ctrl_c_does(tmp_path, step):
    # Before its training (the dataset's load, the study's opening) or in its final export, SIGTERM killed
    # the run with no word and exit code 143, where Ctrl-C gave 130 and the line saying what is kept
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1))
    code = textwrap.dedent(f"""
        import os, signal, sys
        import benchmark.runner

        step = benchmark.runner.{step}
        def terminated(*args, **kwargs):  # as `timeout` or Slurm ends the run at that step
            os.kill(os.getpid(), signal.SIGTERM)
            return step(*args, **kwargs)

        benchmark.runner.{step} = terminated
        from benchmark.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code, "run", "--suite", "small.toml", "--quiet"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.endswith("interrupted: finished work is stored; run the same command again to resume\n")


def test_an_interrupt_once_every_unit_has_ended_does_not_ask_to_resume(tmp_path, capsys, monkeypatch):
    # a SIGTERM in a run's last seconds said "run the same command again to resume" beside "not finished 0"
    from benchmark import runner

    work = runner._work_until_interrupted

    def then_interrupted(worker):
        work(worker)
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_work_until_interrupted", then_interrupted)
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1))
    assert run_cli(tmp_path, "--suite", "small.toml", "--quiet") == 130
    out, err = capsys.readouterr()
    assert "done 4, failed 0, not finished 0 of 4 units" in out
    assert err.endswith("\ninterrupted once every unit had ended: nothing is left to resume\n")


def test_workers_stop_when_their_parent_is_killed(tmp_path):
    process = smoke_run_until(tmp_path, 2, "--workers", "2")
    workers = worker_pids(process.pid)
    assert len(workers) == 2
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert stopped(workers), "orphaned workers kept training"
    assert run_cli(tmp_path, "--suite", "smoke", "--heartbeat", "1") == 0  # and their units are taken up again
    assert set(complete_per_unit(study_of(tmp_path, "smoke")).values()) == {1}


def test_a_worker_killed_outright_has_its_unit_taken_up_at_once_not_after_the_heartbeat_wait(tmp_path):
    # An out-of-memory kill of one worker left its unit waiting out the grace (5 beats, here 5 minutes)
    (tmp_path / "long.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0).replace("limit = 120", "limit = 600")
                                        .replace("epochs = 1", "epochs = 3").replace('"small"', '"long"'))
    command = [sys.executable, "-m", "benchmark", "run", "--suite", "long.toml", "--workers", "2", "--heartbeat", "60",
               "--quiet"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        victim, worker = wait_until_training(tmp_path / "studies" / "long.db", process)
        os.kill(int(worker.rsplit(":", 1)[1]), signal.SIGKILL)
        _, err = process.communicate(timeout=150)  # without the release, 300 s
    finally:
        process.kill()
    assert process.returncode == 0 and "1 of 2 worker processes were killed (SIGKILL)" in err
    study = study_of(tmp_path, "long")
    assert set(complete_per_unit(study).values()) == {1} and len(complete_per_unit(study)) == 4
    killed = study._storage.get_trial(victim)
    assert killed.state == TrialState.FAIL
    tried = [t.state for t in unit_states(study)[unit_of(killed)] if trial_status(t) != "surplus"]
    assert tried == [TrialState.FAIL, TrialState.COMPLETE]


@pytest.mark.parametrize("asleep", [False, True])
def test_a_worker_whose_unit_was_taken_over_drops_it_and_goes_on(tmp_path, monkeypatch, capsys, asleep):
    """A worker paused past the grace period (a sleeping laptop) finds its unit failed and queued again by
    another: it must not crash on telling Optuna its result, and once its beats find the unit taken over
    (after a gap in them), it stops training it at the next epoch rather than at its end."""
    from benchmark import runner

    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0))
    train, paused, clock = runner.train_fold, [], [0.0]
    clocks = {name: getattr(time, name) for name in dir(time) if not name.startswith("_")}
    monkeypatch.setattr(runner, "time", SimpleNamespace(**{**clocks, "time": lambda: time.time() + clock[0]}))

    def train_while_paused(*args):
        if paused:
            return train(*args)
        study = study_of(tmp_path, "small")
        running = study.get_trials(states=(TrialState.RUNNING,))[0]
        study._storage.set_trial_state_values(running._trial_id, TrialState.FAIL)  # another worker's stale check
        paused.append(unit_of(running))
        if not asleep:  # its beats never missed: it learns it as it tells the result
            return train(*args)
        clock[0] = 60.0  # the machine slept a minute
        for epoch in range(1, 50):  # an epoch a tenth of a second: within a beat or two, the worker learns it
            time.sleep(0.1)
            args[-1](epoch, None)
        pytest.fail("the worker trained a unit taken over to its end")

    monkeypatch.setattr(runner, "train_fold", train_while_paused)
    assert run_cli(tmp_path, "--suite", "small.toml", "--heartbeat", "1") == 0
    assert f"unit {paused[0]}: another worker took it over" in capsys.readouterr().err
    study = study_of(tmp_path, "small")
    assert set(complete_per_unit(study).values()) == {1} and len(complete_per_unit(study)) == 4
    assert [t.state for t in unit_states(study)[paused[0]]] == [TrialState.FAIL, TrialState.COMPLETE]
    exported = pd.read_csv(tmp_path / "results" / "small.csv").set_index(["config_id", "fold"])
    row = exported.loc[parse_unit(paused[0])]  # the unit's complete trial, not the one taken from it
    assert row["state"] == "COMPLETE" and math.isfinite(row["recon"])
    # and the weights it had trained went with its result: every file left is a unit's checkpoint
    only_units_weights(tmp_path / "results" / "small" / "artifacts", exported)


def test_workers_of_one_study_agree_on_the_heartbeat_and_a_rerun_says_what_is_done(smoke_run, tmp_path, capsys,
                                                                                    monkeypatch):
    again = tmp_path / "again"
    shutil.copytree(smoke_run, again)
    assert study_of(again, "smoke").user_attrs["heartbeat"] == 1
    beats = []
    monkeypatch.setattr(_Worker, "work", lambda self: beats.append(
        (self.study._storage.get_heartbeat_interval(), self.store.grace_period)))
    assert run_cli(again, "--suite", "smoke", "--heartbeat", "7") == 0
    assert beats == [(1, 5)]  # the worker beats, and judges others, at the study's interval
    out, err = capsys.readouterr()
    assert "beat every 1 s, so this run does too, not every 7 s" in err
    assert "resuming: 30 of 30 units already done; 0 not finished" in err
    assert out.startswith("done 30 (0 by this run), failed 0, not finished 0 of 30 units in ")


def test_ctrl_c_cuts_training_short_and_waits_elsewhere_for_the_next_check():
    previous = signal.getsignal(signal.SIGINT)
    try:
        interrupts = Interrupts()
        signal.signal(signal.SIGINT, interrupts.on_signal)
        os.kill(os.getpid(), signal.SIGINT)  # as during a storage call: noted, not raised there
        assert interrupts.requested
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
        with pytest.raises(KeyboardInterrupt):  # noted before the region: it does not start
            with interrupts.immediate():
                pytest.fail("the region ran after Ctrl-C")
        interrupts = Interrupts()
        signal.signal(signal.SIGINT, interrupts.on_signal)
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt), interrupts.immediate():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)  # training or waiting: cut short at once
        assert time.monotonic() - started < 5
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_that_lands_in_a_weakref_callback_is_raised_again_without_a_traceback(capsys):
    # Python ignores an exception raised while a weakref callback runs, printing "Exception ignored"
    # with a traceback; seen once in four Ctrl-C of a training run.
    class Tensorish:
        pass

    interrupts, hook = Interrupts(), sys.unraisablehook
    with interrupts.handling():
        with pytest.raises(KeyboardInterrupt), interrupts.immediate():
            thing = Tensorish()
            watch = weakref.ref(thing, lambda _: interrupts.on_signal(signal.SIGINT, None))
            del thing  # the callback runs, and the interrupt raised in it is ignored there
            time.sleep(30)  # training: cut short all the same
        assert watch() is None
    assert "Exception ignored" not in capsys.readouterr().err
    assert sys.unraisablehook is hook  # as it was
    # Raised by the next check, before the moment passed: the signal meant to raise it again must not
    # come once the block has ended (during the export that follows a Ctrl-C, say).
    came, previous = [], signal.signal(signal.SIGINT, lambda *_: came.append(True))
    try:
        interrupts = Interrupts()
        with pytest.raises(KeyboardInterrupt), interrupts.handling():
            with interrupts.immediate():
                thing = Tensorish()
                watch = weakref.ref(thing, lambda _: interrupts.on_signal(signal.SIGINT, None))
                del thing
            interrupts.check()
        time.sleep(0.3)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not came


@pytest.mark.parametrize("args, message", [
    (["--suite", "nope"], "unknown suite 'nope'; choose one of: smoke, quick, full"),
    (["--suite", "smoke", "--dataset", "imagenet"], "unknown dataset 'imagenet'; choose one of: mnist5k"),
    (["--suite", "missing.toml"], "cannot read suite file missing.toml"),
    (["--suite", "broken.toml"], "is not valid TOML"),
    (["--suite", "smoke", "--dataset", "mnist", "--data-root", "nowhere"], "dataset files missing"),
    (["--suite", "smoke", "--folds", "1"], "folds must be >= 2"),
    (["--suite", "smoke", "--epochs", "0"], "epochs must be >= 1"),
    (["--suite", "smoke", "--epochs", "3"], "was made with other settings (epochs"),
    (["--suite", "smoke", "--epochs", "3"], "to go on with it, run the command it recorded: `python -m benchmark "
                                            "run --suite smoke --heartbeat 1 --quiet`; for a separate run, give it "
                                            "a --name of its own (or another --storage and --results-dir)"),
    (["--suite", "smoke", "--name", "smoke 3"], "suite name 'smoke 3' must start with a letter or digit and hold "
                                               "only letters, digits"),
    (["--suite", "smoke", "--name=-x"], "suite name '-x' must start with a letter or digit"),
    (["--suite", "smoke", "--name", "c" * 101], f"suite name {'c' * 20}… is 101 characters long; at most 100"),
    (["--suite", "smoke", "--name", "s.toml"], "--name s.toml: a name to file the run under, not a .toml file"),
    (["--suite", "smoke", "--name", "S.TOML"], "--name S.TOML: a name to file the run under, not a .toml file"),
    (["--suite", "smoke", "--epochs", "3", "--name", "quick"], "--name quick is a built-in suite's name"),
    (["--suite", "smoke", "--seed", "1"], "was made with other settings (seed"),
    (["--suite", "smoke", "--heartbeat", "0"], "--heartbeat must be >= 1"),
    (["--suite", "smoke", "--heartbeat", "0", "--workers", "0", "--folds", "1", "--storage", "sqlite:///x.db",
      "--studies-dir", "zzz"],  # the run's own options' problems, with the overrides'
     "error: 4 problems: --studies-dir is where SQLite studies go without --storage: give one or the other | "
     "--heartbeat must be >= 1 second, got 0 | --workers must be >= 1, got 0 | --folds must be >= 2 for "
     "cross-validation, got 1"),
    (["--suite", "smoke", "--search-storage", "sqlite:///x.db"],
     "error: --search-storage is where the --params-from studies are: give it with --params-from"),
    (["--suite", "nope", "--heartbeat", "0"], "2 problems: --heartbeat must be >= 1 second, got 0 | unknown suite"),
    (["--suite", "smoke", "--seed", "-1"], "seed must be an integer in [0, 2^32), got -1"),
    (["--suite", "smoke", "--seed", str(2**32)], f"seed must be an integer in [0, 2^32), got {2**32}"),
    (["--suite", "smoke", "--storage", "sqlite:///x.db", "--studies-dir", "zzz"],
     "--studies-dir is where SQLite studies go without --storage: give one or the other"),
    (["--suite", "smoke", "--name", "s16", "--precision", "bf16", "--fold-parallel", "on"],
     "not stacked on a CPU" if native_bf16(torch.device("cpu")) else "has no bfloat16 kernels"),
])
def test_bad_input_is_one_line_exit_2_and_leaves_the_study_alone(smoke_run, tmp_path, capsys, args, message):
    (smoke_run / "broken.toml").write_text("name = [unclosed")
    db = smoke_run / "studies" / "smoke.db"
    before = (db.stat().st_mtime_ns, db.read_bytes())
    assert run_cli(smoke_run, *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert len([line for line in err if line.startswith("error")]) == 1
    assert (db.stat().st_mtime_ns, db.read_bytes()) == before


def test_with_a_bad_option_the_suite_is_still_looked_up_where_the_runs_studies_are(tmp_path, capsys, monkeypatch):
    looked_in = []

    def suite_or_run(name, store):  # a name a run is filed under is found by the store it is looked up in
        looked_in.append((store.storage, store.studies_dir))
        raise ValueError(f"unknown suite {name!r}")

    monkeypatch.setattr("benchmark.cli.run.suite_or_run", suite_or_run)
    assert run_cli(tmp_path, "--suite", "v", "--studies-dir", "sd", "--heartbeat", "0") == 2
    capsys.readouterr()
    assert run_cli(tmp_path, "--suite", "v", "--storage", "sqlite:///x.db", "--workers", "0") == 2
    assert looked_in == [(None, Path("sd")), ("sqlite:///x.db", Path("studies"))]
    assert one_line_error(capsys).endswith("--workers must be >= 1, got 0 | unknown suite 'v'")


def test_configurations_added_to_a_suite_file_join_its_study_and_the_done_units_stay(tmp_path, capsys):
    first_only = "[[configurations]]".join(SMALL_SUITE.format(folds=2, w1=1.0).split("[[configurations]]")[:2])
    (tmp_path / "small.toml").write_text(first_only)
    assert run_cli(tmp_path, "--suite", "small.toml") == 0
    trained = {t.number: t.value for t in study_of(tmp_path, "small").trials}
    capsys.readouterr()
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0))
    assert run_cli(tmp_path, "--suite", "small.toml") == 0
    out, err = capsys.readouterr()
    assert ("resuming: 2 of 4 units already done; 2 not finished (including the 2 units of 1 configuration new to "
            "the study: vae/1/multidecoder/exact)") in err
    assert out.startswith("done 4 (2 by this run), failed 0, not finished 0 of 4 units in ")
    study = study_of(tmp_path, "small")
    assert {t.number: t.value for t in study.trials if t.number in trained} == trained  # not trained again
    assert len(study.trials) == 4
    results = pd.read_csv(tmp_path / "results" / "small.csv")
    assert (results["state"] == "COMPLETE").sum() == 4 and results["config_id"].nunique() == 2
    # Trained otherwise, the grown file is refused for that alone: its configurations are no reason.
    assert run_cli(tmp_path, "--suite", "small.toml", "--epochs", "2") == 2
    assert "was made with other settings (epochs 1 there, 2 now); to go on with it" in capsys.readouterr().err
    # The first file again (a machine not yet given the new one): it uses the study, trains nothing,
    # exports its own configuration and says what else the study holds.
    (tmp_path / "small.toml").write_text(first_only)
    assert run_cli(tmp_path, "--suite", "small.toml") == 0
    assert ("note: study 'suite-small' also holds the units of 1 configuration that this suite does not list "
            "(vae/1/multidecoder/exact); they are kept") in capsys.readouterr().err
    assert len(study_of(tmp_path, "small").trials) == 4
    assert pd.read_csv(tmp_path / "results" / "small.csv")["config_id"].unique().tolist() == ["vq-vae/1/baseline"]
    (tmp_path / "grown.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0))
    assert cli(tmp_path, "report", "--suite", "grown.toml", "--no-figures") == 0
    assert ("warning: grown.toml lists 1 configuration(s) the results do not have (vae/1/multidecoder/exact): the last "
            "run to export them listed others") in capsys.readouterr().out
    # A variant filed under a name: the command shown to go on is the last export's, not the first run's.
    (tmp_path / "both.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0))
    assert run_cli(tmp_path, "--suite", "small.toml", "--name", "v") == 0
    assert run_cli(tmp_path, "--suite", "both.toml", "--name", "v") == 0
    assert run_cli(tmp_path, "--suite", "both.toml", "--name", "v", "--fold-parallel", "off") == 0  # trains nothing
    assert json.loads((tmp_path / "results" / "v_meta.json").read_text())["command"] == (
        "python -m benchmark run --suite both.toml --name v --quiet")  # the command that trained them stays
    assert run_cli(tmp_path, "--suite", "small.toml", "--name", "v") == 0  # trains nothing, exports other rows
    assert json.loads((tmp_path / "results" / "v_meta.json").read_text())["command"] == (
        "python -m benchmark run --suite small.toml --name v --quiet")  # the command of the rows exported
    assert run_cli(tmp_path, "--suite", "both.toml", "--name", "v") == 0
    capsys.readouterr()
    assert run_cli(tmp_path, "--suite", "v") == 2
    assert capsys.readouterr().err.endswith("to go on with it, run the command it recorded: `python -m benchmark run "
                                            "--suite both.toml --name v --quiet`\n")


def test_a_run_ends_when_its_own_units_are_done_whatever_else_the_study_holds(tmp_path, capsys, monkeypatch):
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0))
    work, counts, looks = _Worker.work, _Worker._counts, []

    def grown_meanwhile(worker: _Worker) -> None:  # another file's unit, queued for another machine
        enqueue_missing(worker.study, [unit_key("vq-vae/2/baseline", 0)])
        work(worker)

    def counted(worker: _Worker, states: dict) -> tuple[int, int, int]:
        looks.append(1)  # once a turn of the loop: a run waiting for a unit it cannot claim spins here
        assert len(looks) < 1000, "the run waits for a unit it cannot claim"
        return counts(worker, states)

    monkeypatch.setattr(_Worker, "work", grown_meanwhile)
    monkeypatch.setattr(_Worker, "_counts", counted)
    assert run_cli(tmp_path, "--suite", "small.toml") == 0
    assert ("note: study 'suite-small' also holds the units of 1 configuration that this suite does not list "
            f"(vq-vae/2/baseline); they are kept, and {Path('results') / 'small.csv'} has this suite's "
            "configurations only") in capsys.readouterr().err
    waiting = study_of(tmp_path, "small").get_trials(states=(TrialState.WAITING,))
    assert [unit_of(t) for t in waiting] == [unit_key("vq-vae/2/baseline", 0)]  # left for a run that lists it


def test_a_run_says_where_it_keeps_a_new_study_and_not_of_one_it_finds(tmp_path, capsys):
    head, first, second = SMALL_SUITE.format(folds=2, w1=1.0).split("[[configurations]]")
    (tmp_path / "small.toml").write_text(head + "[[configurations]]" + first)
    assert run_cli(tmp_path, "--suite", "small.toml") == 0
    new = (f"new study 'suite-small' in sqlite:///{Path('studies') / 'small.db'}; its results go to "
           f"{Path('results') / 'small.csv'}")
    assert new in capsys.readouterr().err.splitlines()  # from another folder it starts anew, and says where
    # A file of that name with another configuration finds no unit of its own in the study, which is not new.
    (tmp_path / "small.toml").write_text(head + "[[configurations]]" + second)
    assert run_cli(tmp_path, "--suite", "small.toml") == 0
    err = capsys.readouterr().err
    assert "new study" not in err and "also holds the units of 1 configuration" in err


def test_a_variant_run_under_its_own_name_keeps_the_suites_results(tmp_path, capsys):
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0))
    optuna.logging.set_verbosity(optuna.logging.INFO)
    assert run_cli(tmp_path, "--suite", "small.toml", "--heartbeat", "1") == 0
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    assert level == optuna.logging.INFO  # Optuna is quiet during the run only: a script's level is its own
    first = (tmp_path / "results" / "small.csv").read_bytes()
    assert run_cli(tmp_path, "--suite", "small.toml", "--epochs", "2", "--heartbeat", "1") == 2  # other settings
    assert run_cli(tmp_path, "--suite", "small.toml", "--epochs", "2", "--name", "small-e2", "--heartbeat", "1") == 0
    assert (tmp_path / "results" / "small.csv").read_bytes() == first
    started = "python -m benchmark run --suite small.toml --epochs 2 --name small-e2 --heartbeat 1 --quiet"
    assert run_cli(tmp_path, "--suite", "small-e2") == 2
    assert capsys.readouterr().err.endswith(f"\nerror: 'small-e2' is the name a run is filed under, not a suite: "
                                            f"to go on with it, run the command it recorded: `{started}`\n")
    (tmp_path / "results" / "small-e2_meta.json").unlink()  # as a run stopped before its first export leaves it
    assert run_cli(tmp_path, "--suite", "small-e2") == 2
    assert capsys.readouterr().err.endswith(f"run the command it recorded: `{started}`\n")  # from the study
    assert cli(tmp_path, *shlex.split(started)[3:]) == 0  # the command shown resumes it
    assert "resuming: 4 of 4 units already done" in capsys.readouterr().err
    (tmp_path / "results" / "small-e2_meta.json").unlink()
    assert run_cli(tmp_path, "--suite", "small-e2", "--studies-dir", "elsewhere") == 2  # only its results here
    assert "a run named by --name or --params-from goes on with the command that started it" in capsys.readouterr().err
    variant = pd.read_csv(tmp_path / "results" / "small-e2.csv")
    assert len(variant) == 4 and (variant["state"] == "COMPLETE").all() and (variant["best_epoch"] <= 2).all()
    assert study_of(tmp_path, "small-e2").user_attrs["settings"]["epochs"] == 2
    assert len(pd.read_csv(tmp_path / "results" / "small-e2_history.csv")) == 4 * 2


def test_the_recorded_command_hides_storage_passwords_and_quotes_for_the_shell():
    argv = ["run", "--suite", "my suite.toml", "--storage", "postgresql://me:s3cret@db/bench",
            "--search-storage=postgresql://me:s3cret@db/search"]
    command = command_line(argv)
    assert "s3cret" not in command
    assert shlex.split(command)[3:] == ["run", "--suite", "my suite.toml", "--storage", "postgresql://me:***@db/bench",
                                        "--search-storage=postgresql://me:***@db/search"]


def test_fold_parallel_run_matches_the_one_by_one_run(tmp_path, capsys):
    suite = SMALL_SUITE.format(folds=3, w1=1.0).replace('"small"', '"par"').replace("limit = 120", "limit = 150")
    (tmp_path / "par.toml").write_text(suite)
    assert run_cli(tmp_path, "--suite", "par.toml", "--fold-parallel", "on", "--heartbeat", "1") == 0
    slower = "note: --fold-parallel on stacks folds on a CPU, where they train slower than one by one"
    # on a CPU, where it was silently 10-25 times slower; on a GPU it is `auto`'s choice
    assert (slower in capsys.readouterr().err) == (resolve_device("auto").type == "cpu")
    assert run_cli(tmp_path, "--suite", "par.toml", "--fold-parallel", "off", "--heartbeat", "1",
                   "--studies-dir", "seq", "--results-dir", "seq") == 0
    assert slower not in capsys.readouterr().err
    study = study_of(tmp_path, "par")
    assert set(complete_per_unit(study).values()) == {1} and len(study.get_trials()) == 6
    together = pd.read_csv(tmp_path / "results" / "par.csv")
    alone = pd.read_csv(tmp_path / "seq" / "par.csv")
    assert (together["state"] == "COMPLETE").all() and together["checkpoint"].map(lambda p: (tmp_path / p).exists()).all()
    pd.testing.assert_series_equal(together["recon"], alone["recon"], rtol=1e-3)
    pd.testing.assert_series_equal(together["latent"], alone["latent"], rtol=2e-2)
    # Each fold's seconds are about its whole ensemble's, which `stacked` says it was one of
    assert (together["stacked"] == 3).all() and (alone["stacked"] == 1).all()


@pytest.mark.parametrize("fold_parallel", ["on", "off"])
def test_out_of_memory_is_one_line_and_every_unit_it_held_goes_back_to_the_queue(tmp_path, capsys, monkeypatch,
                                                                                  fold_parallel):
    # Stacked, the folds claimed beside the first stayed RUNNING: a resume waited out their grace period.
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=3, w1=1.0))

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    trainer = "train_folds_together" if fold_parallel == "on" else "train_fold"
    monkeypatch.setattr(f"benchmark.runner.{trainer}", no_memory)
    assert run_cli(tmp_path, "--suite", "small.toml", "--fold-parallel", fold_parallel) == 2
    err = capsys.readouterr().err
    config_id, device = get_suite(str(tmp_path / "small.toml")).configurations[0].id, device_name(torch.device("cpu"))
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"error: out of memory training the 3 folds of {config_id} stacked on {device}: use --fold-parallel off"
        if fold_parallel == "on" else
        f"error: out of memory training {unit_key(config_id, 0)} on {device}: give the suite a smaller [train] "
        "batch_size, or free the device")
    states = [t.state for t in study_of(tmp_path, "small").get_trials()]
    assert TrialState.RUNNING not in states and TrialState.FAIL in states
    monkeypatch.undo()
    assert run_cli(tmp_path, "--suite", "small.toml", "--fold-parallel", fold_parallel, "--heartbeat", "1") == 0
    assert set(complete_per_unit(study_of(tmp_path, "small")).values()) == {1}


@pytest.mark.parametrize("fold_parallel", ["on", "off"])
def test_ctrl_c_between_a_units_upload_and_its_end_leaves_no_weights_behind(tmp_path, capsys, monkeypatch,
                                                                            fold_parallel):
    # The unit is queued again and trains anew: its first weights, up to 140 MB, were kept for nobody.
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=3, w1=1.0))
    artifacts = tmp_path / "results" / "small" / "artifacts"

    def ctrl_c_once_uploaded(**busy_load_kwargs):
        assert list(artifacts.glob("*")), "the weights are uploaded before the unit's attributes"
        raise KeyboardInterrupt

    monkeypatch.setattr("benchmark.runner.busy_load", ctrl_c_once_uploaded)
    assert run_cli(tmp_path, "--suite", "small.toml", "--fold-parallel", fold_parallel) == 130
    assert list(artifacts.glob("*")) == []
    assert TrialState.RUNNING not in [t.state for t in study_of(tmp_path, "small").get_trials()]
    monkeypatch.undo()
    assert run_cli(tmp_path, "--suite", "small.toml", "--fold-parallel", fold_parallel, "--heartbeat", "1") == 0
    exported = pd.read_csv(tmp_path / "results" / "small.csv")
    assert (exported["state"] == "COMPLETE").all()
    only_units_weights(artifacts, exported)


def only_units_weights(artifacts: Path, exported: pd.DataFrame) -> None:
    """Every file in ``artifacts`` is the checkpoint of a unit of ``exported`` (a results CSV), and each unit's is."""
    assert sorted(path.name for path in artifacts.iterdir()) == sorted(Path(p).name for p in exported["checkpoint"])


def test_a_run_killed_between_a_units_upload_and_its_end_leaves_no_weights_once_resumed(tmp_path):
    # SIGKILL (out of memory) runs no handler: the resume that finishes the suite removes what it left.
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0))
    code = textwrap.dedent("""
        import os, signal, sys
        import benchmark.runner

        def killed(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)

        benchmark.runner.busy_load = killed
        from benchmark.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code, "run", "--suite", "small.toml", "--heartbeat", "1", "--quiet"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == -signal.SIGKILL, done.stderr
    artifacts = tmp_path / "results" / "small" / "artifacts"
    assert len(list(artifacts.iterdir())) == 1  # the weights of the unit it was recording
    assert run_cli(tmp_path, "--suite", "small.toml", "--heartbeat", "1") == 0
    exported = pd.read_csv(tmp_path / "results" / "small.csv")
    assert (exported["state"] == "COMPLETE").all()
    only_units_weights(artifacts, exported)


def test_a_failed_heartbeat_warns_once_and_the_beats_go_on(capsys):
    # An uncaught error ended the heartbeat thread: another worker then took the unit over mid-training.
    class Flaky:
        beats = 0

        def record_heartbeat(self, trial_id: int) -> None:
            self.beats += 1
            if self.beats in (2, 3):
                raise RuntimeError("(psycopg2.OperationalError) server closed the connection unexpectedly\nmore")

    storage = Flaky()
    with Heartbeats(storage, [1], 0.02, 0.1):
        time.sleep(0.5)
    assert storage.beats >= 6
    assert capsys.readouterr().err == ("warning: a heartbeat to the study failed ((psycopg2.OperationalError) server "
                                       "closed the connection unexpectedly); training goes on and beats again every "
                                       "0.02 s\n")


@pytest.mark.parametrize("parallel", ["off", "on"])
def test_a_worker_warms_up_once_before_the_clock_of_its_first_unit_starts(tmp_path, monkeypatch, parallel):
    # A process's first training paid about 1 s of one-off costs inside its first unit's seconds, so the
    # configuration trained first (a baseline) looked dearer than bigger models in small suites. Folds
    # trained together warm up together: the ensemble's first step has costs of its own.
    from benchmark import ensemble, runner

    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0))
    events = []

    def recorded(name, function):
        def call(configuration, *args, **kwargs):
            stacked = f" ×{len(args[1])}" if name.endswith("together") else ""  # its folds' splits
            events.append((name + stacked, configuration.id))
            return function(configuration, *args, **kwargs)
        return call

    monkeypatch.setattr(runner, "warm_up", recorded("warm", runner.warm_up))
    for module, how in ((runner, ""), (ensemble, "warm ")):  # the runner's units, and the warm-up's step
        monkeypatch.setattr(module, "train_fold", recorded(how + "alone", ensemble.train_fold))
        monkeypatch.setattr(module, "train_folds_together", recorded(how + "together", ensemble.train_folds_together))
    assert run_cli(tmp_path, "--suite", "small.toml", "--fold-parallel", parallel) == 0
    first, second = "vq-vae/1/baseline", "vae/1/multidecoder/exact"
    units = ["alone", "alone"] if parallel == "off" else ["together ×2"]  # two folds: one ensemble
    assert events == ([("warm", first), ("warm " + units[0], first)] + [(unit, first) for unit in units]
                      + [(unit, second) for unit in units])


def test_heartbeats_after_a_gap_find_the_trials_another_worker_took_over_meanwhile():
    events = []

    class Paused:  # the second round of beats comes late, as on a machine that slept; trial 2 was failed then
        def record_heartbeat(self, trial_id: int) -> None:
            events.append("beat")
            if events.count("beat") == 3:
                time.sleep(0.2)

        def get_trial(self, trial_id: int):
            events.append("read")
            return SimpleNamespace(state=TrialState.FAIL if trial_id == 2 else TrialState.RUNNING)

    deadline = time.monotonic() + 10
    with Heartbeats(Paused(), [1, 2], 0.05, 1.0) as beats:
        while "read" not in events and time.monotonic() < deadline:
            time.sleep(0.01)
    assert beats.lost == [2]
    assert events[:4] == ["beat"] * 4  # beats on time read no state; the late round reads them


@pytest.mark.parametrize("text, message", [
    ('name = "t"\nfold = 3\n[[configurations]]\nfamily = "vae"\nconfig = 1\n',
     "unknown key 'fold' (did you mean 'folds'?)"),
    ('name = "t"\n[train]\nepoch = 3\n[[configurations]]\nfamily = "vae"\nconfig = 1\n',
     "[train]: unknown key 'epoch' (did you mean 'epochs'?)"),
    ('name = "t"\n[[configuration]]\nfamily = "vae"\nconfig = 1\n',
     "unknown key 'configuration' (did you mean 'configurations'?)"),
    ('name = "t"\nepochs = 3\n[[configurations]]\nfamily = "vae"\nconfig = 1\n',
     "unknown key 'epochs' (it belongs under [train])"),
    ('name = "t"\n[train]\nfolds = 3\n[[configurations]]\nfamily = "vae"\nconfig = 1\n',
     "[train]: unknown key 'folds' (it belongs at the top of the file)"),
    ('name = "t"\nmethod = "baseline"\n[[configurations]]\nfamily = "vae"\nconfig = 1\n',
     "unknown key 'method' (it belongs in a [[configurations]] table)"),
    ('name = "t"\n[train]\nprecision = "fp16"\n[[configurations]]\nfamily = "vae"\nconfig = 1\n',
     "unknown precision 'fp16'"),
    ('name = "t"\n[[configurations]]\nfamily = "vae3"\nconfig = 1\n', "unknown model family 'vae3'"),
    ('name = "t"\n[[configurations]]\nfamily = "vae"\nconfig = 7\nmethod = "baseline"\n', "unknown vae config 7"),
    ('name = "t"\n[[configurations]]\nfamily = "vae"\nconfig = 1\nmethod = "single"\nsampling = "exact"\n'
     'exponent = 20\n', "not the exact grid"),
    ('name = "t"\n[[configurations]]\nfamily = "vae"\nconfig = 1\nmethod = "multidecoder"\n'
     'sampling = "uniform"\ncount = 5000\n', "pixel count k must be at most the image's D = H·W = 1024 pixels, got 5000"),
    ('name = "t"\n[[configurations]]\nfamily = "vae"\nconfig = 1\nmethod = "baseline"\ncount = 5\n',
     "suite file typo.toml: configuration 1: the baseline takes no sampling, exponent or count"),
    ('name = "t"\n[[configurations]]\nfamily = "vae"\nconfig = 1\nmethod = "multidecoder"\nsampling = "exact"\n'
     'count = 5\n', "takes no count k"),
    ('name = "t"\n[[configurations]]\nfamily = "vae"\nconfig = 1\nmethod = "single"\nsampling = "uniform"\n'
     'exponent = 40\ncount = 5\n', "the single decoder draws each image's count k from its power law: it takes no count"),
    ('name = "t"\nfolds = 1\n[[configurations]]\nfamily = "vae"\nconfig = 1\n',
     "suite file typo.toml: folds must be >= 2"),
    ('name = "../evil"\n[[configurations]]\nfamily = "vae"\nconfig = 1\n',
     "suite name '../evil' must start with a letter or digit"),
    ('name = "t"\n[[configurations]]\nfamily = "vae"\nconfig = 1\nmethod = "single"\nexponent = 20\n',
     "method 'single' needs a sampling: uniform or gaussian"),
    ('name = "t"\n[train]\nepochs = "one"\n[[configurations]]\nfamily = "vae"\nconfig = 1\n',
     "epochs must be a number (an integer), got 'one'"),
    # Values of the wrong kind: one line, not a traceback from deep inside.
    ('name = "t"\nfolds = "5"\n[[configurations]]\nfamily = "vae"\nconfig = 1\n', "folds must be an integer, got '5'"),
    ('name = "t"\nrepeats = 2.0\n[[configurations]]\nfamily = "vae"\nconfig = 1\n', "repeats must be an integer"),
    ('name = "t"\nseed = -1\n[[configurations]]\nfamily = "vae"\nconfig = 1\n',
     "seed must be an integer in [0, 2^32), got -1"),
    ('name = "t"\ndataset = 5\n[[configurations]]\nfamily = "vae"\nconfig = 1\n', "dataset must be a name, got 5"),
    ('name = "t"\ndata_root = 5\n[[configurations]]\nfamily = "vae"\nconfig = 1\n', "data_root must be a path"),
    ('name = "t"\nconfigurations = [1, 2]\n', "configuration 1: must be a [[configurations]] table"),
    ('name = "t"\n[train]\nweight_decay = -1\n[[configurations]]\nfamily = "vae"\nconfig = 1\n',
     "[train] weight_decay must be a finite number >= 0, got -1"),
    ('name = "t"\n[train]\nlr = inf\n[[configurations]]\nfamily = "vae"\nconfig = 1\n',
     "[train] learning rate must be a finite number > 0, got inf"),
    # Values that would otherwise train something else than written.
    ('name = "t"\n[[configurations]]\nfamily = "vae"\nconfig = 1\nmethod = "multidecoder"\nsampling = "uniform"\n'
     'softadapt = "false"\n', "softadapt must be true or false, got 'false'"),
    ('name = "t"\n[[configurations]]\nfamily = "vae"\nconfig = true\nmethod = "baseline"\n',
     "config must be an integer, got True"),
    ('name = "t"\n[[configurations]]\nfamily = "vae"\nconfig = 1\nmethod = "baseline"\nbeta = true\n',
     "beta must be a number, got True"),
    ('name = "t"\n[[configurations]]\nfamily = "vae"\nconfig = 1\nmethod = "single"\nsampling = "uniform"\n'
     'exponent = "30"\n', "exponent must be a number, got '30'"),
    ('name = "t"\n[[configurations]]\nfamily = "vq-vae"\nconfig = 1\nsampling = "gaussian"\nexponent = 30\n',
     "exponent, sampling need(s) a method; without one, the table stands for the thesis's 9 configurations"),
])
def test_a_suite_file_with_a_typo_is_one_line_and_exit_2(tmp_path, capsys, text, message):
    (tmp_path / "typo.toml").write_text(text)
    assert run_cli(tmp_path, "--suite", "typo.toml") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not (tmp_path / "studies").exists()


def test_run_refuses_bf16_on_a_cpu_without_bf16_kernels_before_making_a_study(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("benchmark.train.native_bf16", lambda device: False)
    assert run_cli(tmp_path, "--suite", "smoke", "--device", "cpu", "--precision", "bf16") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: precision bf16 asked for") and "use precision fp32" in err[-1]
    assert len([line for line in err if line.startswith("error")]) == 1
    assert not (tmp_path / "studies").exists()


def test_the_study_keeps_the_precision_trained_in_which_auto_follows_and_others_are_refused(
        smoke_run, tmp_path, capsys, monkeypatch):
    """Under "auto", a CPU worker trains in float32 and a GPU worker in bf16 (an older GPU in
    float32): one study must not get folds of both. The study stores the precision its folds were
    really trained in; a worker under auto follows it where its device can, any other is refused."""
    other = tmp_path / "other"
    shutil.copytree(smoke_run, other)
    study = study_of(other, "smoke")
    trained = "bf16" if torch.cuda.is_available() else "fp32"  # smoke_run asked for auto
    assert study.user_attrs["settings"]["precision"] == trained
    other_precision = {"fp32": "bf16", "bf16": "fp32"}[trained]
    study.set_user_attr("settings", {**study.user_attrs["settings"], "precision": other_precision})
    monkeypatch.setattr("benchmark.train.native_bf16", lambda device: True)
    assert run_cli(other, "--suite", "smoke", "--quiet") == 0
    err = capsys.readouterr().err
    assert (f"note: study 'suite-smoke' trains in {other_precision}, as its first run did, so this run does too, "
            f"not in {trained} (precision auto on this device)") in err
    assert run_cli(other, "--suite", "smoke", "--quiet", "--precision", trained) == 2
    err = capsys.readouterr().err
    assert f"was made with other settings (precision {other_precision} there, {trained} now)" in err
    assert "optuna delete-study --storage sqlite:///" in err and "--study-name suite-smoke`" in err
    if other_precision == "bf16":  # a CPU without bf16 kernels cannot follow a bf16 study
        monkeypatch.setattr("benchmark.train.native_bf16", lambda device: False)
        assert run_cli(other, "--suite", "smoke", "--quiet") == 2
        assert "error: study 'suite-smoke' trains in bf16, and this CPU" in capsys.readouterr().err


def test_a_worker_under_auto_follows_a_study_another_machine_made_in_another_precision_meanwhile(
        tmp_path, capsys, monkeypatch):
    """Machines started together all find no study, and the first to make it sets its precision."""
    monkeypatch.setattr("benchmark.train.native_bf16", lambda device: True)
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0))
    assert run_cli(tmp_path, "--suite", "small.toml", "--precision", "bf16") == 0  # the other machine's (a GPU's)
    capsys.readouterr()
    looks = miss_the_first_look(monkeypatch, "benchmark.runner.stored_attr")
    assert run_cli(tmp_path, "--suite", "small.toml") == 0  # auto: fp32 on this CPU, had it made the study
    err = capsys.readouterr().err
    assert "note: study 'suite-small' trains in bf16, as its first run did, so this run does too" in err
    assert "new study" not in err  # the other machine made it
    assert looks == ["settings"] * 2  # the precision's, and again once the study refused it


def test_a_study_made_by_an_earlier_version_is_refused_and_left_alone(smoke_run, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(smoke_run, old)
    study = study_of(old, "smoke")
    settings = {k: v for k, v in study.user_attrs["settings"].items() if k != "metrics_version"}
    study.set_user_attr("settings", settings)  # as studies made before the metrics version stored them
    trials = len(study.get_trials())
    assert run_cli(old, "--suite", "smoke", "--quiet") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "made by an earlier version of mtvae-bench" in err[-1]
    assert "to start over, move its results away and remove that study" in err[-1]
    assert len(study_of(old, "smoke").get_trials()) == trials


def test_repeated_kfold_trains_every_fold_of_every_repeat(tmp_path, capsys):
    (tmp_path / "rep.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0).replace('"small"', '"rep"'))
    assert run_cli(tmp_path, "--suite", "rep.toml", "--repeats", "2", "--heartbeat", "1") == 0
    assert "2 folds × 2 repeats = 8 units" in capsys.readouterr().err
    table = pd.read_csv(tmp_path / "results" / "rep.csv")
    assert (table["state"] == "COMPLETE").all() and len(table) == 8
    assert sorted(table.groupby("config_id")["fold"].apply(sorted).iloc[0]) == [0, 1, 2, 3]
    assert sorted(table["repeat"].unique()) == [0, 1]
    # a repeat is a new shuffle: its validation split differs from the first repeat's
    first, second = (table[(table["config_id"] == table["config_id"][0]) & (table["fold"] == f)] for f in (0, 2))
    assert first["recon"].item() != second["recon"].item()


def test_a_precision_refused_is_told_before_any_data_loads_or_folder_is_made(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("benchmark.train.native_bf16", lambda device: True)  # bf16 allowed, but not stacked
    assert run_cli(tmp_path, "--suite", "smoke", "--precision", "bf16", "--fold-parallel", "on", "--dataset", "mnist",
                   "--data-root", "nowhere") == 2
    assert "bf16 folds are not stacked on a CPU" in one_line_error(capsys)  # not the missing mnist files
    assert not list(tmp_path.iterdir())


def test_a_limit_above_the_dataset_says_that_all_images_are_used(tmp_path, capsys):
    (tmp_path / "all.toml").write_text('name = "all"\ndataset = "digits"\nlimit = 100000\nfolds = 2\n[train]\n'
                                       'epochs = 1\n[[configurations]]\nfamily = "vq-vae"\nconfig = 1\n'
                                       'method = "baseline"\n')
    assert run_cli(tmp_path, "--suite", "all.toml", "--heartbeat", "1", "--data-root", "nowhere") == 0
    err = capsys.readouterr().err
    assert "note: limit 100,000 is more than the 1,438 training images of digits" in err
    assert ("note: --data-root not used: digits ships with the package (mnist, cifar10, celeba come from "
            "--data-root)") in err
    assert pd.read_csv(tmp_path / "results" / "all.csv")[["n_train", "n_val"]].sum(axis=1).eq(1_438).all()
    assert "batch size" not in err  # 719 training images a fold, at batch 128


def test_folds_smaller_than_a_batch_are_noted_while_they_are_trained(tmp_path, capsys):
    # a small --limit at the default batch size trained one step an epoch, with no word of it
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0))
    assert run_cli(tmp_path, "--suite", "small.toml", "--quiet") == 0
    smallest = int(pd.read_csv(tmp_path / "results" / "small.csv")["n_train"].min())
    assert (f"note: batch size 128 is more than a fold's {smallest} training images: each epoch is one step on all "
            f"{smallest}\n") in capsys.readouterr().err
    assert run_cli(tmp_path, "--suite", "small.toml", "--quiet") == 0  # nothing left to train: nothing to note
    assert "batch size" not in capsys.readouterr().err


def test_a_folder_that_cannot_be_written_is_refused_by_its_option_before_a_study_exists(tmp_path, capsys):
    # It once failed after the first unit had trained, leaving a study behind (or with a traceback).
    (tmp_path / "afile").write_text("")
    assert run_cli(tmp_path, "--suite", "smoke", "--results-dir", "afile") == 2
    assert one_line_error(capsys) == "error: --results-dir afile: the folder cannot be made (afile is not a folder)"
    assert run_cli(tmp_path, "--suite", "smoke", "--artifacts-dir", "afile/weights") == 2
    assert one_line_error(capsys) == (f"error: --artifacts-dir {tmp_path / 'afile' / 'weights'}: the folder cannot be "
                                      f"made ({tmp_path / 'afile'} is not a folder)")
    assert [p.name for p in tmp_path.iterdir()] == ["afile"]


def test_a_run_on_data_that_gained_images_since_its_study_began_is_refused(tmp_path, capsys):
    # Its folds, a function of the number of images, changed: the new units were paired with the earlier ones by
    # fold number though they had other splits.
    from PIL import Image

    (tmp_path / "images").mkdir()

    def add(count: int) -> None:
        for i in range(count):
            Image.fromarray(np.full((8, 8), 7 * i, dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")

    add(12)
    (tmp_path / "tiny.toml").write_text('name = "tiny"\ndataset = "folder:images"\nfolds = 2\n[train]\nepochs = 1\n'
                                        '[[configurations]]\nfamily = "vae"\nconfig = 1\nmethod = "baseline"\n')
    first = len(load_dataset(f"folder:{tmp_path / 'images'}").train)
    assert run_cli(tmp_path, "--suite", "tiny.toml") == 0
    add(16)
    now = len(load_dataset(f"folder:{tmp_path / 'images'}").train)
    capsys.readouterr()
    assert run_cli(tmp_path, "--suite", "tiny.toml") == 2
    assert one_line_error(capsys) == (
        f"error: study 'suite-tiny' split {first} training images into its folds and these data have {now}: folds made "
        "now would not be those its results were trained on, and no comparison could pair them; put the earlier "
        "images back, or run these under a --name of its own")


def test_a_run_on_as_many_images_with_other_pixels_is_refused(tmp_path, capsys):
    # A folder whose files were replaced (or renamed into another order) kept its count, and a run trained on them
    # was reported beside, and paired with, the folds trained on the earlier images.
    from PIL import Image

    (tmp_path / "images").mkdir()

    def write(shade: int) -> None:
        for i in range(12):
            pixels = np.full((8, 8), (shade + 7 * i) % 256, dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / f"{i}.png")

    write(0)
    (tmp_path / "tiny.toml").write_text('name = "tiny"\ndataset = "folder:images"\nfolds = 2\n[train]\nepochs = 1\n'
                                        '[[configurations]]\nfamily = "vae"\nconfig = 1\nmethod = "baseline"\n')
    assert run_cli(tmp_path, "--suite", "tiny.toml") == 0
    before = (tmp_path / "results" / "tiny.csv").read_bytes()
    write(100)
    with (tmp_path / "tiny.toml").open("a") as suite:  # and the suite gained a configuration
        suite.write('[[configurations]]\nfamily = "vae"\nconfig = 2\nmethod = "baseline"\n')
    capsys.readouterr()
    assert run_cli(tmp_path, "--suite", "tiny.toml") == 2
    assert one_line_error(capsys) == (
        "error: study 'suite-tiny' split other training images into its folds than these: as many (10), with other "
        "pixels (a folder's files changed or renamed since, or images decoded by another version of Pillow or "
        "torchvision): folds made now would not be those its results were trained on, and no comparison could pair "
        "them; put the earlier images back, or run these under a --name of its own")
    assert (tmp_path / "results" / "tiny.csv").read_bytes() == before
    study = optuna.load_study(study_name="suite-tiny", storage=f"sqlite:///{tmp_path / 'studies' / 'tiny.db'}")
    assert len(study.trials) == 2  # the first run's two folds, nothing of VAE 2 queued
    write(0)  # the images put back: the run goes on
    assert run_cli(tmp_path, "--suite", "tiny.toml") == 0
    # a study made before studies kept a digest takes these images, saying that they could not be compared
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'studies' / 'tiny.db'}")
    with storage.engine.begin() as connection:
        connection.execute(sqlalchemy.text("DELETE FROM study_user_attributes WHERE key = 'images_digest'"))
    write(100)
    with (tmp_path / "tiny.toml").open("a") as suite:
        suite.write('[[configurations]]\nfamily = "vae"\nconfig = 2\nmethod = "multidecoder"\nsampling = "exact"\n')
    capsys.readouterr()
    assert run_cli(tmp_path, "--suite", "tiny.toml") == 0
    assert ("note: study 'suite-tiny' was made before studies kept a digest of their images: these cannot be compared "
            "with those its finished work was trained on (as many), and are checked from now on") in \
        capsys.readouterr().err
    assert run_cli(tmp_path, "--suite", "tiny.toml") == 0
    assert "digest" not in capsys.readouterr().err  # said once: the study keeps these images' digest


def test_a_storage_file_whose_folder_cannot_be_made_is_refused_by_its_option(tmp_path, capsys):
    # It said "error: File exists: afile", naming no option.
    (tmp_path / "afile").write_text("")
    assert run_cli(tmp_path, "--suite", "smoke", "--storage", "sqlite:///afile/s.db") == 2
    assert one_line_error(capsys) == ("error: --storage sqlite:///afile/s.db: the folder afile cannot be made "
                                      "(afile is not a folder)")
    assert [p.name for p in tmp_path.iterdir()] == ["afile"]


def test_a_run_refused_for_any_reason_makes_no_folder(tmp_path, capsys):
    # The folders it writes in were made before the last checks: a refused run left an empty results/zz/artifacts/.
    for given in ([], ["--results-dir", "try/r5", "--artifacts-dir", "weights"]):
        assert run_cli(tmp_path, "--suite", "smoke", "--name", "zz", "--studies-dir", "/dev/null/s", *given) == 2
        assert one_line_error(capsys) == ("error: --studies-dir /dev/null/s: the folder cannot be made (/dev/null is "
                                          "not a folder)")
    assert not list(tmp_path.iterdir())
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0))
    assert run_cli(tmp_path, "--suite", "small.toml", "--heartbeat", "1") == 0
    made = sorted(tmp_path.rglob("*"))
    capsys.readouterr()
    # refused by its study, made with other settings, once every folder was found writable
    assert run_cli(tmp_path, "--suite", "small.toml", "--epochs", "2", "--results-dir", "elsewhere",
                   "--artifacts-dir", "weights") == 2
    assert "was made with other settings (epochs 1 there, 2 now)" in one_line_error(capsys)
    assert sorted(tmp_path.rglob("*")) == made


def test_a_run_resumed_without_the_first_runs_artifacts_dir_exports_where_the_weights_are(tmp_path):
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0))
    assert run_cli(tmp_path, "--suite", "small.toml", "--artifacts-dir", "weights") == 0
    assert run_cli(tmp_path, "--suite", "small.toml") == 0  # resumed, weights in the default folder
    table = pd.read_csv(tmp_path / "results" / "small.csv")
    assert len(table) == 4 and all(Path(p).parent == tmp_path / "weights" for p in table["checkpoint"])


def test_a_full_disk_warns_once_while_training_goes_on_then_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0))

    def no_space(partial):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write() raises it: no file named

    monkeypatch.setattr("benchmark.export.write_whole", lambda path, write: write_whole(path, no_space))
    assert run_cli(tmp_path, "--suite", "small.toml") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("warning: exporting the results failed ([Errno 28] No space left on device: "
                     f"'{Path('results') / 'small.csv'}'); training goes on") == 1
    assert err.splitlines()[-1] == f"error: No space left on device: {Path('results') / 'small.csv'}"
    assert sum(complete_per_unit(study_of(tmp_path, "small")).values()) == 4  # every unit trained, in the study


def test_a_run_starts_no_more_workers_than_units_to_train(tmp_path, capsys, monkeypatch):
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0))
    started = []
    monkeypatch.setattr("benchmark.runner.run_workers", lambda target, args, ended: started.append(len(args)) or [])
    monkeypatch.setattr("benchmark.processes.usable_cores", lambda: 2)
    assert run_cli(tmp_path, "--suite", "small.toml", "--workers", "8") == 1  # the stand-in trained nothing
    assert started == [4]  # 2 configurations × 2 folds
    assert ("warning: 4 worker processes on 2 cores: workers beyond one per core take turns and slow each other "
            "down; --workers 2 is the most that helps here") in capsys.readouterr().err
    # A killed run's units still RUNNING are to train again: they count, as the waiting ones do.
    study = study_of(tmp_path, "small")
    for trial in study.trials[:3]:
        study._storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING)
    assert run_cli(tmp_path, "--suite", "small.toml", "--workers", "8") == 1
    assert started == [4, 4]


@pytest.mark.parametrize("room", [True, False])
def test_a_runs_workers_are_given_its_images_in_shared_memory_or_load_them_where_there_is_no_room(
        tmp_path, capsys, monkeypatch, room):
    # each worker loaded and held a copy of its own: 3 × 8 GB for CelebA with --workers 2
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0))
    given = given_to_workers(monkeypatch, "benchmark.runner.run_workers", room)
    assert run_cli(tmp_path, "--suite", "small.toml", "--workers", "2") == 1  # the stand-in trained nothing
    check_given(given, load_dataset("mnist5k", limit=120).train, room, capsys.readouterr().err)


def test_a_run_says_it_starts_fewer_workers_than_asked_where_fewer_units_are_left(tmp_path, capsys, monkeypatch):
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0))
    started = []
    monkeypatch.setattr("benchmark.runner.run_workers", lambda target, args, ended: started.extend(args) or [])
    assert run_cli(tmp_path, "--suite", "small.toml", "--workers", "8") == 1  # the stand-in trained nothing
    assert len(started) == 4
    assert "note: 4 worker processes, not 8: the suite has 4 units left to train" in capsys.readouterr().err


def test_workers_that_were_killed_or_failed_are_named_when_the_run_ends(tmp_path, capsys, monkeypatch):
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0))
    exits = [SimpleNamespace(exitcode=-signal.SIGKILL), SimpleNamespace(exitcode=1), SimpleNamespace(exitcode=0)]
    monkeypatch.setattr("benchmark.runner.run_workers", lambda target, args, ended: exits)
    assert run_cli(tmp_path, "--suite", "small.toml", "--workers", "3") == 1
    err = capsys.readouterr().err
    assert ("warning: 1 of 3 worker processes were killed (SIGKILL); a unit they left unfinished is trained again "
            "by a worker still running or by the next run") in err
    assert "warning: 1 of 3 worker processes stopped with an error (messages above)" in err


def test_a_damaged_study_file_is_one_line_saying_what_to_do(tmp_path, capsys):
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0))
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "small.db").write_bytes(b"SQLite format 3\x00" + b"\x07" * 200)
    assert run_cli(tmp_path, "--suite", "small.toml") == 2
    error = one_line_error(capsys)
    assert error.startswith(f"error: cannot open storage 'sqlite:///{Path('studies') / 'small.db'}': ")
    assert error.endswith("; the file is damaged: restore a copy, or move it aside (with a suite's exported results) "
                          "and run again to start anew (its finished work is lost)")


def test_the_load_a_run_keeps_up_by_itself_is_its_threads_at_most_one_per_core_and_one_per_worker(monkeypatch):
    monkeypatch.setattr("benchmark.processes._machine_cpus", lambda: 2)
    monkeypatch.setattr("benchmark.processes.training_threads", lambda workers: 1)  # OMP_NUM_THREADS=1
    assert [our_load(n) for n in (1, 2, 8)] == [1, 2, 8]
    monkeypatch.setattr("benchmark.processes.training_threads", lambda workers: 2 // workers or 1)
    assert [our_load(n) for n in (1, 2, 8)] == [2, 2, 8]
    assert busy_load(2.9, cpus=2, ours=1) == 2.9  # one thread of ours: other work holds about two cores
    assert busy_load(1.9, cpus=2, ours=1) is None  # and here one, leaving ours a core of its own
    assert busy_load(2.9, cpus=2) is None  # our threads on every core
    assert busy_load(41, cpus=64, ours=1) is None and busy_load(64, cpus=64, ours=4) is None  # cores left free
    assert busy_load(66.5, cpus=64, ours=4) == 66.5


def test_a_run_on_one_thread_records_other_work_that_holds_the_other_core(tmp_path, monkeypatch, capsys):
    # Under OMP_NUM_THREADS=1, a job holding both cores of 2 went unflagged: it was taken for our own threads.
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0))
    cores = os.cpu_count() or 1
    monkeypatch.setattr("benchmark.processes.training_threads", lambda workers: 1)
    monkeypatch.setattr("benchmark.processes.os.getloadavg", lambda: (cores + 0.6, 0.0, 0.0))
    assert run_cli(tmp_path, "--suite", "small.toml") == 0
    assert "warning: the machine was busy while this run trained" in capsys.readouterr().err
    assert (pd.read_csv(tmp_path / "results" / "small.csv")["busy_load"] == cores + 0.6).all()


def test_more_workers_than_cores_is_a_warning_naming_the_most_that_helps():
    assert crowded_note(2, cores=2) is None
    assert crowded_note(8, cores=2) == ("warning: 8 worker processes on 2 cores: workers beyond one per core take "
                                        "turns and slow each other down; --workers 2 is the most that helps here")


def test_threads_that_wait_for_cores_other_work_holds_are_a_note_before_training():
    assert shared_threads_note(2, load=2.9, cpus=2) is None  # our own work keeps about one per core busy
    assert shared_threads_note(1, load=9.0, cpus=2) is None  # one thread waits for no other
    assert shared_threads_note(2, load=4.6, cpus=2) == (
        "note: the machine is busy (load average 4.6 on 2 cores): each training step is split over 2 threads, which "
        "wait for one another while other work holds their cores; on a shared machine, OMP_NUM_THREADS=1 before the "
        "command trains several times faster")


def test_workers_share_the_cores_and_take_fewer_threads_where_omp_num_threads_asks(monkeypatch):
    monkeypatch.setattr("benchmark.processes.usable_cores", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert [worker_threads(n) for n in (1, 2, 3, 16)] == [8, 4, 2, 1]
    for asked, threads in (("1", 1), ("2", 2), ("16", 4), ("0", 4), ("many", 4)):
        monkeypatch.setenv("OMP_NUM_THREADS", asked)  # the busy CPU note's advice holds with --workers too
        assert worker_threads(2) == threads


def test_a_long_run_on_a_cpu_says_what_its_units_left_cost_before_it_starts():
    full, cpu = get_suite("full"), torch.device("cpu")
    keys = unit_keys(full)
    hours = sum(full.unit_seconds()[parse_unit(key)[0]] for key in keys) / 3600
    assert hours > 24
    assert long_on_cpu_note(full, {}, cpu) == (
        f"note: the 225 units left to train take about {hours:.0f} h on a 2-core CPU (`suites`' estimate); a GPU "
        "trains them many times faster")
    done = optuna.trial.create_trial(value=0.0)
    failed = optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"error": "diverged"})
    interrupted = optuna.trial.create_trial(state=TrialState.FAIL)  # trained again, so still to pay for
    states = {keys[0]: [done], keys[1]: [failed], keys[2]: [interrupted]}
    assert "the 223 units left" in long_on_cpu_note(full, states, cpu)
    assert long_on_cpu_note(full, {}, torch.device("cuda")) is None
    assert long_on_cpu_note(get_suite("smoke"), {}, cpu) is None  # seconds: nothing to warn of
    assert long_on_cpu_note(get_suite("quick"), {}, cpu) is None  # the suite sized for a CPU


def test_a_suite_file_edited_since_its_run_is_refused_without_pointing_back_at_the_same_command(tmp_path, capsys,
                                                                                                  monkeypatch):
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0))
    monkeypatch.setattr("benchmark.runner._work_until_interrupted", lambda worker: None)  # trains nothing
    assert run_cli(tmp_path, "--suite", "small.toml") == 1  # made the study, recorded its command
    capsys.readouterr()
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0).replace("epochs = 1", "epochs = 2"))
    assert run_cli(tmp_path, "--suite", "small.toml") == 2
    error = one_line_error(capsys)
    assert "(epochs 1 there, 2 now); it recorded this very command, so the suite has changed since (its file" in error
    assert "to go on with it" not in error  # the same command would be refused again
    assert run_cli(tmp_path, "--suite", "small.toml", "--epochs", "1") == 1  # the study's settings again: it goes on
    # made by an earlier version, whose VQ-VAE 1 was another model: no command of this version goes on with it
    study = study_of(tmp_path, "small")
    study.set_user_attr("settings", {**study.user_attrs["settings"], "metrics_version": 3})
    capsys.readouterr()
    assert run_cli(tmp_path, "--suite", "small.toml", "--epochs", "1") == 2
    error = one_line_error(capsys)
    assert ("was made by an earlier version of mtvae-bench, in which VQ-VAE 1 applied its activation twice after its "
            "last encoder and first decoder layers, so its folds trained another model than this version's; for a "
            "separate run, give it a --name of its own") in error


def test_a_run_that_overrides_its_suites_settings_says_it_is_filed_under_the_suites_name(tmp_path, capsys,
                                                                                          monkeypatch):
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0))
    monkeypatch.setattr("benchmark.runner._work_until_interrupted", lambda worker: None)  # trains nothing
    assert run_cli(tmp_path, "--suite", "small.toml", "--epochs", "2", "--seed", "3") == 1
    assert ("note: with epochs 2, seed 3, this run is filed under the suite's own name, 'small': a later run of "
            "small.toml without those options is refused; --name files such a variant apart\n") in capsys.readouterr().err
    assert run_cli(tmp_path, "--suite", "small.toml", "--epochs", "2", "--seed", "3") == 1
    assert "filed under" not in capsys.readouterr().err  # once, before its first export
    assert run_cli(tmp_path, "--suite", "small.toml", "--epochs", "2", "--name", "small-e2") == 1  # named apart
    for option in ("--device", "cpu"), ("--precision", "fp32"):  # no setting; "auto" takes the study's precision
        place = f"r{option[0]}"
        assert run_cli(tmp_path, "--suite", "small.toml", *option, "--results-dir", place, "--studies-dir", place) == 1
    assert "filed under" not in capsys.readouterr().err


def test_a_run_on_a_busy_machine_warns_that_its_training_times_are_high(tmp_path, capsys, monkeypatch):
    (tmp_path / "small.toml").write_text(SMALL_SUITE.format(folds=2, w1=1.0))
    monkeypatch.setattr("benchmark.processes.os.getloadavg", lambda: (9.0, 9.0, 9.0))
    monkeypatch.setattr("benchmark.processes.os.cpu_count", lambda: 2)
    monkeypatch.setattr("benchmark.runner.torch.get_num_threads", lambda: 2)
    assert run_cli(tmp_path, "--suite", "small.toml", "--device", "cpu") == 0
    err = capsys.readouterr().err
    assert "note: the machine is busy (load average 9.0 on 2 cores): each training step is split over 2" in err
    assert err.endswith(
        "warning: the machine was busy while this run trained 4 of its 4 units (load average 9.0 on 2 cores): other "
        "work took cores from it, so their training times (`seconds`, the report's cost column) are high\n")
    assert run_cli(tmp_path, "--suite", "small.toml") == 0
    assert "busy" not in capsys.readouterr().err  # it trained nothing
    # The loads its units recorded, which the report's caveat counts, not the load as the run ends (it missed one)
    loads = iter([9.0])
    monkeypatch.setattr("benchmark.runner.busy_load", lambda **kwargs: next(loads, None))
    monkeypatch.setattr("benchmark.processes.os.getloadavg", lambda: (0.5, 0.5, 0.5))
    assert run_cli(tmp_path, "--suite", "small.toml", "--name", "calm") == 0
    assert ("warning: the machine was busy while this run trained 1 of its 4 units (load average 9.0 on 2 cores)"
            in capsys.readouterr().err)
