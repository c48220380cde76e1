"""The store: the claim of a waiting unit (one worker, never two) and opening a storage."""

import dataclasses
import errno
import os
import socket
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from conftest import times_claimed
from optuna.trial import TrialState

from benchmark.export import export, export_note
from benchmark.storage import (
    METRICS_VERSION,
    StoreConfig,
    StoreError,
    agree_heartbeat,
    differing_settings_message,
    fail_orphans,
    open_storage,
    optuna_command,
    settings_differ,
    stored_first,
    upgraded,
    version_problem,
)
from benchmark.run_status import resume_line
from benchmark.store import (UNIT_PARAM, UNIT_STATUSES, enqueue_missing, open_suite_study, shares_units, unit_keys,
                             unit_states, unit_status)
from benchmark.studies import describe_study, list_studies
from benchmark.suites import get_suite


def test_library_settings_take_what_a_script_would_pass(tmp_path):
    store = StoreConfig(studies_dir=str(tmp_path), results_dir=str(tmp_path / "r"))  # strings, as from argv
    assert store.url("s") == f"sqlite:///{(tmp_path / 's.db').as_posix()}" and store.results_dir == tmp_path / "r"
    assert get_suite("smoke").override(weight_decay=0.0).train.weight_decay == 0.0  # every training setting


def test_racing_workers_claim_every_waiting_trial_exactly_once_on_sqlite(tmp_path):
    # Optuna's own claim (read WAITING, then write RUNNING) let 11-18 of these 60 trials be
    # claimed twice on SQLite, where a read takes no lock before the write.
    counts = times_claimed(f"sqlite:///{tmp_path / 'race.db'}")
    assert len(counts) == 60
    assert set(counts.values()) == {1}


def test_a_trial_that_never_beat_is_failed_once_old_even_with_a_worker_recorded(tmp_path):
    """A retried trial copies its predecessor's user attributes, ``worker`` among them: only the
    missing heartbeat tells that the worker which claimed it died before its first beat."""
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 's.db'}", StoreConfig(heartbeat_interval=1)))
    beating, orphan = study.ask(), study.ask()
    orphan.set_user_attr("worker", "host:123")
    study._storage.record_heartbeat(beating._trial_id)
    time.sleep(0.3)
    study.ask()  # no beat yet either, but too young to tell
    assert fail_orphans(study, grace_period=0.1) == 1
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING, TrialState.FAIL, TrialState.RUNNING]


def test_a_database_server_that_never_answers_is_a_clear_error_not_a_hang(monkeypatch):
    pytest.importorskip("psycopg2")
    monkeypatch.setattr("benchmark.storage.CONNECT_TIMEOUT", 2)
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"postgresql://user:secret@127.0.0.1:{silent.getsockname()[1]}/mtvae"
        started = time.monotonic()
        refused = r"cannot open storage 'postgresql.*://user:\*\*\*@127\.0\.0\.1.*timeout"
        with pytest.raises(StoreError, match=refused) as error:
            open_storage(url, StoreConfig(storage=url))
    assert time.monotonic() - started < 20 and "secret" not in str(error.value)


def test_opening_a_suite_s_study_says_whether_it_made_it(tmp_path):
    # Runs started together on no study all found none before they opened it, and each said it made it.
    suite = get_suite("smoke").override(folds=2)
    store = StoreConfig(studies_dir=tmp_path, results_dir=tmp_path)
    first, made = open_suite_study(suite, store)
    assert made and first.user_attrs["settings"]["folds"] == 2
    assert open_suite_study(suite, store)[1] is False
    # one that found no settings before it stored its own, after another's were stored: not made by it
    other = optuna.load_study(study_name="suite-smoke", storage=open_storage(store.url("smoke"), store))
    assert stored_first(other, "settings", {"folds": 3}) is False
    assert other.user_attrs["settings"]["folds"] == 2


