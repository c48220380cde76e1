"""The Optuna storage that suites and searches share: opening it (SQLite by default, any URL such
as PostgreSQL) with the atomic claim of a waiting trial, heartbeats and the grace before a
silent worker is taken for dead, trial statuses, and the settings stored in a study, with the
metrics version that keeps a study's old folds from being mixed with new ones.

Optuna owns the bookkeeping: RDB storage, trial states, and heartbeats that turn a killed
worker's trial into FAIL and re-enqueue it.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import multiprocessing.process
import random
import re
import shlex
import shutil
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._rdb.models import (StudyUserAttributeModel, TrialHeartbeatModel, TrialModel,
                                         TrialUserAttributeModel, TrialValueModel)
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError
from sqlalchemy.engine import make_url

from benchmark.checks import first_line
from benchmark.files import check_folder
from benchmark.processes import worker_id

CONNECT_TIMEOUT = 10  # seconds to wait for a database server to answer
# libpq's words for a server that could not be reached at all
UNREACHED = ("Connection refused", "timeout expired", "No route to host", "Network is unreachable")
STATUSES = ("complete", "pruned", "failed", "interrupted", "running", "waiting")
# What losing the race to create Optuna's tables looks like (PostgreSQL, SQLite).
CREATION_RACE = ("already exists", "duplicate key", "UniqueViolation", "UNIQUE constraint", "IntegrityError")
# Stored in every study's settings and raised when what validation measures changes, so that a
# study's old folds are never mixed with new ones. 2: a Gaussian VAE's validation decodes a
# sampled z (the ELBO's terms) instead of μ; precision is stored as trained (fp32 or bf16).
# 3: a VQ-VAE's β weighs the commitment term alone, not the whole VQ loss. 4: VQ-VAE 1 (no residual
# layers) activates its last encoder and first decoder layers once, not twice. A study that a
# change does not touch carries on (``upgraded``).
METRICS_VERSION = 4


class StoreError(ValueError):
    """The storage cannot be used as asked (unreachable, or holds a different suite)."""


Agreed = TypeVar("Agreed")
Opened = TypeVar("Opened")


def check_heartbeat(seconds: int) -> None:
    """``ValueError`` unless ``seconds`` between a worker's heartbeats is at least one."""
    if seconds < 1:
        raise ValueError(f"--heartbeat must be >= 1 second, got {seconds}")


# Heroku's and others' spelling of a PostgreSQL URL, postgres://, which SQLAlchemy does not take
POSTGRES_SPELLING = "SQLAlchemy names PostgreSQL postgresql://, not postgres://"
AT_IN_PASSWORD = "the password holds an @, which a URL writes as %40 (and a : as %3A, a / as %2F)"


def check_storage_option(flag: str, url: str | None, default: str) -> None:
    """``ValueError`` for a storage option ``flag`` given empty (taken as none, it would use ``default``) or
    given a path rather than a URL, naming the URL meant."""
    if url is not None and not url.strip():
        raise ValueError(f"{flag} is empty: give a storage URL, or leave it out for {default}")
    if url and "://" not in url:
        if re.match(r"[A-Za-z][\w+.-]*:", url):  # a scheme without the //: sqlite:x.db
            raise ValueError(f"{flag} {url} is not a URL: a storage URL reads scheme://…, e.g. "
                             "sqlite:///studies/x.db or postgresql://user@host/db")
        raise ValueError(f"{flag} {url} is not a URL: for a SQLite file give sqlite:///{url}, or a database's, "
                         "e.g. postgresql://user@host/db")
    if url and unencoded_at(url):  # before SQLAlchemy reads it: its error would quote part of the password
        raise ValueError(f"{flag} {safe_url(url)}: {AT_IN_PASSWORD}")
    if url:
        try:
            make_url(url).get_dialect()  # loads the dialect's module only: no driver, no connection
        except NoSuchModuleError:
            kind = url.split("://", 1)[0]
            if kind == "postgres":
                raise ValueError(f"{flag} {safe_url(url)}: {POSTGRES_SPELLING}") from None
            raise ValueError(f"{flag} {safe_url(url)}: SQLAlchemy knows no database or driver {kind!r}; give "
                             "sqlite:///FILE or postgresql://user@host/db") from None
        except (ArgumentError, ValueError) as error:  # e.g. a port that is not a number
            raise ValueError(f"{flag} {safe_url(url)} is not a URL SQLAlchemy can read: {first_line(error)}") from None


