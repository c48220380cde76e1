"""Find and inspect Optuna studies: where they are (``StudyPlace``: a storage, or the SQLite files
under studies/), list them, show one (best parameters, top trials, per-fold values).

Works on any study in any Optuna storage; search studies (``benchmark.search``) also show
their settings and per-fold values. Also here: the best trial of a study (for several
objectives too). Their plots are ``benchmark.study_plots``; what ``run --params-from`` reads
of search studies is ``benchmark.params_from``.

Trials are counted by ``benchmark.storage.trial_status``: a trial that recorded why it failed (user
attribute ``error``: a diverged fold; PRUNED in a search of this version, FAIL in an earlier one) is
``failed``, a FAIL trial that did not is ``interrupted`` (Ctrl-C, a killed worker); an interrupted
trial does not use up a search's ``--trials``, so a rerun trains another in its place.
"""

from __future__ import annotations

import math
import shlex
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from benchmark.checks import did_you_mean
from benchmark.results import read_meta, recorded_option, results_dir_flag
from benchmark.search_space import ParamRange, describe_ranges
from benchmark.storage import (METRICS_VERSION, StoreError, looking_at, open_for_reading, password_hidden, safe_url,
                               same_storage, setting_text, sqlite_file, sqlite_url, status_counts, trial_status,
                               upgraded)
from benchmark.store import UNIT_STATUSES, held_configurations, unit_counts
from benchmark.tables import text_table

TOP = 5
# Where studies live by default: one SQLite file per suite (``<suite>.db``) and per search (``<study>.db``).
STUDIES_DIR = Path("studies")


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial; for several objectives, the Pareto-front trial best in the
    ``lead_objective`` (``recon``, in whatever order the objectives were given)."""
    ranked = ranked_trials(study)
    return ranked[0] if ranked else None


def study_names(url: str) -> list[str]:
    with looking_at(url) as storage:
        return [] if storage is None else sorted(optuna.get_all_study_names(storage))


def file_name(study_name: str) -> str:
    """``study_name`` with the characters that cannot be in a file or folder name replaced."""
    return "".join(c if c.isalnum() or c in "-_.=," else "_" for c in study_name)


def study_files(studies_dir: Path = STUDIES_DIR) -> list[str]:
    """The URLs of the SQLite files under ``studies_dir``."""
    return [sqlite_url(p) for p in sorted(studies_dir.glob("*.db"))] if studies_dir.is_dir() else []


def default_storage(study_name: str, studies_dir: Path = STUDIES_DIR) -> str:
    """Where study ``study_name`` lives without ``--storage``: the SQLite file under ``studies_dir``
    that holds it (a suite's ``<suite>.db``; ``search.db``, where searches went before they had
    files of their own), else its own file, ``<study_name>.db``."""
    own = studies_dir / f"{file_name(study_name)}.db"
    if not own.exists():
        holding = (url for url in study_files(studies_dir) if study_name in study_names(url))
        return next(holding, sqlite_url(own))
    return sqlite_url(own)


@dataclass(frozen=True)
class StudyPlace:
    """Where studies are looked for: one storage (``--storage``), or else the SQLite files under
    ``folder`` (``--studies-dir``), a study in the file that holds it or in its own."""

    storage: str | None = None
    folder: Path = STUDIES_DIR

    def url(self, study_name: str) -> str:
        return self.storage or default_storage(study_name, self.folder)

    def files(self) -> list[str]:
        return [self.storage] if self.storage else study_files(self.folder)

    def flags(self, study_name: str, url: str) -> str:
        """The options that find study ``study_name`` at ``url`` again from here, e.g. `` --storage URL``."""
        if same_storage(default_storage(study_name), url):  # a SQLite file named by either path
            return ""
        if same_storage(default_storage(study_name, self.folder), url):
            return f" --studies-dir {shlex.quote(str(self.folder))}"
        path = sqlite_file(url)
        if path is not None and path.name == f"{file_name(study_name)}.db":  # its own file, in another folder
            return f" --studies-dir {shlex.quote(str(path.parent))}"
        return f" --storage {shlex.quote(safe_url(url))}"

    def __str__(self) -> str:
        return safe_url(self.storage) if self.storage else f"{self.folder}/"


def load_existing_study(place: StudyPlace, name: str) -> optuna.Study:
    """Load study ``name`` from ``place``; an unknown name raises a one-line ``ValueError``
    listing the names there."""
    storage = open_for_reading(place.url(name))
    if storage is None and place.storage is not None:
        raise no_file(place.storage)
    names = [] if storage is None else sorted(optuna.get_all_study_names(storage))
    if name not in names:
        if place.storage is None:
            names = sorted({n for file in place.files() for n in study_names(file)})
            elsewhere = recorded_storages().get(name)
            if elsewhere and not same_storage(elsewhere, place.url(name)):  # e.g. a run with --studies-dir
                raise ValueError(f"no study {name!r} in {place}; the run that exported it recorded it in "
                                 f"{elsewhere}: add --storage "
                                 + ("with that URL and its password" if password_hidden(elsewhere)
                                    else shlex.quote(elsewhere)))
        available = ", ".join(names) if names else "none"
        # A suite's study is named suite-<suite>: `studies show quick` means it
        hint = f" (did you mean 'suite-{name}'?)" if f"suite-{name}" in names else did_you_mean(name, names)
        raise ValueError(f"no study {name!r}{hint} in {place}; available: {available}")
    return optuna.load_study(study_name=name, storage=storage)


def no_file(url: str) -> ValueError:
    """The error for a --storage naming a SQLite file that does not exist: asked for by name, a mistyped
    path must not read as an empty storage."""
    return ValueError(f"no SQLite file {sqlite_file(url)} (from --storage {url})")


def recorded_storages(results_dir: Path = Path("results")) -> dict[str, str]:
    """Study name → the storage that the runs' exports under ``results_dir`` record for it."""
    found = {}
    for path in sorted(results_dir.glob("*_meta.json")):
        meta = read_meta(results_dir, path.name.removesuffix("_meta.json"))
        if meta.get("study") and meta.get("storage"):
            found[str(meta["study"])] = str(meta["storage"])
    return found


