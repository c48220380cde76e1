"""`run --params-from`: a suite trained with the best parameters of a search study."""


import errno
import json
import os
import re
import shlex
import shutil
from pathlib import Path

import optuna
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal
from conftest import TUNED_SUITE as SUITE
from conftest import cli, one_line_error, searched, text_table
from optuna.trial import TrialState

from benchmark import reuse, runner
from benchmark.cli import build_parser
from benchmark.cli.search import _checked
from benchmark.cv import unit_seed
from benchmark.export import link_checkpoint, load_checkpoint, saved_checkpoint
from benchmark.params_from import study_settings
from benchmark.search_space import ParamRange, SearchSettings, configuration_for
from benchmark.storage import METRICS_VERSION, StoreConfig, open_storage, settle_waiting, versioned
from benchmark.studies import describe_study
from benchmark.train import DivergedError

os_link = os.link  # the real one, put back where a test fakes another file system


def test_run_uses_the_best_parameters_of_a_search_and_says_where_they_came_from(tmp_path, capsys):
    assert cli(tmp_path, "search", "--family", "vae", "--config", "1", "--method", "single", "--sampling", "gaussian",
               "--trials", "2", "--epochs", "1", "--limit", "150", "--folds", "2", "--pruner", "none",
               "--quiet") == 0
    name = "search-vae-1-single-gaussian"
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'studies' / name}.db")
    best = study.best_trial.params
    (tmp_path / "tuned.toml").write_text(SUITE)
    capsys.readouterr()
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", name, "--quiet") == 0
    # The search trained with its default batch of 128, the suite with 32: its best need not be best here.
    assert (f"note: study {name!r} searched with other training than this run's (batch_size 128 → 32); its best "
            "parameters were chosen for that training. A search with --batch-size 32, under a new --study-name, tunes "
            "them for this one"
            ) in capsys.readouterr().err
    table = pd.read_csv(tmp_path / "results" / "tuned-tuned.csv")
    single = table[table["method"] == "single"]
    assert len(single) == 2 and (single["state"] == "COMPLETE").all()
    # the CSV keeps about 16 significant digits
    assert single["exponent"].iloc[0] == pytest.approx(best["exponent"], rel=1e-12)
    assert single["beta"].tolist() == pytest.approx([best["beta"]] * 2, rel=1e-12)
    assert (single["params_from"] == name).all()
    assert table.loc[table["method"] == "baseline", "params_from"].isna().all()
    assert cli(tmp_path, "report", "--suite", "tuned-tuned", "--no-figures") == 0
    index = (tmp_path / "reports" / "tuned-tuned" / "index.md").read_text()
    assert f"`{single['config_id'].iloc[0]}`: from study `{name}`" in index and "optimistic" in index
    assert index.index("## Tuned parameters") < index.index("## Results")  # the selection bias before the numbers
    assert (f"- search `{name}` trained otherwise than this run (batch_size 128 → 32): its best parameters were "
            "chosen for that training, and need not be the best for this one.\n") in index  # a reviewer sees it too
    assert "has found another best" not in index  # the search's best is the row's
    # with figures, the report draws the search's Optuna plots (SPEC: the report's figures include them)
    assert cli(tmp_path, "report", "--suite", "tuned-tuned", "--no-checkpoints") == 0
    out = tmp_path / "reports" / "tuned-tuned"
    plots = out / "figures" / "optuna" / name
    assert {p.name for p in plots.iterdir()} >= {"history.png", "history.pdf", "slice.png", "slice.pdf"}
    index = (out / "index.md").read_text()
    assert f"from study `{name}` (its Optuna plots: `figures/optuna/{name}/`, below)" in index
    history = f"figures/optuna/{name}/history"
    assert f"- `optuna/{name}/history`: [png]({history}.png) · [pdf]({history}.pdf)" in index
    # a search this machine cannot reach: the report says where the plots are missing from, and clears stale ones
    (tmp_path / "studies" / f"{name}.db").rename(tmp_path / "elsewhere.db")
    capsys.readouterr()
    assert cli(tmp_path, "report", "--suite", "tuned-tuned", "--no-checkpoints") == 0
    assert (f"warning: no Optuna plots of search {name!r}: the run read it from sqlite:///{tmp_path / 'studies' / name}"
            ".db, a file not there now; give its storage with --search-storage") in capsys.readouterr().out
    assert not plots.exists() and f"`python -m benchmark studies plot {name}`" in (out / "index.md").read_text()
    assert cli(tmp_path, "report", "--suite", "tuned-tuned", "--no-figures") == 0  # no plots to say it: a warning
    assert (f"warning: search {name!r} out of reach: not compared with this run's training; give the storage with "
            "--search-storage") in capsys.readouterr().out
    assert cli(tmp_path, "report", "--suite", "tuned-tuned", "--no-checkpoints", "--search-storage",
               f"sqlite:///{tmp_path / 'elsewhere.db'}") == 0
    assert (plots / "history.png").exists()
    assert "warning" not in capsys.readouterr().out  # its plots' notes (importances from 2 trials) are no warnings
    assert cli(tmp_path, "report", "--suite", "tuned-tuned", "--no-checkpoints", "--search-storage",
               f"sqlite:///{tmp_path / 'nowhere.db'}") == 0
    assert "is --search-storage the storage it was run in?" in capsys.readouterr().out
    # The search went on and found another best: the report's plots show it, its row did not train it.
    moved = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'elsewhere.db'}")
    distributions = moved.best_trial.distributions
    moved.add_trial(optuna.trial.create_trial(params={k: (d.low + d.high) / 2 for k, d in distributions.items()},
                                              distributions=distributions, value=moved.best_value - 1))
    now = moved.best_trial
    assert cli(tmp_path, "report", "--suite", "tuned-tuned", "--no-figures", "--search-storage",
               f"sqlite:///{tmp_path / 'elsewhere.db'}") == 0
    tuned_id = single["config_id"].iloc[0]
    assert f"caveat: search `{name}` has found another best since this run took its parameters: trial #{now.number}, " \
           f"`{tuned_id.split('/a=')[0]}/a=" in capsys.readouterr().out
    assert f"where the table's row trained `{tuned_id}`; once that one's units are all done, the same command trains " \
           "the new best" in (out / "index.md").read_text()


