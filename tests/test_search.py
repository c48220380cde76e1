"""Optuna search: k-fold trials, pruning, resume, studies list/show/plot, best configurations, bad input, help."""

import json
import math
import os
import re
import shutil
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import optuna
import sqlalchemy
import pytest
import torch
from conftest import (check_given, cli, given_to_workers, miss_the_first_look, one_line_error, one_torch_thread,
                      stopped, text_table, worker_pids)
from optuna.trial import TrialState

import benchmark.train
from benchmark.balancing import BalanceConfig
from benchmark.config import Configuration, MethodConfig
from benchmark.data import load_dataset
from benchmark.processes import signal_name
from benchmark.search import SearchOptions, counts_toward_budget
from benchmark.search_space import ParamRange, SearchSettings, configuration_for, parse_range
from benchmark.storage import (StoreConfig, StoreError, open_storage, safe_url, status_counts, trial_status,
                               versioned)
from benchmark.params_from import (best_configurations, load_search_study, study_settings, training_differences,
                                   tuning_notes)
from benchmark.studies import StudyPlace, describe_study, file_name, load_existing_study, suite_note
from benchmark.study_plots import plot_study
from benchmark.progress import duration
from benchmark.suites import SearchBest, fold_seconds, get_suite, search_key
from benchmark.train import DivergedError, FoldResult, resolve_device

NAME = "search-vae-1-single-gaussian"
SMALL = ["--limit", "200", "--epochs", "1", "--folds", "5", "--device", "cpu", "--quiet"]
PNG = b"\x89PNG\r\n\x1a\n"


def search_cli(cwd: Path, *args: str) -> int:
    return cli(cwd, "search", "--family", "vae", "--config", "1", "--method", "single", "--sampling", "gaussian",
               *SMALL, *args)


def db(cwd: Path, name: str = NAME) -> str:
    """The URL of the study's own SQLite file, where `search` puts it by default."""
    return f"sqlite:///{cwd / 'studies' / file_name(name)}.db"


def load(cwd: Path, name: str = NAME, url: str | None = None) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url or db(cwd, name))


@pytest.fixture
def one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """Three real trials (too few for the median pruner), then the worst one again with a pruner that may act."""
    cwd = tmp_path_factory.mktemp("search")
    with one_torch_thread():
        assert search_cli(cwd, "--trials", "3") == 0
        study = load(cwd)
        # The trial with the worst first fold, run again with the same parameters, gives the same first
        # fold (training is seeded by the configuration): above the median of three, so it is pruned.
        worst = max(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.intermediate_values[0])
        study.enqueue_trial(worst.params)
        assert search_cli(cwd, "--trials", "4", "--pruner-startup", "1") == 0
    return cwd, worst


def test_each_trial_is_a_five_fold_cross_validation(searched):
    cwd, _ = searched
    study = load(cwd)
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3
    for t in complete:
        folds = t.user_attrs["fold_recon"]
        assert len(folds) == 5 and len(t.user_attrs["fold_latent"]) == 5
        assert t.value == pytest.approx(sum(folds) / 5)
        assert all(0 < v < 1 for v in folds)
        assert sorted(t.intermediate_values) == [0, 1, 2, 3, 4]  # a running mean reported after every fold
        assert t.intermediate_values[4] == pytest.approx(t.value)
        assert t.user_attrs["config_id"].startswith("vae/1/single/gaussian/a=")
    assert study.user_attrs["settings"]["epochs"] == 1 and study.user_attrs["settings"]["limit"] == 200
    assert set(study.user_attrs["settings"]["ranges"]) == {"exponent", "beta"}
    assert study.user_attrs["settings"]["precision"] == ("bf16" if torch.cuda.is_available() else "fp32")  # auto


def test_worst_trial_is_pruned_after_its_first_fold(searched):
    cwd, worst = searched
    pruned = load(cwd).trials[3]
    assert pruned.state == TrialState.PRUNED
    assert pruned.params == worst.params
    assert len(pruned.user_attrs["fold_recon"]) == 1  # stopped after one fold
    assert pruned.intermediate_values[0] == pytest.approx(worst.intermediate_values[0])


def test_rerunning_does_not_overshoot(searched, capsys):
    cwd, _ = searched
    assert search_cli(cwd, "--trials", "4") == 0
    assert len(load(cwd).trials) == 4
    captured = capsys.readouterr()
    assert "4 trials (complete 3, pruned 1, failed 0, interrupted 0); this run took" in captured.out
    # --quiet drops the progress bar only: what the search is and why it does nothing stay
    assert captured.err.splitlines() == [
        f"search {NAME}: 5-fold CV per trial, 1 epoch on mnist5k (limit 200); ranges exponent=1.0:100.0:log, "
        f"beta=0.1:10.0:log; 4/4 trials; storage sqlite:///studies/{NAME}.db",
        f"note: study {NAME} already has 4 trials that count toward --trials 4; raise --trials to run more"]
    assert search_cli(cwd, "--trials", "2") == 0  # fewer than it has: not "4/2 trials"
    assert (f"beta=0.1:10.0:log; 4 trials (--trials 2); storage sqlite:///studies/{NAME}.db"
            ) in capsys.readouterr().err.splitlines()[0]


def test_a_rerun_beats_at_the_study_s_interval(searched, capsys):
    cwd, _ = searched
    assert search_cli(cwd, "--trials", "4", "--heartbeat", "3") == 0
    assert "beat every 10 s, so this run does too, not every 3 s: workers beating at other intervals " \
           "would take each other's live trials" in capsys.readouterr().err
    assert load(cwd).user_attrs["heartbeat"] == 10


def test_a_search_on_a_busy_machine_says_its_threads_wait_for_cores(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("benchmark.processes.os.getloadavg", lambda: (9.0, 9.0, 9.0))
    monkeypatch.setattr("benchmark.processes.os.cpu_count", lambda: 2)
    monkeypatch.setattr("torch.get_num_threads", lambda: 2)
    assert search_cli(tmp_path, "--trials", "1") == 0
    assert "note: the machine is busy (load average 9.0 on 2 cores): each training step is split over 2 threads" \
           in capsys.readouterr().err
    assert search_cli(tmp_path, "--trials", "1") == 0
    assert "busy" not in capsys.readouterr().err  # it trains nothing


def test_settings_must_match_to_resume(searched, capsys):
    cwd, _ = searched
    assert search_cli(cwd, "--trials", "5", "--epochs", "2") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "other settings (epochs 1 there, 2 now)" in err
    command = SearchSettings.from_dict(load(cwd).user_attrs["settings"]).command(NAME)
    assert f"; continue it with `{command}` (and this command's other options), or use another --study-name" in err
    assert "--epochs 1" in command  # the study's
    assert f"optuna delete-study --storage sqlite:///studies/{NAME}.db --study-name {NAME}" in err
    assert len(load(cwd).trials) == 4


def test_a_search_refused_for_its_settings_gives_the_command_that_continues_it_where_it_is(tmp_path, capsys):
    # the command left out --studies-dir: copied, it began a new search under studies/
    assert search_cli(tmp_path, "--trials", "1", "--limit", "100", "--studies-dir", "out/st") == 0
    capsys.readouterr()
    assert search_cli(tmp_path, "--trials", "1", "--limit", "100", "--studies-dir", "out/st", "--epochs", "2") == 2
    command = re.search(r"continue it with `python -m benchmark (.*?)`", one_line_error(capsys)).group(1)
    assert command.endswith(" --studies-dir out/st")
    assert cli(tmp_path, *shlex.split(command), "--trials", "1", "--quiet") == 0
    assert "already has 1 trial" in capsys.readouterr().err and not (tmp_path / "studies").exists()


def test_studies_list_and_show_print_the_study(searched, capsys):
    cwd, _ = searched
    study = load(cwd)
    assert cli(cwd, "studies", "list") == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith(NAME))
    assert line.split() == [NAME, "minimize", "3", "1", "0", "0", "0", "0", "0", f"{study.best_value:.6g}"]

    assert cli(cwd, "studies", "show", NAME) == 0
    out = capsys.readouterr().out
    best = study.best_trial
    assert f"best trial: #{best.number}  recon={best.value:.6g}" in out
    assert f"best parameters: exponent={best.params['exponent']:.6g}, beta={best.params['beta']:.6g}" in out
    settings = next(line for line in out.splitlines() if line.startswith("settings: ")).split(", ")
    assert "objectives=recon" in settings and "[" not in ", ".join(settings)  # as --objectives takes it, not ['recon']
    assert "epochs=1" in settings and not any(s.startswith("metrics_version=") for s in settings)
    ranked = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.value)
    header, alignment, top = text_table(out.split("top 3 trials:\n")[1].split("\n\n")[0].splitlines())
    assert header == ["trial", "recon", "parameters"] and alignment == ["right", "right", "left"]
    assert top == [[str(t.number), f"{t.value:.6g}",
                    f"exponent={t.params['exponent']:.6g}, beta={t.params['beta']:.6g}"] for t in ranked]
    header, alignment, folds = text_table(out.split(f"per-fold values of trial #{best.number}:\n")[1].splitlines())
    assert header == ["fold", "recon", "latent", "recon_cond", "best epoch"] and alignment == ["right"] * 5
    assert [row[0] for row in folds] == ["0", "1", "2", "3", "4"]
    assert [row[1] for row in folds] == [f"{v:.6g}" for v in best.user_attrs["fold_recon"]]
    assert [row[2] for row in folds] == [f"{v:.6g}" for v in best.user_attrs["fold_latent"]]
    assert [row[4] for row in folds] == [str(e) for e in best.user_attrs["fold_best_epoch"]]


def test_studies_show_names_the_metrics_version_only_of_a_study_this_version_refuses():
    study, settings = optuna.create_study(study_name="s"), SearchSettings("vae", 1, "baseline").to_dict()
    study.set_user_attr("settings", versioned(settings))
    assert "metrics_version" not in describe_study(study)  # the tool's, not a setting the user gave
    study.set_user_attr("settings", {**settings, "metrics_version": 1})
    assert ", metrics_version=1" in describe_study(study).splitlines()[1]


def test_studies_list_orders_the_studies_of_every_file_by_name(tmp_path, capsys):
    (tmp_path / "studies").mkdir()
    for file, name in (("a", "zeta"), ("b", "alpha"), ("a", "mu")):
        study = optuna.create_study(study_name=name, storage=f"sqlite:///{tmp_path / 'studies' / file}.db")
    for unit in range(2):  # units not trained yet: a partial suite must not look finished
        study.enqueue_trial({"unit": unit}, skip_if_exists=False)
    assert cli(tmp_path, "studies", "list") == 0
    _, _, listed = text_table(capsys.readouterr().out.splitlines())
    rows = {row[0]: row for row in listed}
    assert [name for name in rows if name in ("alpha", "mu", "zeta")] == ["alpha", "mu", "zeta"]
    assert rows["mu"][2:8] == ["0", "0", "0", "0", "0", "2"] and rows["zeta"][7] == "0"
    (tmp_path / "studies" / "0-junk.db").write_text("hello")  # not a database: the others are still listed
    assert cli(tmp_path, "studies", "list") == 0
    captured = capsys.readouterr()
    assert [row[0] for row in text_table(captured.out.splitlines())[2]] == ["alpha", "mu", "zeta"]
    assert captured.err.startswith(f"warning: skipped: cannot open storage 'sqlite:///{Path('studies') / '0-junk.db'}'")