def test_the_export_tells_an_interrupted_unit_from_one_never_started(tmp_path, monkeypatch):
    suite = get_suite("smoke").override(folds=2)
    store = StoreConfig(studies_dir=tmp_path, results_dir=tmp_path)
    study, _ = open_suite_study(suite, store)
    keys = unit_keys(suite)
    study.enqueue_trial({UNIT_PARAM: keys[0]})
    trial_id = unit_states(study)[keys[0]][0]._trial_id
    study._storage.set_trial_state_values(trial_id, TrialState.RUNNING)
    study._storage.set_trial_state_values(trial_id, TrialState.FAIL)  # Ctrl-C: a FAIL without a reason
    table = pd.read_csv(export(study, suite, store)[0])
    assert list(table["state"][:2]) == ["INTERRUPTED", "MISSING"]
    # Integer columns with gaps (no trial yet) print as integers, not as 0.0
    text = pd.read_csv(tmp_path / "smoke.csv", dtype=str, keep_default_na=False)
    assert text.loc[0, "trial"] == "0" and text.loc[1, "trial"] == ""
    # Each file is written aside and renamed into place: a disk that fills half-way through leaves the last one
    history, write_text = (tmp_path / "smoke_history.csv").read_bytes(), Path.write_text

    def full_disk(path: Path, text: str) -> int:
        if "history" not in path.name:
            return write_text(path, text)
        write_text(path, text[:20])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError, match="smoke_history.csv"):
        export(study, suite, store)
    monkeypatch.undo()
    assert (tmp_path / "smoke_history.csv").read_bytes() == history
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file() and not p.name.endswith(".db")) == [
        "smoke.csv", "smoke_history.csv", "smoke_meta.json"]


def test_a_rerun_of_a_run_stopped_before_any_unit_was_done_says_it_resumes(tmp_path):
    suite = get_suite("smoke").override(folds=2)
    study, _ = open_suite_study(suite, StoreConfig(studies_dir=tmp_path, results_dir=tmp_path))
    assert resume_line(study, suite, 50) is None  # nothing queued: a new run
    enqueue_missing(study, unit_keys(suite))
    units = suite.units
    assert resume_line(study, suite, 50) == f"resuming: 0 of {units} units already done; {units} not finished"


def test_studies_list_and_show_count_a_suite_study_s_units_once_however_often_they_were_retried(tmp_path):
    # It counted trials alone: a unit interrupted twice and then done read as two interrupted and one complete.
    suite = get_suite("smoke").override(folds=2)
    store = StoreConfig(studies_dir=tmp_path, results_dir=tmp_path)
    study, _ = open_suite_study(suite, store)
    keys = unit_keys(suite)
    storage = study._storage

    def attempt(key: str, state: TrialState, error: str | None = None) -> None:
        study.enqueue_trial({UNIT_PARAM: key})
        trial_id = unit_states(study)[key][-1]._trial_id
        if state != TrialState.WAITING:
            storage.set_trial_state_values(trial_id, TrialState.RUNNING)
        if error:
            storage.set_trial_user_attr(trial_id, "error", error)
        if state.is_finished():
            storage.set_trial_state_values(trial_id, state, [0.0] if state == TrialState.COMPLETE else None)

    for state in (TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE):  # interrupted twice, then done
        attempt(keys[0], state)
    attempt(keys[1], TrialState.FAIL)
    attempt(keys[1], TrialState.FAIL, "loss diverged at epoch 1")  # interrupted, then failed for good
    attempt(keys[2], TrialState.FAIL)
    attempt(keys[2], TrialState.RUNNING)  # its retry in training
    attempt(keys[3], TrialState.WAITING)
    attempt(keys[4], TrialState.FAIL)  # interrupted: the next run queues it again
    attempt(keys[4], TrialState.FAIL)
    assert [unit_status(unit_states(study)[key]) for key in keys[:5]] == list(UNIT_STATUSES)
    assert describe_study(study).splitlines()[0] == (
        "study suite-smoke: 5 units (done 1, failed 1, running 1, waiting 1, interrupted 1) in 10 trials "
        "(complete 1, pruned 0, failed 1, interrupted 6, running 1, waiting 1)")
    (row,) = list_studies(store.url("smoke"))  # `studies list`: the units, neither pruned nor surplus
    assert (row.complete, row.failed, row.running, row.waiting, row.interrupted, row.pruned, row.surplus) == (
        1, 1, 1, 1, 1, None, None)