def unlisted_studies(listed: Iterable[str], folder: Path = STUDIES_DIR) -> list[str]:
    """A note on the studies that runs exported under results/ but that are not among ``listed`` (those under
    ``folder``): a run with another --studies-dir or a --storage put them elsewhere. One note per place: the
    SQLite files of one folder (a mistyped --studies-dir printed a line for each study of the right one) or
    one server's storage."""
    listed = set(listed)
    places: dict[str | Path, list[tuple[str, str]]] = {}
    for name, url in recorded_storages().items():
        if name not in listed and _unlooked(name, url, folder):
            path = sqlite_file(url)  # `--studies-dir` lists a folder's .db files, not others
            places.setdefault(path.resolve().parent if path and path.suffix == ".db" else url, []).append((name, url))
    notes: list[str] = []
    for place, studies in places.items():
        if len(studies) == 1:
            (name, url), = studies
            notes.append(f"study {name} (exported to results/) is in {url}, not under {folder}/: "
                         + _listing(url) + " lists it")
        else:
            where, how = ((f"SQLite files in {place}/", f"`studies list --studies-dir {shlex.quote(str(place))}`")
                          if isinstance(place, Path) else (place, _listing(place)))
            notes.append(f"studies {', '.join(name for name, _ in studies)} (exported to results/) are in {where}, "
                         f"not under {folder}/: {how} lists them")
    return notes


def _listing(url: str) -> str:
    """The command that lists the studies of storage ``url``, its password left for the user to give."""
    return ("`studies list --storage` with that URL and its password" if password_hidden(url)
            else f"`studies list --storage {shlex.quote(url)}`")


def _unlooked(name: str, url: str, folder: Path) -> bool:
    """Whether ``list_all_studies(folder)`` did not look in ``url`` for study ``name``: a server's storage, or a
    SQLite file outside ``folder`` that holds it (not one in there, listed or skipped as damaged, nor one that is
    gone, or whose study was deleted)."""
    if not url.startswith("sqlite:///"):
        return True
    path = sqlite_file(url)
    if path is None or not path.is_file() or path.resolve().parent == folder.resolve():
        return False
    try:
        return name in study_names(url)
    except Exception:  # damaged: it may well hold it, which `studies list --storage` then says it cannot read
        return True


def objective_names(study: optuna.Study) -> list[str]:
    settings = study.user_attrs.get("settings")
    names = settings.get("objectives") if isinstance(settings, dict) else None
    if isinstance(names, list) and len(names) == len(study.directions):
        return [str(n) for n in names]
    return ["value"] if len(study.directions) == 1 else [f"value {i}" for i in range(len(study.directions))]


def suite_of(study: optuna.Study) -> str | None:
    """The suite whose units ``study`` holds (a ``run`` study), or None (a ``search`` study)."""
    settings = study.user_attrs.get("settings")
    return settings.get("suite") if isinstance(settings, dict) else None


