"""Reading what a run exported: ``results/<suite>.csv`` (one row per unit), ``<suite>_history.csv``,
``<suite>_meta.json`` and, after ``python -m benchmark prior``, ``<suite>_prior.csv``; and finding
the checkpoints those rows record.

``load_suite`` validates everything a report needs before anything is written, so an unknown or
empty suite gives one ``ReportError`` line; ``find_missing`` says which configurations are short of
folds.
"""

from __future__ import annotations

import io
import json
import math
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmark.checks import check_kind, did_you_mean, problems_of
from benchmark.data import Dataset, load_dataset
from benchmark.files import check_name
from benchmark.stats import completed
from benchmark.storage import StoreConfig
from benchmark.suites import RESULTS_SUFFIXES, builtin_suites

REQUIRED = ("config_id", "family", "config", "method", "fold", "state", "recon", "latent")
# variant: SoftAdapt's; device and torch: what each unit trained on
TEXT_COLUMNS = ("sampling", "variant", "device", "torch", "error", "checkpoint", "params_from",
                "taken_from")
NUMERIC_COLUMNS = ("exponent", "count", "w1", "w2", "beta", "softadapt_beta", "best_epoch", "recon", "latent",
                   "recon_cond", "total", "recon_train", "recon_cond_train", "latent_train", "recon_mean_image",
                   "seconds", "busy_load", "n_train", "n_val", "stacked")
OLD_NAMES = {"val_bits_per_dim": "val_bits_per_code"}  # columns renamed since: older CSVs are read as the new


class ReportError(ValueError):
    """A suite that cannot be reported (unknown, empty, malformed); the message is one line."""


class NothingDoneYet(ReportError):
    """A suite whose run has finished no unit yet: nothing is wrong with it, it is only early."""


@dataclass(frozen=True)
class MissingUnits:
    """A configuration with fewer COMPLETE folds than the suite expects."""

    config_id: str
    complete: int
    expected: int
    failed: tuple[tuple[int, str], ...] = ()     # (fold, error) of FAIL units
    pending: tuple[tuple[int, str], ...] = ()    # (fold, state) of RUNNING / WAITING units

    def describe(self) -> str:
        parts = [f"{self.config_id}: {self.complete}/{self.expected} folds complete"]
        if self.complete == 0 and not self.failed and not self.pending:
            parts.append("not in the results")
        parts += [f"fold {fold} FAIL: {error or 'no error recorded'}" for fold, error in self.failed]
        parts += [f"fold {fold} {state}" for fold, state in self.pending]
        return "; ".join(parts)


@dataclass(frozen=True)
class SuiteResults:
    suite: str
    results: pd.DataFrame
    history: pd.DataFrame | None
    meta: dict
    prior: pd.DataFrame | None = None   # <suite>_prior.csv, once the VQ-VAE prior stage has run: its current rows
    history_problem: str | None = None  # why <suite>_history.csv could not be read (history is None)
    prior_problems: tuple[str, ...] = ()  # <suite>_prior.csv's rows left out (``current_priors``), or why all were
    priors_left_out: frozenset[str] = frozenset()  # the configurations of those rows
    results_dir: Path = Path("results")  # where these were read from, for the commands the report gives

    @property
    def expected_folds(self) -> int:
        return int(self.meta["folds"]) * int(self.meta.get("repeats", 1) or 1)


def results_dir_flag(results_dir: Path) -> str:
    """`` --results-dir DIR`` where ``results_dir`` is not the default (results/), else "": what a command
    that a message gives needs to find these results."""
    return "" if Path(results_dir) == Path("results") else f" --results-dir {shlex.quote(str(results_dir))}"


def recorded_option(command: str | None, option: str) -> str | None:
    """The value a recorded command (``run``'s, in its metadata or study) gives ``option``, or None. The
    parser takes options spelled out alone (no abbreviations), so a token is the option or is not."""
    tokens = shlex.split(command or "")
    for token, following in zip(tokens, [*tokens[1:], None]):
        name, equals, value = token.partition("=")
        if name == option:
            return value if equals else following
    return None


