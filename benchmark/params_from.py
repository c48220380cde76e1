"""What `run --params-from` reads of finished search studies: their settings, the configuration
each one found best, and a note when one searched with other training than the run's."""

from __future__ import annotations

from dataclasses import asdict, replace

import optuna
from optuna.trial import TrialState

from benchmark.checks import did_you_mean
from benchmark.config import Configuration
from benchmark.search_space import SearchSettings, configuration_for
from benchmark.storage import looking_at, open_for_reading, version_problem
from benchmark.store import is_settled, parse_unit, unit_states
from benchmark.studies import StudyPlace, best_trial, load_existing_study, suite_of
from benchmark.suites import SearchBest, SearchKey, Suite, search_key


class NotASearch(ValueError):
    """A --params-from name that is no search study where it was looked for."""


def _is_search(settings: object) -> bool:
    """Whether a study's ``settings`` user attribute is a search's (``SearchSettings.to_dict``)."""
    return isinstance(settings, dict) and "method" in settings


def study_settings(study: optuna.Study) -> SearchSettings:
    data = study.user_attrs.get("settings")
    if not _is_search(data):
        raise ValueError(f"study {study.study_name!r} is not a search study (no search settings stored)")
    try:
        return SearchSettings.from_dict(data)
    except ValueError as err:  # its messages name search's flags, which this command was not given
        raise ValueError(f"study {study.study_name!r} stores search settings this version refuses (edited, or "
                         f"written by another version?): {err}") from None


def search_study_names(place: StudyPlace) -> list[str]:
    """The search studies in ``place``."""
    names = set()
    for url in place.files():
        with looking_at(url) as storage:
            studies = [] if storage is None else storage.get_all_studies()  # their attributes, not their trials
        names.update(s.study_name for s in studies if _is_search(s.user_attrs.get("settings")))
    return sorted(names)


def load_search_study(place: StudyPlace, name: str) -> tuple[optuna.Study, SearchSettings]:
    """Search study ``name`` from ``place`` and its settings; a name that is no search study
    there raises a one-line ``NotASearch`` listing the search studies there."""
    storage = open_for_reading(place.url(name))
    study = None
    if storage is not None and name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        if _is_search(study.user_attrs.get("settings")):
            return study, study_settings(study)
    searches = search_study_names(place)
    if study is None:
        problem = f"no study {name!r}{did_you_mean(name, searches)} in {place}"
    else:
        suite = suite_of(study)
        problem = f"study {name!r} holds the units of suite {suite!r}" if suite else f"study {name!r} is not one"
    raise NotASearch(f"--params-from takes search studies (made by `python -m benchmark search`): {problem}; "
                     f"available: {', '.join(searches) or 'none'}")


def best_configurations(study_names: list[str], place: StudyPlace = StudyPlace()
                        ) -> dict[SearchKey, SearchBest]:
    """(family, config, method, sampling, softadapt) → what each study of ``study_names`` found (its best
    configuration, the study, the parameters it tuned), the studies read from ``place``.

    For a multi-objective study the Pareto-front trial with the lowest ``recon`` is taken (see ``lead_objective``).
    Raises ``ValueError`` for a study named twice, an unknown study or one that is no search, one
    without a complete trial, or two studies that tune the same (family, config, method, sampling, softadapt).
    """
    twice = sorted({name for name in study_names if study_names.count(name) > 1})
    if twice:
        raise ValueError(f"study {twice[0]!r} is named twice in --params-from: name each study once")
    found: dict[SearchKey, SearchBest] = {}
    for name in study_names:
        study, settings = load_search_study(place, name)
        problem = version_problem(name, place.url(name), study.user_attrs["settings"])
        if problem:
            raise ValueError(f"{problem}: search again, under a new --study-name")
        trial = best_trial(study)
        if trial is None:
            raise ValueError(f"study {name!r} has no complete trial yet: {_unfinished_advice(study, settings, place)}")
        configuration = configuration_for(settings, trial.params)
        key = search_key(configuration)
        if key in found:
            raise ValueError(f"studies {found[key].study!r} and {name!r} both tune {settings.tuned}: a configuration "
                             "takes the parameters of one search, so name one of them")
        found[key] = SearchBest(configuration, name, frozenset(settings.ranges))
    return found


