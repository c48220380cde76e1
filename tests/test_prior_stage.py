"""`python -m benchmark prior` (the VQ-VAE second stage) on the shared smoke run, and what the report makes of it.

The prior itself (causality, NLL < ln K on real codes) is tested in test_prior.py; here: the right
fold's codes, the stored results, generation, the report's column and figures, and bad input.
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_figure, cli, one_line_error
from sklearn.model_selection import KFold

import benchmark.figures
from benchmark.caveats import prior_notes
from benchmark.export import load_checkpoint
from benchmark.prior import GatedPixelCNN, PriorConfig, PriorResult
from benchmark.prior_stage import (
    _update_csv,
    check_kept_rows,
    decode_conditioned,
    draw_samples,
    encode_codes,
    fold_split,
    generate,
    load_prior,
    save_prior,
    select_targets,
    training_pool,
)
from benchmark.results import current_priors, load_suite, read_prior, safe_name

# A small prior keeps the stage to seconds on a laptop CPU; the pipeline is the same at any size.
FAST = ("--epochs", "2", "--hidden", "16", "--layers", "3", "--samples", "4", "--temperature", "0.5", "--quiet")
K, CODE_SIDE, IMAGE_SIDE = 128, 8, 32   # VQ-VAE config 1 on 32×32 mnist5k: 128 codes on an 8×8 map


@pytest.fixture(scope="module")
def prior_run(smoke_run):
    assert cli(smoke_run, "prior", "--suite", "smoke", *FAST) == 0
    return smoke_run


def read(run, name: str) -> pd.DataFrame:
    return pd.read_csv(run / "results" / name)


def read_index(run) -> str:
    return (run / "reports" / "smoke" / "index.md").read_text()


def best_folds(results: pd.DataFrame) -> pd.DataFrame:
    """By hand: the fold 0 row of each VQ-VAE configuration (every fold of the smoke run is COMPLETE)."""
    vq = results[(results["family"] == "vq-vae") & (results["state"] == "COMPLETE")]
    assert (vq.groupby("config_id")["fold"].nunique() == 5).all()
    return vq[vq["fold"] == 0].set_index("config_id")


def test_prior_csv_has_one_finite_row_per_vq_configuration_on_one_common_fold(prior_run):
    prior = read(prior_run, "smoke_prior.csv").set_index("config_id")
    best = best_folds(read(prior_run, "smoke.csv"))
    assert (prior["fold"] == 0).all()  # the lowest fold done in all: the same images, chosen blind to scores
    assert (prior[["hidden", "layers", "kernel", "batch_size"]] == [16, 3, 5, 128]).all().all()
    assert sorted(prior.index) == sorted(best.index) and len(prior) == 3
    assert np.isfinite(prior["val_nll_nats"]).all() and (prior["val_nll_nats"] > 0).all()
    assert np.allclose(prior["val_bits_per_code"], prior["val_nll_nats"] / math.log(2), rtol=1e-12)
    assert np.allclose(prior["uniform_nats"], math.log(K))
    assert (prior["epochs"] == 2).all() and prior["best_epoch"].between(1, 2).all()
    for config_id, row in prior.iterrows():
        assert row["fold"] == best.loc[config_id, "fold"]
        # Code maps used for training / validation: as many as the fold's images in the run.
        assert (row["n_train"], row["n_val"]) == (best.loc[config_id, "n_train"], best.loc[config_id, "n_val"])
        path = prior_run / row["prior_path"]
        assert path.name == f"{safe_name(config_id)}.pt" and path.parent == prior_run / "results" / "smoke" / "priors"
        model, payload = load_prior(path)
        assert model.config.num_codes == K and payload["info"]["fold"] == row["fold"]
        assert payload["info"]["val_nll_nats"] == pytest.approx(row["val_nll_nats"])


def test_codes_are_the_folds_training_and_validation_images(prior_run):
    targets, skipped, data = select_targets(prior_run / "results", "smoke")
    meta = data.meta
    results = read(prior_run, "smoke.csv")
    best = best_folds(results)
    assert not skipped and [t.config_id for t in targets] == [c for c in meta["configurations"] if c in best.index]
    pool = training_pool(meta)
    for target in targets:
        model, _ = load_checkpoint(prior_run / target.checkpoint)
        train_x, val_x = fold_split(pool, meta, target.fold, (target.n_train, target.n_val))
        train_codes, val_codes = encode_codes(model, train_x, batch_size=100), encode_codes(model, val_x)
        assert len(train_codes) == best.loc[target.config_id, "n_train"] == 320
        assert len(val_codes) == best.loc[target.config_id, "n_val"] == 80
        assert val_codes.shape[1:] == (CODE_SIDE, CODE_SIDE) and val_codes.dtype == torch.long
        assert 0 <= int(train_codes.min()) and int(train_codes.max()) < K
        # The split is scikit-learn's KFold(5, shuffle, seed) over the run's training pool (SPEC).
        train_idx, val_idx = list(KFold(5, shuffle=True, random_state=meta["seed"]).split(np.arange(len(pool))))[
            target.fold]
        assert torch.equal(train_x, pool[train_idx]) and torch.equal(val_x, pool[val_idx])
        # Decoding the validation codes reproduces the run's validation recon of that fold (its
        # best-epoch metric): the checkpoint is that fold's. With CUDA the run measured on the GPU
        # (TF32 convolutions) and this recomputes on the CPU.
        with torch.no_grad():
            decoded = model.decode(model.latent_model.quantizer.lookup(val_codes))
        tolerance = 5e-5 if torch.cuda.is_available() else 1e-6
        assert float((decoded - val_x).pow(2).mean()) == pytest.approx(target.recon, rel=tolerance)


def test_generation_gives_valid_codes_and_images_batched_and_seeded(prior_run):
    prior_rows = read(prior_run, "smoke_prior.csv").set_index("config_id")
    row = prior_rows.loc["vq-vae/1/multidecoder/uniform"]
    checkpoint = best_folds(read(prior_run, "smoke.csv")).loc["vq-vae/1/multidecoder/uniform", "checkpoint"]
    model, _ = load_checkpoint(prior_run / checkpoint)
    prior, payload = load_prior(prior_run / row["prior_path"])
    codes, images = generate(model, prior, 5, seed=3)
    assert codes.shape == (5, CODE_SIDE, CODE_SIDE) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < K
    assert images.shape == (5, 1, IMAGE_SIDE, IMAGE_SIDE) and 0 <= float(images.min()) and float(images.max()) <= 1
    assert torch.equal(generate(model, prior, 5, seed=3)[0], codes)     # seeded
    assert not torch.equal(generate(model, prior, 5, seed=4)[0], codes)

    real = training_pool({"dataset": "mnist5k", "limit": 400, "seed": 0})[:10]
    samples = draw_samples(model, prior, real, 4, seed=0)
    assert samples["conditioned"].shape == (3, 4, 1, IMAGE_SIDE, IMAGE_SIDE)
    assert 0 <= float(samples["conditioned"].min()) and float(samples["conditioned"].max()) <= 1
    assert samples["masks"].shape == (3, 1, IMAGE_SIDE, IMAGE_SIDE)
    assert (samples["masks"].flatten(1).sum(1) == 16).all()
    # The batched r·n decode equals decoding one (code map, image) pair on its own.
    with torch.no_grad():
        one = model.decode(model.latent_model.quantizer.lookup(samples["codes"][1:2]), samples["real"][2:3],
                           samples["masks"][2:3], conditioned=True)
    assert torch.allclose(samples["conditioned"][2, 1], one[0], atol=1e-5)
    assert torch.equal(decode_conditioned(model, samples["codes"], samples["real"], samples["masks"]),
                       samples["conditioned"])
    # What the stage stored for the report has the same layout.
    stored = payload["samples"]
    assert stored["images"].shape == (4, 1, IMAGE_SIDE, IMAGE_SIDE) and stored["conditioned"].shape[:2] == (3, 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_generation_runs_on_the_gpu(prior_run):
    row = read(prior_run, "smoke_prior.csv").iloc[0]
    checkpoint = best_folds(read(prior_run, "smoke.csv")).loc[row["config_id"], "checkpoint"]
    model, _ = load_checkpoint(prior_run / checkpoint, device="cuda")
    prior, _ = load_prior(prior_run / row["prior_path"], device="cuda")
    codes, images = generate(model, prior, 6, seed=0)
    assert codes.shape == (6, CODE_SIDE, CODE_SIDE) and int(codes.max()) < K
    assert 0 <= float(images.min()) and float(images.max()) <= 1


def test_the_report_warns_of_priors_still_improving_and_of_collapsed_codebooks(prior_run, capsys):
    prior = read(prior_run, "smoke_prior.csv")
    assert cli(prior_run, "report", "--suite", "smoke", "--no-figures") == 0
    out = capsys.readouterr().out
    last = prior[prior["best_epoch"] == 2]  # FAST trains the priors 2 epochs
    assert (f"{len(last)} of {len(prior)} priors kept their last epoch (2): their NLL was still falling" in out) \
        == bool(len(last))
    narrow = prior[prior["code_perplexity"] < 0.1 * K]
    for row in narrow.itertuples():
        assert f"{row.config_id} ({row.code_perplexity:.1f} of {K})" in out
    assert ("codebooks used at a perplexity under 10% of their codes" in out) == bool(len(narrow))
    # by hand: one prior stopped improving; two worse than the training codes' frequencies predict (4.1 nats,
    # and for a row of an earlier version without that score, ln 100 = 4.605), one of them better than a
    # uniform prior (ln 128 = 4.852); one codebook collapsed; d beats its frequencies, though not the validation
    # codes' own entropy (ln 60 = 4.094), which a frequency prior cannot reach
    table = pd.DataFrame({"config_id": ["a", "b", "c", "d"], "best_epoch": [3, 1, 2, 2], "epochs": [3, 3, 3, 3],
                          "val_nll_nats": [4.2, 4.938, 1.0, 4.2], "frequency_nats": [4.1, math.nan, 1.5, 4.3],
                          "code_perplexity": [60.0, 100.0, 4.2, 60.0], "uniform_nats": [math.log(K)] * 4})
    notes = prior_notes(table)
    assert notes[0].startswith("1 of 4 priors kept their last epoch (3)")
    assert notes[1].startswith("priors that score worse than one that knows only how often each code occurs in the "
                               "training codes (nats per code; for a prior of an earlier version, which did not record "
                               "that, the validation codes' own entropy, ln of their perplexity): a (4.200 > 4.100), "
                               "b (4.938 > 4.605); they failed to fit")
    assert "earlier version" not in prior_notes(table[table["config_id"] != "b"])[1]
    assert "under 10% of their codes: c (4.2 of 128); few codes" in notes[2] and len(notes) == 3
    assert "d (" not in notes[1]
    # grids side by side at other temperatures, said only in each one's title
    assert prior_notes(table.assign(temperature=[1.0, 0.3, 1.0, 0.3]))[-1] == (
        "generated images drawn at different temperatures (0.3: b, d; 1: a, c); a lower one gives sharper, less "
        "varied images, so compare the grids at one (`prior --redraw --temperature`).")
    assert len(prior_notes(table.assign(temperature=0.5))) == 3
    # one epoch is always the last one kept: the caveat says what that means
    assert prior_notes(table.assign(epochs=1, best_epoch=1))[0] == (
        "4 of 4 priors trained one epoch, so longer prior training (`prior --epochs`) would likely lower their NLL.")


def test_report_has_the_prior_nll_column_and_generated_figures(prior_run, monkeypatch):
    # Checkpoint figures are test_report_cli's business; the generated ones come from the stored samples.
    labels, titles, grid = {}, {}, benchmark.figures.generated_grid

    def labelled(images, path, **kwargs):
        labels[path.name] = kwargs["row_labels"]
        titles[path.name] = kwargs["title"]
        return grid(images, path, **kwargs)

    monkeypatch.setattr("benchmark.figures.generated_grid", labelled)
    assert cli(prior_run, "report", "--suite", "smoke", "--no-checkpoints") == 0
    # the conditioned rows say what they observe, the same uniform pixels for every method
    assert labels["generated_vq-vae_1_single_gaussian_a_40"][1] == "16 uniform px of image 1"
    assert labels["generated_vq-vae_1_multidecoder_uniform"][:2] == ["decoder 1", "decoder 2: 16 uniform px of image 1"]
    # the temperature the samples were drawn at, which the CSV records beside the NLL
    assert titles["generated_vq-vae_1_baseline"] == ("VQ-VAE 1 · Baseline\nsamples of the prior at temperature 0.5 "
                                                     "(fold 0)")  # the configuration as the other figures name it
    assert titles["generated_vq-vae_1_single_gaussian_a_40"].startswith("VQ-VAE 1 · Single decoder: gaussian, a=40\n")
    assert (read(prior_run, "smoke_prior.csv")["temperature"] == 0.5).all()
    index = read_index(prior_run)
    assert "16 uniformly drawn pixels of a validation image" in index
    out = prior_run / "reports" / "smoke"
    table = pd.read_csv(out / "table.csv").set_index("config_id")
    prior = read(prior_run, "smoke_prior.csv").set_index("config_id")
    markdown = (out / "table.md").read_text()
    assert "Prior NLL" in markdown.splitlines()[0] and "Prior NLL" in (out / "table.tex").read_text()
    assert "Gated PixelCNN" in markdown  # the footnote says what the column is
    for config_id, row in table.iterrows():
        name = safe_name(config_id)
        figure = out / "figures" / f"generated_{name}.png"
        if row["family"] != "vq-vae":
            assert math.isnan(row["prior_nll_nats"]) and not figure.exists()
            continue
        assert row["prior_nll_nats"] == prior.loc[config_id, "val_nll_nats"]
        assert row["prior_bits_per_code"] == prior.loc[config_id, "val_bits_per_code"]
        assert row["prior_fold"] == prior.loc[config_id, "fold"]
        assert 1 <= row["prior_code_perplexity"] <= K
        assert (f"{row['prior_nll_nats']:.3f} (fold {int(row['prior_fold'])}, perplexity "
                f"{row['prior_code_perplexity']:.1f})") in markdown  # 2.3, not 2: as `prior` and the caveats say it
        assert_figure(figure, min_width=300)
        assert_figure(figure.with_suffix(".pdf"))
    # Gaussian VAE rows have no prior: a – in its column.
    column = [c.strip() for c in markdown.splitlines()[0].split("|")].index("Prior NLL (nats/code)")
    vae_lines = [line for line in markdown.splitlines() if line.startswith("| Gaussian VAE")]
    assert vae_lines and all(line.split("|")[column].strip() == "–" for line in vae_lines)
    # --no-checkpoints skips the figures of trained models, not the sampling types.
    assert (out / "figures" / "sampling_types.png").exists()
    assert not list((out / "figures").glob("reconstruction_*"))
    if shutil.which("pdflatex"):  # the extra column must not break the LaTeX table
        (out / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs,multirow}\n\\begin{document}\n"
                                     + (out / "table.tex").read_text() + "\\end{document}\n")
        run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=out,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout[-2000:]
        for path in out.glob("doc.*"):
            path.unlink()


def test_rerunning_one_configuration_replaces_its_row_and_keeps_the_settings_of_the_others(prior_run, capsys):
    before = read(prior_run, "smoke_prior.csv")
    config = ("--config", "vq-vae/1/baseline")
    for other in (("--epochs", "1"), ("--hidden", "8"), ("--fold", "2")):  # refused before anything is trained
        assert cli(prior_run, "prior", "--suite", "smoke", *config, *FAST, *other) == 2
        assert "made with other settings" in one_line_error(capsys)
        pd.testing.assert_frame_equal(read(prior_run, "smoke_prior.csv"), before)
    changed = before["config_id"] == "vq-vae/1/baseline"
    # Seeded, the new row equals the old one: one marked so tells a replaced row from a kept one.
    marked = before.copy()
    marked.loc[changed, "val_nll_nats"] = 99.0
    marked.to_csv(prior_run / "results" / "smoke_prior.csv", index=False)
    assert cli(prior_run, "prior", "--suite", "smoke", *config, *FAST) == 0
    after = read(prior_run, "smoke_prior.csv")
    assert list(after["config_id"]) == list(before["config_id"])          # same rows, same order
    columns = ["fold", "val_nll_nats", "best_epoch", "n_train", "n_val", "epochs", "hidden"]
    pd.testing.assert_frame_equal(after.loc[changed, columns], before.loc[changed, columns])  # seeded: the same
    pd.testing.assert_frame_equal(after[~changed], before[~changed])


def test_the_fold_is_common_to_the_configurations_and_can_be_chosen(smoke_run, tmp_path):
    linked_results(smoke_run, tmp_path)
    results = tmp_path / "results"
    table = read(tmp_path, "smoke.csv")
    table.loc[(table["config_id"] == "vq-vae/1/baseline") & (table["fold"] < 2), "state"] = "FAIL"
    table.to_csv(results / "smoke.csv", index=False)
    targets, skipped, _ = select_targets(results, "smoke")
    assert {t.fold for t in targets} == {2} and len(targets) == 3 and not skipped
    targets, skipped, _ = select_targets(results, "smoke", fold=1)
    assert {t.fold for t in targets} == {1} and len(targets) == 2
    command = json.loads((results / "smoke_meta.json").read_text())["command"]  # the one that started the run
    assert command.startswith("python -m benchmark run --suite smoke")
    assert skipped == [f"vq-vae/1/baseline: fold 1 is not COMPLETE with a checkpoint; finish it with `{command}`"]
    meta = json.loads((results / "smoke_meta.json").read_text())
    del meta["command"]  # an export of an earlier version: the run command of this folder's suite
    (results / "smoke_meta.json").write_text(json.dumps(meta))
    assert select_targets(results, "smoke", fold=1)[1][0].endswith(
        f"finish it with `python -m benchmark run --suite smoke --results-dir {shlex.quote(str(results))}`")
    table.loc[(table["config_id"] == "vq-vae/1/single/gaussian/a=40") & (table["fold"] >= 2), "state"] = "FAIL"
    table.to_csv(results / "smoke.csv", index=False)
    with pytest.raises(ValueError, match="no fold is COMPLETE in every VQ-VAE configuration .*--fold"):
        select_targets(results, "smoke")


def test_a_prior_csv_written_before_the_bits_per_code_rename_still_reads(smoke_run, tmp_path):
    linked_results(smoke_run, tmp_path)
    results = tmp_path / "results"
    (results / "smoke_prior.csv").write_text("config_id,fold,val_nll_nats,val_bits_per_dim,uniform_nats,prior_path\n"
                                             "vq-vae/1/baseline,2,3.0,4.328,4.852,p.pt\n")
    frame, runs = read_prior(results, "smoke"), load_suite(results, "smoke").results
    assert "val_bits_per_dim" not in frame and frame.loc[0, "val_bits_per_code"] == 4.328
    # Its rows record no settings: priors made now are not mixed with them.
    settings = {"fold": 0, "epochs": 30, "batch_size": 128, "lr": 1e-3, "hidden": 64, "layers": 8, "kernel": 5}
    with pytest.raises(ValueError, match="made by an earlier version.*rerun without --config"):
        check_kept_rows(results, "smoke", runs, ["vq-vae/1/single/gaussian/a=40"], settings, named=True)
    # all its rows replaced: fine, with a note
    assert check_kept_rows(results, "smoke", runs, ["vq-vae/1/baseline"], settings, named=False) == (
        f"the priors of vq-vae/1/baseline in {results / 'smoke_prior.csv'} were made by an earlier version: the first "
        "new prior stored replaces them")


def linked_results(smoke_run, tmp_path) -> None:
    """A results dir of its own that shares the smoke run's checkpoints (a symlink, not a 280 MB copy)."""
    (tmp_path / "results" / "smoke").mkdir(parents=True)
    for name in ("smoke.csv", "smoke_meta.json"):
        shutil.copy(smoke_run / "results" / name, tmp_path / "results" / name)
    (tmp_path / "results" / "smoke" / "artifacts").symlink_to(smoke_run / "results" / "smoke" / "artifacts")