def test_searches_kept_in_a_studies_dir_are_found_by_studies_run_and_report(tmp_path, capsys):
    name = "search-vae-1-single-gaussian"
    assert cli(tmp_path, "search", "--family", "vae", "--config", "1", "--method", "single", "--sampling", "gaussian",
               "--trials", "1", "--epochs", "1", "--limit", "150", "--folds", "2", "--studies-dir", "mine",
               "--quiet") == 0
    assert (tmp_path / "mine" / f"{name}.db").is_file() and not (tmp_path / "studies").exists()
    assert f"inspect: python -m benchmark studies show {name} --studies-dir mine\n" in capsys.readouterr().out
    assert cli(tmp_path, "studies", "show", name, "--studies-dir", "mine") == 0
    assert f"study {name}: 1 trial (" in capsys.readouterr().out
    assert cli(tmp_path, "studies", "--studies-dir", "mine", "list") == 0  # before the action, too
    assert [row[0] for row in text_table(capsys.readouterr().out.splitlines())[2]] == [name]
    assert cli(tmp_path, "studies", "list") == 0
    assert capsys.readouterr().out == "no studies in studies/\n"
    assert cli(tmp_path, "studies", "show", name, "--studies-dir", "mine", "--storage", "sqlite:///x.db") == 2
    assert one_line_error(capsys) == ("error: --studies-dir is where SQLite studies go without --storage: give one "
                                      "or the other")
    # run looks for searches beside its own study; the report finds them where the run did
    (tmp_path / "tuned.toml").write_text(SUITE)
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", name, "--quiet") == 2
    assert f"no study {name!r} in studies/" in one_line_error(capsys)
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--studies-dir", "mine", "--params-from", name,
               "--quiet") == 0
    assert (tmp_path / "mine" / "tuned-tuned.db").is_file()
    capsys.readouterr()
    assert cli(tmp_path, "studies", "list", "--studies-dir", "mine") == 0
    rows = {row[0]: row for row in text_table(capsys.readouterr().out.splitlines())[2]}
    assert rows["suite-tuned-tuned"][1] == "– (suite run)" and rows[name][1] == "minimize"
    assert rows["suite-tuned-tuned"][-1] == "–" and rows["suite-tuned-tuned"][2] == "4"  # its units, no best
    assert cli(tmp_path, "report", "--suite", "tuned-tuned", "--no-checkpoints") == 0
    assert "warning" not in capsys.readouterr().out
    assert (tmp_path / "reports" / "tuned-tuned" / "figures" / "optuna" / name / "history.png").is_file()
    # without them, index.md gives the command that draws them: it left out the folder, so copied it found none
    assert cli(tmp_path, "report", "--suite", "tuned-tuned", "--no-figures") == 0
    index = (tmp_path / "reports" / "tuned-tuned" / "index.md").read_text()
    command = re.search(r"its Optuna plots: `python -m benchmark (studies plot .*?)`", index).group(1)
    assert command == f"studies plot {name} --studies-dir {shlex.quote(str(tmp_path / 'mine'))}"
    assert cli(tmp_path, *shlex.split(command)) == 0
    capsys.readouterr()
    # a mistyped folder is an error, not an empty list; the run's study is in mine/
    assert cli(tmp_path, "studies", "list", "--studies-dir", "other") == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.endswith("\nerror: no folder other (from --studies-dir)\n")
    assert captured.err.startswith(f"note: study suite-tuned-tuned (exported to results/) is in "
                                   f"sqlite:///{tmp_path}/mine/tuned-tuned.db, not under other/")
    # a search made before `search` took --studies-dir is under studies/: a run with one finds it there too
    (tmp_path / "studies").mkdir()
    (tmp_path / "mine" / f"{name}.db").rename(tmp_path / "studies" / f"{name}.db")
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--studies-dir", "other", "--params-from", name, "--name",
               "old", "--quiet") == 0
    meta_path = tmp_path / "results" / "old_meta.json"
    meta = json.loads(meta_path.read_text())
    assert meta["search_storages"] == {name: f"sqlite:///{tmp_path}/studies/{name}.db"}
    capsys.readouterr()
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--studies-dir", "other", "--params-from", "nope", "--name",
               "nope", "--quiet") == 2
    assert one_line_error(capsys).endswith("available: none; for one kept elsewhere, --studies-dir DIR or --search-storage URL")
    # an earlier version's export records no storage: the report looks under studies/
    meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "search_storages"}))
    capsys.readouterr()
    assert cli(tmp_path, "report", "--suite", "old", "--no-checkpoints") == 0
    assert "warning" not in capsys.readouterr().out
    # a server's URL without its password is not taken for another study of that name under studies/
    meta_path.write_text(json.dumps({**meta, "search_storages": {name: "postgresql://me:***@db.example/optuna"}}))
    assert cli(tmp_path, "report", "--suite", "old", "--no-checkpoints") == 0
    assert (f"warning: no Optuna plots of search {name!r}: the run read it from postgresql://me:***@db.example/optuna, "
            "whose password is not kept; give its storage with --search-storage") in capsys.readouterr().out