@dataclass(frozen=True)
class StoreConfig:
    """Where units, results and checkpoints live."""

    storage: str | None = None          # Optuna storage URL; default sqlite:///<studies_dir>/<suite>.db
    studies_dir: Path = Path("studies")
    results_dir: Path = Path("results")
    artifacts_dir: Path | None = None   # default <results_dir>/<suite>/artifacts
    heartbeat_interval: int = 10

    def __post_init__(self) -> None:
        for name in ("studies_dir", "results_dir", "artifacts_dir"):  # frozen: a str becomes a Path once, here
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, Path(getattr(self, name)))
        check_heartbeat(self.heartbeat_interval)

    @property
    def grace_period(self) -> int:
        """Seconds without a heartbeat before this worker takes another for dead."""
        return grace_for(self.heartbeat_interval)

    def url(self, suite: str) -> str:
        if self.storage:
            return self.storage
        return sqlite_url(self.studies_dir / f"{suite}.db")

    def artifacts(self, suite: str) -> Path:
        return self.artifacts_dir or self.results_dir / suite / "artifacts"

    def check_folders(self, suite: str) -> None:
        """A one-line ``ValueError`` naming the option of a folder that a run of ``suite`` writes in and that
        cannot be made or written in (``check_folder``): before a study exists and a unit trains, not after.
        It makes none: the run makes each as it first writes there, so that a run refused later (its study
        made with other settings, say) leaves no empty folder behind."""
        artifacts_flag = "--artifacts-dir" if self.artifacts_dir else "--results-dir"  # its default is under that
        folders = [("--results-dir", self.results_dir, self.results_dir),
                   (artifacts_flag, self.artifacts_dir or self.results_dir, self.artifacts(suite))]
        if not self.storage:
            folders.append(("--studies-dir", self.studies_dir, self.studies_dir))
        for flag, given, folder in folders:
            check_folder(flag, given, folder)
        if self.storage:
            check_storage_folder(self.storage)


@contextmanager
def optuna_errors_only() -> Iterator[None]:
    """Optuna logs errors only inside the block (a decorator too), its earlier level restored after.

    Its own lines (study created, trial failed with a traceback) would bury the progress and the
    one-line messages; what they say is recorded in the study and in the summary.
    """
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.as_posix()}"


def grace_for(heartbeat: int) -> int:
    """Seconds without a heartbeat before a worker is taken for dead: several beats, so that a
    loaded machine does not fail a live worker's trial."""
    return max(5 * heartbeat, 5)


def agree_heartbeat(study: optuna.Study, heartbeat: int) -> int:
    """The heartbeat interval of every worker of ``study``: the first worker's, kept with the study.

    A worker takes a trial for dead after ``grace_for`` its own interval, so workers beating at
    other intervals would take each other's live trials and train them twice. Callers open
    their workers' storages with the returned interval.
    """
    return int(first_written(study, "heartbeat", heartbeat))


def check_pool(study: optuna.Study, images: int, digest: str, advice: str) -> str | None:
    """Refuse training images other than those ``study`` first split into its folds: of another number
    (a folder dataset that gained or lost images since, another copy of the data on a machine sharing
    the storage), or with other pixels (``pixel_digest``: other files of the same count, or the same in
    another order). The folds would be other folds, and units trained on them would be paired by fold
    number with the study's earlier ones. A study made before digests were stored takes this one: a note
    says so where it holds finished work, whose images cannot be compared."""
    first = int(first_written(study, "training_images", images))
    if first != images:
        raise StoreError(f"study {study.study_name!r} split {first:,} training images into its folds and these data "
                         f"have {images:,}: folds made now would not be those its results were trained on, and no "
                         f"comparison could pair them; {advice}")
    unchecked = "images_digest" not in study.user_attrs and study.get_trials(deepcopy=False,
                                                                            states=(TrialState.COMPLETE,))
    if first_written(study, "images_digest", digest) != digest:
        raise StoreError(f"study {study.study_name!r} split other training images into its folds than these: as "
                         f"many ({images:,}), with other pixels (a folder's files changed or renamed since, or images "
                         f"decoded by another version of Pillow or torchvision): folds made now would not be those "
                         f"its results were trained on, and no comparison could pair them; {advice}")
    if unchecked:
        return (f"note: study {study.study_name!r} was made before studies kept a digest of their images: these "
                "cannot be compared with those its finished work was trained on (as many), and are checked from now "
                "on")
    return None


