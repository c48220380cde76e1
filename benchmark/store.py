"""The Optuna study as the store of units of work: one trial per (configuration, fold).

A suite's study holds every unit, a WAITING trial until a worker claims it. A unit's key
(``config_id#fold``) is enqueued as the trial's fixed parameter ``unit``, which the worker reads
rather than suggests: an Optuna parameter's choices cannot change, and a suite's configurations
can grow. The storage itself (opening it, heartbeats, trial statuses, stored settings):
``benchmark.storage``; the export to results/ and the checkpoints: ``benchmark.export``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from benchmark.storage import (StoreConfig, StoreError, changes_to, check_settings, delete_hint,
                               open_storage, safe_url, settings_differ, since_changes, trial_status, upgraded,
                               versioned)
from benchmark.suites import Suite

UNIT_PARAM = "unit"


def unit_key(config_id: str, fold: int) -> str:
    return f"{config_id}#{fold}"


def parse_unit(key: str) -> tuple[str, int]:
    config_id, fold = key.rsplit("#", 1)
    return config_id, int(fold)


def unit_keys(suite: Suite, config_id: str | None = None) -> list[str]:
    """The suite's units (of ``config_id`` alone, when given), in suite order."""
    ids = [c.id for c in suite.configurations] if config_id is None else [config_id]
    return [unit_key(c, f) for c in ids for f in range(suite.folds * suite.repeats)]


def study_name(suite: Suite | str) -> str:
    """The study of the run filed under a suite's name (or under ``suite`` itself, a name)."""
    return f"suite-{suite if isinstance(suite, str) else suite.name}"


SEPARATE_RUN = ("for a separate run, give it a --name of its own (or another --storage and --results-dir); or, to "
                "start over, move its results away and remove that study")


def open_suite_study(suite: Suite, config: StoreConfig,
                     advice: Callable[[list[str]], str] = lambda differing: SEPARATE_RUN) -> tuple[optuna.Study, bool]:
    """Create or load the suite's study, and whether this call made it (stored its settings); refuse one
    made with other settings, touching nothing, with ``advice`` for the settings that differ. A study is
    a pool of units: a suite that lists other configurations (``shares_units``) uses it."""
    storage = open_storage(config.url(suite.name), config)
    name = study_name(suite)
    settings = versioned(suite.settings())
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        study = optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True)
    stored = study.user_attrs.get("settings")
    if stored is not None and shares_units(upgraded(stored), settings):
        if outdated := outdated_units(study, suite, stored.get("metrics_version", 1)):
            raise StoreError(_outdated_message(name, config.url(suite.name), outdated)
                             + f"; {advice(['metrics_version'])}: " + delete_hint(name, config.url(suite.name)))
        return study, False
    # Refused: name what differs besides the configurations listed, which are no reason.
    compared = settings if stored is None else _as_listed(upgraded(stored), settings)
    return study, check_settings(study, config.url(suite.name), compared, advice)


def _as_listed(stored: dict, wanted: dict) -> dict:
    """``wanted`` with the study's configurations, and their searches but where both list one: the
    settings in which a refused run differs, without the configurations it may well list otherwise."""
    both = set(stored.get("configurations", [])) & set(wanted.get("configurations", []))
    tuned_there, tuned_now = stored.get("params_from", {}), wanted.get("params_from", {})
    return {**wanted, "configurations": stored.get("configurations"),
            "params_from": {**{c: s for c, s in tuned_there.items() if c not in both},
                            **{c: s for c, s in tuned_now.items() if c in both}}}


def shares_units(stored: dict, wanted: dict) -> bool:
    """Whether a suite with ``wanted`` settings can use the study made with ``stored`` ones: they
    differ at most in the configurations listed, and one listed by both comes from the same search.
    A unit's folds and seed depend on its own configuration alone, so a suite file can gain
    configurations (or drop some from its run) and the units done stay valid. The stored settings
    stay the first run's: nothing is rewritten, so runs of several files never race; which
    configurations the study holds is read from its trials (``unit_states``)."""
    return not settings_differ(stored, _as_listed(stored, wanted))


def outdated_units(study: optuna.Study, suite: Suite, stored_version: int) -> dict[str, tuple[list[int], bool]]:
    """The units of ``suite`` settled in ``study`` (done, or failed for good) by an earlier version of
    mtvae-bench whose later changes touched them: each with those changes, and whether it recorded its
    version. Files listing other configurations share a study, so its settings, the first run's, may
    not list a configuration another file's run trained. A unit records the version that trained it;
    one settled before units recorded it counts as of the study's ``stored_version``."""
    states, outdated = unit_states(study), {}
    for key in unit_keys(suite):
        config_id = parse_unit(key)[0]
        settled = [t for t in states.get(key, []) if trial_status(t) in ("complete", "failed")]
        versions = [t.user_attrs.get("metrics_version", stored_version) for t in settled]
        if versions and (changes := changes_to([config_id], min(versions))):
            outdated[key] = changes, all("metrics_version" in t.user_attrs for t in settled)
    return outdated