def suite_study(studies: Path, suite: str) -> None:
    """The study of a suite's units, as `run` leaves it (no units needed here)."""
    studies.mkdir(exist_ok=True)
    study = optuna.create_study(study_name=f"suite-{suite}", storage=f"sqlite:///{studies / suite}.db")
    study.set_user_attr("settings", {"suite": suite, "dataset": "mnist5k"})


def test_a_study_named_twice_is_said_to_be(tmp_path, capsys):
    assert cli(tmp_path, "run", "--suite", "smoke", "--params-from", "s", "s", "--quiet") == 2
    assert one_line_error(capsys) == "error: study 's' is named twice in --params-from: name each study once"


def test_two_searches_of_one_configuration_name_it_as_its_id_does(tmp_path, capsys):
    for name in ("a", "b"):
        searched(tmp_path / "studies", name, SearchSettings("vq-vae", 1, "multidecoder", "exact", softadapt=True))
    assert cli(tmp_path, "run", "--suite", "quick", "--params-from", "a", "b", "--quiet") == 2
    assert one_line_error(capsys) == ("error: studies 'a' and 'b' both tune vq-vae/1/multidecoder/exact/softadapt: a "
                                      "configuration takes the parameters of one search, so name one of them")
    searched(tmp_path / "studies", "c", SearchSettings("vq-vae", 1, "single", "gaussian"))
    assert cli(tmp_path, "run", "--suite", "quick", "--params-from", "b", "c", "c", "--quiet") == 2
    assert "error: study 'c' is named twice" in one_line_error(capsys)


def test_a_study_that_is_no_search_is_refused_listing_the_search_studies_only(tmp_path, capsys):
    studies = tmp_path / "studies"
    suite_study(studies, "smoke")
    searches = "--params-from takes search studies (made by `python -m benchmark search`)"
    elsewhere = "; for one kept elsewhere, --studies-dir DIR or --search-storage URL"  # where no storage was named
    assert cli(tmp_path, "run", "--suite", "smoke", "--params-from", "nope", "--quiet") == 2
    assert one_line_error(capsys) == f"error: {searches}: no study 'nope' in studies/; available: none{elsewhere}"
    searched(studies, "search-vae-1-single-gaussian", SearchSettings("vae", 1, "single", "gaussian"))
    assert cli(tmp_path, "run", "--suite", "smoke", "--params-from", "nope", "--quiet") == 2
    assert one_line_error(capsys) == (f"error: {searches}: no study 'nope' in studies/; available: "
                                      f"search-vae-1-single-gaussian{elsewhere}")
    assert cli(tmp_path, "run", "--suite", "smoke", "--params-from", "search-vae-1-single-gausian", "--quiet") == 2
    assert one_line_error(capsys) == (f"error: {searches}: no study 'search-vae-1-single-gausian' (did you "
                                      "mean 'search-vae-1-single-gaussian'?) in studies/; available: "
                                      f"search-vae-1-single-gaussian{elsewhere}")
    assert cli(tmp_path, "run", "--suite", "smoke", "--params-from", "suite-smoke", "--quiet") == 2
    assert one_line_error(capsys) == (f"error: {searches}: study 'suite-smoke' holds the units of suite 'smoke'; "
                                      f"available: search-vae-1-single-gaussian{elsewhere}")
    url = f"sqlite:///{studies / 'smoke.db'}"
    assert cli(tmp_path, "run", "--suite", "smoke", "--params-from", "nope", "--search-storage", url, "--quiet") == 2
    assert one_line_error(capsys) == f"error: {searches}: no study 'nope' in {url}; available: none"