def first_written(study: optuna.Study, key: str, value: object) -> object:
    """The study's user attribute ``key``: set to ``value`` unless a worker set it before.

    Of workers that start together, exactly one writes and all read its value: the write is an
    insert that the database refuses when the attribute exists, never an overwrite. ``study`` is
    opened on an ``open_storage`` storage.
    """
    stored_first(study, key, value)
    return study.user_attrs[key]


def stored_first(study: optuna.Study, key: str, value: object) -> bool:
    """Set the study's user attribute ``key`` to ``value`` unless a worker set it before (``first_written``);
    whether this call set it."""
    return key not in study.user_attrs and _claiming_storage(study).add_study_user_attr(study._study_id, key, value)


def opened_as_agreed(first: tuple[Agreed, str | None], agree: Callable[[], tuple[Agreed, str | None]],
                     open_study: Callable[[Agreed], Opened]) -> tuple[Agreed, Opened, str | None]:
    """``open_study(agreed)`` with ``first``, what ``agree`` agreed from the study as it was stored
    (the precision the study trains in), and its note. Machines started together all find no
    study: one refused because another made it meanwhile with other settings agrees again from
    the stored study and follows it; refused again, or agreeing the same, it raises the refusal."""
    agreed, note = first
    try:
        return agreed, open_study(agreed), note
    except StoreError:
        again, note = agree()
        if again == agreed:
            raise
        return again, open_study(again), note


# What each raise of METRICS_VERSION changed, as a study of an earlier version is told.
CHANGES = {2: "validation measured otherwise (a Gaussian VAE's decoded μ rather than a sampled z) and the "
              "precision was not stored",
           3: "a VQ-VAE's β weighed the whole VQ loss rather than the commitment term alone, so its weights mean "
              "something else now",
           4: "VQ-VAE 1 applied its activation twice after its last encoder and first decoder layers, so its folds "
              "trained another model than this version's"}


def changed_by(version: int, config_id: str) -> bool:
    """Whether the change that made metrics version ``version`` touched the folds of suite configuration
    ``config_id`` (its id names its model and its loss weights): version 3 touched VQ-VAEs trained at
    loss weights of their own, version 4 VQ-VAE 1."""
    return {3: config_id.startswith("vq-vae/") and "/w=" in config_id,
            4: config_id.startswith("vq-vae/1/")}.get(version, True)


# The changes that altered a model's layers, not only how it trains or is measured: its earlier weights
# would run in another model.
MODEL_CHANGES = (4,)


def changes_since(version: int, touched: Callable[[int], bool]) -> list[int]:
    """The changes after metrics version ``version`` that ``touched`` says touched a study or a fold."""
    return [v for v in range(version + 1, METRICS_VERSION + 1) if touched(v)]


def changes_to(config_ids: Iterable[str], version: int) -> list[int]:
    """The changes after metrics version ``version`` that touched the folds of any of the suite
    configurations ``config_ids`` (``changed_by``)."""
    ids = list(config_ids)
    return changes_since(version, lambda later: any(changed_by(later, config_id) for config_id in ids))


def _changes_to_study(stored: dict, version: int) -> list[int]:
    """The changes after ``version`` that touched the folds of a study with ``stored`` settings."""
    if "family" in stored:  # a search, which tunes β unless SoftAdapt balances the losses
        touched = {3: stored["family"] == "vq-vae" and not stored.get("softadapt"),
                   4: (stored["family"], stored.get("config")) == ("vq-vae", 1)}
        return changes_since(version, lambda later: touched.get(later, True))
    return changes_to((str(c) for c in stored.get("configurations", [])), version)  # a suite


def upgraded(stored: dict) -> dict:
    """A study's stored settings as this version reads them: a study that a later version's change
    does not touch counts as made by it."""
    version = stored.get("metrics_version")
    if isinstance(version, int) and version < METRICS_VERSION:
        version = ([v - 1 for v in _changes_to_study(stored, version)] or [METRICS_VERSION])[0]
    return stored if version == stored.get("metrics_version") else {**stored, "metrics_version": version}


def since_changes(changes: list[int]) -> str:
    """What an earlier version did otherwise, from its later ``changes``."""
    if not changes or any(c not in CHANGES for c in changes):
        return "whose validation metrics are not comparable with this version's"
    return "in which " + ", and in which ".join(CHANGES[c] for c in changes)


