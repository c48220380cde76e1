"""Suites as data: smoke / quick / full, TOML suite files, and expanding the thesis grid."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path

from benchmark.balancing import BalanceConfig
from benchmark.checks import (FieldChecks, check_choice, check_kind, did_you_mean, field_problems, messages,
                              problems_error, problems_of, raise_problems)
from benchmark.config import (FOLDER_PREFIX, Configuration, MethodConfig, TrainConfig, check_dataset_name,
                              default_image_side, second_decoder_weight_problem, softadapt_weights_problem)
from benchmark.data.folder import folder_training_images
from benchmark.files import check_name
from benchmark.models import METHODS, MODEL_CONFIGS, model_config

# The Single decoder's exponents in the thesis's table (section 4.3; the text drops them from its Parameters
# column, the thesis's LaTeX source prints them: Exponent=40 and Exponent=60).
THESIS_EXPONENTS = (40.0, 60.0)
# Training images per second on a 2-core cloud CPU at batch 128 (baseline), the cost of each
# method relative to the baseline, and a fixed cost per unit (validation, storage, checkpoint):
# fitted to the seconds of each unit of a `quick` run on an Intel Xeon (AVX-512, float32).
CPU_IMAGES_PER_SECOND = {("vae", 1): 2700, ("vae", 2): 3400, ("vq-vae", 1): 6400, ("vq-vae", 2): 250,
                         ("vq-vae", 3): 150}
METHOD_COST = {"baseline": 1.0, "multidecoder": 1.7, "single": 1.25}
SECONDS_PER_UNIT = 0.1
# The images each dataset's folds split: its official training split, or all but the held-out fifth.
TRAINING_IMAGES = {"mnist5k": 4_000, "digits": 1_438, "mnist": 60_000, "cifar10": 50_000, "celeba": 162_770}
FOLDER_IMAGES = 48_000  # a folder's that cannot be counted here (a run's on another machine)


def training_images(dataset: str) -> int | None:
    """The images ``dataset``'s folds split (its training split): a folder's counted, None where it
    cannot be (no such folder here, or too few images in it to split)."""
    if dataset.startswith(FOLDER_PREFIX):
        folder = dataset.removeprefix(FOLDER_PREFIX)
        return folder_training_images(Path(folder).expanduser()) if folder else None
    return TRAINING_IMAGES[dataset]


def limited(total: int | None, limit: int | None) -> int | None:
    """The training images ``limit`` takes of a dataset's ``total`` (``training_images``): itself, or None
    (all of them) where there is none or it is at or above the total (a larger one takes them all)."""
    return limit if limit and limit < (total or math.inf) else None


def pool_images(total: int | None, limit: int | None) -> int:
    """The images a run's folds split: a dataset's ``total`` training images (``training_images``), at most
    ``limit``; FOLDER_IMAGES where they could not be counted."""
    if total is None:
        return limit or FOLDER_IMAGES
    return min(limit, total) if limit else total


def fold_seconds(family: str, config: int, method: str, dataset: str, images: int, folds: int,
                 epochs: int) -> float:
    """Estimated seconds of one fold of model ``family``/``config`` trained with ``method`` on a
    2-core cloud CPU, from its measured training throughput, where the folds split ``images``
    of ``dataset`` (``pool_images``)."""
    # the throughput above is of 32×32 images; a step's cost grows with the pixels
    per_fold = images * (folds - 1) / folds * epochs * (default_image_side(dataset) / 32) ** 2
    return per_fold / CPU_IMAGES_PER_SECOND[(family, config)] * METHOD_COST[method] + SECONDS_PER_UNIT


# The endings of a suite's other results files (results/<suite>_history.csv, _prior.csv).
RESULTS_SUFFIXES = ("_history", "_prior")

# Folders of reports/ that other commands write: a suite of that name would report into them.
TAKEN_REPORT_FOLDERS = {"bench": "`bench`'s throughput tables", "studies": "`studies plot`'s figures"}


def is_suite_file(name: str) -> bool:
    """Whether ``--suite NAME`` names a suite file by its suffix: .toml, in any case."""
    return name.lower().endswith(".toml")


def check_suite_name(name: str) -> None:
    """Refuse a name that cannot name a suite's files and folders."""
    check_name(name, "suite name")
    if name in TAKEN_REPORT_FOLDERS:  # `report` would write into the other command's folder
        raise ValueError(f"suite name {name!r} is taken: reports/{name}/ holds {TAKEN_REPORT_FOLDERS[name]}; "
                         "give it another name")
    if is_suite_file(name):  # `--suite NAME` would read it as a file
        raise ValueError(f"suite name {name!r} must not end in .toml")
    if name.endswith(RESULTS_SUFFIXES):  # suite X's <X>_history.csv would be its results
        raise ValueError(f"suite name {name!r} must not end in {' or '.join(RESULTS_SUFFIXES)}: another suite's "
                         f"results files are named so; give it another name")


