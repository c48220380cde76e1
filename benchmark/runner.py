"""The suite runner: workers claim (configuration, fold) units from the study and train them."""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from benchmark.cv import fold_indices, unit_seed
from benchmark.data import load_dataset
from benchmark.store import (UNIT_PARAM, StoreConfig, enqueue_missing, export, fail_stale_trials, open_suite_study, parse_unit,
                             save_checkpoint, unit_keys, unit_states)
from benchmark.suites import Suite
from benchmark.train import DivergedError, train_fold


@dataclass
class RunSummary:
    done: int
    failed: int
    missing: int
    seconds: float
    results: Path
    errors: dict[str, str] = field(default_factory=dict)


class _Worker:
    """Trains the units it claims; one instance per process."""

    def __init__(self, suite: Suite, store: StoreConfig, position: int = 0, show_progress: bool = True) -> None:
        self.suite, self.store = suite, store
        self.study = open_suite_study(suite, store)
        data = load_dataset(suite.dataset, suite.data_root, limit=suite.limit, seed=suite.seed)
        self.images = data.train
        self.folds = fold_indices(len(self.images), suite.folds, suite.seed, suite.repeats)
        self.keys = unit_keys(suite)
        self.by_id = {c.id: c for c in suite.configurations}
        self.order = [c.id for c in suite.configurations]
        self.bar = tqdm(total=len(self.keys), position=position, unit="unit", dynamic_ncols=True,
                        desc=f"{suite.name}" + (f" w{position}" if position else ""), disable=not show_progress)

    def _claim_is_duplicate(self, trial: optuna.Trial, key: str) -> bool:
        # Concurrent enqueues can queue a unit twice: train it only in the oldest live trial.
        for other in unit_states(self.study).get(key, []):
            if other.number == trial.number:
                continue
            if other.state == TrialState.COMPLETE:
                return True
            if other.state == TrialState.RUNNING and other.number < trial.number:
                return True
        return False

    def objective(self, trial: optuna.Trial) -> float:
        if UNIT_PARAM not in trial.storage.get_trial_system_attrs(trial._trial_id).get("fixed_params", {}):
            raise optuna.TrialPruned("no unit was waiting")  # a racing worker took the last one
        key = trial.suggest_categorical(UNIT_PARAM, self.keys)
        if self._claim_is_duplicate(trial, key):
            raise optuna.TrialPruned(f"unit {key} is already done or running")
        config_id, fold = parse_unit(key)
        configuration = self.by_id[config_id]
        train_idx, val_idx = self.folds[fold]
        trial.set_user_attr("config_id", config_id)
        trial.set_user_attr("fold", fold)
        epochs = self.suite.train.epochs
        index = self.order.index(config_id) + 1

        def on_epoch(epoch: int, row: dict) -> None:
            self.bar.set_postfix_str(f"config {index}/{len(self.order)} {config_id} | fold {fold % self.suite.folds + 1}/"
                                     f"{self.suite.folds} | epoch {epoch}/{epochs} | val recon {row['recon']:.4g} "
                                     f"latent {row['latent']:.4g}", refresh=True)

        on_epoch(0, {"recon": float("nan"), "latent": float("nan")})
        try:
            result = train_fold(configuration, self.images[train_idx], self.images[val_idx], self.suite.train,
                                unit_seed(self.suite.seed, config_id, fold), on_epoch)
        except DivergedError as err:
            trial.set_user_attr("error", str(err))  # a reason marks the FAIL as final, not to retry
            raise
        info = {**configuration.flat(), "fold": fold, "image_shape": list(self.images.shape[1:]),
                "metrics": result.metrics, "dataset": self.suite.dataset}
        trial.set_user_attr("artifact", save_checkpoint(trial, self.store.artifacts(self.suite.name),
                                                        result.state_dict, info))
        trial.set_user_attr("metrics", result.metrics)
        trial.set_user_attr("history", result.history)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("seconds", result.seconds)
        trial.set_user_attr("n_train", len(train_idx))
        trial.set_user_attr("n_val", len(val_idx))
        return result.metrics["recon"]

    def _counts(self) -> tuple[int, int, int]:
        """(settled units, waiting trials, running trials)."""
        states = unit_states(self.study)
        settled = sum(1 for k in self.keys if any(
            t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and "error" in t.user_attrs)
            for t in states.get(k, [])))
        live = [t for ts in states.values() for t in ts]
        return (settled, sum(t.state == TrialState.WAITING for t in live),
                sum(t.state == TrialState.RUNNING for t in live))

    def work(self) -> None:
        """Claim and train units until none is waiting or running anywhere."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        while True:
            fail_stale_trials(self.study)  # a killed worker's unit goes back to the queue
            enqueue_missing(self.study, self.keys)
            settled, waiting, running = self._counts()
            self.bar.n = settled
            self.bar.refresh()
            if waiting:
                self.study.optimize(self.objective, n_trials=1, catch=(DivergedError,))
            elif running:
                time.sleep(min(5, self.store.heartbeat_interval))  # others are busy, or died: wait to know
            else:
                break
        self.bar.close()


def _work_in_process(suite: Suite, store: StoreConfig, position: int, show_progress: bool) -> None:
    _Worker(suite, store, position, show_progress).work()


def run_suite(suite: Suite, store: StoreConfig, workers: int = 1, show_progress: bool = True) -> RunSummary:
    """Train every unit of ``suite`` not yet done, with ``workers`` processes, then export results."""
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    started = time.perf_counter()
    study = open_suite_study(suite, store)
    enqueue_missing(study, unit_keys(suite))
    if workers == 1:
        _Worker(suite, store, 0, show_progress).work()
    else:
        context = multiprocessing.get_context("spawn")
        processes = [context.Process(target=_work_in_process, args=(suite, store, i, show_progress))
                     for i in range(workers)]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
    results, _ = export(study, suite, store)
    return summarise_run(study, suite, results, time.perf_counter() - started)


def summarise_run(study: optuna.Study, suite: Suite, results: Path, seconds: float) -> RunSummary:
    states = unit_states(study)
    done = failed = 0
    errors: dict[str, str] = {}
    for key in unit_keys(suite):
        trials = states.get(key, [])
        if any(t.state == TrialState.COMPLETE for t in trials):
            done += 1
        elif reasons := [t.user_attrs["error"] for t in trials if "error" in t.user_attrs]:
            failed += 1
            errors[key] = reasons[-1]
    return RunSummary(done, failed, suite.units - done - failed, seconds, results, errors)