def test_a_unit_not_complete_exports_no_metrics_that_a_killed_attempt_left(tmp_path):
    # Optuna's retry of a killed worker's trial copies its user attributes: a worker killed while it
    # recorded its unit left metrics and a history that the export showed beside a WAITING state.
    suite = get_suite("smoke").override(folds=2)
    store = StoreConfig(studies_dir=tmp_path, results_dir=tmp_path)
    study, _ = open_suite_study(suite, store)
    keys = unit_keys(suite)
    for key in keys[:2]:
        study.enqueue_trial({UNIT_PARAM: key})
    waiting, diverged = (unit_states(study)[key][0]._trial_id for key in keys[:2])
    for name, value in {"metrics": {"recon": 0.1, "latent": 2.0}, "seconds": 3.0,
                        "history": [{"epoch": 1, "recon": 0.1}]}.items():
        study._storage.set_trial_user_attr(waiting, name, value)
    study._storage.set_trial_state_values(diverged, TrialState.RUNNING)
    study._storage.set_trial_user_attr(diverged, "error", "loss diverged at epoch 1")
    study._storage.set_trial_state_values(diverged, TrialState.FAIL)
    results, history = export(study, suite, store)
    table = pd.read_csv(results)
    assert list(table["state"][:2]) == ["WAITING", "FAIL"] and table["recon"][:2].isna().all()
    assert table["seconds"][:2].isna().all() and table.loc[1, "error"] == "loss diverged at epoch 1"
    assert pd.read_csv(history).empty


def test_a_tuned_configuration_is_labelled_before_any_of_its_folds_ran(tmp_path):
    smoke = get_suite("smoke").override(folds=2)
    tuned = dataclasses.replace(smoke, name="smoke-tuned", params_from=((smoke.configurations[2].id, "search-x"),))
    store = StoreConfig(studies_dir=tmp_path, results_dir=tmp_path)
    table = pd.read_csv(export(open_suite_study(tuned, store)[0], tuned, store)[0], keep_default_na=False)
    assert (table["state"] == "MISSING").all()
    assert table.groupby("config_id", sort=False)["params_from"].unique().map(list).tolist() == \
        [[""], [""], ["search-x"], [""], [""], [""]]


def test_a_run_on_another_storage_says_that_its_export_replaces_the_others(tmp_path, monkeypatch):
    suite = get_suite("smoke").override(folds=2)
    store = StoreConfig(studies_dir=tmp_path, results_dir=tmp_path)
    assert export_note(suite, store) is None  # nothing exported yet
    export(open_suite_study(suite, store)[0], suite, store)
    assert export_note(suite, store) is None  # the same storage: its own export
    monkeypatch.chdir(tmp_path)
    assert export_note(suite, StoreConfig(studies_dir=Path("."), results_dir=tmp_path)) is None  # by a relative path
    other = StoreConfig(storage=f"sqlite:///{tmp_path / 'other.db'}", results_dir=tmp_path)
    note = export_note(suite, other)
    assert note.startswith(f"note: {tmp_path / 'smoke'}.csv holds the results of the study in "
                           f"sqlite:///{tmp_path.as_posix()}/smoke.db; this run exports the one in ")
    (tmp_path / "smoke.db").rename(tmp_path / "other.db")  # moved, as with the folder it was in
    assert export_note(suite, other) is None


def test_of_two_workers_starting_together_the_first_heartbeat_holds_for_both(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'beat.db'}"
    first = optuna.create_study(study_name="s", storage=open_storage(url, StoreConfig(storage=url)))
    second = optuna.load_study(study_name="s", storage=open_storage(url, StoreConfig(storage=url)))
    # The second worker looked before the first wrote, so it also finds no interval stored.
    looked, attrs = [], optuna.Study.user_attrs

    def stale_once(study):
        if study is second and not looked:
            looked.append(True)
            return {}
        return attrs.fget(study)

    monkeypatch.setattr(optuna.Study, "user_attrs", property(stale_once))
    assert agree_heartbeat(first, 10) == 10
    assert agree_heartbeat(second, 30) == 10  # Optuna's setter would have overwritten it with 30
    assert looked and first.user_attrs["heartbeat"] == 10