def test_a_prior_of_weights_the_results_no_longer_hold_is_left_out_and_then_removed(prior_run, tmp_path, capsys):
    # A run made anew kept the earlier run's priors: the report showed them beside priors of its own weights.
    linked_results(prior_run, tmp_path)
    results = tmp_path / "results"
    shutil.copy(prior_run / "results" / "smoke_prior.csv", results / "smoke_prior.csv")
    runs = read(tmp_path, "smoke.csv")
    anew = (runs["config_id"] == "vq-vae/1/baseline") & (runs["fold"] == 0)  # its weights of another run now
    old_name = Path(runs.loc[anew, "checkpoint"].iloc[0]).name
    runs.loc[anew, "checkpoint"] = str(Path(runs.loc[anew, "checkpoint"].iloc[0]).with_name("new-run-weights"))
    runs.to_csv(results / "smoke.csv", index=False)
    assert cli(tmp_path, "report", "--suite", "smoke", "--no-figures") == 0
    out = capsys.readouterr().out
    assert (f"warning: prior of vq-vae/1/baseline left out: fitted to other weights of fold 0 ({old_name}, of an "
            "earlier run) than these results hold; run `prior` again for this run's") in out
    assert load_suite(results, "smoke").priors_left_out == {"vq-vae/1/baseline"}
    assert "without a prior" not in out  # named once, with what to do
    table = pd.read_csv(tmp_path / "reports" / "smoke" / "table.csv").set_index("config_id")
    vq = [c for c in table.index if c.startswith("vq-vae/")]
    assert table.loc[vq, "prior_nll_nats"].isna().tolist() == [c == "vq-vae/1/baseline" for c in vq]
    # a prior of another configuration, with the same settings, takes the stale row out of the CSV
    other = next(c for c in vq if c != "vq-vae/1/baseline")
    assert cli(tmp_path, "prior", "--suite", "smoke", "--config", other, *FAST) == 0
    assert sorted(read(tmp_path, "smoke_prior.csv")["config_id"]) == sorted(c for c in vq if c != "vq-vae/1/baseline")


