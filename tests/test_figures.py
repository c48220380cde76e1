"""Report figures: what they say (titles, labels, legends), what they measure, how they are saved."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import blobs
from matplotlib.figure import Figure
from tqdm import tqdm

from benchmark.conditioning import PixelSampler
from benchmark.figures import (CURVES_NOTE, UNOBSERVED, configuration_title, error_vs_observed, observed_error,
                               reconstruction_grid, sampling_types, save_figure, validation_curves)
from benchmark.models import build_model
from benchmark.prior import GatedPixelCNN, PriorConfig
from benchmark.prior_stage import draw_samples
from benchmark.report import _checkpoint_figures
from benchmark.results import SuiteResults

SIDE = 16  # the smallest images both families take: tests stay fast
GRID = PixelSampler("exact", SIDE).fixed_count  # 16 pixels on a 16 x 16 image


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return blobs(SIDE, [(0, 0), (0.4, -0.3), (-0.3, 0.4), (0.2, 0.2)])


def model(family: str, method: str):
    torch.manual_seed(0)
    return build_model(family, 1, method, 1, SIDE).eval()


@pytest.fixture
def saved(monkeypatch):
    """The figures the figure functions would save, by file name, instead of saving them."""
    figures: dict[str, Figure] = {}

    def capture(fig: Figure, stem: Path) -> list[Path]:
        figures[Path(stem).name] = fig
        return [Path(stem)]

    monkeypatch.setattr("benchmark.figures.save_figure", capture)
    return figures


def legend_texts(fig: Figure) -> list[str]:
    return [text.get_text() for text in fig.axes[0].get_legend().get_texts()]


# ---------------------------------------------------------------- validation curves

def curves_suite(exponents: tuple[float, ...], epochs: int = 4) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(history, results) of a baseline and one single decoder per exponent, 3 folds; fold f selects epoch 2 + f % 2."""
    results, history = [], []
    for i, exponent in enumerate((None, *exponents)):
        method = "baseline" if exponent is None else "single"
        config_id = "vae/1/baseline" if exponent is None else f"vae/1/single/uniform/a={exponent:g}"
        for fold in range(3):
            results.append({"config_id": config_id, "family": "vae", "config": 1, "method": method,
                            "sampling": "" if exponent is None else "uniform", "exponent": exponent, "fold": fold,
                            "state": "COMPLETE", "best_epoch": 2 + fold % 2})
            history += [{"config_id": config_id, "fold": fold, "epoch": epoch, "latent": 1 + 0.1 * (epoch + fold + i),
                         "recon": 1 / (epoch + fold + i)} for epoch in range(1, epochs + 1)]
    return pd.DataFrame(history), pd.DataFrame(results)


def test_curves_keep_the_legend_off_the_panels_and_mark_each_folds_selected_epoch(tmp_path, saved):
    history, results = curves_suite((10.0, 20.0, 30.0, 40.0))
    validation_curves(history, results, tmp_path)
    fig = saved["curves_vae_1_single"]
    assert [ax.get_legend() for ax in fig.axes] == [None, None] and len(fig.legends) == 1
    legend = fig.legends[0]
    assert legend.get_title().get_text() == CURVES_NOTE and "min–max over folds" in CURVES_NOTE
    assert [t.get_text() for t in legend.get_texts()] == [
        "baseline", *(f"Single decoder: uniform, a={a}" for a in (10, 20, 30, 40)), "selected epoch of a fold"]
    fig.canvas.draw()
    top = legend.get_window_extent().y1
    assert all(top <= ax.get_tightbbox().y0 for ax in fig.axes)  # below the panels and their labels
    for ax in fig.axes:
        assert ax.get_ylabel().startswith("validation ")
        crosses = [line for line in ax.get_lines() if line.get_marker() == "x" and len(line.get_xdata())]
        assert len(crosses) == 5 and all(list(line.get_xdata()) == [2, 3] for line in crosses)
        assert all(band.get_alpha() < 0.2 for band in ax.collections)  # five bands overlap
    assert [ax.get_title() for ax in fig.axes] == ["KL divergence", "reconstruction, empty mask (unconditioned)"]
    for ax, metric in zip(fig.axes, ("latent", "recon")):  # each line: the mean over the folds at each epoch
        (line,) = [line for line in ax.get_lines() if line.get_label() == "baseline"]
        mean = history[history["config_id"] == "vae/1/baseline"].groupby("epoch")[metric].mean()
        assert list(line.get_xdata()) == list(mean.index) and np.allclose(line.get_ydata(), mean.to_numpy())


