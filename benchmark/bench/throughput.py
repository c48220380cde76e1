"""Training throughput: our training path against a naive reference loop, and against the matmul peak.

For every selected model family/config and method this measures

* ``ours``: images per second of the product's own training path, :func:`benchmark.train.train_fold`
  (data on the device as one tensor batched by index, masks for the whole batch in one call,
  one host sync per epoch; on the CPU, channels-last, the convolutions oneDNN runs slowly
  as matrix products (``benchmark.models.cpu_convs``) and glibc keeping freed
  memory (``benchmark.memory``)). One untimed ``train_fold`` call of ``warmup`` steps comes first;
  the timed call trains one epoch of ``steps`` batches on ``steps × batch`` images, and its
  per-fold fixed costs (building the model, one validation pass over a tiny 32-image
  validation set, one copy of the best weights) are included: they are part of the path
  and cost about 0.5-2.5 % of the timed region at the default 20 steps (measured on CPU).
* ``naive``: the same model (same seed, same initial weights), AdamW(lr=1e-3), the same number
  of steps, written the plainest way: a ``DataLoader`` over a ``TensorDataset``
  (shuffle, default collation), a Python loop over the batch building each image's mask
  with numpy, default layouts and layers, no autocast, ``loss.item()`` every step, run in a
  fresh Python process of its own with torch's default threads, as a user's script would be.
* FLOPs per training image (forward + backward, ``torch.utils.flop_counter.FlopCounterMode`` over
  one training step divided by the batch size: convolutions and matrix products only), the
  achieved FLOP/s of ``ours`` and its fraction of the machine's dense-matmul peak, which is
  measured in the same run: the best of several dense products, float32 and bfloat16, through
  ``torch.mm``, on CPU through a 1x1 convolution (oneDNN, the library the models' convolutions
  use: on AVX-512 AMD CPUs MKL's ``torch.mm`` reaches only about half of it) and through a 3x3
  convolution, an implicit GEMM that some libraries block better than any square product.
  On CUDA that convolution runs in TF32 (cuDNN's default), as the models' convolutions do, so
  the "float32" peak there is the TF32 convolution rate when that is the fastest route.

>>> result = run_bench(families=["vae:1"], methods=["baseline"], steps=5, warmup=1)  # doctest: +SKIP
>>> print(format_table(result))                                                       # doctest: +SKIP
"""

from __future__ import annotations

import math
import multiprocessing
import multiprocessing.pool
import os
import queue
import signal
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from benchmark.balancing import LossBalancer
from benchmark.bench.naive import naive_train, plain_process
from benchmark.bench.peak import MatmulPeak, _sync, default_peak_size, measure_matmul_peak, training_flops
from benchmark.checks import check_choice, first_line
from benchmark.config import Configuration, MethodConfig, TrainConfig
from benchmark.files import write_whole
from benchmark.models import METHODS, MODEL_CONFIGS
from benchmark.processes import (heed_ctrl_c, heeds_ctrl_c, interrupts_ignored, signal_name, start_shielded,
                                 stop_with_parent, terminate_as_interrupt, usable_cores, worker_threads)
from benchmark.tables import text_table
from benchmark.train import device_name, new_model, resolve_device, train_fold, training_device

if TYPE_CHECKING:  # folds imports this module; write_csv only names its row type
    from benchmark.bench.folds import EnsembleRow

# The conditioning each method is benchmarked with: the thesis grid's uniform sampler (the
# costlier of its samplers: a top-k of random keys per image), fixed loss weights.
BENCH_SAMPLING = {"baseline": None, "multidecoder": "uniform", "single": "uniform"}
BENCH_EXPONENT = 40.0  # the single decoder's power-law exponent (the thesis's)
VAL_IMAGES = 32        # the timed train_fold's validation set: tiny, so it does not distort the timing
FEW_STEPS = 10  # below it a fold's fixed costs pass about 5 % of our loop's timed region (2.5 % at 20 steps on CPU)
THROUGHPUT_CSV, ENSEMBLE_CSV = "throughput.csv", "ensemble.csv"  # the files `bench` writes into --out


class BenchArgumentError(ValueError):
    """A refused argument of ``run_bench`` or ``run_ensemble_bench``, its message beginning with the
    argument's name: the CLI says it of the flag of that name, and no other error it meets in the timings."""


