"""Building blocks shared by both model families: conv stacks, residual layers, the z ⊕ m merge;
and ``eval_mode``, for validating any of them (or the prior)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm with float32 statistics and weights, also under bf16 autocast.

    CUDA's batch norm, vectorised over stacked fold models (``torch.func.vmap``), rejects a
    bf16 input with float32 running statistics, so on CUDA the input is cast to float32.
    The CPU kernel takes the mix as it is outside vmap (it accumulates in float32), and the two
    casts per layer would cost about a tenth of a bf16 training step of the small models there;
    bf16 folds are not stacked on a CPU (``ensemble.stacking_problem``).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float() if x.is_cuda else x)


def conv_encoder(in_channels: int, widths: tuple[int, ...]) -> nn.Sequential:
    """Conv 3x3 stride 2 + BatchNorm + LeakyReLU per hidden width (halves the side each time)."""
    layers: list[nn.Module] = []
    for width in widths:
        # No conv bias before BatchNorm: BN removes it, and Adam would turn its zero gradient's
        # float noise into full-size steps.
        layers += [nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False), BatchNorm2d(width),
                   nn.LeakyReLU()]
        in_channels = width
    return nn.Sequential(*layers)


def upsampling_stack(widths: tuple[int, ...], out_channels: int) -> nn.Sequential:
    """The encoder mirrored: transposed convs from widths[-1] back to the image, output in [0, 1]."""
    mirrored = widths[::-1]
    layers: list[nn.Module] = []
    for width_in, width_out in zip(mirrored, mirrored[1:]):
        layers += [nn.ConvTranspose2d(width_in, width_out, 4, stride=2, padding=1, bias=False),
                   BatchNorm2d(width_out), nn.LeakyReLU()]
    layers += [nn.ConvTranspose2d(mirrored[-1], out_channels, 4, stride=2, padding=1), nn.Sigmoid()]
    return nn.Sequential(*layers)


class ResidualLayer(nn.Module):
    """x + Conv1x1(ReLU(Conv3x3(ReLU(x)))), the VQ-VAE paper's residual block."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                   nn.ReLU(), nn.Conv2d(channels, channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def residual_stack(channels: int, count: int) -> list[nn.Module]:
    """``count`` residual layers and the activation that closes the stack. With none, an identity takes
    its place, as the layer before ends in its own activation (before ``METRICS_VERSION`` 4, VQ-VAE 1
    applied it twice: its studies are refused); the identity keeps the layers' indices, so a state
    dict's keys name the same layers."""
    return [*(ResidualLayer(channels) for _ in range(count)), nn.LeakyReLU() if count else nn.Identity()]


class LatentInput(nn.Module):
    """Maps the latent (and, when conditioned, m) to the first feature map of a decoder.

    Conditioned: flatten(z) ⊕ flatten(m) → one Linear layer → reshape (the thesis's merge).
    Unconditioned: a Linear layer when the shapes differ (Gaussian z), identity otherwise (VQ z_q).
    """

    def __init__(self, latent_shape: tuple[int, ...], out_shape: tuple[int, ...], cond_dim: int = 0) -> None:
        super().__init__()
        self.out_shape = out_shape
        self.conditioned = cond_dim > 0
        latent_dim, out_dim = math.prod(latent_shape), math.prod(out_shape)
        if self.conditioned or latent_shape != out_shape:
            self.linear: nn.Module = nn.Linear(latent_dim + cond_dim, out_dim)
        else:
            self.linear = nn.Identity()

    def forward(self, z: torch.Tensor, m: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditioned:
            if m is None:
                raise ValueError("a conditioned decoder needs the conditioning information m")
            h = self.linear(torch.cat([z.flatten(1), m.flatten(1)], dim=1))
        elif isinstance(self.linear, nn.Identity):
            return z
        else:
            h = self.linear(z.flatten(1))
        return h.view(-1, *self.out_shape)


class Decoder(nn.Module):
    """LatentInput followed by the family's transposed-conv body."""

    def __init__(self, latent_input: LatentInput, body: nn.Module) -> None:
        super().__init__()
        self.latent_input = latent_input
        self.body = body

    @property
    def conditioned(self) -> bool:
        return self.latent_input.conditioned

    def forward(self, z: torch.Tensor, m: torch.Tensor | None = None) -> torch.Tensor:
        return self.body(self.latent_input(z, m))


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The model in eval mode (BatchNorm on its running statistics) for the block; its mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
