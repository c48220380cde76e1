"""Units a run takes from a run of the same suite instead of training them again.

``run --params-from`` files the suite under a name of its own (``<suite>-tuned``) and trains the
configurations its searches tune with their best parameters; the others are the suite's own, which the
run filed under the suite's name may have trained already, or may train later. A unit's folds and seed
depend on its configuration alone, so where the other run trained it with the same settings on as many
images, its unit is this run's and is copied, not trained again: a `full` suite's tuned run trains the few
configurations a search tuned, not all 45, and the suite's own run after it those few only.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from benchmark.checks import first_line
from benchmark.export import link_checkpoint, saved_checkpoint
from benchmark.storage import (METRICS_VERSION, StoreConfig, changes_to, differing_settings_message, looking_at,
                               safe_url, settings_differ, settle_waiting, trial_status, upgraded, versioned)
from benchmark.store import claimable, parse_unit, study_name, unit_keys, unit_states
from benchmark.suites import Suite

# Settings in which a run differs from the one it takes units from; the units' own configurations are compared.
NOT_COMPARED = ("suite", "configurations", "params_from")


def take_units(study: optuna.Study, suite: Suite, store: StoreConfig, images: int, digest: str) -> str | None:
    """Settle the waiting units of ``study`` whose configuration ``suite`` does not tune and that the run filed
    under ``suite.takes_from`` settled untuned (done, or failed for good) with the same settings on ``images``
    training images of pixels ``digest`` (``pixel_digest``), with that run's results and weights. Returns a line
    saying what was taken, or, for a tuned run, which expects to take units, why nothing could be; None where
    nothing is left to take or that run has no study here.

    A unit's oldest waiting trial is finished in one transaction, which one caller only can, so that runs
    started together take each unit once, and one stopped midway leaves each unit whole or waiting."""
    source = suite.takes_from
    if source is None or source == suite.name:
        return None
    tuned, states = dict(suite.params_from), unit_states(study)
    waiting = {key: trial for key in unit_keys(suite)
               if parse_unit(key)[0] not in tuned and (trial := claimable(states.get(key, [])))}
    if not waiting:
        return None
    url, name = store.url(source), study_name(source)
    unlike = (f"this run trains the configurations it does not tune as well, rather than take their units from run "
              f"{source!r}" if tuned else f"this run trains its units, rather than take them from run {source!r}")
    try:
        with looking_at(url) as storage:
            try:
                other = None if storage is None else optuna.load_study(study_name=name, storage=storage)
            except KeyError:
                other = None
            stored = None if other is None else other.user_attrs.get("settings")
            if stored is None:
                return None
            compared = {**versioned(suite.settings()), **{key: stored.get(key) for key in NOT_COMPARED}}
            # A tuned run with other settings than the suite's own is said to take nothing; a suite's run with
            # other settings than its tuned run's (another --seed, say) never meant to take anything.
            if settings_differ(upgraded(stored), compared):
                return f"note: {differing_settings_message(name, url, stored, compared)}: {unlike}" if tuned else None
            split = other.user_attrs.get("training_images")
            if split != images:
                return (f"note: study {name!r} split {'an unrecorded number of' if split is None else f'{split:,}'} "
                        f"training images into its folds and these data have {images:,}: {unlike}" if tuned else None)
            if other.user_attrs.get("images_digest", digest) != digest:  # a study made before digests: the count
                return (f"note: study {name!r} split other training images into its folds than these (as many, with "
                        f"other pixels): {unlike}" if tuned else None)
            settled, gone = _settled(unit_states(other), list(waiting), stored.get("metrics_version", 1),
                                     store.artifacts(source))
    except Exception as err:  # a storage out of reach or damaged: training them is what a run did before
        return f"note: reading study {name!r} in {safe_url(url)} failed ({first_line(err)}): {unlike}"
    taken = []
    for key, trial in settled.items():
        attrs = {**trial.user_attrs, "taken_from": source}
        saved = saved_checkpoint(attrs, store.artifacts(source)) if "artifact" in attrs else None
        if saved is not None:  # read there until linked into this run's folder, which is looked in first
            attrs["artifact_dir"] = str(saved.parent.absolute())
        if not settle_waiting(study, waiting[key]._trial_id, trial.state, trial.value, attrs):
            continue  # a run started together took it
        taken.append(key)
        if saved is not None:
            link_checkpoint(saved, store.artifacts(suite.name))
    units = f"unit{'s' * (gone != 1)} that run {source!r} trained with this run's settings"
    weightless = (f"{gone} {units} train{'s' * (gone == 1)} again, {'its' if gone == 1 else 'their'} weights gone "
                  f"from {store.artifacts(source)}")
    if not taken:
        return f"note: {weightless}" if gone else None
    configurations = len({parse_unit(key)[0] for key in taken})
    failed = sum(trial_status(settled[key]) == "failed" for key in taken)
    failed_text = f" ({failed} failed for good there)" if failed else ""
    return (f"taking {len(taken)} unit{'s' * (len(taken) != 1)}{failed_text} of {configurations} configuration"
            f"{'s' * (configurations != 1)} from run {source!r}, which trained them with this run's settings: they "
            "are not trained again" + (f"; {weightless}" if gone else ""))


def _settled(theirs: dict[str, list[FrozenTrial]], keys: list[str], version: int, artifacts: Path
             ) -> tuple[dict[str, FrozenTrial], int]:
    """The trials of ``theirs`` (``unit_states`` of a study of metrics version ``version``, whose weights are in
    ``artifacts``) that settled units of ``keys`` untuned, by this version's metrics: done, with their weights
    there to take, or else failed for good (diverged, as the same unit would here); and the number of units done
    there whose weights are gone, which train again rather than lose their figures."""
    found, gone = {}, 0
    for key in keys:
        config_id = parse_unit(key)[0]
        settled = [trial for trial in theirs.get(key, []) if "params_from" not in trial.user_attrs
                   and (unit_version := trial.user_attrs.get("metrics_version", version)) <= METRICS_VERSION
                   and not changes_to([config_id], unit_version)]
        done = [trial for trial in settled if trial.state == TrialState.COMPLETE]
        complete = [trial for trial in done
                    if "artifact" not in trial.user_attrs or saved_checkpoint(trial.user_attrs, artifacts).exists()]
        failed = [trial for trial in settled if trial_status(trial) == "failed"]
        if complete or failed:
            found[key] = (complete or failed)[0]
        elif done:
            gone += 1
    return found, gone