class BenchWorkerError(ValueError):
    """A process of ``ours_parallel`` failed or was killed; the message is one line (the CLI's
    ``error:`` line, as for a run's out-of-memory)."""


@dataclass(frozen=True)
class BenchRow:
    family: str
    config: int
    method: str
    sampling: str
    device: str
    precision: str              # of ours as trained, fp32 or bf16 (auto resolved); naive is float32
    workers: int                # processes of ours training at once (naive: always one)
    params: int
    steps: int
    batch: int
    flops_per_image: float
    ours_img_s: float
    naive_img_s: float          # nan when the naive loop was skipped
    speedup: float              # ours / naive
    gflop_s: float              # achieved by ours
    pct_peak_fp32: float        # gflop_s as a percentage of the float32 matmul peak
    pct_peak_bf16: float
    naive_pct_peak_fp32: float  # the naive loop's FLOP/s as a percentage of the float32 peak: what is left to gain
    ours_seconds: float
    naive_seconds: float
    peak_gflop_s_fp32: float
    peak_gflop_s_bf16: float
    peak_matmul_size: int
    load_avg: float             # the machine's last-minute load once timed: well above its cores, figures run low


@dataclass(frozen=True)
class BenchResult:
    rows: list[BenchRow]
    peak: MatmulPeak
    settings: dict


# ---------------------------------------------------------------------------------------------
# Selection

def parse_models(families: Iterable[str] | None) -> list[tuple[str, int]]:
    """``["vae", "vq-vae:2"]`` → [("vae", 1), ("vae", 2), ("vq-vae", 2)]; None → every config."""
    if not families:
        return [(family, config) for family, configs in MODEL_CONFIGS.items() for config in configs]
    models: list[tuple[str, int]] = []
    for spec in families:
        family, _, config = spec.partition(":")
        check_choice("model family", family, MODEL_CONFIGS, " (optionally FAMILY:CONFIG, e.g. vq-vae:2)")
        if config:
            check_choice(f"{family} config", int(config) if config.isdigit() else config, MODEL_CONFIGS[family])
            chosen = [int(config)]
        else:
            chosen = list(MODEL_CONFIGS[family])
        models += [(family, c) for c in chosen if (family, c) not in models]
    return models


def parse_methods(methods: Iterable[str] | None) -> list[str]:
    if not methods:
        return list(METHODS)
    chosen: list[str] = []
    for method in methods:
        check_choice("method", method, METHODS)
        if method not in chosen:
            chosen.append(method)
    return chosen


