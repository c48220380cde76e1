"""The suite runner: workers claim (configuration, fold) units from the study and train them."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import replace

import optuna
import torch
from optuna.trial import TrialState
from tqdm.auto import tqdm

from benchmark.balancing import idle_softadapt_note
from benchmark.checks import check_choice, first_line
from benchmark.cv import fold_indices, fold_label, unit_seed
from benchmark.data import limit_note, load_dataset, pixel_digest
from benchmark.ensemble import stacking_problem, train_folds_together, warm_up
from benchmark.export import (discard_checkpoints, export, export_note, recorded_command,
                              save_checkpoint, sweep_checkpoints)
from benchmark.processes import (Interrupted, Interrupts, busy_load, check_workers, crowded_note, our_load,
                                 run_workers, shared_threads_note, shared_with_workers, stop_with_parent,
                                 training_threads, worker_exits, worker_id, worker_threads)
from benchmark.reuse import take_units
from benchmark.run_status import (RunSummary, configurations_to_train, new_study_line, resume_line, settled_units,
                                  summarise_run, unlisted_note)
from benchmark.storage import (
    METRICS_VERSION,
    StoreConfig,
    agree_heartbeat,
    check_pool,
    fail_orphans,
    fail_stale_trials,
    finished_elsewhere,
    first_written,
    heartbeat_note,
    opened_as_agreed,
    optuna_errors_only,
    release_if_killed,
    stored_attr,
    taken_over_message,
    trial_status,
    versioned,
)
from benchmark.results import go_on_with, read_meta
from benchmark.store import (SEPARATE_RUN, claimable, enqueue_missing, is_settled, open_suite_study, parse_unit,
                             study_name, unit_key, unit_keys, unit_states, unlisted_configurations)
from benchmark.progress import CostEta, chosen_progress, duration, progress_bar
from benchmark.suites import Suite
from benchmark.train import (DivergedError, FoldResult, agreed_precision, device_name, mean_image_recon,
                             resolve_device, train_fold, training_device, whole_batch_note)

# While a run trains, its first worker exports whenever exporting has taken at most this share of the
# time since the last export: a run killed outright (SIGKILL, out of memory) leaves results/
# almost up to date, whatever an export costs (it grows with the suite's history).
EXPORT_SHARE = 0.05
# Seconds of estimated training on a CPU worth a note before a run starts: `full` (65 h), not `quick` (37 min),
# the suite sized for a CPU.
LONG_ON_CPU = 2 * 3600.0


class RunInterrupted(Interrupted[RunSummary]):
    """Ctrl-C or SIGTERM during a run, raised once the finished units are exported."""


def training_pool(suite: Suite) -> torch.Tensor:
    """The images the suite's folds split (the dataset's training split)."""
    return load_dataset(suite.dataset, suite.data_root, download=suite.download, limit=suite.limit,
                        seed=suite.seed).train


class Heartbeats:
    """Keeps the trials that this worker claimed marked alive (see ``fail_stale_trials``, ``fail_orphans``).
    After beats were missed (a machine paused or asleep, a storage out of reach), ``lost`` holds those of the
    trials that another worker took over meanwhile, so that training them can stop."""

    def __init__(self, storage, trial_ids: list[int], interval: int, grace: float) -> None:
        self.storage, self.trial_ids, self.interval, self.grace = storage, trial_ids, interval, grace
        self.lost: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        warned, suspect_until = False, 0.0
        beaten = time.time()  # the wall clock: a sleeping machine's monotonic clock stands still
        while True:
            missed = False
            for trial_id in list(self.trial_ids):  # a copy: the siblings' list shrinks as they are stored
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as err:  # a dropped connection, a locked database: the next beat may get through
                    if not warned:
                        reason = first_line(err)
                        tqdm.write(f"warning: a heartbeat to the study failed ({reason}); training goes on and "
                                   f"beats again every {self.interval} s", file=sys.stderr)
                    warned = missed = True
            now = time.time()
            if not missed:
                if now - beaten > 2 * self.interval:  # beats missed: others may take the trials over, for a grace
                    suspect_until = now + self.grace  # after a stale look at them that came before this beat
                beaten = now
            if now < suspect_until:  # the trials' states are read then only
                with contextlib.suppress(Exception):  # a storage still out of reach: the next round reads again
                    self.lost = [t for t in list(self.trial_ids) if self.storage.get_trial(t).state.is_finished()]
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> Heartbeats:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class _Worker:
    """Trains the units it claims; one instance per process."""

    def __init__(self, suite: Suite, store: StoreConfig, position: int | None = None, show_progress: bool = True,
                 fold_parallel: bool = False, images: torch.Tensor | None = None, command: str | None = None,
                 run_id: str | None = None, ours: int | None = None) -> None:
        """position: the worker's number among a run's ``--workers`` (its progress bar's line and
        name), None for a run's only worker. command: the run's, for the exports it makes (``export``).
        run_id: the run's, recorded with each unit it trains (``summarise_run`` counts them). ours: the
        load the run's workers keep up by themselves (``our_load``), above which a unit records the load."""
        self.suite, self.store, self.fold_parallel, self.command = suite, store, fold_parallel, command
        self.run_id, self.ours = run_id, ours
        # The run's first worker exports while it trains: more would read the whole study as often again.
        self.exports, self.export_failed = position in (None, 0), False
        self.exported, self.export_seconds = time.monotonic(), 0.0
        self.study = open_suite_study(suite, store)[0]
        self.images = training_pool(suite) if images is None else images
        self.folds = fold_indices(len(self.images), suite.folds, suite.seed, suite.repeats)
        self.mean_image_recon: dict[int, float] = {}  # per fold, which every configuration shares
        self.trained_on = {"device": device_name(resolve_device(suite.train.device)), "torch": torch.__version__}
        self.keys = unit_keys(suite)
        self.by_id = {c.id: c for c in suite.configurations}
        self.params_from = dict(suite.params_from)
        self.order = [c.id for c in suite.configurations]
        self.interrupts = Interrupts()
        self.beats: Heartbeats | None = None  # those of the unit in training
        self.warmed = False  # this process has trained a step (``warm_up``)
        seconds = suite.unit_seconds()
        self.eta = CostEta({key: seconds[parse_unit(key)[0]] for key in self.keys})
        self.bar = progress_bar(len(self.keys), suite.name + ("" if position is None else f" w{position}"), "unit",
                                show_progress, position or 0)

    def _claim_is_duplicate(self, trial: optuna.Trial, key: str) -> bool:
        # Concurrent enqueues can queue a unit twice: train it only in the oldest live trial, and not
        # at all when it is done or failed for good. By trial id: concurrent inserts may share a number.
        for other in unit_states(self.study).get(key, []):
            if other._trial_id == trial._trial_id:
                continue
            if trial_status(other) in ("complete", "failed"):
                return True
            if other.state == TrialState.RUNNING and other._trial_id < trial._trial_id:
                return True
        return False

    def objective(self, trial: optuna.Trial, key: str) -> float:
        """Train unit ``key`` in ``trial``, a trial of it this worker claimed."""
        trial.set_user_attr("worker", worker_id())
        if self._claim_is_duplicate(trial, key):
            trial.set_user_attr("surplus", trial.number)  # `studies show` counts it so, not as a pruned unit
            raise optuna.TrialPruned(f"unit {key} is already done, failed for good, or running")
        config_id, fold = parse_unit(key)
        self._label(trial._trial_id, config_id, fold)
        # Now, the unit labelled (a killed worker's is released by it) and not yet told: once it was told,
        # results/ showed a live run's unit in training as WAITING.
        self._export_when_due()
        siblings = self._claim_siblings(config_id, fold) if self.fold_parallel else []
        if siblings:
            return self._train_together(trial, config_id, fold, siblings)
        try:
            with self.interrupts.immediate():
                self._warm_up(config_id, 1)
                result = train_fold(self.by_id[config_id], *self._split(fold), self.suite.train,
                                    unit_seed(self.suite.seed, config_id, fold), self._progress(config_id, fold))
        except DivergedError as err:
            trial.set_user_attr("error", str(err))  # a reason marks the FAIL as final, not to retry
            raise
        except torch.OutOfMemoryError:  # no reason recorded: the unit is queued again
            raise ValueError(f"out of memory training {unit_key(config_id, fold)} on {self.trained_on['device']}: "
                             "give the suite a smaller [train] batch_size, or free the device") from None
        self._record(trial._trial_id, config_id, fold, result)
        return result.metrics["recon"]

    def _warm_up(self, config_id: str, stacked: int) -> None:
        """Once per process, before the clock of its first unit starts (not inside it): ``warm_up`` as that
        unit trains, alone or as an ensemble of ``stacked`` folds."""
        if not self.warmed:
            warm_up(self.by_id[config_id], self.images, self.suite.train, stacked)
            self.warmed = True

    def _split(self, fold: int) -> tuple:
        train_idx, val_idx = self.folds[fold]
        return self.images[train_idx], self.images[val_idx]

    def _mean_image_recon(self, fold: int) -> float:
        if fold not in self.mean_image_recon:
            self.mean_image_recon[fold] = mean_image_recon(*self._split(fold))
        return self.mean_image_recon[fold]

    def _progress(self, config_id: str, fold: int):
        index, epochs = self.order.index(config_id) + 1, self.suite.train.epochs
        fold_text = fold_label(fold, self.suite.folds, self.suite.repeats)

        def on_epoch(epoch: int, row: dict | None) -> None:
            self.interrupts.check()  # one that fell into a callback that swallows exceptions
            if self.beats is not None and self.beats.lost:  # its result would be discarded: stop now
                raise optuna.exceptions.UpdateFinishedTrialError(f"trial {self.beats.lost[0]} was taken over")
            losses = f" | val recon {row['recon']:.4g} latent {row['latent']:.4g}" if row else ""
            self.eta.progress(unit_key(config_id, fold), epoch / epochs)
            self.bar.set_postfix_str(f"ETA {self.eta} | config {index}/{len(self.order)} {config_id} | {fold_text} "
                                     f"| epoch {epoch}/{epochs}{losses}", refresh=True)

        on_epoch(0, None)  # the unit has started; no validation yet
        return on_epoch

    def _record(self, trial_id: int, config_id: str, fold: int, result: FoldResult, stacked: int = 1) -> None:
        """Store a finished unit's metrics, history and best-epoch weights with its trial; ``stacked``:
        the folds trained with it as one ensemble (1: alone), whose time its ``seconds`` is."""
        storage = self.study._storage
        info = {**self.by_id[config_id].flat(), "fold": fold, "image_shape": list(self.images.shape[1:]),
                "metrics": result.metrics, "dataset": self.suite.dataset}
        folder = self.store.artifacts(self.suite.name)
        artifact = save_checkpoint(self.study, trial_id, folder, result.state_dict, info)
        for name, value in {"artifact": artifact, "artifact_dir": str(folder.absolute()), "metrics": result.metrics,
                            "history": result.history, "best_epoch": result.best_epoch, "seconds": result.seconds,
                            "busy_load": busy_load(ours=self.ours), "n_train": result.n_train, "n_val": result.n_val,
                            "recon_mean_image": self._mean_image_recon(fold), "stacked": stacked, "run": self.run_id,
                            **self.trained_on}.items():
            storage.set_trial_user_attr(trial_id, name, value)

    def _label(self, trial_id: int, config_id: str, fold: int) -> None:
        """Mark a claimed trial with its unit, the metrics version that trains it and where its parameters came
        from."""
        storage = self.study._storage
        storage.set_trial_user_attr(trial_id, "config_id", config_id)
        storage.set_trial_user_attr(trial_id, "fold", fold)
        # Done or failed for good, a unit is this version's: a study shared with later files tells it from older ones.
        storage.set_trial_user_attr(trial_id, "metrics_version", METRICS_VERSION)
        storage.set_trial_user_attr(trial_id, "run", self.run_id)  # with ``worker``, whose trials a killed one left
        if config_id in self.params_from:
            storage.set_trial_user_attr(trial_id, "params_from", self.params_from[config_id])

    def _claim_siblings(self, config_id: str, fold: int) -> list[tuple[int, int]]:
        """Claim the waiting folds of the same configuration that can be stacked with ``fold``.

        A WAITING → RUNNING state change is atomic in the storage (``ClaimingStorage``), so
        two workers never claim the same trial; claimed trials get heartbeats like any running trial.
        """
        size = len(self.folds[fold][0])
        storage, claimed = self.study._storage, []
        for key, trials in unit_states(self.study).items():
            other_id, other_fold = parse_unit(key)
            if other_id != config_id or other_fold == fold or len(self.folds[other_fold][0]) != size:
                continue
            waiting = claimable(trials)
            if waiting is not None and storage.set_trial_state_values(waiting._trial_id, TrialState.RUNNING):
                storage.set_trial_user_attr(waiting._trial_id, "worker", worker_id())
                self._label(waiting._trial_id, config_id, other_fold)
                claimed.append((waiting._trial_id, other_fold))
        return claimed

    def _claim_next(self, states: dict[str, list[optuna.trial.FrozenTrial]]) -> tuple[int, str] | None:
        """Claim the oldest waiting trial of the first unit in suite order, as ``states``
        (``unit_states``) last saw them; (its id, its unit), or None if none is left.

        Optuna's ``optimize`` would take the oldest waiting trial, and a unit queued again after
        an interruption would wait behind the whole suite, its configuration a fold short until then.
        """
        storage = self.study._storage
        waiting = ((t._trial_id, key) for key in self.keys for t in states.get(key, [])
                   if t.state == TrialState.WAITING)
        return next((claim for claim in waiting if storage.set_trial_state_values(claim[0], TrialState.RUNNING)), None)

    def _train_claimed(self, trial_id: int, key: str) -> None:
        """Run ``objective`` on a trial of unit ``key`` this worker claimed, and tell the study how it ended."""
        trial = optuna.Trial(self.study, trial_id)
        self.beats = Heartbeats(self.study._storage, [trial_id], self.store.heartbeat_interval,
                                self.store.grace_period)
        try:
            with self.beats:
                try:
                    value = self.objective(trial, key)
                except optuna.TrialPruned:
                    self.study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
                    return
                except DivergedError:  # its reason is recorded: the unit stays failed
                    self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                    return
                except BaseException:  # Ctrl-C, or an error that `work` reports: the unit is queued again
                    self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                    discard_checkpoints(self.study._storage, trial_id, self.store.artifacts(self.suite.name))
                    raise
        finally:
            self.beats = None
        self.study.tell(trial, value)

    def _train_together(self, trial: optuna.Trial, config_id: str, fold: int, siblings: list[tuple[int, int]]) -> float:
        """Train ``fold`` and the claimed sibling folds as one vectorised ensemble."""
        folds = [fold] + [f for _, f in siblings]
        storage = self.study._storage
        progress = {i: self._progress(config_id, f) for i, f in enumerate(folds)}
        unsettled = [trial_id for trial_id, _ in siblings]
        # The siblings beat until each is stored (an upload to a busy storage can take a while).
        with Heartbeats(storage, unsettled, self.store.heartbeat_interval, self.store.grace_period):
            try:
                with self.interrupts.immediate():
                    self._warm_up(config_id, len(folds))  # its siblings beat meanwhile
                    results = train_folds_together(self.by_id[config_id], self.images, [self.folds[f] for f in folds],
                                                   self.suite.train,
                                                   [unit_seed(self.suite.seed, config_id, f) for f in folds],
                                                   lambda i, epoch, row: progress[i](epoch, row))
                for (trial_id, other_fold), result in zip(siblings, results[1:]):
                    try:
                        if isinstance(result, DivergedError):
                            storage.set_trial_user_attr(trial_id, "error", str(result))
                            storage.set_trial_state_values(trial_id, TrialState.FAIL)
                        else:
                            self._record(trial_id, config_id, other_fold, result, len(folds))
                            storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [result.metrics["recon"]])
                    except optuna.exceptions.UpdateFinishedTrialError:
                        discard_checkpoints(storage, trial_id, self.store.artifacts(self.suite.name))
                        self._taken_over(unit_key(config_id, other_fold))
                    unsettled.remove(trial_id)
                    self.bar.update()
            except BaseException as err:
                # Ctrl-C, SIGTERM or an error: the siblings not stored go back to the queue now (FAIL with
                # no reason), not after a grace period without heartbeats that keeps a resume waiting.
                for trial_id in unsettled:
                    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                        storage.set_trial_state_values(trial_id, TrialState.FAIL)
                    discard_checkpoints(storage, trial_id, self.store.artifacts(self.suite.name))
                if isinstance(err, torch.OutOfMemoryError):
                    raise ValueError(f"out of memory training the {len(folds)} folds of {config_id} stacked on "
                                     f"{self.trained_on['device']}: use --fold-parallel off") from None
                raise
        if isinstance(results[0], DivergedError):
            trial.set_user_attr("error", str(results[0]))
            raise results[0]
        self._record(trial._trial_id, config_id, fold, results[0], len(folds))
        return results[0].metrics["recon"]

    def _export_when_due(self) -> None:
        """Export the study's units (``EXPORT_SHARE``). The run exports once more when it ends, and
        says so if that fails too: an export that fails here warns once, and training goes on."""
        if not self.exports or self.export_seconds > EXPORT_SHARE * (time.monotonic() - self.exported):
            return
        started = time.monotonic()
        try:
            export(self.study, self.suite, self.store, tuple(self.images.shape[1:]), self.command)
        except Exception as err:  # a full disk, a file held open elsewhere: the units are safe in the study
            if not self.export_failed:
                self.bar.write(f"warning: exporting the results failed ({err}); training goes on, and the run "
                               "exports them again when it ends", file=sys.stderr)
            self.export_failed = True
        self.exported = time.monotonic()
        self.export_seconds = self.exported - started

    def _taken_over(self, key: str) -> None:
        self.bar.write(taken_over_message(f"unit {key}", self.store.grace_period), file=sys.stderr)

    def _counts(self, states: dict[str, list[optuna.trial.FrozenTrial]]) -> tuple[int, int, int]:
        """(settled units, waiting trials, running trials) in ``states`` (``unit_states``); tells
        the ETA which units are settled."""
        settled = settled_keys(self.keys, states)
        self.eta.settle(settled)
        # This run's units only: the study may hold units of configurations this suite does not
        # list (another version of its file), which this run cannot claim and must not wait for.
        live = [t for k in self.keys for t in states.get(k, [])]
        return (len(settled), sum(t.state == TrialState.WAITING for t in live),
                sum(t.state == TrialState.RUNNING for t in live))

    def work(self) -> None:
        """Claim and train units until none is waiting or running anywhere."""
        try:
            while True:
                self.interrupts.check()
                fail_stale_trials(self.study)  # a killed worker's unit goes back to the queue
                fail_orphans(self.study, self.store.grace_period)
                enqueue_missing(self.study, self.keys)
                states = unit_states(self.study)
                settled, waiting, running = self._counts(states)
                self.bar.n = settled
                self.bar.refresh()
                if waiting and (claim := self._claim_next(states)) is not None:
                    try:
                        self._train_claimed(*claim)
                    except Exception as err:
                        if not finished_elsewhere(err):
                            raise
                        self._taken_over(claim[1])
                elif waiting:
                    continue  # other workers claimed them since the count: count again
                elif running:
                    self.bar.set_postfix_str(
                        f"waiting for {running} unit{'s' * (running != 1)} that other workers train (this run's or "
                        f"another's); one whose worker died is taken up again after {self.store.grace_period} s "
                        "without a heartbeat", refresh=True)
                    # Others are busy, or died: look again soon, so that the run ends within a second of
                    # its last unit (one query of the study per second and waiting worker, at the tail only).
                    with self.eta.waiting(), self.interrupts.immediate():
                        time.sleep(1)
                else:
                    self.bar.set_postfix_str("no unit left to train", refresh=True)  # not a stale "waiting for"
                    break
        finally:
            self.bar.close()  # also on Ctrl-C: the next message starts on a line of its own