def available_suites(results_dir: Path) -> list[str]:
    """Suites with a results CSV in ``results_dir``."""
    return sorted(p.stem for p in Path(results_dir).glob("*.csv") if not p.stem.endswith(RESULTS_SUFFIXES))


def load_suite(results_dir: Path, suite: str) -> SuiteResults:
    """Read the runner's three files for ``suite``; raises ``ReportError`` when the suite is
    unknown, empty, has no COMPLETE unit or lacks required columns."""
    results_dir = Path(results_dir)
    path = results_dir / f"{suite}.csv"
    if not path.is_file():
        available = available_suites(results_dir)
        known = f"suites with results: {', '.join(available) or 'none yet'}"
        if "," in suite:  # a list, as --objectives takes one: no suite's name holds a comma
            raise ReportError(f"no results for suite {suite!r} in {results_dir}/ ({known}): --suite names one suite")
        builtin = suite in builtin_suites()
        typo = did_you_mean(suite, available)
        if typo and not builtin:
            raise ReportError(f"no results for suite {suite!r}{typo} in {results_dir}/; {known}")
        where = results_dir_flag(results_dir)
        variant = (f", or with `--name {shlex.quote(suite)}` for a variant of a built-in suite"
                   if not problems_of(check_name, suite, "suite name") else "")  # a name a run can give
        how = (f"`python -m benchmark run --suite {suite}{where}`" if builtin else
               f"`python -m benchmark run --suite FILE.toml{where}` for a suite file{variant}")
        raise ReportError(f"no results for suite {suite!r} in {results_dir}/ ({known}; a run exports them once it "
                          f"has finished a unit); run it first: {how}")
    results = _read_csv(path, "a results CSV", as_written=TEXT_COLUMNS)
    if results.empty:
        raise NothingDoneYet(f"suite {suite!r} has no results yet ({path} "
                             f"{'is empty' if path.stat().st_size == 0 else 'holds no rows'})")
    _check_columns(results, REQUIRED, path, "a results export")
    for column in TEXT_COLUMNS:
        results[column] = results[column].astype(object).fillna("").astype(str) if column in results else ""
    for column in NUMERIC_COLUMNS:
        results[column] = _numbers(results, column, path) if column in results else math.nan
    results["softadapt"] = (results["softadapt"].map(lambda v: str(v).strip().lower() in ("true", "1", "1.0", "yes"))
                            if "softadapt" in results else False)
    results["config"] = results["config"].astype(int)
    results["fold"] = results["fold"].astype(int)
    if not (results["state"] == "COMPLETE").any():
        states = ", ".join(f"{n} {state}" for state, n in results["state"].value_counts().items())
        first = next((e for e in results.get("error", []) if e), "")
        every_failed = (results["state"] == "FAIL").all()
        command = read_meta(results_dir, suite).get("command")
        advice = ("; a rerun would fail them again: train the suite with other settings under a --name of its own "
                  "(a lower lr in a suite file, for a loss that diverged)" if every_failed else
                  f"; {go_on_with(command)}" if command else "")
        early = NothingDoneYet if not every_failed else ReportError
        raise early(f"suite {suite!r} has no completed units yet ({states})"
                    + (f"; first error: {first}" if first else "") + advice)

    path = meta_path(results_dir, suite)
    meta: dict = {}
    if path.is_file():
        try:
            meta = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ReportError(f"{path} is not valid JSON: {error}") from None
        _check_meta(meta, path)
    meta.setdefault("suite", suite)
    meta.setdefault("folds", int(results["fold"].max()) + 1)
    meta.setdefault("repeats", 1)
    meta.setdefault("configurations", list(pd.unique(results["config_id"])))
    history, problem = _read_history(results_dir / f"{suite}_history.csv")
    try:
        prior, left_out = read_prior(results_dir, suite), []
    except ReportError as error:  # the report goes on without its priors, as it does without its curves
        prior, left_out = None, [f"priors left out: {error}"]
    left_ids: frozenset[str] = frozenset()
    if prior is not None:
        left_ids = frozenset(prior["config_id"])
        prior, left_out = current_priors(prior, results)
        left_ids -= frozenset(prior["config_id"])
    return SuiteResults(suite, results, history, meta, prior if prior is None or len(prior) else None, problem,
                        tuple(left_out), left_ids, results_dir)


