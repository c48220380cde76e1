"""Units a tuned run takes from the suite's own run instead of training them again.

``run --params-from`` files the suite under a name of its own (``<suite>-tuned``) and trains the
configurations its searches tune with their best parameters; the others are the suite's own, which the
run filed under the suite's name may have trained already. A unit's folds and seed depend on its
configuration alone, so where that run trained with the same settings on as many images, its units are
this run's and are copied, not trained again: a `full` suite's tuned run trains the few configurations a
search tuned, not all 45.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from benchmark.export import link_checkpoint
from benchmark.storage import (StoreConfig, changes_to, differing_settings_message, looking_at, settings_differ,
                               trial_status, upgraded, versioned)
from benchmark.store import UNIT_PARAM, parse_unit, study_name, unit_keys, unit_states
from benchmark.suites import Suite

# Settings in which a run differs from the one it takes units from; the units' own configurations are compared.
NOT_COMPARED = ("suite", "configurations", "params_from")


def take_units(study: optuna.Study, suite: Suite, store: StoreConfig, images: int) -> str | None:
    """Copy into ``study`` the units of ``suite``'s configurations that it does not tune and that the run filed
    under ``suite.untuned`` completed with the same settings on ``images`` training images, where ``study``
    has none of them settled or in training. Returns a line saying what was taken, or why nothing could be;
    None where that run has no study here or nothing is left to take."""
    source = suite.untuned
    if source is None or source == suite.name:
        return None
    url, name = store.url(source), study_name(source)
    with looking_at(url) as storage:
        try:
            other = None if storage is None else optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            other = None
        stored = None if other is None else other.user_attrs.get("settings")
        if stored is None:
            return None
        # A unit is checked against its own metrics version below: a study of an earlier version may hold units
        # that no later change touched.
        compared = {**versioned(suite.settings()), **{key: stored.get(key) for key in NOT_COMPARED},
                    "metrics_version": upgraded(stored).get("metrics_version")}
        unlike = f"this run trains the configurations it does not tune as well, rather than take their units from run " \
                 f"{source!r}"
        if settings_differ(upgraded(stored), compared):
            return f"note: {differing_settings_message(name, url, stored, compared)}: {unlike}"
        split = other.user_attrs.get("training_images")
        if split != images:
            return (f"note: study {name!r} split {'an unrecorded number of' if split is None else f'{split:,}'} "
                    f"training images into its folds and these data have {images:,}: {unlike}")
        copies = _copies(study, suite, unit_states(other), stored.get("metrics_version", 1), name, store)
    study.add_trials(copies)
    if not copies:
        return None
    configurations = len({parse_unit(trial.system_attrs["fixed_params"][UNIT_PARAM])[0] for trial in copies})
    return (f"taking {len(copies)} units of {configurations} configuration{'s' * (configurations != 1)} from run "
            f"{source!r}, which trained them with this run's settings: they are not trained again")


def _copies(study: optuna.Study, suite: Suite, theirs: dict[str, list[optuna.trial.FrozenTrial]], version: int,
            name: str, store: StoreConfig) -> list[optuna.trial.FrozenTrial]:
    """The trials that copy units of ``theirs`` (``unit_states`` of study ``name``, of metrics version ``version``)
    into ``study``: those of configurations neither run tuned, done by this version's metrics, and not settled
    or in training in ``study``; their weights are linked into this run's artifacts folder."""
    tuned, mine = dict(suite.params_from), unit_states(study)
    copies = []
    for key in unit_keys(suite):
        config_id = parse_unit(key)[0]
        if config_id in tuned or any(trial_status(t) in ("complete", "failed", "running") for t in mine.get(key, [])):
            continue
        done = next((t for t in theirs.get(key, []) if t.state == TrialState.COMPLETE and "params_from" not in
                     t.user_attrs and not changes_to([config_id], t.user_attrs.get("metrics_version", version))), None)
        if done is not None:
            attrs = link_checkpoint(done.user_attrs, store.artifacts(suite.untuned), store.artifacts(suite.name))
            attrs["taken_from"] = f"{name} #{done.number}"
            copies.append(optuna.trial.create_trial(value=done.value, user_attrs=attrs,
                                                    system_attrs={"fixed_params": {UNIT_PARAM: key}}))
    return copies
