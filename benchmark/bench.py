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

import csv
import math
import multiprocessing
import os
import queue
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from benchmark.balancing import LossBalancer
from benchmark.conditioning import PixelSampler, exact_grid
from benchmark.config import Configuration, MethodConfig, TrainConfig
from benchmark.models import METHODS, MODEL_CONFIGS
from benchmark.train import native_bf16, new_model, resolve_device, train_fold, training_device

# The conditioning each method is benchmarked with: the thesis grid's uniform sampler (the
# costlier of its samplers: a random permutation per image), fixed loss weights.
BENCH_SAMPLING = {"baseline": None, "multidecoder": "uniform", "single": "uniform"}
BENCH_EXPONENT = 40.0  # the single decoder's power-law exponent (the thesis's)
VAL_IMAGES = 32        # the timed train_fold's validation set: tiny, so it does not distort the timing
THROUGHPUT_CSV, ENSEMBLE_CSV = "throughput.csv", "ensemble.csv"  # the files `bench` writes into --out

CSV_COLUMNS = ("family", "config", "method", "sampling", "device", "precision", "workers", "params", "steps", "batch",
               "flops_per_image", "ours_img_s", "naive_img_s", "speedup", "gflop_s", "pct_peak_fp32",
               "pct_peak_bf16", "naive_pct_peak_fp32", "ours_seconds", "naive_seconds", "peak_gflop_s_fp32", "peak_gflop_s_bf16",
               "peak_matmul_size")