class PixelCountError(ValueError):
    """A pixel count k larger than a suite's images have: only a suite file sets counts (the built-in suites':
    the exact grid's, a power law's; a search tunes none), so its caller names the file."""


# The checks of what splits the data into folds (``field_problems``), which a suite and a search share.
SPLIT_CHECKS: FieldChecks = {
    "limit": ((int, type(None)), "an integer >= 1 (training images)", lambda v: [] if v is None or v >= 1 else [
        f"limit must be an integer >= 1 (training images), got {v}"]),
    "folds": (int, "an integer", lambda v: [] if v >= 2 else [f"folds must be >= 2 for cross-validation, got {v}"]),
    # numpy's seed range, which splits the data
    "seed": (int, "an integer", lambda v: [] if 0 <= v < 2**32 else [f"seed must be an integer in [0, 2^32), got {v}"]),
}


def tuned_name(suite: str) -> str:
    """The name a suite's run with ``--params-from`` is filed under, without a ``--name``."""
    return f"{suite}-tuned"


def split_problems(limit: int | None, folds: int) -> list[str]:
    """The problem of a ``limit`` of fewer training images than ``folds``, each right on its own."""
    if limit is not None and limit < folds:
        return [f"{limit} training image{'s' * (limit != 1)} (limit) cannot be split into {folds} folds"]
    return []


