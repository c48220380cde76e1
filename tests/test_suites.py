"""The built-in suites (smoke, quick, full), the `suites` command that lists them, and the seeds
and folds that resuming a suite and reproducing a search rely on never changing."""

import copy
import json
import math
import os
import pickle
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli, one_line_error, text_table
from PIL import Image

from benchmark.checks import Problems
from benchmark.cv import fold_indices, unit_seed
from benchmark.models import DEFAULT_BETA
from benchmark.progress import duration
from benchmark import suites
from benchmark.suites import builtin_suites, get_suite, limited

# The thesis grid of one model (SPEC.md, "The full suite"; thesis section 4.3: 9 rows per model
# and config): (method, sampling, SoftAdapt, exponent). The text's section 4.3 table drops the
# exponents (its Parameters column reads ", UNIFORM" / ", GAUSSIAN", two rows of each per model); the
# thesis's LaTeX table prints them, "Exponent=40" and "Exponent=60", within the range section 4.2.2 explored.
THESIS_EXPONENTS_EXPLORED = {20.0, 30.0, 40.0, 50.0, 60.0}
GRID = [("baseline", None, False, None),
        ("multidecoder", "exact", False, None), ("multidecoder", "exact", True, None),
        ("multidecoder", "uniform", False, None), ("multidecoder", "uniform", True, None),
        ("single", "uniform", False, 40.0), ("single", "uniform", False, 60.0),
        ("single", "gaussian", False, 40.0), ("single", "gaussian", False, 60.0)]
MODELS = [("vae", 1), ("vae", 2), ("vq-vae", 1), ("vq-vae", 2), ("vq-vae", 3)]
SOFTADAPT_BETA = {"vae": 1e-4, "vq-vae": 5e-3}  # the thesis's SoftAdapt β (SPEC.md)


def described(configuration):
    m = configuration.method
    return (configuration.family, configuration.config, m.method, m.sampling, m.balance.softadapt, m.exponent)


def suites_table(capsys) -> dict[str, list[str]]:
    """`python -m benchmark suites`, run in-process: its rows by suite name, split into columns."""
    assert cli(Path.cwd(), "suites") == 0
    header, alignment, rows = text_table(capsys.readouterr().out.splitlines())
    assert header == ["suite", "configs", "folds", "units", "epochs", "images", "est. 2-core CPU", "description"]
    assert alignment == ["left", *["right"] * 6, "left"]  # the sizes and the estimate as numbers
    return {name: [*cells[:5], *cells[5].split(), description] for name, *cells, description in rows}


# ---------------------------------------------------------------- the `suites` command


def test_suites_lists_smoke_quick_and_full_with_their_sizes(capsys):
    rows = suites_table(capsys)
    assert list(rows) == ["smoke", "quick", "full"]
    # configurations, folds, units, epochs, training images (limit)
    assert rows["smoke"][:5] == ["6", "5", "30", "2", "400"]
    assert rows["quick"][:5] == ["45", "5", "225", "3", "1250"]
    assert rows["full"][:5] == ["45", "5", "225", "100", "all"]
    assert rows["smoke"][7] == "every family and method once (config 1), 2 epochs (batch 32) on 400 mnist5k images"
    assert rows["quick"][7].startswith("the thesis grid, 3 epochs on 1,250 mnist5k images")
    assert rows["full"][7].startswith("the thesis grid with the thesis's training (100 epochs)")


def test_suites_estimates_match_what_the_readme_says(capsys):
    rows = suites_table(capsys)
    # README: smoke "(`suites` estimates the training alone: 9.7 s)"; quick measured 35–37 min;
    # full "about 3 days (`suites` estimate)".
    assert rows["smoke"][5:7] == ["9.7", "s"]
    assert rows["quick"][6] == "min" and 30 <= int(rows["quick"][5]) <= 45
    assert rows["full"][6] == "h" and 2 * 24 <= int(rows["full"][5]) <= 4 * 24


def test_the_cpu_estimate_of_smoke_by_hand():
    # smoke: 400 images, 5 folds → 320 training images a fold, × 2 epochs = 640 images a unit.
    # Throughput (images/s): VAE 1 2,700, VQ-VAE 1 6,400; method cost baseline 1, Multidecoder 1.7,
    # Single decoder 1.25; 0.1 s fixed cost a unit.
    per_fold = 640 / 2700 * (1 + 1.7 + 1.25) + 640 / 6400 * (1 + 1.7 + 1.25) + 6 * 0.1
    smoke = get_suite("smoke")
    assert smoke.cpu_seconds() == pytest.approx(per_fold * 5, rel=1e-9)
    assert smoke.override(repeats=3).cpu_seconds() == pytest.approx(3 * per_fold * 5, rel=1e-9)
    # 10 folds: 360 training images a fold instead of 320, and twice the units
    assert smoke.override(folds=10).cpu_seconds() == pytest.approx(((per_fold - 0.6) * 360 / 320 + 0.6) * 10,
                                                                   rel=1e-9)
    # Units named by their configurations: two folds of the first, one of the last
    ids = [c.id for c in smoke.configurations]
    assert smoke.cpu_seconds([ids[0], ids[0], ids[-1]]) == pytest.approx(
        640 / 2700 * 2 + 640 / 6400 * 1.25 + 3 * 0.1, rel=1e-9)
    # A --limit above the dataset's training images takes them all (4,000 of mnist5k's), as the run does
    assert smoke.override(limit=100_000).cpu_seconds() == pytest.approx(smoke.override(limit=4_000).cpu_seconds())
    # CelebA's 64×64 images cost four times a 32×32 image's step, on its 162,770 training images
    single = get_suite("smoke").override(dataset="celeba")
    assert single.cpu_seconds([ids[0]]) == pytest.approx(400 * 4 / 5 * 2 * 4 / 2700 + 0.1, rel=1e-9)
    assert replace(single, limit=None).cpu_seconds([ids[0]]) == pytest.approx(
        162_770 * 4 / 5 * 2 * 4 / 2700 + 0.1, rel=1e-9)


