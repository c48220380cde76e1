"""Several folds of one configuration trained at once as one vectorised ensemble.

The fold models are stacked (``torch.func.stack_module_state``) and every step runs all of
them with ``torch.func.vmap`` over a stacked batch: one large kernel launch instead of one per
fold, which is what a GPU needs to be busy with small models. Each fold keeps its own batch
order, masks, noise, loss balancer and best epoch (``FoldRun``), and AdamW is elementwise, so
a fold's result equals training it alone with the same seed, up to float reassociation.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace

import torch
from torch.func import functional_call, stack_module_state, vmap

from benchmark.config import Configuration, TrainConfig
from benchmark.memory import keep_freed_memory
from benchmark.train import (DivergedError, FoldResult, FoldRun, check_images, new_model, train_fold,
                             training_device)


def can_stack(splits: list[tuple]) -> bool:
    """Folds stack when they have the same number of training images (same batches per epoch)."""
    return len({len(train) for train, _ in splits}) == 1


def stacking_problem(train_config: TrainConfig, device: torch.device) -> str | None:
    """Why folds trained with ``train_config`` on ``device`` must not be stacked, or None.

    CPU autocast has no rule for the ops that ``vmap`` turns convolutions and linear layers into,
    so there stacked bf16 folds would train those in float32: not as each fold trains alone.
    """
    if device.type == "cpu" and train_config.autocast(device):
        return ("bf16 folds are not stacked on a CPU: its autocast leaves the vectorised convolutions in "
                "float32, so they would not train as alone")
    return None


def train_folds_together(configuration: Configuration, images: torch.Tensor, splits: list[tuple],
                         train_config: TrainConfig, seeds: list[int],
                         on_epoch: Callable[[int, int, dict[str, float]], None] | None = None,
                         ) -> list[FoldResult | DivergedError]:
    """Train the folds ``splits`` [(train_idx, val_idx), ...] of ``configuration`` together.

    Returns, per fold, its ``FoldResult`` or the ``DivergedError`` that stopped it (the other
    folds go on). ``on_epoch(fold_index, epoch, row)`` reports each fold's epoch.
    """
    check_images("images", images)
    if not can_stack(splits):
        raise ValueError("folds with different training sizes cannot be stacked; train them one by one")
    if len(seeds) != len(splits):
        raise ValueError(f"{len(splits)} folds need {len(splits)} seeds, got {len(seeds)}")
    device = training_device(train_config)
    problem = stacking_problem(train_config, device)
    if problem:
        raise ValueError(f"{problem}; train them one by one, or in float32")
    if device.type == "cpu":
        keep_freed_memory()
    channels, size = images.shape[1], images.shape[-1]
    data = images.to(device)
    models = [new_model(configuration, seed, channels, size, device) for seed in seeds]
    folds = [FoldRun(configuration, model, data[torch.as_tensor(train)], data[torch.as_tensor(val)], train_config,
                     seed) for model, (train, val), seed in zip(models, splits, seeds)]
    params, buffers = stack_module_state(models)
    template = copy.deepcopy(models[0]).to("meta")
    evaluator = models[0]  # reused to hold one fold's weights at a time for validation
    optimizer = torch.optim.AdamW(params.values(), lr=train_config.lr, weight_decay=train_config.weight_decay,
                                  fused=True)  # as train_fold
    autocast = train_config.autocast(device)
    failed: dict[int, DivergedError] = {}

    def step_terms(p, b, x, mask, noise):
        return functional_call(template, (p, b), (x, mask, noise)).terms

    for epoch in range(1, train_config.epochs + 1):
        template.train()
        running = torch.zeros(len(folds), device=device)
        for parts in zip(*(fold.batches() for fold in folds)):
            x = torch.stack([p[0] for p in parts])
            mask = torch.stack([p[1] for p in parts]) if parts[0][1] is not None else None
            noise = torch.stack([p[2] for p in parts]) if parts[0][2] is not None else None
            in_dims = (0, 0, 0, None if mask is None else 0, None if noise is None else 0)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                terms = vmap(step_terms, in_dims=in_dims, randomness="error")(params, buffers, x, mask, noise)
            losses = torch.stack([fold.balancer.combine({k: v[i] for k, v in terms.items()})
                                  for i, fold in enumerate(folds)])
            optimizer.zero_grad(set_to_none=True)
            # Folds share no parameters: the gradient of the sum is each fold's own gradient.
            losses.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0).sum().backward()
            optimizer.step()
            running += losses.detach()
        train_losses = (running / folds[0].steps_per_epoch).tolist()  # one sync per epoch
        for i, fold in enumerate(folds):
            if i in failed:
                continue
            evaluator.load_state_dict({name: tensor[i] for name, tensor in {**params, **buffers}.items()})
            try:
                row = fold.end_epoch(epoch, train_losses[i], evaluator)
            except DivergedError as err:
                failed[i] = err
                continue
            if on_epoch is not None:
                on_epoch(i, epoch, row)
    return [failed.get(i) or fold.result() for i, fold in enumerate(folds)]


def warm_up(configuration: Configuration, images: torch.Tensor, train_config: TrainConfig, stacked: int = 1) -> None:
    """Train ``configuration`` for one step on a batch of ``images`` and throw it away: alone, or as an
    ensemble of ``stacked`` folds (``train_folds_together``, whose first step has costs of its own). A
    process's first training pays one-off costs (its kernels' set-up, the allocator's first blocks: about
    1 s on a CPU, on a GPU its context) that would otherwise count in the ``seconds`` of its first unit
    and make that configuration look dearer. Each fold seeds its own generators, so no later fold changes."""
    batch, step = images[:train_config.batch_size], replace(train_config, epochs=1)
    try:
        if stacked > 1:  # each fold validates on the batch's first image
            train_folds_together(configuration, batch, [(range(len(batch)), [0])] * stacked, step, [0] * stacked)
        else:
            train_fold(configuration, batch, batch[:1], step, seed=0)
    except DivergedError:  # one step of an unlucky start: the costs are paid all the same
        pass
    except torch.OutOfMemoryError:  # the unit's own training says so, with what to do about it
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