@dataclass(frozen=True)
class Suite:
    """A named set of configurations with the data and training they share."""

    name: str
    configurations: tuple[Configuration, ...]
    train: TrainConfig = field(default_factory=TrainConfig)
    dataset: str = "mnist5k"
    data_root: str | None = None
    limit: int | None = None
    folds: int = 5
    repeats: int = 1
    seed: int = 0
    description: str = ""
    download: bool = False  # fetch torchvision datasets when missing (needs internet)
    params_from: tuple[tuple[str, str], ...] = ()  # (config id, Optuna study its parameters came from)
    # (study of params_from, its storage as safe_url): where `report` finds them; not a setting
    search_storages: tuple[tuple[str, str], ...] = ()
    # the run whose settled units this suite's run takes rather than train them again (``benchmark.reuse``): a
    # tuned suite's own run, for the configurations it does not tune, or an untuned one's tuned run; not a setting
    takes_from: str | None = None

    def __post_init__(self) -> None:
        raise_problems(self._problems())
        # frozen and hashable: a list given in code is kept as a tuple, as a suite file's is
        object.__setattr__(self, "configurations", tuple(self.configurations))

    def _problems(self) -> list[str]:
        """Every problem of this suite, each a message, in the fields' order."""
        problems, bad = field_problems(self, {
            "name": (str, "text", lambda v: problems_of(check_suite_name, v)),
            "configurations": ((tuple, list), "a list", lambda v: [] if v else [f"suite {self.name!r} has no "
                                                                               "configurations"]),
            "train": (TrainConfig, "a TrainConfig", lambda v: []),
            "dataset": (str, "a name", lambda v: problems_of(check_dataset_name, v)),
            "data_root": ((str, type(None)), "a path", lambda v: []),
            "limit": SPLIT_CHECKS["limit"],
            "folds": SPLIT_CHECKS["folds"],
            "repeats": (int, "an integer", lambda v: [] if v >= 1 else [f"repeats must be >= 1, got {v}"]),
            "seed": SPLIT_CHECKS["seed"],
            "description": (str, "text", lambda v: []),
            "download": (bool, "True or False", lambda v: []),
        })
        if not bad & {"limit", "folds"}:
            problems += split_problems(self.limit, self.folds)
        if not bad & {"name", "configurations"}:
            problems += problems_of(check_listed_once, self.name, self.configurations)
        return problems

    @property
    def units(self) -> int:
        return len(self.configurations) * self.folds * self.repeats

    def settings(self) -> dict:
        """What decides the results; a study created with other settings cannot be resumed."""
        return {"suite": self.name, "dataset": self.dataset, "limit": self.limit, "folds": self.folds,
                "repeats": self.repeats, "seed": self.seed, "epochs": self.train.epochs,
                "batch_size": self.train.batch_size, "lr": self.train.lr,
                "weight_decay": self.train.weight_decay, "precision": self.train.precision,
                "configurations": [c.id for c in self.configurations],
                "params_from": dict(self.params_from)}

    @cached_property
    def dataset_images(self) -> int | None:
        """The training images of the suite's dataset (``training_images``), a folder's files counted once."""
        return training_images(self.dataset)

    @property
    def image_side(self) -> int:
        """The side of the images a run of the suite loads (``default_image_side``)."""
        return default_image_side(self.dataset)

    def check_pixel_counts(self) -> None:
        """Refuse a pixel count k larger than an image of the suite's has pixels (``image_side``²)."""
        side = self.image_side
        problems = [f"configuration {configuration.id}: on {self.dataset}'s {side}×{side} images, {problem}"
                    for configuration in self.configurations
                    for problem in problems_of(configuration.method.sampler, side)]
        if problems:  # all at once, to be mended in one edit
            raise PixelCountError(str(problems_error(problems)))

    def headline(self) -> str:
        """One line saying what a run of this suite trains."""
        folds = f"{self.folds} folds" + (f" × {self.repeats} repeats" if self.repeats > 1 else "")
        configurations = len(self.configurations)
        return (f"suite {self.name}: {configurations} configuration{'s' * (configurations != 1)} × {folds} = "
                f"{self.units} units, {self.train.epochs} epoch{'s' * (self.train.epochs != 1)} on {self.dataset}"
                + (f" (limit {self.limit})" if self.limit else "")
                + (" in bf16" if self.train.precision == "bf16" else ""))

    def unit_seconds(self) -> dict[str, float]:
        """Estimated seconds of one unit (fold) of each configuration on a 2-core cloud CPU;
        their ratios also weight the progress ETA (a VQ-VAE 3 unit costs about twenty Gaussian VAE units)."""
        images = pool_images(self.dataset_images, self.limit)
        return {c.id: fold_seconds(c.family, c.config, c.method.method, self.dataset, images, self.folds,
                                   self.train.epochs) for c in self.configurations}

    def cpu_seconds(self, config_ids: Iterable[str] | None = None) -> float:
        """Estimated seconds on a 2-core cloud CPU of units of the configurations ``config_ids``
        names, an id for each unit (``unit_seconds``); without them, of every unit of the suite."""
        seconds = self.unit_seconds()
        if config_ids is None:
            return sum(seconds.values()) * self.folds * self.repeats
        return sum(seconds[config_id] for config_id in config_ids)

    def with_best_params(self, best: dict[SearchKey, SearchBest]) -> Suite:
        """The suite with each configuration that a search covers replaced by the search's best.

        ``best`` maps (family, config, method, sampling, softadapt) to what a search found, as
        ``benchmark.params_from.best_configurations`` returns. A configuration of that key that holds
        a setting the search held at another value (a count, a SoftAdapt variant, an untuned β) is
        kept as it is (``replacement_notes`` says why): the search's best was not chosen for it.
        Configurations that become the same (e.g. the two exponents of a Single decoder grid) are kept once.
        """
        configurations, sources, seen = [], [], set()
        for configuration in self.configurations:
            found = best.get(search_key(configuration))
            tuned = found is not None and not found.held_otherwise(configuration, self.image_side)
            if tuned:
                configuration = found.configuration
            if configuration.id not in seen:
                seen.add(configuration.id)
                configurations.append(configuration)
                if tuned:
                    sources.append((configuration.id, found.study))
        unused = sorted({found.study for found in best.values()} - {study for _, study in sources})
        if unused:  # named for a reason: a study that changes nothing is a mistake
            held = [f"{config_id} has {', '.join(settings)}"
                    for config_id, study, settings in self._held_otherwise(best) if study == unused[0]]
            theirs = next(found.configuration.id for found in best.values() if found.study == unused[0])
            raise ValueError(f"suite {self.name!r} has no configuration that study {unused[0]!r} tunes (its best is "
                             f"{theirs})" + (f": {'; '.join(held)}" if held else ""))
        return replace(self, name=tuned_name(self.name), configurations=tuple(configurations),
                       params_from=tuple(sources), takes_from=self.name)

    def _held_otherwise(self, best: dict[SearchKey, SearchBest]) -> list[tuple[str, str, list[str]]]:
        """(configuration id, study, settings) for each configuration that a search of ``best`` covers by its
        key but does not tune: the settings it holds that the search held at other values."""
        held = []
        for configuration in self.configurations:
            found = best.get(search_key(configuration))
            if found is not None and (settings := found.held_otherwise(configuration, self.image_side)):
                held.append((configuration.id, found.study, settings))
        return held

    def replacement_notes(self, base: Suite, best: dict[SearchKey, SearchBest]) -> list[str]:
        """For a suite made by ``base.with_best_params(best)``: a note per tuned configuration saying which
        of ``base``'s it replaces, and that configurations a search made the same are trained once; and a
        note per configuration of a search's kind kept as it is, saying why."""
        by_id = {c.id: c for c in self.configurations}
        notes = []
        for config_id, study in self.params_from:
            tuned = search_key(by_id[config_id])
            replaced = [c.id for c in base.configurations if search_key(c) == tuned and c.id != config_id
                        and not best[tuned].held_otherwise(c, base.image_side)]
            fewer = len(replaced) - 1
            merged = (f"; these {len(replaced)} are one configuration now, so the suite has {fewer} configuration"
                      f"{'s' * (fewer != 1)} fewer") if fewer else ""
            when = " when this run began" if best[tuned].began else ""
            notes.append(f"note: {', '.join(replaced) or config_id} → {config_id} (the best of study {study!r}{when})"
                         f"{merged}")
        return notes + [f"note: study {study!r} did not tune {config_id}: it has {', '.join(settings)}, so it "
                        "trains with its own parameters" for config_id, study, settings in base._held_otherwise(best)]

    def override(self, **values) -> Suite:
        """A copy with command-line overrides applied (None means keep the suite's value)."""
        train_keys = {f.name for f in fields(TrainConfig)}
        given = {k: v for k, v in values.items() if v is not None}
        problems, train = [], self.train
        try:  # the training's problems beside the suite's, not one part's alone
            train = replace(self.train, **{k: v for k, v in given.items() if k in train_keys})
        except ValueError as err:
            problems = messages(err)
        try:
            suite = replace(self, train=train, **{k: v for k, v in given.items() if k not in train_keys})
        except ValueError as err:
            problems = messages(err) + problems
        raise_problems(problems)
        return suite


