"""Optuna search of the power-law exponent and the loss weights, one trial = one k-fold CV.

A trial trains one configuration over the same folds as the suite runner
(``fold_indices(len(train), folds, seed)``, per-fold seed ``unit_seed(seed, configuration.id,
fold)``), so a configuration found here and then trained by ``run`` reproduces the trial's
fold values (exactly on a CPU with the same thread count, as ``--workers`` sets it; up to float
noise otherwise: a GPU's kernels are not deterministic, and ``run`` stacks folds there). After
each fold the trial reports the running mean of its objective's
validation values (``recon`` by default; ``latent`` or ``recon_cond`` with ``--objectives``) so
that the pruner can stop poor trials early; the objective is that mean over the folds (or
several objectives together: a Pareto front, without pruning, which Optuna does not offer for
several objectives).

Storage: each search study has a SQLite file of its own, ``studies/<study>.db`` (a study that
an earlier version put in the shared ``studies/search.db`` stays there: ``studies.default_storage``),
or any Optuna storage URL (PostgreSQL: many machines, one study). Fold values are trial user attributes (``fold_recon``, ...); the
search settings are the study's ``settings`` user attribute.

A trial with a diverged fold ends PRUNED with its reason (user attribute ``error``; *failed* in
``trial_status``), not FAIL: Optuna's samplers ignore FAIL trials, so TPE would go on proposing
the region that diverged; pruned, and infeasible by a constraint of its own (``diverged``), it
ranks below every other trial, whatever running means its folds before the divergence reported.

Budget: a worker starts a trial only while fewer than ``trials`` trials are COMPLETE, PRUNED,
RUNNING, or FAIL with a reason (a diverged fold in a study of an earlier version), so rerunning a
finished command does nothing. A trial stopped by Ctrl-C, or by a killed worker (its
heartbeat stops; it becomes FAIL and is queued again with the same parameters), does not
count, so rerunning an interrupted command goes on where it stopped. Workers racing for the
last slot can each start one; only those whose trial numbers fit the budget train, and the
others end at once as FAIL with user attribute ``surplus`` (not counted, not seen by the
sampler), so a study ends with ``trials`` counted trials. A worker whose budget is used up
waits for the trials still running, so that it can take over the trial of a worker that was killed.

What a search tunes (parameters, ranges, objectives, settings): ``benchmark.search_space``; a
finished search's best configurations, for ``run --params-from``: ``benchmark.params_from``.
"""

from __future__ import annotations

import math
import sys
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from benchmark.balancing import BalanceConfig, idle_softadapt_note
from benchmark.checks import check_choice, field_problems, problems_of, raise_problems
from benchmark.config import TRAIN_CHECKS, Configuration
from benchmark.cv import fold_indices
from benchmark.processes import (Interrupted, Interrupts, check_workers, crowded_note, run_workers,
                                 shared_threads_note, shared_with_workers, stop_with_parent, training_threads,
                                 worker_exits, worker_id, worker_threads)
from benchmark.progress import CostEta, chosen_progress, duration, progress_bar
from benchmark.storage import (
    StoreConfig,
    StoreError,
    agree_heartbeat,
    check_heartbeat,
    check_pool,
    check_settings,
    fail_orphans,
    fail_stale_trials,
    finished_elsewhere,
    grace_for,
    heartbeat_note,
    open_storage,
    opened_as_agreed,
    optuna_errors_only,
    release_if_killed,
    safe_url,
    status_counts,
    stored_attr,
    taken_over_message,
    trial_status,
    versioned,
)
from benchmark.params_from import study_settings
from benchmark.search_space import SearchSettings, configuration_for, describe_ranges
from benchmark.suites import fold_seconds
from benchmark.studies import StudyPlace, best_trial, default_storage, lead_objective, study_names, suite_of

PRUNERS = ("median", "none")


