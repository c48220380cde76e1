"""What a suite's study leaves under results/: the export (``results/<suite>.csv``, one row per
unit, with ``<suite>_history.csv`` and ``<suite>_meta.json``) and each unit's best-epoch weights,
kept in Optuna's artifact store (``save_checkpoint``) and read back for reports (``load_checkpoint``).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shlex
import shutil
import time
import uuid
from pathlib import Path
from typing import BinaryIO

import optuna
import pandas as pd
import torch
from optuna.trial import TrialState

from benchmark.files import write_whole
from benchmark.models import MultitaskVAE, build_model
from benchmark.results import existing_path, meta_path, read_meta
from benchmark.storage import (METRICS_VERSION, MODEL_CHANGES, StoreConfig, absolute_url, changes_to, gone,
                               safe_url, same_storage, since_changes, stored_attr, trial_status, versioned)
from benchmark.store import parse_unit, study_name, unit_keys, unit_states
from benchmark.suites import Suite

INTEGER_COLUMNS = ("config", "fold", "repeat", "trial", "count", "best_epoch", "n_train", "n_val", "stacked")
METRIC_COLUMNS = ("best_epoch", "recon", "latent", "recon_cond", "total", "recon_train", "recon_cond_train",
                  "latent_train", "recon_mean_image")


# The files of an upload in progress, named by study and trial, so that those a worker killed meanwhile leaves
# are known as its trial's (``sweep_checkpoints``): suites sharing an --artifacts-dir number their trials alike.
UPLOAD_FILE = re.compile(r"\.upload-(?P<study>.+)-(?P<trial>\d+)-"
                         r"([0-9a-f]{32}\.pt|[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}\.partial)")


# Seconds without a write after which an upload's files are a dead worker's: a live one writes on.
UPLOAD_QUIET = 60


def _upload_prefix(study: str, trial_id: int) -> str:
    return f".upload-{study}-{trial_id}-"


class _RecordingStore:
    """An artifact store for ``upload_artifact`` that writes an artifact under a name of its trial's
    (``_upload_prefix``), which ``save_checkpoint`` gives the artifact's own, as Optuna's file store names
    it, once the trial records it: ``upload_artifact`` writes the file first, and a worker killed before the
    record would leave a file that no trial names."""

    def __init__(self, artifacts: Path, prefix: str) -> None:
        self.artifacts, self.prefix = artifacts, prefix
        self.written: Path | None = None

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.written = self.artifacts / f"{self.prefix}{artifact_id}.partial"
        with open(self.written, "wb") as file:
            shutil.copyfileobj(content_body, file)


def save_checkpoint(study: optuna.Study, trial_id: int, artifacts: Path, model_state: dict, info: dict) -> str:
    """Upload a unit's best-epoch weights to Optuna's artifact store, with trial ``trial_id`` of ``study``;
    returns the artifact id. An upload that fails (the unit taken over by another worker meanwhile, Ctrl-C)
    leaves no file behind."""
    artifacts.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"state_dict": model_state, "info": {**info, "metrics_version": METRICS_VERSION}}, buffer)
    storage = study._storage
    trial = storage.get_trial(trial_id)
    prefix = _upload_prefix(study.study_name, trial_id)
    tmp = artifacts / f"{prefix}{uuid.uuid4().hex}.pt"
    tmp.write_bytes(buffer.getvalue())
    store = _RecordingStore(artifacts, prefix)
    try:
        artifact = optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(tmp), study_or_trial=trial,
                                                    storage=storage)
        os.replace(store.written, artifacts / artifact)
        return artifact
    except BaseException as err:
        if store.written is not None:  # up to 140 MB that nothing would ever read
            store.written.unlink(missing_ok=True)
        # Its files removed by a run that finished the suite (``sweep_checkpoints``): the trial was failed for a
        # worker gone silent (a machine asleep), and its unit trained elsewhere.
        if isinstance(err, FileNotFoundError) and storage.get_trial(trial_id).state != TrialState.RUNNING:
            raise optuna.exceptions.UpdateFinishedTrialError(f"trial {trial.number} finished elsewhere") from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def discard_checkpoints(storage: optuna.storages.BaseStorage, trial_id: int, artifacts: Path) -> None:
    """Remove the weights uploaded for a trial that ended without completing (interrupted, or taken over,
    between its upload and its end): its unit trains again, and nothing would read them. Best effort: a
    storage that cannot be read leaves them, and the error that ended the trial is the one to report."""
    try:
        trial = storage.get_trial(trial_id)
        complete = trial.state == TrialState.COMPLETE
        metas = [] if complete else optuna.artifacts.get_all_artifact_meta(trial, storage=storage)
    except Exception:
        return
    for meta in metas:
        with contextlib.suppress(OSError):
            (artifacts / meta.artifact_id).unlink(missing_ok=True)


def sweep_checkpoints(study: optuna.Study, artifacts: Path) -> None:
    """Remove from ``artifacts`` the files of ``study`` that no unit will read, which a worker killed outright
    (SIGKILL, out of memory) between its upload and its unit's end leaves: the weights recorded with its trial,
    which failed for it later (``fail_stale_trials``), and the files of uploads it left unfinished. Those of a
    trial still running or waiting, here or on another machine, stay,
    as do uploads written to in the last ``UPLOAD_QUIET`` seconds (a study of the same name in another storage
    may share the folder, its trials numbered alike)."""
    if not artifacts.is_dir():
        return
    names = [path.name for path in artifacts.iterdir()]  # before the trials: a file of one started since is kept
    trials = study.get_trials(deepcopy=False)
    live = {t._trial_id for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)}
    # Recorded with the trials that ended without completing (a retry copies them, from a trial that stays).
    uploaded = {meta.artifact_id for t in trials if t.state in (TrialState.FAIL, TrialState.PRUNED)
                for meta in optuna.artifacts.get_all_artifact_meta(t, storage=study._storage)}
    unread = uploaded - {t.user_attrs.get("artifact") for t in trials if t.state == TrialState.COMPLETE}
    for name in names:
        upload = UPLOAD_FILE.fullmatch(name)
        if name in unread or (upload and upload["study"] == study.study_name and int(upload["trial"]) not in live
                              and _quiet(artifacts / name)):
            (artifacts / name).unlink(missing_ok=True)


def _quiet(path: Path) -> bool:
    """Whether nothing has written to ``path`` for ``UPLOAD_QUIET`` seconds (False once it is gone)."""
    try:
        return path.stat().st_mtime < time.time() - UPLOAD_QUIET
    except FileNotFoundError:
        return False


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[MultitaskVAE, dict]:
    """A unit's best-epoch model (in eval mode) and its info (configuration, image shape, metrics)."""
    # Tensors and plain data only: loading runs no code from the file.
    payload = torch.load(path, map_location=device, weights_only=True)
    info = payload["info"]
    # Checkpoints recorded no version before version 4 changed VQ-VAE 1's layers (nor for a while after).
    config_id, version = info.get("config_id", ""), info.get("metrics_version", 3)
    if changes := [change for change in changes_to([config_id], version) if change in MODEL_CHANGES]:
        saved = ("was saved by" if "metrics_version" in info else "records no metrics version, so it may come from")
        raise ValueError(f"the checkpoint {saved} an earlier version of mtvae-bench, {since_changes(changes)}; "
                         "train the configuration again in a study of this version")
    channels, size = info["image_shape"][0], info["image_shape"][-1]
    model = build_model(info["family"], info["config"], info["method"], channels, size, info.get("beta"))
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), info