def test_a_run_tuned_from_other_studies_is_not_filed_over_the_last_tuned_run(tmp_path, capsys):
    # Both default to `<suite>-tuned`: the second export would drop the first run's tuned rows.
    for name in ("a", "b"):
        searched(tmp_path / "studies", name, SearchSettings("vae", 1, "single", "gaussian"))
    (tmp_path / "tuned.toml").write_text(SUITE)
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", "a", "--quiet") == 0
    capsys.readouterr()
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", "b", "--quiet") == 2
    assert one_line_error(capsys) == (
        "error: 'tuned-tuned' holds the run tuned from a (results/tuned-tuned.csv); this one takes b: to go on with "
        "it, run the command it recorded: `python -m benchmark run --suite tuned.toml --params-from a --quiet`; for a "
        "run of its own, give it a --name, or its export would replace that run's results")
    # the same studies resume, also where a first export stopped before writing the meta file
    (tmp_path / "results" / "tuned-tuned_meta.json").unlink()
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", "a", "--quiet") == 0
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", "b", "--name", "tuned-b", "--quiet") == 0
    assert set(pd.read_csv(tmp_path / "results" / "tuned-b.csv")["params_from"].dropna()) == {"b"}
    # nor is an untuned run filed over a tuned one, or a tuned run over an untuned one
    capsys.readouterr()
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--name", "tuned-b", "--quiet") == 2
    assert one_line_error(capsys) == (
        "error: 'tuned-b' holds the run tuned from b (results/tuned-b.csv); this one takes no --params-from: to go on "
        "with it, run the command it recorded: `python -m benchmark run --suite tuned.toml --params-from b --name "
        "tuned-b --quiet`; for a run of its own, give it a --name, or its export would replace that run's results")
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--quiet") == 0
    capsys.readouterr()
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", "a", "--name", "tuned", "--quiet") == 2
    assert one_line_error(capsys).startswith("error: 'tuned' holds a run without --params-from (results/tuned.csv); "
                                             "this one takes a: to go on with it, run the command it recorded: "
                                             "`python -m benchmark run --suite tuned.toml --quiet`; for a run of its "
                                             "own")
    assert set(pd.read_csv(tmp_path / "results" / "tuned-b.csv")["params_from"].dropna()) == {"b"}


def test_a_search_named_as_pandas_spells_a_missing_value_is_read_back_by_its_name(tmp_path, capsys):
    searched(tmp_path / "studies", "NA", SearchSettings("vae", 1, "single", "gaussian"))
    (tmp_path / "tuned.toml").write_text(SUITE)
    for _ in range(2):  # the second run resumes the first: its results were tuned from NA, not untuned
        assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", "NA", "--quiet") == 0
    assert cli(tmp_path, "report", "--suite", "tuned-tuned", "--no-figures") == 0
    table = pd.read_csv(tmp_path / "reports" / "tuned-tuned" / "table.csv", keep_default_na=False)
    assert "NA" in set(table["params_from"])


def test_settings_a_stored_search_holds_that_this_version_refuses_are_named_as_the_studys(tmp_path):
    """Its settings' messages name `search`'s flags: read from a study, they are said to be the study's,
    not this command's."""
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}")
    study.set_user_attr("settings", versioned({**SearchSettings("vae", 1, "baseline").to_dict(), "folds": 1}))
    with pytest.raises(ValueError) as refused:
        study_settings(study)
    assert str(refused.value) == ("study 's' stores search settings this version refuses (edited, or written by "
                                  "another version?): --folds must be >= 2 for cross-validation, got 1")


def test_a_search_without_a_complete_trial_is_refused_with_the_search_command_that_continues_it(tmp_path, capsys):
    # It said only "study 's' has no complete trial yet", not how to get one.
    studies = tmp_path / "studies"
    studies.mkdir()
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{studies / 's'}.db")
    searched_as = SearchSettings("vae", 1, "single", "gaussian", limit=150, epochs=1, folds=2, batch_size=32,
                                 precision="fp32")  # a search stores the precision it trained in
    study.set_user_attr("settings", versioned(searched_as.to_dict()))
    study.tell(study.ask(), state=TrialState.FAIL)  # as an interrupted search leaves a trial
    running = study.ask()  # a trial another worker trains
    (tmp_path / "tuned.toml").write_text(SUITE)
    command = ("python -m benchmark search --family vae --config 1 --method single --sampling gaussian --limit 150 "
               "--epochs 1 --folds 2 --batch-size 32 --study-name s")
    refused = (f"error: study 's' has no complete trial yet: continue it with `{command}` and the options it was given "
               "that a study does not store (--trials, --data-root, ...)")
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", "s", "--quiet") == 2
    assert one_line_error(capsys) == f"{refused}, or wait for the 1 trial running in it"
    study.tell(running, state=TrialState.FAIL)
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", "s", "--quiet") == 2
    assert one_line_error(capsys) == refused
    assert cli(tmp_path, *shlex.split(command)[3:], "--trials", "1", "--quiet") == 0  # the study's own settings
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", "s", "--quiet") == 0


@pytest.mark.parametrize("settings", [
    SearchSettings("vae", 1, "baseline"),
    SearchSettings("vq-vae", 2, "multidecoder", "exact", softadapt=True, dataset="digits", limit=300, epochs=3, folds=3,
                   seed=7, batch_size=16, lr=3e-4, weight_decay=0.0, objectives=("recon", "latent"),
                   ranges={"softadapt_beta": ParamRange(1e-4, 0.5, log=False), "beta": ParamRange(0.1, 1.0)}),
    # SoftAdapt tunes β only when given its range, its default one too
    SearchSettings("vae", 1, "multidecoder", "uniform", softadapt=True, ranges={"beta": ParamRange(0.1, 10.0)}),
])
def test_the_search_command_of_a_studys_settings_gives_those_settings(settings):
    args = build_parser().parse_args(shlex.split(settings.command("my-study"))[3:])
    assert args.study_name == "my-study" and _checked(args)[0] == settings
    assert shlex.split(settings.command("my study"))[-2:] == ["--study-name", "my study"]  # a name made before checks
    assert "--study-name" not in settings.command(settings.default_study_name())