@dataclass(frozen=True)
class SearchOptions:
    """How a search runs; none of this changes what a finished trial means."""

    trials: int = 50
    timeout: float | None = None        # seconds; no new trial starts after it
    pruner: str = "median"
    pruner_startup: int = 5             # complete trials before the median pruner acts
    workers: int = 1
    device: str = "auto"
    data_root: str | None = None
    download: bool = False              # mnist/cifar10/celeba into data_root, before the workers start
    heartbeat: int = 10
    show_progress: bool = True

    def __post_init__(self) -> None:
        raise_problems(self._problems())

    def _problems(self) -> list[str]:
        """Every problem of these options, each said of its flag, in the fields' order."""
        return field_problems(self, {
            "trials": (int, "an integer", lambda v: [] if v >= 1 else [f"trials must be >= 1, got {v}"]),
            "timeout": ((int, float, type(None)), "a number of seconds", lambda v: [] if v is None or v > 0 else [
                f"timeout must be > 0 seconds, got {v}"]),
            "pruner": (str, "a name", lambda v: problems_of(check_choice, "pruner", v, PRUNERS)),
            "pruner_startup": (int, "an integer",
                               lambda v: [] if v >= 0 else [f"pruner_startup must be >= 0, got {v}"]),
            "workers": (int, "an integer", lambda v: problems_of(check_workers, v)),
            "device": TRAIN_CHECKS["device"],
            "heartbeat": (int, "an integer", lambda v: problems_of(check_heartbeat, v)),
        }, flag=True)[0]


def make_pruner(settings: SearchSettings, options: SearchOptions) -> optuna.pruners.BasePruner:
    if options.pruner == "none" or settings.multi_objective:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=options.pruner_startup)


def open_search_study(settings: SearchSettings, storage_url: str, study_name: str,
                      options: SearchOptions = SearchOptions()) -> optuna.Study:
    """Create or load the study; refuse one that was made with other settings."""
    store = StoreConfig(storage=storage_url, heartbeat_interval=options.heartbeat)
    storage = open_storage(storage_url, store)
    # The sampler is not seeded: workers on several machines must not propose the same points
    # (training is seeded, so each trial is still reproducible from its parameters).
    # constant_liar makes concurrent workers avoid the points others are evaluating.
    sampler = optuna.samplers.TPESampler(constant_liar=True)
    study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True, sampler=sampler,
                                pruner=make_pruner(settings, options),
                                directions=["minimize"] * len(settings.objectives))
    if suite := suite_of(study):
        raise StoreError(f"study {study_name!r} in {safe_url(storage_url)} holds the units of suite {suite!r}, not a "
                         "search: give the search another --study-name")
    check_settings(study, storage_url, versioned(settings.to_dict()),
                   lambda differing: _refused_advice(study, storage_url))
    return study


def _refused_advice(study: optuna.Study, storage_url: str) -> str:
    """What a search refused a study made with other settings can do: continue it with the `search` command its
    stored settings give (with the storage it is in), or search elsewhere."""
    elsewhere = "use another --study-name or --storage, or remove that study"
    name = study.study_name
    try:
        command = study_settings(study).command(name) + StudyPlace().flags(name, storage_url)
    except (TypeError, ValueError):  # settings this version cannot read: the message names them
        return elsewhere
    return f"continue it with `{command}` (and this command's other options), or {elsewhere}"


def counts_toward_budget(trial: FrozenTrial) -> bool:
    """Finished, running, or failed for a recorded reason; not interrupted nor surplus (see the module docstring)."""
    return trial_status(trial) in ("complete", "pruned", "running", "failed")


class SurplusTrial(Exception):
    """A trial started by a worker that lost the race for the budget's last slots: it does not train."""


def settled(trials: list[FrozenTrial]) -> int:
    """The trials that count toward the budget and are finished: a RUNNING one may be a killed worker's."""
    return sum(counts_toward_budget(t) and t.state != TrialState.RUNNING for t in trials)


