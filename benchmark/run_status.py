"""What a suite's run says about its units: where an earlier run left them (the resume line), the
study's units of configurations the suite does not list, and the summary at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import optuna

from benchmark.storage import safe_url, trial_status
from benchmark.store import is_settled, parse_unit, unit_keys, unit_states, unit_status
from benchmark.suites import Suite


@dataclass
class RunSummary:
    """A run's end: units done (``trained`` of them by this run, the rest before it or by others at the
    same time), failed for good and not finished; its seconds, its results file, and the reason each
    failed unit gave."""

    done: int
    failed: int
    missing: int
    seconds: float
    results: Path
    errors: dict[str, str] = field(default_factory=dict)
    workers: int = 1  # worker processes the run started, and how those that did not end well ended
    worker_failures: int = 0
    workers_killed: list[str] = field(default_factory=list)
    trained: int = 0
    busy_loads: list[float] = field(default_factory=list)  # of the units it trained, those other work slowed


def settled_units(states: dict[str, list[optuna.trial.FrozenTrial]], suite: Suite) -> tuple[int, dict[str, str]]:
    """(units done, the error of each unit failed for good) in ``states`` (``unit_states``)."""
    done, errors = 0, {}
    for key in unit_keys(suite):
        trials = states.get(key, [])
        status = unit_status(trials)
        if status == "done":
            done += 1
        elif status == "failed":
            errors[key] = [t.user_attrs["error"] for t in trials if trial_status(t) == "failed"][-1]
    return done, errors


def configurations_to_train(states: dict[str, list[optuna.trial.FrozenTrial]], suite: Suite) -> set[str]:
    """Ids of the configurations of ``suite`` with a unit neither done nor failed for good in ``states``."""
    return {parse_unit(key)[0] for key in unit_keys(suite) if not is_settled(states.get(key, []))}


def resume_line(study: optuna.Study, suite: Suite, grace_period: float) -> str | None:
    """What earlier runs left of this suite's units, when they queued any (a run stopped before its first unit
    was done too); units in training say why the run may wait for them (a killed worker's unit is only known
    dead once its heartbeat is old), and configurations the study has no unit of yet are named."""
    states = unit_states(study)
    done, errors = settled_units(states, suite)
    mine = {key: states.get(key, []) for key in unit_keys(suite)}
    if not any(mine.values()):
        return None
    running = sum(unit_status(trials) == "running" for trials in mine.values())
    failed = f", {len(errors)} failed for good" if errors else ""
    new = [c.id for c in suite.configurations if not any(mine[key] for key in unit_keys(suite, c.id))]
    added = (f" (including the {len(new) * suite.folds * suite.repeats} units of {_count(new, 'configuration')} "
             f"new to the study: {_listing(new)})") if new else ""
    live = (f" ({running} in training elsewhere, or on a worker that died: such a unit is taken up again "
            f"{grace_period:g} s after its last heartbeat)") if running else ""
    return (f"resuming: {done} of {suite.units} units already done{failed}; "
            f"{suite.units - done - len(errors)} not finished{added}{live}")


def new_study_line(study: optuna.Study, url: str, results: Path) -> str:
    """Where a run that makes its study keeps its units and exports them: a run started in another
    folder (or with a mistyped --storage) starts anew there, and says so before it trains."""
    return f"new study {study.study_name!r} in {safe_url(url)}; its results go to {results}"


def unlisted_note(study: optuna.Study, unlisted: list[str], results: Path) -> str | None:
    """A note when the study holds units of configurations this suite does not list, ``unlisted``
    (another version of its file, maybe one running now): they are kept, and not in this run's export."""
    if not unlisted:
        return None
    return (f"note: study {study.study_name!r} also holds the units of {_count(unlisted, 'configuration')} that "
            f"this suite does not list ({_listing(unlisted)}); they are kept, and {results} has this suite's "
            "configurations only (a run of a suite that lists them exports them again)")


def _count(items: list, noun: str) -> str:
    return f"{len(items)} {noun}{'s' * (len(items) != 1)}"


def _listing(names: list[str], shown: int = 3) -> str:
    """``a, b, c and 2 more``: the first names of a list that may be long."""
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def summarise_run(study: optuna.Study, suite: Suite, results: Path, seconds: float, run_id: str) -> RunSummary:
    """Where the study's units stand after run ``run_id`` (the ``run`` its workers record with each unit)."""
    states = unit_states(study)
    done, errors = settled_units(states, suite)
    mine = []  # a trial per unit: both copies of a unit queued twice may finish (ids committed out of order)
    for key in unit_keys(suite):
        mine += [t for t in states.get(key, [])
                 if trial_status(t) == "complete" and t.user_attrs.get("run") == run_id][:1]
    busy = [t.user_attrs["busy_load"] for t in mine if t.user_attrs.get("busy_load") is not None]
    return RunSummary(done, len(errors), suite.units - done - len(errors), seconds, results, errors,
                      trained=len(mine), busy_loads=busy)