@pytest.mark.parametrize("folder", ["", "elsewhere"])
def test_the_report_gives_a_prior_command_that_fits_a_missing_prior_as_the_others(prior_run, tmp_path, capsys,
                                                                                   folder):
    # it said "with the settings the other priors were made with" and left them out: copied, it was refused;
    # and it left out a --results-dir other than the default, so that the copy looked in results/
    linked_results(prior_run, tmp_path / folder)
    where = ("--results-dir", f"{folder}/results") if folder else ()
    stored = read(prior_run, "smoke_prior.csv")
    missing = stored["config_id"].iloc[-1]
    stored.iloc[:-1].to_csv(tmp_path / folder / "results" / "smoke_prior.csv", index=False)
    assert cli(tmp_path, "report", "--suite", "smoke", *where, "--no-figures") == 0
    caveat = next(line for line in capsys.readouterr().out.splitlines() if "without a prior" in line)
    command = caveat.split("`")[1]
    assert command.startswith(shlex.join(["python", "-m", "benchmark", "prior", "--suite", "smoke", *where,
                                          "--config", missing, "--fold", "0", "--epochs", "2"]))
    assert cli(tmp_path, *shlex.split(command.removeprefix("python -m benchmark ")), "--quiet") == 0
    assert sorted(read(tmp_path / folder, "smoke_prior.csv")["config_id"]) == sorted(stored["config_id"])
    assert cli(tmp_path, "report", "--suite", "smoke", *where, "--no-figures") == 0
    out = capsys.readouterr().out  # its samples drawn at the others' temperature too
    assert "without a prior" not in out and "different temperatures" not in out


