"""Report: statistics by hand, tables (CSV / LaTeX / Markdown), figures, partial and unknown suites."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_figure, blobs, cli
from filelock import FileLock
from scipy import stats as sps

from benchmark.caveats import caveats
from benchmark.figures import error_vs_observed, reconstruction_grid, validation_curves
from benchmark.models import DEFAULT_BETA, build_model, weight_count
from benchmark.report import LOCK_FILE, InterruptedOnceWritten, _caption, _install, build_table, write_report
from benchmark.report_index import FIGURE_KINDS, setup_text
from benchmark.results import ReportError, SuiteResults, checkpoint_file, load_suite
from benchmark.storage import METRICS_VERSION
from benchmark.tables import (COMPARISON_TITLES, INDEX_TITLES, _signed, comparison_cells, comparison_latex,
                              comparison_markdown, comparison_note, display_table, latex_table, markdown_table)
from benchmark.stats import (compare_with_baseline, completed, corrected_resampled_ttest, format_mean_var, holm,
                             parameter_text, summarise)

FOLDS, N_TRAIN, N_VAL = 5, 400, 100
# (config_id, family, config, method, sampling, exponent, softadapt); the config ids follow the runner.
CONFIGS = [
    ("vae/1/baseline", "vae", 1, "baseline", "", None, False),
    ("vae/1/multidecoder/exact/softadapt", "vae", 1, "multidecoder", "exact", None, True),
    ("vae/1/single/uniform/a=40", "vae", 1, "single", "uniform", 40.0, False),
    ("vq-vae/1/baseline", "vq-vae", 1, "baseline", "", None, False),
    ("vq-vae/1/multidecoder/uniform", "vq-vae", 1, "multidecoder", "uniform", None, False),
    ("vq-vae/1/single/gaussian/a=20", "vq-vae", 1, "single", "gaussian", 20.0, False),
]
# Per-family scale of (recon, latent) and each method's shift of them (thesis-like magnitudes).
SCALE = {"vae": (0.030, 13.0), "vq-vae": (0.0025, 0.008)}
SHIFT = {"baseline": (0.0, 0.0), "multidecoder": (-0.10, 0.25), "single": (0.08, -0.30)}


def make_rows(seed: int = 0) -> pd.DataFrame:
    """Per-fold rows with a shared fold effect (so that the pairing matters) and method shifts."""
    rng = np.random.default_rng(seed)
    fold_effect = {family: rng.normal(0, 0.05, FOLDS) for family in SCALE}
    rows = []
    for config_id, family, config, method, sampling, exponent, softadapt in CONFIGS:
        recon0, latent0 = SCALE[family]
        for fold in range(FOLDS):
            wobble = rng.normal(0, 0.005, 2)
            recon = recon0 * (1 + SHIFT[method][0] + fold_effect[family][fold] + wobble[0])
            latent = latent0 * (1 + SHIFT[method][1] + fold_effect[family][fold] + wobble[1])
            rows.append({
                "config_id": config_id, "family": family, "config": config, "method": method,
                "sampling": sampling, "exponent": exponent, "count": None, "softadapt": softadapt,
                "w1": 1.0, "w2": 1.0, "beta": DEFAULT_BETA[family], "softadapt_beta": 1e-4 if softadapt else None,
                "fold": fold, "state": "COMPLETE", "best_epoch": 3, "recon": recon, "latent": latent,
                "recon_cond": recon * 0.5 if method != "baseline" else None, "total": recon + latent,
                "recon_train": recon * 1024, "recon_cond_train": None, "seconds": 1.5, "n_train": N_TRAIN,
                "n_val": N_VAL, "error": "", "checkpoint": "", "params_from": ""})
    return pd.DataFrame(rows)


def make_history(rows: pd.DataFrame, epochs: int = 3) -> pd.DataFrame:
    history = []
    for row in rows.itertuples():
        for epoch in range(1, epochs + 1):
            decay = 1 + 0.5 * (epochs - epoch) + 0.02 * row.fold
            history.append({"config_id": row.config_id, "fold": row.fold, "epoch": epoch,
                            "train_total": row.total * decay, "recon": row.recon * decay,
                            "latent": row.latent * decay, "recon_cond": row.recon_cond, "total": row.total * decay,
                            "recon_train": row.recon_train * decay, "recon_cond_train": None,
                            "w_recon": 1.0, "w_recon_cond": 1.0, "w_latent": 1.0})
    return pd.DataFrame(history)


def write_suite(directory: Path, rows: pd.DataFrame, suite: str = "demo",
                configurations: list[str] | None = None, **meta_extra) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rows.to_csv(directory / f"{suite}.csv", index=False)
    make_history(rows[rows["state"] == "COMPLETE"]).to_csv(directory / f"{suite}_history.csv", index=False)
    meta = {"suite": suite, "dataset": "mnist5k", "data_root": None, "folds": FOLDS, "repeats": 1, "seed": 0,
            "epochs": 3, "configurations": configurations or [c[0] for c in CONFIGS], **meta_extra}
    (directory / f"{suite}_meta.json").write_text(json.dumps(meta))
    return directory


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return make_rows()


@pytest.fixture(scope="module")
def report(tmp_path_factory, rows):
    """A complete suite reported without figures: (summary, out_dir)."""
    results = write_suite(tmp_path_factory.mktemp("results"), rows)
    out = tmp_path_factory.mktemp("reports") / "demo"
    return write_report(results, "demo", out, figures=False), out


# ---------------------------------------------------------------- statistics

def test_corrected_ttest_equals_hand_computation_and_is_more_conservative():
    d = np.array([0.10, 0.30, -0.05, 0.20, 0.15])
    result = corrected_resampled_ttest(d, n_train=400, n_val=100, k=5)
    se = np.sqrt((1 / 5 + 100 / 400) * d.var(ddof=1))
    t = d.mean() / se
    assert result.t == pytest.approx(t)
    assert result.p == pytest.approx(2 * sps.t.sf(abs(t), 4))
    half = sps.t.ppf(0.975, 4) * se
    assert (result.ci_low, result.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert result.mean == pytest.approx(0.14) and result.df == 4
    naive = sps.ttest_rel(d, np.zeros_like(d)).pvalue
    assert result.p > naive


def test_corrected_ttest_with_repeats_uses_one_over_k_times_r():
    d = np.linspace(-0.1, 0.5, 10)
    result = corrected_resampled_ttest(d, n_train=400, n_val=100, k=5, repeats=2)
    t = d.mean() / np.sqrt((1 / 10 + 0.25) * d.var(ddof=1))
    assert result.t == pytest.approx(t) and result.df == 9
    assert result.p == pytest.approx(2 * sps.t.sf(abs(t), 9))


def test_corrected_ttest_degenerate_cases_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = corrected_resampled_ttest([0.0] * 5, 400, 100, 5)
        shifted = corrected_resampled_ttest([-0.2] * 5, 400, 100, 5)
        single = corrected_resampled_ttest([0.3], 400, 100, 5)
        empty = corrected_resampled_ttest([], 400, 100, 5)
    assert same.p == 1.0 and same.t == 0.0
    assert shifted.p == 0.0 and shifted.t == -np.inf and shifted.ci_low == shifted.ci_high == -0.2
    assert np.isnan(single.p) and np.isnan(single.t) and single.mean == 0.3
    assert np.isnan(empty.p) and np.isnan(empty.mean)


def test_a_difference_that_is_not_finite_is_dropped_as_a_missing_one():
    finite = corrected_resampled_ttest([0.1, 0.2, 0.3], 80, 20, k=2, repeats=2)
    assert corrected_resampled_ttest([0.1, 0.2, 0.3, math.inf], 80, 20, k=2, repeats=2) == finite
    assert finite.n == 3


def test_holm_step_down():
    assert holm([0.01, 0.02, 0.03, 0.04, 0.05]) == pytest.approx([0.05, 0.08, 0.09, 0.09, 0.09])
    adjusted = holm([0.01, 0.04, 0.03, np.nan, 0.9])
    assert adjusted[:3] == pytest.approx([0.04, 0.09, 0.09]) and np.isnan(adjusted[3]) and adjusted[4] == 0.9
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped: 2 × 0.6 is no probability


def test_format_mean_var_matches_the_thesis_and_keeps_small_means_apart():
    assert format_mean_var(13.9709, 0.92) == "13.9709 ± 9.2e-01"
    assert format_mean_var(0.0025, 6.5e-09) == "0.00250 ± 6.5e-09"
    # Four decimals would print all three as 0.0007.
    assert [format_mean_var(m, 1.1e-9) for m in (0.000736, 0.000725, 0.000714)] == [
        "0.000736 ± 1.1e-09", "0.000725 ± 1.1e-09", "0.000714 ± 1.1e-09"]
    assert format_mean_var(0.0324, np.nan) == "0.0324"
    assert format_mean_var(np.nan, np.nan) == "–"
    # A diverging run's mean in scientific notation too, not 25 digits; below 10⁵ as the thesis prints
    assert format_mean_var(7715115512842080166608896.0, 1.2e50) == "7.715e+24 ± 1.2e+50"
    assert format_mean_var(32423.3691, 8.8e7) == "32423.3691 ± 8.8e+07"


def test_compare_with_baseline_pairs_on_fold_and_adjusts_within_model_config(rows):
    rows = rows.assign(n_train=300, n_val=100)  # recorded sizes, not the 5-fold ratio 4:1 that stands in for none
    comparison = compare_with_baseline(rows, k=FOLDS)
    assert len(comparison) == 4 * 2  # 4 non-baseline configurations × (recon, latent)
    row = comparison.set_index(["config_id", "metric"]).loc[("vq-vae/1/multidecoder/uniform", "recon")]
    method = rows[rows["config_id"] == "vq-vae/1/multidecoder/uniform"].sort_values("fold")
    base = rows[rows["config_id"] == "vq-vae/1/baseline"].sort_values("fold")
    d = method["recon"].to_numpy() - base["recon"].to_numpy()
    t = d.mean() / np.sqrt((1 / 5 + 100 / 300) * d.var(ddof=1))
    assert row["mean_diff"] == pytest.approx(d.mean()) and row["t"] == pytest.approx(t)
    assert row["p"] == pytest.approx(2 * sps.t.sf(abs(t), 4))
    assert row["rel_change"] == pytest.approx(d.mean() / base["recon"].mean())
    assert row["rel_change"] == pytest.approx(-0.10, abs=0.01)
    assert bool(row["significant"])
    group = comparison[(comparison["family"] == "vq-vae") & (comparison["metric"] == "recon")]
    assert group["p_holm"].to_numpy() == pytest.approx(holm(group["p"].to_numpy()))


def test_a_second_baseline_is_compared_with_the_plain_one_and_methods_stay_compared_with_the_plain_one(rows):
    other = rows[rows["config_id"] == "vae/1/baseline"].assign(config_id="vae/1/baseline/w=1,1,0.5")
    other["recon"] *= 0.9
    comparison = compare_with_baseline(pd.concat([other, rows]), k=FOLDS).set_index(["config_id", "metric"])
    assert (comparison["n_pairs"] == FOLDS).all()
    assert comparison.loc[("vae/1/baseline/w=1,1,0.5", "recon"), "rel_change"] == pytest.approx(-0.1)
    assert ("vae/1/baseline", "recon") not in comparison.index
    expected = compare_with_baseline(rows, k=FOLDS).set_index(["config_id", "metric"])
    method = ("vae/1/single/uniform/a=40", "recon")
    assert comparison.loc[method, "p"] == pytest.approx(expected.loc[method, "p"])


def test_a_method_is_paired_with_the_baseline_by_fold_number_not_by_row_order(rows):
    method_id = "vq-vae/1/multidecoder/uniform"
    method = rows[(rows["config_id"] == method_id) & (rows["fold"] != 0)].iloc[::-1]  # folds 4, 3, 2, 1
    base = rows[(rows["config_id"] == "vq-vae/1/baseline") & (rows["fold"] != 4)]     # folds 0, 1, 2, 3
    rows = pd.concat([rows[~rows["config_id"].isin([method_id, "vq-vae/1/baseline"])], method, base])
    line = compare_with_baseline(rows, k=FOLDS).set_index(["config_id", "metric"]).loc[(method_id, "recon")]
    by_fold = base.set_index("fold")["recon"]
    d = np.array([method.set_index("fold").loc[fold, "recon"] - by_fold[fold] for fold in (1, 2, 3)])
    assert line["n_pairs"] == 3
    assert line["mean_diff"] == pytest.approx(d.mean())
    # the variance of a mean of the 3 differences done: 1/3, not 1/5, with 2 degrees of freedom
    se = np.sqrt((1 / 3 + N_VAL / N_TRAIN) * d.var(ddof=1))
    assert line["t"] == pytest.approx(d.mean() / se)
    assert line["p"] == pytest.approx(2 * sps.t.sf(abs(d.mean() / se), 2))
    half = sps.t.ppf(0.975, 2) * se
    assert (line["ci_low"], line["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))


def test_a_comparison_short_of_folds_describes_the_baseline_on_the_paired_folds_alone(rows):
    method_id = "vq-vae/1/multidecoder/uniform"
    short = rows[~((rows["config_id"] == method_id) & (rows["fold"] >= 3))]  # folds 0, 1, 2 of 5
    line = compare_with_baseline(short, k=FOLDS).set_index(["config_id", "metric"]).loc[(method_id, "recon")]
    base = rows[rows["config_id"] == "vq-vae/1/baseline"].set_index("fold")["recon"]
    method = rows[rows["config_id"] == method_id].set_index("fold")["recon"]
    paired = base[[0, 1, 2]]
    assert line["baseline_mean"] == pytest.approx(paired.mean())
    assert line["rel_change"] == pytest.approx((method[[0, 1, 2]] - paired).mean() / paired.mean())


def test_results_without_set_sizes_are_tested_with_the_k_fold_ratio(rows):
    # Older exports record no n_train/n_val: a 5-fold split's validation fold is a quarter of its training set.
    comparison = compare_with_baseline(rows.drop(columns=["n_train", "n_val"]), k=FOLDS)
    line = comparison.set_index(["config_id", "metric"]).loc[("vq-vae/1/multidecoder/uniform", "recon")]
    method = rows[rows["config_id"] == "vq-vae/1/multidecoder/uniform"].sort_values("fold")["recon"].to_numpy()
    base = rows[rows["config_id"] == "vq-vae/1/baseline"].sort_values("fold")["recon"].to_numpy()
    assert line["p"] == pytest.approx(corrected_resampled_ttest(method - base, FOLDS - 1, 1, FOLDS).p, rel=1e-12)


def test_with_repeats_a_comparison_is_complete_on_all_k_times_r_pairs_only(rows):
    repeated = pd.concat([rows, make_rows(seed=1).assign(fold=lambda f: f["fold"] + FOLDS)], ignore_index=True)
    method_id = "vq-vae/1/multidecoder/uniform"
    one_repeat = repeated[~((repeated["config_id"] == method_id) & (repeated["fold"] >= FOLDS))]
    for k in (FOLDS, None):  # given, or counted from the folds: 10 folds over 2 repeats are k = 5
        comparison = compare_with_baseline(one_repeat, k=k, repeats=2).set_index(["config_id", "metric"])
        short, full = comparison.loc[(method_id, "recon")], comparison.loc[("vq-vae/1/single/gaussian/a=20", "recon")]
        assert short["n_pairs"] == FOLDS and np.isnan(short["p_holm"]) and not short["significant"]
        assert full["n_pairs"] == 2 * FOLDS and np.isfinite(full["p_holm"])


def test_a_unit_exported_twice_counts_once_with_its_last_values(rows):
    unit = rows[(rows["config_id"] == "vae/1/baseline") & (rows["fold"] == 0)]
    done = completed(pd.concat([rows, unit.assign(recon=123.0)]))
    again = done[(done["config_id"] == "vae/1/baseline") & (done["fold"] == 0)]
    assert len(done) == len(rows) and again["recon"].tolist() == [123.0]


def test_methods_are_not_compared_with_another_baseline_when_the_plain_one_failed(rows):
    other = rows[rows["config_id"] == "vae/1/baseline"].assign(config_id="vae/1/baseline/w=1,1,0.5")
    other["recon"] *= 1.2
    failed = rows["config_id"] == "vae/1/baseline"
    results = pd.concat([rows.assign(state=np.where(failed, "FAIL", rows["state"])), other])
    comparison = compare_with_baseline(results, k=FOLDS).set_index(["config_id", "metric"])
    vae = comparison[comparison.index.get_level_values(0).str.startswith("vae/")]
    assert (vae["n_pairs"] == 0).all() and vae["p"].isna().all() and not vae["significant"].any()


def test_a_comparison_short_of_folds_claims_nothing_and_still_counts_in_holm(rows):
    short = rows[~((rows["config_id"] == "vq-vae/1/single/gaussian/a=20") & (rows["fold"] >= 2))]
    diverged = rows[rows["config_id"] == "vq-vae/1/single/gaussian/a=20"].assign(
        config_id="vq-vae/1/single/gaussian/a=10", state="FAIL", recon=np.nan, latent=np.nan)
    comparison = compare_with_baseline(pd.concat([short, diverged]), k=FOLDS).set_index(["config_id", "metric"])
    line = comparison.loc[("vq-vae/1/single/gaussian/a=20", "recon")]
    assert line["n_pairs"] == 2 and np.isfinite(line["p"])  # described, on the folds that were done
    assert np.isnan(line["p_holm"]) and not line["significant"]
    assert comparison.loc[("vq-vae/1/single/gaussian/a=10", "recon"), "n_pairs"] == 0
    full = comparison.loc[("vq-vae/1/multidecoder/uniform", "recon")]
    assert full["p_holm"] == pytest.approx(min(1.0, 3 * full["p"]))  # Holm over all three comparisons


def test_holm_adjusts_within_one_model_config_not_across_the_configs_of_a_family(rows):
    # Two VQ-VAE configs: each config's two methods are one Holm family per metric (m = 2, not 4).
    other = make_rows(seed=1)
    second = other[other["family"] == "vq-vae"].assign(
        config=2, config_id=lambda f: f["config_id"].str.replace("vq-vae/1", "vq-vae/2"))
    comparison = compare_with_baseline(pd.concat([rows, second]), k=FOLDS)
    groups = comparison.groupby(["family", "config", "metric"])
    assert len(groups) == 2 * 3 and (groups.size() == 2).all()  # vae/1, vq-vae/1, vq-vae/2 × recon, latent
    for _, group in groups:
        (low, high) = sorted(group["p"])
        assert high < 0.5 and low > 0  # the adjustment is visible, not capped at 1
        by_hand = {low: min(1.0, 2 * low), high: min(1.0, max(2 * low, high))}  # Holm's step-down, m = 2
        assert group["p_holm"].to_list() == pytest.approx([by_hand[p] for p in group["p"]], rel=1e-12)


def test_a_fold_without_a_value_is_shown_and_the_row_is_not_ranked(rows):
    gap = rows.copy()
    gap.loc[(gap["config_id"] == "vq-vae/1/multidecoder/uniform") & (gap["fold"] == 2), "recon"] = np.nan
    table = build_table(SuiteResults("demo", gap, None, {"folds": FOLDS}))
    cells, bold = display_table(table)
    line = table["config_id"].to_list().index("vq-vae/1/multidecoder/uniform")
    assert cells["Reconstruction loss"].iat[line].endswith("(n=4)") and table["complete"].iat[line]
    assert not bold["Reconstruction loss"].iat[line] and not table["recon_significant"].iat[line]
    assert bold["Reconstruction loss"].iat[table["config_id"].to_list().index("vq-vae/1/baseline")]


def test_a_value_that_is_not_a_number_is_an_error_not_a_missing_fold(tmp_path, rows):
    results = write_suite(tmp_path / "results", rows)
    corrupt = rows.astype({"recon": object})
    corrupt.loc[7, "recon"] = "0.03O"
    corrupt.to_csv(results / "demo.csv", index=False)
    with pytest.raises(ReportError, match=r"column 'recon' holds values that are not numbers \(line 9: '0.03O'\)"):
        write_report(results, "demo", tmp_path / "out", figures=False)


def test_words_for_a_missing_value_are_missing_numbers_but_text_as_written(tmp_path, rows):
    # R writes NA, Excel #N/A, pandas with na_rep NaN; a study of --params-from may be named NA
    results = write_suite(tmp_path / "results", rows)
    edited, conditioned = rows.astype({"recon_cond": object}), rows.index[rows["recon_cond"].notna()]
    edited.loc[conditioned[:3], "recon_cond"] = ["NA", "NaN", "#N/A"]
    edited.loc[0, "params_from"] = "NA"
    edited[edited.columns[::-1]].to_csv(results / "demo.csv", index=False)  # any order of columns
    loaded = load_suite(results, "demo").results
    assert (loaded["sampling"] == rows["sampling"].fillna("")).all()
    assert list(loaded.index[loaded["recon_cond"].notna()]) == list(conditioned[3:])
    assert loaded.loc[0, "params_from"] == "NA" and (loaded.loc[1:, "params_from"] == "").all()


def test_a_results_file_exported_again_while_it_is_read_is_read_from_one_version(tmp_path, rows, monkeypatch):
    results = write_suite(tmp_path / "results", rows)
    read_csv = pd.read_csv

    def exported_meanwhile(*args, **kwargs):  # a run's export, one row longer, replaces the file
        frame = read_csv(*args, **kwargs)
        pd.concat([rows.iloc[[-1]], rows]).to_csv(results / "demo.csv", index=False)
        return frame

    monkeypatch.setattr(pd, "read_csv", exported_meanwhile)
    loaded = load_suite(results, "demo").results
    assert list(loaded["config_id"]) == list(rows["config_id"])
    assert list(loaded["sampling"]) == list(rows["sampling"].fillna(""))


@pytest.mark.parametrize("meta, message", [
    ([1, 2], "holds a list, not a run's metadata (an object)"),
    ({"folds": None}, "folds must be an integer >= 2, got None"),
    ({"folds": "abc"}, "folds must be an integer >= 2, got 'abc'"),
    ({"folds": 0}, "folds must be an integer >= 2, got 0"),
    ({"folds": 5, "dataset": 5}, "dataset must be a name, got 5"),
    ({"folds": 5, "configurations": "vae/1/baseline"}, "configurations must be a list, got 'vae/1/baseline'"),
    ({"folds": 5, "search_storages": {"s": 3}}, "search_storages must be an object of URLs, got {'s': 3}"),
    ({"folds": 5, "params_from": []}, "params_from must be an object of names, got []"),
])
def test_a_meta_file_of_the_wrong_shape_is_an_error_naming_it(tmp_path, rows, meta, message):
    results = write_suite(tmp_path / "results", rows)
    (results / "demo_meta.json").write_text(json.dumps(meta))
    with pytest.raises(ReportError, match=f"demo_meta.json: {re.escape(message)}; run the command that made it"
                       if isinstance(meta, dict) else re.escape(message)):
        write_report(results, "demo", tmp_path / "out", figures=False)


def test_a_results_csv_cut_short_is_an_error_not_a_cut_number(tmp_path, rows):
    results = write_suite(tmp_path / "results", rows)
    text = (results / "demo.csv").read_text()
    cut = text[:text.rindex(",", 0, len(text) - 1)] + ",0.20"  # inside its last line, as a stopped copy leaves it
    (results / "demo.csv").write_text(cut)
    with pytest.raises(ReportError, match=r"demo.csv does not end with a newline, as a file cut short does"):
        write_report(results, "demo", tmp_path / "out", figures=False)
    (results / "demo.csv").write_text(cut[:cut.rindex("\n") + 1])  # cut at a line's end: that unit is missing
    assert write_report(results, "demo", tmp_path / "out", figures=False).missing


def test_a_checkpoint_is_taken_beside_the_results_read_before_a_path_recorded_from_here(tmp_path, monkeypatch):
    # a report of a copy, made from the folder of the original, drew the original's weights of that name
    monkeypatch.chdir(tmp_path)
    recorded = "results/demo/artifacts/7.pt"
    for folder in ("results", "copy"):
        (tmp_path / folder / "demo" / "artifacts").mkdir(parents=True)
        (tmp_path / folder / "demo" / "artifacts" / "7.pt").write_text(folder)
    assert checkpoint_file(recorded, Path("copy"), "demo").read_text() == "copy"
    assert checkpoint_file(recorded, Path("results"), "demo").read_text() == "results"
    shared = tmp_path / "shared" / "7.pt"  # under --artifacts-dir: only where it was recorded
    assert checkpoint_file(str(shared), Path("elsewhere"), "demo") == shared


def test_a_damaged_prior_csv_leaves_the_priors_out_of_the_report_saying_why(tmp_path, rows, capsys):
    # it stopped the whole report, where a damaged history only drops the curves
    results = write_suite(tmp_path / "results", rows)
    prior = results / "demo_prior.csv"
    for text, why in (('garbage,"unterminated\n', "is not a `prior` export: Error tokenizing"),
                      ("config_id,fold,val_nll_nats,prior_path\nvq-vae/1/baseline,0,abc,p.pt\n",
                       r"column 'val_nll_nats' holds values that are not numbers \(line 2: 'abc'\)")):
        prior.write_text(text)
        warnings = write_report(results, "demo", tmp_path / "out", figures=False).warnings
        left_out = f"priors left out: {re.escape(str(prior))}.*{why}.*; or remove it: `python -m benchmark prior "
        assert any(re.match(left_out + f"--suite demo --results-dir {re.escape(str(results))}` then trains every "
                            "prior anew$", w) for w in warnings), warnings
        assert "prior_nll_nats" not in pd.read_csv(tmp_path / "out" / "table.csv")
    assert cli(tmp_path, "report", "--no-figures") == 0
    assert "warning: priors left out: " in capsys.readouterr().out


# ---------------------------------------------------------------- tables

def test_one_fold_has_no_variance_rather_than_zero(rows):
    # pandas gives one value a variance of 0: the table CSV said the folds agreed where one had finished
    one = rows[(rows["config_id"] != "vae/1/baseline") | (rows["fold"] == 2)]
    line = summarise(one).set_index("config_id").loc["vae/1/baseline"]
    assert line["n"] == line["recon_n"] == 1
    assert line["recon_mean"] == one.loc[one["config_id"] == "vae/1/baseline", "recon"].item()
    assert np.isnan(line["recon_var"]) and np.isnan(line["recon_std"])


def test_table_csv_has_one_row_per_configuration_with_hand_computed_statistics(report, rows):
    summary, out = report
    table = pd.read_csv(out / "table.csv")
    assert sorted(table["config_id"]) == sorted(c[0] for c in CONFIGS) == sorted(summary.configurations)
    assert (table["n"] == FOLDS).all() and summary.complete and not (out / "missing.txt").exists()
    for config_id, group in rows.groupby("config_id"):
        line = table.set_index("config_id").loc[config_id]
        for metric in ("recon", "latent"):
            values = group[metric].to_numpy()
            assert line[f"{metric}_mean"] == pytest.approx(values.mean(), rel=1e-12)
            assert line[f"{metric}_var"] == pytest.approx(values.var(ddof=0), rel=1e-9)
            assert line[f"{metric}_std"] == pytest.approx(values.std(ddof=0), rel=1e-9)
            assert line[f"{metric}_n"] == FOLDS
    baseline = table.set_index("config_id").loc["vae/1/baseline"]
    assert np.isnan(baseline["recon_cond_mean"]) and baseline["recon_cond_n"] == 0
    assert np.isnan(baseline["recon_cond_var"]) and np.isnan(baseline["recon_cond_std"])
    assert np.isnan(baseline["parameters"])  # none: an empty cell, not the display tables' "–"
    assert np.isnan(baseline["recon_p"])  # no comparison of a baseline with itself
    # Untested: neither significant nor not, and no pairs (not 0 of them).
    assert np.isnan(baseline["recon_n_pairs"]) and np.isnan(baseline["recon_significant"])
    assert (baseline["best_epoch_min"], baseline["best_epoch_max"]) == (3, 3)
    # Counts are written as integers.
    header, line = (out / "table.csv").read_text().splitlines()[:2]
    assert dict(zip(header.split(","), line.split(",")))["best_epoch_min"] == "3"
    # Thesis order: model → config → method (baseline first).
    assert list(table["config_id"][:3]) == [c[0] for c in CONFIGS[:3]]


def test_a_report_of_repeated_folds_tests_every_pair_with_one_over_k_times_r(tmp_path, rows):
    # --repeats 2: 5 folds × 2 repeats = folds 0-9, and the corrected t-test over all 10 differences.
    repeated = pd.concat([rows, make_rows(seed=1).assign(fold=lambda f: f["fold"] + FOLDS)], ignore_index=True)
    summary = write_report(write_suite(tmp_path / "results", repeated, repeats=2), "demo", tmp_path / "out",
                           figures=False)
    assert summary.complete
    table = pd.read_csv(tmp_path / "out" / "table.csv").set_index("config_id")
    assert (table["n"] == 2 * FOLDS).all() and table["complete"].all()
    compared = table[table["method"] != "baseline"]
    assert len(compared) == 4
    for config_id, row in compared.iterrows():
        family = row["family"]
        method = repeated[repeated["config_id"] == config_id].sort_values("fold")
        base = repeated[repeated["config_id"] == f"{family}/1/baseline"].sort_values("fold")
        for metric in ("recon", "latent"):
            d = method[metric].to_numpy() - base[metric].to_numpy()
            se = np.sqrt((1 / (FOLDS * 2) + N_VAL / N_TRAIN) * d.var(ddof=1))
            t = d.mean() / se
            half = sps.t.ppf(0.975, 9) * se  # df = 10 − 1
            assert row[f"{metric}_n_pairs"] == 10
            assert row[f"{metric}_t"] == pytest.approx(t, rel=1e-9)
            assert row[f"{metric}_p"] == pytest.approx(2 * sps.t.sf(abs(t), 9), rel=1e-9)
            assert (row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]) == pytest.approx(
                (d.mean() - half, d.mean() + half), rel=1e-9)
            assert np.isfinite(row[f"{metric}_p_holm"])  # every planned pair made: it takes part in Holm


def test_comparison_tables_give_each_methods_difference_interval_and_holm_p(report):
    _, out = report
    table = pd.read_csv(out / "table.csv").set_index("config_id")
    markdown, latex = (out / "comparison.md").read_text(), (out / "comparison.tex").read_text()
    compared = table[table["method"] != "baseline"]
    header, alignment, lines = _markdown_rows(markdown)
    assert header == [*INDEX_TITLES, "Metric", *COMPARISON_TITLES]
    assert alignment == ["left"] * 5 + ["right"] * 5
    assert len(lines) == 2 * len(compared)  # recon and latent, against the baseline
    p_holm = {line[header.index("p (Holm)")] for line in lines}
    for config_id, row in compared.iterrows():
        for metric in ("recon", "latent"):
            assert _signed(row[f'{metric}_mean_diff']) in markdown
            assert f"[{_signed(row[f'{metric}_ci_low'])}, {_signed(row[f'{metric}_ci_high'])}]" in markdown
            assert f"{100 * row[f'{metric}_rel_change']:+.1f}%" in markdown
            assert f"{row[f'{metric}_p_holm']:#.3g}".rstrip(".") in p_holm  # trailing zeros kept
    significant = int(compared[["recon_significant", "latent_significant"]].astype(bool).sum().sum())
    assert markdown.count("†") - 1 == latex.count(r"$^\dagger$") - 1 == significant  # minus the note
    spec, rows = _tabular_rows(latex)
    assert len(rows) == 1 + 2 * len(compared) and all(r.count("&") == len(spec) - 1 for r in rows)
    assert "Holm" in latex and "_" not in latex and "−" not in latex
    # Negative numbers with a minus sign, not a text hyphen.
    low = compared["recon_ci_low"].iloc[0]
    assert low < 0 and f"[{_signed(low).replace('-', '$-$')}, " in latex
    assert not re.search(r"(^|[\s\[])-\d", "\n".join(rows))


def test_both_latex_tables_rule_off_each_model_and_config(rows):
    second = rows[rows["family"] == "vq-vae"].assign(config=2, config_id=lambda f: f["config_id"].str.replace(
        "vq-vae/1", "vq-vae/2"))
    table = build_table(SuiteResults("demo", pd.concat([rows, second]), None, {"folds": FOLDS}))
    comparison = comparison_latex(comparison_cells(table), "demo")
    # Gaussian VAE 1 | VQ-VAE 1, VQ-VAE 2: 3 configurations of each config, in the comparison 2 × 2 lines.
    for latex, lines in ((latex_table(table, "demo"), 3), (comparison, 4)):
        spec, _ = _tabular_rows(latex)
        body = latex[latex.index(r"\toprule"):latex.index(r"\bottomrule")].splitlines()[2:]  # after the header
        assert body[0] == r"\midrule"
        assert body[1 + lines] == r"\midrule" and body[2 + 2 * lines] == rf"\cmidrule(l){{2-{len(spec)}}}"
        assert sum(line.startswith(("\\midrule", "\\cmidrule")) for line in body) == 3


def test_the_baseline_the_others_are_compared_with_leads_its_models_rows(rows):
    # Sorted by their labels, "W₁=1, β=0.5" came before the plain baseline's "–"
    other = rows[rows["config_id"] == "vae/1/baseline"].assign(config_id="vae/1/baseline/w=1,1,0.5", beta=0.5)
    table = build_table(SuiteResults("demo", pd.concat([other, rows]), None, {"folds": FOLDS}))
    assert list(table["config_id"][:3]) == ["vae/1/baseline", "vae/1/baseline/w=1,1,0.5",
                                            "vae/1/multidecoder/exact/softadapt"]


def test_a_suite_of_baselines_has_no_comparison_files(tmp_path, rows):
    out = tmp_path / "out"
    write_report(write_suite(tmp_path / "all", rows), "demo", out, figures=False)
    assert (out / "comparison.md").exists()
    baselines = rows[rows["method"] == "baseline"]
    results = write_suite(tmp_path / "baselines", baselines, configurations=list(baselines["config_id"].unique()))
    summary = write_report(results, "demo", out, figures=False)
    assert not (out / "comparison.md").exists() and not (out / "comparison.tex").exists()
    assert "comparison.md" not in (out / "index.md").read_text() and all(p.exists() for p in summary.files)


@pytest.mark.parametrize("version, families, warned", [
    (3, ("vae", "vq-vae"), True),  # VQ-VAE 1's folds trained the model with its activation applied twice
    (3, ("vae",), False),          # version 4 changed nothing of the Gaussian VAEs'
    (METRICS_VERSION, ("vae", "vq-vae"), False),
    (METRICS_VERSION + 1, ("vae",), True),
])
def test_a_report_of_results_another_version_measured_otherwise_says_so(tmp_path, rows, version, families, warned):
    rows = rows[rows["family"].isin(families)]
    results = write_suite(tmp_path / "results", rows, configurations=list(rows["config_id"].unique()),
                          metrics_version=version)
    summary = write_report(results, "demo", tmp_path / "out", figures=False)
    expected = ("demo.csv was exported by an earlier version of mtvae-bench, in which VQ-VAE 1 applied its activation "
                "twice after its last encoder and first decoder layers, so its folds trained another model than this "
                "version's: its numbers are not comparable with a run of this version's") if version < METRICS_VERSION \
        else ("demo.csv was exported by a later version of mtvae-bench, whose metrics this version may read otherwise: "
              "report it with that version")
    assert (expected in summary.warnings) is warned
    assert (expected in (tmp_path / "out" / "index.md").read_text()) is warned


def test_index_md_shows_the_numbers_after_the_caveats(tmp_path, rows):
    out = tmp_path / "out"
    summary = write_report(write_suite(tmp_path / "all", rows), "demo", out, figures=False)
    index = (out / "index.md").read_text()
    results = index[index.index("## Results\n"):index.index("## Tables\n")]
    assert "### Cross-validation\n\n" + (out / "table.md").read_text() in results  # the table with its footnote
    assert ("the Reconstruction loss column holds the unconditioned output's (a Multidecoder's decoder 1, a Single "
            "decoder given an empty mask)") in results  # which output each method's column holds
    comparison = (out / "comparison.md").read_text()
    assert "### Each method against its baseline\n\n" + comparison in results
    assert summary.caveats and index.index("## Caveats") < index.index("## Results")
    (tmp_path / "all" / "demo_meta.json").unlink()
    summary = write_report(tmp_path / "all", "demo", out, figures=False)
    index = (out / "index.md").read_text()
    assert summary.warnings and f"## Warnings\n\n- {summary.warnings[0]}" in index
    assert index.index("## Warnings") < index.index("## Results")
    # A configuration beyond the suite's list that is short of folds is Missing, but no "other" of the suite's
    listed = [c for c in rows["config_id"].unique() if c != "vq-vae/1/baseline"]
    extra = rows[(rows["config_id"] != "vq-vae/1/baseline") | (rows["fold"] > 0)]
    summary = write_report(write_suite(tmp_path / "extra", extra, configurations=listed), "demo", out, figures=False)
    index = (out / "index.md").read_text()
    assert [m.config_id for m in summary.missing] == ["vq-vae/1/baseline"] and "## Missing" in index
    assert f"{len(listed)} of {len(listed)} configurations complete.\n" in index
    baselines = rows[rows["method"] == "baseline"]
    results_dir = write_suite(tmp_path / "baselines", baselines, configurations=list(baselines["config_id"].unique()))
    write_report(results_dir, "demo", out, figures=False)
    index = (out / "index.md").read_text()
    assert (out / "table.md").read_text() in index and "against its baseline" not in index


def test_index_md_says_how_the_units_trained_as_far_as_the_run_recorded_it(rows):
    meta = {"folds": FOLDS, "lr": 0.001, "weight_decay": 0.01, "precision": "bf16",
            "command": "python -m benchmark run --suite demo"}
    h100 = "cuda: NVIDIA H100 80GB HBM3"
    shared = rows.assign(device=np.where(rows["fold"] == 0, "cpu", h100), torch="2.14.1",
                         n_val=np.where(rows["fold"] == 0, N_VAL - 1, N_VAL))  # two machines, uneven folds
    assert setup_text(SuiteResults("demo", shared, None, meta)) == (
        f"Trained with AdamW (lr 0.001, weight decay 0.01) in bf16 on `cpu` and `{h100}` (torch 2.14.1); "
        f"{N_VAL - 1}–{N_VAL} validation images per fold; run by `python -m benchmark run --suite demo`.")
    # An earlier version's export: no weight decay nor resolved precision in its meta, units without a device
    older = rows.assign(device=np.where(rows["fold"] == 0, "cpu", ""), torch="")
    assert setup_text(SuiteResults("demo", older, None, {"folds": FOLDS, "lr": 0.001, "precision": "auto"})) == (
        f"Trained with AdamW (lr 0.001) on `cpu`, {4 * len(CONFIGS)} of {len(rows)} units unrecorded; "
        f"{N_VAL} validation images per fold.")
    assert setup_text(SuiteResults("demo", rows.assign(n_val=np.nan), None, {"folds": FOLDS})) == ""


def test_a_lone_complete_row_is_not_bold(rows):
    # The best of one is no finding: a model config whose other rows are short of folds.
    alone = rows[(rows["family"] == "vq-vae") & ((rows["method"] == "baseline") | (rows["fold"] < 2))]
    table = build_table(SuiteResults("demo", pd.concat([rows[rows["family"] == "vae"], alone]), None,
                                     {"folds": FOLDS}))
    bold = display_table(table)[1].set_axis(table["config_id"])
    assert not bold.loc["vq-vae/1/baseline"].any()
    assert bold.loc["vae/1/multidecoder/exact/softadapt", "Reconstruction loss"]


def test_differences_keep_three_significant_digits_and_their_sign():
    assert [_signed(v) for v in (-0.0029, 0.0022, 100.0, -123.4, 0.0, 1234.5)] == [
        "-0.00290", "+0.00220", "+100", "-123", "+0.00", "+1.23e+03"]


def test_the_latent_column_is_never_bold(rows):
    # The lowest KL is a collapsed posterior; the lowest VQ loss came with a 9x worse
    # reconstruction in the thesis's table (VQ-VAE 3, SoftAdapt): neither is the best model.
    vq = rows["family"] == "vq-vae"
    assert rows[vq].groupby("config_id")["latent"].mean().nunique() > 1  # a lowest exists to be bolded
    bold = display_table(build_table(SuiteResults("demo", rows, None, {"folds": FOLDS})))[1]
    assert not bold["KL / VQ loss"].any() and bold["Reconstruction loss"].any()


def test_the_caption_says_how_much_the_suite_trained(report, rows):
    _, out = report
    assert f"{N_TRAIN} training images per fold, 3 epochs" in (out / "table.tex").read_text()
    uneven = rows.assign(n_train=np.where(rows["fold"] == 0, N_TRAIN - 1, N_TRAIN))  # it gave the mean, rounded
    assert _caption(SuiteResults("demo", uneven, None, {"folds": FOLDS})).endswith(
        f"({FOLDS} folds; {N_TRAIN - 1}–{N_TRAIN} training images per fold): mean ± variance over folds.")


def _markdown_rows(markdown: str) -> tuple[list[str], list[str], list[list[str]]]:
    """The Markdown table in ``markdown``: its header, each column's alignment from the delimiter row
    (``:---`` left, ``---:`` right) and its rows, each line's cells split at the "|" not escaped, stripped."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert all(line.endswith("|") for line in lines)
    header, rule, *rows = ([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines)
    assert all(re.fullmatch(":?-+:?", cell) for cell in rule) and all(len(row) == len(header) for row in rows)
    sides = {(True, False): "left", (False, True): "right", (True, True): "center", (False, False): "default"}
    return header, [sides[cell.startswith(":"), cell.endswith(":")] for cell in rule], rows


def test_markdown_cells_stay_in_their_columns():
    index = pd.MultiIndex.from_tuples([("VQ-VAE", "1", "Single decoder", "a=20 | β=1", "Reconstruction loss"),
                                       ("VQ-VAE", "1", "Single decoder", "a=20 | β=1", "KL / VQ loss"),
                                       ("VQ-VAE", "2", "Multidecoder", "two\nlines", "Reconstruction loss")],
                                      names=[*INDEX_TITLES, "Metric"])
    values = [["-0.00290†", "[-0.00400, -0.00180]", "-10.0%", "0.0100", "5"], ["+0.100", "–", "+1.0%", "–", "1"],
              ["-0.0500", "[-0.0600, -0.0400]", "-5.0%", "0.790", "5"]]
    header, alignment, rows = _markdown_rows(comparison_markdown(pd.DataFrame(values, index=index,
                                                                              columns=list(COMPARISON_TITLES))))
    assert header == [*INDEX_TITLES, "Metric", *COMPARISON_TITLES]
    assert alignment == ["left"] * 5 + ["right"] * 5
    # "|" escaped (GitHub shows it), the newline a space; the repeated model, config, method and
    # parameters blank; every value as it was formatted ("0.790" keeps its zero)
    assert rows == [["VQ-VAE", "1", "Single decoder", r"a=20 \| β=1", "Reconstruction loss", *values[0]],
                    ["", "", "", "", "KL / VQ loss", *values[1]],
                    ["", "2", "Multidecoder", "two lines", "Reconstruction loss", *values[2]]]


def _tabular_rows(latex: str) -> tuple[str, list[str]]:
    spec = re.search(r"\\begin\{tabular\}\{([^}]*)\}", latex).group(1)
    body = latex[latex.index(r"\toprule"):latex.index(r"\bottomrule")]
    lines = [line for line in body.splitlines() if line.strip().endswith(r"\\")]
    return spec, lines


def test_table_tex_is_a_booktabs_tabular_with_marks(report):
    _, out = report
    latex = (out / "table.tex").read_text()
    spec, lines = _tabular_rows(latex)
    assert len(spec) == 9  # Model, Config, Method, Parameters + 3 metrics + Epoch + n
    assert len(lines) == 1 + len(CONFIGS)  # one header row and one row per configuration
    assert all(line.count("&") == len(spec) - 1 for line in lines)
    assert lines[0].startswith(r"Model & Config & Method & Parameters & \shortstack{Reconstruction\\loss}")
    assert r"\multirow" in latex and r"\midrule" in latex and r"\bfseries" in latex
    assert r"$^\dagger$" in latex and "Nadeau" in latex and "±" not in latex and "_" not in latex
    # A variance's exponent has a minus sign, as the comparison's numbers have.
    assert "e$-$0" in latex and "e-0" not in latex
    # pdflatex before 2020 (or without UTF-8 input) stops at a raw ×, … or –
    assert latex.isascii() and (out / "comparison.tex").read_text().isascii()
    # the suite's own labels: two suites' tables can go into one document
    assert r"\label{tab:demo-cross-validation}" in latex
    assert r"\label{tab:demo-comparison}" in (out / "comparison.tex").read_text()


def test_table_tex_compiles_when_pdflatex_is_available(report, tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not on PATH")
    _, out = report
    document = tmp_path / "doc.tex"
    document.write_text("\\documentclass{article}\n\\usepackage{booktabs,multirow}\n\\begin{document}\n"
                        + (out / "table.tex").read_text() + "\\end{document}\n")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", document.name],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout[-2000:]


def test_table_md_shows_the_same_numbers_and_marks(report):
    _, out = report
    table = pd.read_csv(out / "table.csv")
    markdown = (out / "table.md").read_text()
    latex = (out / "table.tex").read_text()
    for line in table.itertuples():
        assert format_mean_var(line.recon_mean, line.recon_var) in markdown
        assert format_mean_var(line.latent_mean, line.latent_var) in markdown
    significant = int(table["recon_significant"].fillna(False).astype(bool).sum()
                      + table["latent_significant"].fillna(False).astype(bool).sum())
    assert significant > 0
    assert markdown.count("†") - 1 == latex.count(r"$^\dagger$") - 1 == significant  # minus the footnote
    # The best reconstruction per model config (the latent column is not ranked); each conditioned
    # decoder here observes its own number of pixels.
    assert markdown.count("**") // 2 == latex.count(r"\bfseries") == 2
    best = table[table["family"] == "vq-vae"].sort_values("recon_mean").iloc[0]
    assert f"**{format_mean_var(best.recon_mean, best.recon_var)}†**" in markdown
    header, alignment, rows = _markdown_rows(markdown)
    assert header == [*INDEX_TITLES, "Reconstruction loss", "KL / VQ loss", "Conditioned reconstruction", "Epoch", "n"]
    assert alignment == ["left"] * 4 + ["right"] * 5 and len(rows) == len(CONFIGS)
    assert all(row[-2:] == ["3", "5"] for row in rows)  # every fold kept epoch 3 of 3
    # a model and its config are named where their group starts, and left blank in the rows below
    assert [row[:2] for row in rows] == [["Gaussian VAE", "1"], ["", ""], ["", ""], ["VQ-VAE", "1"], ["", ""], ["", ""]]


def test_the_tables_show_the_epochs_the_folds_kept(rows):
    """A comparison of rows that kept other epochs is one of training lengths too: the tables show it."""
    rows = rows.copy()
    rows.loc[(rows["config_id"] == "vq-vae/1/baseline") & (rows["fold"] < 1), "best_epoch"] = 1  # 1, 3, 3, 3, 3
    table = build_table(SuiteResults("demo", rows, None, {"folds": FOLDS}))
    assert display_table(table)[0]["Epoch"].to_list() == ["3", "3", "3", "1–3", "3", "3"]
    assert "Epoch: the epochs the folds kept, lowest–highest" in markdown_table(table)


def test_the_tables_show_each_models_weights_when_the_export_knows_its_images(tmp_path, rows):
    results = write_suite(tmp_path / "results", rows, image_size=32, image_channels=1)
    write_report(results, "demo", tmp_path / "out", figures=False)
    table = pd.read_csv(tmp_path / "out" / "table.csv").set_index("config_id")
    for config_id, family, config, method, *_ in CONFIGS:
        assert table.loc[config_id, "weights"] == weight_count(family, config, method, 1, 32)
    assert table.loc["vae/1/baseline", "weights"] < table.loc["vae/1/single/uniform/a=40", "weights"]
    markdown = (tmp_path / "out" / "table.md").read_text()
    header, _, cells = _markdown_rows(markdown)
    assert header[-3:] == ["Weights", "Epoch", "n"]
    assert cells[0][-3:] == ["1.13M", "3", "5"]  # Gaussian VAE 1 baseline: 1,127,617 weights
    assert "Weights: the model's trainable weights" in markdown
    assert "Weights" in (tmp_path / "out" / "table.tex").read_text()
    # An export without the image channels (older runs): no column, rather than a guess.
    assert build_table(SuiteResults("demo", rows, None, {"folds": FOLDS, "image_size": 32}))["weights"].isna().all()


def test_the_report_warns_of_folds_still_improving_and_of_softadapt_that_never_reweighted(tmp_path, rows, capsys):
    from benchmark.cli import main

    # Every fold kept its last epoch (3 of 3); 400 images at batch 32 are 13 steps an epoch, 39 in
    # all, and SoftAdapt first re-weights after 100.
    results = write_suite(tmp_path / "results", rows, batch_size=32)
    assert main(["report", "--suite", "demo", "--results-dir", str(results), "--reports-dir", str(tmp_path / "out"),
                 "--no-figures"]) == 0
    out = capsys.readouterr().out
    index = (tmp_path / "out" / "demo" / "index.md").read_text()
    still = "30 of 30 folds kept their last epoch (3): the validation loss was still falling"
    idle = ("SoftAdapt re-weights every 100 steps, but a fold trains only 39 steps here (3 epochs of 400 images "
            "at batch 32): its configurations keep uniform weights, so their rows measure uniform weighting")
    assert "## Caveats" in index and still in index and idle in index
    assert f"  caveat: {still}" in out and f"  caveat: {idle}" in out
    # A model config still improving is named though the others converged and it is no majority of the suite.
    converged = rows.assign(best_epoch=rows["best_epoch"].where(rows["family"] == "vae", 2))
    write_report(write_suite(tmp_path / "mixed", converged, batch_size=4), "demo", tmp_path / "mixed-out", figures=False)
    assert (rows["family"] == "vae").sum() * 2 <= len(rows)
    assert (f"{(rows['family'] == 'vae').sum()} of {(rows['family'] == 'vae').sum()} folds of vae/1 kept their last "
            "epoch (3): the validation loss was still falling when training stopped, so those models are not "
            "converged") in (tmp_path / "mixed-out" / "index.md").read_text()
    # So is one configuration still improving beside its model config's others that peaked earlier.
    single = rows["config_id"] == "vq-vae/1/single/gaussian/a=20"
    write_report(write_suite(tmp_path / "one", rows.assign(best_epoch=rows["best_epoch"].where(single, 2)),
                             batch_size=4), "demo", tmp_path / "one-out", figures=False)
    index = (tmp_path / "one-out" / "index.md").read_text()
    assert (f"{single.sum()} of {single.sum()} folds of vq-vae/1/single/gaussian/a=20 kept their last epoch (3): "
            "the validation loss was still falling when training stopped, so those models are not converged and "
            "longer training (`--epochs`) would change these numbers; their comparison with rows that peaked "
            "earlier partly measures the training they still lacked, and no row of this report compares with the "
            "thesis's table.") in index
    # Methods without their baseline are not compared, and the report says why.
    write_report(write_suite(tmp_path / "alone", rows[rows["config_id"] != "vq-vae/1/baseline"], batch_size=4),
                 "demo", tmp_path / "alone-out", figures=False)
    assert ("no baseline of vq-vae/1 in these results, so the methods there are not compared with one: list "
            "`vq-vae/1/baseline` in the suite") in (tmp_path / "alone-out" / "index.md").read_text()
    # Two folds: a test with one degree of freedom.
    two = write_suite(tmp_path / "two", rows[rows["fold"] < 2].assign(best_epoch=2), folds=2)
    write_report(two, "demo", tmp_path / "two-out", figures=False)
    assert "each comparison pairs only 2 folds, so its t-test has 1 degree of freedom" in \
        (tmp_path / "two-out" / "index.md").read_text()
    # Folds that peaked before their last epoch, and longer training: nothing to say.
    settled = rows.assign(best_epoch=2)
    write_report(write_suite(tmp_path / "settled", settled, batch_size=4), "demo", tmp_path / "ok", figures=False)
    assert "Caveats" not in (tmp_path / "ok" / "index.md").read_text()


def _pairing_caveat(rows: pd.DataFrame, **meta) -> str | None:
    """The caveat on few paired folds of these rows (3 folds planned unless ``meta`` says otherwise)."""
    notes = caveats(SuiteResults("demo", rows, None, {"folds": 3, **meta}))
    return next((note for note in notes if "t-test" in note), None)


def test_the_few_folds_caveat_counts_the_folds_that_comparisons_really_pair(rows):
    three = rows[rows["fold"] < 3].assign(best_epoch=2)
    methods = three["method"] != "baseline"
    # No method has a fold done (e.g. all diverged): nothing was compared, so nothing to say of a test.
    assert _pairing_caveat(three.assign(state=np.where(methods, "FAIL", "COMPLETE"))) is None
    assert _pairing_caveat(three).startswith("each comparison pairs only 3 folds, so its t-test has 2 degrees")
    # Missing folds: the pairs actually made, of those planned.
    short = three[~(methods & (three["fold"] == 2))]
    assert _pairing_caveat(short).startswith(
        "each comparison pairs only 2 folds of the 3 planned (missing.txt says why the others are missing), so "
        "its t-test has 1 degree of freedom")
    uneven = three[~((three["config_id"] == "vae/1/single/uniform/a=40") & (three["fold"] == 2))]
    assert _pairing_caveat(uneven).startswith("a comparison pairs as few as 2 folds of the 3 planned")
    lone = three[~(methods & (three["fold"] > 0))]
    assert _pairing_caveat(lone).startswith("each comparison pairs only 1 fold of the 3 planned (missing.txt says why "
                                            "the others are missing), so it has no t-test")
    # Five folds planned: only the missing ones weaken the test, and more folds are no remedy.
    five = rows[~((rows["method"] != "baseline") & (rows["fold"] >= 3))]
    note = _pairing_caveat(five, folds=5)
    assert note.startswith("each comparison pairs only 3 folds of the 5 planned") and "--" not in note
    assert _pairing_caveat(rows, folds=5) is None
    # Repeats already in use: the advice says more of them, not to start using them.
    repeated = rows[rows["fold"] < 4]
    assert _pairing_caveat(repeated, folds=2, repeats=2) == (
        "each comparison pairs only 4 folds, so its t-test has 3 degrees of freedom: it rarely detects a real "
        "difference and rests on a rough variance estimate; more folds (`--folds`, 5 by default) or more than 2 "
        "`--repeats` give a steadier test.")
    assert "or `--repeats` give" in _pairing_caveat(three)


def test_folds_that_diverged_without_overflowing_are_named_in_the_caveats(tmp_path, rows):
    # Healthy folds of a model config stay within an order of magnitude: no caveat.
    assert not any("diverged" in note for note in caveats(SuiteResults("demo", rows, None, {"folds": FOLDS})))
    blown = rows.copy()
    baseline = blown["config_id"] == "vae/1/baseline"
    blown.loc[baseline & (blown["fold"] == 1), "latent"] = 8.0065e12
    blown.loc[(blown["config_id"] == "vq-vae/1/multidecoder/uniform") & (blown["fold"] == 3), "latent"] = 90.0
    summary = write_report(write_suite(tmp_path / "results", blown, lr=0.1), "demo", tmp_path / "out", figures=False)
    note = next(note for note in summary.caveats if "diverged" in note)
    assert note.startswith("folds that look diverged though their loss stayed finite: vae/1/baseline fold 1 (2nd of "
                           "5): validation KL 8.01e+12; vq-vae/1/multidecoder/uniform fold 3 (4th of 5): validation "
                           "VQ loss 90. "
                           "A fold looks diverged when a metric is over 1,000 × the median of its model config's "
                           "folds.")
    assert note.endswith("a lower learning rate (`[train] lr` in a suite file; 0.1 here) usually keeps training "
                         "stable.")
    assert f"- {note}" in (tmp_path / "out" / "index.md").read_text()
    # Reported, not dropped: the statistics still count the fold.
    table = pd.read_csv(tmp_path / "out" / "table.csv").set_index("config_id")
    assert table.loc["vae/1/baseline", "n"] == FOLDS
    assert table.loc["vae/1/baseline", "latent_mean"] == pytest.approx(blown.loc[baseline, "latent"].mean())
    # Every fold of a model config diverged (lr 0.1): the median cannot tell, the image's size can.
    pair = rows[(rows["config_id"] == "vae/1/baseline") & (rows["fold"] < 2)].assign(latent=[8.0065e12, 6.3191e10])
    flagged = [note for note in caveats(SuiteResults("demo", pair, None, {"folds": 2, "image_channels": 1,
                                                                         "image_size": 32})) if "diverged" in note]
    assert flagged and "vae/1/baseline fold 0 (1st of 2): validation KL 8.01e+12; vae/1/baseline fold 1 (2nd of " \
                       "2): validation KL 6.32e+10" in flagged[0]
    assert "KL is above 5,678 nats (more than storing the 1×32×32 8-bit image verbatim costs)" in flagged[0]
    assert not any("diverged" in note for note in caveats(SuiteResults("demo", pair, None, {"folds": 2})))


def test_a_model_config_whose_median_is_zero_has_no_fold_looking_diverged(rows):
    # 1,000 × a zero median would flag every fold above zero: a VQ loss of 0.001 is no divergence.
    still = rows.copy()
    vq = still["family"] == "vq-vae"
    still.loc[vq, "latent"] = 0.0
    still.loc[vq & (still["fold"] == 0), "latent"] = 1e-3
    assert not any("diverged" in note for note in caveats(SuiteResults("demo", still, None, {"folds": FOLDS})))


def test_conditioned_reconstruction_is_ranked_only_among_rows_observing_as_many_pixels(rows):
    uniform = rows[rows["config_id"] == "vq-vae/1/multidecoder/uniform"]
    exact = uniform.assign(config_id="vq-vae/1/multidecoder/exact", sampling="exact",
                           recon_cond=uniform["recon_cond"] * 0.8)
    table = build_table(SuiteResults("demo", pd.concat([rows, exact]), None, {"folds": FOLDS}))
    bold = display_table(table)[1]["Conditioned reconstruction"].to_numpy()
    assert dict(zip(table["config_id"], bold)) == {
        **{c: False for c in table["config_id"]}, "vq-vae/1/multidecoder/exact": True}


# ---------------------------------------------------------------- figures

@pytest.mark.filterwarnings("ignore:No artists with labels")  # the stub below draws nothing
def test_curves_tell_a_second_baseline_from_the_plain_one(tmp_path, rows, monkeypatch):
    other = rows[rows["config_id"] == "vae/1/baseline"].assign(config_id="vae/1/baseline/w=1,1,0.5", beta=0.5)
    results = pd.concat([rows, other], ignore_index=True)
    drawn = []
    monkeypatch.setattr("benchmark.figures._plot_configuration",
                        lambda axes, columns, runs, label, color, style, epochs: drawn.append((label, style)))
    validation_curves(make_history(results), results, tmp_path)
    assert {("baseline", "--"), ("baseline: W₁=1, β=0.5", ":")} <= set(drawn)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return blobs(32, [(0, 0), (0.4, -0.3), (-0.3, 0.4)])


def test_write_report_draws_every_figure(tmp_path, rows, images, monkeypatch):
    rows = rows.copy()
    rows["checkpoint"] = "ckpt/" + rows["config_id"]
    models = {}

    def load_model(path: str):  # stands in for benchmark.export.load_checkpoint(path)[0]
        family, config, method = path.removeprefix("ckpt/").split("/")[:3]
        torch.manual_seed(0)
        models[path] = build_model(family, int(config), method).eval()
        return models[path]

    results = write_suite(tmp_path / "results", rows)
    summary = write_report(results, "demo", tmp_path / "out", images=images, load_model=load_model)
    names = {p.name for p in summary.files}
    for family in ("vae_1", "vq-vae_1"):
        for method in ("multidecoder", "single"):
            assert {f"curves_{family}_{method}.png", f"curves_{family}_{method}.pdf"} <= names
    assert {"sampling_types.png", "sampling_types.pdf"} <= names
    assert sum(n.startswith("reconstruction_") and n.endswith(".png") for n in names) == len(CONFIGS)
    assert sum(n.startswith("error_vs_observed_") and n.endswith(".png") for n in names) == 4  # conditioned
    assert len(models) == len(CONFIGS) and not summary.warnings
    for path in summary.files:
        assert path.is_file()
        assert_figure(path)
    index = (tmp_path / "out" / "index.md").read_text()
    assert "[png](figures/curves_vae_1_single.png)" in index and "[`table.tex`](table.tex)" in index
    assert "[`comparison.md`](comparison.md)" in index
    drawn = {kind: text for kind, text in FIGURE_KINDS.items() if kind not in ("generated_", "optuna/")}  # no prior, search
    assert all(text in index for text in drawn.values())
    def damaged(path: str):  # as torch.load(weights_only=True) refuses a file that is not a checkpoint
        raise pickle.UnpicklingError("Weights only load failed")

    summary = write_report(results, "demo", tmp_path / "out", images=images, load_model=damaged)
    assert (f"vae/1/baseline: no checkpoint figures from {Path('ckpt/vae/1/baseline')} (UnpicklingError: "
            "Weights only load failed)") in summary.warnings
    # Interrupted while it draws: the earlier report stays whole, and nothing of the new one is left.
    before = {path: path.read_bytes() for path in (tmp_path / "out").rglob("*") if path.is_file()}
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("benchmark.figures.validation_curves", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_report(results, "demo", tmp_path / "out", images=images, load_model=load_model)
    assert {path: path.read_bytes() for path in (tmp_path / "out").rglob("*") if path.is_file()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out", "results"]
    # Tables only, later: the earlier figures go rather than stay unlisted and stale.
    (tmp_path / "out" / "figures" / "mine.png").write_bytes(b"not ours")
    write_report(results, "demo", tmp_path / "out", figures=False)
    assert [p.name for p in (tmp_path / "out" / "figures").iterdir()] == ["mine.png"]
    (tmp_path / "out" / "figures" / "mine.png").rename(tmp_path / "out" / "figures" / "sampling_types.png")  # ours
    write_report(results, "demo", tmp_path / "out", figures=False)
    assert not (tmp_path / "out" / "figures").exists()  # no empty folder left where the figures were


def test_figure_functions_check_their_model(tmp_path, images):
    baseline = build_model("vae", 1, "baseline")
    paths = reconstruction_grid(baseline, images, None, tmp_path / "grid.png")
    assert [p.name for p in paths] == ["grid.png", "grid.pdf"]
    for path in paths:
        assert_figure(path)
    with pytest.raises(ValueError, match="no conditioned decoder"):
        error_vs_observed(baseline, images, "uniform", tmp_path / "err")
    with pytest.raises(ValueError, match="mask sampler"):
        reconstruction_grid(build_model("vae", 1, "multidecoder"), images, None, tmp_path / "grid2")


# ---------------------------------------------------------------- partial and unknown suites

def test_partial_suite_reports_what_is_there_and_lists_the_missing_units(tmp_path, rows):
    partial = rows[~((rows["config_id"] == "vae/1/single/uniform/a=40") & (rows["fold"] >= 3))].copy()
    partial.loc[partial["config_id"] == "vae/1/single/uniform/a=40", "recon"] *= 0.5  # the lowest
    failed = rows[(rows["config_id"] == "vae/1/single/uniform/a=40") & (rows["fold"] == 3)].copy()
    failed[["state", "error", "recon", "latent"]] = ["FAIL", "loss diverged at epoch 2", np.nan, np.nan]
    partial = pd.concat([partial, failed], ignore_index=True)
    expected = [c[0] for c in CONFIGS] + ["vq-vae/2/baseline"]  # never started
    results = write_suite(tmp_path / "results", partial, configurations=expected)
    summary = write_report(results, "demo", tmp_path / "out", figures=False)

    assert not summary.complete
    missing = {m.config_id: m for m in summary.missing}
    assert set(missing) == {"vae/1/single/uniform/a=40", "vq-vae/2/baseline"}
    assert (missing["vae/1/single/uniform/a=40"].complete, missing["vae/1/single/uniform/a=40"].expected) == (3, 5)
    assert missing["vae/1/single/uniform/a=40"].failed == ((3, "loss diverged at epoch 2"),)
    text = (tmp_path / "out" / "missing.txt").read_text()
    assert "3/5 folds complete" in text and "fold 3 FAIL: loss diverged at epoch 2" in text
    assert "vq-vae/2/baseline: 0/5 folds complete; not in the results" in text
    table = pd.read_csv(tmp_path / "out" / "table.csv").set_index("config_id")
    assert table.loc["vae/1/single/uniform/a=40", "n"] == 3
    kept = partial[(partial["config_id"] == "vae/1/single/uniform/a=40") & (partial["state"] == "COMPLETE")]
    assert table.loc["vae/1/single/uniform/a=40", "recon_var"] == pytest.approx(kept["recon"].var(ddof=0))
    assert table.loc["vae/1/single/uniform/a=40", "recon_n_pairs"] == 3
    index = (tmp_path / "out" / "index.md").read_text()
    assert "Missing (2 configurations)" in index
    assert "configurations complete (the others: Missing, at the end).\n" in index  # said before the long tables
    assert not table.loc["vae/1/single/uniform/a=40", "complete"] and table["complete"].sum() == len(CONFIGS) - 1
    row = next(line for line in (tmp_path / "out" / "table.md").read_text().splitlines() if "a=40" in line)
    assert "**" not in row  # the lowest reconstruction, but over 3 folds: not ranked against means over 5


def test_a_partial_report_draws_and_lists_no_curves_of_a_method_with_no_fold_done(tmp_path, rows, images):
    vae = rows[rows["family"] == "vae"]
    waiting = vae.assign(state=np.where(vae["method"] == "baseline", "COMPLETE", "WAITING"))
    results = write_suite(tmp_path / "results", waiting, configurations=list(vae["config_id"].unique()))
    summary = write_report(results, "demo", tmp_path / "out", images=images, checkpoints=False)
    curves = sorted(p.name for p in summary.files if p.name.startswith("curves_"))
    assert curves == ["curves_vae_1_baseline.pdf", "curves_vae_1_baseline.png"]
    index = (tmp_path / "out" / "index.md").read_text()
    assert "curves_vae_1_baseline" in index and "curves_vae_1_multidecoder" not in index
    assert "curves_vae_1_single" not in index and not (tmp_path / "out" / "figures" / "curves_vae_1_single.png").exists()


def test_unknown_suite_raises_a_one_line_error_and_writes_nothing(tmp_path, rows):
    results = write_suite(tmp_path / "results", rows)
    with pytest.raises(ReportError, match="no results for suite 'nope'.*suites with results: demo") as error:
        write_report(results, "nope", tmp_path / "out")
    assert "\n" not in str(error.value) and isinstance(error.value, ValueError)
    assert not (tmp_path / "out").exists()
    # a typo gets the name it was meant for; a built-in suite not run yet, the command that runs it here
    with pytest.raises(ReportError, match=r"^no results for suite 'dem' \(did you mean 'demo'\?\) in .*; suites with "
                                          "results: demo$"):
        write_report(results, "dem", tmp_path / "out")
    with pytest.raises(ReportError, match=f"run it first: `python -m benchmark run --suite smoke --results-dir {results}`"):
        write_report(results, "smoke", tmp_path / "out")
    # a list, as --objectives takes one, was answered with `run --name 'demo,smoke'`, a name run refuses
    with pytest.raises(ReportError, match=r"^no results for suite 'demo,smoke' in .*\): --suite names one suite$"):
        write_report(results, "demo,smoke", tmp_path / "out")


@pytest.mark.parametrize("content, message", [
    ("", "suite 'demo' has no results yet ({csv} is empty)"),
    ("header-only", "suite 'demo' has no results yet ({csv} holds no rows)"),
    ("all-failed", f"suite 'demo' has no completed units yet ({len(CONFIGS) * FOLDS} FAIL); first error: CUDA out of "
                   "memory; a rerun would fail them again: train the suite with other settings under a --name of its "
                   "own (a lower lr in a suite file, for a loss that diverged)")])
def test_empty_suite_raises(tmp_path, rows, content, message):
    results = tmp_path / "results"
    results.mkdir()
    if content == "":
        (results / "demo.csv").write_text("")
    elif content == "header-only":
        rows.iloc[:0].to_csv(results / "demo.csv", index=False)
    else:
        failed = rows.assign(state="FAIL", error="CUDA out of memory")
        failed.to_csv(results / "demo.csv", index=False)
    with pytest.raises(ReportError) as raised:
        write_report(results, "demo", tmp_path / "out")
    assert str(raised.value) == message.format(csv=results / "demo.csv")
    assert not (tmp_path / "out").exists()


def test_rows_with_the_same_label_stay_apart(tmp_path, rows):
    # SoftAdapt variants differ only in the config id: the label alone would not tell them apart
    twin = rows[rows["config_id"] == "vae/1/multidecoder/exact/softadapt"].assign(
        config_id="vae/1/multidecoder/exact/softadapt-normalized")
    results = write_suite(tmp_path / "results", pd.concat([rows, twin], ignore_index=True),
                          configurations=[c[0] for c in CONFIGS] + [twin["config_id"].iloc[0]])
    write_report(results, "demo", tmp_path / "out", figures=False)
    _, lines = _tabular_rows((tmp_path / "out" / "table.tex").read_text())
    assert len(lines) == 2 + len(CONFIGS)
    assert r"exact, SoftAdapt (vae/1/multidecoder/exact/softadapt-normalized)" in lines[3]
    assert "exact, SoftAdapt (vae/1/multidecoder/exact/softadapt-normalized)" in (tmp_path / "out" / "table.md").read_text()


def test_a_softadapt_beta_other_than_the_family_default_is_in_the_label():
    row = {"family": "vq-vae", "method": "multidecoder", "sampling": "uniform", "softadapt": True}
    assert parameter_text({**row, "softadapt_beta": 5e-3}) == "uniform, SoftAdapt"  # the VQ-VAE default
    assert parameter_text({**row, "softadapt_beta": 0.01}) == "uniform, SoftAdapt β=0.01"
    assert parameter_text({**row, "softadapt_beta": 0.01, "variant": "normalized"}) == "uniform, SoftAdapt (normalized) β=0.01"
    assert parameter_text({**row, "variant": "loss-weighted"}) == "uniform, SoftAdapt"  # the thesis's: not named


def test_beta_is_in_the_label_when_it_is_not_the_familys():
    row = {"method": "baseline", "w1": 1.0, "w2": 1.0}
    assert parameter_text({**row, "family": "vq-vae", "beta": 0.25}) == "–"
    assert parameter_text({**row, "family": "vq-vae", "beta": 1.0}) == "W₁=1, β=1"  # the two weights it trains with
    assert parameter_text({**row, "family": "vae", "beta": 1.0}) == "–"
    assert parameter_text({**row, "family": "vae", "w1": 2.0}) == "W₁=2, β=1"  # a baseline trains with W1 too
    balanced = {"family": "vq-vae", "method": "multidecoder", "sampling": "uniform", "softadapt": True,
                "softadapt_beta": 5e-3}
    assert parameter_text({**balanced, "beta": 0.25}) == "uniform, SoftAdapt"
    assert parameter_text({**balanced, "beta": 1.0}) == "uniform, SoftAdapt, β=1"


def test_parameters_from_a_search_are_labelled_tuned():
    row = {"family": "vae", "method": "single", "sampling": "gaussian", "exponent": 35.2, "w1": 1.0, "beta": 0.4}
    assert parameter_text({**row, "params_from": "search-vae-1"}) == "gaussian, a=35.2, W₁=1, β=0.4, tuned"
    assert parameter_text({**row, "params_from": float("nan")}) == "gaussian, a=35.2, W₁=1, β=0.4"


def test_configurations_no_better_than_the_mean_image_get_a_caveat(rows):
    blank = rows.assign(recon_mean_image=np.where(rows["config_id"] == "vae/1/baseline", rows["recon"] - 0.01,
                                                  rows["recon"] + 0.01))
    blank.loc[(blank["config_id"] == "vae/1/baseline") & (blank["fold"] == 0), "recon_mean_image"] = np.nan
    notes = [n for n in caveats(SuiteResults("demo", blank, None, {"folds": FOLDS})) if "mean training image" in n]
    baseline = blank[(blank["config_id"] == "vae/1/baseline") & (blank["fold"] > 0)]
    assert notes == [f"configurations that reconstruct no better than the mean training image does (its per-pixel "
                     f"MSE as every validation image's reconstruction): vae/1/baseline "
                     f"({baseline['recon'].mean():.4f} ≥ {baseline['recon_mean_image'].mean():.4f}); they learnt "
                     "nothing of each image, so their rows and comparisons say little: train longer (`--epochs`)."]
    assert not any("mean training image" in n for n in caveats(SuiteResults("demo", rows, None, {"folds": FOLDS})))


def test_vq_vae_configurations_without_a_prior_get_a_caveat_that_says_what_fits_them(rows):
    # their Prior NLL was – with no word why: a prior stage stopped before them, or their fold of the priors not done
    vq = [config[0] for config in CONFIGS if config[1] == "vq-vae"]
    settings = {"epochs": 25, "batch_size": 128, "lr": 1e-3, "hidden": 32, "layers": 4, "kernel": 5}
    prior = pd.DataFrame({"config_id": [vq[0]], "fold": [1], "val_nll_nats": [3.0],
                          **{key: [value] for key, value in settings.items()}})
    unfinished = (rows["config_id"] == vq[2]) & (rows["fold"] == 1)
    short = rows.assign(state=np.where(unfinished, "FAIL", rows["state"]))

    def notes(left_out: frozenset[str] = frozenset()) -> list[str]:
        suite = SuiteResults("demo", short, None, {"folds": FOLDS}, prior, priors_left_out=left_out)
        return [note for note in caveats(suite) if "without a prior" in note]

    flags = "--fold 1 --epochs 25 --batch-size 128 --lr 0.001 --hidden 32 --layers 4 --kernel 5"
    assert notes() == [
        f"VQ-VAE configurations without a prior, so with no Prior NLL (–): {vq[1]}; the prior stage stopped before "
        f"them or was not asked for them. `python -m benchmark prior --suite demo --config {vq[1]} {flags}` fits them "
        "with the settings of the other priors.",
        f"VQ-VAE configurations without a prior, so with no Prior NLL (–), whose fold 1 (the one every prior is fitted "
        f"on) is not done: {vq[2]}; run the suite again to finish it, then `python -m benchmark prior --suite demo "
        f"--config {vq[2]} {flags}`."]
    # an earlier version's rows record no settings, which a prior made now could share: every prior again
    prior = prior.drop(columns=list(settings))
    assert notes()[0].endswith("`python -m benchmark prior --suite demo` fits them, and the others again: those "
                               "record no one set of settings that a new prior could share.")
    assert notes()[1].endswith("run the suite again to finish it, then `python -m benchmark prior --suite demo`.")
    # one whose prior was left out is named there, with what to do: not again here
    assert not any(vq[1] in note for note in notes(frozenset({vq[1]})))


def test_a_baseline_without_a_fold_done_gets_a_caveat(rows):
    # Its methods' comparisons were left out of the report without a word, though bold still ranked them.
    failed = rows.assign(state=np.where(rows["config_id"] == "vae/1/baseline", "FAIL", rows["state"]))
    notes = [n for n in caveats(SuiteResults("demo", failed, None, {"folds": FOLDS})) if "no fold done" in n]
    assert notes == ["baseline vae/1/baseline has no fold done, so the methods of its model config are not compared "
                     "with it (missing.txt says why): run the suite again to train what is unfinished; a diverged one "
                     "is failed for good: train the suite with other settings (a lower `lr` in a suite file) under a "
                     "`--name` of its own."]
    assert not any("no fold done" in n for n in caveats(SuiteResults("demo", rows, None, {"folds": FOLDS})))


def test_units_trained_on_a_busy_machine_get_a_caveat_on_their_cost(rows):
    busy = rows.assign(busy_load=np.where(rows["fold"] == 0, 3.4, np.nan))
    notes = caveats(SuiteResults("demo", busy, None, {"folds": FOLDS}))
    assert (f"{len(CONFIGS)} of {len(rows)} units finished while other work kept the machine busy (load average up to "
            "3.4): their training times (`seconds` in the results, `seconds_mean` in table.csv) are high, so compare "
            "costs of units trained alone.") in notes
    assert not any("busy" in n for n in caveats(SuiteResults("demo", rows.assign(busy_load=np.nan), None,
                                                              {"folds": FOLDS})))


def test_folds_of_one_configuration_timed_far_apart_get_a_caveat_on_their_cost(rows):
    def unsteady(frame: pd.DataFrame) -> list[str]:
        notes = caveats(SuiteResults("demo", frame, None, {"folds": FOLDS}))
        return [note for note in notes if note.startswith("training times that differ")]

    # The load average at a unit's end missed it: one fold of vae/1/baseline took 14 times the others'.
    first = (rows["config_id"] == "vae/1/baseline") & (rows["fold"] == 0)
    slowed = rows.assign(seconds=np.where(first, 21.0, 1.5))
    assert unsteady(slowed) == [
        "training times that differ over 3× between folds of one configuration that did the same work: "
        "vae/1/baseline (1.5–21 s); something slowed some folds (other work on the machine, threads contending for "
        "its cores), so their costs (`seconds`, `seconds_mean`) are unreliable: time them again on an idle machine."]
    assert not unsteady(rows.assign(seconds=1.5 + 2.9 * (rows["fold"] == 0)))  # 4.4 against 1.5: under 3 times
    assert not unsteady(rows.assign(seconds=np.where(first, 1.3, 0.17)))  # a run's start-up in its first unit
    # Other work: another device, or an ensemble of five folds whose seconds are the ensemble's
    assert not unsteady(slowed.assign(device=np.where(first, "cpu", "cuda: NVIDIA H100 80GB HBM3")))
    assert not unsteady(slowed.assign(stacked=np.where(first, 5, 1)))
    assert unsteady(slowed.assign(device="cpu", stacked=pd.array([pd.NA] * len(slowed), dtype="Int64")))


def test_methods_and_a_baseline_not_tuned_alike_get_a_caveat(rows):
    def notes(tuned_methods: str, tuned_baseline: bool) -> list[str]:
        tuned = rows.assign(params_from=np.where(rows["config_id"].str.startswith(tuned_methods) &
                                                 (rows["method"] != "baseline"), "search-m", ""))
        if tuned_baseline:
            tuned.loc[tuned["config_id"] == "vq-vae/1/baseline", "params_from"] = "search-b"
        return [n for n in caveats(SuiteResults("demo", tuned, None, {"folds": FOLDS})) if "the tuning's" in n]

    assert notes("vq-vae/1/", False) == [
        "in vq-vae/1, methods took parameters from a search but the baseline they are compared with kept its "
        "defaults, so their differences mix the method's effect with the tuning's: search the baseline too "
        "(`search --method baseline`) and name both searches in `--params-from`, under a new `--name`."]
    assert notes("vq-vae/1/", True) == []  # tuned alike
    assert notes("nothing", False) == []
    assert notes("nothing", True) == [
        "in vq-vae/1, the baseline took parameters from a search but some methods compared with it kept their "
        "defaults, so their differences mix the method's effect with the tuning's: search those methods too and "
        "name every search in `--params-from`, under a new `--name`."]
    assert notes("vq-vae/1/single", True) == notes("nothing", True)  # one method left untuned is enough


def test_the_tables_warn_that_a_tuned_rows_test_is_optimistic(rows):
    plain = build_table(SuiteResults("demo", rows, None, {"folds": FOLDS}))
    tuned = rows.assign(params_from=np.where(rows["method"] == "single", "search-vq", ""))
    table = build_table(SuiteResults("demo", tuned, None, {"folds": FOLDS}))
    for text in (markdown_table(table), latex_table(table, "demo")):
        assert "test against the baseline are optimistic" in text
    for text in (markdown_table(plain), latex_table(plain, "demo")):
        assert "optimistic" not in text
    # and the comparison, which holds those tests
    assert "optimistic" in comparison_markdown(comparison_cells(table), comparison_note(table))
    assert "optimistic" in comparison_latex(comparison_cells(table), "demo", comparison_note(table))
    assert "optimistic" not in comparison_markdown(comparison_cells(plain), comparison_note(plain))
    assert "Baselines with" not in comparison_note(plain)
    # A tuned baseline is not a comparison's row, so the note names it: its differences mix two effects.
    baseline = (rows["method"] == "baseline") & (rows["family"] == "vae")
    tuned = rows.assign(params_from=np.where(baseline, "search-b", ""), beta=np.where(baseline, 0.146, rows["beta"]))
    note = comparison_note(build_table(SuiteResults("demo", tuned, None, {"folds": FOLDS})))
    assert ("Baselines with parameters of their own (Gaussian VAE 1: W₁=1, β=0.146, tuned): a difference from one "
            "mixes the method's effect with those parameters'.") in note
    # a second baseline beside the plain one is compared with it as a method is: it is no reference to name
    other = rows[rows["config_id"] == "vae/1/baseline"].assign(config_id="vae/1/baseline/w=1,1,0.5", beta=0.5)
    note = comparison_note(build_table(SuiteResults("demo", pd.concat([rows, other]), None, {"folds": FOLDS})))
    assert "Baselines with" not in note


def test_a_comparison_of_one_pair_has_no_interval(rows):
    one = rows[(rows["method"] != "single") | (rows["fold"] == 0)]
    cells = comparison_cells(build_table(SuiteResults("demo", one, None, {"folds": FOLDS})))
    lone = cells[cells["Folds"] == "1"]
    assert not lone.empty and (lone["95% interval"] == "–").all() and (lone["p (Holm)"] == "–").all()
    assert "nan" not in comparison_markdown(cells)


def test_a_multidecoder_given_the_default_count_is_ranked_with_one_that_leaves_it_implicit(rows):
    uniform = rows[rows["config_id"] == "vq-vae/1/multidecoder/uniform"]
    explicit = uniform.assign(config_id="vq-vae/1/multidecoder/uniform/k=49", count=49,
                              recon_cond=uniform["recon_cond"] * 0.8)
    both = pd.concat([rows, explicit])
    # 49 is the 7 × 7 grid of a 28-pixel image; without the image size the default is unknown.
    for size, observed in ((28, 49), (None, None)):
        table = build_table(SuiteResults("demo", both, None, {"folds": FOLDS, "image_size": size}))
        by_id = table.set_index("config_id")
        implicit = {"vae/1/multidecoder/exact/softadapt": 49, "vq-vae/1/multidecoder/uniform": 49}
        assert by_id["observed"].dropna().to_dict() == {"vq-vae/1/multidecoder/uniform/k=49": 49,
                                                        **(implicit if observed else {})}
        bold = dict(zip(table["config_id"], display_table(table)[1]["Conditioned reconstruction"]))
        assert bold["vq-vae/1/multidecoder/uniform/k=49"] is (observed is not None)
        assert not bold["vq-vae/1/multidecoder/uniform"]


def _links_hold(out: Path) -> bool:
    """Whether every file index.md links is there."""
    links = re.findall(r"\]\(([^)]+)\)", (out / "index.md").read_text())
    return bool(links) and all((out / link).is_file() for link in links)


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs a second file system (/dev/shm)")
def test_a_report_folder_linked_to_another_file_system_gets_its_report(tmp_path, rows, images):
    results = write_suite(tmp_path / "results", rows)
    elsewhere = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        (tmp_path / "out").symlink_to(elsewhere)
        for _ in range(2):  # the second replaces the first's files
            summary = write_report(results, "demo", tmp_path / "out", figures=False)
        assert sorted(path.name for path in elsewhere.iterdir()) == sorted([LOCK_FILE, *(p.name for p in summary.files)])
        assert sorted(path.name for path in tmp_path.iterdir()) == ["out", "results"]
        # Its figures folder alone on the other file system: copied there.
        (tmp_path / "out").unlink()
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "figures").symlink_to(elsewhere)
        summary = write_report(results, "demo", tmp_path / "out", images=images, checkpoints=False)
        assert all(path.is_file() for path in summary.files) and _links_hold(tmp_path / "out")
        assert any(path.name.startswith("curves_") for path in elsewhere.iterdir())
    finally:
        shutil.rmtree(elsewhere)


def test_a_report_that_cannot_be_moved_in_leaves_the_earlier_one_whole(tmp_path, rows, images, monkeypatch):
    results = write_suite(tmp_path / "results", rows)
    write_report(results, "demo", tmp_path / "out", images=images, checkpoints=False)
    move = shutil.move

    def read_only_figures(source, target):  # as a read-only figures/ refuses the new figures
        if Path(target).parent.name == "figures":
            raise PermissionError(13, "Permission denied", str(target))
        return move(source, target)

    monkeypatch.setattr("benchmark.report.shutil.move", read_only_figures)
    before = {path: path.read_bytes() for path in (tmp_path / "out").rglob("*") if path.is_file()}
    other = write_suite(tmp_path / "other", rows[rows["fold"] > 0])  # a report with other numbers
    with pytest.raises(PermissionError):
        write_report(other, "demo", tmp_path / "out", images=images, checkpoints=False)
    assert {path: path.read_bytes() for path in (tmp_path / "out").rglob("*") if path.is_file()} == before
    assert _links_hold(tmp_path / "out")  # the earlier index.md, and every file it links


def test_reports_of_one_folder_take_turns_and_a_killed_ones_staging_folder_goes(tmp_path, rows):
    results = write_suite(tmp_path / "results", rows)
    (tmp_path / "out" / ".partial-killed").mkdir(parents=True)  # as `kill -9` leaves it
    with FileLock(tmp_path / "out" / LOCK_FILE):  # another report, building now
        second = threading.Thread(target=write_report, args=(results, "demo", tmp_path / "out"),
                                  kwargs={"figures": False})
        second.start()
        second.join(2)
        assert second.is_alive() and not (tmp_path / "out" / "index.md").exists()  # it waits its turn
    second.join(60)
    assert not second.is_alive() and (tmp_path / "out" / "index.md").is_file()
    assert [path.name for path in (tmp_path / "out").iterdir() if path.name.startswith(".")] == [LOCK_FILE]


def test_ctrl_c_while_a_report_is_renamed_into_place_comes_once_every_file_is_in(tmp_path, monkeypatch):
    out, staging = tmp_path / "out", tmp_path / "staging"
    for path in (out / "index.md", out / "table.csv", out / "figures/curves_vae_1_single.png",
                 staging / "index.md", staging / "table.csv"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(path.parent.name)
    renamed, replace = [], os.replace

    def ctrl_c_at_the_first(source, target):
        if not renamed:
            os.kill(os.getpid(), signal.SIGINT)
        renamed.append(Path(target).name)
        replace(source, target)

    monkeypatch.setattr("benchmark.report.os.replace", ctrl_c_at_the_first)
    with pytest.raises(InterruptedOnceWritten, match=f"^interrupted once the report in {out} was written$"):
        _install(staging, out)
    assert renamed == ["table.csv", "index.md"]
    assert {path.relative_to(out).as_posix(): path.read_text() for path in out.rglob("*") if path.is_file()} == {
        "index.md": "staging", "table.csv": "staging"}  # the earlier report's figure is gone too
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C acts at once again


def test_installing_a_report_replaces_the_earlier_ones_files_and_keeps_the_users(tmp_path):
    out, staging = tmp_path / "out", tmp_path / "staging"
    for path in (out / "figures/optuna/kept/old_plot.png", out / "figures/optuna/gone/plot.png", out / "missing.txt",
                 out / "figures/curves_vae_1_single.png", out / "figures/mine.png", out / "notes.txt",
                 staging / "figures/optuna/kept/plot.png", staging / "index.md", staging / "table.csv"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(path.parent.name)
    _install(staging, out)
    assert sorted(path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file()) == [
        "figures/mine.png", "figures/optuna/kept/plot.png", "index.md", "notes.txt", "table.csv"]
    assert not (out / "figures/optuna/gone").exists() and not list(staging.rglob("*.*"))