HISTORY_COLUMNS = ("config_id", "fold", "epoch", "latent", "recon")  # what every validation curves figure draws on
HISTORY_EXTRA = ("recon_cond", "total")  # their other panels, where a history has them (older exports do not)


def _read_history(path: Path) -> tuple[pd.DataFrame | None, str | None]:
    """``<suite>_history.csv`` (None when missing or empty), or why it cannot be read: the report
    goes on without its curves and says why."""
    if not path.is_file():
        return None, None
    try:
        frame = _read_csv(path, "a validation history CSV")
        if frame.empty:
            return None, None
        _check_columns(frame, HISTORY_COLUMNS, path, "a `run` export")
        for column in (*HISTORY_COLUMNS[1:], *(c for c in HISTORY_EXTRA if c in frame)):
            frame[column] = _numbers(frame, column, path)
    except ReportError as error:
        return None, str(error)
    return frame, None


# What a report reads from <suite>_meta.json, and what each must be where present.
META_KINDS = (("folds", int, "an integer >= 2", 2),
              ("repeats", (int, type(None)), "an integer >= 1 or null", 1), ("seed", int, "an integer >= 0", 0), ("limit", (int, type(None)), "an integer >= 1 or null", 1),
              ("epochs", int, "an integer >= 1", 1), ("batch_size", int, "an integer >= 1", 1),
              ("image_size", (int, type(None)), "an integer >= 1 or null", 1),
              ("image_channels", (int, type(None)), "an integer >= 1 or null", 1),
              ("lr", (int, float), "a number", None), ("dataset", str, "a name", None),
              ("data_root", (str, type(None)), "a path or null", None), ("configurations", list, "a list", None),
              ("params_from", dict, "an object of names", None), ("search_storages", dict, "an object of URLs", None),
              ("images_digest", (str, type(None)), "a SHA-256 or null", None))


def _check_meta(meta: object, path: Path) -> None:
    """``ReportError`` naming ``path`` when the meta file's values are not what an export writes."""
    if not isinstance(meta, dict):
        raise ReportError(f"{path} holds a {type(meta).__name__}, not a run's metadata (an object)")
    for key, kind, what, least in META_KINDS:
        if key not in meta:
            continue
        value = meta[key]
        try:
            check_kind(key, value, kind, what)
            if least is not None and isinstance(value, int) and value < least:
                raise ValueError(f"{key} must be {what}, got {value!r}")
            if isinstance(value, dict) and not all(isinstance(v, str) for v in value.values()):
                raise ValueError(f"{key} must be {what}, got {value!r}")
        except ValueError as err:
            raise ReportError(f"{path}: {err}; run the command that made it again to export it anew") from None


def _read_csv(path: Path, what: str, as_written: Iterable[str] = (), **options) -> pd.DataFrame:
    """``path`` as a frame (empty for an empty file; ``options`` go to ``pd.read_csv``), its columns
    ``as_written`` the text they hold (pandas reads NA, null or None as missing: a search may be named
    so); ``ReportError`` when it is not ``what`` or ends inside a line: cut short by a copy or a disk
    that stopped, which can leave its last number cut short too. The file is read once: a run may
    export it again meanwhile."""
    data = path.read_bytes()
    try:
        frame = pd.read_csv(io.BytesIO(data), **options)
        if text := [column for column in as_written if column in frame]:
            written = pd.read_csv(io.BytesIO(data), usecols=text, dtype=str, keep_default_na=False)
            frame[text] = written[text]  # assigned by position, and usecols keeps the file's order
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ReportError(f"{path} is not {what}: {str(error).strip().splitlines()[0]}") from None
    if not data.endswith(b"\n"):
        raise ReportError(f"{path} does not end with a newline, as a file cut short does (an interrupted "
                          "copy, a full disk): restore it, or run the command that made it again; if it is "
                          "whole, saved so by an editor, end it with a newline")
    return frame