def settled_keys(keys: list[str], states: dict[str, list[optuna.trial.FrozenTrial]]) -> list[str]:
    """The units of ``keys`` done, or failed for good, in ``states`` (``unit_states``)."""
    return [k for k in keys if is_settled(states.get(k, []))]


def refused_run_advice(name: str, store: StoreConfig, command: str | None, differing: list[str]) -> str:
    """What a run refused for the ``differing`` settings of its study can do: go on with the command
    the study's run recorded, or, when that is this very command, know that the suite changed since.
    A study of another version of mtvae-bench goes on with no command."""
    recorded = None if "metrics_version" in differing else recorded_command(name, store)
    if recorded and recorded != command:
        first = f"{go_on_with(recorded)}; "
    elif recorded:
        first = ("it recorded this very command, so the suite has changed since (its file edited, or the built-in "
                 "suite in another version of mtvae-bench); ")
    else:
        first = ""
    return first + SEPARATE_RUN


def stacked_on_cpu_note(together: bool, device: torch.device) -> str | None:
    """``--fold-parallel on`` on a CPU: the same numbers, but its stacked kernels train slower than one fold at a
    time (``auto`` stacks on CUDA only), which a user who asked for it is told before it starts."""
    if not together or device.type != "cpu":
        return None
    return ("note: --fold-parallel on stacks folds on a CPU, where they train slower than one by one (`python -m "
            "benchmark bench --ensemble 5` measures it here); --workers uses spare cores")


