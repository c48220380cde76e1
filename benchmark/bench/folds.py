"""Folds together: the vectorised fold ensemble (``benchmark.ensemble``) against the same folds one after another."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from benchmark.bench.peak import _sync
from benchmark.bench.throughput import (
    VAL_IMAGES,
    _check_count,
    _prepare,
    _tiled,
    bench_configuration,
)
from benchmark.config import Configuration, TrainConfig
from benchmark.tables import text_table
from benchmark.train import train_fold


@dataclass(frozen=True)
class EnsembleRow:
    family: str
    config: int
    method: str
    sampling: str
    device: str
    precision: str             # as trained, fp32 or bf16 (auto resolved)
    folds: int
    steps: int
    batch: int
    sequential_seconds: float  # ``folds`` train_fold calls, one after another
    together_seconds: float    # one train_folds_together call over the same folds
    speedup: float             # sequential / together
    load_avg: float            # the machine's last-minute load once timed: well above its cores, times run high


def ensemble_one(configuration: Configuration, images: torch.Tensor, folds: int, steps: int, warmup: int,
                 batch: int, device: torch.device, seed: int = 0, precision: str = "auto",
                 repeats: int = 1) -> EnsembleRow:
    """Time ``folds`` folds of ``steps`` batches trained one by one, then as one stacked ensemble.

    Each fold trains one epoch on the same ``steps × batch`` images with its own seed, so
    both ways do the same work; an untimed call of ``warmup`` steps precedes each way. With
    ``repeats``, the two ways alternate and each keeps its best time (load only slows).
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
    times = [(sequential(steps), together(steps)) for _ in range(repeats)]
    sequential_s, together_s = min(t for t, _ in times), min(t for _, t in times)
    return EnsembleRow(configuration.family, configuration.config, configuration.method.method,
                       configuration.method.sampling or "", str(device), config.effective_precision(device), folds,
                       steps, batch, sequential_s, together_s, sequential_s / together_s, os.getloadavg()[0])


def run_ensemble_bench(families: Sequence[str] | None = None, methods: Sequence[str] | None = None,
                       folds: int = 5, steps: int = 20, warmup: int = 3, batch: int = 128, device: str = "auto",
                       dataset: str = "mnist5k", seed: int = 0, precision: str = "auto",
                       data_root: str | None = None, download: bool = False, repeats: int = 1,
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
                                     batch, torch_device, seed, precision, repeats))
    return rows


def format_ensemble_table(rows: Sequence[EnsembleRow]) -> str:
    header = ("family", "config", "method", "folds", "one by one s", "stacked s", "speed-up")
    lines = [[r.family, str(r.config), r.method + (f" ({r.sampling})" if r.sampling else ""), str(r.folds),
              f"{r.sequential_seconds:.2f}", f"{r.together_seconds:.2f}", f"{r.speedup:.2f}x"] for r in rows]
    return text_table(lines, header, ("left",) * 3 + ("right",) * (len(header) - 3))  # family, config, method left