def test_studies_show_names_each_configuration_a_suite_study_trained_tuned_a_search_s_new_best_too(tmp_path, capsys):
    # It showed the first run's params_from among the settings, not the new best a rerun had trained.
    searched(tmp_path / "studies", "a", SearchSettings("vae", 1, "single", "gaussian"))
    (tmp_path / "tuned.toml").write_text(SUITE)
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", "a", "--quiet") == 0
    search = optuna.load_study(study_name="a", storage=f"sqlite:///{tmp_path / 'studies' / 'a.db'}")
    first = search.best_trial
    search.add_trial(optuna.trial.create_trial(params={k: d.low for k, d in first.distributions.items()},
                                               distributions=first.distributions, value=first.value - 0.05))
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", "a", "--quiet") == 0
    results = pd.read_csv(tmp_path / "results" / "tuned-tuned.csv")
    now = results.loc[results["params_from"] == "a", "config_id"].unique()
    capsys.readouterr()
    assert cli(tmp_path, "studies", "show", "suite-tuned-tuned") == 0
    lines = capsys.readouterr().out.splitlines()
    tuned = [line for line in lines if line.startswith("tuned: ")]
    assert len(now) == 1 and len(tuned) == 1 and tuned[0].endswith(f", {now[0]} from search 'a'")
    assert tuned[0].count(" from search 'a'") == 2
    assert not any("params_from" in line for line in lines)
    # a study none of whose tuned units has started yet: the tuned configurations its first run stored
    fresh = optuna.create_study(study_name="suite-fresh", storage=f"sqlite:///{tmp_path / 'fresh.db'}")
    fresh.set_user_attr("settings", {"suite": "fresh", "params_from": {"vae/1/single/gaussian/a=9": "a"}})
    assert "\ntuned: vae/1/single/gaussian/a=9 from search 'a'\n" in describe_study(fresh)


def test_a_run_finishes_the_best_it_began_before_it_takes_a_searchs_new_one(tmp_path, capsys, monkeypatch):
    # Machines that started one `run --params-from` command while the search went on trained other configurations
    searched(tmp_path / "studies", "a", SearchSettings("vae", 1, "single", "gaussian"))
    (tmp_path / "tuned.toml").write_text(SUITE)
    command = ["run", "--suite", "tuned.toml", "--params-from", "a", "--quiet"]
    train_fold, trained = runner.train_fold, []

    def stopped_after_one(*args, **kwargs):  # Ctrl-C in the second unit: the tuned configuration is half done
        if trained:
            raise KeyboardInterrupt
        trained.append(args[0].id)
        return train_fold(*args, **kwargs)

    monkeypatch.setattr(runner, "train_fold", stopped_after_one)
    assert cli(tmp_path, *command) == 130
    monkeypatch.setattr(runner, "train_fold", train_fold)
    search = optuna.load_study(study_name="a", storage=f"sqlite:///{tmp_path / 'studies' / 'a.db'}")
    first = search.best_trial
    search.add_trial(optuna.trial.create_trial(params={k: d.low for k, d in first.distributions.items()},
                                               distributions=first.distributions, value=first.value - 0.05))
    new = configuration_for(study_settings(search), search.best_trial.params).id
    capsys.readouterr()
    assert cli(tmp_path, *command) == 0
    err = capsys.readouterr().err
    assert f"→ {trained[0]} (the best of study 'a' when this run began)" in err
    assert (f"note: study 'a' has found another best since this run began, {new} (trial #1); this run trains "
            f"{trained[0]} on, whose units are not all done, as every machine that joins it does. The same command "
            "trains the new best once they are; a --name of its own trains it now") in err
    tuned = pd.read_csv(tmp_path / "results" / "tuned-tuned.csv").query("params_from == 'a'")
    assert set(tuned["config_id"]) == {trained[0]} and (tuned["state"] == "COMPLETE").all() and len(tuned) == 2
    assert cli(tmp_path, *command) == 0  # done: the same command takes the new best
    assert "has found another best" not in capsys.readouterr().err
    tuned = pd.read_csv(tmp_path / "results" / "tuned-tuned.csv").query("params_from == 'a'")
    assert set(tuned["config_id"]) == {new} and (tuned["state"] == "COMPLETE").all() and len(tuned) == 2