def long_on_cpu_note(suite: Suite, states: dict[str, list[optuna.trial.FrozenTrial]],
                     device: torch.device) -> str | None:
    """On a CPU, a run whose units left take over ``LONG_ON_CPU`` by ``suites``' estimate says so
    before it starts, not hours into it."""
    if device.type != "cpu":
        return None
    keys = unit_keys(suite)
    settled = set(settled_keys(keys, states))
    left = [key for key in keys if key not in settled]
    total = suite.cpu_seconds(parse_unit(key)[0] for key in left)
    if total <= LONG_ON_CPU:
        return None
    return (f"note: the {len(left)} units left to train take about {duration(total)} on a 2-core CPU (`suites`' "
            "estimate); a GPU trains them many times faster")


def _command_to_record(study: optuna.Study, suite: Suite, store: StoreConfig, command: str | None,
                       settled_before: int) -> str | None:
    """The command a run's export records: its own, but where it settled no unit (all were done) and the
    export on record is of the same settings, that export's, which trained them."""
    done, errors = settled_units(unit_states(study), suite)
    earlier = read_meta(store.results_dir, suite.name)
    same = {**versioned(suite.settings()), "data_root": suite.data_root}
    if done + len(errors) > settled_before or any(earlier.get(key) != value for key, value in same.items()):
        return command
    return recorded_command(suite.name, store) or command