def _check_count(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BenchArgumentError(f"{name} must be an integer >= {minimum}, got {value!r}")


def bench_configuration(family: str, config: int, method: str) -> Configuration:
    """The configuration benchmarked for (family, config, method): the family's default fixed loss weights."""
    sampling = BENCH_SAMPLING[method]
    exponent = BENCH_EXPONENT if method == "single" else None
    return Configuration(family, config, MethodConfig(method, sampling, exponent=exponent))


# ---------------------------------------------------------------------------------------------
# Measurements

def _timed_fold(configuration: Configuration, images: torch.Tensor, steps: int, warmup: int, batch: int,
                config: TrainConfig, seed: int, ready: Callable[[], None] | None = None) -> tuple[float, float]:
    """(start, end) on the monotonic clock of one ``train_fold`` epoch of ``steps`` batches, after an
    untimed ``warmup``-step call and ``ready()``; that clock is the system's, comparable across processes."""
    device = resolve_device(config.device)
    val = images[:VAL_IMAGES]
    if warmup:
        train_fold(configuration, images[:warmup * batch], val, config, seed)
    if ready is not None:
        ready()
    _sync(device)
    started = time.monotonic()
    train_fold(configuration, images[:steps * batch], val, config, seed)
    _sync(device)
    return started, time.monotonic()


def ours_train(configuration: Configuration, images: torch.Tensor, steps: int, warmup: int, batch: int,
               device: torch.device, seed: int = 0, precision: str = "auto") -> float:
    """Seconds for one ``train_fold`` epoch of ``steps`` batches (after an untimed ``warmup``-step call)."""
    config = TrainConfig(epochs=1, batch_size=batch, device=str(device), precision=precision)
    started, ended = _timed_fold(configuration, images, steps, warmup, batch, config, seed)
    return ended - started


def _worker_train(index: int, configuration: Configuration, images: torch.Tensor, steps: int, warmup: int,
                  batch: int, seed: int, precision: str, threads: int, parent_heeds: bool, barrier, spans) -> None:
    """Process ``index`` of ``ours_parallel``: warm up, wait for the others, time one fold. It puts on
    ``spans`` its index with its (start, end), its error's first line (a bug's traceback printed first),
    or None after Ctrl-C, which ends it without a traceback. ``parent_heeds``: Ctrl-C (``heeds_ctrl_c``)."""
    heed_ctrl_c(parent_heeds)
    stop_with_parent()  # a bench ended by kill -9 left its workers training for minutes
    try:
        torch.set_num_threads(threads)
        config = TrainConfig(epochs=1, batch_size=batch, device="cpu", precision=precision)
        spans.put((index, _timed_fold(configuration, images, steps, warmup, batch, config, seed + index,
                                      barrier.wait)))
    except KeyboardInterrupt:  # the parent stops too: a timing needs every worker
        spans.put((index, None))
    except Exception as err:
        if not isinstance(err, ValueError):  # not a refused value: a bug, whose traceback stays
            traceback.print_exc()
        name, line = type(err).__name__, first_line(err)
        spans.put((index, name if line == name else f"{name}: {line}"))


def _ended(exitcode: int) -> str:
    if exitcode > 0:  # before its own code ran (spawn's start-up), which printed why
        return f"a benchmark worker process exited with code {exitcode}"
    return (f"a benchmark worker process was ended by {signal_name(-exitcode)}"
            + (" (out of memory?)" if exitcode == -signal.SIGKILL else ""))


def ours_parallel(configuration: Configuration, images: torch.Tensor, steps: int, warmup: int, batch: int,
                  workers: int, seed: int = 0, precision: str = "auto") -> float:
    """Seconds for ``workers`` CPU processes, each with its share of the cores, to train one
    ``train_fold`` epoch of ``steps`` batches each, all at once: what ``run --workers`` does.
    ``BenchWorkerError`` when one fails, KeyboardInterrupt when one is interrupted (or this process
    gets SIGTERM); the others are then killed (they keep nothing)."""
    context = multiprocessing.get_context("spawn")
    threads = worker_threads(workers)  # as `run --workers` shares them
    barrier, spans = context.Barrier(workers), context.Queue()
    processes = [context.Process(target=_worker_train, args=(i, configuration, images, steps, warmup, batch, seed,
                                                             precision, threads, heeds_ctrl_c(), barrier, spans))
                 for i in range(workers)]
    times: dict[int, tuple[float, float]] = {}
    with terminate_as_interrupt():
        try:
            start_shielded(processes)
            while len(times) < workers:
                try:
                    index, span = spans.get(timeout=1)
                except queue.Empty:  # one that gave its timing may end as it likes (killed as it exits)
                    exitcodes = [p.exitcode for i, p in enumerate(processes) if i not in times]
                    if failed := [code for code in exitcodes if code]:
                        raise BenchWorkerError(_ended(failed[0])) from None
                    if None not in exitcodes and spans.empty():  # all gone, what they put read
                        raise BenchWorkerError("a benchmark worker process ended without its timing") from None
                    continue
                if span is None:
                    raise KeyboardInterrupt
                if isinstance(span, str):
                    raise BenchWorkerError(f"a benchmark worker process failed: {span}")
                times[index] = span
        finally:
            with interrupts_ignored():  # a second SIGTERM here would leave a worker waiting at the barrier
                for process in processes:
                    if process.is_alive():
                        process.kill()  # a failure's siblings would wait at the barrier for ever
                    if process.pid is not None:
                        process.join()
    return max(end for _, end in times.values()) - min(start for start, _ in times.values())


def _tiled(images: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` images: the dataset repeated as often as needed."""
    if len(images) >= count:
        return images[:count].contiguous()
    return images[torch.arange(count) % len(images)].contiguous()


def bench_one(configuration: Configuration, images: torch.Tensor, steps: int, warmup: int, batch: int,
              device: torch.device, peak: MatmulPeak, naive: multiprocessing.pool.Pool | None = None, seed: int = 0,
              repeats: int = 1, precision: str = "auto", workers: int = 1) -> BenchRow:
    """One row: FLOPs per image, ours and (when given ``naive``, the process to run it in, see
    ``plain_process``) naive images/s (best of ``repeats``), achieved FLOP/s.

    With ``workers`` > 1 (CPU), ours is that many processes training at once, as ``run --workers``.
    """
    channels, size = images.shape[1], images.shape[-1]
    images = _tiled(images, max(steps, warmup) * batch)
    model = new_model(configuration, seed, channels, size, device)
    params = sum(p.numel() for p in model.parameters())
    sampler = configuration.method.sampler(size)
    x = images[:batch].to(device)
    mask = sampler.sample(batch, torch.Generator(device=device).manual_seed(seed), device) if sampler else None
    balancer = LossBalancer(configuration.balance, model.loss_terms)
    flops = training_flops(model, x, mask, lambda output: balancer.combine(output.terms)) / batch
    del model

    ours_s = naive_s = math.inf
    for repeat in range(repeats):  # alternate the two loops, keep the best of each (load noise only slows)
        if workers > 1:
            ours_s = min(ours_s, ours_parallel(configuration, images, steps, warmup, batch, workers, seed, precision))
        else:
            ours_s = min(ours_s, ours_train(configuration, images, steps, warmup if repeat == 0 else 0, batch,
                                            device, seed, precision))
        if naive is not None:
            # As a numpy array: pickling a large tensor shares its storage with a parallel copy run
            # from the pool's task thread, which gives that thread an OpenMP team of its own;
            # with more OpenMP threads than cores libgomp stops spinning, and every later parallel
            # region of this process sleeps and wakes its threads (measured: our small models at
            # half speed while the process lives).
            naive_s = min(naive_s, naive.apply(naive_train, (configuration, images.numpy(), steps, warmup, batch,
                                                             device, seed)))
    naive_s = naive_s if naive is not None else math.nan
    ours_ips = workers * steps * batch / ours_s
    naive_ips = steps * batch / naive_s
    gflop_s = flops * ours_ips / 1e9
    return BenchRow(
        family=configuration.family, config=configuration.config, method=configuration.method.method,
        sampling=configuration.method.sampling or "", device=str(device),
        precision=TrainConfig(precision=precision).effective_precision(device), workers=workers,
        params=params, steps=steps, batch=batch,
        flops_per_image=flops, ours_img_s=ours_ips, naive_img_s=naive_ips, speedup=ours_ips / naive_ips,
        gflop_s=gflop_s, pct_peak_fp32=100.0 * gflop_s / peak.fp32,
        pct_peak_bf16=100.0 * gflop_s / peak.bf16 if peak.bf16 else math.nan,
        naive_pct_peak_fp32=100.0 * flops * naive_ips / 1e9 / peak.fp32,
        ours_seconds=ours_s, naive_seconds=naive_s, peak_gflop_s_fp32=peak.fp32,
        peak_gflop_s_bf16=peak.bf16 if peak.bf16 else math.nan, peak_matmul_size=peak.size,
        load_avg=os.getloadavg()[0])


def _prepare(families: Sequence[str] | None, methods: Sequence[str] | None, steps: int, warmup: int, batch: int,
             device: str, precision: str, dataset: str, data_root: str | None = None, download: bool = False
             ) -> tuple[list[tuple[str, int]], list[str], torch.device, torch.Tensor]:
    """Check the shared settings; the selected models and methods, the device and the training images."""
    for name, value, minimum in (("steps", steps, 1), ("warmup", warmup, 0), ("batch", batch, 1)):
        _check_count(name, value, minimum)
    models, chosen = parse_models(families), parse_methods(methods)
    torch_device = training_device(TrainConfig(batch_size=batch, device=device, precision=precision))

    from benchmark.data import load_dataset

    images = load_dataset(dataset, data_root, download=download).train
    if batch > len(images):  # the timed steps would hold steps × batch copies of the images in memory
        raise BenchArgumentError(f"batch {batch} is more than the {len(images):,} training images of {dataset}; "
                                 f"give at most {len(images)}")
    return models, chosen, torch_device, images


def setting_notes(steps: int, naive: bool, peak_size: int | None, device: torch.device,
                  warmup: int = 1, workers: int = 1) -> list[str]:
    """What the settings do to the figures: at few steps a fold's fixed costs weigh on our loop's, a
    peak matrix smaller than ``device``'s default measures a low peak, and without warm-up the
    naive process on a GPU, or ``workers`` processes, time their first step's set-up, which ours
    in this process has done counting FLOPs."""
    notes = []
    if steps < FEW_STEPS:
        notes.append(f"note: at --steps {steps}, a fold's fixed costs (building the model, a validation pass) weigh "
                     "on our loop's figures" + (", while naive's clock starts after its warm-up" if naive else "")
                     + f": its img/s, % of peak{' and speed-up' if naive else ''} read low; time {FEW_STEPS} "
                     "steps or more (more on a GPU, whose steps are quicker)")
    default = default_peak_size(device)
    if peak_size and peak_size < default:
        notes.append(f"note: --peak-size {peak_size} is below the default on {device.type} ({default}): small "
                     "products run below the machine's peak, so % of peak reads high")
    if naive and warmup == 0 and device.type == "cuda":
        notes.append("note: at --warmup 0 the naive loop, in a fresh process, times its first step's set-up (CUDA "
                     "libraries, kernel choice), which ours did before its clock started: the speed-up reads high")
    if workers > 1 and warmup == 0:
        notes.append(f"note: at --warmup 0 each of the {workers} worker processes times its first step's set-up "
                     "(allocations, kernel choice): our loop's img/s and % of peak read low; warm up 1 step or more")
    return notes


def run_bench(families: Sequence[str] | None = None, methods: Sequence[str] | None = None, steps: int = 20,
              warmup: int = 3, batch: int = 128, device: str = "auto", dataset: str = "mnist5k",
              naive: bool = True, seed: int = 0, repeats: int = 1, peak_size: int | None = None,
              precision: str = "auto", workers: int = 1, data_root: str | None = None, download: bool = False,
              progress: Callable[[str], None] | None = None,
              notes: Callable[[str], None] | None = None) -> BenchResult:
    """Benchmark every selected (family, config) × method; see the module docstring.

    ``families``: names, optionally with a config (``"vae"``, ``"vq-vae:2"``); default every
    config of every family. ``methods``: subset of baseline / multidecoder / single.
    Raises ``ValueError`` for unknown names or ``steps < 1``, ``warmup < 0``, ``batch < 1`` or more than the
    dataset's training images. ``notes`` gets ``setting_notes`` once the settings are checked, before the timings.
    """
    for name, value, minimum in (("repeats", repeats, 1), ("workers", workers, 1), ("seed", seed, 0)):
        _check_count(name, value, minimum)
    if peak_size is not None and peak_size < 1:
        raise BenchArgumentError(f"peak_size must be >= 1, got {peak_size!r}")
    models, chosen, torch_device, images = _prepare(families, methods, steps, warmup, batch, device, precision,
                                                    dataset, data_root, download)
    if workers > 1 and torch_device.type != "cpu":
        raise BenchArgumentError("workers > 1 is measured on the CPU only (--device cpu)")
    for note in setting_notes(steps, naive, peak_size, torch_device, warmup, workers) if notes else ():
        notes(note)
    peak = measure_matmul_peak(torch_device, peak_size)
    if progress:
        progress(peak.describe())
    rows = []
    total = len(models) * len(chosen)
    with plain_process() if naive else nullcontext() as naive_process:
        for i, (family, config) in enumerate(models):
            for j, method in enumerate(chosen):
                configuration = bench_configuration(family, config, method)
                if progress:
                    progress(f"[{i * len(chosen) + j + 1}/{total}] {family} {config} {method}: "
                             f"{warmup} warm-up + {steps} timed steps of {batch}")
                rows.append(bench_one(configuration, images, steps, warmup, batch, torch_device, peak, naive_process,
                                      seed, repeats, precision, workers))
    ran = TrainConfig(precision=precision).effective_precision(torch_device)  # auto's, as the rows record it
    settings = {"dataset": dataset, "steps": steps, "warmup": warmup, "batch": batch, "repeats": repeats,
                "device": str(torch_device), "device_name": device_name(torch_device), "precision": ran,
                "naive_precision": "fp32" if naive else None, "workers": workers,
                "threads": torch.get_num_threads(), "cpus": usable_cores(), "torch": torch.__version__}
    return BenchResult(rows, peak, settings)


# ---------------------------------------------------------------------------------------------
# Output

def _fmt(value: float, spec: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def pct_peak(row: BenchRow) -> float:
    """Our loop's FLOP/s as a percentage of the peak of the precision it trained in."""
    return row.pct_peak_bf16 if row.precision == "bf16" and not math.isnan(row.pct_peak_bf16) else row.pct_peak_fp32


def format_table(result: BenchResult) -> str:
    header = ("family", "config", "method", "params", "MFLOP/img", "ours img/s", "naive img/s", "speed-up",
              "GFLOP/s", "% peak", "naive % peak")
    lines = [[r.family, str(r.config), r.method + (f" ({r.sampling})" if r.sampling else ""), f"{r.params:,}",
              _fmt(r.flops_per_image / 1e6, ",.1f"), _fmt(r.ours_img_s, ",.0f"), _fmt(r.naive_img_s, ",.0f"),
              _fmt(r.speedup, ".2f") + ("x" if not math.isnan(r.speedup) else ""), _fmt(r.gflop_s, ",.1f"),
              _fmt(pct_peak(r), ".1f"), _fmt(r.naive_pct_peak_fp32, ".1f")] for r in result.rows]
    s = result.settings
    bf16 = any(r.precision == "bf16" and not math.isnan(r.pct_peak_bf16) for r in result.rows)
    table = text_table(lines, header, ("left",) * 3 + ("right",) * (len(header) - 3))  # family, config, method left
    out = [table, "",
           result.peak.describe() + ("; % peak is of the bfloat16 peak (ours trained in bf16), naive % peak of the "
                                     "float32 peak (naive trains in float32, so the speed-up includes bf16's gain)"
                                     if bf16 else "; % peak is of the float32 peak"),
           (f"{s['steps']} timed steps after {s['warmup']} warm-up (best of {s['repeats']}), batch {s['batch']}, "
            f"{s['dataset']}, device {s.get('device_name', s['device'])}, precision {s['precision']}, "
            f"{s['workers']} worker process{'es' * (s['workers'] != 1)} for ours, {s['threads']} torch "
            f"thread{'s' * (s['threads'] != 1)}, torch {s['torch']}"),
           "ours: this package's training loop (`run`'s); naive: the plainest PyTorch loop (a DataLoader over a "
           "TensorDataset, masks made per image in Python)"]
    if any(pct_peak(r) > 100 for r in result.rows):
        out.append(("note: a rate above the peak means a peak measured low on a busy machine; " if bf16 else
                    "note: a rate above the float32 peak means bf16, or a peak measured low on a busy machine; ")
                   + ("rerun with --repeats 2 or more, which keeps the best of each" if s["repeats"] == 1
                      else "rerun on an idle machine"))
    return "\n".join(out)


# The run's settings that each CSV row repeats, so that a file read alone says how it was measured.
SETTING_COLUMNS = ("dataset", "warmup", "repeats", "threads", "cpus", "torch", "device_name", "naive_precision")


def write_csv(rows: Sequence[BenchRow | EnsembleRow], path: str | Path, settings: dict | None = None) -> Path:
    """Write benchmark rows (one dataclass per row), with ``settings``' ``SETTING_COLUMNS``, as CSV,
    whole or not at all."""
    frame = pd.DataFrame(map(asdict, rows))
    for key in SETTING_COLUMNS:
        if settings and settings.get(key) is not None and key not in frame:
            frame[key] = settings[key]
    # "nan" and CRLF as the csv module wrote them
    return write_whole(path, lambda partial: frame.to_csv(partial, index=False, na_rep="nan", lineterminator="\r\n"))


def write_throughput(rows: Sequence[BenchRow], out: str | Path, settings: dict | None = None
                     ) -> tuple[Path, Path | None]:
    """``out/throughput.csv``; an ``out/ensemble.csv`` of an earlier run is removed, so that the
    folder never pairs the rows of two runs (``--ensemble`` writes a new one afterwards).

    Returns (the CSV written, the stale ensemble CSV removed or None).
    """
    path = write_csv(rows, Path(out) / THROUGHPUT_CSV, settings)
    stale = Path(out) / ENSEMBLE_CSV
    if stale.is_file():
        stale.unlink()
        return path, stale
    return path, None