SearchKey = tuple[str, int, str, str | None, bool]


@dataclass(frozen=True)
class SearchBest:
    """What a search found: its best configuration, its study, and the parameters it tuned (``w1``, ``w2``,
    ``beta``, ``softadapt_beta``, ``exponent``); it held every other setting at the configuration's value.
    ``began``: the configuration is the best a run began with, which the search has bettered since."""

    configuration: Configuration
    study: str
    tuned: frozenset[str]
    began: bool = False

    def held_otherwise(self, configuration: Configuration, side: int | None = None) -> list[str]:
        """The settings of ``configuration`` (one of this search's key) that the search held at other values,
        each as ``count 200 (the search's: default)``; none when the search's best may replace it. With the
        images' ``side``, a count is compared as the pixels it observes: the default is the exact grid's."""
        method, best = configuration.method, self.configuration.method
        balance = replace(method.balance, **{name: getattr(best.balance, name) for name in self.tuned
                                             if name != "exponent"})
        exponent = best.exponent if "exponent" in self.tuned else method.exponent
        ours = _settings(replace(configuration, method=replace(method, exponent=exponent, balance=balance)), side)
        theirs = _settings(self.configuration, side)
        return [f"{key} {_shown(ours[key])} (the search's: {_shown(theirs[key])})"
                for key in ours if ours[key] != theirs[key]]