def test_the_progress_bar_has_an_eta_before_the_first_trial_ends(tmp_path, capsys, terminal):
    assert cli(tmp_path, "search", "--family", "vae", "--config", "1", "--method", "baseline", "--trials", "1",
               "--limit", "120", "--epochs", "2", "--folds", "2", "--device", "cpu") == 0
    lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
    first_trial = [line for line in lines if "0/1 [" in line and "epoch " in line]
    assert len(first_trial) == 4  # two folds of two epochs
    assert all(re.search(r"ETA \d\d:\d\d \| trial #0", line) for line in first_trial), first_trial
    assert not any("<" in line for line in lines)  # not tqdm's own ETA beside it, '?' until a trial ends
    finished = [line for line in lines if "1/1 [" in line]
    assert finished and re.search(r"1/1 \[\d\d:\d\d, best [\d.]+\]$", finished[-1])  # no time left once done


def test_a_search_on_a_cpu_estimates_its_trials_time_before_it_starts(tmp_path, fake_training, capsys):
    assert search_cli(tmp_path, "--trials", "2", "--range", "beta=0.1:5") == 0
    # of the 20 training images loaded (the fake dataset's), not of the 200 that --limit asks for
    one = 5 * fold_seconds("vae", 1, "single", "mnist5k", 20, 5, 1)
    assert f"2 trials (est. 2-core CPU: {duration(one)} a trial, {duration(2 * one)} for the 2 to go)" in \
        capsys.readouterr().err
    assert search_cli(tmp_path, "--trials", "2", "--range", "beta=0.1:5") == 0
    assert "est." not in capsys.readouterr().err  # nothing to go


def test_the_progress_bar_counts_finished_trials_not_another_workers_running_one(tmp_path, fake_training, capsys,
                                                                                 terminal):
    (tmp_path / "studies").mkdir()
    study = optuna.create_study(study_name=NAME, storage=db(tmp_path))
    study.tell(study.ask(), 0.5)
    study.ask()  # another worker's trial, in training (it stops beating, so this worker takes it over in the end)
    assert cli(tmp_path, "search", "--family", "vae", "--config", "1", "--method", "single", "--sampling", "gaussian",
               "--trials", "3", "--heartbeat", "1", "--range", "beta=0.1:5", "--device", "cpu") == 0
    counts = re.findall(r"\| (\d)/3 \[", capsys.readouterr().err)
    assert list(dict.fromkeys(counts)) == ["0", "1", "2", "3"], counts  # 0: the bar before this worker's first look


def test_studies_plot_writes_png_and_pdf_files(searched, capsys):
    cwd, _ = searched
    assert cli(cwd, "studies", "plot", NAME) == 0
    out, err = capsys.readouterr()
    printed = out.split()
    assert "note: parameter importances from 3 complete trials are rough" in err
    names = {Path(p).stem for p in printed}
    assert {"history", "intermediate", "slice", "importances", "contour"} <= names
    assert sorted(Path(p).name for p in printed) == sorted(f"{n}.{fmt}" for n in names for fmt in ("png", "pdf"))
    for path in printed:
        assert Path(path).parent == Path("reports/studies") / NAME
        magic = PNG if path.endswith(".png") else b"%PDF-"
        assert (cwd / path).read_bytes()[:len(magic)] == magic


def test_the_history_plot_says_it_leaves_out_the_pruned_trials(searched, tmp_path, monkeypatch):
    import benchmark.figures

    titles = {}

    def saved(figure, stem):
        titles[stem.name] = figure.axes[0].get_title()
        return [stem]

    monkeypatch.setattr(benchmark.figures, "save_figure", saved)
    cwd, _ = searched
    plot_study(load_search_study(StudyPlace(db(cwd)), NAME)[0], tmp_path)
    assert titles["history"].endswith("\n(1 pruned trial not shown: no final value)")  # Optuna draws complete ones
    assert "pruned" not in titles["slice"]
    study = optuna.create_study()
    for value in (0.5, 0.4):
        study.enqueue_trial({"beta": 1.0 + value})
        study.optimize(lambda trial: value + 0 * trial.suggest_float("beta", 0.1, 10), n_trials=1)
    for error in (None, "fold 0: loss diverged at epoch 1"):  # pruned, and failed as a search fails a diverged trial
        trial = study.ask()
        trial.suggest_float("beta", 0.1, 10)
        if error:
            trial.set_user_attr("error", error)
        study.tell(trial, state=TrialState.PRUNED)
    plot_study(study, tmp_path)
    assert titles["history"].endswith("\n(1 pruned and 1 failed trials not shown: no final value)")


def test_training_differences_skip_a_precision_recorded_as_auto_on_either_side():
    assert training_differences({"precision": "fp32", "epochs": 3}, {"precision": "bf16", "epochs": 4}) == [
        "precision", "epochs"]
    assert training_differences({"precision": "auto", "epochs": 3}, {"precision": "bf16", "epochs": 3}) == []
    assert training_differences({"precision": "fp32", "epochs": 3}, {"precision": "auto", "epochs": 3}) == []


def test_optuna_plots_leave_matplotlib_s_style_as_it_was_for_the_figures_drawn_after_them(searched, tmp_path):
    import matplotlib

    cwd, _ = searched
    with matplotlib.rc_context():
        matplotlib.rcdefaults()  # as it was before any test drew Optuna's plots
        before = dict(matplotlib.rcParams)
        written, _ = plot_study(load_search_study(StudyPlace(db(cwd)), NAME)[0], tmp_path)
        assert written  # Optuna's plots use its ggplot style: grey panels, white grid lines
        assert {k: v for k, v in matplotlib.rcParams.items() if v != before[k]} == {}


def test_best_configurations_rebuild_the_best_trial(searched, monkeypatch):
    cwd, _ = searched
    found = best_configurations([NAME], StudyPlace(db(cwd)))
    configuration = found[("vae", 1, "single", "gaussian", False)].configuration
    best = load(cwd).best_trial
    assert found[("vae", 1, "single", "gaussian", False)] == SearchBest(configuration, NAME, {"exponent", "beta"})
    assert configuration.id == best.user_attrs["config_id"]
    assert configuration.method.exponent == best.params["exponent"]
    assert configuration.balance.beta == best.params["beta"]
    with pytest.raises(ValueError, match="available: " + NAME):
        best_configurations(["nope"], StudyPlace(db(cwd)))
    monkeypatch.chdir(cwd)  # by default, each study is looked up by its name under studies/
    assert best_configurations([NAME]) == found
    with pytest.raises(ValueError, match=f"no study 'nope' in studies/; available: {NAME}$"):
        best_configurations(["nope"])
    with pytest.raises(ValueError, match=f"no study '{NAME}x' \\(did you mean '{NAME}'\\?\\) in studies/; available"):
        load_existing_study(StudyPlace(), NAME + "x")
    smoke = get_suite("smoke")
    tuned = smoke.with_best_params(found)
    assert tuned.name == "smoke-tuned" and dict(tuned.params_from) == {configuration.id: NAME}
    assert len(tuned.configurations) == len(smoke.configurations)
    assert tuned.replacement_notes(smoke, found) == [
        f"note: vae/1/single/gaussian/a=40 → {configuration.id} (the best of study {NAME!r})"]
    full = get_suite("full")  # its two exponents become one tuned configuration: said, not silent
    merged = full.with_best_params(found)
    assert len(merged.configurations) == len(full.configurations) - 1
    assert merged.replacement_notes(full, found) == [
        f"note: vae/1/single/gaussian/a=40, vae/1/single/gaussian/a=60 → {configuration.id} (the best of study "
        f"{NAME!r}); these 2 are one configuration now, so the suite has 1 configuration fewer"]
    baselines = replace(smoke, configurations=tuple(c for c in smoke.configurations if c.method.method == "baseline"))
    with pytest.raises(ValueError, match=re.escape(f"has no configuration that study '{NAME}' tunes (its best is "
                                                   f"{configuration.id})")):
        baselines.with_best_params(found)  # named, and it would change nothing: a mistake


def test_params_from_keeps_a_configuration_whose_settings_its_search_held_otherwise():
    settings = SearchSettings("vae", 1, "multidecoder", "uniform")
    best = configuration_for(settings, {"w1": 2.0, "w2": 0.5, "beta": 0.3})
    found = {search_key(best): SearchBest(best, "s", frozenset(settings.ranges))}
    plain = Configuration("vae", 1, MethodConfig("multidecoder", "uniform"))
    counted = Configuration("vae", 1, MethodConfig("multidecoder", "uniform", count=200))
    # the count the search trained with, 32×32 images' exact grid's: given, it is the search's setting all the same
    grid = Configuration("vae", 1, MethodConfig("multidecoder", "uniform", count=64))
    normalized = Configuration("vae", 1, MethodConfig("multidecoder", "uniform", balance=BalanceConfig(
        softadapt=True, variant="normalized", beta=0.5)))
    suite = replace(get_suite("smoke"), name="mine", configurations=(plain, counted, normalized, grid))
    tuned = suite.with_best_params(found)
    assert tuned.configurations == (best, counted, normalized) and tuned.params_from == ((best.id, "s"),)
    assert tuned.replacement_notes(suite, found) == [
        "note: vae/1/multidecoder/uniform, vae/1/multidecoder/uniform/k=64 → vae/1/multidecoder/uniform/w=2,0.5,0.3 "
        "(the best of study 's'); these 2 are one configuration now, so the suite has 1 configuration fewer",
        "note: study 's' did not tune vae/1/multidecoder/uniform/k=200: it has count 200 (the search's: 64), "
        "so it trains with its own parameters"]
    with pytest.raises(ValueError, match=re.escape(
            "suite 'mine' has no configuration that study 's' tunes (its best is vae/1/multidecoder/uniform/"
            "w=2,0.5,0.3): vae/1/multidecoder/uniform/k=200 has count 200 (the search's: 64)")):
        replace(suite, configurations=(counted,)).with_best_params(found)
    softadapt = SearchSettings("vae", 1, "multidecoder", "uniform", softadapt=True)  # tunes its β only
    best = configuration_for(softadapt, {"softadapt_beta": 1e-3})
    found = {search_key(best): SearchBest(best, "t", frozenset(softadapt.ranges))}
    with pytest.raises(ValueError, match=re.escape(
            "(b=0.001)): vae/1/multidecoder/uniform/softadapt-normalized/beta=0.5 has beta 0.5 (the search's: 1), "
            "variant normalized (the search's: loss-weighted)")):
        replace(suite, configurations=(normalized,)).with_best_params(found)