def test_curves_add_the_conditioned_reconstruction_and_the_total_that_selects_the_epoch(tmp_path, saved):
    history, results = curves_suite((10.0,))
    single = history["config_id"] != "vae/1/baseline"
    # The total bottoms out at epoch 3, where the unconditioned reconstruction still falls; the single
    # decoder's is on a scale 100 times the baseline's.
    history = history.assign(recon_cond=(0.5 * history["recon"]).where(single),
                             total=((history["epoch"] - 3) ** 2 + 1 + history["fold"]) * np.where(single, 100, 1))
    validation_curves(history, results.assign(best_epoch=3), tmp_path)
    fig = saved["curves_vae_1_single"]
    assert [ax.get_title() for ax in fig.axes] == [
        "KL divergence", "reconstruction, empty mask (unconditioned)", "reconstruction, with its mask (conditioned)",
        "total (selects the epoch)"]
    assert len({ax.get_position().y0 for ax in fig.axes}) == 2  # a 2 × 2 grid, the thesis's two on top
    conditioned, total = fig.axes[2], fig.axes[3]
    # No baseline curve where the baseline has no conditioned decoder.
    assert [line.get_label() for line in conditioned.get_lines() if line.get_marker() == "o"] == [
        "Single decoder: uniform, a=10"]
    (line,) = [line for line in conditioned.get_lines() if line.get_marker() == "o"]
    assert np.allclose(line.get_ydata(), 0.5 * history[single].groupby("epoch")["recon"].mean().to_numpy())
    # Each fold's total as a multiple of its lowest: both methods' curves on one scale, 1 where the folds selected.
    assert total.get_ylabel() == "validation total ÷ its fold's lowest"
    curves = {line.get_label(): line.get_ydata() for line in total.get_lines() if line.get_marker() == "o"}
    assert list(curves) == ["baseline", "Single decoder: uniform, a=10"]
    expected = [np.mean([((e - 3) ** 2 + 1 + f) / (1 + f) for f in range(3)]) for e in range(1, 5)]
    assert all(np.allclose(ydata, expected) for ydata in curves.values())
    crosses = [line for line in total.get_lines() if line.get_marker() == "x" and len(line.get_xdata())]
    assert len(crosses) == 2 and all(list(x.get_xdata()) == [3] and list(x.get_ydata()) == [1.0] for x in crosses)
    saved.clear()
    validation_curves(history[~single], results[results["method"] == "baseline"], tmp_path)
    baseline = saved["curves_vae_1_baseline"]
    assert [ax.get_title() for ax in baseline.axes] == ["KL divergence", "reconstruction", "total (selects the epoch)"]
    assert baseline.get_size_inches().tolist() == fig.get_size_inches().tolist()  # three panels: the grid of four


def test_a_method_with_no_fold_done_gets_no_curves_and_the_baseline_keeps_its_own(tmp_path, saved):
    history, results = curves_suite((10.0,))
    single = results["method"] == "single"
    validation_curves(history, results.assign(state=results["state"].where(~single, "FAIL")), tmp_path)
    # Not "Single decoder vs baseline" with the baseline alone in it: the baseline's curves, so named.
    assert list(saved) == ["curves_vae_1_baseline"]
    assert saved["curves_vae_1_baseline"].get_suptitle() == "Gaussian VAE 1: validation curves"
    assert [t.get_text() for t in saved["curves_vae_1_baseline"].legends[0].get_texts()][:-1] == ["baseline"]
    saved.clear()
    # The baseline with no fold done: the method's curves alone, not said to be against a baseline.
    validation_curves(history, results.assign(state=results["state"].where(single, "FAIL")), tmp_path)
    assert list(saved) == ["curves_vae_1_single"]
    assert saved["curves_vae_1_single"].get_suptitle() == "Gaussian VAE 1 · Single decoder: validation curves"
    assert [t.get_text() for t in saved["curves_vae_1_single"].legends[0].get_texts()][:-1] == [
        "Single decoder: uniform, a=10"]


