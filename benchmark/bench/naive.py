"""The naive reference loop: the same model trained the plainest way, in a fresh process of its own."""

from __future__ import annotations

import math
import multiprocessing
import multiprocessing.pool
import signal
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from benchmark.bench.peak import _sync
from benchmark.conditioning import PixelSampler, exact_grid
from benchmark.config import Configuration
from benchmark.models import MultitaskVAE
from benchmark.processes import stop_with_parent
from benchmark.train import new_model


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


def _fixed_weight_loss(configuration: Configuration, model: MultitaskVAE) -> Callable:
    weights = configuration.balance.fixed_weights(model.loss_terms)
    return lambda output: sum(weights[name] * output.terms[name] for name in model.loss_terms)


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


def plain_process() -> multiprocessing.pool.Pool:
    """A fresh Python process for the naive loop: a user's own script, untouched by the process
    settings our training path makes (``benchmark.memory.keep_freed_memory``). Used in a ``with``,
    it is killed when the block ends, so that a bench stopped by SIGTERM does not wait for its
    timing; a Ctrl-C stops the bench, not it (its traceback would only add noise)."""
    return multiprocessing.get_context("spawn").Pool(1, initializer=_start_plain)


def _start_plain() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop_with_parent()  # a bench ended by kill -9 left its timing running for minutes