def ran_taking_the_baseline(cwd: Path, capsys, args: list[str], source: str, taker: str
                            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`run` of the tuned suite with ``args``, filed as ``taker``, after run ``source``: it takes the baseline's 2
    units from ``source`` and trains the other 2. Both runs' results, indexed by unit."""
    capsys.readouterr()
    assert cli(cwd, "run", "--suite", "tuned.toml", *args, "--quiet") == 0
    out, err = capsys.readouterr()
    assert (f"taking 2 units of 1 configuration from run {source!r}, which trained them with this run's settings: "
            "they are not trained again") in err
    assert out.startswith("done 4 (2 by this run), failed 0, not finished 0 of 4 units")
    theirs, ours = (pd.read_csv(cwd / "results" / f"{name}.csv").set_index(["config_id", "fold"])
                    for name in (source, taker))
    return theirs, ours


def test_a_tuned_run_takes_the_units_it_does_not_tune_from_the_suites_own_run(tmp_path, capsys):
    searched(tmp_path / "studies", "a", SearchSettings("vae", 1, "single", "gaussian"))
    (tmp_path / "tuned.toml").write_text(SUITE)
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--quiet") == 0
    untuned, tuned = ran_taking_the_baseline(tmp_path, capsys, ["--params-from", "a"], "tuned", "tuned-tuned")
    baseline = untuned[untuned["method"] == "baseline"]
    taken = tuned.loc[baseline.index]
    columns = ["recon", "latent", "total", "best_epoch", "seconds"]
    assert_frame_equal(taken[columns], baseline[columns])
    assert (taken["taken_from"] == "tuned").all() and tuned.drop(baseline.index)["taken_from"].isna().all()
    capsys.readouterr()
    assert cli(tmp_path, "studies", "show", "suite-tuned-tuned") == 0
    assert "\ntaken from other runs, not trained here: 2 units from run 'tuned'\n" in capsys.readouterr().out
    assert cli(tmp_path, "report", "--suite", "tuned-tuned", "--no-figures") == 0
    assert ("; 2 of 4 units taken from run `tuned`, which had trained them with the same settings."
            in (tmp_path / "reports" / "tuned-tuned" / "index.md").read_text())
    # its weights linked into this run's folder, so that removing the other run's results keeps them
    for path, theirs in zip(taken["checkpoint"], baseline["checkpoint"]):
        assert Path(path).parent == Path("results/tuned-tuned/artifacts")
        assert (tmp_path / path).stat().st_ino == (tmp_path / theirs).stat().st_ino
    shutil.rmtree(tmp_path / "results" / "tuned")
    model, info = load_checkpoint(tmp_path / taken["checkpoint"].iloc[0])
    assert info["config_id"] == baseline.index[0][0] and info["fold"] == baseline.index[0][1]
    # a resumed tuned run has nothing left to take, nor a word on it
    capsys.readouterr()
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", "a", "--quiet") == 0
    assert "tuned'" not in capsys.readouterr().err.split("(the best of study 'a')")[1]
    # a tuned run with other training, or whose untuned run another version made or nothing can read, takes nothing
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", "a", "--seed", "1", "--name", "seed1",
               "--quiet") == 0
    out, err = capsys.readouterr()
    unlike = (": this run trains the configurations it does not tune as well, rather than take their units from run "
              "'tuned'")
    assert ("note: study 'suite-tuned' in sqlite:///studies/tuned.db was made with other settings (seed 0 there, 1 "
            f"now){unlike}") in err
    assert out.startswith("done 4, failed 0")  # all four trained by this run
    study = optuna.load_study(study_name="suite-tuned", storage=f"sqlite:///{tmp_path / 'studies' / 'tuned'}.db")
    study.set_user_attr("training_images", 151)  # a folder dataset that gained an image since, say
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", "a", "--name", "more", "--quiet") == 0
    assert f"note: study 'suite-tuned' split 151 training images into its folds and these data have 150{unlike}" \
        in capsys.readouterr().err
    study.set_user_attr("training_images", 150)
    digest = study.user_attrs["images_digest"]
    study.set_user_attr("images_digest", "0" * 64)  # as many images, other pixels (files replaced since, say)
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", "a", "--name", "other", "--quiet") == 0
    assert (f"note: study 'suite-tuned' split other training images into its folds than these (as many, with other "
            f"pixels){unlike}") in capsys.readouterr().err
    study.set_user_attr("images_digest", digest)
    study.set_user_attr("settings", {**study.user_attrs["settings"], "metrics_version": METRICS_VERSION + 1})
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", "a", "--name", "later", "--quiet") == 0
    assert ("note: study 'suite-tuned' in sqlite:///studies/tuned.db was made by a later version of mtvae-bench, "
            f"whose validation metrics are not comparable with this version's{unlike}") in capsys.readouterr().err
    (tmp_path / "studies" / "tuned.db").write_bytes(b"not a database")
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", "a", "--name", "unread", "--quiet") == 0
    assert re.search(r"note: reading study 'suite-tuned' in sqlite:///studies/tuned.db failed \(.+\)"
                     + re.escape(unlike), capsys.readouterr().err)