def test_a_study_searched_with_other_training_gets_a_note_naming_the_search_that_matches(monkeypatch):
    searched = SearchSettings("vae", 1, "single", "gaussian", limit=200, epochs=1, lr=1e-2)
    monkeypatch.setattr("benchmark.params_from.load_existing_study", lambda place, name: None)
    monkeypatch.setattr("benchmark.params_from.study_settings", lambda study: searched)
    suite = get_suite("full")  # all images, 100 epochs, batch 128, lr 1e-3
    assert tuning_notes(["s"], StudyPlace("sqlite:///x.db"), suite) == [
        "note: study 's' searched with other training than this run's (limit 200 → all, epochs 1 → 100, "
        "lr 0.01 → 0.001); its best parameters were chosen for that training. A search with --epochs 100 "
        "--lr 0.001 and no --limit, under a new --study-name, tunes them for this one"]
    monkeypatch.setattr("benchmark.params_from.study_settings", lambda study: replace(searched, epochs=100, lr=1e-3))
    assert "(limit 200 → all); its best parameters were chosen for that training. A search with no --limit, " \
        "under a new --study-name," in tuning_notes(["s"], StudyPlace("sqlite:///x.db"), suite)[0]
    searched = replace(searched, limit=None, epochs=100, lr=1e-3)  # every search before --weight-decay trained at 0.01
    monkeypatch.setattr("benchmark.params_from.study_settings", lambda study: searched)
    assert tuning_notes(["s"], StudyPlace("sqlite:///x.db"), suite) == []
    no_decay = replace(suite, train=replace(suite.train, weight_decay=0.0))
    assert replace(searched, weight_decay=0.0).train_config().weight_decay == 0.0  # what its trials train with
    assert "(weight_decay 0.01 → 0.0); its best parameters were chosen for that training. A search with " \
        "--weight-decay 0.0, under" in tuning_notes(["s"], StudyPlace("sqlite:///x.db"), no_decay)[0]
    monkeypatch.setattr("benchmark.params_from.study_settings",
                        lambda study: replace(searched, limit=None, epochs=100, lr=1.2345678e-4))
    assert "A search with --lr 0.001, under" in tuning_notes(["s"], StudyPlace("sqlite:///x.db"), suite)[0]
    assert "(lr 0.00012345678 → 0.001)" in tuning_notes(["s"], StudyPlace("sqlite:///x.db"), suite)[0]
    monkeypatch.setattr("benchmark.params_from.study_settings", lambda study: replace(searched, limit=None, epochs=100, lr=1e-3))
    assert tuning_notes(["s"], StudyPlace("sqlite:///x.db"), suite) == []
    # fewer folds train on fewer images; another precision is other training too ("auto": made before it was stored)
    here = suite.train.effective_precision(resolve_device("auto"))
    there = {"fp32": "bf16", "bf16": "fp32"}[here]
    monkeypatch.setattr("benchmark.params_from.study_settings",
                        lambda study: replace(searched, limit=None, epochs=100, lr=1e-3, folds=2, precision=there))
    assert (f"(folds 2 → 5, precision {there} → {here}); its best parameters were chosen for that training. A search "
            f"with --folds 5 --precision {here}, under") in tuning_notes(["s"], StudyPlace("sqlite:///x.db"), suite)[0]


def test_a_killed_worker_s_trial_is_retried_on_rerun(tmp_path, one_thread):
    command = [sys.executable, "-m", "benchmark", "search", "--family", "vae", "--config", "1", "--method", "single",
               "--sampling", "gaussian", *SMALL, "--trials", "2", "--heartbeat", "1"]
    worker = subprocess.Popen(command, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed, deadline = None, time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.2)
        try:
            running = load(tmp_path).get_trials(states=(TrialState.RUNNING,))
        except Exception:  # the study does not exist yet
            continue
        # Kill mid-trial: after its first fold (it beats), with two folds to go (it cannot finish meanwhile).
        if running and 1 <= len(running[0].user_attrs.get("fold_recon", [])) <= 3:
            worker.send_signal(signal.SIGKILL)  # no chance to clean up
            worker.wait()
            killed = load(tmp_path).get_trials(states=(TrialState.RUNNING,))[0]
    assert killed is not None, f"the worker never started a trial: {worker.communicate()[1]}"
    assert search_cli(tmp_path, "--trials", "2", "--heartbeat", "1") == 0
    trials = load(tmp_path).get_trials()
    dead = trials[killed.number]
    assert dead.state == TrialState.FAIL and "error" not in dead.user_attrs
    retried = [t for t in trials if t.number > killed.number and t.params == killed.params]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2  # the killed trial did not use the budget
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_a_search_worker_killed_outright_has_its_trial_retried_at_once_not_after_the_heartbeat_wait(tmp_path):
    command = [sys.executable, "-m", "benchmark", "search", "--family", "vae", "--config", "1", "--method", "single",
               "--sampling", "gaussian", *SMALL, "--trials", "3", "--heartbeat", "60", "--workers", "2"]
    parent = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed, deadline = None, time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.2)
        try:
            running = [t for t in load(tmp_path).get_trials(states=(TrialState.RUNNING,))
                       if "config_id" in t.user_attrs]  # its parameters drawn: a retry has them
        except Exception:  # the study does not exist yet
            continue
        if running and len(running[0].user_attrs.get("fold_recon", [])) <= 3:  # mid-trial: two folds to go
            os.kill(int(running[0].user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
            killed = running[0]
    try:
        assert killed is not None, parent.communicate()
        _, err = parent.communicate(timeout=150)  # without the release, the heartbeat wait alone is 300 s
    finally:
        parent.kill()
    assert parent.returncode == 0 and "1 of 2 worker processes were killed (SIGKILL)" in err
    trials = load(tmp_path).get_trials()
    assert trials[killed.number].state == TrialState.FAIL
    # Its parameters as stored, not as polled: Optuna reads a trial's parameters and its attributes in two
    # SELECTs, so the poll may have seen config_id and not yet the last parameter.
    retried = [t for t in trials if t.number > killed.number and t.params == trials[killed.number].params]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3


@pytest.mark.parametrize("stop", ["term", "kill"])
def test_search_workers_stop_with_their_parent_and_their_trials_are_not_left_running(tmp_path, stop):
    command = [sys.executable, "-m", "benchmark", "search", "--family", "vae", "--config", "1", "--method", "single",
               "--sampling", "gaussian", *SMALL, "--trials", "1000", "--heartbeat", "1", "--workers", "2"]
    parent = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)  # signals reach the parent alone, as `kill` or Slurm send them
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.2)
        try:
            running = load(tmp_path).get_trials(states=(TrialState.RUNNING,))
        except Exception:  # the study does not exist yet
            continue
        if any(t.user_attrs.get("fold_recon") for t in running):  # a worker is mid-trial
            break
    workers = worker_pids(parent.pid)
    assert len(workers) == 2, parent.communicate()[1]
    if stop == "term":  # `timeout`, Slurm, systemd: as Ctrl-C
        parent.send_signal(signal.SIGTERM)
        out, err = parent.communicate(timeout=60)
        assert parent.returncode == 130 and "Traceback" not in err, err
        assert f"study {NAME}: " in out and "interrupted 0)" not in out  # where it stands, with the trials cut short
    else:  # the OOM killer: the workers must not train on unseen
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    assert stopped(workers), "orphaned workers kept training"
    assert not load(tmp_path).get_trials(states=(TrialState.RUNNING,))  # interrupted, so a rerun redoes them


# --- fast tests with a stand-in for training: the search logic, not the models ---

@pytest.fixture
def fake_training(monkeypatch):
    """train_fold → deterministic metrics from the parameters, beta > 5 diverges; no real images."""
    def train_fold(configuration, train_images, val_images, train_config, seed, on_epoch=None):
        beta, exponent = configuration.balance.beta, configuration.method.exponent or 1.0
        if beta > 5:
            raise DivergedError("loss diverged at epoch 1 (train nan, validation nan)")
        metrics = {"recon": 0.01 * math.log(exponent) + 1e-3 * (seed % 7), "latent": 1.0 / beta,
                   "recon_cond": 0.02, "total": 1.0}
        if on_epoch:
            on_epoch(1, {"epoch": 1, **metrics})
        return FoldResult(1, metrics, [], {}, len(train_images), len(val_images))

    monkeypatch.setattr("benchmark.train.train_fold", train_fold)
    monkeypatch.setattr("benchmark.data.load_dataset",
                        lambda *args, **kwargs: SimpleNamespace(train=torch.zeros(20, 1, 32, 32)))


def test_a_search_on_data_with_another_number_of_images_is_refused(tmp_path, fake_training, monkeypatch, capsys):
    assert search_cli(tmp_path, "--trials", "1", "--range", "beta=0.1:2") == 0
    monkeypatch.setattr("benchmark.data.load_dataset",
                        lambda *args, **kwargs: SimpleNamespace(train=torch.zeros(24, 1, 32, 32)))
    capsys.readouterr()
    assert search_cli(tmp_path, "--trials", "2", "--range", "beta=0.1:2") == 2
    assert one_line_error(capsys) == (
        f"error: study '{NAME}' split 20 training images into its folds and these data have 24: folds made now would "
        "not be those its results were trained on, and no comparison could pair them; put the earlier images back, "
        "or search these under another --study-name")
    assert len(load(tmp_path).trials) == 1


def test_a_search_on_as_many_images_with_other_pixels_is_refused(tmp_path, fake_training, monkeypatch, capsys):
    assert search_cli(tmp_path, "--trials", "1", "--range", "beta=0.1:2") == 0
    monkeypatch.setattr("benchmark.data.load_dataset",
                        lambda *args, **kwargs: SimpleNamespace(train=torch.full((20, 1, 32, 32), 0.5)))
    capsys.readouterr()
    assert search_cli(tmp_path, "--trials", "2", "--range", "beta=0.1:2") == 2
    assert one_line_error(capsys).startswith(
        f"error: study '{NAME}' split other training images into its folds than these: as many (20), with other pixels")
    assert len(load(tmp_path).trials) == 1
    # a study made before studies kept a digest takes these, and says that they could not be compared
    storage = optuna.storages.RDBStorage(db(tmp_path))
    with storage.engine.begin() as connection:
        connection.execute(sqlalchemy.text("DELETE FROM study_user_attributes WHERE key = 'images_digest'"))
    assert search_cli(tmp_path, "--trials", "2", "--range", "beta=0.1:2") == 0
    assert f"note: study '{NAME}' was made before studies kept a digest of their images" in capsys.readouterr().err


