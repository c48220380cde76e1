"""Conditioning information m = [mask, x ⊙ mask] and the pixel samplers that make the mask.

A "pixel" is a spatial location (all channels). Every sampler builds the masks of a whole
batch in one vectorised call on the input's device; randomness comes from an explicit
``torch.Generator`` so that validation masks can be made deterministic.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from benchmark.checks import check_choice

SAMPLINGS = ("exact", "uniform", "gaussian")


def exact_grid(image_size: int, stride: int) -> torch.Tensor:
    """Boolean (H, W) mask of a regular grid with the given stride, centred in each cell."""
    if not 1 <= stride <= image_size:
        raise ValueError(f"grid stride must be in [1, {image_size}], got {stride}")
    grid = torch.zeros(image_size, image_size, dtype=torch.bool)
    offset = stride // 2
    grid[offset::stride, offset::stride] = True
    return grid


def check_sampling(sampling: str, count: int | None = None, exponent: float | None = None) -> None:
    """The checks of a sampler's settings that need no image size (a ``ValueError`` each)."""
    check_choice("sampling", sampling, SAMPLINGS)
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
            raise ValueError(f"pixel count k must be an integer >= 0, got {count!r}")
        if sampling == "exact":
            raise ValueError("the exact grid observes a fixed set of pixels and takes no count k; "
                             "use uniform or gaussian sampling for k pixels")
        if exponent is not None:
            raise ValueError("a power-law exponent draws the count k of each image: give a count or an exponent, "
                             "not both")
    if exponent is not None:
        if isinstance(exponent, bool) or not isinstance(exponent, numbers.Real) or not (
                math.isfinite(exponent) and exponent > 0):
            raise ValueError(f"power-law exponent must be a finite number > 0, got {exponent!r}")
        if sampling == "exact":
            raise ValueError("the exact grid has a fixed count; use uniform or gaussian with an exponent")


@dataclass(frozen=True)
class PixelSampler:
    """Chooses which pixels of each image are observed.

    sampling: ``exact`` (fixed grid), ``uniform`` (k distinct locations, new every call) or
        ``gaussian`` (k centre-weighted draws with replacement, std = side/6).
    count: fixed number of pixels k for ``uniform``/``gaussian``; ``None`` means the exact
        grid's count, so that exact and uniform observe the same number of pixels.
    exponent: when set, k is drawn per image from the power law k = floor((1 - X)·D),
        X ~ Power(exponent), so E[k] ≈ D / (exponent + 1) (Single decoder method; ``mean_count``).
    """

    sampling: str
    image_size: int
    count: int | None = None
    exponent: float | None = None
    grid_stride: int = 4

    def __post_init__(self) -> None:
        check_sampling(self.sampling, self.count, self.exponent)
        if self.image_size < 1:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        exact_grid(self.image_size, self.grid_stride)  # validates the stride
        if self.count is not None and self.count > self.pixels:
            raise ValueError(f"pixel count k must be at most the image's D = H·W = {self.pixels} pixels, "
                             f"got {self.count}")

    @property
    def pixels(self) -> int:
        return self.image_size * self.image_size

    @property
    def fixed_count(self) -> int:
        """The constant k used when no exponent is given."""
        if self.count is not None:
            return self.count
        return int(exact_grid(self.image_size, self.grid_stride).sum())

    @property
    def mean_count(self) -> float:
        """E[k]: the constant k, or the power law's mean Σ_{j=1..D} P(k ≥ j) = Σ (1 − j/D)^a, which
        the floor puts about half a pixel below D/(a+1)."""
        if self.exponent is None:
            return float(self.fixed_count)
        j = torch.arange(1, self.pixels + 1, dtype=torch.float64)
        return float(((1 - j / self.pixels) ** self.exponent).sum())

    def sample_counts(self, batch: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """Number of observed pixels per image, int64 (batch,)."""
        if self.exponent is None:
            return torch.full((batch,), self.fixed_count, dtype=torch.long, device=device)
        # numpy's power(a) by inversion: X = U^(1/a) has density a·x^(a-1) on [0, 1].
        u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
        x = u.pow(1.0 / self.exponent)
        return torch.floor((1.0 - x) * self.pixels).long().clamp_(0, self.pixels)

    def _most(self, counts: torch.Tensor) -> int:
        """How many points to draw per image: enough for the batch's largest k.

        On a GPU, reading the largest k would sync with the host every step, so the bound
        D (or the fixed k) is used instead; on a CPU the read is free and saves work.
        """
        if self.exponent is None:
            return self.fixed_count
        if counts.device.type == "cpu":
            return int(counts.max()) if len(counts) else 0
        return self.pixels

    def sample(self, batch: int, generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
        """Float mask (batch, 1, H, W) with 1 at observed pixels."""
        device = torch.device(device)
        size, pixels = self.image_size, self.pixels
        if self.sampling == "exact":
            grid = exact_grid(size, self.grid_stride).to(device)
            return grid.expand(batch, 1, size, size).float()
        counts = self.sample_counts(batch, generator, device)
        most = self._most(counts)
        keep = torch.arange(most, device=device)[None, :] < counts[:, None]
        if self.sampling == "uniform":
            # The `most` smallest of D random keys per row are distinct pixels in random order.
            keys = torch.rand(batch, pixels, generator=generator, device=device)
            index = keys.topk(most, dim=1, largest=False).indices
        else:
            centre, std = (size - 1) / 2.0, size / 6.0
            rc = torch.randn(batch, most, 2, generator=generator, device=device) * std + centre
            rc = rc.round().clamp_(0, size - 1).long()
            index = rc[..., 0] * size + rc[..., 1]
        # Add, then threshold: gaussian draws repeat pixels (with replacement).
        flat = torch.zeros(batch, pixels, device=device).scatter_add_(1, index, keep.float()) > 0
        return flat.view(batch, 1, size, size).float()


def conditioning(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """m = channel concat of [mask, x ⊙ mask]: (B, 1 + C, H, W)."""
    if mask.shape[0] != x.shape[0] or mask.shape[-2:] != x.shape[-2:] or mask.shape[1] != 1:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not fit images {tuple(x.shape)}")
    return torch.cat([mask, x * mask], dim=1)