# ---------------------------------------------------------------- error vs observed pixels

def test_the_x_axis_counts_distinct_pixels_which_gaussian_draws_repeat(images):
    counts = [0, 4, 64, 256]
    gaussian = observed_error(model("vq-vae", "multidecoder"), images, "gaussian", counts)
    uniform = observed_error(model("vq-vae", "multidecoder"), images, "uniform", counts)
    assert list(gaussian["count"]) == counts and (gaussian["sampling"] == "gaussian").all()
    assert (gaussian["distinct_pixels"] <= gaussian["count"]).all()
    assert (gaussian["distinct_pixels"].iloc[2:] < gaussian["count"].iloc[2:]).all()  # draws repeat at large k
    assert gaussian["distinct_pixels"].iloc[-1] < 0.8 * SIDE * SIDE
    assert list(uniform["distinct_pixels"]) == counts  # uniform pixels are distinct


@pytest.mark.parametrize("family, method", [("vae", "multidecoder"), ("vq-vae", "single")])
def test_the_errors_are_the_per_pixel_mse_of_the_two_decodes_on_the_seeded_masks(images, family, method):
    net = model(family, method)
    errors = observed_error(net, images, "uniform", [0, 8], seed=3, exact=True)
    with torch.no_grad():
        z = net.encode(images).z  # eval mode: a Gaussian VAE's z is μ
        assert errors["recon"].tolist() == pytest.approx([float(F.mse_loss(net.decode(z), images))] * 3, rel=1e-6)
        for row, sampling, k in zip(errors.itertuples(), ("uniform", "uniform", "exact"), (0, 8, None)):
            sampler = PixelSampler(sampling, SIDE, count=k)
            mask = sampler.sample(len(images), torch.Generator().manual_seed(3), "cpu")
            decoded = net.decode(z, images, mask, conditioned=True)
            assert row.recon_cond == pytest.approx(float(F.mse_loss(decoded, images)), rel=1e-6)
            assert row.distinct_pixels == float(mask.flatten(1).sum(1).mean())
    assert errors["recon_cond"].iloc[1] != errors["recon_cond"].iloc[0]  # the masks reach the decoder


def test_a_model_trained_on_the_exact_grid_gets_an_exact_row_and_star(tmp_path, images, saved):
    trained = PixelSampler("exact", SIDE)
    paths = error_vs_observed(model("vae", "multidecoder"), images, "uniform", tmp_path / "err", [0, 8, 64],
                              trained=trained)
    table = pd.read_csv(paths[-1])
    exact = table[table["sampling"] == "exact"]
    assert len(exact) == 1 and exact["count"].item() == GRID and exact["distinct_pixels"].item() == GRID
    assert list(table.loc[table["sampling"] == "uniform", "count"]) == [0, 8, 64]
    star = [line for line in saved["err"].axes[0].get_lines() if line.get_marker() == "*"]
    assert len(star) == 1 and list(star[0].get_xdata()) == [GRID]
    assert f"decoder 2 (exact grid, k={GRID})" in legend_texts(saved["err"])

    uniform = error_vs_observed(model("vae", "multidecoder"), images, "uniform", tmp_path / "other", [0, 8],
                                trained=PixelSampler("uniform", SIDE, count=8))
    assert set(pd.read_csv(uniform[-1])["sampling"]) == {"uniform"}


def test_the_title_names_the_configuration_fold_and_images(tmp_path, images, saved):
    title = configuration_title({"family": "vae", "config": 1, "method": "single", "sampling": "uniform",
                                 "exponent": 40.0})
    assert title == "Gaussian VAE 1 · Single decoder: uniform, a=40"
    error_vs_observed(model("vae", "single"), images, "uniform", tmp_path / "err", [0, 4], title=title, fold=3)
    shown = saved["err"].axes[0].get_title()
    assert title in shown and "fold 3 model" in shown and "4 test images" in shown and "z = μ" in shown
    error_vs_observed(model("vq-vae", "single"), images, "uniform", tmp_path / "vq", [0, 4])
    assert "z = μ" not in saved["vq"].axes[0].get_title()  # a VQ-VAE has no μ