@pytest.mark.parametrize("change, shared", [
    ({}, True),
    ({"configurations": ["a", "b", "c"]}, True),                                     # c added
    ({"configurations": ["b", "a"]}, True),                                          # only the order
    ({"configurations": ["a", "b", "c"], "params_from": {"b": "s", "c": "t"}}, True),  # c added from a search
    ({"configurations": ["a"], "params_from": {}}, True),                            # b not run this time
    ({"configurations": ["a", "b", "c"], "epochs": 4}, False),                       # trained otherwise
    ({"metrics_version": 2}, False),                                                 # measured otherwise
    ({"params_from": {"b": "other"}}, False),                                        # b tuned by another search
])
def test_suites_listing_other_configurations_share_a_studys_units(change, shared):
    stored = {"epochs": 3, "configurations": ["a", "b"], "params_from": {"b": "s"}, "metrics_version": 3}
    assert shares_units(stored, {**stored, **change}) is shared


def test_a_settings_mismatch_names_the_entries_that_differ_not_a_cut_long_value():
    ranges = {"w1": {"low": 0.1, "high": 10.0, "log": True}, "w2": {"low": 0.5, "high": 20.0, "log": True}}
    stored = {"ranges": ranges, "configurations": ["vae/1/baseline", "vae/1/single/uniform/a=40"], "epochs": 3}
    wanted = {"ranges": {**ranges, "w2": {**ranges["w2"], "high": 3.0}},
              "configurations": ["vae/1/baseline", "vae/1/single/gaussian/a=20"], "epochs": 3}
    message = differing_settings_message("s", "sqlite:///x.db", stored, wanted)
    assert message == ("study 's' in sqlite:///x.db was made with other settings ("
                       'configurations vae/1/single/uniform/a=40 there only, '
                       'configurations vae/1/single/gaussian/a=20 now only, ranges.w2.high 20.0 there, 3.0 now)')
    reordered = {**stored, "configurations": stored["configurations"][::-1]}
    assert message.startswith("study") and "(configurations in another order)" in differing_settings_message(
        "s", "sqlite:///x.db", stored, reordered)


def test_a_settings_mismatch_writes_values_as_a_reader_types_them():
    stored = {"ranges": {"beta": {"low": 0.1, "high": 10.0, "log": True}}, "softadapt": False, "limit": None,
              "objectives": ["recon"]}
    wanted = {"ranges": {}, "softadapt": True, "limit": 200, "objectives": ["recon", "latent"]}
    assert differing_settings_message("s", "sqlite:///x.db", stored, wanted) == (
        "study 's' in sqlite:///x.db was made with other settings (limit unset there, 200 now, objectives latent now "
        "only, ranges.beta low=0.1 high=10.0 log=true there, unset now, softadapt false there, true now)")


def test_a_study_made_before_it_stored_a_setting_counts_at_the_value_it_trained_with():
    """A search stores its weight decay since it took --weight-decay; every search before trained at 0.01."""
    stored = {"epochs": 3, "metrics_version": METRICS_VERSION}
    assert settings_differ(stored, {**stored, "weight_decay": 0.01}) == []
    assert settings_differ(stored, {**stored, "weight_decay": 0.0}) == ["weight_decay"]
    assert settings_differ(stored, stored) == []  # a setting neither has is no difference
    assert differing_settings_message("s", "sqlite:///x.db", stored, {**stored, "weight_decay": 0.0}) == (
        "study 's' in sqlite:///x.db was made with other settings (weight_decay 0.01 there, 0.0 now)")


@pytest.mark.parametrize("settings, touched", [
    ({"suite": "s", "configurations": ["vae/1/baseline/w=1,1,2", "vq-vae/2/baseline"]}, False),
    ({"suite": "s", "configurations": ["vq-vae/2/baseline/w=1,1,0.5"]}, True),
    ({"family": "vq-vae", "config": 2, "method": "single", "softadapt": False}, True),   # a search tunes β
    ({"family": "vq-vae", "config": 2, "method": "single", "softadapt": True}, False),   # β stays at the default
    ({"family": "vae", "config": 1, "method": "single", "softadapt": False}, False),
])
def test_a_version_2_study_is_refused_only_where_a_vq_vaes_beta_changed_meaning(settings, touched):
    """Version 3 made a VQ-VAE's β the commitment weight: a study at default VQ weights trains the same."""
    stored = {**settings, "metrics_version": 2}
    assert (upgraded(stored)["metrics_version"] == 2) == touched
    problem = version_problem("s", "sqlite:///x.db", stored)
    assert (problem is not None) == touched
    if touched:
        assert "made by an earlier version" in problem and "β weighed the whole VQ loss" in problem
        message = differing_settings_message("s", "sqlite:///x.db", stored,
                                             {**settings, "metrics_version": METRICS_VERSION})
        assert message == problem