def begun_bests(best: dict[SearchKey, SearchBest], place: StudyPlace, run_url: str, run_study: str
                ) -> tuple[dict[SearchKey, SearchBest], list[str]]:
    """``best`` with a search's best replaced by the configuration of it that run study ``run_study`` (in
    ``run_url``) has begun and not finished, and a note for each: every machine that runs one command trains
    one configuration, though the search goes on meanwhile; once that one is done, the command takes the new
    best. Of several begun, the one queued last."""
    with looking_at(run_url) as storage:
        try:
            study = None if storage is None else optuna.load_study(study_name=run_study, storage=storage)
        except KeyError:
            study = None
        states = {} if study is None else unit_states(study)
    begun: dict[str, int] = {}  # config id → its last trial's number, of the configurations with a unit unsettled
    for key, trials in states.items():
        if not is_settled(trials):
            config_id = parse_unit(key)[0]
            begun[config_id] = max(begun.get(config_id, -1), *(t.number for t in trials))
    if not begun:
        return best, []
    kept, notes = dict(best), []
    for key, found in best.items():
        if found.configuration.id in begun:
            continue
        search, settings = load_search_study(place, found.study)
        configurations: dict[str, Configuration] = {}  # the first trial's of an id (ids round weights to 6 digits)
        for trial in search.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if (configuration := configuration_for(settings, trial.params)).id in begun:
                configurations.setdefault(configuration.id, configuration)
        if not configurations:
            continue
        configuration = configurations[max(configurations, key=begun.__getitem__)]
        kept[key] = replace(found, configuration=configuration, began=True)
        notes.append(f"note: study {found.study!r} has found another best since this run began, "
                     f"{found.configuration.id} (trial #{best_trial(search).number}); this run trains "
                     f"{configuration.id} on, whose units are not all done, as every machine that joins it does. "
                     "The same command trains the new best once they are; a --name of its own trains it now")
    return kept, notes


def _unfinished_advice(study: optuna.Study, settings: SearchSettings, place: StudyPlace) -> str:
    """What a run can do about a search study without a complete trial (an interrupted search, or one
    still training): continue it with the `search` command its stored settings give, or wait."""
    name = study.study_name
    command = settings.command(name) + place.flags(name, place.url(name))
    running = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))
    wait = f", or wait for the {running} trial{'s' * (running != 1)} running in it" if running else ""
    return (f"continue it with `{command}` and the options it was given that a study does not store (--trials, "
            f"--data-root, ...){wait}")


def tuning_notes(study_names: list[str], place: StudyPlace, suite: Suite) -> list[str]:
    """A note for each study that searched with other training than ``suite`` gets: its best
    parameters were chosen for that training, and need not be the best for this one."""
    from benchmark.train import resolve_device

    here = {key: value for key, value in suite.settings().items() if key in TRAINING_SETTINGS and key != "precision"}
    try:  # a search stores the precision it trained in, as this run will
        here["precision"] = suite.train.effective_precision(resolve_device(suite.train.device))
    except ValueError:  # a device not here: the run refuses it, and says so
        pass
    notes = []
    for name in study_names:
        there = asdict(study_settings(load_existing_study(place, name)))
        differ = training_differences(there, here)
        if differ:
            changes = training_changes(there, here, differ)
            flags = " ".join(f"--{key.replace('_', '-')} {_shown(here[key])}" for key in differ if here[key] is not None)
            if "limit" in differ and here["limit"] is None:
                flags = f"{flags} and no --limit" if flags else "no --limit"
            notes.append(f"note: study {name!r} searched with other training than this run's ({changes}); its best "
                         f"parameters were chosen for that training. A search with {flags}, under a new "
                         "--study-name, tunes them for this one")
    return notes


# What a search and a run share, or the search's best parameters were chosen for other training.
TRAINING_SETTINGS = ("dataset", "limit", "folds", "epochs", "batch_size", "lr", "weight_decay", "precision")


def training_differences(there: dict, here: dict) -> list[str]:
    """The keys of ``here`` (of ``TRAINING_SETTINGS``) whose values a search's settings ``there`` do not share."""
    # A study (or a run's export) made before precision was stored says "auto": not knowable here.
    return [key for key, value in here.items() if key in there and there[key] != value and "auto" not in (there[key], value)]


def training_changes(there: dict, here: dict, keys: list[str]) -> str:
    """``training_differences``' ``keys`` as text: ``epochs 1 → 2, lr 0.01 → 0.001``."""
    return ", ".join(f"{key} {_shown(there[key])} → {_shown(here[key])}" for key in keys)


def _shown(value: object) -> str:
    return "all" if value is None else str(value)  # a float as it round-trips