def test_the_single_decoder_has_no_decoder_1_or_2_and_its_training_mean_is_marked(tmp_path, images, saved):
    trained = PixelSampler("uniform", SIDE, exponent=15.0)
    error_vs_observed(model("vae", "single"), images, "uniform", tmp_path / "single", [0, 4, 16], trained=trained)
    labels = legend_texts(saved["single"])
    assert labels[:2] == ["conditioned (uniform mask)", "empty mask (unconditioned)"]
    assert not any("decoder" in label for label in labels)
    assert "training mean E[k] = 15.5" in labels  # Σ (1 − j/256)^15 over j = 1..256: D/(a+1) = 16, floored
    ax = saved["single"].axes[0]
    line = next(line for line in ax.get_lines() if line.get_linestyle() == ":")
    assert list(line.get_xdata()) == pytest.approx([15.50488] * 2, abs=1e-5)
    assert ax.get_xlim()[0] < 0  # the marker at 0 shows whole

    error_vs_observed(model("vae", "multidecoder"), images, "uniform", tmp_path / "multi", [0, 4],
                      trained=PixelSampler("uniform", SIDE))
    labels = legend_texts(saved["multi"])
    assert labels[:2] == ["decoder 2 (uniform mask)", "decoder 1 (unconditioned)"]
    assert f"trained: k = {GRID}" in labels  # no count given: the exact grid's


def test_gaussian_training_is_marked_where_its_distinct_pixels_lie(tmp_path, images, saved):
    trained = PixelSampler("gaussian", SIDE, count=128)
    error_vs_observed(model("vq-vae", "multidecoder"), images, "gaussian", tmp_path / "err", [0, 128],
                      trained=trained)
    line = next(line for line in saved["err"].axes[0].get_lines() if line.get_linestyle() == ":")
    x = line.get_xdata()[0]
    assert 0 < x < 128 and any(label.startswith("trained: k = 128 draws ≈") for label in legend_texts(saved["err"]))


# ---------------------------------------------------------------- reconstruction grids

def _grid_labels(fig: Figure) -> tuple[list[str], list[str]]:
    ax = fig.axes[0]
    return [t.get_text() for t in ax.get_xticklabels()], [t.get_text() for t in ax.get_yticklabels()]


def test_reconstruction_grid_names_the_outputs_and_each_rows_observed_pixels(tmp_path, images, saved):
    sampler = PixelSampler("uniform", SIDE, exponent=3.0)
    reconstruction_grid(model("vae", "single"), images, sampler, tmp_path / "single", title="Gaussian VAE 1 · X",
                        fold=2)
    columns, rows = _grid_labels(saved["single"])
    assert columns == ["input", "empty mask", "conditioned", "mask"]
    masks = sampler.sample(len(images), torch.Generator().manual_seed(0), "cpu")
    assert rows == [f"{int(n)} px observed" for n in masks.flatten(1).sum(1)]
    assert len(set(rows)) > 1  # the power law draws k per image
    title = saved["single"].axes[0].get_title()
    assert "Gaussian VAE 1 · X" in title and "fold 2 model" in title and "4 test images, z = μ" in title

    reconstruction_grid(model("vq-vae", "multidecoder"), images, PixelSampler("exact", SIDE), tmp_path / "multi")
    columns, rows = _grid_labels(saved["multi"])
    assert columns == ["input", "decoder 1", "decoder 2", "mask"] and rows == [f"{GRID} px observed"] * len(images)