@pytest.mark.parametrize("settings, touched", [
    ({"suite": "s", "configurations": ["vae/1/baseline", "vq-vae/2/baseline", "vq-vae/3/single/gaussian/a=40"]},
     False),
    ({"suite": "s", "configurations": ["vae/1/baseline", "vq-vae/1/multidecoder/uniform"]}, True),
    ({"family": "vq-vae", "config": 1, "method": "single", "softadapt": True}, True),
    ({"family": "vq-vae", "config": 2, "method": "single", "softadapt": True}, False),
])
@pytest.mark.parametrize("version", [2, 3])
def test_a_study_that_trained_vq_vae_1_before_its_double_activation_went_is_refused(settings, touched, version):
    """Version 4 changed VQ-VAE 1's layers alone: studies of other models, whatever their version's changes
    left untouched, carry on; VQ-VAE 1's old folds are never mixed with new ones."""
    stored = {**settings, "metrics_version": version}
    problem = version_problem("s", "sqlite:///x.db", stored)
    assert (problem is not None) == touched
    assert upgraded(stored)["metrics_version"] == (3 if touched else METRICS_VERSION)
    if touched:
        assert problem.endswith("in which VQ-VAE 1 applied its activation twice after its last encoder and first "
                                "decoder layers, so its folds trained another model than this version's")
    assert "made by an earlier version of mtvae-bench, in which validation measured otherwise" in version_problem(
        "s", "sqlite:///x.db", {**settings, "metrics_version": 1})
    assert version_problem("s", "sqlite:///x.db", {**settings, "metrics_version": METRICS_VERSION + 1}).endswith(
        "made by a later version of mtvae-bench, whose validation metrics are not comparable with this version's")
    # A setting left out (None) reads as unset, not as JSON's null.
    assert differing_settings_message("s", "sqlite:///x.db", {"limit": 200}, {"limit": None}) == (
        "study 's' in sqlite:///x.db was made with other settings (limit 200 there, unset now)")


def test_a_shared_study_refuses_folds_another_files_run_trained_before_their_model_changed(tmp_path):
    """A study's settings are its first run's. VQ-VAE 1 folds that another file's run added under
    version 3 are of the old model though the settings list no VQ-VAE 1; the folds of untouched
    models, and those this version trained, carry on."""
    smoke = get_suite("smoke").override(folds=2)
    vae_only = dataclasses.replace(smoke, configurations=smoke.configurations[:3])
    store = StoreConfig(studies_dir=tmp_path, results_dir=tmp_path)
    study, _ = open_suite_study(vae_only, store)
    study.set_user_attr("settings", {**study.user_attrs["settings"], "metrics_version": 3})

    def done(key: str, **user_attrs) -> None:
        study.add_trial(optuna.trial.create_trial(value=0.1, system_attrs={"fixed_params": {UNIT_PARAM: key}},
                                                  user_attrs=user_attrs))

    done("vae/1/baseline#0")
    done("vq-vae/1/baseline#1", metrics_version=METRICS_VERSION)
    open_suite_study(smoke, store)  # every fold done is of this version's models
    done("vq-vae/1/multidecoder/uniform#0", metrics_version=3)
    open_suite_study(vae_only, store)  # lists none of them
    with pytest.raises(StoreError) as refused:
        open_suite_study(smoke, store)
    old = ("trained by an earlier version of mtvae-bench, in which VQ-VAE 1 applied its activation twice after its "
           "last encoder and first decoder layers, so its folds trained another model than this version's; a run of "
           "a file without those configurations goes on with the rest; for a separate run, give it a --name of its own")
    where = f"study 'suite-smoke' in sqlite:///{tmp_path}/smoke.db"
    assert str(refused.value).startswith(f"{where} holds 1 fold of vq-vae/1/multidecoder/uniform {old}")
    assert f"`{optuna_command()} delete-study --storage" in str(refused.value)
    # Failed for good (diverged) is settled as well, never trained again; a unit that recorded no version is the study's
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, system_attrs={"fixed_params": {
        UNIT_PARAM: "vq-vae/1/baseline#0"}}, user_attrs={"error": "diverged"}))
    with pytest.raises(StoreError) as refused:
        open_suite_study(smoke, store)
    assert str(refused.value).startswith(f"{where} holds 2 folds of vq-vae/1/baseline, vq-vae/1/multidecoder/uniform "
                                         + old.replace("mtvae-bench,", "mtvae-bench (or by one that recorded no "
                                                       "version with its units),"))