def _work_until_interrupted(worker: _Worker) -> None:
    """``worker.work()`` with Ctrl-C, and SIGTERM (``timeout``, Slurm, systemd), handled by
    ``worker.interrupts``."""
    with worker.interrupts.handling():
        worker.work()


def _work_in_process(suite: Suite, store: StoreConfig, position: int, show_progress: bool,
                     fold_parallel: bool, threads: int, command: str | None, run_id: str, ours: int,
                     images: torch.Tensor | None) -> None:
    torch.set_num_threads(threads)  # share the cores: N workers × all cores each would thrash
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    worker = _Worker(suite, store, position, show_progress, fold_parallel, images, command, run_id, ours)
    stop_with_parent()
    _work_until_interrupted(worker)  # Ctrl-C reaches every worker; the parent exports and says so, once


def _with_agreed_precision(suite: Suite, store: StoreConfig, device: torch.device,
                           fold_parallel: str) -> tuple[Suite, str | None]:
    """``suite`` with the precision its folds train in, which the study stores instead of "auto"
    (``agreed_precision``: a CPU worker joining a GPU's study trains in bf16 too, or is refused,
    instead of adding float32 folds to bf16 ones), and the note when that is the study's."""
    kept = (stored_attr(store.url(suite.name), study_name(suite), "settings") or {}).get("precision")
    precision, note = agreed_precision(suite.train, device, kept, study_name(suite))
    problem = stacking_problem(replace(suite.train, precision=precision), device) if fold_parallel == "on" else None
    if problem:
        raise ValueError(f"{problem}; use --fold-parallel off" + ("" if note else ", or --precision fp32"))
    return suite.override(precision=precision), note