def test_a_new_study_beside_one_of_its_name_in_the_default_place_gets_a_note(tmp_path, fake_training, capsys):
    # A mistyped --storage started the search over in a new file, silently.
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        assert search_cli(tmp_path, "--trials", "2", "--range", "beta=0.1:2") == 0
        level = optuna.logging.get_verbosity()
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    assert level == optuna.logging.INFO  # Optuna is quiet during the search only: a script's level is its own
    assert "A new study created" not in capsys.readouterr().err
    typo = f"sqlite:///{tmp_path / 'studies' / 'search-vae-1-single-gausian.db'}"
    capsys.readouterr()
    assert search_cli(tmp_path, "--trials", "1", "--range", "beta=0.1:2", "--storage", typo) == 0
    assert (f"note: this makes a new study {NAME!r} in {typo}, while studies/{NAME}.db holds a study "
            "of that name (2 trials): if --storage is mistyped, stop with Ctrl-C and give that one"
            ) in capsys.readouterr().err
    assert cli(tmp_path, "studies", "list") == 0  # and the list says which file each one is in
    listed = [row[0] for row in text_table(capsys.readouterr().out.splitlines())[2]]
    assert sorted(listed) == sorted([f"{NAME} ({NAME}.db)", f"{NAME} (search-vae-1-single-gausian.db)"])
    for storage in (typo, db(tmp_path)):  # going on with it, or naming the default file, is no news
        assert search_cli(tmp_path, "--trials", "2", "--range", "beta=0.1:2", "--storage", storage) == 0
        assert "note: this makes a new study" not in capsys.readouterr().err


def test_a_search_named_as_a_suites_study_is_refused_as_such(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'smoke.db'}"
    optuna.create_study(study_name="suite-smoke", storage=url).set_user_attr("settings", {"suite": "smoke", "folds": 2})
    assert search_cli(tmp_path, "--study-name", "suite-smoke", "--storage", url) == 2
    assert one_line_error(capsys) == (f"error: study 'suite-smoke' in {url} holds the units of suite 'smoke', not a "
                                      "search: give the search another --study-name")
    assert load(tmp_path, "suite-smoke", url).user_attrs["settings"] == {"suite": "smoke", "folds": 2}


def bare_objective(settings: SearchSettings, trials: int) -> benchmark.search._Objective:
    """The search's objective on 20 blank images, without a progress bar: for ``study.optimize``."""
    return benchmark.search._Objective(settings, SearchOptions(trials=trials, device="cpu"), torch.zeros(20, 1, 32, 32),
                                       SimpleNamespace(set_postfix_str=lambda *a, **k: None),
                                       benchmark.search.Interrupts(), "run")


def test_a_trial_is_not_pruned_after_its_last_fold(fake_training):
    class PruneAtTheEnd(optuna.pruners.BasePruner):  # as the median pruner may, once every fold is in
        def prune(self, study, trial):
            return trial.last_step == 1

    # fake_training diverges above beta 5
    settings = SearchSettings("vae", 1, "single", "gaussian", folds=2, epochs=1, ranges={"beta": ParamRange(0.1, 2.0)})
    objective = bare_objective(settings, trials=1)
    study = optuna.create_study(pruner=PruneAtTheEnd())
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE and len(trial.user_attrs["fold_recon"]) == 2
    assert trial.value == pytest.approx(sum(trial.user_attrs["fold_recon"]) / 2)


def test_the_sampler_learns_to_avoid_parameters_that_diverged(fake_training):
    # Diverged trials were FAIL, which TPE ignores: it proposed the diverging β > 5 in 29 of 40 trials here (7 now).
    settings = SearchSettings("vae", 1, "single", "gaussian", folds=2, epochs=1, ranges={"beta": ParamRange(0.5, 10.0)})
    objective = bare_objective(settings, trials=40)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(constant_liar=True, seed=0))
    study.optimize(objective, n_trials=40)
    diverged = [t for t in study.trials if trial_status(t) == "failed"]
    assert all(t.params["beta"] > 5 and t.user_attrs["error"].startswith("fold 0: loss diverged") for t in diverged)
    assert len(diverged) < 15
    # Infeasible to TPE: ranked below every other trial, though a fold diverging after others reported their means
    # would rank it among the best pruned ones.
    assert [sum(t.constraints.values()) > 0 for t in study.trials] == [t in diverged for t in study.trials]


@pytest.mark.parametrize("room", [True, False])
def test_a_searchs_workers_are_given_its_images_in_shared_memory_or_load_them_where_there_is_no_room(
        tmp_path, capsys, monkeypatch, room):
    given = given_to_workers(monkeypatch, "benchmark.search.run_workers", room)
    search_cli(tmp_path, "--trials", "2", "--workers", "2")
    check_given(given, load_dataset("mnist5k", limit=200).train, room, capsys.readouterr().err)


@pytest.mark.parametrize("trials, left_running, code", [(2, False, 0), (3, False, 1), (2, True, 1)])
def test_a_killed_worker_is_named_by_its_signal_and_fails_the_search_only_with_trials_to_go(
        tmp_path, fake_training, monkeypatch, capsys, trials, left_running, code):
    def workers(target, args, ended):  # worker 0 trains its trials here; worker 1 was killed by SIGKILL
        settings, url, name, options, *_ = args[0]
        done = 1 if left_running else 2
        benchmark.search._work(settings, url, name, replace(options, trials=done), 0, "run", torch.zeros(20, 1, 32, 32))
        if left_running:  # the killed worker's trial: RUNNING until a live worker or the next run fails it
            optuna.load_study(study_name=name, storage=url).ask()
        return [SimpleNamespace(exitcode=0), SimpleNamespace(exitcode=-9)]

    monkeypatch.setattr("benchmark.search.run_workers", workers)
    assert search_cli(tmp_path, "--trials", str(trials), "--workers", "2") == code
    err = capsys.readouterr().err
    assert "1 of 2 worker processes were killed (SIGKILL)" in err and "messages above" not in err
    assert ("; 1 trial to go: run the same command again" in err) == (code == 1)
    assert signal_name(9) == "SIGKILL" and signal_name(40) == "signal 40"  # real-time signals have no name


def test_ctrl_c_prints_where_the_search_stands(tmp_path, fake_training, monkeypatch, capsys):
    train_fold, calls = benchmark.train.train_fold, []

    def interrupted_in_the_third_trial(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2 * 5 + 3:  # Ctrl-C in fold 3 of trial 2
            raise KeyboardInterrupt
        return train_fold(*args, **kwargs)

    monkeypatch.setattr("benchmark.train.train_fold", interrupted_in_the_third_trial)
    assert search_cli(tmp_path, "--pruner", "none", "--range", "beta=0.1:2", "--trials", "10") == 130
    trials = load(tmp_path).trials
    assert [trial_status(t) for t in trials] == ["complete", "complete", "interrupted"]
    best = min(trials[:2], key=lambda t: t.value)
    captured = capsys.readouterr()
    assert "3 trials (complete 2, pruned 0, failed 0, interrupted 1)" in captured.out
    assert f"best trial #{best.number}: recon={best.value:.6g}; " in captured.out
    assert f"inspect: python -m benchmark studies show {NAME}" in captured.out
    assert "run the same command again to continue" in captured.err


def test_ctrl_c_once_the_last_trial_is_done_says_nothing_is_left(tmp_path, fake_training, monkeypatch, capsys):
    best_text = benchmark.search.best_text

    def ctrl_c_after_the_trial(study):  # as the last trial is stored
        if study.trials:
            os.kill(os.getpid(), signal.SIGINT)
        return best_text(study)

    monkeypatch.setattr("benchmark.search.best_text", ctrl_c_after_the_trial)
    assert search_cli(tmp_path, "--range", "beta=0.1:2", "--trials", "1") == 130
    assert [trial_status(t) for t in load(tmp_path).trials] == ["complete"]
    assert capsys.readouterr().err.endswith("interrupted: every trial of --trials was done, nothing is left to do\n")


def test_diverged_trial_fails_with_its_reason_and_the_search_goes_on(tmp_path, fake_training, capsys):
    # A diverged trial was FAIL, which Optuna's samplers ignore: TPE kept proposing the region that diverged.
    # Pruned (with its reason) it counts against its parameters.
    study_name = "diverging run"  # a space: the printed `inspect:` line must still paste into a shell
    (tmp_path / "studies").mkdir()
    # in the file that every search shared before each had its own: found there by name, by default
    shared = f"sqlite:///{tmp_path / 'studies' / 'search.db'}"
    study = optuna.create_study(study_name=study_name, storage=shared)
    study.tell(study.ask(), state=TrialState.FAIL)  # as Ctrl-C leaves a trial: FAIL without a reason
    study.enqueue_trial({"exponent": 10.0, "beta": 8.0})  # diverges
    args = ["--study-name", study_name, "--pruner", "none", "--range", "beta=0.1:10"]
    assert search_cli(tmp_path, *args, "--trials", "4") == 0
    trials = load(tmp_path, study_name, shared).trials
    assert len(trials) == 5  # the interrupted trial does not count, the diverged one does
    assert trials[0].state == TrialState.FAIL and "error" not in trials[0].user_attrs
    assert trials[1].state == TrialState.PRUNED and trials[1].user_attrs["error"].startswith("fold 0: loss diverged")
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials[2:])  # --pruner none
    complete, diverged = (sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED))
    out = capsys.readouterr().out
    # The interrupted trial is not reported as failed: failed counts the diverged ones only, pruned none of them.
    assert f"5 trials (complete {complete}, pruned 0, failed {diverged}, interrupted 1)" in out
    assert "trial #1 failed: fold 0: loss diverged" in out and "trial #0 failed" not in out
    assert "inspect: python -m benchmark studies show 'diverging run'" in out
    assert search_cli(tmp_path, *args, "--trials", "4") == 0  # nothing more to run
    assert len(load(tmp_path, study_name, shared).trials) == 5
    assert not (tmp_path / "studies" / "diverging_run.db").exists()
    assert "already has 4 trials that count toward --trials 4; raise --trials to run more" in capsys.readouterr().err
    capsys.readouterr()
    assert cli(tmp_path, "studies", "show", study_name) == 0
    assert "trial #1 failed: fold 0: loss diverged" in capsys.readouterr().out


def test_two_objectives_give_a_pareto_front_without_pruning(tmp_path, fake_training, capsys):
    assert search_cli(tmp_path, "--objectives", "recon,latent", "--trials", "4") == 0
    name = NAME + "-recon-latent"
    assert "cannot prune multi-objective" in capsys.readouterr().err
    study = load(tmp_path, name)
    assert len(study.directions) == 2 and len(study.trials) == 4
    assert all(not t.intermediate_values for t in study.trials)
    configuration = best_configurations([name], StudyPlace(db(tmp_path, name)))[("vae", 1, "single", "gaussian",
                                                                                  False)].configuration
    lowest = min(study.best_trials, key=lambda t: t.values[0])
    assert configuration.method.exponent == lowest.params["exponent"]
    assert cli(tmp_path, "studies", "plot", name) == 0
    assert "pareto" in {Path(p).stem for p in capsys.readouterr().out.split()}
    assert (tmp_path / "reports" / "studies" / name / "pareto.png").read_bytes()[:8] == PNG