def test_a_prior_stage_on_a_busy_machine_says_its_threads_wait_for_cores(prior_run, tmp_path, capsys, monkeypatch):
    linked_results(prior_run, tmp_path)
    monkeypatch.setattr("benchmark.processes.os.getloadavg", lambda: (9.0, 9.0, 9.0))
    monkeypatch.setattr("benchmark.processes.os.cpu_count", lambda: 2)
    monkeypatch.setattr("torch.get_num_threads", lambda: 2)
    assert cli(tmp_path, "prior", "--suite", "smoke", "--config", "vq-vae/1/baseline", *FAST) == 0
    assert "note: the machine is busy (load average 9.0 on 2 cores): each training step is split over 2 threads" \
        in capsys.readouterr().err
    monkeypatch.setattr("torch.get_num_threads", lambda: 1)  # OMP_NUM_THREADS=1: nothing to wait for
    assert cli(tmp_path, "prior", "--suite", "smoke", "--config", "vq-vae/1/baseline", *FAST) == 0
    assert "busy" not in capsys.readouterr().err


def test_redraw_draws_the_stored_samples_again_at_their_temperature_and_new_ones_at_another(prior_run, tmp_path,
                                                                                            capsys):
    linked_results(prior_run, tmp_path)
    assert cli(tmp_path, "prior", "--suite", "smoke", "--redraw", "--quiet") == 2  # no prior yet
    assert one_line_error(capsys) == ("error: suite 'smoke' has no priors to draw from (results/smoke_prior.csv is "
                                      "not there): train them with `python -m benchmark prior --suite smoke`")
    linked_results(prior_run, tmp_path / "elsewhere")
    assert cli(tmp_path, "prior", "--suite", "smoke", "--redraw", "--results-dir", "elsewhere/results", "--quiet") == 2
    assert one_line_error(capsys).endswith("train them with `python -m benchmark prior --suite smoke --results-dir "
                                           "elsewhere/results`")
    shutil.copy(prior_run / "results" / "smoke_prior.csv", tmp_path / "results" / "smoke_prior.csv")
    shutil.copytree(prior_run / "results" / "smoke" / "priors", tmp_path / "results" / "smoke" / "priors")
    before = read(tmp_path, "smoke_prior.csv")
    stored = {c: load_prior(tmp_path / p)[1]["samples"] for c, p in zip(before["config_id"], before["prior_path"])}
    # seeded as the stage drew them: at its temperature, the same images
    assert cli(tmp_path, "prior", "--suite", "smoke", "--redraw", "--samples", "4", "--temperature", "0.5",
               "--quiet") == 0
    first = f"{before['config_id'][0]} (fold 0): 4 samples at temperature 0.5"
    assert capsys.readouterr().out.splitlines()[0] == first
    for config_id, path in zip(before["config_id"], before["prior_path"]):
        again = load_prior(tmp_path / path)[1]["samples"]
        assert again.keys() == stored[config_id].keys() and all(torch.equal(again[k], stored[config_id][k])
                                                                 for k in again)
    pd.testing.assert_frame_equal(read(tmp_path, "smoke_prior.csv"), before)
    one = before["config_id"][1]
    assert cli(tmp_path, "prior", "--suite", "smoke", "--redraw", "--config", one, "--samples", "3", "--temperature",
               "2", "--quiet") == 0
    after = read(tmp_path, "smoke_prior.csv")
    changed = before["config_id"] == one
    assert after.loc[changed, "temperature"].tolist() == [2.0] and (after.loc[~changed, "temperature"] == 0.5).all()
    pd.testing.assert_frame_equal(after.drop(columns="temperature"), before.drop(columns="temperature"))
    _, payload = load_prior(tmp_path / before.loc[changed, "prior_path"].iloc[0])
    assert payload["info"]["temperature"] == 2.0 and len(payload["samples"]["images"]) == 3
    assert not torch.equal(payload["samples"]["codes"], stored[one]["codes"][:3])
    trained = load_prior(prior_run / before.loc[changed, "prior_path"].iloc[0])[1]["state_dict"]
    torch.testing.assert_close(payload["state_dict"], trained, rtol=0, atol=0)  # the prior itself untouched