def export_note(suite: Suite, config: StoreConfig) -> str | None:
    """One line when ``results/<suite>.csv`` holds the export of a study in another storage, which
    this run's export replaces (the other study keeps its units: a run on it exports them back)."""
    earlier = read_meta(config.results_dir, suite.name).get("storage")
    if not isinstance(earlier, str) or same_storage(earlier, config.url(suite.name)) or gone(earlier):
        return None  # a file gone: moved with its folder, most likely (the run found its study here)
    now = safe_url(config.url(suite.name))
    return (f"note: {config.results_dir / suite.name}.csv holds the results of the study in {earlier}; this run "
            f"exports the one in {now} over them (a run with --storage {shlex.quote(earlier)} exports those "
            f"back; --results-dir keeps the two apart)")


def export(study: optuna.Study, suite: Suite, config: StoreConfig, image_shape: tuple[int, ...] | None = None,
           command: str | None = None) -> tuple[Path, Path]:
    """Write results/<suite>.csv (one row per unit), <suite>_history.csv and <suite>_meta.json
    (with ``image_size`` and ``image_channels`` from ``image_shape``, the suite's (C, H, W), when
    given, and ``command``, the run's that exports, else the study's first run's)."""
    by_id = {c.id: c for c in suite.configurations}
    # from the suite, not the trials: a tuned row is labelled before any fold of it has run
    tuned = dict(suite.params_from)
    states, artifacts = unit_states(study), config.artifacts(suite.name)
    rows, history = [], []
    for key in unit_keys(suite):
        config_id, fold = parse_unit(key)
        trials = states.get(key, [])
        complete = [t for t in trials if trial_status(t) == "complete"]
        failed = [t for t in trials if trial_status(t) == "failed"]
        pending = [t for t in trials if trial_status(t) in ("running", "waiting")]
        interrupted = [t for t in trials if trial_status(t) == "interrupted"]  # to be trained again
        trial = (complete or failed or pending or interrupted or [None])[-1 if not complete else 0]
        state = "MISSING" if trial is None else "INTERRUPTED" if trial in interrupted else trial.state.name
        row = {**by_id[config_id].flat(), "fold": fold, "repeat": fold // suite.folds,
               "state": state, "trial": trial.number if trial else None}
        attrs = trial.user_attrs if trial else {}
        if state != "COMPLETE":  # a retry of a killed worker's trial starts with its attributes, half recorded ones too
            attrs = {key: attrs[key] for key in ("error", "taken_from") if key in attrs}
        metrics = attrs.get("metrics", {})
        row.update({k: metrics.get(k, attrs.get(k, math.nan)) for k in METRIC_COLUMNS})
        row.update({"seconds": attrs.get("seconds", math.nan), "busy_load": attrs.get("busy_load"),
                    "n_train": attrs.get("n_train"),
                    "n_val": attrs.get("n_val"), "stacked": attrs.get("stacked"),
                    "device": attrs.get("device", ""), "torch": attrs.get("torch", ""),
                    "error": attrs.get("error", ""),
                    "checkpoint": str(saved_checkpoint(attrs, artifacts)) if "artifact" in attrs else "",
                    "taken_from": attrs.get("taken_from", ""),
                    "params_from": tuned.get(config_id, "")})
        rows.append(row)
        for epoch_row in attrs.get("history", []):
            history.append({"config_id": config_id, "fold": fold, **epoch_row})
    config.results_dir.mkdir(parents=True, exist_ok=True)
    results_path = config.results_dir / f"{suite.name}.csv"
    history_path = config.results_dir / f"{suite.name}_history.csv"
    # Counts stay integers where some rows lack them (a unit not trained yet): 100, not 100.0.
    table = pd.DataFrame(rows).astype({column: "Int64" for column in INTEGER_COLUMNS})
    _replace(results_path, table.to_csv(index=False))
    _replace(history_path, pd.DataFrame(history, columns=["config_id", "fold", "epoch"] if not history else None)
             .to_csv(index=False))
    meta = {**versioned(suite.settings()), "data_root": suite.data_root, "study": study.study_name,
            "storage": safe_url(absolute_url(config.url(suite.name))),
            "search_storages": dict(suite.search_storages),
            "image_size": image_shape[-1] if image_shape else None,
            "image_channels": image_shape[0] if image_shape else None,
            "images_digest": study.user_attrs.get("images_digest"),
            "command": command or study.user_attrs.get("command")}
    _replace(meta_path(config.results_dir, suite.name), json.dumps(meta, indent=2))
    return results_path, history_path


