"""The Optuna study as the store of units of work: one trial per (configuration, fold).

A suite's study holds every unit, a WAITING trial until a worker claims it. A unit's key
(``config_id#fold``) is enqueued as the trial's fixed parameter ``unit``, which the worker reads
rather than suggests: an Optuna parameter's choices cannot change, and a suite's configurations
can grow. The storage itself (opening it, heartbeats, trial statuses, stored settings):
``benchmark.storage``; the export to results/ and the checkpoints: ``benchmark.export``.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial

from benchmark.storage import (StoreConfig, StoreError, check_settings, open_storage, safe_url, settings_differ,
                               trial_status, upgraded, versioned)
from benchmark.suites import Suite

UNIT_PARAM = "unit"


def unit_key(config_id: str, fold: int) -> str:
    return f"{config_id}#{fold}"


def parse_unit(key: str) -> tuple[str, int]:
    config_id, fold = key.rsplit("#", 1)
    return config_id, int(fold)


def unit_keys(suite: Suite) -> list[str]:
    return [unit_key(c.id, f) for c in suite.configurations for f in range(suite.folds * suite.repeats)]


def study_name(suite: Suite | str) -> str:
    """The study of the run filed under a suite's name (or under ``suite`` itself, a name)."""
    return f"suite-{suite if isinstance(suite, str) else suite.name}"


def open_suite_study(suite: Suite, config: StoreConfig, create: bool = True) -> optuna.Study:
    """Create or load the suite's study; refuse one made with other settings, touching nothing,
    except configurations added to the suite (``grows``), which join the study."""
    storage = open_storage(config.url(suite.name), config)
    name = study_name(suite)
    settings = versioned(suite.settings())
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        if not create:
            raise StoreError(f"no study {name!r} in {safe_url(config.url(suite.name))}") from None
        study = optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True)
    if grows(study.user_attrs.get("settings"), settings):
        study.set_user_attr("settings", settings)
    check_settings(study, config.url(suite.name), settings,
                   "give the run another name (--name), or use another --storage and --results-dir (its "
                   "results would be overwritten), or remove that study to start over")
    return study


def grows(stored: dict | None, wanted: dict) -> bool:
    """Whether ``wanted`` differs from a study's ``stored`` settings only by configurations it adds
    (or their order): a unit's folds and seed depend on its configuration alone, so the units
    done stay valid, and the study takes the new ones instead of being refused."""
    if stored is None or upgraded(stored) == wanted:
        return False
    stored, grown = upgraded(stored), ("configurations", "params_from")
    old, new = stored.get("configurations", []), wanted.get("configurations", [])
    tuned_old, tuned_new = stored.get("params_from", {}), wanted.get("params_from", {})
    return (not settings_differ({k: v for k, v in stored.items() if k not in grown},
                                {k: v for k, v in wanted.items() if k not in grown})
            and set(old) <= set(new) and all(tuned_old.get(c) == tuned_new.get(c) for c in old))


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


def is_settled(trials: list[FrozenTrial]) -> bool:
    """Done, failed for a recorded reason (diverged), or already queued or running."""
    return any(trial_status(t) in ("complete", "failed", "waiting", "running") for t in trials)


def enqueue_missing(study: optuna.Study, keys: list[str]) -> int:
    """Enqueue every unit that is neither done, failed for a reason, queued nor running.

    This covers a fresh suite, an enqueue that was interrupted, and trials that ended FAIL
    without a reason (Ctrl-C). Concurrent callers may enqueue a unit twice; the claim check
    in the runner makes sure it is still trained once.
    """
    states = unit_states(study)
    missing = [k for k in keys if not is_settled(states.get(k, []))]
    for key in missing:
        study.enqueue_trial({UNIT_PARAM: key})
    return len(missing)