def version_problem(study: str, url: str, stored: dict) -> str | None:
    """Why a study made by another version of mtvae-bench cannot be used, or None."""
    version = upgraded(stored).get("metrics_version", 1)
    if version == METRICS_VERSION:
        return None
    changes = _changes_to_study(stored, version) if version < METRICS_VERSION else []
    return (f"study {study!r} in {safe_url(url)} was made by {'an earlier' if version < METRICS_VERSION else 'a later'} "
            f"version of mtvae-bench, {since_changes(changes)}")


def check_settings(study: optuna.Study, url: str, wanted: dict, advice: str | Callable[[list[str]], str]) -> bool:
    """Store ``wanted`` as the settings of a new study; refuse a study made with other ones,
    with ``advice`` (or what it returns for the settings that differ, asked only then) on what to
    do instead and the command that removes the study. Whether this call stored them: of runs
    started together on no study, one makes it."""
    made = stored_first(study, "settings", wanted)
    stored = upgraded(study.user_attrs["settings"])
    if differing := settings_differ(stored, wanted):
        raise StoreError(differing_settings_message(study.study_name, url, stored, wanted)
                         + f"; {advice(differing) if callable(advice) else advice}: "
                         + delete_hint(study.study_name, url))
    return made


def finished_elsewhere(error: BaseException) -> bool:
    """Whether ``error`` is Optuna refusing to update a trial that is already finished: another
    worker took this one for dead (no heartbeat for a grace period: a paused or sleeping
    machine) and failed it, and the copy it queued is trained instead."""
    return isinstance(error, optuna.exceptions.UpdateFinishedTrialError) or (
        isinstance(error, ValueError) and str(error).startswith("Cannot tell a "))


def taken_over_message(what: str, grace: int) -> str:
    """What a worker says when ``finished_elsewhere``; ``what`` names its unit or trial."""
    return (f"{what}: another worker took it over, as this one sent no heartbeat for {grace} s (was the "
            "machine paused or asleep?); its copy is trained again, and this worker's training of it is dropped")


def heartbeat_note(study: str, agreed: int, asked: int, work: str = "unit") -> str | None:
    """One line when this run's heartbeat gives way to the study's, else None; ``work`` names
    what workers run (unit, trial)."""
    if agreed == asked:
        return None
    return (f"note: the workers of study {study!r} beat every {agreed} s, so this run does too, not every "
            f"{asked} s: workers beating at other intervals would take each other's live {work}s; a dead "
            f"worker's {work} is taken up again after {grace_for(agreed)} s")


def versioned(settings: dict) -> dict:
    """A study's settings as stored: JSON values, with the metrics version."""
    return {**json.loads(json.dumps(settings)), "metrics_version": METRICS_VERSION}


# Settings a study stores since a later version, each at the value every study made before trained with.
ADDED_SETTINGS = {"weight_decay": 1e-2}


def with_added(stored: dict, wanted: dict) -> dict:
    """A study's ``stored`` settings with those of ``ADDED_SETTINGS`` that ``wanted`` has and it lacks."""
    return {**{key: value for key, value in ADDED_SETTINGS.items() if key in wanted}, **stored}


def settings_differ(stored: dict | None, wanted: dict) -> list[str]:
    """The settings in which a study's stored ``settings`` differ from ``wanted`` (none if not stored yet)."""
    if stored is None:
        return []
    stored = with_added(stored, wanted)
    return sorted(k for k in {*stored, *wanted} if stored.get(k) != wanted.get(k))


def differing_settings_message(study: str, url: str, stored: dict, wanted: dict) -> str:
    stored = with_added(upgraded(stored), wanted)
    differing = settings_differ(stored, wanted)
    if "metrics_version" in differing:
        return version_problem(study, url, stored)
    changes = ", ".join(change for key in differing for change in _changes(key, stored.get(key), wanted.get(key)))
    return f"study {study!r} in {safe_url(url)} was made with other settings ({changes})"