def test_a_study_touched_by_two_changes_names_both():
    stored = {"suite": "s", "configurations": ["vq-vae/1/baseline/w=1,1,2"], "metrics_version": 2}
    problem = version_problem("s", "sqlite:///x.db", stored)
    assert upgraded(stored)["metrics_version"] == 2
    assert "in which a VQ-VAE's β weighed the whole VQ loss" in problem
    assert ", and in which VQ-VAE 1 applied its activation twice" in problem


def saved_weights(study: optuna.Study, trial_id: int, artifacts: Path) -> str:
    """``save_checkpoint`` of weights w = [0, 1, 2] with trial ``trial_id`` of ``study``, as a run saves a unit's."""
    import torch

    from benchmark.export import save_checkpoint

    info = {"family": "vae", "config": 1, "method": "baseline", "image_shape": [1, 32, 32]}
    return save_checkpoint(study, trial_id, artifacts, {"w": torch.arange(3.0)}, info)


def test_a_checkpoint_upload_leaves_another_suites_upload_of_the_same_trial_id_alone(tmp_path):
    # Suites sharing an --artifacts-dir number their trials alike: a temporary name by trial id let one
    # run overwrite, and then delete, the other's weights on their way to its study.
    import torch

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'a.db'}")
    trial = study.ask()
    others = tmp_path / "artifacts" / f".upload-{trial._trial_id}.pt"
    others.parent.mkdir()
    others.write_bytes(b"the other suite's weights")
    artifact = saved_weights(study, trial._trial_id, others.parent)
    assert others.read_bytes() == b"the other suite's weights"
    saved = torch.load(others.parent / artifact, weights_only=True)
    assert torch.equal(saved["state_dict"]["w"], torch.arange(3.0)) and saved["info"]["family"] == "vae"
    assert sorted(p.name for p in others.parent.iterdir()) == sorted([others.name, artifact])