def budget_used(trials: list[FrozenTrial]) -> int:
    return sum(counts_toward_budget(t) for t in trials)


class _Objective:
    """Trains one trial's configuration over every fold; reports the running mean for pruning."""

    def __init__(self, settings: SearchSettings, options: SearchOptions, images, bar, interrupts: Interrupts,
                 run_id: str) -> None:
        self.settings, self.images, self.bar, self.interrupts, self.run_id = settings, images, bar, interrupts, run_id
        # Each trial of the budget weighs the same, and this worker's trial in training counts by its
        # epochs done, so the ETA moves within the first trial (pruned trials end early: until some
        # have, it runs high). Finished trials fill the budget from slot 0, so this worker's trial
        # takes the last slot, which is settled only when every trial is.
        self.eta = CostEta({str(slot): 1.0 for slot in range(options.trials)})
        self.eta_key = str(options.trials - 1)
        self.folds = fold_indices(len(images), settings.folds, settings.seed)
        self.train_config = settings.train_config(options.device)
        self.trials = options.trials
        self.best = "–"
        self.number = -1            # the trial being run
        self.interrupted = False    # Ctrl-C came during it

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        self.number = trial.number
        try:
            return self._run(trial)
        except KeyboardInterrupt:
            self.interrupted = True
            raise

    def suggest(self, trial: optuna.Trial) -> Configuration:
        params = {name: trial.suggest_float(name, r.low, r.high, log=r.log)
                  for name, r in self.settings.ranges.items()}
        return configuration_for(self.settings, params)

    def _run(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        from benchmark.cv import fold_label, unit_seed
        from benchmark.train import DivergedError, train_fold

        trial.set_user_attr("worker", worker_id())
        trial.set_user_attr("run", self.run_id)  # with ``worker``, whose trials a killed one left
        # A waiting trial (a killed worker's, queued again) takes a slot too: a worker with budget left pops it.
        earlier = sum((counts_toward_budget(t) or t.state == TrialState.WAITING) and t.number < trial.number
                      for t in trial.study.get_trials(deepcopy=False))
        if earlier >= self.trials:  # another worker's trial took the last slot first
            # Its number, not True: a retry of this trial (copied user attributes) is no surplus.
            trial.set_user_attr("surplus", trial.number)
            raise SurplusTrial(f"trial #{trial.number}: the {self.trials} trials of the budget were started first")
        settings = self.settings
        configuration = self.suggest(trial)
        trial.set_user_attr("config_id", configuration.id)
        values: dict[str, list[float]] = {name: [] for name in ("recon", "latent", "recon_cond", "best_epoch")}
        for fold, (train_idx, val_idx) in enumerate(self.folds):
            def on_epoch(epoch: int, row: dict[str, float], fold: int = fold) -> None:
                self.eta.progress(self.eta_key, (fold + epoch / settings.epochs) / len(self.folds))
                self.bar.set_postfix_str(f"ETA {self.eta} | trial #{trial.number} | {fold_label(fold, len(self.folds))} "
                                         f"| epoch {epoch}/{settings.epochs} | val recon {row['recon']:.4g} | "
                                         f"best {self.best}", refresh=True)

            try:
                with self.interrupts.immediate():  # Ctrl-C in a storage call is raised at the next fold
                    result = train_fold(configuration, self.images[train_idx], self.images[val_idx],
                                        self.train_config, unit_seed(settings.seed, configuration.id, fold), on_epoch)
            except DivergedError as err:  # failed, with its reason; pruned and infeasible, so that TPE avoids it
                trial.set_user_attr("error", f"fold {fold}: {err}")
                trial.set_constraint("diverged", 1.0)
                raise optuna.TrialPruned(f"fold {fold}: {err}") from err
            for name in ("recon", "latent", "recon_cond"):
                values[name].append(result.metrics[name])
            values["best_epoch"].append(result.best_epoch)
            for name, fold_values in values.items():  # after every fold, so a pruned trial keeps its folds
                trial.set_user_attr(f"fold_{name}", fold_values)
            if not settings.multi_objective:  # Optuna cannot prune multi-objective trials
                running = sum(values[settings.objectives[0]]) / len(values[settings.objectives[0]])
                trial.report(running, fold)
                if fold + 1 < len(self.folds) and trial.should_prune():  # a finished cross-validation is kept
                    raise optuna.TrialPruned(f"running mean {running:.4g} after fold {fold + 1}")
        means = tuple(sum(values[name]) / len(values[name]) for name in settings.objectives)
        return means if settings.multi_objective else means[0]


def best_text(study: optuna.Study) -> str:
    """The best value so far, as the progress bar shows it."""
    best = best_trial(study)
    return "–" if best is None else f"{best.values[lead_objective(study)]:.4g}"


def _work(settings: SearchSettings, storage_url: str, study_name: str, options: SearchOptions,
          position: int, run_id: str, images=None) -> None:
    """One worker: start trials until the budget is used up or the timeout has passed; Ctrl-C and
    SIGTERM stop it (a ``KeyboardInterrupt``) while it trains or waits, never inside a storage call."""
    interrupts = Interrupts()
    with interrupts.handling():
        _work_handling(settings, storage_url, study_name, options, position, images, interrupts, run_id)


def _work_handling(settings: SearchSettings, storage_url: str, study_name: str, options: SearchOptions,
                   position: int, images, interrupts: Interrupts, run_id: str) -> None:
    from benchmark.data import load_dataset

    # Optuna would log every failed trial with a traceback (Ctrl-C included); the reasons are in
    # the trials' user attributes and the summary, and unexpected errors still propagate.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = open_search_study(settings, storage_url, study_name, options)
    if images is None:  # a worker process without shared memory: the parent has loaded (and downloaded) the data
        images = load_dataset(settings.dataset, options.data_root, limit=settings.limit, seed=settings.seed).train
    bar = progress_bar(options.trials, study_name + (f" w{position}" if options.workers > 1 else ""), "trial",
                       options.show_progress, position)
    objective = _Objective(settings, options, images, bar, interrupts, run_id)
    objective.best = best_text(study)  # a study resumed has one already
    deadline = time.monotonic() + options.timeout if options.timeout else math.inf
    first_look = True
    try:
        while time.monotonic() < deadline:
            interrupts.check()
            fail_stale_trials(study)  # a killed worker's trial becomes FAIL and is queued again
            fail_orphans(study, grace_for(options.heartbeat))
            trials = study.get_trials(deepcopy=False)
            used = min(budget_used(trials), options.trials)
            done = min(settled(trials), options.trials)  # the bar's count: not the trials other workers are running
            objective.eta.progress(objective.eta_key, 0.0)  # no trial in training: the last one is settled now
            objective.eta.settle(str(slot) for slot in range(done))
            # Trials done at this worker's first look (or lost since: a dead worker's) are not in its rate or
            # ETA; later ones go through update(), which is what feeds tqdm's rate.
            if first_look:
                bar.initial = bar.n = done
                first_look = False
            elif done != bar.n:
                bar.initial = min(bar.initial, done)
                bar.update(done - bar.n)
            bar.refresh()
            if used < options.trials:
                try:
                    study.optimize(objective, n_trials=1, catch=(SurplusTrial,))
                    interrupts.check()  # one that came while Optuna stored the trial
                except Exception as err:
                    if objective.interrupted:  # Ctrl-C in a trial that was taken over: still a Ctrl-C
                        raise KeyboardInterrupt from err
                    if not finished_elsewhere(err):
                        raise
                    bar.write(taken_over_message(f"trial #{objective.number}", grace_for(options.heartbeat)),
                              file=sys.stderr)
                objective.best = best_text(study)
                # the last trial's line is stale now
                bar.set_postfix_str(f"ETA {objective.eta} | best {objective.best}", refresh=False)
            elif any(t.state == TrialState.RUNNING for t in trials):
                # Running elsewhere, or on a worker that died: wait to know, and retry its trial if it died.
                with interrupts.immediate(), objective.eta.waiting():
                    time.sleep(min(5, options.heartbeat))
            else:
                break
        # Not the ETA of a trial before; the best, of other workers' trials too
        bar.set_postfix_str(f"best {best_text(study)}", refresh=True)
    finally:
        bar.close()


def _work_in_process(*args: Any) -> None:
    import torch

    torch.set_num_threads(worker_threads(args[3].workers))
    stop_with_parent()
    _work(*args)  # on Ctrl-C, Optuna marks the trial FAIL; the parent reports the interruption


@dataclass
class SearchSummary:
    """Where a search stands after ``run_search``."""

    study_name: str
    storage_url: str
    counts: dict[str, int]  # trials per status of ``benchmark.storage.status_counts`` (failed vs interrupted; surplus)
    best: FrozenTrial | None
    seconds: float
    failed: list[FrozenTrial] = field(default_factory=list)  # failed with a reason: user attribute ``error``
    worker_failures: int = 0  # worker processes that stopped with an error (it is on their stderr)
    workers_killed: list[str] = field(default_factory=list)  # the signals that killed worker processes
    to_go: int = 0  # trials still to finish before the study has --trials (a killed worker's are still RUNNING)


class SearchInterrupted(Interrupted[SearchSummary]):
    """Ctrl-C or SIGTERM during a search, raised once the workers have stopped."""


def new_study_note(name: str, storage_url: str) -> str | None:
    """A note when a search is about to make study ``name`` in ``storage_url`` while the place a search
    of that name goes by default already holds one: a mistyped ``--storage`` would start it over."""
    default = default_storage(name)
    if (storage_url == default or not storage_url.startswith("sqlite:///") or name in study_names(storage_url)
            or name not in study_names(default)):
        return None
    trials = len(optuna.load_study(study_name=name, storage=default).get_trials(deepcopy=False))
    return (f"note: this makes a new study {name!r} in {safe_url(storage_url)}, while "
            f"{default.removeprefix('sqlite:///')} holds a study of that name ({trials} trial{'s' * (trials != 1)}): "
            "if --storage is mistyped, stop with Ctrl-C and give that one")


@optuna_errors_only()
def run_search(settings: SearchSettings, storage_url: str | None = None, study_name: str | None = None,
               options: SearchOptions = SearchOptions()) -> SearchSummary:
    """Run (or continue) a search until its study has ``options.trials`` trials; in
    ``storage_url``, by default the study's own SQLite file (``studies.default_storage``)."""
    from benchmark.data import limit_note, load_dataset, pixel_digest, unused_source_note
    from benchmark.train import agreed_precision, training_device, whole_batch_note

    started = time.perf_counter()
    chosen_progress()  # a mistyped value fails before the study is made, not in each worker's first bar
    name = study_name or settings.default_study_name()
    storage_url = storage_url or default_storage(name)
    # Load the data first: missing dataset files must not leave an empty study behind.
    images = load_dataset(settings.dataset, options.data_root, download=options.download, limit=settings.limit,
                          seed=settings.seed).train
    fold_indices(len(images), settings.folds, settings.seed)  # too few images for the folds: before a study is made
    train_config = settings.train_config(options.device)
    device = training_device(train_config)  # a bad device or precision leaves no study

    elsewhere = new_study_note(name, storage_url)  # before the study is made

    def agreed() -> tuple[str, str | None]:  # trials store the precision they train in (see run_suite)
        kept = (stored_attr(storage_url, name, "settings") or {}).get("precision")
        return agreed_precision(train_config, device, kept, name)

    precision, study, precision_note = opened_as_agreed(
        agreed(), agreed, lambda precision: open_search_study(replace(settings, precision=precision), storage_url, name, options))
    settings = replace(settings, precision=precision)
    pool_note = check_pool(study, len(images), pixel_digest(images),
                           "put the earlier images back, or search these under another --study-name")
    heartbeat = agree_heartbeat(study, options.heartbeat)
    beat_note = heartbeat_note(name, heartbeat, options.heartbeat, "trial")
    options = replace(options, heartbeat=heartbeat)
    # Messages only after every check, so that an error stays the only line.
    for line in (elsewhere, precision_note, pool_note, limit_note(settings.dataset, settings.limit, len(images)),
                 beat_note, unused_source_note(settings.dataset, options.data_root, options.download),
                 crowded_note(options.workers)):
        if line:
            print(line, file=sys.stderr)
    if settings.multi_objective and options.pruner != "none":
        print("note: Optuna cannot prune multi-objective trials; this search runs without a pruner", file=sys.stderr)
    used = budget_used(study.get_trials(deepcopy=False))
    # Nothing to run or to wait for (a RUNNING trial may be a dead worker's, to take over)
    idle = used >= options.trials and not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,
                                                                                   TrialState.WAITING))
    train_images = len(images) - math.ceil(len(images) / settings.folds)  # the smallest training fold
    if not idle and (note := whole_batch_note(settings.batch_size, train_images)):
        print(note, file=sys.stderr)
    note = idle_softadapt_note([BalanceConfig(softadapt=settings.softadapt)], train_images,
                               settings.batch_size, settings.epochs)
    if not idle and note:
        print(note + " (SoftAdapt's own β, softadapt_beta, has no effect on the results)", file=sys.stderr)
    cost = ""
    if device.type == "cpu" and used < options.trials:  # the defaults (100 epochs, all images) are a GPU's work
        if busy := shared_threads_note(training_threads(options.workers)):
            print(busy, file=sys.stderr)
        trial = settings.folds * fold_seconds(settings.family, settings.config, settings.method, settings.dataset,
                                              len(images), settings.folds, settings.epochs)
        to_go = options.trials - used
        cost = f" (est. 2-core CPU: {duration(trial)} a trial, {duration(trial * to_go)} for the {to_go} to go)"
    done = f"{used}/{options.trials} trials" if used <= options.trials else f"{used} trials (--trials {options.trials})"
    print(f"search {name}: {settings.folds}-fold CV per trial, {settings.epochs} epoch{'s' * (settings.epochs != 1)} "
          f"on {settings.dataset}{f' (limit {settings.limit})' if settings.limit else ''}; "
          f"ranges {describe_ranges(settings.ranges)}; "
          f"{done}{cost}; storage {safe_url(storage_url)}", file=sys.stderr)
    worker_failures, killed = 0, []

    def summary() -> SearchSummary:
        trials = study.get_trials()
        return SearchSummary(name, storage_url, status_counts(trials), best_trial(study),
                             time.perf_counter() - started, [t for t in trials if trial_status(t) == "failed"],
                             worker_failures, killed, max(0, options.trials - settled(trials)))

    if idle:  # say so, also with --quiet
        print(f"note: study {name} already has {used} trial{'s' * (used != 1)} that count toward --trials "
              f"{options.trials}; raise "
              "--trials to run more", file=sys.stderr)
        return summary()
    run_id = uuid.uuid4().hex
    try:
        if options.workers == 1:
            _work(settings, storage_url, name, options, 0, run_id, images)
        else:
            shared = shared_with_workers(images)
            processes = run_workers(_work_in_process, [(settings, storage_url, name, options, i, run_id, shared)
                                                       for i in range(options.workers)],
                                    ended=lambda process: release_if_killed(study, process, run_id))
            worker_failures, killed = worker_exits(processes)
    except KeyboardInterrupt:
        raise SearchInterrupted(summary()) from None
    return summary()