def _changes(key: str, there: object, now: object) -> list[str]:
    """What differs in one setting; in a table or a list only the entries that differ, so that a
    long value does not hide its difference behind the cut."""
    if isinstance(there, dict) and isinstance(now, dict):
        return [change for sub in sorted({*there, *now}, key=str) if there.get(sub) != now.get(sub)
                for change in _changes(f"{key}.{sub}", there.get(sub), now.get(sub))]
    if isinstance(there, list) and isinstance(now, list):
        only_there, only_now = [v for v in there if v not in now], [v for v in now if v not in there]
        changes = ([f"{key} {setting_text(only_there)} there only"] if only_there else []) + \
                  ([f"{key} {setting_text(only_now)} now only"] if only_now else [])
        return changes or [f"{key} in another order"]
    return [f"{key} {setting_text(there)} there, {setting_text(now)} now"]


def setting_text(value: object, width: int | None = 60) -> str:
    """A setting as a reader types it (``objectives=recon,latent``, ``log=true``), not as Python or JSON
    write it (``['recon', 'latent']``, ``True``); "unset" for None (a `limit` of every image, say); a
    table as its ``key=value`` pairs; cut at ``width``."""
    if value is None:
        text = "unset"
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, list):
        text = ",".join(setting_text(v, None) for v in value)
    elif isinstance(value, dict):
        text = " ".join(f"{k}={setting_text(v, None)}" for k, v in value.items())
    else:
        text = str(value)
    return text if width is None or len(text) <= width else text[:width - 3] + "..."


def delete_hint(study: str, url: str) -> str:
    """The command that removes a study (Optuna's own CLI), for messages that suggest starting over."""
    shown = safe_url(url)
    password = " (with the password in place of ***)" if shown != url and password_hidden(shown) else ""
    return (f"`{optuna_command()} delete-study --storage {shlex.quote(shown)} --study-name {shlex.quote(study)}`"
            f"{password}")