def test_the_best_of_a_pareto_front_is_its_lowest_recon_whatever_the_order_of_the_objectives(
        tmp_path, fake_training, capsys):
    assert search_cli(tmp_path, "--objectives", "latent,recon", "--trials", "1") == 0
    name = NAME + "-latent-recon"
    study = load(tmp_path, name)
    # fake_training: recon grows with the exponent, latent falls with beta; a front of two or more
    for exponent, beta in ((1.5, 0.2), (50.0, 4.5)):
        study.enqueue_trial({"exponent": exponent, "beta": beta})
    assert search_cli(tmp_path, "--objectives", "latent,recon", "--trials", "3") == 0
    assert len(study.best_trials) > 1
    lowest = min(study.best_trials, key=lambda t: (t.values[1], t.number))
    configuration = best_configurations([name], StudyPlace(db(tmp_path, name)))[("vae", 1, "single", "gaussian",
                                                                                  False)].configuration
    assert (configuration.method.exponent, configuration.balance.beta) == (
        lowest.params["exponent"], lowest.params["beta"])
    capsys.readouterr()
    assert cli(tmp_path, "studies", "show", name) == 0
    assert f"best trial (Pareto front, lowest recon): #{lowest.number} " in capsys.readouterr().out


def test_multidecoder_with_softadapt_searches_its_beta(tmp_path, fake_training):
    # --model: the option's other name, as earlier versions spelled it
    assert cli(tmp_path, "search", "--model", "vq-vae", "--config", "1", "--method", "multidecoder", "--sampling",
               "uniform", "--softadapt", "--trials", "2", *SMALL) == 0
    study = load(tmp_path, "search-vq-vae-1-multidecoder-uniform-softadapt")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert all(set(t.params) == {"softadapt_beta"} and 1e-5 <= t.params["softadapt_beta"] <= 1e-1
               for t in study.trials)


def test_a_softadapt_search_tunes_beta_inside_the_latent_term_when_given_its_range(tmp_path, fake_training, capsys):
    assert cli(tmp_path, "search", "--family", "vq-vae", "--config", "1", "--method", "baseline", "--softadapt",
               "--range", "beta=0.1:1", "--trials", "2", *SMALL) == 0
    study = load(tmp_path, "search-vq-vae-1-baseline-softadapt")
    assert all(set(t.params) == {"softadapt_beta", "beta"} and 0.1 <= t.params["beta"] <= 1 for t in study.trials)
    settings = SearchSettings.from_dict(study.user_attrs["settings"])
    trained = configuration_for(settings, study.trials[0].params)
    assert trained.balance.softadapt and trained.balance.beta == study.trials[0].params["beta"]
    assert trained.id.endswith(f"/beta={study.trials[0].params['beta']:g}") and "/softadapt(b=" in trained.id
    # without the range it is not searched, and the error for a parameter it has not says how
    with pytest.raises(ValueError, match=r"it tunes: softadapt_beta \(and beta, given its range\)$"):
        SearchSettings("vq-vae", 1, "baseline", softadapt=True, ranges={"w1": ParamRange(1, 2)})


@pytest.mark.parametrize("family, refused", [("vq-vae", True), ("vae", False)])
def test_params_from_refuses_a_vq_search_made_when_beta_weighed_the_whole_vq_loss(tmp_path, family, refused):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    study = optuna.create_study(study_name="old", storage=url)
    study.set_user_attr("settings", {**SearchSettings(family, 1, "baseline").to_dict(), "metrics_version": 2})
    study.add_trial(optuna.trial.create_trial(params={"beta": 2.0}, value=0.1,
                                              distributions={"beta": optuna.distributions.FloatDistribution(0.01, 10)}))
    if refused:
        with pytest.raises(ValueError, match="β weighed the whole VQ loss.*search again, under a new --study-name"):
            best_configurations(["old"], StudyPlace(url))
    else:
        found = best_configurations(["old"], StudyPlace(url))
        assert found[(family, 1, "baseline", None, False)].configuration.balance.beta == 2.0


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_failed(tmp_path, fake_training):
    (tmp_path / "studies").mkdir()
    study = optuna.create_study(study_name=NAME, storage=db(tmp_path))
    study.ask()  # RUNNING, no heartbeat, no worker: as a worker killed right after creating it leaves it
    # beta below 5: the fake training diverges above it, and this test is about the orphan only
    assert search_cli(tmp_path, "--trials", "2", "--heartbeat", "1", "--range", "beta=0.1:5") == 0  # no endless wait
    trials = load(tmp_path).trials
    assert trials[0].state == TrialState.FAIL
    assert [t.state for t in trials[1:]] == [TrialState.COMPLETE] * 2, [(t.state, t.user_attrs, t.system_attrs) for t in trials]


def test_a_rerun_with_the_budget_used_still_takes_over_a_dead_workers_trial(tmp_path, fake_training, capsys):
    args = ("--heartbeat", "1", "--range", "beta=0.1:5", "--pruner", "none")
    assert search_cli(tmp_path, "--trials", "2", *args) == 0
    load(tmp_path).ask()  # RUNNING and counted: a worker killed in the last trial of the budget
    capsys.readouterr()
    assert search_cli(tmp_path, "--trials", "2", *args) == 0  # waits it out instead of stopping at once
    assert [t.state for t in load(tmp_path).trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL]
    assert "already has" not in capsys.readouterr().err


def test_a_worker_that_loses_the_race_for_the_last_trial_stops_its_trial_untrained(tmp_path, fake_training,
                                                                                    monkeypatch, capsys):
    trained = []
    monkeypatch.setattr("benchmark.train.train_fold",
                        lambda *args, train_fold=benchmark.train.train_fold: trained.append(1) or train_fold(*args))
    real_settled = benchmark.search.settled

    def another_worker_takes_the_slot(trials):  # called after this worker counted the budget, before it starts a trial
        if not trained and len(load(tmp_path).trials) == 0:
            other = load(tmp_path)
            other.tell(other.ask(), 0.5)  # the other worker's trial #0, numbered first
        return real_settled(trials)

    monkeypatch.setattr("benchmark.search.settled", another_worker_takes_the_slot)
    assert search_cli(tmp_path, "--trials", "1", "--range", "beta=0.1:5") == 0
    trials = load(tmp_path).trials
    assert [trial_status(t) for t in trials] == ["complete", "surplus"]
    assert trials[1].params == {} and "fold_recon" not in trials[1].user_attrs and not trained
    assert [counts_toward_budget(t) for t in trials] == [True, False]
    assert status_counts(trials)["surplus"] == 1 and "surplus 1" in capsys.readouterr().out
    assert "surplus" not in status_counts(trials[:1])  # a column of zeros only where there are such trials
    retry = load(tmp_path).ask()  # a retry of a surplus trial that a killed worker left RUNNING copies its attributes
    retry.set_user_attr("surplus", 1)
    load(tmp_path).tell(retry, state=TrialState.FAIL)
    assert trial_status(load(tmp_path).trials[2]) == "interrupted"  # it is no surplus itself


def interrupted_and_diverged_study(cwd: Path) -> optuna.Study:
    """Trials 0 complete, 1 pruned, 2 diverged (FAIL with a reason), 3 interrupted (FAIL without), 4 running."""
    (cwd / "studies").mkdir()
    study = optuna.create_study(study_name=NAME, storage=db(cwd))
    study.tell(study.ask(), 0.5)
    study.tell(study.ask(), state=TrialState.PRUNED)
    diverged = study.ask()
    diverged.set_user_attr("error", "fold 0: loss diverged at epoch 1")
    study.tell(diverged, state=TrialState.FAIL)
    study.tell(study.ask(), state=TrialState.FAIL)  # as Ctrl-C or a killed worker leaves a trial
    study.ask()
    return study


def test_interrupted_trials_are_not_counted_as_failed(tmp_path):
    trials = interrupted_and_diverged_study(tmp_path).get_trials()
    assert [trial_status(t) for t in trials] == ["complete", "pruned", "failed", "interrupted", "running"]
    assert status_counts(trials) == {"complete": 1, "pruned": 1, "failed": 1, "interrupted": 1, "running": 1,
                                     "waiting": 0}
    assert [counts_toward_budget(t) for t in trials] == [True, True, True, False, True]  # the same rule


def test_studies_plot_of_a_study_without_a_complete_trial_is_an_error(tmp_path, capsys):
    (tmp_path / "studies").mkdir()
    study = optuna.create_study(study_name="c4", storage=f"sqlite:///{tmp_path / 'studies' / 'c4'}.db")
    study.enqueue_trial({"beta": 1.0})
    assert cli(tmp_path, "studies", "plot", "c4") == 2
    assert one_line_error(capsys) == "error: study 'c4' has no complete trial: nothing to plot"


def test_studies_plot_of_a_study_with_only_pruned_trials_draws_their_intermediate_values(tmp_path, capsys):
    # It refused ("no complete trial: nothing to plot"), though the pruned trials' folds show where the search went.
    (tmp_path / "studies").mkdir()
    study = optuna.create_study(study_name="c4", storage=f"sqlite:///{tmp_path / 'studies' / 'c4'}.db")
    for beta, first in ((1.0, 0.4), (3.0, 0.6)):
        trial = study.ask()
        trial.suggest_float("beta", 0.1, 10, log=True)
        trial.report(first, 0)
        trial.report(first + 0.1, 1)
        study.tell(trial, state=TrialState.PRUNED)
    assert cli(tmp_path, "studies", "plot", "c4") == 0
    out, err = capsys.readouterr()
    assert out.split() == [str(Path("reports") / "studies" / "c4" / f"intermediate.{kind}") for kind in ("png", "pdf")]
    assert err == "note: study 'c4' has no complete trial: only its trials' intermediate values are plotted\n"
    assert (tmp_path / "reports" / "studies" / "c4" / "intermediate.png").stat().st_size > 0


def test_studies_list_and_show_tell_interrupted_from_failed_trials(tmp_path, capsys):
    interrupted_and_diverged_study(tmp_path)
    assert cli(tmp_path, "studies", "list") == 0
    header, alignment, rows = text_table(capsys.readouterr().out.splitlines())
    assert header == ["study", "direction(s)", "complete", "pruned", "failed", "interrupted", "running", "waiting",
                      "surplus", "best"]
    assert alignment == ["left", "left", *["right"] * 7, "left"]  # counts as numbers, the best values as text
    assert rows == [[NAME, "minimize", "1", "1", "1", "1", "1", "0", "0", "0.5"]]
    assert cli(tmp_path, "studies", "show", NAME) == 0
    out = capsys.readouterr().out
    assert ("5 trials (complete 1, pruned 1, failed 1, interrupted 1, running 1, waiting 0)"
            in out.splitlines()[0])
    assert "trial #2 failed: fold 0: loss diverged" in out and "trial #3" not in out


def search_help(monkeypatch, capsys, tmp_path) -> str:
    """``search --help`` as one line of words (the wrapping depends on the terminal width)."""
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        cli(tmp_path, "search", "--help")
    return " ".join(capsys.readouterr().out.split())