def test_the_cpu_estimate_of_a_folder_counts_its_images(tmp_path, monkeypatch):
    counted = []
    monkeypatch.setattr("benchmark.suites.folder_training_images",
                        lambda root, count=suites.folder_training_images: counted.append(root) or count(root))
    for i in range(10):
        Image.new("L", (40, 30), i).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    ids = [c.id for c in get_suite("smoke").configurations]
    # 10 images, 2 held out as the test split: 8 split into 5 folds, whatever the suite's limit of 400
    folder = get_suite("smoke").override(dataset=f"folder:{tmp_path}")
    assert folder.cpu_seconds([ids[0]]) == pytest.approx(8 * 4 / 5 * 2 / 2700 + 0.1, rel=1e-9)
    assert folder.dataset_images == 8 and limited(folder.dataset_images, folder.limit) is None  # `suites`: all
    assert limited(folder.dataset_images, 5) == 5
    assert len(counted) == 1  # once a suite: a folder of CelebA's size takes seconds to list
    # a folder not here (a run's on another machine) is taken to hold 48,000 training images, or the limit
    elsewhere = folder.override(dataset=f"folder:{tmp_path / 'elsewhere'}")
    assert elsewhere.cpu_seconds([ids[0]]) == pytest.approx(400 * 4 / 5 * 2 / 2700 + 0.1, rel=1e-9)
    assert replace(elsewhere, limit=None).cpu_seconds([ids[0]]) == pytest.approx(48_000 * 4 / 5 * 2 / 2700 + 0.1,
                                                                                  rel=1e-9)


def test_suites_says_of_a_folder_not_here_what_its_estimate_assumes(tmp_path, capsys):
    (tmp_path / "far.toml").write_text('name = "far"\ndataset = "folder:nowhere"\n[[configurations]]\nfamily = "vae"\n'
                                       'config = 1\n')
    assert cli(tmp_path, "suites", "far.toml") == 0
    assert capsys.readouterr().err == ("note: folder:nowhere holds no images to split here (no such folder, or "
                                       "fewer than two images): far's estimate is of 48,000 training images\n")
    (tmp_path / "nowhere").mkdir()
    for i in range(5):
        Image.new("L", (8, 8), i).save(tmp_path / "nowhere" / f"{i}.png")
    assert cli(tmp_path, "suites", "far.toml") == 0
    assert capsys.readouterr().err == ""