def _check_columns(frame: pd.DataFrame, required: Iterable[str], path: Path, what: str) -> None:
    """``ReportError`` naming the ``required`` columns that ``frame`` (read from ``path``, ``what``
    makes such files) lacks."""
    lacking = [column for column in required if column not in frame.columns]
    if lacking:
        raise ReportError(f"{path} lacks the column{'s' * (len(lacking) > 1)} {', '.join(lacking)}; is it {what}?")


def _numbers(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """``frame[column]`` as numbers. Empty cells are missing values; anything else that is not a
    number would silently drop a fold from the means, so it is a ``ReportError``."""
    numbers = pd.to_numeric(frame[column], errors="coerce")
    bad = numbers.isna() & frame[column].notna()
    if bad.any():
        rows = ", ".join(f"line {i + 2}: {frame[column][i]!r}" for i in frame.index[bad][:3])
        raise ReportError(f"{path}: column {column!r} holds values that are not numbers ({rows})")
    return numbers


def run_dataset(meta: dict) -> Dataset:
    """The dataset a run trained on, loaded as its meta file records it (its training split is the
    pool the folds split; its test split was never trained on). ``ValueError`` without a meta file
    or when the data cannot be loaded here."""
    if "dataset" not in meta:
        raise ValueError(f"no {meta.get('suite', 'suite')}_meta.json next to the results: the run's dataset is unknown")
    return load_dataset(meta["dataset"], meta.get("data_root"), limit=meta.get("limit"), seed=int(meta.get("seed", 0)))


def find_missing(suite: SuiteResults) -> list[MissingUnits]:
    """Configurations (from the meta list, then any extra in the results) short of COMPLETE folds."""
    results, expected = suite.results, suite.expected_folds
    done = completed(results).groupby("config_id")["fold"].nunique()
    ids = list(dict.fromkeys([*suite.meta["configurations"], *results["config_id"]]))
    missing = []
    for config_id in ids:
        count = int(done.get(config_id, 0))
        if count >= expected:
            continue
        rows = results[results["config_id"] == config_id]
        finished = set(rows.loc[rows["state"] == "COMPLETE", "fold"])
        open_rows = rows[~rows["fold"].isin(finished)].drop_duplicates("fold", keep="last").sort_values("fold")
        failed = tuple((int(r.fold), _failure(r)) for r in open_rows.itertuples() if r.state == "FAIL")
        pending = tuple((int(r.fold), str(r.state)) for r in open_rows.itertuples() if r.state != "FAIL")
        missing.append(MissingUnits(config_id, count, expected, failed, pending))
    return missing


def _failure(row: tuple) -> str:
    """A failed unit's error, with the run it was taken from (``benchmark.reuse``) where it was."""
    taken = getattr(row, "taken_from", "")
    return f"{row.error} (taken from run {taken})" if taken else str(row.error)


def meta_path(results_dir: Path, suite: str) -> Path:
    return Path(results_dir) / f"{suite}_meta.json"


def go_on_with(command: str) -> str:
    """How a refusal points to the run filed under a name: the command that run recorded."""
    return f"to go on with it, run the command it recorded: `{command}`"


def read_meta(results_dir: Path, suite: str) -> dict:
    """The run's ``<suite>_meta.json``; {} when there is none or it cannot be read (for hints and
    checks that have nothing to say then; ``load_suite`` reads it strictly)."""
    try:
        meta = json.loads(meta_path(results_dir, suite).read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def tuned_from(results_dir: Path, suite: str) -> set[str] | None:
    """The searches (``run --params-from``) that the results filed under ``suite`` took parameters
    from, read from the results' own ``params_from`` column, not the meta file (a first export stopped
    between the two leaves the CSV alone); None without results or when they cannot be read."""
    try:
        column = pd.read_csv(Path(results_dir) / f"{suite}.csv", usecols=lambda c: c == "params_from", dtype=str,
                             keep_default_na=False)
    except (OSError, ValueError):
        return None
    return set(column["params_from"]) - {""} if "params_from" in column else set()


def safe_name(config_id: str) -> str:
    """A configuration id as a plain file name (the report names its figures the same way)."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", config_id)


def prior_csv_path(results_dir: Path, suite: str) -> Path:
    return Path(results_dir) / f"{suite}_prior.csv"


def existing_path(stored: str, fallback: Path) -> Path:
    """``stored`` (a path written relative to where a command ran) if it exists, else ``fallback``.

    The fallback lets a results directory be moved or used from another working directory.
    """
    path = Path(stored)
    return path if (stored and path.exists()) or not fallback.exists() else fallback


def artifacts_beside(results_dir: Path, suite: str) -> Path:
    """Where a run that exported to ``results_dir`` keeps ``suite``'s weights by default (no ``--artifacts-dir``)."""
    return StoreConfig(results_dir=Path(results_dir)).artifacts(suite)


def checkpoint_file(recorded: str, results_dir: Path, suite: str) -> Path:
    """A checkpoint that ``results/<suite>.csv`` records: the one beside these results where it is there, else
    where it was recorded (``--artifacts-dir``). Beside first: a relative recorded path, taken from another
    working folder, may name another results folder's weights of the same name."""
    beside = artifacts_beside(results_dir, suite) / Path(recorded).name
    return beside if recorded and beside.is_file() else Path(recorded)


def current_priors(prior: pd.DataFrame, results: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The rows of ``prior`` fitted to weights that ``results`` still hold, and a line naming each other one:
    a prior of an earlier run whose results were since replaced (its NLL would sit beside this run's as if
    scored on the same images), or of a configuration or fold these results lack. A row of an earlier
    version, which names no checkpoint, is kept."""
    done = completed(results)
    held = {(config_id, int(fold)): Path(checkpoint).name
            for config_id, fold, checkpoint in zip(done["config_id"], done["fold"], done["checkpoint"]) if checkpoint}
    kept, lines, listed = [], [], set(results["config_id"])
    for config_id, fold, name in zip(prior["config_id"], prior["fold"], prior["checkpoint"]):
        now = held.get((config_id, int(fold)))
        kept.append(not name or now == name)
        if kept[-1]:
            continue
        if config_id not in listed:  # its run's suite file lists it no longer: no `prior` of this run can fit it
            lines.append(f"prior of {config_id} left out: these results do not hold {config_id} at all (the run that "
                         "exported them did not list it)")
            continue
        why = (f"fitted to other weights of fold {int(fold)} ({name}, of an earlier run) than these results hold"
               if now else f"these results hold no weights of fold {int(fold)} of it")
        lines.append(f"prior of {config_id} left out: {why}; run `prior` again for this run's")
    return prior[pd.Series(kept, index=prior.index, dtype=bool)], lines


def read_prior(results_dir: Path, suite: str) -> pd.DataFrame | None:
    """``<suite>_prior.csv`` as a frame, or None where the prior stage has not run."""
    path = prior_csv_path(results_dir, suite)
    if not path.is_file() or not path.stat().st_size:
        return None
    text = ("prior_path", "checkpoint")  # checkpoint: absent from the exports of earlier versions
    try:
        frame = _read_csv(path, "a `prior` export", dtype=dict.fromkeys(text, str)).rename(columns=OLD_NAMES)
        _check_columns(frame, ("config_id", "fold", "val_nll_nats"), path, "a `prior` export")
        for column in frame.columns.drop(["config_id", *text], errors="ignore"):
            frame[column] = _numbers(frame, column, path)
    except ReportError as error:  # `prior` reads it too, so it cannot be the command that mends it
        raise ReportError(f"{error}; or remove it: `python -m benchmark prior --suite {suite}"
                          f"{results_dir_flag(results_dir)}` then trains every prior anew") from None
    for column in text:
        frame[column] = frame[column].fillna("").astype(str) if column in frame else ""
    return frame
