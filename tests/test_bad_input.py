"""Bad input gives a clear error: one test per user-facing ``ValueError`` branch no other test
reached, each asserting the whole message (so removing a check, or changing what it refuses,
fails here), and where cheap the boundary value that must still pass.

The prior-stage checks run on a real, tiny finished run (one VQ-VAE configuration, 10 mnist5k
images in 2 folds, an untrained checkpoint saved as the runner saves one) through the CLI.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import cli, one_line_error
from PIL import Image

from benchmark.balancing import BalanceConfig
from benchmark.checks import check_choice
from benchmark.conditioning import PixelSampler, conditioning, exact_grid
from benchmark.config import Configuration, MethodConfig, TrainConfig
from benchmark.data import Dataset, load_dataset, pixel_digest
from benchmark.ensemble import train_folds_together
from benchmark.export import load_checkpoint
from benchmark.models import build_model
from benchmark.prior import GatedPixelCNN, PriorConfig, PriorResult
from benchmark.prior_stage import draw_samples, fold_split, generate, load_prior, save_prior, training_pool
from benchmark.search import SearchOptions
from benchmark.search_space import SearchSettings, parse_range
from benchmark.stats import corrected_resampled_ttest
from benchmark.storage import METRICS_VERSION, StoreConfig
from benchmark.suites import Suite, get_suite
from benchmark.train import resolve_device


def raises(message: str):
    """``pytest.raises`` of a ``ValueError`` whose message is exactly ``message``."""
    return pytest.raises(ValueError, match=f"^{re.escape(message)}$")


# --------------------------------------------------------------------------- a tiny finished run

SUITE, BASELINE, MULTI = "tiny", "vq-vae/1/baseline", "vq-vae/1/multidecoder/uniform"
META = {"suite": SUITE, "dataset": "mnist5k", "limit": 10, "seed": 0, "folds": 2, "repeats": 1,
        "configurations": [BASELINE]}
CHECKPOINT = f"results/{SUITE}/artifacts/fold0.pt"  # as the CSV records it, relative to where `run` ran


def finished_run(cwd: Path, *, n_train: int = 5, n_val: int = 5, weights_of: str = BASELINE,
                 version: int | None = METRICS_VERSION) -> Path:
    """``results/`` as `run` leaves it with fold 0 of vq-vae/1/baseline COMPLETE; its checkpoint
    holds the weights and info of ``weights_of`` (another configuration's: swapped files), saved by
    metrics ``version`` (None: unrecorded, as before checkpoints recorded it)."""
    configuration = (Configuration("vq-vae", 1) if weights_of == BASELINE else
                     Configuration("vq-vae", 1, MethodConfig("multidecoder", "uniform")))
    assert configuration.id == weights_of
    model = build_model("vq-vae", 1, configuration.method.method, 1, 32)
    info = {**configuration.flat(), "fold": 0, "image_shape": [1, 32, 32], "dataset": "mnist5k"}
    if version is not None:
        info["metrics_version"] = version
    (cwd / CHECKPOINT).parent.mkdir(parents=True)
    torch.save({"state_dict": model.state_dict(), "info": info}, cwd / CHECKPOINT)
    row = {**Configuration("vq-vae", 1).flat(), "fold": 0, "state": "COMPLETE", "recon": 0.05, "latent": 0.01,
           "checkpoint": CHECKPOINT, "n_train": n_train, "n_val": n_val}
    pd.DataFrame([row]).to_csv(cwd / "results" / f"{SUITE}.csv", index=False)
    (cwd / "results" / f"{SUITE}_meta.json").write_text(json.dumps(META))
    return cwd


def prior_error(cwd: Path, capsys) -> str:
    # The checks come before any training; a tiny prior keeps a run that passes them wrongly short.
    tiny = ("--device", "cpu", "--epochs", "1", "--hidden", "4", "--layers", "1", "--samples", "0", "--quiet")
    assert cli(cwd, "prior", "--suite", SUITE, *tiny) == 2
    assert not (cwd / "results" / f"{SUITE}_prior.csv").exists()  # refused before anything is written
    return one_line_error(capsys)


def test_the_tiny_run_splits_into_the_recorded_5_and_5_images():
    """The counts the mismatch tests change are the real ones: unchanged, the split passes."""
    train, val = fold_split(training_pool(META), META, 0, (5, 5))
    assert (len(train), len(val)) == (5, 5)


def test_a_prior_on_as_many_images_with_other_pixels_than_the_run_split_is_refused():
    pool = training_pool(META)
    assert torch.equal(training_pool({**META, "images_digest": pixel_digest(pool)}), pool)
    with raises("the mnist5k images here are not those run 'tiny' split into its folds (other files, or the same in "
                "another order or of another number): the folds rebuilt from them would be others; put those images "
                "back"):
        training_pool({**META, "suite": SUITE, "images_digest": pixel_digest(pool.flip(0))})


@pytest.mark.parametrize("counts, part, got, recorded", [
    ({"n_train": 6}, "training", 5, 6),
    ({"n_val": 4}, "validation", 5, 4),
])
def test_a_fold_rebuilt_with_other_image_counts_than_the_run_recorded_is_refused(tmp_path, capsys, counts, part,
                                                                                 got, recorded):
    # the data changed since the run: a prior scored on other images would be silently wrong
    finished_run(tmp_path, **counts)
    assert prior_error(tmp_path, capsys) == (f"error: rebuilt fold 0 has {got} {part} images but the run recorded "
                                             f"{recorded}; has the dataset 'mnist5k' changed since the run?")


def test_a_checkpoint_holding_another_configuration_is_refused(tmp_path, capsys):
    finished_run(tmp_path, weights_of=MULTI)  # loads fine: only its info says whose it is
    assert prior_error(tmp_path, capsys) == (f"error: checkpoint {CHECKPOINT} holds {MULTI}, not {BASELINE} (swapped "
                                             "or overwritten since the run?): put its own weights back")


@pytest.mark.parametrize("version", [None, 3])
def test_a_vq_vae_1_checkpoint_saved_before_its_layers_changed_is_refused(tmp_path, capsys, version):
    """Its weights load into this version's VQ-VAE 1 without complaint, but would run in another
    model than the one they were trained in."""
    finished_run(tmp_path, version=version)
    saved = "was saved by" if version else "records no metrics version, so it may come from"
    assert prior_error(tmp_path, capsys) == (
        f"error: cannot load the checkpoint of {BASELINE} ({CHECKPOINT}): the checkpoint {saved} an earlier "
        "version of mtvae-bench, in which VQ-VAE 1 applied its activation twice after its last encoder and first "
        "decoder layers, so its folds trained another model than this version's; train the configuration again "
        "in a study of this version")
    assert load_checkpoint(finished_run(tmp_path / "now") / CHECKPOINT)[1]["metrics_version"] == METRICS_VERSION


def stored_prior(path: Path, codes: int) -> GatedPixelCNN:
    """A tiny prior over ``codes`` codes, saved and loaded as the stage stores one."""
    result = PriorResult(GatedPixelCNN(PriorConfig(codes, hidden=4, layers=1, kernel=3)), 1.0, 1.0, math.log(codes), 1)
    return load_prior(save_prior(path, result, {}, None))[0]


@pytest.mark.parametrize("draw", [lambda model, prior, n: generate(model, prior, n)[0],
                                  lambda model, prior, n: draw_samples(model, prior, torch.empty(0), n)["codes"]],
                         ids=["generate", "draw_samples"])
def test_a_prior_stored_for_another_codebook_size_is_refused(tmp_path, draw):
    # vq-vae/3 has 256 codes, vq-vae/1 128: the stored prior of one paired with the other's checkpoint
    model, _ = load_checkpoint(finished_run(tmp_path) / CHECKPOINT)
    with raises("the prior models 256 codes but the VQ-VAE has 128"):
        draw(model, stored_prior(tmp_path / "k256.pt", 256), 2)
    assert draw(model, stored_prior(tmp_path / "k128.pt", 128), 2).shape == (2, 8, 8)  # a matching K draws


def test_a_damaged_meta_file_is_named_by_report(tmp_path, capsys):
    finished_run(tmp_path)
    damaged = '{"suite": "tiny", "folds": 2'  # cut short
    (tmp_path / "results" / f"{SUITE}_meta.json").write_text(damaged)
    with pytest.raises(json.JSONDecodeError) as decode:
        json.loads(damaged)
    assert cli(tmp_path, "report", "--suite", SUITE, "--no-figures") == 2
    assert one_line_error(capsys) == f"error: results/{SUITE}_meta.json is not valid JSON: {decode.value}"


# --------------------------------------------------------------------------- conditioning


@pytest.mark.parametrize("shape", [(3, 1, 4, 4), (2, 1, 4, 5), (2, 2, 4, 4)])
def test_a_mask_that_does_not_fit_the_images_is_refused(shape):
    images = torch.zeros(2, 1, 4, 4)
    with raises(f"mask shape {shape} does not fit images (2, 1, 4, 4)"):
        conditioning(images, torch.zeros(shape))
    assert conditioning(images, torch.zeros(2, 1, 4, 4)).shape == (2, 2, 4, 4)


@pytest.mark.parametrize("make, stride", [(lambda: exact_grid(8, 0), 0),
                                          (lambda: PixelSampler("exact", 8, grid_stride=9), 9)])
def test_a_grid_stride_outside_the_image_is_refused(make, stride):
    with raises(f"grid stride must be in [1, 8], got {stride}"):
        make()
    assert exact_grid(8, 8).sum() == 1 and exact_grid(8, 1).all()  # both ends of the range pass


@pytest.mark.parametrize("size", [0, -3])
def test_an_image_size_below_one_is_refused(size):
    with raises(f"image_size must be positive, got {size}"):
        PixelSampler("uniform", size)


def test_the_exact_grid_with_a_power_law_exponent_is_refused():
    # MethodConfig refuses the pair before this check; the report's figures build a sampler from a CSV row directly
    with raises("the exact grid has a fixed count; use uniform or gaussian with an exponent"):
        PixelSampler("exact", 32, exponent=2.0)


# --------------------------------------------------------------------------- configurations, models, suites


@pytest.mark.parametrize("make, message", [
    (lambda: MethodConfig("single", "uniform"), "the single decoder needs a power-law exponent"),
    (lambda: MethodConfig("multidecoder", "uniform", exponent=2.0),
     "the multidecoder uses a constant count, not a power-law exponent"),
])
def test_a_method_without_its_kind_of_pixel_count_is_refused(make, message):
    with raises(message):
        make()


@pytest.mark.parametrize("make, message", [
    (lambda: MethodConfig("multidecodr"),
     "unknown method 'multidecodr' (did you mean 'multidecoder'?); choose one of: baseline, multidecoder, single"),
    (lambda: TrainConfig(device="cuda1"), "unknown device 'cuda1' (did you mean 'cuda'?); choose one of: auto, cpu, "
                                          "cuda, cuda:N"),
    (lambda: build_model("vq-vae", 4, "baseline"), "unknown vq-vae config 4; choose one of: 1, 2, 3"),
    # no hint where none is near: 'gpu' is no typo of 'cpu'
    (lambda: TrainConfig(device="gpu"), "unknown device 'gpu'; choose one of: auto, cpu, cuda, cuda:N"),
    # the one choice that a name begins, however far it is from the whole: a configuration id cut short
    (lambda: check_choice("configuration", "vq-vae/1/single", ["vq-vae/1/baseline", "vq-vae/1/single/gaussian/a=40"]),
     "unknown configuration 'vq-vae/1/single' (did you mean 'vq-vae/1/single/gaussian/a=40'?); choose one of: "
     "vq-vae/1/baseline, vq-vae/1/single/gaussian/a=40"),
    # a name in capitals is far from its lower case for difflib: "unknown suite 'SMOKE'" gave no hint; of
    # several in other case, none is the one meant
    (lambda: check_choice("study", "study", ["Study", "STUDY"]), "unknown study 'study'; choose one of: Study, STUDY"),
    (lambda: get_suite("SMOKE"),
     "unknown suite 'SMOKE' (did you mean 'smoke'?); choose one of: smoke, quick, full, or a path to a .toml file"),
    (lambda: SearchSettings("vae", 1, "single", "uniform", ranges=dict([parse_range("exponant=1:10")])),
     "--range: no parameter 'exponant' (did you mean 'exponent'?) in this search; it tunes: exponent, beta"),
])
def test_a_mistyped_choice_is_named_with_the_closest_one_and_the_list(make, message):
    with raises(message):
        make()


def test_a_model_for_images_without_channels_is_refused():
    with raises("channels must be >= 1, got 0"):
        build_model("vq-vae", 1, "baseline", channels=0)


def test_a_suite_without_configurations_is_refused():
    # only through the library: a suite file needs a [[configurations]] table first (below)
    with raises("suite 'x' has no configurations"):
        Suite("x", ())


def test_a_suite_made_in_code_from_a_list_keeps_a_tuple_and_stays_hashable():
    suite = Suite("x", [Configuration("vae", 1)])
    assert suite.configurations == (Configuration("vae", 1),)
    assert hash(suite) == hash(Suite("x", (Configuration("vae", 1),)))


def test_a_suites_training_and_download_of_the_wrong_kind_are_named_in_field_order():
    with raises("3 problems: name must be text, got 1 | train must be a TrainConfig, got 'x' | "
                "download must be True or False, got 'yes'"):
        Suite(1, (Configuration("vae", 1),), train="x", download="yes")
    assert Suite("x", (Configuration("vae", 1),), download=True).download  # the kind asked for: a bool is one


VALID_TABLE = '[[configurations]]\nfamily = "vae"\nconfig = 1\nmethod = "baseline"\n'


@pytest.mark.parametrize("text, message", [
    ('name = "other.toml"\n' + VALID_TABLE, "suite file {path}: suite name 'other.toml' must not end in .toml"),
    ('dataset = "mnist5k"\n', "suite file {path} needs at least one [[configurations]] table"),
    ("configurations = []\n", "suite file {path} needs at least one [[configurations]] table"),
    ('configurations = "vae"\n', "suite file {path} needs at least one [[configurations]] table"),
    ("train = 5\n" + VALID_TABLE, "suite file {path}: [train] must be a table, got 5"),
])
def test_a_malformed_suite_file_is_refused(tmp_path, text, message):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with raises(message.format(path=path)):
        get_suite(str(path))


def test_a_valid_suite_file_loads(tmp_path):
    """The malformed files above differ from this one in the one thing refused."""
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\n[train]\nepochs = 1\n' + VALID_TABLE)
    assert [c.id for c in get_suite(str(path)).configurations] == ["vae/1/baseline"]


def test_a_suite_file_without_the_toml_suffix_is_refused_saying_so(tmp_path):
    # run read it while report and prior took its path for a suite's name, so its results went unfound
    path = tmp_path / "mine"
    path.write_text('name = "mine"\n' + VALID_TABLE)
    with raises(f"unknown suite {str(path)!r}; choose one of: smoke, quick, full, or a path to a .toml file "
                "(a suite file's name ends in .toml)"):
        get_suite(str(path))


def test_a_mistyped_suffix_of_a_suite_file_is_named_with_the_file_meant(tmp_path):
    (tmp_path / "mine.toml").write_text('name = "mine"\n' + VALID_TABLE)
    for typed in ("mine.tml", "mine.tomll"):
        with raises(f"unknown suite {str(tmp_path / typed)!r}; choose one of: smoke, quick, full, or a path to a .toml "
                    f"file (did you mean {tmp_path / 'mine.toml'}?)"):
            get_suite(str(tmp_path / typed))


def test_a_run_of_such_a_file_that_an_earlier_version_recorded_is_told_the_same(tmp_path, capsys):
    # not sent back to the command it recorded, which is the one refused
    (tmp_path / "mine").write_text('name = "mine"\n' + VALID_TABLE)
    (tmp_path / "results").mkdir()
    recorded = {"command": "python -m benchmark run --suite mine"}
    (tmp_path / "results" / "mine_meta.json").write_text(json.dumps(recorded))
    assert cli(tmp_path, "run", "--suite", "mine") == 2
    assert one_line_error(capsys).endswith("or a path to a .toml file (a suite file's name ends in .toml)")


# --------------------------------------------------------------------------- statistics, ensembles, balancing


@pytest.mark.parametrize("kwargs, message", [
    ({"k": 1}, "need k >= 2, repeats >= 1 and positive set sizes, got k=1, repeats=1, n_train=80, n_val=20"),
    ({"k": 2, "d": [0.1, 0.2, 0.3]}, "3 differences for 2 folds × 1 repeat: at most one per fold and repeat (2)"),
    ({"k": 2, "repeats": 2, "d": [0.1, 0.2, 0.3, 0.4, 0.5]}, "5 differences for 2 folds × 2 repeats: at most one per fold and "
     "repeat (4)"),
])
def test_a_t_test_with_too_few_folds_or_too_many_differences_is_refused(kwargs, message):
    kwargs = {"d": [0.1, 0.2], "n_train": 80, "n_val": 20, **kwargs}
    with raises(message):
        corrected_resampled_ttest(**kwargs)


def test_a_t_test_with_one_difference_per_fold_runs():
    # the bound is k × repeats finite differences: exactly that many (a NaN not counted) passes
    assert corrected_resampled_ttest([0.1, 0.2, 0.3, 0.4, math.nan], 80, 20, k=2, repeats=2).n == 4


@pytest.mark.parametrize("seeds", [[0], [0, 1, 2]])
def test_stacked_folds_need_one_seed_each(seeds):
    images = torch.rand(4, 1, 32, 32)
    splits = [(np.array([0, 1]), np.array([2, 3])), (np.array([2, 3]), np.array([0, 1]))]
    with raises(f"2 folds need 2 seeds, got {len(seeds)}"):
        train_folds_together(Configuration("vae", 1), images, splits, TrainConfig(epochs=1, batch_size=2,
                                                                                  device="cpu"), seeds)


@pytest.mark.parametrize("kwargs, got", [({"update_every": 0}, "update_every=0, window=100"),
                                         ({"window": 1}, "update_every=100, window=1")])
def test_softadapt_needs_a_positive_period_and_a_window_of_two(kwargs, got):
    with raises(f"SoftAdapt needs update_every >= 1 and window >= 2, got {got}"):
        BalanceConfig(softadapt=True, **kwargs)
    assert BalanceConfig(softadapt=True, update_every=1, window=2).window == 2


# --------------------------------------------------------------------------- command options, devices, data, folders


@pytest.mark.parametrize("option, value, message", [
    ("--trials", "0", "--trials must be >= 1, got 0"),
    ("--timeout", "0", "--timeout must be > 0 seconds, got 0.0"),
    ("--timeout", "-5", "--timeout must be > 0 seconds, got -5.0"),
    ("--timeout", "nan", "--timeout must be > 0 seconds, got nan"),
])
def test_search_refuses_no_trials_and_a_timeout_not_above_zero(tmp_path, capsys, option, value, message):
    # a tiny search, which a broken check would start (and finish soon) instead of refusing
    args = ("search", "--family", "vae", "--config", "1", "--method", "single", "--sampling", "uniform",
            "--dataset", "digits", "--limit", "10", "--folds", "2", "--epochs", "1", "--device", "cpu", "--quiet")
    assert cli(tmp_path, *args, *(("--trials", "1") if option != "--trials" else ()), option, value) == 2
    assert one_line_error(capsys) == f"error: {message}"
    assert not list(tmp_path.iterdir())  # refused before a study is made
    assert SearchOptions(trials=1, timeout=0.5).trials == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here: the check cannot fire")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_a_gpu_asked_for_without_cuda_is_refused(device):
    with raises(f"device {device!r} asked for, but CUDA is not available here"):
        resolve_device(device)


@pytest.mark.parametrize("change, message", [
    ({"train": torch.zeros(2, 4, 4)},
     "Dataset 'x': train must be a float32 (N, C, H, W) tensor, got torch.float32 with shape (2, 4, 4)"),
    ({"test": torch.zeros(2, 1, 4, 4, dtype=torch.float64)},
     "Dataset 'x': test must be a float32 (N, C, H, W) tensor, got torch.float64 with shape (2, 1, 4, 4)"),
    ({"test": torch.zeros(2, 3, 4, 4)},
     "Dataset 'x': train images (1, 4, 4) and test images (3, 4, 4) differ in shape"),
    ({"train_labels": torch.zeros(2, dtype=torch.int32)},
     "Dataset 'x': train labels must be int64 of shape (2,), got torch.int32 (2,)"),
    ({"test_labels": torch.zeros(3, dtype=torch.int64)},
     "Dataset 'x': test labels must be int64 of shape (2,), got torch.int64 (3,)"),
])
def test_a_dataset_of_tensors_the_models_cannot_take_is_refused(change, message):
    parts = {"train": torch.zeros(2, 1, 4, 4), "test": torch.zeros(2, 1, 4, 4),
             "train_labels": torch.zeros(2, dtype=torch.int64), "test_labels": torch.zeros(2, dtype=torch.int64)}
    Dataset("x", **parts)  # each case differs from this valid one in one part
    with raises(message):
        Dataset("x", **{**parts, **change})


def test_a_folder_of_one_image_is_refused(tmp_path):
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "a.png")
    with raises(f"folder:{tmp_path}: only one image under {tmp_path}; a train/test split needs at least two"):
        load_dataset(f"folder:{tmp_path}")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "b.png")
    assert len(load_dataset(f"folder:{tmp_path}", image_size=8).train) == 1


def test_a_studies_folder_that_cannot_be_written_is_refused(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can write to any folder: the check cannot fire")
    studies = tmp_path / "studies"
    studies.mkdir(mode=0o555)
    try:
        with raises(f"--studies-dir {studies}: the folder is not writable (Permission denied)"):
            StoreConfig(studies_dir=studies, results_dir=tmp_path / "results").check_folders("s")
    finally:
        studies.chmod(0o755)


@pytest.mark.parametrize("command", [["run", "--suite", "smoke"], ["studies", "list"], ["studies", "show", "x"],
                                     ["search", "--family", "vae", "--config", "1", "--method", "baseline"]])
@pytest.mark.parametrize("storage, message", [
    ("", "--storage is empty: give a storage URL, or leave it out for the SQLite files under --studies-dir"),
    ("studies/x.db", "--storage studies/x.db is not a URL: for a SQLite file give sqlite:///studies/x.db, or a "
                     "database's, e.g. postgresql://user@host/db"),
    ("sqlite:x.db", "--storage sqlite:x.db is not a URL: a storage URL reads scheme://…, e.g. "
                    "sqlite:///studies/x.db or postgresql://user@host/db"),
    # SQLAlchemy's words were "Can't load plugin: sqlalchemy.dialects:foo" and "invalid literal for int() …"
    ("foo://me:secret@host/db", "--storage foo://me:***@host/db: SQLAlchemy knows no database or driver 'foo'; "
                                "give sqlite:///FILE or postgresql://user@host/db"),
    ("postgresql://me:secret@host:port/db", "--storage host:port/db is not a URL SQLAlchemy can read: invalid "
                                            "literal for int() with base 10: 'port'"),
])
def test_a_storage_that_is_no_url_is_refused_with_the_url_meant(tmp_path, capsys, command, storage, message):
    # An empty one was taken as none (the studies went to studies/), a path failed in SQLAlchemy's words.
    assert cli(tmp_path, *command, "--storage", storage) == 2
    assert one_line_error(capsys) == f"error: {message}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["run", "--suite", "smoke", "--params-from", "s"], ["report"]])
def test_a_search_storage_that_is_no_url_is_refused_with_the_url_meant(tmp_path, capsys, command):
    assert cli(tmp_path, *command, "--search-storage", "studies/s.db") == 2
    assert one_line_error(capsys) == ("error: --search-storage studies/s.db is not a URL: for a SQLite file give "
                                      "sqlite:///studies/s.db, or a database's, e.g. postgresql://user@host/db")
    assert list(tmp_path.iterdir()) == []


def test_an_empty_search_storage_without_params_from_is_refused(tmp_path, capsys):
    # it was taken as none, and the run trained
    assert cli(tmp_path, "run", "--suite", "smoke", "--search-storage", "") == 2
    assert one_line_error(capsys).startswith("error: --search-storage is where the --params-from studies are")
    assert list(tmp_path.iterdir()) == []