def test_suites_estimates_a_suite_on_another_dataset_as_run_would_train_it(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    for i in range(10):
        Image.new("L", (8, 8), i).save(tmp_path / "mine" / f"{i}.png")
    assert cli(tmp_path, "suites", "smoke", "--dataset", "folder:mine") == 0
    table, _ = capsys.readouterr().out.split("\n\n")
    _, _, rows = text_table(table.splitlines()[:3])
    # the folder's 8 training images, not smoke's 400 of mnist5k
    assert rows[0][6] == duration(get_suite("smoke").override(dataset=f"folder:{tmp_path / 'mine'}").cpu_seconds())
    assert rows[0][6] != duration(get_suite("smoke").cpu_seconds())
    assert cli(tmp_path, "suites", "--dataset", "mnistt") == 2
    assert one_line_error(capsys) == ("error: --dataset: unknown dataset 'mnistt' (did you mean 'mnist'?); choose "
                                      "one of: mnist5k, digits, mnist, cifar10, celeba, folder:PATH")
    assert cli(tmp_path, "suites", "smoke", "--dataset", "folder:") == 2  # it estimated 400 images, as of a folder
    assert one_line_error(capsys) == "error: --dataset 'folder:' names no folder; use folder:PATH"


def test_suites_describes_the_suite_files_and_names_given(tmp_path, capsys):
    (tmp_path / "mine.toml").write_text('name = "mine"\nlimit = 2000\n[train]\nepochs = 10\n'
                                        '[[configurations]]\nfamily = "vae"\nconfig = 1\n')
    assert cli(tmp_path, "suites", "mine.toml", "smoke") == 0
    table, mine, smoke = capsys.readouterr().out.split("\n\n")
    _, _, rows = text_table(table.splitlines())
    assert [row[:6] for row in rows] == [["mine", "9", "5", "45", "10", "2000"], ["smoke", "6", "5", "30", "2", "400"]]
    # a suite named is listed with its configurations and their cost, which add up to the suite's
    assert mine.splitlines()[0] == "mine: its configurations, each trained on 5 folds (est. 2-core CPU per fold)"
    assert [line.split()[0] for line in mine.splitlines()[1:]] == [c.id for c in get_suite(str(tmp_path / "mine.toml")).configurations]
    for listing in (mine.splitlines()[1:], smoke.splitlines()[1:]):
        # indented, the ids left-aligned and the estimates ("6.0 s", "10 s") right-aligned: every line as long
        assert all(line.startswith("  ") and not line.startswith("   ") for line in listing)
        assert len({len(line) for line in listing}) == 1
    # estimates of more than one width, so that the equal lengths above tell right from left alignment
    assert len({len(line.split(maxsplit=1)[1].strip()) for line in mine.splitlines()[1:]}) > 1
    listed = {line.split()[0]: line.split()[1:] for line in smoke.splitlines()[1:]}
    assert list(listed) == [c.id for c in get_suite("smoke").configurations]
    assert all(unit == "s" for _, unit in listed.values())
    assert sum(float(amount) for amount, _ in listed.values()) * 5 == pytest.approx(
        get_suite("smoke").cpu_seconds(), abs=0.05 * 5 * 6)
    assert cli(tmp_path, "suites", "smokee") == 2
    assert capsys.readouterr().err.strip() == (
        "error: unknown suite 'smokee' (did you mean 'smoke'?); choose one of: smoke, quick, full, or a path to a "
        ".toml file")



def test_suites_gives_the_cost_of_a_run_with_run_s_size_options(capsys):
    assert cli(Path.cwd(), "suites", "--epochs", "4", "--limit", "500", "--folds", "4") == 0
    out = capsys.readouterr().out.splitlines()
    _, _, rows = text_table(out[:-1])
    assert [row[:5] for row in rows] == [["smoke", "6", "4", "24", "4"], ["quick", "45", "4", "180", "4"],
                                         ["full", "45", "4", "180", "4"]]
    assert {row[5] for row in rows} == {"500"}
    quick = get_suite("quick").override(epochs=4, limit=500, folds=4)
    assert rows[1][6] == duration(quick.cpu_seconds()) != duration(get_suite("quick").cpu_seconds())
    assert out[-1] == "(with --epochs 4, --folds 4, --limit 500; the descriptions give each suite as it is defined)"
    assert cli(Path.cwd(), "suites", "smoke", "--limit", "100000") == 0  # all of mnist5k's 4,000, as estimated
    assert text_table(capsys.readouterr().out.split("\n\n")[0].splitlines()[:-1])[2][0][5] == "all"
    assert cli(Path.cwd(), "suites", "smoke", "--repeats", "2") == 0
    listing = capsys.readouterr().out.split("\n\n")[1]
    assert listing.startswith("smoke: its configurations, each trained on 10 folds")
    # as `run` refuses them, by their flags, all at once
    assert cli(Path.cwd(), "suites", "--epochs", "0", "--folds", "1") == 2
    assert capsys.readouterr().err.strip() == (
        "error: 2 problems: --folds must be >= 2 for cross-validation, got 1 | --epochs must be >= 1, got 0")


# ---------------------------------------------------------------- the full suite = the thesis grid


def test_the_full_suite_is_the_thesis_grid():
    full = get_suite("full")
    expected = [(family, config, *row) for family, config in MODELS for row in GRID]
    assert len(expected) == 45
    assert sorted(map(described, full.configurations), key=repr) == sorted(expected, key=repr)
    ids = [c.id for c in full.configurations]
    assert len(set(ids)) == 45
    assert "vq-vae/3/single/gaussian/a=40" in ids and "vae/2/multidecoder/exact/softadapt" in ids
    exponents = {c.method.exponent for c in full.configurations if c.method.method == "single"}
    assert exponents == {40.0, 60.0} and exponents <= THESIS_EXPONENTS_EXPLORED
    for c in full.configurations:  # the thesis's loss balance: fixed weights 1, or SoftAdapt with its β
        b = c.balance
        assert (b.w1, b.w2, b.beta) == (1.0, 1.0, DEFAULT_BETA[c.family]), c.id
        assert b.softadapt_beta == (SOFTADAPT_BETA[c.family] if b.softadapt else None), c.id
        assert c.method.count is None, c.id  # Multidecoder: the exact grid's count for exact and uniform alike
        if b.softadapt:
            assert (b.variant, b.update_every, b.window) == ("loss-weighted", 100, 100), c.id


def test_the_flat_row_leaves_out_the_weights_that_have_no_effect():
    rows = {c.id: c.flat() for c in get_suite("full").configurations}
    assert (rows["vae/1/multidecoder/exact"]["w1"], rows["vae/1/multidecoder/exact"]["w2"]) == (1.0, 1.0)
    assert (rows["vae/1/baseline"]["w1"], rows["vae/1/baseline"]["w2"]) == (1.0, None)  # no second decoder
    assert (rows["vae/1/single/gaussian/a=40"]["w1"], rows["vae/1/single/gaussian/a=40"]["w2"]) == (1.0, None)
    softadapt = rows["vae/2/multidecoder/exact/softadapt"]  # SoftAdapt weighs the terms itself
    assert (softadapt["w1"], softadapt["w2"], softadapt["softadapt_beta"]) == (None, None, SOFTADAPT_BETA["vae"])
    assert softadapt["beta"] == DEFAULT_BETA["vae"]  # β stays: it is inside the latent term


def test_the_full_suite_trains_as_the_thesis_did():
    full = get_suite("full")
    assert (full.folds, full.repeats, full.units) == (5, 1, 225)
    assert full.limit is None  # all of the dataset
    assert (full.train.epochs, full.train.batch_size, full.train.lr) == (100, 128, 1e-3)
    assert full.dataset == "mnist5k" and full.seed == 0


def test_the_full_suite_trains_with_adamw_at_its_learning_rate(monkeypatch):
    """The optimizer a fold of the full suite builds: AdamW, lr 1e-3 (stopped before the first step)."""
    from benchmark.train import train_fold

    made = []

    class Stop(Exception):
        pass

    def adamw(params, **options):
        made.append(options)
        raise Stop

    monkeypatch.setattr(torch.optim, "AdamW", adamw)
    full = get_suite("full")
    images = torch.rand(4, 1, 32, 32)
    with pytest.raises(Stop):
        train_fold(full.configurations[0], images, images, replace(full.train, device="cpu"), seed=0)
    assert len(made) == 1 and made[0]["lr"] == 1e-3


# ---------------------------------------------------------------- quick and smoke (README's suite table)


def test_the_quick_suite_is_the_thesis_grid_on_1250_images_for_3_epochs():
    quick, full = get_suite("quick"), get_suite("full")
    assert [c.id for c in quick.configurations] == [c.id for c in full.configurations]  # 45 configurations
    assert (quick.folds, quick.repeats, quick.units) == (5, 1, 225)
    assert (quick.train.epochs, quick.limit, quick.dataset) == (3, 1250, "mnist5k")
    assert (quick.train.batch_size, quick.train.lr) == (128, 1e-3)
    # README: "its folds train 24 steps" (1,000 training images a fold, batches of 128, 3 epochs)
    assert math.ceil(quick.limit * (quick.folds - 1) / quick.folds / quick.train.batch_size) * quick.train.epochs == 24


def test_the_smoke_suite_is_every_family_and_method_once_on_config_1():
    smoke = get_suite("smoke")
    assert [c.id for c in smoke.configurations] == [
        "vae/1/baseline", "vae/1/multidecoder/uniform", "vae/1/single/gaussian/a=40",
        "vq-vae/1/baseline", "vq-vae/1/multidecoder/uniform", "vq-vae/1/single/gaussian/a=40"]
    assert (smoke.folds, smoke.repeats, smoke.units) == (5, 1, 30)
    assert (smoke.train.epochs, smoke.train.batch_size, smoke.limit, smoke.dataset) == (2, 32, 400, "mnist5k")


def test_builtin_suites_are_smoke_quick_full_and_unknown_names_list_them():
    assert list(builtin_suites()) == ["smoke", "quick", "full"]
    with pytest.raises(ValueError, match=r"unknown suite 'fulll' \(did you mean 'full'\?\); choose one of: smoke, quick, full, or a path"):
        get_suite("fulll")


# ---------------------------------------------------------------- seeds and folds never change

UNIT_SEEDS = {(0, "vae/1/baseline", 0): 716240444,
              (0, "vq-vae/3/single/gaussian/a=40", 4): 1565707092,
              (7, "vae/2/multidecoder/exact/softadapt", 2): 1308418581}
FOLDS_10_5_0 = [([0, 1, 3, 4, 5, 6, 7, 9], [2, 8]), ([0, 1, 2, 3, 5, 6, 7, 8], [4, 9]),
                ([0, 2, 3, 4, 5, 7, 8, 9], [1, 6]), ([0, 1, 2, 4, 5, 6, 8, 9], [3, 7]),
                ([1, 2, 3, 4, 6, 7, 8, 9], [0, 5])]
FOLDS_6_2_1_REPEATS_2 = [([0, 3, 5], [1, 2, 4]), ([1, 2, 4], [0, 3, 5]), ([1, 3, 5], [0, 2, 4]), ([0, 2, 4], [1, 3, 5])]


def as_lists(folds):
    return [(train.tolist(), val.tolist()) for train, val in folds]


def test_unit_seed_golden_values():
    for (seed, config_id, fold), value in UNIT_SEEDS.items():
        assert unit_seed(seed, config_id, fold) == value
    assert all(0 <= v < 2**31 for v in UNIT_SEEDS.values())  # a torch / numpy seed
    base = unit_seed(0, "vae/1/baseline", 0)  # each input changes the seed
    assert len({base, unit_seed(1, "vae/1/baseline", 0), unit_seed(0, "vae/2/baseline", 0),
                unit_seed(0, "vae/1/baseline", 1)}) == 4


def test_fold_indices_golden_values():
    assert as_lists(fold_indices(10, 5, seed=0)) == FOLDS_10_5_0
    assert sorted(len(val) for _, val in fold_indices(5, 5)) == [1] * 5  # as few images as folds: one each
    assert as_lists(fold_indices(6, 2, seed=1, repeats=2)) == FOLDS_6_2_1_REPEATS_2


@pytest.mark.parametrize("args, message", [
    (dict(n=100, folds=5, seed=None), "the folds' seed must be an integer, got None"),  # None: other folds each call
    (dict(n=100, folds=1), "cross-validation needs at least 2 folds, got 1"),
    (dict(n=100, folds=5, repeats=0), "repeats must be >= 1, got 0"),
    (dict(n=4, folds=5), "4 training images cannot be split into 5 folds: give more images (a dataset's test split, "
                         "held out, is not among them) or fewer --folds")])
def test_fold_indices_refuses_bad_input(args, message):
    with pytest.raises(ValueError) as raised:
        fold_indices(**args)
    assert str(raised.value) == message


def test_unit_seed_and_folds_are_the_same_in_a_fresh_process_with_another_hash_seed():
    code = ("from benchmark.cv import fold_indices, unit_seed\n"
            f"print([unit_seed(*k) for k in {list(UNIT_SEEDS)!r}])\n"
            "print([(t.tolist(), v.tolist()) for t, v in fold_indices(10, 5, seed=0)])\n")
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONHASHSEED": "4242", "PYTHONPATH": root}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    seeds, folds = out.splitlines()
    assert seeds == repr(list(UNIT_SEEDS.values()))
    assert folds == repr([tuple(f) for f in FOLDS_10_5_0])


def test_output_piped_to_a_reader_that_stopped_ends_quietly():
    # `python -m benchmark studies show NAME | head -1` once ended in a BrokenPipeError traceback.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen([sys.executable, "-m", "benchmark", "suites"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env)
    child.stdout.close()  # before the command writes (it imports torch first): its reader is gone
    err = child.stderr.read().decode()
    assert child.wait() == 141 and err == ""


def test_a_suite_file_named_as_a_built_in_suite_is_refused_before_it_shares_its_study(tmp_path, capsys):
    (tmp_path / "mine.toml").write_text('name = "smoke"\nlimit = 400\n[train]\nepochs = 2\nbatch_size = 32\n'
                                        '[[configurations]]\nfamily = "vae"\nconfig = 1\nmethod = "baseline"\n')
    assert cli(tmp_path, "run", "--suite", "mine.toml", "--quiet") == 2
    assert "suite file mine.toml is named 'smoke', as a built-in suite" in one_line_error(capsys)
    assert not (tmp_path / "studies").exists()
    assert cli(tmp_path, "suites", "mine.toml") == 0  # what it holds can still be shown, with what run says
    assert capsys.readouterr().err == ("warning: suite file mine.toml is named 'smoke', as a built-in suite: its run "
                                       "would share that suite's study and results: `run --suite mine.toml` needs a "
                                       "--name\n")


def test_a_configuration_listed_twice_is_named(tmp_path, capsys):
    (tmp_path / "twice.toml").write_text('[[configurations]]\nfamily = "vq-vae"\nconfig = 1\nmethod = "baseline"\n'
                                         '[[configurations]]\nfamily = "vq-vae"\nconfig = 1\n')
    assert cli(tmp_path, "suites", "twice.toml") == 2
    assert "suite 'twice' lists vq-vae/1/baseline twice (a configuration without `method` stands for" in \
        one_line_error(capsys)
    # With the other problems of the file, not after they are mended
    (tmp_path / "twice.toml").write_text("[train]\nepochs = 0\n" + (tmp_path / "twice.toml").read_text())
    assert cli(tmp_path, "suites", "twice.toml") == 2
    problems = one_line_error(capsys).removeprefix("error: suite file twice.toml has 2 problems: ").split(" | ")
    assert [problem[:30] for problem in problems] == ["suite 'twice' lists vq-vae/1/b", "[train] epochs must be >= 1, g"]


def test_more_folds_than_training_images_is_refused_when_the_suite_is_read(tmp_path, capsys):
    (tmp_path / "many.toml").write_text('name = "many"\nlimit = 100\nfolds = 500\n'
                                        '[[configurations]]\nfamily = "vq-vae"\nconfig = 1\nmethod = "baseline"\n')
    assert cli(tmp_path, "suites", "many.toml") == 2
    assert one_line_error(capsys) == ("error: suite file many.toml: 100 training images (limit) cannot be split "
                                      "into 500 folds")


def test_the_readmes_suite_file_is_read_as_it_says(tmp_path, capsys):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    (tmp_path / "mine.toml").write_text(re.search(r"```toml\n(.*?)```", readme, re.S).group(1))
    assert cli(tmp_path, "suites", "mine.toml") == 0
    out = capsys.readouterr().out
    assert "VQ-VAE 1: Single decoder; Gaussian VAE 2: its grid" in out  # its description
    suite = get_suite(str(tmp_path / "mine.toml"))
    assert (suite.name, suite.dataset, suite.limit, suite.folds, suite.train.epochs, suite.train.lr) == (
        "mine", "mnist5k", 2000, 5, 10, 1e-3)
    assert [c.id for c in suite.configurations][:2] == ["vq-vae/1/single/gaussian/a=40", "vae/2/baseline"]
    assert len(suite.configurations) == 1 + 9  # the second table: the thesis grid of Gaussian VAE 2


def test_a_suite_file_that_is_not_text_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "binary.toml").write_bytes(b"name = \"x\"\n\xff\xfe")
    assert cli(tmp_path, "suites", "binary.toml") == 2
    assert one_line_error(capsys) == "error: suite file binary.toml is not UTF-8 text (byte 11: invalid start byte)"


