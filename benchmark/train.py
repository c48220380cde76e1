"""One fold: train with AdamW, evaluate every epoch, keep the best epoch's weights and metrics."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from benchmark.balancing import LossBalancer
from benchmark.conditioning import PixelSampler
from benchmark.config import Configuration, TrainConfig
from benchmark.models import MultitaskVAE, build_model

METRICS = ("recon", "latent", "recon_cond", "total")


class DivergedError(RuntimeError):
    """Training produced a NaN or infinite loss."""


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
    return torch.device(device)


@dataclass
class FoldResult:
    """Per-fold outcome: metrics at the best epoch, the per-epoch history and the best weights."""

    best_epoch: int
    metrics: dict[str, float]
    history: list[dict[str, float]]
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    seconds: float = 0.0


def _generator(device: torch.device, seed: int) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


@torch.no_grad()
def evaluate(model: MultitaskVAE, images: torch.Tensor, sampler: PixelSampler | None,
             weights: dict[str, float], batch_size: int = 512, seed: int = 0) -> dict[str, float]:
    """Validation metrics, every module in eval mode, masks from a fixed seed.

    recon / recon_cond: per-pixel MSE of the unconditioned / conditioned decoder;
    latent: KL or VQ loss; total: the training objective at ``weights`` (training scale);
    recon_train / recon_cond_train: the reconstruction terms on the training scale.
    """
    was_training = model.training
    model.eval()
    generator = _generator(images.device, seed)
    sums = torch.zeros(4, device=images.device, dtype=torch.float64)
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size]
        code = model.encode(x)
        recon = model.reconstruction_loss(model.decode(code.z), x)
        cond = torch.zeros((), device=x.device)
        if model.conditioned:
            mask = sampler.sample(len(x), generator, x.device)
            cond = model.reconstruction_loss(model.decode(code.z, x, mask, conditioned=True), x)
        # The training objective's terms: the single decoder trains on its conditioned output.
        objective = {"recon": cond if model.method == "single" else recon, "recon_cond": cond, "latent": code.latent}
        total = sum(weights[name] * objective[name] for name in weights)
        sums += torch.stack([recon, code.latent, cond, total]).double() * len(x)
    means = (sums / len(images)).tolist()
    model.train(was_training)
    conditioned = model.method != "baseline"
    return {
        "recon": means[0] * model.recon_scale,
        "latent": means[1],
        "recon_cond": means[2] * model.recon_scale if conditioned else math.nan,
        "total": means[3],
        "recon_train": means[0],
        "recon_cond_train": means[2] if conditioned else math.nan,
    }


def train_fold(configuration: Configuration, train_images: torch.Tensor, val_images: torch.Tensor,
               train_config: TrainConfig, seed: int,
               on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> FoldResult:
    """Train ``configuration`` on one fold and return its best epoch.

    The seed fixes the initial weights, the batch order and the training masks; validation
    masks use a seed derived from it, so rerunning a fold on CPU gives the same numbers.
    Raises ``DivergedError`` when a loss becomes NaN or infinite.
    """
    started = time.perf_counter()
    device = resolve_device(train_config.device)
    channels, image_size = train_images.shape[1], train_images.shape[-1]
    torch.manual_seed(seed)
    model = build_model(configuration.family, configuration.config, configuration.method.method,
                        channels, image_size).to(device)
    sampler = configuration.method.sampler(image_size)
    terms = ("recon", "recon_cond", "latent") if model.method == "multidecoder" else ("recon", "latent")
    balancer = LossBalancer(configuration.method.balance, terms)
    nominal = configuration.method.balance.fixed_weights(terms)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay)
    train_x, val_x = train_images.to(device), val_images.to(device)
    mask_generator = _generator(device, seed + 1)
    order_generator = _generator(torch.device("cpu"), seed + 2)
    batch = train_config.batch_size
    autocast = train_config.bf16 and device.type == "cuda"

    best_total, best_epoch, best_state, best_metrics = math.inf, -1, None, {}
    history: list[dict[str, float]] = []
    for epoch in range(1, train_config.epochs + 1):
        model.train()
        running = torch.zeros((), device=device)
        order = torch.randperm(len(train_x), generator=order_generator).to(device)
        for start in range(0, len(train_x), batch):
            x = train_x[order[start:start + batch]]
            mask = sampler.sample(len(x), mask_generator, device) if sampler is not None else None
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                terms = model(x, mask).terms
            loss = balancer.combine(terms)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.detach()
        train_loss = float(running) / math.ceil(len(train_x) / batch)  # one sync per epoch
        metrics = evaluate(model, val_x, sampler, nominal, seed=seed + 3)
        if not all(math.isfinite(v) for v in (train_loss, metrics["total"])):
            raise DivergedError(f"loss diverged at epoch {epoch} (train {train_loss}, validation {metrics['total']})")
        row = {"epoch": epoch, "train_total": train_loss, **metrics,
               **{f"w_{name}": weight for name, weight in balancer.weights.items()}}
        history.append(row)
        if metrics["total"] < best_total:
            best_total, best_epoch, best_metrics = metrics["total"], epoch, metrics
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if on_epoch is not None:
            on_epoch(epoch, row)
    return FoldResult(best_epoch, dict(best_metrics), history, best_state or copy.deepcopy(model.state_dict()),
                      time.perf_counter() - started)