def test_the_suites_own_run_after_its_tuned_one_takes_the_units_that_one_did_not_tune(tmp_path, capsys):
    searched(tmp_path / "studies", "a", SearchSettings("vae", 1, "single", "gaussian"))
    (tmp_path / "tuned.toml").write_text(SUITE)
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", "a", "--quiet") == 0
    tuned, untuned = ran_taking_the_baseline(tmp_path, capsys, [], "tuned-tuned", "tuned")
    baseline = tuned[tuned["method"] == "baseline"]
    columns = ["recon", "latent", "total", "best_epoch", "seconds"]
    assert_frame_equal(untuned.loc[baseline.index, columns], baseline[columns])
    assert (untuned.loc[baseline.index, "taken_from"] == "tuned-tuned").all()
    single = untuned.drop(baseline.index)  # the suite's own Single decoder, which the tuned run did not train
    assert len(single) == 2 and single["taken_from"].isna().all() and not set(single.index) & set(tuned.index)
    # A run under a --name of its own is not the suite's own run: it trains its units, the same settings or not
    # (another --device, say), and says nothing of the tuned run's.
    for name_and_options in (["--name", "replica"], ["--seed", "1", "--name", "seed1"]):
        assert cli(tmp_path, "run", "--suite", "tuned.toml", *name_and_options, "--quiet") == 0
        out, err = capsys.readouterr()
        assert out.startswith("done 4, failed 0") and "tuned-tuned" not in err


def test_runs_started_together_take_each_unit_once_and_a_unit_without_its_weights_trains(tmp_path, capsys,
                                                                                        monkeypatch):
    searched(tmp_path / "studies", "a", SearchSettings("vae", 1, "single", "gaussian"))
    (tmp_path / "tuned.toml").write_text(SUITE)
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--quiet") == 0
    untuned = pd.read_csv(tmp_path / "results" / "tuned.csv")
    baseline = untuned[untuned["method"] == "baseline"]
    (tmp_path / baseline["checkpoint"].iloc[0]).unlink()
    # Another run, started together, claims the units between this one's look at them and its claim.
    others = []

    def interleaved(study, suite, store, images, digest):
        found = reuse._settled

        def then_the_other(*args):
            monkeypatch.setattr(reuse, "_settled", found)
            others.append(reuse.take_units(study, suite, store, images, digest))
            return found(*args)

        monkeypatch.setattr(reuse, "_settled", then_the_other)
        return reuse.take_units(study, suite, store, images, digest)

    monkeypatch.setattr(runner, "take_units", interleaved)
    capsys.readouterr()
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", "a", "--quiet") == 0
    weightless = ("1 unit that run 'tuned' trained with this run's settings trains again, its weights gone from "
                  "results/tuned/artifacts")
    assert others == ["taking 1 unit of 1 configuration from run 'tuned', which trained them with this run's "
                      f"settings: they are not trained again; {weightless}"]
    out, err = capsys.readouterr()
    assert "taking" not in err and f"note: {weightless}" in err and out.startswith("done 4 (3 by this run)")
    study = optuna.load_study(study_name="suite-tuned-tuned",
                              storage=f"sqlite:///{tmp_path / 'studies' / 'tuned-tuned'}.db")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4  # no unit twice, none pruned as surplus
    tuned = pd.read_csv(tmp_path / "results" / "tuned-tuned.csv").set_index(["config_id", "fold"])
    taken = tuned.loc[list(zip(baseline["config_id"], baseline["fold"])), "taken_from"]
    assert taken.isna().iloc[0] and taken.iloc[1] == "tuned"  # the unit without weights trained here
    assert all((tmp_path / path).exists() for path in tuned["checkpoint"])


def test_weights_taken_from_another_file_system_are_read_where_they_are(tmp_path, monkeypatch):
    source, folder = tmp_path / "theirs", tmp_path / "mine"
    source.mkdir()
    (source / "id").write_bytes(b"weights")
    attrs = {"artifact": "id", "artifact_dir": str(source)}

    def cross_device(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    link_checkpoint(source / "id", folder)
    assert saved_checkpoint(attrs, folder) == source / "id"
    monkeypatch.setattr(os, "link", os_link)
    link_checkpoint(source / "id", folder)
    assert saved_checkpoint(attrs, folder) == folder / "id" and (folder / "id").read_bytes() == b"weights"


def test_a_run_stopped_while_taking_units_leaves_each_whole_or_waiting(tmp_path, capsys, monkeypatch):
    searched(tmp_path / "studies", "a", SearchSettings("vae", 1, "single", "gaussian"))
    (tmp_path / "tuned.toml").write_text(SUITE)
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--quiet") == 0

    def stopped(saved, folder):  # Ctrl-C right after the first unit was taken, before its weights are linked
        raise KeyboardInterrupt

    monkeypatch.setattr(reuse, "link_checkpoint", stopped)
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", "a", "--quiet") == 130
    study = optuna.load_study(study_name="suite-tuned-tuned",
                              storage=f"sqlite:///{tmp_path / 'studies' / 'tuned-tuned'}.db")
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "WAITING", "WAITING", "WAITING"]
    monkeypatch.setattr(reuse, "link_checkpoint", link_checkpoint)
    capsys.readouterr()
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", "a", "--quiet") == 0
    out, err = capsys.readouterr()
    assert "taking 1 unit of 1 configuration from run 'tuned'" in err and out.startswith("done 4 (2 by this run)")
    tuned = pd.read_csv(tmp_path / "results" / "tuned-tuned.csv")
    taken = tuned[tuned["taken_from"] == "tuned"]
    # the first unit's weights, never linked, are read where that run saved them
    assert {(tmp_path / path).parent for path in taken["checkpoint"]} == {
        tmp_path / "results" / name / "artifacts" for name in ("tuned", "tuned-tuned")}