def test_a_redraw_rewrites_the_priors_of_its_results_folder_not_those_a_stored_path_names_from_here(prior_run,
                                                                                                     tmp_path, capsys):
    # The CSV's prior_path is relative to where the stage ran: from a folder with results of its own, the redraw
    # rewrote that folder's prior and the other folder's row.
    for folder in (tmp_path, tmp_path / "elsewhere"):
        linked_results(prior_run, folder)
        shutil.copytree(prior_run / "results" / "smoke" / "priors", folder / "results" / "smoke" / "priors")
        # as a library call with temperature=2 writes it: integers, which a float did not fit
        read(prior_run, "smoke_prior.csv").assign(temperature=2).to_csv(folder / "results" / "smoke_prior.csv",
                                                                        index=False)
    here = {path: path.read_bytes() for path in (tmp_path / "results" / "smoke" / "priors").iterdir()}
    assert cli(tmp_path, "prior", "--suite", "smoke", "--redraw", "--results-dir", "elsewhere/results",
               "--temperature", "0.7", "--quiet") == 0
    assert capsys.readouterr().out.splitlines()[-1] == ("samples in elsewhere/results/smoke/priors; `python -m "
                                                        "benchmark report --suite smoke --results-dir "
                                                        "elsewhere/results` draws their figures")
    assert {path: path.read_bytes() for path in here} == here
    assert (read(tmp_path / "elsewhere", "smoke_prior.csv")["temperature"] == 0.7).all()
    assert all(load_prior(path)[1]["info"]["temperature"] == 0.7
               for path in (tmp_path / "elsewhere" / "results" / "smoke" / "priors").iterdir())


def test_ctrl_c_in_a_redraw_keeps_the_samples_redrawn_and_says_which(prior_run, tmp_path, capsys, monkeypatch):
    import benchmark.prior_stage

    linked_results(prior_run, tmp_path)
    shutil.copy(prior_run / "results" / "smoke_prior.csv", tmp_path / "results" / "smoke_prior.csv")
    shutil.copytree(prior_run / "results" / "smoke" / "priors", tmp_path / "results" / "smoke" / "priors")
    draw, calls = benchmark.prior_stage.draw_samples, []

    def ctrl_c_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return draw(*args, **kwargs)

    monkeypatch.setattr("benchmark.prior_stage.draw_samples", ctrl_c_on_the_second)
    first, second = read(tmp_path, "smoke_prior.csv")["config_id"][:2]
    assert cli(tmp_path, "prior", "--suite", "smoke", "--redraw", "--temperature", "3", "--quiet") == 130
    assert capsys.readouterr().err.splitlines()[-1] == (f"interrupted: the samples of {first} are redrawn; the "
                                                        "others keep their earlier ones")
    after = read(tmp_path, "smoke_prior.csv").set_index("config_id")["temperature"]
    assert after[first] == 3.0 and (after.drop(first) == 0.5).all()
    for config_id, temperature in ((first, 3.0), (second, 0.5)):
        _, payload = load_prior(tmp_path / "results" / "smoke" / "priors" / f"{safe_name(config_id)}.pt")
        assert payload["info"]["temperature"] == temperature


@pytest.mark.parametrize("args, message", [
    (("--epochs", "3", "--kernel", "3"),
     "--redraw trains nothing, so --epochs, --kernel would do nothing: leave them out"),
    (("--samples", "0",), "--samples must be >= 1 (images to draw), got 0"),
    (("--lr", "0.001"), "--redraw trains nothing, so --lr would do nothing: leave it out"),  # the default, given
    (("--config", "vq-vae/9/baseline"), "unknown VQ-VAE configuration of suite 'smoke': 'vq-vae/9/baseline'"),
    # not "`prior --config vae/1/baseline` trains one", which prior refuses
    (("--config", "vae/1/baseline"), "'vae/1/baseline' is a Gaussian VAE configuration of suite 'smoke': the prior is "
     "a VQ-VAE's second stage"),
])
def test_bad_redraws_are_one_line_and_exit_2(prior_run, capsys, args, message):
    before = read(prior_run, "smoke_prior.csv")
    assert cli(prior_run, "prior", "--suite", "smoke", "--redraw", *args, "--quiet") == 2
    assert one_line_error(capsys).startswith(f"error: {message}")
    pd.testing.assert_frame_equal(read(prior_run, "smoke_prior.csv"), before)