def test_help_gives_the_default_study_name_with_other_objectives(tmp_path, monkeypatch, capsys):
    text = search_help(monkeypatch, capsys, tmp_path)
    name = SearchSettings("vae", 2, "multidecoder", "exact", objectives=("recon", "latent")).default_study_name()
    assert name == "search-vae-2-multidecoder-exact-recon-latent"
    assert f"-<objective> for each objective when --objectives is other than recon, e.g. {name}" in text
    assert SearchSettings("vae", 1, "baseline", objectives=("latent",)).default_study_name() == "search-vae-1-baseline-latent"


# --- bad input: one line, exit code 2, nothing written ---

@pytest.mark.parametrize("bad, message", [
    (["--range", "exponent=60:10"], "empty range for exponent"),
    (["--range", "beta=-1:10"], "must be > 0"),
    (["--range", "beta=1:inf"], "--range for beta must have finite bounds, got 1:inf"),  # not "empty range"
    (["--range", "exponent=10-60"], "bad range"),
    (["--range", "w1=1:2"], "it tunes: exponent, beta"),
    (["--objectives", "recon,nope"], "bad objectives"),
    (["--dataset", "nope"], "unknown dataset"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_search_input_is_one_line_and_writes_nothing(tmp_path, capsys, bad, message):
    assert search_cli(tmp_path, "--trials", "1", *bad) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "studies").exists()


def test_search_names_every_problem_of_its_options_at_once_each_by_its_flag(tmp_path, capsys):
    assert cli(tmp_path, "search", "--family", "vae", "--config", "1", "--method", "multidecoder", "--sampling",
               "uniform", "--range", "w2=1-2", "--range", "w1=2:1", "--objectives", "foo", "--dataset", "imagenet",
               "--limit", "0", "--folds", "1", "--seed", "-1", "--epochs", "0", "--batch-size", "0", "--trials", "0",
               "--device", "gpu", "--heartbeat", "0", "--pruner", "none", "--pruner-startup", "3",
               "--storage", "sqlite:///x.db", "--studies-dir", "s") == 2
    assert one_line_error(capsys).split(" | ") == [
        "error: 14 problems: --range: bad range 'w2=1-2'; write NAME=LOW:HIGH or NAME=LOW:HIGH:log|linear, e.g. "
        "exponent=10:60",
        "--range: empty range for w1: 2:1 (low must be < high)",
        "--objectives: bad objectives 'foo'; give one or more of recon, latent, recon_cond, comma-separated and each "
        "once, e.g. recon,latent",
        "--dataset: unknown dataset 'imagenet'; choose one of: mnist5k, digits, mnist, cifar10, celeba, folder:PATH",
        "--limit must be an integer >= 1 (training images), got 0",
        "--folds must be >= 2 for cross-validation, got 1",
        "--seed must be an integer in [0, 2^32), got -1",
        "--epochs must be >= 1, got 0",
        "--batch-size: batch size must be >= 1, got 0",
        "--trials must be >= 1, got 0",
        "--device: unknown device 'gpu'; choose one of: auto, cpu, cuda, cuda:N",
        "--heartbeat must be >= 1 second, got 0",  # named by its flag already
        "--pruner-startup sets when the median pruner starts; this search has --pruner none",
        "--studies-dir is where SQLite studies go without --storage: give one or the other"]
    assert not list(tmp_path.iterdir())


def test_a_folder_that_search_or_studies_plot_cannot_write_in_is_one_line_naming_its_option(tmp_path, capsys,
                                                                                           monkeypatch):
    # They once said "error: Not a directory: /dev/null/s", naming neither the option nor what to mend.
    monkeypatch.setattr("benchmark.search.run_search", lambda *args: pytest.fail("searched before --studies-dir"))
    refused = "--studies-dir /dev/null/s: the folder cannot be made (/dev/null is not a folder)"
    assert search_cli(tmp_path, "--studies-dir", "/dev/null/s") == 2
    assert one_line_error(capsys) == f"error: {refused}"
    assert search_cli(tmp_path, "--studies-dir", "/dev/null/s", "--epochs", "0") == 2  # with the others, at once
    assert one_line_error(capsys) == f"error: 2 problems: --epochs must be >= 1, got 0 | {refused}"
    assert not list(tmp_path.iterdir())
    (tmp_path / "studies").mkdir()
    study = optuna.create_study(study_name="c4", storage=f"sqlite:///{tmp_path / 'studies' / 'c4'}.db")
    trial = study.ask()
    trial.suggest_float("beta", 0.1, 10, log=True)
    study.tell(trial, 0.5)
    assert cli(tmp_path, "studies", "plot", "c4", "--out", "/dev/null/plots") == 2
    assert one_line_error(capsys) == ("error: --out /dev/null/plots: the folder /dev/null/plots/c4 cannot be made "
                                      "(/dev/null is not a folder)")


def test_a_new_study_name_that_cannot_name_files_or_an_unmakeable_storage_file_is_refused(tmp_path, capsys,
                                                                                          monkeypatch):
    # "x y" was stored as x_y.db while `run --name` refused spaces; a SQLite file in a folder that cannot be made
    # failed with "No such file or directory: /dev/null/s", naming no option.
    searched = []
    monkeypatch.setattr("benchmark.search.run_search", lambda *args: searched.append(args[2]) or pytest.fail("ran"))
    assert search_cli(tmp_path, "--study-name", "x y", "--storage", "sqlite:////dev/null/s/x.db") == 2
    assert one_line_error(capsys) == (
        "error: 2 problems: --storage sqlite:////dev/null/s/x.db: the folder /dev/null/s cannot be made (/dev/null "
        "is not a folder) | --study-name 'x y' must start with a letter or digit and hold only letters, digits, "
        "'.', '_' or '-' (it names files)")
    assert not list(tmp_path.iterdir()) and not searched
    (tmp_path / "studies").mkdir()
    optuna.create_study(study_name="x y", storage=db(tmp_path, "x y"))  # made before names were checked: goes on
    with pytest.raises(pytest.fail.Exception, match="ran"):
        search_cli(tmp_path, "--study-name", "x y")
    assert searched == ["x y"]


@pytest.mark.parametrize("kwargs, message", [
    # the searched parameters depend on the method, and the sampler at the ranges' middles on all that is tuned
    (dict(method="singel", sampling="unifrom", ranges={"w1": ParamRange(2, 1)}, epochs=0),
     "3 problems: --method: unknown method 'singel' (did you mean 'single'?); choose one of: baseline, multidecoder, "
     "single | --sampling: unknown sampling 'unifrom' (did you mean 'uniform'?); choose one of: exact, uniform, "
     "gaussian | --epochs must be >= 1, got 0"),
    # ... and on nothing else: a sampling the method cannot take is named beside a bad --folds
    (dict(method="single", sampling="exact", folds=1),
     "2 problems: the single decoder draws a power-law count of pixels: use uniform or gaussian sampling, not the "
     "exact grid (its count is fixed) | --folds must be >= 2 for cross-validation, got 1"),
    # a config is checked of a known family; a problem of two values is said as it is
    (dict(family="gan", config=7, method="single", limit=3),
     "3 problems: --family: unknown model family 'gan'; choose one of: vae, vq-vae | method 'single' needs a sampling: "
     "uniform or gaussian (give it with --sampling) | 3 training images (limit) cannot be split into 5 folds"),
    (dict(config=7, method="baseline", objectives=("recon_cond",), seed=2**32, lr=0.0),
     "4 problems: --config: unknown vae config 7; choose one of: 1, 2 | the baseline has no conditioned decoder: "
     "recon_cond cannot be an objective | --seed must be an integer in [0, 2^32), got 4294967296 | --lr: learning "
     "rate must be a finite number > 0, got 0.0"),
    # the objectives' own problem hides whether recon_cond fits the method
    (dict(method="baseline", objectives=("recon_cond", "nope"), precision="half"),
     "2 problems: --objectives: bad objectives 'recon_cond,nope'; give one or more of recon, latent, recon_cond, "
     "comma-separated and each once, e.g. recon,latent | --precision: unknown precision 'half'; choose one of: auto, "
     "fp32, bf16"),
])
def test_search_settings_name_every_problem_that_none_other_hides(kwargs, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        SearchSettings(**{"family": "vae", "config": 1, **kwargs})


def test_search_options_name_every_problem_by_its_flag():
    with pytest.raises(ValueError, match=re.escape(
            "4 problems: --timeout must be > 0 seconds, got 0 | --pruner: unknown pruner 'medain' (did you mean "
            "'median'?); choose one of: median, none | --workers must be >= 1, got 0 | --device: unknown device "
            "'cuda1' (did you mean 'cuda'?); choose one of: auto, cpu, cuda, cuda:N") + "$"):
        SearchOptions(timeout=0, pruner="medain", workers=0, device="cuda1")


@pytest.mark.parametrize("args", [("search", "--trials", "abc"), ("nope",), ("run",)])
def test_argument_errors_are_one_line_without_the_usage_block(tmp_path, capsys, args):
    with pytest.raises(SystemExit) as stop:
        cli(tmp_path, *args)
    assert stop.value.code == 2
    assert one_line_error(capsys).endswith("--help`)")


@pytest.mark.parametrize("args, helped", [(("report", "--suite", "smoke", "smoke"), "report"),
                                          (("studies", "list", "--nope"), "studies list"),
                                          (("run", "--suite", "smoke", "--nope", "1"), "run")])
def test_an_unrecognized_argument_points_to_its_commands_help(tmp_path, capsys, args, helped):
    with pytest.raises(SystemExit) as stop:
        cli(tmp_path, *args)
    assert stop.value.code == 2
    assert one_line_error(capsys).endswith(f"(see `python -m benchmark {helped} --help`)")


@pytest.mark.parametrize("args, unknown", [(("studies", "list", "--stor", "x.db"), "--stor x.db"),
                                          (("--hel",), "--hel")])
def test_options_are_spelled_out_not_abbreviated(tmp_path, capsys, args, unknown):
    with pytest.raises(SystemExit) as stop:
        cli(tmp_path, *args)
    assert stop.value.code == 2
    assert f"unrecognized arguments: {unknown}" in one_line_error(capsys)


def test_version(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        cli(tmp_path, "--version")
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("mtvae-bench ")


def test_unknown_names_are_one_line(tmp_path, capsys):
    assert cli(tmp_path, "search", "--family", "gan", "--config", "1", "--method", "single") == 2
    assert "vae, vq-vae" in one_line_error(capsys)


@pytest.mark.parametrize("method, offered, refused", [
    ("single", ["uniform", "gaussian"], "exact"),
    ("multidecoder", ["exact", "uniform", "gaussian"], None),
])
def test_a_missing_sampling_names_only_those_the_method_accepts(tmp_path, monkeypatch, capsys, method, offered,
                                                               refused):
    assert cli(tmp_path, "search", "--family", "vae", "--config", "1", "--method", method) == 2
    line = one_line_error(capsys)
    assert "--sampling" in line and all(s in line for s in offered) and (refused is None or refused not in line)
    for sampling in offered:  # each one offered is accepted
        SearchSettings("vae", 1, method, sampling)
    assert f"{method}: {' | '.join(offered)}" in search_help(monkeypatch, capsys, tmp_path)
    assert not (tmp_path / "studies").exists()


def test_the_single_decoder_refuses_the_exact_grid(tmp_path, capsys):
    assert cli(tmp_path, "search", "--family", "vae", "--config", "1", "--method", "single", "--sampling",
               "exact") == 2
    assert "use uniform or gaussian sampling" in one_line_error(capsys)


def test_a_study_place_names_the_options_that_find_a_study_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "my studies"
    place = StudyPlace(folder=mine)
    assert str(place) == f"{mine}/" and str(StudyPlace("sqlite:///x.db")) == "sqlite:///x.db"
    assert place.url("s") == f"sqlite:///{mine}/s.db"
    assert place.flags("s", place.url("s")) == f" --studies-dir '{mine}'"
    assert place.flags("s", "sqlite:///studies/s.db") == ""  # the default needs no option
    assert place.flags("s", "postgresql://me:secret@host/db") == " --storage 'postgresql://me:***@host/db'"
    # the default's file named by its absolute path, as an export records it; a study's own file elsewhere
    assert place.flags("s", f"sqlite:///{tmp_path}/studies/s.db") == ""
    assert StudyPlace().flags("s", "sqlite:///out/st/s.db") == " --studies-dir out/st"
    assert StudyPlace().flags("s", "sqlite:///out/st/other.db") == " --storage sqlite:///out/st/other.db"


def test_a_suite_studys_note_gives_the_report_of_the_results_folder_its_run_was_given():
    study = optuna.create_study()
    study.set_user_attr("settings", {"suite": "mine"})
    assert suite_note(study).endswith("; its table: python -m benchmark report --suite mine")  # no command recorded
    for command, where in (("python -m benchmark run --suite sub/my.toml --results-dir 'out/my res' --quiet",
                            " --results-dir 'out/my res'"),
                           ("python -m benchmark run --suite=sub/my.toml --results-dir=out", " --results-dir out"),
                           ("python -m benchmark run --suite sub/my.toml --results-dir results", ""),
                           ("python -m benchmark run --suite sub/my.toml --name v", "")):
        study.set_user_attr("command", command)
        assert suite_note(study).endswith(f"; its table: python -m benchmark report --suite mine{where}")


def test_a_search_whose_folds_are_smaller_than_a_batch_notes_it(tmp_path, capsys):
    assert search_cli(tmp_path, "--trials", "1", "--limit", "100") == 0  # 100 images to split: 80 a fold
    assert ("note: batch size 128 is more than a fold's 80 training images: each epoch is one step on all 80\n"
            in capsys.readouterr().err)
    assert search_cli(tmp_path, "--trials", "1", "--limit", "100") == 0  # nothing left to train: no word of it
    assert "batch size" not in capsys.readouterr().err


def test_a_search_whose_softadapt_never_reweights_notes_it_while_trials_remain(tmp_path, capsys):
    # one step a fold: SoftAdapt's first update needs two steps' losses
    assert search_cli(tmp_path, "--trials", "1", "--limit", "100", "--softadapt") == 0
    assert ("note: SoftAdapt re-weights every 100 steps, but a fold trains only 1 step here (1 epoch of 80 images "
            "at batch 128): its configurations keep uniform weights (SoftAdapt's own β, softadapt_beta, has no "
            "effect on the results)\n") in capsys.readouterr().err
    assert search_cli(tmp_path, "--trials", "1", "--limit", "100", "--softadapt") == 0
    assert "SoftAdapt re-weights" not in capsys.readouterr().err


def test_studies_kept_in_another_folder_are_pointed_to_in_one_note(tmp_path, capsys):
    # a mistyped --studies-dir printed a note for every study of the right folder before its error
    alt, results = tmp_path / "alt", tmp_path / "results"
    alt.mkdir()
    results.mkdir()
    for name, suffix in (("a", "db"), ("b", "db"), ("c", "db"), ("d", "sqlite")):
        url = f"sqlite:///{alt / name}.{suffix}"
        optuna.create_study(study_name=f"suite-{name}", storage=url)
        (results / f"{name}_meta.json").write_text(json.dumps({"study": f"suite-{name}", "storage": url}))
    assert cli(tmp_path, "studies", "list", "--studies-dir", "nodir") == 2
    other = f"sqlite:///{alt / 'd.sqlite'}"  # --studies-dir lists .db files alone
    assert capsys.readouterr().err == (
        f"note: studies suite-a, suite-b, suite-c (exported to results/) are in SQLite files in {alt}/, not under "
        f"nodir/: `studies list --studies-dir {alt}` lists them\n"
        f"note: study suite-d (exported to results/) is in {other}, not under nodir/: `studies list --storage {other}` "
        "lists it\nerror: no folder nodir (from --studies-dir)\n")
    assert cli(tmp_path, "studies", "list", "--studies-dir", str(alt)) == 0
    listed = capsys.readouterr()
    assert all(f"suite-{name}" in listed.out for name in "abc") and listed.err == ""


def test_unknown_study_lists_the_available_ones(searched, capsys):
    cwd, _ = searched
    for action in ("show", "plot"):
        assert cli(cwd, "studies", action, "nope") == 2
        assert f"available: {NAME}" in one_line_error(capsys)


def test_a_study_kept_elsewhere_by_its_run_is_pointed_to(tmp_path, capsys):
    assert cli(tmp_path, "run", "--suite", "smoke", "--name", "alt1", "--limit", "100", "--epochs", "1", "--folds", "2",
               "--studies-dir", "alt", "--quiet") == 0
    capsys.readouterr()
    alt = f"sqlite:///{(tmp_path / 'alt' / 'alt1.db').resolve().as_posix()}"  # recorded whole: from any folder
    assert cli(tmp_path, "studies", "show", "suite-alt1") == 2
    assert one_line_error(capsys) == ("error: no study 'suite-alt1' in studies/; the run that exported it recorded it "
                                      f"in {alt}: add --storage {alt}")
    assert cli(tmp_path, "studies", "show", "suite-alt1", "--storage", "sqlite:///alt/alt1.db") == 0
    capsys.readouterr()
    assert cli(tmp_path, "studies", "list") == 0
    listed = capsys.readouterr()
    assert listed.out == "no studies in studies/\n"
    assert listed.err == (f"note: study suite-alt1 (exported to results/) is in {alt}, not under studies/: "
                          f"`studies list --storage {alt}` lists it\n")
    shutil.copy(tmp_path / "alt" / "alt1.db", tmp_path / "kept.db")
    optuna.delete_study(study_name="suite-alt1", storage=f"sqlite:///{tmp_path / 'alt' / 'alt1.db'}")
    assert cli(tmp_path, "studies", "list") == 0
    assert capsys.readouterr().err == ""  # the study deleted as optuna's error says to: nothing to point to
    shutil.move(tmp_path / "kept.db", tmp_path / "alt" / "alt1.db")
    # A run of that name in another storage would replace its results with a new study's: refused.
    alt1 = ["run", "--suite", "smoke", "--name", "alt1", "--limit", "100", "--epochs", "1", "--folds", "2", "--quiet"]
    exported = (tmp_path / "results" / "alt1.csv").read_bytes()
    start_over = (f"start over, move its files away first ({Path('results') / 'alt1.csv'}, alt1_history.csv, "
                  "alt1_meta.json and the alt1/ folder beside it, with alt1_prior.csv if there is one); for a run of "
                  "its own, a --name (or another --results-dir)")
    assert cli(tmp_path, *alt1, "--storage", "sqlite:///elsewhere/x.db") == 2
    assert one_line_error(capsys) == (
        f"error: {Path('results') / 'alt1.csv'} holds the results of study suite-alt1 (exported from {alt}), and "
        "sqlite:///elsewhere/x.db has no such study: this run would start it anew, and its export would replace "
        f"them. To go on with that study, give the storage it is in (--storage or --studies-dir); to {start_over}")
    assert cli(tmp_path, *alt1) == 2  # studies/, by default
    assert "has no such study" in one_line_error(capsys)
    assert (tmp_path / "results" / "alt1.csv").read_bytes() == exported and not (tmp_path / "elsewhere").exists()
    (tmp_path / "results" / "alt1_meta.json").unlink()  # the study it names is known all the same
    assert cli(tmp_path, *alt1) == 2
    assert "suite-alt1, and sqlite:///studies/alt1.db has no such study" in one_line_error(capsys)
    assert cli(tmp_path, *alt1, "--studies-dir", "alt") == 0
    assert cli(tmp_path, *alt1, "--studies-dir", str(tmp_path / "alt")) == 0  # the same file, by another path
    assert "holds the results" not in capsys.readouterr().err  # nor the note that its export replaces them
    (tmp_path / "studies").mkdir(exist_ok=True)
    shutil.copy(tmp_path / "alt" / "alt1.db", tmp_path / "studies" / "alt1.db")
    assert cli(tmp_path, *alt1, "--studies-dir", "studies") == 0  # now exported from studies/alt1.db
    capsys.readouterr()
    optuna.delete_study(study_name="suite-alt1", storage=f"sqlite:///{tmp_path / 'studies' / 'alt1.db'}")
    assert cli(tmp_path, *alt1, "--studies-dir", "studies") == 2
    assert one_line_error(capsys) == (
        f"error: {Path('results') / 'alt1.csv'} holds the results of study suite-alt1, which sqlite:///studies/alt1.db "
        f"no longer has (deleted since?): this run would start it anew, and its export would replace them. To "
        f"{start_over}")
    (tmp_path / "studies" / "alt1.db").write_bytes(b"not a database")
    assert cli(tmp_path, "studies", "list") == 0
    assert "note:" not in capsys.readouterr().err  # skipped as damaged there, not said to be elsewhere
    (tmp_path / "studies" / "alt1.db").unlink()  # deleted with its study: nothing to point to
    assert cli(tmp_path, "studies", "list") == 0
    assert capsys.readouterr().err == ""


def test_a_pruner_startup_without_the_median_pruner_is_refused(tmp_path, capsys):
    assert search_cli(tmp_path, "--pruner", "none", "--pruner-startup", "3") == 2
    assert one_line_error(capsys) == ("error: --pruner-startup sets when the median pruner starts; this search has "
                                      "--pruner none")
    # a mistyped pruner is named alone: whether it is the median pruner is not known
    assert search_cli(tmp_path, "--pruner", "medain", "--pruner-startup", "3") == 2
    assert one_line_error(capsys) == ("error: --pruner: unknown pruner 'medain' (did you mean 'median'?); choose one "
                                      "of: median, none")


def test_unreachable_storage_is_one_line(tmp_path, capsys):
    url = "postgresql://nobody@127.0.0.1:1/x"
    for args in (["studies", "list", "--storage", url], ["studies", "show", "x", "--storage", url]):
        assert cli(tmp_path, *args) == 2
        line = one_line_error(capsys)
        # The reason is the refused connection, not a missing driver (psycopg2 is used for postgresql://).
        assert "cannot open storage" in line and "connection" in line.lower() and "import" not in line
        assert line.endswith("; check that a PostgreSQL server runs there and takes TCP connections from this machine "
                             "(its listen_addresses and pg_hba.conf, a firewall): `pg_isready -h 127.0.0.1 -p 1` tells")
    assert search_cli(tmp_path, "--trials", "1", "--storage", url) == 2
    assert "cannot open storage" in one_line_error(capsys)


@pytest.mark.parametrize("url", ["postgresql://nobody:p@ss@127.0.0.1:1/x", "postgresql://nobody:p@ss/w@127.0.0.1:1/x",
                                 "postgresql://nobody:p@ss:w@127.0.0.1:1/x", "postgresql://nobody:p@@127.0.0.1:1/x"])
def test_a_password_with_an_unencoded_at_is_hidden_whole_and_named_as_the_cause(tmp_path, capsys, url):
    # SQLAlchemy ends the password at its first @: it read "ss@127.0.0.1" as the host, and libpq's error or its own
    # ("invalid literal for int(): 'w@127.0.0.1:1'") showed the password's end
    assert safe_url(url) == "postgresql://nobody:***@127.0.0.1:1/x"
    assert cli(tmp_path, "studies", "list", "--storage", url) == 2
    assert one_line_error(capsys) == ("error: --storage postgresql://nobody:***@127.0.0.1:1/x: the password holds an "
                                      "@, which a URL writes as %40 (and a : as %3A, a / as %2F)")
    with pytest.raises(StoreError, match="^cannot open storage 'postgresql://nobody:\\*\\*\\*@127.0.0.1:1/x': the "
                                         "password holds an @"):
        open_storage(url, StoreConfig(storage=url))
    # an @ in the query, and a password given there
    assert safe_url("postgresql://me:pw@host/db?application_name=a@b") == ("postgresql://me:***@host/db?"
                                                                           "application_name=a%40b")
    assert safe_url("postgresql://me@host/db?password=secret") == "postgresql://me@host/db?password=***"


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:"])
def test_an_in_memory_sqlite_storage_is_refused_before_anything_trains(tmp_path, capsys, url):
    # each connection (a worker, the heartbeat thread) would see its own empty database
    assert search_cli(tmp_path, "--trials", "1", "--storage", url) == 2
    assert "in-memory SQLite database" in one_line_error(capsys)
    assert cli(tmp_path, "run", "--suite", "smoke", "--quiet", "--storage", url) == 2
    assert "in-memory SQLite database" in one_line_error(capsys)
    assert cli(tmp_path, "studies", "list", "--storage", url) == 2
    assert "in-memory SQLite database" in one_line_error(capsys)
    assert not list(tmp_path.rglob("*.csv")) and not list(tmp_path.rglob("*.db"))


def test_parse_range_and_defaults():
    assert parse_range("exponent=10:60") == ("exponent", parse_range("exponent=10:60:log")[1])
    assert not parse_range("exponent=5:80:linear")[1].log
    # β: a Gaussian VAE's KL weight around 1, a VQ-VAE's commitment weight around the paper's 0.25
    assert SearchSettings("vae", 1, "baseline").ranges["beta"] == ParamRange(0.1, 10.0)
    vq = SearchSettings("vq-vae", 1, "baseline").ranges["beta"]
    assert vq == ParamRange(0.025, 2.5) and math.sqrt(vq.low * vq.high) == pytest.approx(0.25)


def test_studies_show_gives_ranges_as_search_takes_them(tmp_path, fake_training, capsys):
    assert search_cli(tmp_path, "--range", "exponent=5:80:linear", "--trials", "1") == 0
    capsys.readouterr()
    assert cli(tmp_path, "studies", "show", NAME) == 0
    shown = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("ranges: "))
    ranges = dict(parse_range(text) for text in shown.removeprefix("ranges: ").split(", "))
    assert ranges == study_settings(load(tmp_path)).ranges and not ranges["exponent"].log
    settings = SearchSettings("vae", 2, "multidecoder", "exact")
    assert list(settings.ranges) == ["w1", "w2", "beta"]
    assert SearchSettings.from_dict(settings.to_dict()) == settings
    assert settings.default_study_name() == "search-vae-2-multidecoder-exact"
    # Another single objective is another study, not the recon one's.
    assert replace(settings, objectives=("latent",)).default_study_name() == "search-vae-2-multidecoder-exact-latent"


def test_precision_is_a_search_setting():
    settings = SearchSettings("vae", 1, "single", "gaussian", precision="bf16")
    assert settings.train_config("cpu").autocast(torch.device("cpu"))
    assert SearchSettings.from_dict(settings.to_dict()).precision == "bf16"
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        SearchSettings("vae", 1, "single", "gaussian", precision="half")


def test_a_rerun_under_auto_follows_the_precision_the_study_trains_in(tmp_path, fake_training, monkeypatch, capsys):
    monkeypatch.setattr("benchmark.train.native_bf16", lambda device: True)  # a CPU with bf16 kernels
    assert search_cli(tmp_path, "--trials", "1", "--precision", "bf16") == 0
    assert search_cli(tmp_path, "--trials", "2") == 0  # auto would take fp32 on a CPU
    assert f"note: study '{NAME}' trains in bf16, as its first run did, so this run does too" in capsys.readouterr().err
    assert len(load(tmp_path).trials) == 2 and load(tmp_path).user_attrs["settings"]["precision"] == "bf16"
    # Workers on machines started together all find no study; the first to make it sets its precision.
    looks = miss_the_first_look(monkeypatch, "benchmark.search.stored_attr")
    assert search_cli(tmp_path, "--trials", "3") == 0
    assert f"note: study '{NAME}' trains in bf16" in capsys.readouterr().err and len(looks) == 2
    monkeypatch.setattr("benchmark.train.native_bf16", lambda device: False)
    assert search_cli(tmp_path, "--trials", "4") == 2
    assert f"error: study '{NAME}' trains in bf16, and this CPU" in capsys.readouterr().err


def test_studies_show_a_suite_study_as_units_not_a_search(smoke_run, tmp_path, capsys):
    url = f"sqlite:///{smoke_run / 'studies' / 'smoke.db'}"
    capsys.readouterr()
    assert cli(tmp_path, "studies", "list", "--storage", url) == 0
    _, _, (listed,) = text_table(capsys.readouterr().out.splitlines())
    assert listed[0] == "suite-smoke" and listed[2] == "30" and listed[-1] == "–"  # no best unit
    assert cli(tmp_path, "studies", "--storage", url) == 0  # the default action, listing, at another storage
    assert text_table(capsys.readouterr().out.splitlines())[2] == [listed]
    assert cli(smoke_run, "studies") == 0  # by default, every file under studies/: the suite's too
    assert text_table(capsys.readouterr().out.splitlines())[2] == [listed]
    assert cli(tmp_path, "studies", "show", "suite-smoke", "--storage", url) == 0
    shown = capsys.readouterr().out
    assert "a suite study" in shown and "report --suite smoke" in shown and "best trial" not in shown
    assert shown.splitlines()[0] == ("study suite-smoke: 30 units (done 30, failed 0, running 0, waiting 0, "
                                     "interrupted 0) in 30 trials (complete 30, pruned 0, failed 0, interrupted 0, "
                                     "running 0, waiting 0)")  # no objective it minimises
    assert listed[1] == "– (suite run)"
    assert "units of 6 configurations: vae/1/baseline, vae/1/multidecoder/uniform, " in shown
    assert "configurations=" not in shown  # the first run's list: the study may hold more
    assert "started by: python -m benchmark run --suite smoke --heartbeat 1 --quiet" in shown
    assert cli(tmp_path, "studies", "plot", "suite-smoke", "--storage", url) == 2
    assert "a suite study" in one_line_error(capsys) and not (tmp_path / "reports").exists()
    assert cli(tmp_path, "studies", "show", "smoke", "--storage", url) == 2  # by its suite's name
    assert one_line_error(capsys).startswith(f"error: no study 'smoke' (did you mean 'suite-smoke'?) in {url}")


def test_studies_list_of_a_sqlite_file_that_is_not_there_is_an_error(tmp_path, capsys):
    # It once printed "no studies" and exited 0, so a mistyped path read as an empty storage.
    url = f"sqlite:///{tmp_path / 'typo' / 'x.db'}"
    for command in (["list"], ["show", "x"], ["plot", "x"]):  # `show` said "no study 'x' …; available: none"
        assert cli(tmp_path, "studies", *command, "--storage", url) == 2
        assert one_line_error(capsys) == f"error: no SQLite file {tmp_path / 'typo' / 'x.db'} (from --storage {url})"
    assert not (tmp_path / "typo").exists()
    # Heroku's spelling of PostgreSQL URLs: SQLAlchemy said "Can't load plugin: sqlalchemy.dialects:postgres"
    assert cli(tmp_path, "studies", "list", "--storage", "postgres://me:secret@db/bench") == 2
    assert one_line_error(capsys) == ("error: --storage postgres://me:***@db/bench: SQLAlchemy names PostgreSQL "
                                      "postgresql://, not postgres://")


def test_the_log_axes_of_optuna_plots_label_plain_numbers_that_do_not_run_together():
    import matplotlib.pyplot as plt

    from benchmark.study_plots import _legible

    figure, ax = plt.subplots()
    ax.set_xscale("log")
    ax.plot([0.15, 0.9], [1, 2])
    ax.set_xlim(0.15, 0.9)  # under a decade: matplotlib labelled 2×10⁻¹, 3×10⁻¹, … 9×10⁻¹ side by side
    _legible(figure, "slice", "recon")
    figure.canvas.draw()
    shown = [(t.get_position()[0], t.get_text()) for t in ax.get_xticklabels(which="both") if t.get_text()]
    assert [text for x, text in shown if 0.15 <= x <= 0.9] == ["0.2", "0.5"]
    plt.close(figure)


def test_a_contour_grid_gets_room_for_its_labels_and_trial_axes_count_whole_trials():
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from benchmark.study_plots import _legible

    figure, axes = plt.subplots(3, 3)  # Optuna's contour of three parameters: a panel per pair
    figure.colorbar(axes[0, 0].contourf([[0, 1], [1, 0]]), ax=axes)
    _legible(figure, "contour", "recon")
    assert tuple(figure.get_size_inches()) == pytest.approx((3.2 * 3 + 1.5, 2.8 * 3 + 0.8))
    plt.close(figure)
    figure, ax = plt.subplots()
    ax.plot([0, 1, 2], [0.3, 0.2, 0.1])
    ax.set_xlabel("Trial")
    _legible(figure, "history", "recon")
    assert isinstance(ax.xaxis.get_major_locator(), MaxNLocator)
    figure.canvas.draw()
    assert all(float(t.get_text().replace("−", "-")).is_integer() for t in ax.get_xticklabels() if t.get_text())
    plt.close(figure)