# ---------------------------------------------------------------- errors in a suite file's configurations

BASELINE = '[[configurations]]\nfamily = "vae"\nconfig = 1\nmethod = "baseline"\n'
MULTIDECODER = '[[configurations]]\nfamily = "vae"\nconfig = 1\nmethod = "multidecoder"\nsampling = "uniform"\n'


@pytest.mark.parametrize("table, message", [
    ('[[configurations]]\nfamily = "vae"\nconfig = 7\nmethod = "baseline"\n',
     "unknown vae config 7; choose one of: 1, 2"),
    ('[[configurations]]\nfamily = "VAE"\nconfig = 1\nmethod = "baseline"\n',
     "unknown model family 'VAE' (did you mean 'vae'?); choose one of: vae, vq-vae"),
    ('[[configurations]]\nfamily = ["vae"]\nconfig = 1\n', "family must be a name, got ['vae']"),
    # SoftAdapt weighs the terms itself: the weights given are named, and nothing else is asked of a new file
    (MULTIDECODER + "softadapt = true\nw1 = 2\n",
     "SoftAdapt weighs the loss terms itself: drop w1 = 2 (w1 and w2 are fixed weights; β may stay: it is inside "
     "the latent term)"),
    (MULTIDECODER + "softadapt = true\nw1 = 2\nw2 = 0.5\nbeta = 2\n", "SoftAdapt weighs the loss terms itself: "
     "drop w1 = 2, w2 = 0.5 (w1 and w2 are fixed weights; β may stay: it is inside the latent term)"),
    # a weight written out is refused whatever its value, the default's too: the file says something SoftAdapt ignores
    (MULTIDECODER + "softadapt = true\nw1 = 1\n", "SoftAdapt weighs the loss terms itself: drop w1 = 1 (w1 and w2 "
     "are fixed weights; β may stay: it is inside the latent term)"),
    (MULTIDECODER + "softadapt = true\nw1 = 2\nw2 = 1.0\n", "SoftAdapt weighs the loss terms itself: drop w1 = 2, "
     "w2 = 1 (w1 and w2 are fixed weights; β may stay: it is inside the latent term)"),
    (BASELINE + "softadapt = true\nw1 = 1\n", "SoftAdapt weighs the loss terms itself: drop w1 = 1 (w1 and w2 are "
     "fixed weights; β may stay: it is inside the latent term)"),
    # w2 written out on a method without a second decoder is refused whatever its value, the default's too
    (BASELINE.replace('"vae"', '"vq-vae"') + "w2 = 1\n", "w2 weighs the Multidecoder's second (conditioned) "
     "decoder; the baseline method has one decoder, weighed by w1"),
    ('[[configurations]]\nfamily = "vae"\nconfig = 1\nmethod = "single"\nsampling = "uniform"\nexponent = 40\n'
     "w2 = 1.0\n", "w2 weighs the Multidecoder's second (conditioned) decoder; the single method has one decoder, "
     "weighed by w1"),
    (MULTIDECODER + "count = 0\n", "count k = 0 gives the Multidecoder's second decoder no pixel to condition "
     "on, so it learns what the first does: give k >= 1, or no count for the exact grid's"),
    # a loss of the latent term alone: no decoder learns, yet the run trained and the report ranked it
    (MULTIDECODER + "w1 = 0\nw2 = 0.0\n", "w1 = 0 and w2 = 0 leave no reconstruction term: no decoder would learn, "
     "and the epoch would be chosen on the latent term alone; give w1 or w2 > 0"),
    (BASELINE + "w1 = 0\n", "w1 = 0 leaves no reconstruction term: no decoder would learn, and the epoch would be "
     "chosen on the latent term alone; give w1 > 0"),
])
def test_a_bad_configuration_is_named_by_its_file_and_place(tmp_path, capsys, table, message):
    (tmp_path / "bad.toml").write_text(BASELINE + table)
    assert cli(tmp_path, "suites", "bad.toml") == 2
    assert one_line_error(capsys) == f"error: suite file bad.toml: configuration 2: {message}"