def test_a_sampling_error_in_a_redraw_is_one_line_and_keeps_the_earlier_samples(prior_run, capsys, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    monkeypatch.setattr("benchmark.prior_stage.draw_samples", out_of_memory)
    before = read(prior_run, "smoke_prior.csv")
    file = prior_run / before["prior_path"][0]
    stored = file.read_bytes()
    assert cli(prior_run, "prior", "--suite", "smoke", "--redraw", "--temperature", "3", "--quiet") == 2
    assert one_line_error(capsys) == (f"error: {before['config_id'][0]}: no samples drawn (CUDA out of memory. "
                                      "Tried to allocate 2.00 GiB); its earlier ones are kept (fewer --samples may "
                                      "fit)")
    assert file.read_bytes() == stored
    pd.testing.assert_frame_equal(read(prior_run, "smoke_prior.csv"), before)


def test_a_sampling_error_keeps_the_trained_prior(smoke_run, tmp_path, capsys, monkeypatch):
    # It lost the configuration's prior, trained a moment before, with a traceback.
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    monkeypatch.setattr("benchmark.prior_stage.draw_samples", out_of_memory)
    linked_results(smoke_run, tmp_path)
    assert cli(tmp_path, "prior", "--suite", "smoke", "--config", "vq-vae/1/baseline", *FAST) == 0
    assert ("warning: vq-vae/1/baseline: no samples drawn (CUDA out of memory. Tried to allocate 2.00 GiB); its "
            "prior is stored without them (fewer --samples may fit)") in capsys.readouterr().err
    assert list(read(tmp_path, "smoke_prior.csv")["config_id"]) == ["vq-vae/1/baseline"]
    _, payload = load_prior(tmp_path / "results" / "smoke" / "priors" / f"{safe_name('vq-vae/1/baseline')}.pt")
    assert payload["samples"] == {}


def test_a_prior_of_kernel_1_stored_before_it_was_refused_still_loads(tmp_path):
    # only a new stage refuses kernel 1 (`check_arguments`): the report still draws an earlier prior's samples
    stored = GatedPixelCNN(PriorConfig(num_codes=4, hidden=4, layers=1, kernel=1))
    save_prior(tmp_path / "p.pt", PriorResult(stored, 1.0, 1.0, math.log(4), 1), {"method": "baseline"}, None)
    model, _ = load_prior(tmp_path / "p.pt")
    assert model.config.kernel == 1
    torch.testing.assert_close(model.state_dict(), stored.state_dict(), rtol=0, atol=0)


def test_current_priors_keep_the_rows_of_weights_the_results_hold():
    results = pd.DataFrame({"config_id": ["a", "c", "d"], "fold": [0, 0, 0], "state": ["COMPLETE"] * 3,
                            "checkpoint": ["art/1.pt", "art/4.pt", ""]})
    prior = pd.DataFrame({"config_id": ["a", "a", "b", "c", "e"], "fold": [0, 1, 0, 0, 0],
                          "checkpoint": ["1.pt", "2.pt", "", "3.pt", "5.pt"]})  # b: a row of an earlier version
    kept, lines = current_priors(prior, results)
    assert kept.index.tolist() == [0, 2]
    assert lines == [
        "prior of a left out: these results hold no weights of fold 1 of it; run `prior` again for this run's",
        "prior of c left out: fitted to other weights of fold 0 (3.pt, of an earlier run) than these results hold; "
        "run `prior` again for this run's",
        # a suite file that no longer lists e: `prior` could not fit it, so it is not asked for
        "prior of e left out: these results do not hold e at all (the run that exported them did not list it)"]


def test_a_prior_that_diverges_is_one_line_and_exit_2(smoke_run, tmp_path, capsys):
    linked_results(smoke_run, tmp_path)
    assert cli(tmp_path, "prior", "--suite", "smoke", "--kernel", "4", *FAST) == 2  # --kernel reaches the prior
    assert one_line_error(capsys) == ("error: --kernel must be odd and >= 3 (at 1 no layer widens the context: a "
                                      "code sees only the code above it and the one to its left), got 4")
    assert cli(tmp_path, "prior", "--suite", "smoke", "--kernel", "99", *FAST) == 2  # refused before training
    assert one_line_error(capsys) == ("error: --kernel 99 is wider than 8×8 code maps can use: past 15 its extra "
                                      "weights read only padding, so give a kernel of at most 15")
    assert cli(tmp_path, "prior", "--suite", "smoke", "--lr", "inf", *FAST) == 2  # refused before training
    assert one_line_error(capsys) == "error: --lr must be a finite number > 0, got inf"
    assert cli(tmp_path, "prior", "--suite", "smoke", "--lr", "1e30", *FAST) == 2
    assert one_line_error(capsys) == ("error: vq-vae/1/baseline: the prior's loss diverged: its held-out NLL was not "
                                      "finite after any of its 2 epochs; a lower --lr (now 1e+30) may fit")
    assert not (tmp_path / "results" / "smoke_prior.csv").exists()


def test_a_kernel_too_wide_is_refused_before_the_note_on_rows_it_would_replace(prior_run, capsys):
    # the note said the first new prior would replace the rows of kernel 5; then the width was refused
    before = read(prior_run, "smoke_prior.csv")
    assert cli(prior_run, "prior", "--suite", "smoke", *FAST, "--kernel", "17") == 2
    err = capsys.readouterr().err
    assert "note:" not in err and err.splitlines()[-1].startswith("error: --kernel 17 is wider than 8×8 code maps")
    pd.testing.assert_frame_equal(read(prior_run, "smoke_prior.csv"), before)


@pytest.mark.parametrize("finished", [0, 1])
def test_ctrl_c_keeps_the_finished_priors_and_says_what_a_rerun_does(smoke_run, tmp_path, capsys, monkeypatch,
                                                                      finished):
    import benchmark.prior_stage

    linked_results(smoke_run, tmp_path)
    train = benchmark.prior_stage.train_prior
    calls = []

    def interrupted_after_some(*args, **kwargs):
        calls.append(1)
        if len(calls) > finished:
            raise KeyboardInterrupt
        return train(*args, **kwargs)

    monkeypatch.setattr(benchmark.prior_stage, "train_prior", interrupted_after_some)
    args = ("--epochs", "1", "--hidden", "8", "--layers", "2", "--samples", "0", "--quiet")
    assert cli(tmp_path, "prior", "--suite", "smoke", *args) == 130
    out, err = capsys.readouterr()
    err = err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interrupted: "), err
    assert err[0].endswith("Running the same command again trains all its configurations anew" +
                           ("; to train only the others, name them with --config" if finished else ""))
    csv = tmp_path / "results" / "smoke_prior.csv"
    if not finished:
        assert "no configuration finished, so no row of the prior CSV was written or replaced" in err[0]
        assert not csv.exists() and out == ""
        return
    kept = read(tmp_path, "smoke_prior.csv")
    assert len(kept) == 1 and len(list((tmp_path / "results" / "smoke" / "priors").glob("*.pt"))) == 1
    config_id = kept.loc[0, "config_id"]
    assert err[0].startswith(f"interrupted: the priors of {config_id} are stored (results/smoke_prior.csv, "
                             f"results/smoke/priors); the one in progress is lost.")
    # the finished line gives each value with the uniform prior's score in the same unit
    row = kept.loc[0]
    assert (f"{config_id} (fold {row['fold']}): val NLL {row['val_nll_nats']:.4f} nats/code "
            f"(uniform: ln K = {math.log(K):.4f}) = {row['val_bits_per_code']:.4f} bits/code "
            f"(uniform: log2 K = 7.0000); the training codes' frequencies alone: {row['frequency_nats']:.4f} "
            f"nats/code; code perplexity {row['code_perplexity']:.1f} of K = {K}; ") in out
    # the report says why the others' Prior NLL is –, and the command it gives fits them
    others = [c for c in dict.fromkeys(read(tmp_path, "smoke.csv")["config_id"]) if c.startswith("vq-vae/")
              and c != config_id]
    assert cli(tmp_path, "report", "--suite", "smoke", "--no-figures") == 0
    fit = (f"python -m benchmark prior --suite smoke --config {' '.join(others)} --fold {row['fold']} --epochs 1 "
           "--batch-size 128 --lr 0.001 --hidden 8 --layers 2 --kernel 5")  # no --temperature: no samples drawn
    assert (f"VQ-VAE configurations without a prior, so with no Prior NLL (–): {', '.join(others)}; the prior stage "
            f"stopped before them or was not asked for them. `{fit}` fits them") in read_index(tmp_path)
    monkeypatch.setattr(benchmark.prior_stage, "train_prior", train)
    assert cli(tmp_path, *fit.split()[3:], "--samples", "0", "--quiet") == 0
    assert cli(tmp_path, "report", "--suite", "smoke", "--no-figures") == 0
    assert "without a prior" not in read_index(tmp_path)
    assert len(read(tmp_path, "smoke_prior.csv")) == 3


def test_ctrl_c_after_rows_made_with_other_settings_were_removed_says_so(smoke_run, tmp_path, capsys, monkeypatch):
    import benchmark.prior_stage

    linked_results(smoke_run, tmp_path)
    results = read(smoke_run, "smoke.csv")
    vq = list(dict.fromkeys(results.loc[results["family"] == "vq-vae", "config_id"]))
    settings = {"fold": 0, "epochs": 30, "batch_size": 128, "lr": 1e-3, "hidden": 64, "layers": 8, "kernel": 5}
    pd.DataFrame([{"config_id": c, "val_nll_nats": 3.0, "prior_path": "", **settings} for c in vq]).to_csv(
        tmp_path / "results" / "smoke_prior.csv", index=False)
    train, calls = benchmark.prior_stage.train_prior, []

    def interrupted_after_one(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return train(*args, **kwargs)

    monkeypatch.setattr(benchmark.prior_stage, "train_prior", interrupted_after_one)
    args = ("--epochs", "1", "--hidden", "8", "--layers", "2", "--samples", "0", "--quiet")
    assert cli(tmp_path, "prior", "--suite", "smoke", *args) == 130
    err = capsys.readouterr().err
    # before training, a rerun with other settings says that it replaces the earlier priors (it did so silently)
    assert err.startswith(f"note: the priors of {', '.join(vq)} in results/smoke_prior.csv were made with other "
                          "settings (epochs 30 there, 1 now; hidden 64 there, 8 now; layers 8 there, 2 now): the first "
                          "new prior stored replaces them\n")
    # It said only that the first one's prior was stored, though the others' earlier rows had gone with it.
    assert (f"the one in progress is lost, and the earlier rows of {', '.join(vq[1:])}, made with other settings or "
            "of other weights, are removed.") in err
    assert list(read(tmp_path, "smoke_prior.csv")["config_id"]) == vq[:1]


def test_unknown_suite_is_one_line_and_exit_2(tmp_path, capsys):
    assert cli(tmp_path, "prior", "--suite", "nothing", "--quiet") == 2
    assert "nothing" in one_line_error(capsys)
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("config_id", ["vq-vae/9/nope", "vae/1/baseline"])
def test_unknown_or_non_vq_config_lists_the_valid_ones(smoke_run, capsys, config_id):
    csv = smoke_run / "results" / "smoke_prior.csv"
    before = csv.read_bytes() if csv.exists() else None
    assert cli(smoke_run, "prior", "--suite", "smoke", "--config", config_id, "--quiet") == 2
    line = one_line_error(capsys)
    assert config_id in line and "vq-vae/1/baseline" in line and "vq-vae/1/single/gaussian/a=40" in line
    assert (csv.read_bytes() if csv.exists() else None) == before


def copy_results(smoke_run, tmp_path, family: str) -> None:
    """A results dir holding only the smoke run's ``family`` configurations (meta and rows)."""
    (tmp_path / "results").mkdir()
    results = read(smoke_run, "smoke.csv")
    results[results["family"] == family].to_csv(tmp_path / "results" / "smoke.csv", index=False)
    meta = json.loads((smoke_run / "results" / "smoke_meta.json").read_text())
    meta["configurations"] = [c for c in meta["configurations"] if c.startswith(f"{family}/")]
    (tmp_path / "results" / "smoke_meta.json").write_text(json.dumps(meta))


def test_a_suite_without_vq_vae_is_one_line_and_exit_2(smoke_run, tmp_path, capsys):
    copy_results(smoke_run, tmp_path, "vae")
    assert cli(tmp_path, "prior", "--suite", "smoke", "--quiet") == 2
    assert "no VQ-VAE configuration" in one_line_error(capsys)
    assert not (tmp_path / "results" / "smoke_prior.csv").exists()


def test_a_missing_checkpoint_is_one_line_and_exit_2(smoke_run, tmp_path, capsys):
    copy_results(smoke_run, tmp_path, "vq-vae")  # the artifacts stay behind
    assert cli(tmp_path, "prior", "--suite", "smoke", "--quiet") == 2
    message = one_line_error(capsys)
    assert message.startswith("error: checkpoint of vq-vae/1/baseline fold 0 is missing: ") and "put the weights back" in message
    assert not (tmp_path / "results" / "smoke_prior.csv").exists()


@pytest.mark.parametrize("args, message", [
    (("--device", "tpu"), "error: unknown device 'tpu'; choose one of: "),
    # said as `run` says them, each of its flag ("need --epochs >= 1, --batch-size >= 1, --lr > 0; got 0, 128, ...")
    (("--epochs", "0"), "error: --epochs must be >= 1, got 0"),
    (("--samples", "-1", "--temperature", "nan"),
     "error: 2 problems: --samples must be >= 0, got -1 | --temperature must be a finite number > 0, got nan"),
    (("--fold", "-1"), "error: --fold must be >= 0, got -1"),
    (("--samples", "0", "--temperature", "1"), "error: --temperature is the samples' temperature: with --samples 0 "
                                               "none are drawn, so it would do nothing: leave it out"),
    (("--kernel", "1"), "error: --kernel must be odd and >= 3 (at 1 no layer widens the context: a code sees only "
                        "the code above it and the one to its left), got 1"),
    (("--samples", "33"), "error: --samples must be at most 32 (a column of the figure each), got 33"),
    (("--batch-size", "0", "--lr", "0", "--layers", "0", "--kernel", "-3"),
     "error: 4 problems: --batch-size must be >= 1, got 0 | --lr must be a finite number > 0, got 0.0 | "
     "--kernel must be odd and >= 3 (at 1 no layer widens the context: a code sees only the code above it and the "
     "one to its left), got -3 | --layers must be >= 1, got 0"),
    # not "finish it": no run makes a fold the suite does not have
    (("--fold", "7"), "error: fold 7 does not exist: suite 'smoke' has folds 0 to 4"),
    (("--config", "vq-vae/1/baselin"), "error: unknown VQ-VAE configuration of suite 'smoke': 'vq-vae/1/baselin' "
                                       "(did you mean 'vq-vae/1/baseline'?); choose one of: vq-vae/1/baseline, "),
    # it said "unknown VQ-VAE configuration", as if the id were mistyped
    (("--config", "vae/1/baseline"),
     "error: 'vae/1/baseline' is a Gaussian VAE configuration of suite 'smoke': the prior is a VQ-VAE's second stage; "
     "its VQ-VAE configurations: vq-vae/1/baseline, ")])
def test_bad_options_are_one_line_and_exit_2(smoke_run, capsys, args, message):
    assert cli(smoke_run, "prior", "--suite", "smoke", *args, "--quiet") == 2
    assert one_line_error(capsys).startswith(message)


def test_kept_rows_of_other_settings_name_what_replaces_them(prior_run, tmp_path, capsys):
    # a stage of every configuration was told to "rerun without --config" where it skipped one, its fold not done
    linked_results(prior_run, tmp_path)
    path = tmp_path / "results" / "smoke_prior.csv"
    shutil.copy(prior_run / "results" / "smoke_prior.csv", path)
    runs, ids = read(tmp_path, "smoke.csv"), list(read(prior_run, "smoke_prior.csv")["config_id"])
    runs.loc[(runs["config_id"] == ids[0]) & (runs["fold"] == 1), "state"] = "FAIL"
    runs.to_csv(tmp_path / "results" / "smoke.csv", index=False)
    assert cli(tmp_path, "prior", "--suite", "smoke", "--fold", "1", *FAST) == 2  # the priors are on fold 0
    assert one_line_error(capsys) == (
        f"error: {Path('results') / 'smoke_prior.csv'} holds priors of {ids[0]} made with other settings (fold 0 "
        "there, 1 now); give these the same settings, finish fold 1 of it first (this stage skips it), or remove "
        "that file")
    assert cli(tmp_path, "prior", "--suite", "smoke", "--fold", "1", "--config", ids[1], *FAST) == 2
    assert one_line_error(capsys).endswith(
        f"holds priors of {', '.join(i for i in ids if i != ids[1])} made with other settings (fold 0 there, 1 now); "
        "give these the same settings, rerun without --config to replace every configuration's, or remove that file")
    assert read(tmp_path, "smoke_prior.csv").equals(read(prior_run, "smoke_prior.csv"))


def test_a_full_rerun_with_other_settings_removes_the_old_rows_with_its_first_row(smoke_run, tmp_path):
    linked_results(smoke_run, tmp_path)
    results = tmp_path / "results"
    old = pd.DataFrame({"config_id": ["a", "b"], "fold": [0, 0], "val_nll_nats": [3.0, 3.1], "prior_path": ["", ""],
                        "epochs": [30, 30], "batch_size": [128, 128], "lr": [1e-3, 1e-3], "hidden": [64, 64],
                        "layers": [8, 8], "kernel": [5, 5]})
    old.to_csv(results / "smoke_prior.csv", index=False)
    runs = load_suite(results, "smoke").results
    settings = {"fold": 0, "epochs": 30, "batch_size": 128, "lr": 1e-3, "hidden": 64, "layers": 8, "kernel": 5}
    other = {**settings, "hidden": 32}
    for new, note in ((settings, None), (other, f"the priors of a, b in {results / 'smoke_prior.csv'} were made with "
                                                 "other settings (hidden 64 there, 32 now): the first new prior stored "
                                                 "replaces them")):
        # checking writes nothing: a Ctrl-C before the first row loses nothing; a rerun's own rows go without a note
        assert check_kept_rows(results, "smoke", runs, ["a", "b"], new, named=False) == note
        assert list(read_prior(results, "smoke")["config_id"]) == ["a", "b"]
    row = {"config_id": "b", "fold": 0, "val_nll_nats": 2.0, "prior_path": ""}
    _update_csv(results, "smoke", runs, [{**row, **settings}], ["a", "b"], ["a", "b"], settings)
    assert read_prior(results, "smoke").set_index("config_id")["val_nll_nats"].to_dict() == {"a": 3.0, "b": 2.0}
    # Other settings: the first new row takes the other old one with it (a Ctrl-C now leaves no old row).
    _update_csv(results, "smoke", runs, [{**row, **other}], ["a", "b"], ["a", "b"], other)
    assert list(read_prior(results, "smoke")["config_id"]) == ["b"]
    # rows of each kind: each named as it was made, with only the values that differ (not "hidden 32, 64 there")
    mixed = old.assign(config_id=["a", "b"], hidden=[32, 64])
    pd.concat([mixed, pd.DataFrame({"config_id": ["c"], "fold": [0], "val_nll_nats": [3.2]})]).to_csv(
        results / "smoke_prior.csv", index=False)
    assert check_kept_rows(results, "smoke", runs, ["a", "b", "c"], settings, named=False) == (
        f"the priors of a in {results / 'smoke_prior.csv'} were made with other settings (hidden 32 there, 64 now), "
        "and those of c by an earlier version: the first new prior stored replaces them")