def suite_note(study: optuna.Study) -> str:
    """What a suite's study is, and the `report` of its run (in the --results-dir its first run's command gave)."""
    suite, command = suite_of(study), study.user_attrs.get("command")
    results_dir = recorded_option(command, "--results-dir")
    where = results_dir_flag(Path(results_dir)) if results_dir else ""
    return (f"a suite study: each trial is one (configuration, fold) unit of suite {suite!r}, not a point of a "
            f"search, so no trial is best; its table: python -m benchmark report --suite {suite}{where}")


def lead_objective(study: optuna.Study) -> int:
    """The index of the objective that ranks a Pareto front: ``recon`` where it is one, else the first."""
    names = objective_names(study)
    return names.index("recon") if "recon" in names else 0


def ranked_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials, best first (for several objectives: the Pareto front, by the ``lead_objective``)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(study.directions) > 1:
        front = {t.number for t in study.best_trials}
        complete = [t for t in complete if t.number in front]
    lead = lead_objective(study)
    sign = -1.0 if study.directions[lead] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return sorted(complete, key=lambda t: (sign * t.values[lead], t.number))


@dataclass(frozen=True)
class StudyRow:
    """One line of ``studies list``: a search's trials, or a suite run's units (each once, however often it
    was retried: ``unit_status``), which are neither pruned nor surplus (None)."""

    name: str
    directions: tuple[str, ...]
    complete: int
    pruned: int | None
    failed: int        # with a recorded reason (diverged)
    interrupted: int   # FAIL without a reason: Ctrl-C or a killed worker
    running: int
    waiting: int       # not started: a suite's units yet to train, or a search's queued trials
    surplus: int | None  # never trained: a search's trials beyond its budget
    best: tuple[float, ...] | None
    suite: str | None = None  # a run's study: its trials are the suite's units, not points of a search
    file: str | None = None   # the SQLite file it is in, where a folder's are listed


def list_all_studies(folder: Path = STUDIES_DIR) -> tuple[list[StudyRow], list[str]]:
    """A row per study in every SQLite file under ``folder``, and why each file that cannot be
    read was skipped (one damaged file hides no other's)."""
    rows, skipped = [], []
    for file in study_files(folder):
        try:
            rows += [replace(row, file=sqlite_file(file).name) for row in list_studies(file)]
        except StoreError as err:
            skipped.append(str(err))
    return sorted(rows, key=lambda row: row.name), skipped


def list_studies(url: str) -> list[StudyRow]:
    """A row per study at ``url``."""
    rows = []
    with looking_at(url) as storage:
        if storage is None:
            raise no_file(url)
        for name in sorted(optuna.get_all_study_names(storage)):
            study = optuna.load_study(study_name=name, storage=storage)
            directions = tuple(d.name.lower() for d in study.directions)
            if suite := suite_of(study):
                units = unit_counts(study)
                rows.append(StudyRow(name, directions, units["done"], None, units["failed"], units["interrupted"],
                                     units["running"], units["waiting"], None, None, suite))
                continue
            counts, ranked = status_counts(study.get_trials(deepcopy=False)), ranked_trials(study)
            rows.append(StudyRow(name, directions, counts["complete"], counts["pruned"], counts["failed"],
                                 counts["interrupted"], counts["running"], counts["waiting"], counts.get("surplus", 0),
                                 tuple(ranked[0].values) if ranked else None))
    return rows


def _number(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.6g}"


def _count(value: int | None) -> int | str:
    return "–" if value is None else value


def format_study_list(rows: list[StudyRow], place: StudyPlace) -> str:
    if not rows:
        return f"no studies in {place}"
    # A run's study minimises nothing: Optuna's direction would read as if it were a search. A name in two
    # files (a search given another --storage) says which file each row is in.
    names = Counter(r.name for r in rows)
    table = [[r.name + (f" ({r.file})" if names[r.name] > 1 and r.file else ""),
              "– (suite run)" if r.suite else ",".join(r.directions), r.complete, _count(r.pruned), r.failed,
              r.interrupted, r.running, r.waiting, _count(r.surplus),
              ", ".join(_number(v) for v in r.best) if r.best else "–"] for r in rows]
    return text_table(table, ("study", "direction(s)", "complete", "pruned", "failed", "interrupted", "running",
                              "waiting", "surplus", "best"), ("left", "left", *["right"] * 7, "left"))


