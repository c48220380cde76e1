"""`run --params-from`: a suite trained with the best parameters of a search study."""


import optuna
import pandas as pd
import pytest
from conftest import cli

SUITE = """
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


def test_params_from_an_unknown_study_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "tuned.toml").write_text(SUITE)
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", "nope", "--quiet") == 2
    assert capsys.readouterr().err.strip().startswith("error: ")