def optuna_command() -> str:
    """Optuna's CLI as a shell finds it: ``optuna`` where it is on PATH, else the script installed beside
    this Python (a virtual environment used without activating it; Optuna has no ``python -m optuna``)."""
    beside = Path(sys.executable).parent / "optuna"
    return shlex.quote(str(beside)) if shutil.which("optuna") is None and beside.is_file() else "optuna"


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite ``url`` names (relative to the working folder where it is relative); None
    for an in-memory database or another kind of storage."""
    if not url.startswith("sqlite:///") or in_memory(url):
        return None
    return Path(url.removeprefix("sqlite:///"))


def check_storage_folder(url: str) -> None:
    """A one-line ``ValueError`` naming ``--storage`` where ``url`` is a SQLite file whose folder cannot
    be made or written in (``check_folder``)."""
    if (path := sqlite_file(url)) is not None:
        check_folder("--storage", url, path.parent)


def absolute_url(url: str) -> str:
    """``url`` with a relative SQLite path made absolute: an export read from another working folder
    still names the file its study is in."""
    path = sqlite_file(url)
    return url if path is None or path.is_absolute() else f"sqlite:///{path.resolve().as_posix()}"


def gone(url: str) -> bool:
    """Whether ``url`` is a SQLite file that is not there (moved or deleted)."""
    path = sqlite_file(url)
    return path is not None and not path.is_file()


def same_storage(recorded: str, url: str) -> bool:
    """Whether ``url`` names the storage an export recorded (as ``safe_url``); a SQLite file may be
    named by a relative or an absolute path (a relative one is taken from this working folder)."""
    there, here = sqlite_file(recorded), sqlite_file(url)
    if there is not None and here is not None:
        return there.resolve() == here.resolve()
    return recorded == safe_url(url)


def safe_url(url: str) -> str:
    """The storage URL without its password, for messages and exported metadata."""
    if url.startswith("sqlite:"):  # no password; rendering would percent-encode an '@' or '%' of its path
        return url
    if unencoded_at(url):  # SQLAlchemy would take the password's end for the host: all up to the last @ goes
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{rest.split(':', 1)[0]}:***@{rest.rpartition('@')[2]}"
    try:
        parsed = make_url(url)
    except Exception:  # not a URL SQLAlchemy can parse: say nothing of it that could be secret
        return url.split("@")[-1]
    if "password" not in parsed.query:
        return parsed.render_as_string(hide_password=True)
    # libpq takes a password there too: hidden as *** (rendering would percent-encode the stars)
    hidden = parsed.update_query_dict({"password": "***"}).render_as_string(hide_password=True)
    return hidden.replace("password=%2A%2A%2A", "password=***")


def unencoded_at(url: str) -> bool:
    """Whether a storage URL's password holds an @ not written %40: SQLAlchemy ends the password at the
    first @ and reads the rest as the host (or cannot read the URL at all). An @ of the query is not one."""
    credentials = url.partition("://")[2].split("?", 1)[0].rpartition("@")[0]
    return not url.startswith("sqlite:") and ":" in credentials.split("@")[0] and "@" in credentials


def password_hidden(url: str) -> bool:
    """Whether ``url`` (as ``safe_url`` gave it) lacks the password it was given with."""
    return "***" in url


def _claiming_storage(study: optuna.Study) -> "ClaimingStorage":
    """The ``ClaimingStorage`` under a study opened on an ``open_storage`` storage: Optuna wraps
    RDB storages in a cache, which passes on only the calls it knows."""
    return getattr(study._storage, "_backend", study._storage)


class ClaimingStorage(RDBStorage):
    """An RDB storage whose WAITING → RUNNING claim is one conditional ``UPDATE``, and whose
    study attributes can be written once (``add_study_user_attr``).

    Optuna reads the trial's state and then writes RUNNING; SQLite ignores the read's
    ``FOR UPDATE`` and Python's ``sqlite3`` opens the transaction only at the write, so two
    workers could both read WAITING and both train the unit (the slower one then died on
    "Cannot tell a COMPLETE trial"). A single ``UPDATE … WHERE state = 'WAITING'`` is atomic
    in every database: exactly one worker sees its row changed.
    """

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        if state != TrialState.RUNNING or values is not None:
            return super().set_trial_state_values(trial_id, state, values)
        claim = (update(TrialModel).where(TrialModel.trial_id == trial_id, TrialModel.state == TrialState.WAITING)
                 .values(state=TrialState.RUNNING, datetime_start=datetime.now()))
        with self.engine.begin() as connection:
            return connection.execute(claim).rowcount == 1

    def settle_waiting(self, trial_id: int, state: TrialState, value: float | None, user_attrs: dict) -> bool:
        """Finish WAITING trial ``trial_id`` in ``state`` (with ``value`` where given) and ``user_attrs`` in one
        transaction; False, and nothing written, where another caller claimed it first."""
        now = datetime.now()
        done = (update(TrialModel).where(TrialModel.trial_id == trial_id, TrialModel.state == TrialState.WAITING)
                .values(state=state, datetime_start=now, datetime_complete=now))
        with self.engine.begin() as connection:
            if connection.execute(done).rowcount != 1:
                return False
            # A retry of a killed worker's trial waits with that trial's attributes (Optuna copies them): replaced.
            connection.execute(delete(TrialUserAttributeModel).where(TrialUserAttributeModel.trial_id == trial_id))
            if value is not None:
                stored, kind = TrialValueModel.value_to_stored_repr(value)
                connection.execute(insert(TrialValueModel).values(trial_id=trial_id, objective=0, value=stored,
                                                                  value_type=kind))
            connection.execute(insert(TrialUserAttributeModel), [{"trial_id": trial_id, "key": key,
                                                                   "value_json": json.dumps(attr)}
                                                                  for key, attr in user_attrs.items()])
        return True

    def beating(self, trial_ids: Iterable[int]) -> set[int]:
        """The trials of ``trial_ids`` that have sent a heartbeat."""
        query = select(TrialHeartbeatModel.trial_id).where(TrialHeartbeatModel.trial_id.in_(list(trial_ids)))
        with self.engine.connect() as connection:
            return set(connection.execute(query).scalars())

    def add_study_user_attr(self, study_id: int, key: str, value: object) -> bool:
        """Store a study attribute unless it exists (the table's unique key refuses a second
        insert; Optuna's own setter overwrites); whether it was stored."""
        row = insert(StudyUserAttributeModel).values(study_id=study_id, key=key, value_json=json.dumps(value))
        try:
            with self.engine.begin() as connection:
                connection.execute(row)
        except IntegrityError:  # another worker stored it first
            return False
        return True


def storage_driver_url(url: str) -> str:
    """``postgresql://`` with the psycopg2 driver when psycopg (3) is missing.

    SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3; the project installs psycopg2
    (the ``dev`` extra), so without this the URL the README shows would fail to import a driver.
    """
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def open_storage(url: str, config: StoreConfig) -> ClaimingStorage:
    """An RDB storage with heartbeats; a stale trial becomes FAIL and is enqueued again.

    Workers started together on an empty database race to create Optuna's tables; the losers
    fail on a unique constraint or an existing table, and succeed once the winner is done.
    """
    if url.startswith("postgres://"):
        raise StoreError(f"storage {safe_url(url)!r}: {POSTGRES_SPELLING}")
    if in_memory(url):
        raise StoreError(f"storage {url!r} is an in-memory SQLite database, which each connection (each worker, "
                         "each heartbeat) sees empty and which is gone when the run ends: give a file, e.g. "
                         "sqlite:///studies/mine.db")
    for attempt in range(5):
        try:
            return _open_storage_once(url, config)
        except StoreError as err:
            if attempt == 4 or not any(s in str(err) for s in CREATION_RACE):
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def in_memory(url: str) -> bool:
    """Whether ``url`` is an in-memory SQLite database (``sqlite://``, ``sqlite:///``, ``:memory:``)."""
    try:
        parsed = make_url(url)
    except Exception:  # not a URL: opening it says why
        return False
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def _open_storage_once(url: str, config: StoreConfig) -> ClaimingStorage:
    if unencoded_at(url):
        raise StoreError(f"cannot open storage {safe_url(url)!r}: {AT_IN_PASSWORD}")
    driver_url = storage_driver_url(url)
    engine_kwargs: dict = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    if url.startswith("postgresql"):  # libpq waits for ever on a host that accepts and never answers
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    if (path := sqlite_file(url)) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():  # heartbeats are marked experimental, but are what resume rests on
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return ClaimingStorage(driver_url, engine_kwargs=engine_kwargs,
                                   heartbeat_interval=config.heartbeat_interval, grace_period=config.grace_period,
                                   heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback())
    except Exception as err:  # SQLAlchemy raises many kinds; the user needs one line
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        damaged = url.startswith("sqlite:///") and any(s in reason for s in ("malformed", "not a database"))
        advice = ("; the file is damaged: restore a copy, or move it aside (with a suite's exported results) and run "
                  "again to start anew (its finished work is lost)") if damaged else _server_advice(url, reason)
        for given in (driver_url, url):  # the URL as the user gave it, its password hidden
            reason = reason.replace(given, safe_url(url))
        raise StoreError(f"cannot open storage {safe_url(url)!r}: {reason}{advice}") from None


def _server_advice(url: str, reason: str) -> str:
    """What to check when a PostgreSQL server could not be reached or refused us, from libpq's ``reason``."""
    if not url.startswith("postgresql"):
        return ""
    parsed = make_url(url)
    # no host: libpq's Unix socket on this machine
    server = (f"-h {shlex.quote(parsed.host)} " if parsed.host else "") + f"-p {parsed.port or 5432}"
    if "could not translate host name" in reason:
        return "; check the host name in the URL"  # an @ of the password was refused before (``unencoded_at``)
    if any(sign in reason for sign in UNREACHED) or not parsed.host and "No such file or directory" in reason:
        how = ("takes TCP connections from this machine (its listen_addresses and pg_hba.conf, a firewall)"
               if parsed.host else "listens on its Unix socket on this machine")
        return f"; check that a PostgreSQL server runs there and {how}: `pg_isready {server}` tells"
    if "password authentication failed" in reason:
        return "; check the user and password in the URL"
    if re.search(r'database ".*" does not exist', reason):
        user = f" -U {shlex.quote(parsed.username)}" if parsed.username else ""
        return (f"; create it on the server first (`createdb {server}{user} {shlex.quote(parsed.database or '')}`), "
                "or name one that exists")
    return ""


def open_for_reading(url: str) -> RDBStorage | None:
    """The storage at ``url``, or None for a SQLite file that does not exist (nothing is created)."""
    if (path := sqlite_file(url)) is not None and not path.exists():
        return None
    return open_storage(url, StoreConfig(storage=url))


@contextmanager
def looking_at(url: str) -> Iterator[RDBStorage | None]:
    """``open_for_reading(url)`` for a look, its connections closed after the block (a run or a
    PostgreSQL server's connection limit should not meet them)."""
    storage = open_for_reading(url)
    try:
        yield storage
    finally:
        if storage is not None:
            storage.engine.dispose()


def stored_attr(url: str, study: str, key: str) -> object | None:
    """``study``'s user attribute ``key`` in ``url`` (its ``settings``, the ``command`` of its first
    run), or None where there is no such study or attribute yet; creates nothing."""
    with looking_at(url) as storage:
        if storage is None:
            return None
        try:
            return optuna.load_study(study_name=study, storage=storage).user_attrs.get(key)
        except KeyError:
            return None


def settle_waiting(study: optuna.Study, trial_id: int, state: TrialState, value: float | None,
                   user_attrs: dict) -> bool:
    """Finish WAITING trial ``trial_id`` of ``study`` whole, or not at all where another caller claimed it first:
    a unit taken from another run (``benchmark.reuse``) is never left half recorded, nor taken twice."""
    return _claiming_storage(study).settle_waiting(trial_id, state, value, user_attrs)


def fail_stale_trials(study: optuna.Study) -> None:
    """Turn trials of workers that stopped beating into FAIL; the callback enqueues them again."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def release_if_killed(study: optuna.Study, process: multiprocessing.process.BaseProcess, run_id: str) -> None:
    """A worker process of run ``run_id`` that ended killed outright (SIGKILL: the out-of-memory killer) leaves
    its trials RUNNING, which the other workers would take up only once their heartbeat is old: failed now and
    queued again, as ``fail_stale_trials`` does, they are taken up at once. The run's id as well as the worker's
    ``host:pid``, which containers sharing a host name may both have. Best effort: the heartbeat hands them out
    later all the same."""
    if process.exitcode is None or process.exitcode >= 0:
        return
    storage, worker = study._storage, worker_id(process.pid)
    callback = storage.get_heartbeat_stale_trial_callback()
    try:
        trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    except Exception:  # a storage out of reach
        return
    for trial in trials:
        if trial.user_attrs.get("worker") != worker or trial.user_attrs.get("run") != run_id:
            continue
        with suppress(Exception):  # finished meanwhile (UpdateFinishedTrialError), or a storage gone
            if storage.set_trial_state_values(trial._trial_id, TrialState.FAIL) and callback is not None:
                callback(study, copy.deepcopy(storage.get_trial(trial._trial_id)))


def fail_orphans(study: optuna.Study, grace_period: float) -> int:
    """FAIL the RUNNING trials whose worker died before their first heartbeat; returns how many.

    Optuna's heartbeat check skips a trial that never recorded a heartbeat (a worker killed
    between claiming the trial and its first beat); without this, workers would wait for it
    for ever. A live worker beats within moments of its claim, so only trials older than two
    grace periods are taken for dead: a loaded machine must not see a live trial as an orphan.
    """
    now, failed, limit = datetime.now(), 0, 2 * grace_period
    old = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
           if t.datetime_start is not None and (now - t.datetime_start).total_seconds() > limit]
    if not old:
        return 0
    beating = _claiming_storage(study).beating(t._trial_id for t in old)
    for trial in old:
        if trial._trial_id not in beating:
            try:
                study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                failed += 1
            except optuna.exceptions.UpdateFinishedTrialError:  # another worker failed it first
                pass
    return failed


def trial_status(trial: FrozenTrial) -> str:
    """One of ``STATUSES``: the trial's state, with FAIL split into ``failed`` and ``interrupted``.

    ``failed``: FAIL or PRUNED with a recorded reason (user attribute ``error``, e.g. a diverged fold:
    a search prunes such a trial, so that its sampler learns from it).
    ``interrupted``: FAIL without one (Ctrl-C, a killed worker, or an error whose traceback went
    to the worker's stderr); such a trial does not use up the search budget.
    ``surplus``: user attribute ``surplus`` (its number), a trial that never trained: a search's (FAIL) that
    found the budget used up by earlier ones, or a suite's (PRUNED) copy of a unit that runs started together
    queued twice; not among ``STATUSES``, as only racing workers make one.
    """
    if trial.user_attrs.get("surplus") == trial.number:
        return "surplus"
    if trial.state == TrialState.FAIL:
        return "failed" if "error" in trial.user_attrs else "interrupted"
    if trial.state == TrialState.PRUNED and "error" in trial.user_attrs:
        return "failed"
    return trial.state.name.lower()


def status_counts(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    """Number of trials of each status, in the order of ``STATUSES`` (zeros included), then
    ``surplus`` where there are any."""
    counts = Counter(trial_status(t) for t in trials)
    surplus = {"surplus": counts["surplus"]} if counts["surplus"] else {}
    return {status: counts[status] for status in STATUSES} | surplus