def test_every_bad_configuration_of_a_file_is_named_at_once(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text('[[configurations]]\nfamily = "vae"\nconfig = 7\n' + BASELINE +
                                       MULTIDECODER.replace("multidecoder", "multidecodr"))
    assert cli(tmp_path, "suites", "bad.toml") == 2
    assert one_line_error(capsys) == (
        "error: suite file bad.toml has 2 problems: configuration 1: unknown vae config 7; choose one of: "
        "1, 2 | configuration 3: unknown method 'multidecodr' (did you mean 'multidecoder'?); choose one of: "
        "baseline, multidecoder, single")


def test_every_problem_of_one_configuration_is_named_at_once(tmp_path, capsys):
    def problems(text: str) -> list[str]:
        """The problems `suites` names in a suite file of ``text``, as one error of one or more."""
        (tmp_path / "bad.toml").write_text(text)
        assert cli(tmp_path, "suites", "bad.toml") == 2
        error = one_line_error(capsys)
        several = re.fullmatch(r"error: suite file bad\.toml has (\d+) problems: (.*)", error)
        found = several.group(2).split(" | ") if several else [error.removeprefix("error: suite file bad.toml: ")]
        assert not several or int(several.group(1)) == len(found)
        return found

    single = '[[configurations]]\nfamily = "vae"\nconfig = 1\nmethod = "single"\n'
    assert problems(BASELINE + single + 'sampling = "exact"\ncount = 5\nsoftadapt = true\nw1 = 2\n') == [
        "configuration 2: SoftAdapt weighs the loss terms itself: drop w1 = 2 (w1 and w2 are fixed weights; β may "
        "stay: it is inside the latent term)",
        "configuration 2: the single decoder needs a power-law exponent",
        "configuration 2: the single decoder draws each image's count k from its power law: it takes no count",
        "configuration 2: the single decoder draws a power-law count of pixels: use uniform or gaussian sampling, "
        "not the exact grid (its count is fixed)"]
    # one mistake, one message: w2 under SoftAdapt on a method without a second decoder is named once
    assert problems(BASELINE + "softadapt = true\nw2 = 2\n") == [
        "configuration 1: w2 weighs the Multidecoder's second (conditioned) decoder; the baseline method has one "
        "decoder, weighed by w1"]
    # w2 beside a mistyped method, which may be the Multidecoder's: the name is the problem
    assert problems(MULTIDECODER.replace("multidecoder", "multidecodr") + "w2 = 1\n") == [
        "configuration 1: unknown method 'multidecodr' (did you mean 'multidecoder'?); choose one of: baseline, "
        "multidecoder, single"]
    # a mistyped sampling is named beside what else the method lacks
    assert problems(single + 'sampling = "gaus"\n') == [
        "configuration 1: unknown sampling 'gaus' (did you mean 'gaussian'?); choose one of: exact, uniform, gaussian",
        "configuration 1: the single decoder needs a power-law exponent"]
    # values of the wrong kind, each named, and the method's problems beside them
    mistyped = MULTIDECODER.replace("multidecoder", "multidecodr")
    assert problems(mistyped + 'softadapt = "yes"\nw1 = "2"\nbeta = true\n') == [
        "configuration 1: softadapt must be true or false, got 'yes'", "configuration 1: w1 must be a number, got '2'",
        "configuration 1: beta must be a number, got True",
        "configuration 1: unknown method 'multidecodr' (did you mean 'multidecoder'?); choose one of: baseline, "
        "multidecoder, single"]
    # an unknown key and an unknown model config, beside the method's problems (which need neither)
    assert problems('[[configurations]]\nfamily = "vq-vae"\nconfig = 4\nmethod = "single"\nsampling = "exact"\n'
                    'expnent = 40\n') == [
        "configuration 1: unknown key 'expnent' (did you mean 'exponent'?); allowed: beta, config, count, exponent, "
        "family, method, sampling, softadapt, softadapt_beta, variant, w1, w2",
        "configuration 1: unknown vq-vae config 4; choose one of: 1, 2, 3",
        "configuration 1: the single decoder needs a power-law exponent",
        "configuration 1: the single decoder draws a power-law count of pixels: use uniform or gaussian sampling, "
        "not the exact grid (its count is fixed)"]
    # out-of-range weights, each named, beside the method's problems
    assert problems(single + 'sampling = "uniform"\nexponent = 40\ncount = 5\nw1 = -1\nbeta = -1\n') == [
        "configuration 1: w1 must be a finite number >= 0, got -1.0",
        "configuration 1: beta must be a finite number >= 0, got -1.0",
        "configuration 1: the single decoder draws each image's count k from its power law: it takes no count"]


def test_problems_in_every_part_of_a_suite_file_are_named_at_once(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text('fold = 2\n[train]\nepochs = 0\n' + BASELINE.replace("baseline", "basline"))
    assert cli(tmp_path, "suites", "bad.toml") == 2
    message = one_line_error(capsys)
    assert message.startswith("error: suite file bad.toml has 3 problems: unknown key 'fold' (did you mean 'folds'?); "
                              "allowed: configurations, data_root, dataset, description, folds, limit, name, repeats, "
                              "seed, train | ")  # the keys as a reader writes them, not a Python list
    assert message.endswith(" | configuration 1: unknown method 'basline' (did you mean 'baseline'?); choose one of: "
                            "baseline, multidecoder, single | [train] epochs must be >= 1, got 0")


def test_a_bad_top_level_value_is_named_with_the_other_parts_problems(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text('limit = -5\n[train]\nlr = -1\n' + BASELINE.replace("baseline", "basline"))
    assert cli(tmp_path, "suites", "bad.toml") == 2
    problems = one_line_error(capsys).removeprefix("error: suite file bad.toml has 3 problems: ").split(" | ")
    assert [problem.split(":")[0] for problem in problems] == [
        "limit must be an integer >= 1 (training images), got -5", "configuration 1",
        "[train] learning rate must be a finite number > 0, got -1"]
    # every bad value of a part, not its first alone; one of the wrong kind is not checked further
    (tmp_path / "bad.toml").write_text('dataset = "mnist5kk"\nfolds = 1\nseed = -1\nrepeats = 0\n[train]\n'
                                       'epochs = "3"\nbatch_size = 0\nlr = -1\ndevice = "gpu"\n' + BASELINE)
    assert cli(tmp_path, "suites", "bad.toml") == 2
    assert one_line_error(capsys).removeprefix("error: suite file bad.toml has 8 problems: ").split(" | ") == [
        "unknown dataset 'mnist5kk' (did you mean 'mnist5k'?); choose one of: mnist5k, digits, mnist, cifar10, celeba, "
        "folder:PATH", "folds must be >= 2 for cross-validation, got 1", "repeats must be >= 1, got 0",
        "seed must be an integer in [0, 2^32), got -1", "[train] epochs must be a number (an integer), got '3'",
        "[train] batch size must be >= 1, got 0", "[train] learning rate must be a finite number > 0, got -1",
        "[train] unknown device 'gpu'; choose one of: auto, cpu, cuda, cuda:N"]
    # unknown keys beside the values of the keys known, and a name that is not text
    (tmp_path / "bad.toml").write_text('name = true\nsed = 3\nfolds = 1\n[train]\nepochs = 0\nlearnrate = 3\n'
                                       + BASELINE)
    assert cli(tmp_path, "suites", "bad.toml") == 2
    assert [problem.split(";")[0] for problem in one_line_error(capsys).removeprefix(
        "error: suite file bad.toml has 5 problems: ").split(" | ")] == [
        "unknown key 'sed' (did you mean 'seed'?)", "name must be text, got True",
        "folds must be >= 2 for cross-validation, got 1", "[train]: unknown key 'learnrate'",
        "[train] epochs must be >= 1, got 0"]


def test_suites_given_the_name_a_run_is_filed_under_gives_that_runs_command(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    command = "python -m benchmark run --suite quick --epochs 10 --name quick-e10"
    (tmp_path / "results" / "quick-e10_meta.json").write_text(json.dumps({"command": command}))
    assert cli(tmp_path, "suites", "quick-e10") == 2
    assert one_line_error(capsys) == (f"error: 'quick-e10' is the name a run is filed under, not a suite: to go on "
                                      f"with it, run the command it recorded: `{command}`")


@pytest.mark.parametrize("command", ["suites", "run"])
def test_a_name_with_results_but_no_recorded_command_says_how_a_named_run_goes_on(tmp_path, capsys, command):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "mine.csv").write_text("config_id,fold\n")  # exported by a version that kept no command
    assert cli(tmp_path, command, *(["mine"] if command == "suites" else ["--suite", "mine"])) == 2
    assert one_line_error(capsys).endswith(". There are results filed under 'mine': a run named by --name or "
                                           "--params-from goes on with the command that started it (its --suite, "
                                           "options, --params-from and --name)")


def test_suites_checks_a_files_dataset_and_name_as_run_does(tmp_path, capsys):
    (tmp_path / "d.toml").write_text('dataset = "mnist5"\n' + BASELINE)
    assert cli(tmp_path, "suites", "d.toml") == 2
    assert one_line_error(capsys) == ("error: suite file d.toml: unknown dataset 'mnist5' (did you mean 'mnist5k'?); "
                                      "choose one of: mnist5k, digits, mnist, cifar10, celeba, folder:PATH")
    (tmp_path / "b.toml").write_text('name = "bench"\n' + BASELINE)
    assert cli(tmp_path, "suites", "b.toml") == 2
    assert one_line_error(capsys) == ("error: suite file b.toml: suite name 'bench' is taken: reports/bench/ holds "
                                      "`bench`'s throughput tables; give it another name")
    assert cli(tmp_path, "run", "--suite", "smoke", "--name", "studies", "--quiet") == 2
    assert "suite name 'studies' is taken: reports/studies/ holds `studies plot`'s figures" in one_line_error(capsys)
    # suite X writes results/X_history.csv and X_prior.csv: suites named so would share them
    for name in ("tiny_history", "tiny_prior"):
        assert cli(tmp_path, "run", "--suite", "smoke", "--name", name, "--quiet") == 2
        assert one_line_error(capsys) == (f"error: --name: suite name '{name}' must not end in _history or _prior: "
                                          "another suite's results files are named so; give it another name")
    assert not (tmp_path / "studies").exists()


@pytest.mark.parametrize("dataset, count, side", [
    ("digits", 1025, 32), ("cifar10", 1024, None), ("celeba", 4096, None), ("celeba", 4097, 64),
    ("folder:images", 1025, 32),  # resized to 32 × 32 as they load: said before they do
])
def test_a_pixel_count_is_checked_against_the_image_size_of_the_suite_s_dataset(tmp_path, capsys, dataset, count,
                                                                                  side):
    (tmp_path / "count.toml").write_text(f'dataset = "{dataset}"\n{MULTIDECODER}count = {count}\n')
    assert cli(tmp_path, "suites", "count.toml") == (2 if side else 0)
    if side:  # said by `suites`, not first by `run` once the images are loaded
        assert one_line_error(capsys) == (f"error: suite file count.toml: configuration "
                                          f"vae/1/multidecoder/uniform/k={count}: on "
                                          f"{dataset}'s {side}×{side} images, pixel count k must be at most the "
                                          f"image's D = H·W = {side * side} pixels, got {count}")


def test_the_pixel_counts_are_checked_against_the_dataset_the_run_uses(tmp_path, capsys):
    (tmp_path / "count.toml").write_text(f'dataset = "celeba"\n{MULTIDECODER}count = 2000\n')  # 64 × 64 images
    assert cli(tmp_path, "run", "--suite", "count.toml", "--dataset", "digits") == 2
    assert one_line_error(capsys).startswith("error: suite file count.toml: configuration "
                                             "vae/1/multidecoder/uniform/k=2000: on digits's 32×32")
    (tmp_path / "count.toml").write_text(f"{MULTIDECODER}count = 2000\n")  # mnist5k's images are too small...
    assert cli(tmp_path, "run", "--suite", "count.toml", "--dataset", "celeba", "--data-root", "none") == 2
    assert "celeba: dataset files missing" in one_line_error(capsys)  # ...but the run's are celeba's


def test_a_pixel_count_too_large_for_a_folder_s_images_is_named_by_its_file(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    for i in range(10):  # resized to 32 × 32 as they load
        Image.fromarray(np.full((40, 40), 25 * i, dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
    (tmp_path / "count.toml").write_text(f'dataset = "folder:images"\n{MULTIDECODER}count = 2000\n')
    # filed under a name of its own, the count is still the file's
    assert cli(tmp_path, "run", "--suite", "count.toml", "--name", "mine") == 2
    assert one_line_error(capsys) == ("error: suite file count.toml: configuration vae/1/multidecoder/uniform/k=2000: "
                                      "on folder:images's 32×32 images, pixel count k must be at most the image's "
                                      "D = H·W = 1024 pixels, got 2000")
    # every configuration's at once, to be mended in one edit
    (tmp_path / "count.toml").write_text(f'dataset = "folder:images"\n{MULTIDECODER}count = 2000\n'
                                         f'{MULTIDECODER}count = 3000\n')
    assert cli(tmp_path, "run", "--suite", "count.toml", "--name", "mine") == 2
    assert one_line_error(capsys) == (
        "error: suite file count.toml: 2 problems: configuration vae/1/multidecoder/uniform/k=2000: on "
        "folder:images's 32×32 images, pixel count k must be at most the image's D = H·W = 1024 pixels, got 2000 | "
        "configuration vae/1/multidecoder/uniform/k=3000: on folder:images's 32×32 images, pixel count k must be at "
        "most the image's D = H·W = 1024 pixels, got 3000")
    assert not (tmp_path / "studies").exists()  # said before the study is touched


def test_a_bad_command_line_override_is_named_by_its_flag(tmp_path, capsys):
    assert cli(tmp_path, "run", "--suite", "quick", "--folds", "1", "--epochs", "0", "--seed", "-1") == 2
    assert one_line_error(capsys) == (
        "error: 3 problems: --folds must be >= 2 for cross-validation, got 1 | --seed must be an integer "
        "in [0, 2^32), got -1 | --epochs must be >= 1, got 0")
    # a problem of two values, not of one flag's alone, is said as it is; one a flag brings alone is the flag's
    assert cli(tmp_path, "run", "--suite", "smoke", "--limit", "4", "--folds", "6") == 2
    assert one_line_error(capsys) == "error: 4 training images (limit) cannot be split into 6 folds"
    assert cli(tmp_path, "run", "--suite", "smoke", "--limit", "1") == 2
    assert one_line_error(capsys) == "error: --limit: 1 training image (limit) cannot be split into 5 folds"
    assert cli(tmp_path, "run", "--suite", "smoke", "--limit", "4", "--device", "gpu") == 2
    assert one_line_error(capsys) == ("error: 2 problems: --limit: 4 training images (limit) cannot be split into 5 "
                                      "folds | --device: unknown device 'gpu'; choose one of: auto, cpu, cuda, cuda:N")
    # a suite file's own values keep its keys' names
    (tmp_path / "bad.toml").write_text("folds = 1\n" + BASELINE)
    assert cli(tmp_path, "run", "--suite", "bad.toml", "--epochs", "1") == 2
    assert one_line_error(capsys) == "error: suite file bad.toml: folds must be >= 2 for cross-validation, got 1"
    # a dataset is named by where it came from: the flag, not the suite it replaces, or the file
    unknown = "unknown dataset 'imagenet'; choose one of: mnist5k, digits, mnist, cifar10, celeba, folder:PATH"
    (tmp_path / "d.toml").write_text(BASELINE)
    for suite in ("smoke", "d.toml"):
        assert cli(tmp_path, "run", "--suite", suite, "--dataset", "imagenet") == 2
        assert one_line_error(capsys) == f"error: --dataset: {unknown}"
    (tmp_path / "d.toml").write_text('dataset = "imagenet"\n' + BASELINE)
    assert cli(tmp_path, "run", "--suite", "d.toml") == 2
    assert one_line_error(capsys) == f"error: suite file d.toml: {unknown}"


def test_a_runs_headline_says_what_it_trains_and_bf16_when_it_trains_in_it():
    smoke = get_suite("smoke")
    assert smoke.headline() == "suite smoke: 6 configurations × 5 folds = 30 units, 2 epochs on mnist5k (limit 400)"
    assert get_suite("full").headline().endswith("100 epochs on mnist5k")  # all of it
    assert smoke.override(precision="bf16", repeats=2).headline() == (
        "suite smoke: 6 configurations × 5 folds × 2 repeats = 60 units, 2 epochs on mnist5k (limit 400) in bf16")


def test_several_problems_keep_their_messages_when_copied_or_pickled():
    problems = Problems(["configuration 1: ab", "configuration 2: c"])
    for again in (copy.copy(problems), pickle.loads(pickle.dumps(problems))):  # e.g. from a worker process
        assert again.messages == problems.messages
        assert str(again) == "2 problems: configuration 1: ab | configuration 2: c"