@optuna_errors_only()
def run_suite(suite: Suite, store: StoreConfig, workers: int = 1, show_progress: bool = True,
              fold_parallel: str = "auto", notes: Iterable[str] = (), command: str | None = None) -> RunSummary:
    """Train every unit of ``suite`` not yet done, with ``workers`` processes, then export results.

    fold_parallel: ``on`` trains the waiting folds of a configuration together as one
    vectorised ensemble, ``off`` one by one, ``auto`` together on CUDA only (on a CPU the
    stacked kernels are not faster; spare cores are better used by ``workers``).
    notes: the caller's lines for stderr, printed with the run's own once every check has passed.
    command: the command line that started the run, kept in the study (its first run's) and in
    ``<suite>_meta.json`` (this run's, which exported the results there): a run filed under a
    name of its own resumes only with its options.
    """
    check_workers(workers)
    check_choice("fold-parallel mode", fold_parallel, ("auto", "on", "off"))
    chosen_progress()  # a mistyped value fails before the study is touched, not in each worker's first bar
    suite.check_pixel_counts()  # e.g. a pixel count k larger than the images have, before they load
    device = training_device(suite.train)  # a bad device or precision is reported before the study is touched
    asked = suite
    agreed = _with_agreed_precision(asked, store, device, fold_parallel)  # and one the study refuses, before data loads
    together = fold_parallel == "on" or (fold_parallel == "auto" and device.type == "cuda")
    started = time.perf_counter()
    images = training_pool(suite)  # a missing dataset is reported before the study is touched
    folds = fold_indices(len(images), suite.folds, suite.seed, suite.repeats)
    store.check_folders(suite.name)
    # made: new where this run stored its settings, not where it has no finished unit (an interrupted first run's)
    suite, (study, made), precision_note = opened_as_agreed(
        agreed, lambda: _with_agreed_precision(asked, store, device, fold_parallel),
        lambda chosen: open_suite_study(chosen, store,
                                        lambda differing: refused_run_advice(chosen.name, store, command, differing)))
    digest = pixel_digest(images)
    pool_note = check_pool(study, len(images), digest,
                           "put the earlier images back, or run these under a --name of its own")
    heartbeat = agree_heartbeat(study, store.heartbeat_interval)
    if command:
        first_written(study, "command", command)
    beat_note = heartbeat_note(study.study_name, heartbeat, store.heartbeat_interval)
    store = replace(store, heartbeat_interval=heartbeat)
    print(suite.headline(), file=sys.stderr)  # after every check: an error stays the only line
    unlisted = unlisted_configurations(study, suite)
    results = store.results_dir / f"{suite.name}.csv"
    for line in (*notes, precision_note, pool_note, limit_note(suite.dataset, suite.limit, len(images)), beat_note,
                 export_note(suite, store), made and new_study_line(study, store.url(suite.name), results),
                 resume_line(study, suite, store.grace_period),
                 unlisted_note(study, unlisted, results)):
        if line:
            print(line, file=sys.stderr)
    enqueue_missing(study, unit_keys(suite))
    if taken := take_units(study, suite, store, len(images), digest):
        print(taken, file=sys.stderr)
    # No more workers than units to train (waiting, or running: elsewhere, or a killed run's, to take
    # up again): each spare one would load torch and the data to find none.
    states = unit_states(study)
    to_train = configurations_to_train(states, suite)  # not those done before, or taken: no note on them
    smallest = min(len(t) for t, _ in folds)  # a fold's training images
    batch = whole_batch_note(suite.train.batch_size, smallest) if to_train else None
    note = idle_softadapt_note((c.balance for c in suite.configurations if c.id in to_train),
                               smallest, suite.train.batch_size, suite.train.epochs)
    done_before, failed = settled_units(states, suite)
    left = suite.units - done_before - len(failed)
    asked, workers, trains_on_cpu = workers, max(1, min(workers, left)), left > 0 and device.type == "cpu"
    fewer = (f"note: {workers} worker process{'es' * (workers > 1)}, not {asked}: the suite has {left} "
             f"unit{'s' * (left > 1)} left to train" if 0 < left < asked else None)
    for line in (batch, note, fewer, crowded_note(workers), long_on_cpu_note(suite, states, device),
                 stacked_on_cpu_note(together, device),
                 trains_on_cpu and shared_threads_note(training_threads(workers))):
        if line:
            print(line, file=sys.stderr)
    failures, killed, run_id, ours = 0, [], uuid.uuid4().hex, our_load(workers)
    try:
        if workers == 1:
            _work_until_interrupted(_Worker(suite, store, None, show_progress, together, images, command, run_id,
                                            ours))
        else:
            threads, shared = worker_threads(workers), shared_with_workers(images)
            failures, killed = worker_exits(run_workers(_work_in_process, [
                (suite, store, i, show_progress, together, threads, command, run_id, ours, shared)
                for i in range(workers)], ended=lambda process: release_if_killed(study, process, run_id)))
    except KeyboardInterrupt:
        interrupted = True
    else:
        interrupted = False
    finally:  # also when interrupted: the units finished so far are exported and can be reported
        results, _ = export(study, suite, store, image_shape=tuple(images.shape[1:]),
                            command=_command_to_record(study, suite, store, command, done_before + len(failed)))
    if not interrupted:  # its units settled: what killed workers left behind can go
        try:
            sweep_checkpoints(study, store.artifacts(suite.name))
        except Exception as err:  # a storage gone, a folder not writable: only space is lost
            print(f"warning: removing the checkpoint files that no unit reads failed ({first_line(err)})",
                  file=sys.stderr)
    summary = summarise_run(study, suite, results, time.perf_counter() - started, run_id)
    now = unlisted_configurations(study, suite)
    if set(now) - set(unlisted):  # another file's run added units meanwhile
        print(unlisted_note(study, now, results), file=sys.stderr)
    summary = replace(summary, workers=workers, worker_failures=failures, workers_killed=killed)
    if interrupted:
        raise RunInterrupted(summary)
    return summary