def test_checkpoint_figures_name_the_configuration_and_fold(tmp_path, images, saved):
    rows = pd.DataFrame([
        {"config_id": "vae/1/multidecoder/exact", "family": "vae", "config": 1, "method": "multidecoder",
         "sampling": "exact", "count": float("nan"), "exponent": float("nan"), "fold": 1},
        {"config_id": "vq-vae/1/single/gaussian/a=20", "family": "vq-vae", "config": 1, "method": "single",
         "sampling": "gaussian", "count": float("nan"), "exponent": 20.0, "fold": 0}]).assign(
        state="COMPLETE", checkpoint=lambda frame: frame["family"] + "+" + frame["method"], softadapt=False,
        params_from="")
    suite = SuiteResults("demo", rows, None, {"folds": 2})
    bar = tqdm(total=2, file=io.StringIO())  # report's progress bar: a step a configuration
    paths, warnings = _checkpoint_figures(suite, list(rows["config_id"]), tmp_path, images,
                                          lambda path: model(*Path(path).name.split("+")), tmp_path, bar)
    assert not warnings and bar.n == 2
    exact = saved["error_vs_observed_vae_1_multidecoder_exact"]
    assert exact.axes[0].get_title().startswith("Gaussian VAE 1 · Multidecoder: exact\nfold 1 model")
    assert "exact" in set(pd.read_csv(tmp_path / "error_vs_observed_vae_1_multidecoder_exact.csv")["sampling"])
    single = saved["reconstruction_vq-vae_1_single_gaussian_a_20"].axes[0].get_title()
    assert single.startswith("VQ-VAE 1 · Single decoder: gaussian, a=20\nfold 0 model")


# ---------------------------------------------------------------- sampling types

def test_sampling_types_show_unobserved_pixels_in_colour_and_name_each_sampler(tmp_path, images, monkeypatch):
    shown = {}
    monkeypatch.setattr("benchmark.figures._show_grid", lambda tiles, columns, stem, **labels: shown.update(
        tiles=tiles, columns=columns, **labels))
    sampling_types(images, SIDE, tmp_path / "types", count=64)
    tiles = shown["tiles"].view(3, 3, 3, SIDE, SIDE)  # rows exact / uniform / gaussian; original | mask | masked
    for original, mask, masked in tiles:
        observed = mask[0].bool()
        assert set(mask.unique().tolist()) <= {0.0, 1.0}  # the mask stays black and white
        assert torch.equal(masked[:, observed], original[:, observed])
        assert torch.equal(masked[:, ~observed], torch.tensor(UNOBSERVED)[:, None].expand(3, int((~observed).sum())))
    pixels = [int(mask[0].sum()) for mask in tiles[:, 1]]
    assert shown["row_labels"] == [f"exact grid\n{GRID} px", "uniform\nk = 64 px",
                                   f"gaussian\nk = 64 draws,\n{pixels[2]} distinct px"]
    assert pixels[1] == 64 and pixels[2] < 64


# ---------------------------------------------------------------- generated images

def test_generated_rows_of_every_configuration_show_the_same_real_images_and_masks(images):
    drawn = []
    for method, seed in (("multidecoder", 11), ("single", 12)):  # run_prior_stage seeds each configuration
        vq = model("vq-vae", method)
        torch.manual_seed(0)
        prior = GatedPixelCNN(PriorConfig(vq.latent_model.quantizer.codebook.num_embeddings, 8, 1, 3)).eval()
        drawn.append(draw_samples(vq, prior, images, 2, seed=seed, rows=2, conditioning_seed=5))
    assert torch.equal(drawn[0]["real"], drawn[1]["real"]) and torch.equal(drawn[0]["masks"], drawn[1]["masks"])
    other = draw_samples(vq, prior, images, 2, seed=12, rows=2)  # the default: seed + 1
    assert not torch.equal(other["masks"], drawn[1]["masks"])


# ---------------------------------------------------------------- saving

def test_pdfs_embed_truetype_fonts_not_type3(tmp_path):
    before = matplotlib.rcParams["pdf.fonttype"]
    fig = Figure()
    ax = fig.subplots()
    ax.set(title="μ and β in a title", xlabel="observed pixels")
    pdf = save_figure(fig, tmp_path / "fonts")[1]
    data = pdf.read_bytes()
    assert b"/Subtype /Type3" not in data and b"/FontFile2" in data  # FontFile2: embedded TrueType
    assert matplotlib.rcParams["pdf.fonttype"] == before  # only the saving changed it


def test_importing_the_report_leaves_a_notebooks_matplotlib_backend_alone():
    # The figures are drawn on Figure objects of their own; the backend is the caller's choice.
    code = ("import matplotlib; matplotlib.use('svg'); import benchmark.figures, benchmark.report, benchmark.study_plots; "
            "print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "svg"