def _settings(configuration: Configuration, side: int | None = None) -> dict:
    """Every setting of ``configuration`` that trains, by name; with the images' ``side``, a constant count as
    the pixels it observes (the default count is the exact grid's)."""
    flat = {key: value for key, value in configuration.flat().items() if key != "config_id"}
    method = configuration.method
    if side and method.method != "baseline" and method.count is None and method.exponent is None:
        flat["count"] = method.sampler(side).fixed_count
    return {**flat, "update_every": configuration.balance.update_every, "window": configuration.balance.window}


def _shown(value: object) -> str:
    return "default" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def check_listed_once(name: str, configurations: Sequence[Configuration]) -> None:
    """Refuse a configuration listed twice in suite ``name``: its units would share ids and seeds."""
    ids = [c.id for c in configurations]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ValueError(f"suite {name!r} lists {', '.join(twice)} twice (a configuration without `method` "
                         "stands for its model's thesis grid, its baseline included)")


def search_key(configuration: Configuration) -> SearchKey:
    """(family, config, method, sampling, softadapt): what one search tunes, as
    ``benchmark.params_from.best_configurations`` keys its results."""
    m = configuration.method
    return configuration.family, configuration.config, m.method, m.sampling, m.balance.softadapt


def thesis_grid(family: str, config: int, exponents: tuple[float, ...] = THESIS_EXPONENTS) -> list[Configuration]:
    """The thesis's 9 configurations of one model: baseline; Multidecoder × {exact, uniform} ×
    {fixed weights, SoftAdapt}; Single decoder × {uniform, gaussian} × exponents."""
    grid = [Configuration(family, config, MethodConfig("baseline"))]
    for sampling in ("exact", "uniform"):
        for softadapt in (False, True):
            method = MethodConfig("multidecoder", sampling, balance=BalanceConfig(softadapt=softadapt))
            grid.append(Configuration(family, config, method))
    for sampling in ("uniform", "gaussian"):
        for exponent in exponents:
            grid.append(Configuration(family, config, MethodConfig("single", sampling, exponent=exponent)))
    return grid


def full_grid() -> tuple[Configuration, ...]:
    return tuple(c for family, configs in MODEL_CONFIGS.items() for config in configs
                 for c in thesis_grid(family, config))


def smoke_configurations() -> tuple[Configuration, ...]:
    """Every family and every method once, config 1."""
    out = []
    for family in MODEL_CONFIGS:
        out.append(Configuration(family, 1, MethodConfig("baseline")))
        out.append(Configuration(family, 1, MethodConfig("multidecoder", "uniform")))
        out.append(Configuration(family, 1, MethodConfig("single", "gaussian", exponent=40.0)))
    return tuple(out)


def builtin_suites() -> dict[str, Suite]:
    return {
        "smoke": Suite("smoke", smoke_configurations(), TrainConfig(epochs=2, batch_size=32), limit=400,
                       description="every family and method once (config 1), 2 epochs (batch 32) on 400 mnist5k images"),
        "quick": Suite("quick", full_grid(), TrainConfig(epochs=3), limit=1250,
                       description="the thesis grid, 3 epochs on 1,250 mnist5k images"),
        "full": Suite("full", full_grid(), TrainConfig(epochs=100, batch_size=128, lr=1e-3),
                      description="the thesis grid with the thesis's training (100 epochs); meant for a GPU"),
    }


CONFIGURATION_KEYS = {"family", "config", "method", "sampling", "exponent", "count", "softadapt", "w1", "w2", "beta",
                      "softadapt_beta", "variant"}