def saved_checkpoint(attrs: dict, folder: Path) -> Path:
    """Where the weights of a unit with ``attrs`` are: in ``folder``, this run's artifacts folder, or else where
    the run that trained the unit saved them (another --artifacts-dir)."""
    # A folder every machine sees may be mounted elsewhere on each: this run's path comes first.
    saved = Path(attrs.get("artifact_dir", folder)) / attrs["artifact"]
    return Path(existing_path(str(folder / attrs["artifact"]), saved))


def link_checkpoint(saved: Path, folder: Path) -> None:
    """Link the weights ``saved`` in another run's artifacts folder, those of a unit taken from it
    (``benchmark.reuse``), into ``folder``, this run's: they then stay when that run's folder is removed, and
    take no more space. Where no link can be made (another file system), they are read where they are."""
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / saved.name).exists():  # a folder both runs share (--artifacts-dir) holds it already
            os.link(saved, folder / saved.name)


def _replace(path: Path, text: str) -> None:
    # runs of two versions of a suite file may export at once, and a report must never read half a file
    write_whole(path, lambda partial: partial.write_text(text))


def recorded_command(name: str, store: StoreConfig) -> str | None:
    """The command of the run filed under ``name``: the last run's to export it (its metadata), or
    the study's first run's when no run has exported yet. When files listing other configurations
    share the study, it is the one whose export ``report`` shows."""
    command = read_meta(store.results_dir, name).get("command")
    if command:
        return command
    try:
        return stored_attr(store.url(name), study_name(name), "command")
    except Exception:  # a storage that cannot be reached: there is nothing to tell
        return None