def test_ctrl_c_while_a_checkpoint_is_recorded_with_its_trial_leaves_no_file(tmp_path, monkeypatch):
    # Optuna writes the file, then records it with the trial: stopped between the two, the file was left.
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'a.db'}")
    trial = study.ask()

    def ctrl_c(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(study._storage, "set_trial_system_attr", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        saved_weights(study, trial._trial_id, tmp_path / "artifacts")
    assert list((tmp_path / "artifacts").iterdir()) == []


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_sweep_removes_the_files_of_trials_that_ended_without_them_and_keeps_the_rest(tmp_path):
    # What workers killed outright leave: weights uploaded for trials failed later, the copies a retry
    # inherits (Optuna copies the artifacts with the trial), and uploads cut short.
    from benchmark.export import sweep_checkpoints

    study = optuna.create_study(study_name="suite-s", storage=f"sqlite:///{tmp_path / 'a.db'}")
    artifacts = tmp_path / "artifacts"

    def uploaded(trial_id: int) -> str:
        return saved_weights(study, trial_id, artifacts)

    storage = study._storage
    dead, running = study.ask(), study.ask()
    dead.set_user_attr("artifact", uploaded(dead._trial_id))
    running_weights = uploaded(running._trial_id)
    storage.set_trial_state_values(dead._trial_id, TrialState.FAIL)  # as fail_stale_trials does, and retries it
    optuna.storages.RetryHeartbeatStaleTrialCallback()(study, storage.get_trial(dead._trial_id))
    retried = study.get_trials(states=(TrialState.WAITING,))[0]
    storage.set_trial_state_values(retried._trial_id, TrialState.RUNNING)
    kept = uploaded(retried._trial_id)
    storage.set_trial_user_attr(retried._trial_id, "artifact", kept)
    storage.set_trial_state_values(retried._trial_id, TrialState.COMPLETE, [1.0])
    hour_ago = time.time() - 3600
    # name: (last written, whether it stays)
    leftovers = {f".upload-suite-s-{dead._trial_id}-{'a' * 32}.pt": (hour_ago, False),  # its upload, cut short
                 f".upload-suite-s-{dead._trial_id}-{'b' * 8}-{'c' * 4}-{'d' * 4}-{'e' * 4}-{'f' * 12}.partial":
                     (hour_ago, False),
                 f".upload-suite-s-{running._trial_id}-{'a' * 32}.pt": (hour_ago, True),  # in progress elsewhere
                 f".upload-suite-s-2-{dead._trial_id}-{'a' * 32}.pt": (hour_ago, True),  # another suite's
                 # a study of the same name in another storage, its trials numbered alike, writing now
                 f".upload-suite-s-{dead._trial_id}-{'d' * 32}.pt": (time.time(), True),
                 "notes.txt": (hour_ago, True)}
    for name, (written, _) in leftovers.items():
        (artifacts / name).write_text("")
        os.utime(artifacts / name, (written, written))
    sweep_checkpoints(study, artifacts)
    assert sorted(path.name for path in artifacts.iterdir()) == sorted(
        [running_weights, kept, *(name for name, (_, stays) in leftovers.items() if stays)])


def test_an_upload_whose_files_a_sweep_removed_is_a_trial_taken_over(tmp_path, monkeypatch):
    # A worker asleep past the grace period wakes mid-upload: a run that finished the suite meanwhile swept
    # its files, as its trial had been failed; "No such file" ended the run where "taken over" goes on.
    study = optuna.create_study(study_name="suite-s", storage=f"sqlite:///{tmp_path / 'a.db'}")
    replace, asleep = os.replace, []

    def swept_while_asleep(source, target):  # once recorded with its trial, before the file takes its name
        if asleep:
            study._storage.set_trial_state_values(asleep[0], TrialState.FAIL)  # taken for dead
        Path(source).unlink()
        replace(source, target)

    monkeypatch.setattr("benchmark.export.os.replace", swept_while_asleep)
    sleeper, other = study.ask(), study.ask()
    asleep.append(sleeper._trial_id)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        saved_weights(study, sleeper._trial_id, tmp_path / "artifacts")
    asleep.clear()
    with pytest.raises(FileNotFoundError):  # its trial still its own: something else removed them
        saved_weights(study, other._trial_id, tmp_path / "artifacts")
    assert list((tmp_path / "artifacts").iterdir()) == []


def test_a_worker_killed_before_its_upload_is_recorded_leaves_a_file_of_its_trials(tmp_path, monkeypatch):
    # Optuna writes the file, then records it with the trial: a file under the artifact's own name, which
    # no trial named, could not be told from a unit's weights.
    from benchmark.export import UPLOAD_FILE

    study = optuna.create_study(study_name="suite-s", storage=f"sqlite:///{tmp_path / 'a.db'}")
    trial = study.ask()

    def killed(*args):
        raise SystemExit("killed")  # where a SIGKILL would end the process: no handler runs after it

    monkeypatch.setattr(study._storage, "set_trial_system_attr", killed)
    monkeypatch.setattr("pathlib.Path.unlink", lambda *args, **kwargs: None)  # nor any clean-up
    with pytest.raises(SystemExit):
        saved_weights(study, trial._trial_id, tmp_path / "artifacts")
    monkeypatch.undo()
    left = [UPLOAD_FILE.fullmatch(path.name) for path in (tmp_path / "artifacts").iterdir()]
    assert len(left) == 2 and all(match and (match["study"], int(match["trial"])) == ("suite-s", trial._trial_id)
                                  for match in left)


def test_the_start_over_hint_names_optuna_as_the_shell_finds_it(tmp_path, monkeypatch):
    # run by the virtual environment's python without activating it, the hint's `optuna` was "command not found"
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "optuna").write_text("#!/bin/sh\n")
    (venv / "optuna").chmod(0o755)
    monkeypatch.setattr("sys.executable", str(venv / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    assert optuna_command() == str(venv / "optuna")
    monkeypatch.setenv("PATH", str(venv))  # activated
    assert optuna_command() == "optuna"