TOP_KEYS = ("dataset", "data_root", "limit", "folds", "repeats", "seed", "description")


def _configuration_from_table(table: dict, where: str) -> list[Configuration]:
    if not isinstance(table, dict):
        raise ValueError(f"{where}: must be a [[configurations]] table, got {table!r}")
    problems = problems_of(_check_keys, table, CONFIGURATION_KEYS)
    try:  # the keys it knows, checked beside its unknown ones
        configurations = _configurations({key: value for key, value in table.items() if key in CONFIGURATION_KEYS})
    except ValueError as err:
        problems += messages(err)
    if problems:
        raise problems_error([f"{where}: {message}" for message in problems])
    return configurations


def _configurations(table: dict) -> list[Configuration]:
    """The configuration a [[configurations]] table names, or without a method its model's thesis grid."""
    family, config = table.get("family"), table.get("config")
    if family is None or config is None:
        raise ValueError("needs 'family' and 'config'")
    check_kind("family", family, str, "a name")
    check_kind("config", config, int, "an integer")
    problems = problems_of(model_config, family, config)  # beside the method's problems, which need no model
    if "method" not in table:
        ignored = sorted(set(table) - {"family", "config"})
        if ignored:  # the grid brings its own parameters: these would be dropped unseen
            problems.append(f"{', '.join(ignored)} need(s) a method; without one, the table stands for the "
                            "thesis's 9 configurations of the model, with their own parameters")
        raise_problems(problems)
        return thesis_grid(family, config)
    bad = set()  # keys whose values are of the wrong kind, left out of what is built below
    if not isinstance(table.get("softadapt", False), bool):
        problems.append(f"softadapt must be true or false, got {table['softadapt']!r}")
        bad.add("softadapt")
    for key in ("exponent", "w1", "w2", "beta", "softadapt_beta"):  # float() would take "30" and true
        wrong = problems_of(check_kind, key, table[key], (int, float), "a number") if key in table else []
        problems += wrong
        if wrong:
            bad.add(key)
    # A weight written out beside SoftAdapt is refused whatever its value: the method takes an unset one for 1.
    if table.get("softadapt") is True:
        weights = ("w1", "w2") if table["method"] == "multidecoder" else ("w1",)  # w2 elsewhere: named below
        given = {key: float(table[key]) for key in weights if key in table and key not in bad}
        if given:
            problems.append(softadapt_weights_problem(given))
            bad |= set(given)  # left out below: the method would name those not 1 again
    # So is w2 on a method without a second decoder (beside an unknown method, which may be the Multidecoder
    # mistyped, the method's name is the problem).
    if "w2" in table and "w2" not in bad and table["method"] in METHODS and table["method"] != "multidecoder":
        problems.append(second_decoder_weight_problem(table["method"]))
        bad.add("w2")  # left out below: the method would name one not 1 again
    try:
        balance = BalanceConfig(softadapt=table.get("softadapt", False) if "softadapt" not in bad else False,
                                **{k: float(table[k]) for k in ("w1", "w2", "beta", "softadapt_beta")
                                   if k in table and k not in bad},
                                **{k: table[k] for k in ("variant",) if k in table})
    except ValueError as err:
        problems += messages(err)
        balance = BalanceConfig()  # the method's own problems, beside these
    method = None
    if "exponent" not in bad:  # else the method's checks would say it is missing
        exponent = table.get("exponent")
        try:
            method = MethodConfig(table["method"], table.get("sampling"),
                                  None if exponent is None else float(exponent), table.get("count"), balance)
        except ValueError as err:
            problems += messages(err)
    raise_problems(problems)
    return [Configuration(family, config, method)]


def _check_keys(table: dict, allowed: set[str]) -> None:
    """Refuse keys a table does not take, naming each with the allowed key it most resembles, or
    the place in a suite file where it belongs."""
    unknown = sorted(set(table) - allowed)
    if unknown:
        homes = {**{key: "at the top of the file" for key in (*TOP_KEYS, "name")},
                 **{f.name: "under [train]" for f in fields(TrainConfig)},
                 **{key: "in a [[configurations]] table" for key in CONFIGURATION_KEYS}}
        hints = [f"{key!r}" + (f" (it belongs {homes[key]})" if key in homes else did_you_mean(key, allowed))
                 for key in unknown]
        raise ValueError(f"unknown key{'s' * (len(unknown) > 1)} {', '.join(hints)}; "
                         f"allowed: {', '.join(sorted(allowed))}")