def conv3x3_channels(size: int) -> int:
    """Channels of the peak's 3x3-convolution route for a matrix side of ``size``."""
    return max(1, size // 8)


@dataclass(frozen=True)
class MatmulPeak:
    """The best dense-matmul rate seen on the device, in GFLOP/s (``bf16`` None when not measured).

    ``rates`` holds every route measured, e.g. ``{"torch.mm float32": ..., "1x1 conv float32": ...}``;
    ``fp32`` / ``bf16`` are the best route of each dtype.
    """

    device: str
    size: int
    fp32: float
    bf16: float | None
    rates: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        routes = ", ".join(f"{name} {rate:,.0f}" for name, rate in self.rates.items())
        bf16 = f", bfloat16 {self.bf16:,.0f} GFLOP/s" if self.bf16 else ""
        return (f"matmul peak on {self.device}: float32 {self.fp32:,.0f} GFLOP/s{bf16} "
                f"(best of {self.size}x{self.size} products and a 3x3 convolution of {conv3x3_channels(self.size)} "
                f"channels; {routes})")


@dataclass(frozen=True)
class BenchRow:
    family: str
    config: int
    method: str
    sampling: str
    device: str
    precision: str              # of ours (auto: bf16 autocast on an Ampere or later GPU); naive is float32
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
        if family not in MODEL_CONFIGS:
            raise ValueError(f"unknown model family {family!r}; choose one of: {', '.join(MODEL_CONFIGS)} "
                             f"(optionally FAMILY:CONFIG, e.g. vq-vae:2)")
        if config:
            if not config.isdigit() or int(config) not in MODEL_CONFIGS[family]:
                raise ValueError(f"unknown {family} config {config!r}; choose one of: "
                                 f"{', '.join(map(str, MODEL_CONFIGS[family]))}")
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
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
        if method not in chosen:
            chosen.append(method)
    return chosen


def _check_count(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def bench_configuration(family: str, config: int, method: str) -> Configuration:
    """The configuration benchmarked for (family, config, method): the family's default fixed loss weights."""
    sampling = BENCH_SAMPLING[method]
    exponent = BENCH_EXPONENT if method == "single" else None
    return Configuration(family, config, MethodConfig(method, sampling, exponent=exponent))


# ---------------------------------------------------------------------------------------------
# Measurements

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_peak(device: str | torch.device = "cpu", size: int | None = None, repeats: int = 5) -> MatmulPeak:
    """Best dense matrix-product rate on ``device``, float32 and bfloat16, over several routes.

    Routes: ``torch.mm`` of two n×n matrices (the BLAS: MKL on CPU, cuBLAS on CUDA); on CPU
    the same product as a 1x1 convolution, which runs on oneDNN like the models' convolutions
    (MKL's GEMM is not the fastest route on every CPU, e.g. AVX-512 AMD ones); and a 3x3
    convolution of n/8 channels on 16x16 maps, batch 128, channels-last: an implicit GEMM whose
    register blocking beats both square products on some CPUs (seen: 450 against 320 GFLOP/s),
    so without it the models' big convolutions ran "above the peak". The peak is the best route.
    No bfloat16 rate where bf16 has no kernels (``native_bf16``): on an AVX2 CPU it took over 20
    minutes and would mean nothing.
    """
    device = torch.device(device)
    size = size or (8192 if device.type == "cuda" else 2048)
    inner = 20 if device.type == "cuda" else 3

    def best(route: Callable[[torch.dtype], tuple[Callable[[], object], float]], dtype: torch.dtype) -> float:
        run, flops = route(dtype)
        run()  # warm-up (library initialisation, kernel choice)
        _sync(device)
        rates = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(inner):
                run()
            _sync(device)
            rates.append(flops * inner / (time.perf_counter() - started) / 1e9)
        return max(rates)

    def square(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.randn(size, size, device=device, dtype=dtype),
                torch.randn(size, size, device=device, dtype=dtype))

    def mm(dtype):
        a, b = square(dtype)
        return (lambda: torch.mm(a, b)), 2.0 * size ** 3

    def conv1x1(dtype):  # out[o, p] = Σ_i w[o, i] · x[i, p] over size pixels: the same product
        a, b = square(dtype)
        x, w = b.view(1, size, 1, size), a.view(size, size, 1, 1)
        return (lambda: torch.nn.functional.conv2d(x, w)), 2.0 * size ** 3

    def conv3x3(dtype):
        batch, channels, side = 128, conv3x3_channels(size), 16
        layout = {"device": device, "dtype": dtype}
        x = torch.randn(batch, channels, side, side, **layout).to(memory_format=torch.channels_last)
        w = torch.randn(channels, channels, 3, 3, **layout).to(memory_format=torch.channels_last)
        return (lambda: torch.nn.functional.conv2d(x, w, padding=1)), 2.0 * 9 * batch * side * side * channels ** 2

    routes = {"torch.mm": mm, **({"1x1 conv": conv1x1} if device.type == "cpu" else {}), "3x3 conv": conv3x3}
    dtypes = {"float32": torch.float32, **({"bfloat16": torch.bfloat16} if native_bf16(device) else {})}
    rates = {f"{route} {name}": best(make, dtype)
             for name, dtype in dtypes.items() for route, make in routes.items()}
    fp32 = max(rate for name, rate in rates.items() if name.endswith("float32"))
    half = max((rate for name, rate in rates.items() if name.endswith("bfloat16")), default=None)
    return MatmulPeak(str(device), size, fp32, half, rates)


def training_flops(model: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor | None,
                   loss_fn: Callable | None = None) -> int:
    """FLOPs of one training step (forward + backward) on batch ``x``, as ``FlopCounterMode`` counts them.

    ``loss_fn`` maps the model's output to the scalar loss (default: the sum of a
    ``ModelOutput``'s terms, or of a plain tensor output).
    """
    def default_loss(output):
        if isinstance(output, torch.Tensor):
            return output.sum()
        return sum(output.terms.values())

    loss_fn = loss_fn or default_loss
    counter = FlopCounterMode(display=False)
    with counter:
        output = model(x) if mask is None else model(x, mask)
        loss_fn(output).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def naive_masks(sampler: PixelSampler, batch: int, rng: np.random.Generator) -> torch.Tensor:
    """Masks the plain way: a Python loop over the batch, one numpy draw per image, on the CPU.

    Same distribution as ``sampler.sample``: exact grid; uniform = k distinct pixels;
    gaussian = k draws with replacement (std = side/6, rounded and clamped); k constant or
    ``floor((1 - X)·D)`` with X from numpy's ``power(exponent)``.
    """
    size = sampler.image_size
    pixels = size * size
    masks = []
    for _ in range(batch):
        if sampler.exponent is None:
            k = sampler.fixed_count
        else:
            k = math.floor((1.0 - rng.power(sampler.exponent)) * pixels)
        mask = np.zeros(pixels, dtype=np.float32)
        if sampler.sampling == "exact":
            mask = exact_grid(size, sampler.grid_stride).numpy().astype(np.float32).ravel()
        elif sampler.sampling == "uniform":
            mask[rng.choice(pixels, size=k, replace=False)] = 1.0
        else:
            centre, std = (size - 1) / 2.0, size / 6.0
            rows_cols = np.clip(np.round(rng.normal(centre, std, size=(k, 2))), 0, size - 1).astype(int)
            mask[rows_cols[:, 0] * size + rows_cols[:, 1]] = 1.0
        masks.append(torch.from_numpy(mask).view(1, size, size))
    return torch.stack(masks)


def _fixed_weight_loss(configuration: Configuration, model) -> Callable:
    terms = ("recon", "recon_cond", "latent") if model.method == "multidecoder" else ("recon", "latent")
    weights = configuration.balance.fixed_weights(terms)
    return lambda output: sum(weights[name] * output.terms[name] for name in terms)


def naive_train(configuration: Configuration, images: torch.Tensor | np.ndarray, steps: int, warmup: int,
                batch: int, device: torch.device, seed: int = 0) -> float:
    """Seconds for ``steps`` training steps of the plainest loop (after ``warmup`` untimed steps).

    ``images`` may be a numpy array: that is how ``bench_one`` sends them to the naive process.
    """
    images = torch.as_tensor(images)
    channels, size = images.shape[1], images.shape[-1]
    model = new_model(configuration, seed, channels, size, device)
    sampler = configuration.method.sampler(size)
    loss_fn = _fixed_weight_loss(configuration, model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(images), batch_size=batch, shuffle=True)
    rng = np.random.default_rng(seed)
    model.train()
    running, step, started = 0.0, 0, time.perf_counter()
    while step < warmup + steps:
        for (x,) in loader:
            if step == warmup:
                _sync(device)
                started = time.perf_counter()
            if step == warmup + steps:
                break
            x = x.to(device)
            mask = naive_masks(sampler, len(x), rng).to(device) if sampler is not None else None
            loss = loss_fn(model(x, mask))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running += loss.item()
            step += 1
    _sync(device)
    return time.perf_counter() - started


def _timed_fold(configuration: Configuration, images: torch.Tensor, steps: int, warmup: int, batch: int,
                config: TrainConfig, seed: int, ready: Callable[[], None] | None = None) -> tuple[float, float]:
    """(start, end) on the wall clock of one ``train_fold`` epoch of ``steps`` batches, after an
    untimed ``warmup``-step call and ``ready()``; the wall clock is comparable across processes."""
    device = resolve_device(config.device)
    val = images[:VAL_IMAGES]
    if warmup:
        train_fold(configuration, images[:warmup * batch], val, config, seed)
    if ready is not None:
        ready()
    _sync(device)
    started = time.time()
    train_fold(configuration, images[:steps * batch], val, config, seed)
    _sync(device)
    return started, time.time()


def ours_train(configuration: Configuration, images: torch.Tensor, steps: int, warmup: int, batch: int,
               device: torch.device, seed: int = 0, precision: str = "auto") -> float:
    """Seconds for one ``train_fold`` epoch of ``steps`` batches (after an untimed ``warmup``-step call)."""
    config = TrainConfig(epochs=1, batch_size=batch, device=str(device), precision=precision)
    started, ended = _timed_fold(configuration, images, steps, warmup, batch, config, seed)
    return ended - started


def _worker_train(configuration: Configuration, images: torch.Tensor, steps: int, warmup: int, batch: int,
                  seed: int, precision: str, threads: int, barrier, spans) -> None:
    """One of ``ours_parallel``'s processes: warm up, wait for the others, time one fold."""
    torch.set_num_threads(threads)
    config = TrainConfig(epochs=1, batch_size=batch, device="cpu", precision=precision)
    spans.put(_timed_fold(configuration, images, steps, warmup, batch, config, seed, barrier.wait))


def ours_parallel(configuration: Configuration, images: torch.Tensor, steps: int, warmup: int, batch: int,
                  workers: int, seed: int = 0, precision: str = "auto") -> float:
    """Seconds for ``workers`` CPU processes, each with its share of the cores, to train one
    ``train_fold`` epoch of ``steps`` batches each, all at once: what ``run --workers`` does."""
    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    barrier, spans = context.Barrier(workers), context.Queue()
    processes = [context.Process(target=_worker_train, args=(configuration, images, steps, warmup, batch, seed + i,
                                                             precision, threads, barrier, spans))
                 for i in range(workers)]
    for process in processes:
        process.start()
    times: list[tuple[float, float]] = []
    while len(times) < workers:
        try:
            times.append(spans.get(timeout=1))
        except queue.Empty:
            if any(process.exitcode not in (None, 0) for process in processes):
                for process in processes:
                    process.kill()  # the others would wait at the barrier for ever
                raise RuntimeError("a benchmark worker process failed; see its traceback above") from None
    for process in processes:
        process.join()
    return max(end for _, end in times) - min(start for start, _ in times)


def _tiled(images: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` images: the dataset repeated as often as needed."""
    if len(images) >= count:
        return images[:count].contiguous()
    return images[torch.arange(count) % len(images)].contiguous()


def plain_process() -> ProcessPoolExecutor:
    """A fresh Python process for the naive loop: a user's own script, untouched by the process
    settings our training path makes (``benchmark.memory.keep_freed_memory``)."""
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))


def bench_one(configuration: Configuration, images: torch.Tensor, steps: int, warmup: int, batch: int,
              device: torch.device, peak: MatmulPeak, naive: Executor | None = None, seed: int = 0,
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
    terms = ("recon", "recon_cond", "latent") if model.method == "multidecoder" else ("recon", "latent")
    balancer = LossBalancer(configuration.balance, terms)
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
            # from the executor's feeder thread, which gives that thread an OpenMP team of its own;
            # with more OpenMP threads than cores libgomp stops spinning, and every later parallel
            # region of this process sleeps and wakes its threads (measured: our small models at
            # half speed while the executor lives).
            naive_s = min(naive_s, naive.submit(naive_train, configuration, images.numpy(), steps, warmup, batch,
                                                device, seed).result())
    naive_s = naive_s if naive is not None else math.nan
    ours_ips = workers * steps * batch / ours_s
    naive_ips = steps * batch / naive_s
    gflop_s = flops * ours_ips / 1e9
    return BenchRow(
        family=configuration.family, config=configuration.config, method=configuration.method.method,
        sampling=configuration.method.sampling or "", device=str(device), precision=precision, workers=workers,
        params=params, steps=steps, batch=batch,
        flops_per_image=flops, ours_img_s=ours_ips, naive_img_s=naive_ips, speedup=ours_ips / naive_ips,
        gflop_s=gflop_s, pct_peak_fp32=100.0 * gflop_s / peak.fp32,
        pct_peak_bf16=100.0 * gflop_s / peak.bf16 if peak.bf16 else math.nan,
        naive_pct_peak_fp32=100.0 * flops * naive_ips / 1e9 / peak.fp32,
        ours_seconds=ours_s, naive_seconds=naive_s, peak_gflop_s_fp32=peak.fp32,
        peak_gflop_s_bf16=peak.bf16 if peak.bf16 else math.nan, peak_matmul_size=peak.size)


def _prepare(families: Sequence[str] | None, methods: Sequence[str] | None, steps: int, warmup: int, batch: int,
             device: str, precision: str, dataset: str, data_root: str | None = None, download: bool = False
             ) -> tuple[list[tuple[str, int]], list[str], torch.device, torch.Tensor]:
    """Check the shared settings; the selected models and methods, the device and the training images."""
    for name, value, minimum in (("steps", steps, 1), ("warmup", warmup, 0), ("batch", batch, 1)):
        _check_count(name, value, minimum)
    models, chosen = parse_models(families), parse_methods(methods)
    torch_device = training_device(TrainConfig(batch_size=batch, device=device, precision=precision))

    from benchmark.data import load_dataset

    return models, chosen, torch_device, load_dataset(dataset, data_root, download=download).train


def run_bench(families: Sequence[str] | None = None, methods: Sequence[str] | None = None, steps: int = 20,
              warmup: int = 3, batch: int = 128, device: str = "auto", dataset: str = "mnist5k",
              naive: bool = True, seed: int = 0, repeats: int = 1, peak_size: int | None = None,
              precision: str = "auto", workers: int = 1, data_root: str | None = None, download: bool = False,
              progress: Callable[[str], None] | None = None) -> BenchResult:
    """Benchmark every selected (family, config) × method; see the module docstring.

    ``families``: names, optionally with a config (``"vae"``, ``"vq-vae:2"``); default every
    config of every family. ``methods``: subset of baseline / multidecoder / single.
    Raises ``ValueError`` for unknown names or ``steps < 1``, ``warmup < 0``, ``batch < 1``.
    """
    for name, value, minimum in (("repeats", repeats, 1), ("workers", workers, 1)):
        _check_count(name, value, minimum)
    if peak_size is not None and peak_size < 1:
        raise ValueError(f"peak matrix size must be >= 1, got {peak_size!r}")
    models, chosen, torch_device, images = _prepare(families, methods, steps, warmup, batch, device, precision,
                                                    dataset, data_root, download)
    if workers > 1 and torch_device.type != "cpu":
        raise ValueError("workers > 1 is measured on the CPU only (--device cpu)")
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
    settings = {"dataset": dataset, "steps": steps, "warmup": warmup, "batch": batch, "repeats": repeats,
                "device": str(torch_device), "precision": precision, "workers": workers,
                "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "torch": torch.__version__}
    return BenchResult(rows, peak, settings)


# ---------------------------------------------------------------------------------------------
# Output

def _fmt(value: float, spec: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _render_table(header: Sequence[str], lines: Sequence[Sequence[str]], left: int) -> list[str]:
    """Plain-text table lines: the first ``left`` columns left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(line[k]) for line in lines)) if lines else len(h) for k, h in enumerate(header)]
    return ["  ".join(c.ljust(w) if k < left else c.rjust(w) for k, (c, w) in enumerate(zip(cells, widths)))
            for cells in [header, ["-" * w for w in widths], *lines]]


def format_table(result: BenchResult) -> str:
    header = ("family", "config", "method", "params", "MFLOP/img", "ours img/s", "naive img/s", "speed-up",
              "GFLOP/s", "% peak", "naive % peak")
    lines = [[r.family, str(r.config), r.method + (f" ({r.sampling})" if r.sampling else ""), f"{r.params:,}",
              _fmt(r.flops_per_image / 1e6, ",.1f"), _fmt(r.ours_img_s, ",.0f"), _fmt(r.naive_img_s, ",.0f"),
              _fmt(r.speedup, ".2f") + ("x" if not math.isnan(r.speedup) else ""), _fmt(r.gflop_s, ",.1f"),
              _fmt(r.pct_peak_fp32, ".1f"), _fmt(r.naive_pct_peak_fp32, ".1f")] for r in result.rows]
    s = result.settings
    out = [*_render_table(header, lines, 3), "",
           result.peak.describe() + "; % peak is of the float32 peak",
           (f"{s['steps']} timed steps after {s['warmup']} warm-up (best of {s['repeats']}), batch {s['batch']}, "
            f"{s['dataset']}, device {s['device']}, precision {s['precision']}, "
            f"{s['workers']} worker process(es) for ours, {s['threads']} torch threads, torch {s['torch']}")]
    if any(r.pct_peak_fp32 > 100 for r in result.rows):
        out.append("note: a rate above the float32 peak means bf16, or a peak measured low on a busy machine; "
                   + ("rerun with --repeats 2 or more, which keeps the best of each" if s["repeats"] == 1
                      else "rerun on an idle machine"))
    return "\n".join(out)


def write_csv(rows: Sequence[BenchRow | EnsembleRow], path: str | Path) -> Path:
    """Write benchmark rows (one dataclass per row) as CSV, atomically: no half-written file.

    The file gets the permissions of a plain ``open``: 0666 less the umask (``tempfile.mkstemp``
    would make it 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = [f.name for f in fields(rows[0])] if rows else []
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per process: concurrent runs do not clash
    try:
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow(asdict(row))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_throughput(rows: Sequence[BenchRow], out: str | Path) -> tuple[Path, Path | None]:
    """``out/throughput.csv``; an ``out/ensemble.csv`` of an earlier run is removed, so that the
    folder never pairs the rows of two runs (``--ensemble`` writes a new one afterwards).

    Returns (the CSV written, the stale ensemble CSV removed or None).
    """
    path = write_csv(rows, Path(out) / THROUGHPUT_CSV)
    stale = Path(out) / ENSEMBLE_CSV
    if stale.is_file():
        stale.unlink()
        return path, stale
    return path, None


# ---------------------------------------------------------------------------------------------
# Folds together: the vectorised ensemble against the same folds one after another

@dataclass(frozen=True)
class EnsembleRow:
    family: str
    config: int
    method: str
    sampling: str
    device: str
    precision: str
    folds: int
    steps: int
    batch: int
    sequential_seconds: float  # ``folds`` train_fold calls, one after another
    together_seconds: float    # one train_folds_together call over the same folds
    speedup: float             # sequential / together


def ensemble_one(configuration: Configuration, images: torch.Tensor, folds: int, steps: int, warmup: int,
                 batch: int, device: torch.device, seed: int = 0, precision: str = "auto") -> EnsembleRow:
    """Time ``folds`` folds of ``steps`` batches trained one by one, then as one stacked ensemble.

    Each fold trains one epoch on the same ``steps × batch`` images with its own seed, so
    both ways do the same work; an untimed call of ``warmup`` steps precedes each way.
    """
    from benchmark.ensemble import train_folds_together

    config = TrainConfig(epochs=1, batch_size=batch, device=str(device), precision=precision)
    seeds = [seed + i for i in range(folds)]

    def sequential(n: int) -> float:
        pool = _tiled(images, n * batch + VAL_IMAGES)
        _sync(device)
        started = time.perf_counter()
        for fold_seed in seeds:
            train_fold(configuration, pool[:n * batch], pool[n * batch:], config, fold_seed)
        _sync(device)
        return time.perf_counter() - started

    def together(n: int) -> float:
        pool = _tiled(images, n * batch + VAL_IMAGES)
        split = (np.arange(n * batch), np.arange(n * batch, n * batch + VAL_IMAGES))
        _sync(device)
        started = time.perf_counter()
        results = train_folds_together(configuration, pool, [split] * folds, config, seeds)
        _sync(device)
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            raise failed[0]
        return time.perf_counter() - started

    if warmup:
        sequential(warmup)
        together(warmup)
    sequential_s, together_s = sequential(steps), together(steps)
    return EnsembleRow(configuration.family, configuration.config, configuration.method.method,
                       configuration.method.sampling or "", str(device), precision, folds, steps, batch, sequential_s,
                       together_s, sequential_s / together_s)


def run_ensemble_bench(families: Sequence[str] | None = None, methods: Sequence[str] | None = None,
                       folds: int = 5, steps: int = 20, warmup: int = 3, batch: int = 128, device: str = "auto",
                       dataset: str = "mnist5k", seed: int = 0, precision: str = "auto",
                       data_root: str | None = None, download: bool = False,
                       progress: Callable[[str], None] | None = None) -> list[EnsembleRow]:
    """:func:`ensemble_one` for every selected (family, config) × method."""
    _check_count("folds of an ensemble", folds, 2)
    models, chosen, torch_device, images = _prepare(families, methods, steps, warmup, batch, device, precision,
                                                    dataset, data_root, download)
    rows = []
    for family, config in models:
        for method in chosen:
            if progress:
                progress(f"ensemble {family} {config} {method}: {folds} folds of {steps} steps, "
                         f"one by one and stacked")
            rows.append(ensemble_one(bench_configuration(family, config, method), images, folds, steps, warmup,
                                     batch, torch_device, seed, precision))
    return rows


def format_ensemble_table(rows: Sequence[EnsembleRow]) -> str:
    header = ("family", "config", "method", "folds", "one by one s", "stacked s", "speed-up")
    lines = [[r.family, str(r.config), r.method + (f" ({r.sampling})" if r.sampling else ""), str(r.folds),
              f"{r.sequential_seconds:.2f}", f"{r.together_seconds:.2f}", f"{r.speedup:.2f}x"] for r in rows]
    return "\n".join(_render_table(header, lines, 3))


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