def test_a_unit_is_taken_only_settled_untuned_by_this_versions_metrics_and_with_its_weights(tmp_path):
    (tmp_path / "w").write_bytes(b"weights")
    current = {"metrics_version": METRICS_VERSION, "artifact": "w", "artifact_dir": str(tmp_path)}

    def trial(state=TrialState.COMPLETE, **attrs):
        return optuna.trial.create_trial(state=state, value=1.0 if state == TrialState.COMPLETE else None,
                                         user_attrs={**current, **attrs})

    cases = {"vae/1/baseline#0": [trial(state=TrialState.FAIL), trial()],  # its second trial completed it
             "vae/1/baseline#1": [trial(metrics_version=METRICS_VERSION + 1)],  # a later version's
             "vae/1/baseline#2": [trial(params_from="a")],  # tuned there
             "vq-vae/1/baseline#0": [trial(metrics_version=3)],  # VQ-VAE 1 changed in version 4
             "vq-vae/2/baseline#0": [trial(metrics_version=3)],  # untouched since
             "vae/2/baseline#0": [trial(artifact="gone")],  # without its weights
             "vae/2/baseline#1": [trial(state=TrialState.WAITING)],
             "vae/2/baseline#2": [trial(state=TrialState.FAIL)],  # interrupted: to train again
             "vae/2/baseline#3": [trial(state=TrialState.FAIL, error="diverged")],  # failed for good
             "vae/2/baseline#4": [trial(state=TrialState.FAIL, error="diverged"), trial()]}  # done by a later trial
    done, gone = reuse._settled(cases, list(cases), METRICS_VERSION, tmp_path / "elsewhere")
    taken = {"vae/1/baseline#0": cases["vae/1/baseline#0"][1], "vq-vae/2/baseline#0": cases["vq-vae/2/baseline#0"][0],
             "vae/2/baseline#3": cases["vae/2/baseline#3"][0], "vae/2/baseline#4": cases["vae/2/baseline#4"][1]}
    assert {key: id(trial) for key, trial in done.items()} == {key: id(trial) for key, trial in taken.items()}
    assert gone == 1  # vae/2/baseline#0, which trains again


def test_a_unit_that_diverged_in_the_suites_own_run_is_taken_as_failed(tmp_path, capsys, monkeypatch):
    searched(tmp_path / "studies", "a", SearchSettings("vae", 1, "single", "gaussian"))
    (tmp_path / "tuned.toml").write_text(SUITE)
    trained = runner.train_fold

    def diverging(configuration, *args):
        if configuration.method.method == "baseline" and args[3] == unit_seed(0, "vae/1/baseline", 1):
            raise DivergedError("loss diverged at epoch 1 (train nan, validation nan)")
        return trained(configuration, *args)

    monkeypatch.setattr(runner, "train_fold", diverging)
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--quiet") == 1
    monkeypatch.setattr(runner, "train_fold", trained)
    capsys.readouterr()
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", "a", "--quiet") == 1
    out, err = capsys.readouterr()
    assert "taking 2 units (1 failed for good there) of 1 configuration from run 'tuned'" in err
    assert out.startswith("done 3 (2 by this run), failed 1, not finished 0 of 4 units")
    assert "failed vae/1/baseline fold 1 (2nd of 2): loss diverged at epoch 1 (train nan, validation nan)" in out
    row = pd.read_csv(tmp_path / "results" / "tuned-tuned.csv").set_index(["config_id", "fold"]).loc[
        ("vae/1/baseline", 1)]
    assert row["state"] == "FAIL" and row["taken_from"] == "tuned" and row["error"].startswith("loss diverged")
    assert cli(tmp_path, "report", "--suite", "tuned-tuned", "--no-figures") == 0
    report = tmp_path / "reports" / "tuned-tuned"
    assert "; 2 of 4 units taken from run `tuned`, which had trained them" in (report / "index.md").read_text()
    assert ("vae/1/baseline: 1/2 folds complete; fold 1 FAIL: loss diverged at epoch 1 (train nan, validation nan) "
            "(taken from run tuned)") in (report / "missing.txt").read_text()


def test_a_waiting_retry_is_settled_with_the_taken_units_attributes_alone(tmp_path):
    study = optuna.create_study(study_name="s", storage=open_storage(f"sqlite:///{tmp_path / 's.db'}", StoreConfig()))
    study.enqueue_trial({"unit": "vae/1/baseline#0"})
    trial_id = study.trials[0]._trial_id
    for key, value in {"worker": "killed", "fold": 3}.items():  # as Optuna's retry of a dead worker's trial has them
        study._storage.set_trial_user_attr(trial_id, key, value)
    assert settle_waiting(study, trial_id, TrialState.COMPLETE, 0.5, {"fold": 0, "taken_from": "tuned"})
    assert not settle_waiting(study, trial_id, TrialState.COMPLETE, 0.7, {"fold": 1})  # taken once
    trial = study.trials[0]
    assert (trial.state, trial.value) == (TrialState.COMPLETE, 0.5)
    assert trial.user_attrs == {"fold": 0, "taken_from": "tuned"}