def _outdated_message(study: str, url: str, outdated: dict[str, tuple[list[int], bool]]) -> str:
    configs = list(dict.fromkeys(parse_unit(key)[0] for key in outdated))
    changes = sorted({c for found, _ in outdated.values() for c in found})
    unrecorded = "" if all(recorded for _, recorded in outdated.values()) else \
        " (or by one that recorded no version with its units)"
    return (f"study {study!r} in {safe_url(url)} holds {len(outdated)} fold{'s' * (len(outdated) != 1)} of "
            f"{', '.join(configs)} trained by an earlier version of mtvae-bench{unrecorded}, {since_changes(changes)}; "
            "a run of a file without those configurations goes on with the rest")


def held_configurations(study: optuna.Study) -> list[str]:
    """The configurations with units in ``study``, in the order they were enqueued."""
    return list(dict.fromkeys(parse_unit(key)[0] for key in unit_states(study)))


def unlisted_configurations(study: optuna.Study, suite: Suite) -> list[str]:
    """Configurations with units in ``study`` that ``suite`` does not list (another file's, or an
    earlier version of this one), in the order they were enqueued."""
    listed = {c.id for c in suite.configurations}
    return [c for c in held_configurations(study) if c not in listed]


def unit_of(trial: FrozenTrial) -> str | None:
    """The unit a trial trains: as it was enqueued (a parameter in studies made before suites could grow)."""
    return trial.params.get(UNIT_PARAM) or trial.system_attrs.get("fixed_params", {}).get(UNIT_PARAM)


def unit_states(study: optuna.Study) -> dict[str, list[FrozenTrial]]:
    """Trials of each unit, oldest first."""
    by_unit: dict[str, list[FrozenTrial]] = {}
    for trial in study.get_trials(deepcopy=False):
        key = unit_of(trial)
        if key is not None:
            by_unit.setdefault(key, []).append(trial)
    return by_unit


def claimable(trials: list[FrozenTrial]) -> FrozenTrial | None:
    """The trial to claim of a unit's ``trials`` (``unit_states``): its oldest waiting one, unless the unit is
    done, failed for good or in training. A newer waiting trial is a copy (the unit enqueued twice), which the
    worker that wins the oldest would be training as well."""
    if unit_status(trials) != "waiting":
        return None
    return next(t for t in trials if t.state == TrialState.WAITING)


# A unit's status, first match: the status of a trial of it that gives it (``trial_status``).
_BY_TRIAL = {"done": "complete", "failed": "failed", "running": "running", "waiting": "waiting"}
UNIT_STATUSES = (*_BY_TRIAL, "interrupted")


def unit_status(trials: list[FrozenTrial]) -> str:
    """One of ``UNIT_STATUSES``: where a unit's ``trials`` (``unit_states``) leave it, whatever copies and retries
    it has: done, failed for good (a recorded reason: diverged), in training, queued, or only interrupted (Ctrl-C,
    a killed worker), which the next run queues again."""
    statuses = {trial_status(t) for t in trials}
    return next((unit for unit, trial in _BY_TRIAL.items() if trial in statuses), "interrupted")


def unit_counts(study: optuna.Study) -> Counter[str]:
    """How many of ``study``'s units have each of ``UNIT_STATUSES``."""
    return Counter(unit_status(trials) for trials in unit_states(study).values())


def is_settled(trials: list[FrozenTrial]) -> bool:
    """A unit's ``trials`` (``unit_states``) done, or failed for a recorded reason (diverged)."""
    return unit_status(trials) in ("done", "failed")


def is_accounted_for(trials: list[FrozenTrial]) -> bool:
    """Done, failed for a recorded reason (diverged), or already queued or running."""
    return unit_status(trials) != "interrupted"


def enqueue_missing(study: optuna.Study, keys: list[str]) -> int:
    """Enqueue every unit that is neither done, failed for a reason, queued nor running.

    This covers a fresh suite, an enqueue that was interrupted, and trials that ended FAIL
    without a reason (Ctrl-C). Concurrent callers may enqueue a unit twice; the claim check
    in the runner makes sure it is still trained once.
    """
    states = unit_states(study)
    missing = [k for k in keys if not is_accounted_for(states.get(k, []))]
    for key in missing:
        study.enqueue_trial({UNIT_PARAM: key})
    return len(missing)