def _params_text(params: dict) -> str:
    return ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def describe_study(study: optuna.Study) -> str:
    """Settings, best parameters, the top trials and the per-fold values of the best trial."""
    names = objective_names(study)
    trials = study.get_trials(deepcopy=False)
    counts = ", ".join(f"{status} {n}" for status, n in status_counts(trials).items())
    settings = study.user_attrs.get("settings")
    suite = suite_of(study)
    # A run's study minimises nothing: its units' losses are in its table, not an objective.
    objectives = "" if suite else "; objective(s): " + ", ".join(f"{n} ({d.name.lower()})"
                                                                  for n, d in zip(names, study.directions))
    held = f"{len(trials)} trial{'s' * (len(trials) != 1)} ({counts})"
    if suite:  # a unit retried after Ctrl-C or a killed worker has several trials: where the units stand comes first
        units = unit_counts(study)
        held = (f"{units.total()} unit{'s' * (units.total() != 1)} ("
                + ", ".join(f"{status} {units[status]}" for status in UNIT_STATUSES) + f") in {held}")
    lines = [f"study {study.study_name}: {held}{objectives}"]
    if isinstance(settings, dict):
        # A suite study's configurations are those its units were enqueued for (its files may have grown), and its
        # tuned ones those its units were trained as too (a rerun may train a search's new best): read from trials.
        # The metrics version is the tool's, not a setting a user gives: shown only of a study this version
        # does not read as its own (which a run or search refuses).
        current = upgraded(settings).get("metrics_version") == METRICS_VERSION
        hidden = ("ranges",) + ("metrics_version",) * current + (("configurations", "params_from") if suite else ())
        lines.append("settings: " + ", ".join(f"{k}={setting_text(v, width=None)}" for k, v in settings.items()
                                              if k not in hidden))
        if isinstance(settings.get("ranges"), dict):
            lines.append("ranges: " + describe_ranges({k: ParamRange(**r) for k, r in settings["ranges"].items()}))
    lines.extend(f"trial #{t.number} failed: {t.user_attrs['error']}" for t in trials
                 if trial_status(t) == "failed")
    if suite:
        held = held_configurations(study)
        lines.append(f"units of {len(held)} configuration{'s' * (len(held) != 1)}: {', '.join(held)}")
        stored = settings.get("params_from")  # a suite study's settings are a dict: they name its suite
        trained = {t.user_attrs["config_id"]: t.user_attrs["params_from"] for t in trials
                   if "params_from" in t.user_attrs}
        tuned = {**(stored if isinstance(stored, dict) else {}), **trained}  # the first run's, trained or not yet
        if tuned:
            lines.append("tuned: " + ", ".join(f"{config} from search {search!r}" for config, search in tuned.items()))
        taken = Counter(t.user_attrs["taken_from"] for t in trials if "taken_from" in t.user_attrs)
        if taken:  # by a run of the same suite, tuned or not (``benchmark.reuse``): units trained in the other
            lines.append("taken from other runs, not trained here: " + ", ".join(
                f"{n} unit{'s' * (n != 1)} from run {run!r}" for run, n in sorted(taken.items())))
        if study.user_attrs.get("command"):
            lines.append(f"started by: {study.user_attrs['command']}")
        return "\n".join([*lines, suite_note(study)])
    ranked = ranked_trials(study)
    if not ranked:
        lines.append("no complete trial yet")
        return "\n".join(lines)
    best = ranked[0]
    label = "best trial" if len(names) == 1 else f"best trial (Pareto front, lowest {names[lead_objective(study)]})"
    lines.append(f"{label}: #{best.number}  " + ", ".join(f"{n}={_number(v)}" for n, v in zip(names, best.values)))
    lines.append(f"best parameters: {_params_text(best.params)}")
    if "config_id" in best.user_attrs:
        lines.append(f"configuration: {best.user_attrs['config_id']}")
    lines.append("")
    shown = min(TOP, len(ranked))
    lines.append(f"top {shown} trial{'s' if shown > 1 else ''}" + (" on the Pareto front" if len(names) > 1 else "") + ":")
    lines.append(text_table([[t.number, *map(_number, t.values), _params_text(t.params)] for t in ranked[:TOP]],
                            ("trial", *names, "parameters"), ("right",) * (1 + len(names)) + ("left",)))
    folds = {k: best.user_attrs.get(f"fold_{k}") for k in ("recon", "latent", "recon_cond", "best_epoch")}
    if folds["recon"]:
        lines.append("")
        lines.append(f"per-fold values of trial #{best.number}:")
        table = []
        for i, recon in enumerate(folds["recon"]):
            latent, cond, epoch = (folds[k][i] if folds[k] and i < len(folds[k]) else None
                                   for k in ("latent", "recon_cond", "best_epoch"))
            table.append([i, _number(recon), _number(latent), _number(cond), "–" if epoch is None else epoch])
        lines.append(text_table(table, ("fold", "recon", "latent", "recon_cond", "best epoch"), ("right",) * 5))
    return "\n".join(lines)