def load_suite_file(path: Path) -> Suite:
    """A suite from TOML: a top-level ``name`` and ``TOP_KEYS``, [train], [[configurations]].

    A configuration without ``method`` expands to that model's thesis grid.
    """
    try:
        data = tomllib.loads(Path(path).read_bytes().decode())  # TOML is UTF-8, whatever the locale
    except OSError as err:
        raise ValueError(f"cannot read suite file {path}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"suite file {path} is not UTF-8 text (byte {err.start}: {err.reason})") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"suite file {path} is not valid TOML: {err}") from None
    # Every part's problem at once, not one per attempt: (as said alone, as said among others).
    problems: list[tuple[str, str]] = []

    def check(where: str, alone: str, step: Callable[[], object]) -> object:
        try:
            return step()
        except ValueError as err:
            problems.extend((f"{alone}{message}", f"{where}{message}") for message in messages(err))
        return None

    check("", f"suite file {path}: ", lambda: _check_keys(data, {"name", "train", "configurations", *TOP_KEYS}))
    name, top = data.get("name", Path(path).stem), {k: data[k] for k in TOP_KEYS if k in data}
    # the top-level values it knows, beside its unknown keys, with a stand-in configuration
    check("", f"suite file {path}: ", lambda: Suite(name, (Configuration("vae", 1),), **top))
    tables = data.get("configurations", [])
    if not isinstance(tables, list) or not tables:
        problems.append((f"suite file {path} needs at least one [[configurations]] table",
                         "needs at least one [[configurations]] table"))
        tables = []
    configurations = []
    for i, table in enumerate(tables):
        where = f"configuration {i + 1}"
        configurations += check("", f"suite file {path}: ", lambda: _configuration_from_table(table, where)) or []
    check("", f"suite file {path}: ", lambda: check_listed_once(name, configurations))
    train_table = data.get("train", {})
    train = None
    if not isinstance(train_table, dict):
        problems.append((f"suite file {path}: [train] must be a table, got {train_table!r}",
                         f"[train] must be a table, got {train_table!r}"))
    else:  # the values of the keys it knows, beside its unknown ones
        allowed = {f.name for f in fields(TrainConfig)}
        check("[train]: ", f"suite file {path}: [train]: ", lambda: _check_keys(train_table, allowed))
        train = check("[train] ", f"suite file {path}: [train] ",
                      lambda: TrainConfig(**{k: v for k, v in train_table.items() if k in allowed}))
    if problems:
        raise ValueError(problems[0][0] if len(problems) == 1 else
                         f"suite file {path} has {len(problems)} problems: {' | '.join(p for _, p in problems)}")
    try:
        return Suite(name, tuple(configurations), train, **top)
    except ValueError as err:
        raise ValueError(f"suite file {path}: {err}") from None


def suite_name(name_or_path: str) -> str:
    """The name a suite's results are filed under: a .toml file's ``name`` (or stem), else the name itself."""
    return load_suite_file(Path(name_or_path)).name if is_suite_file(name_or_path) else name_or_path


def get_suite(name_or_path: str) -> Suite:
    """A built-in suite by name, or a suite TOML file by path (.toml in any case, as ``report`` and
    ``prior`` tell one)."""
    suites = builtin_suites()
    if is_suite_file(name_or_path):
        return load_suite_file(Path(name_or_path))
    path = Path(name_or_path)
    named_file = " (a suite file's name ends in .toml)" if path.is_file() else ""
    if not named_file and path.suffix and path.with_suffix(".toml").is_file():  # mine.tml, mine.tomll
        named_file = f" (did you mean {path.with_suffix('.toml')}?)"
    check_choice("suite", name_or_path, suites, ", or a path to a .toml file" + named_file)
    return suites[name_or_path]
