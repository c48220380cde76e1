"""Second stage of a VQ-VAE: a Gated PixelCNN prior p(z) over the discrete code map.

The VQ-VAE (thesis §2.2.2) is trained in two stages: first encoder, codebook and decoder with an
arbitrary prior, then an autoregressive prior over the code indices z (B, h, w).  This module is
that prior, the Gated PixelCNN of van den Oord et al. (2016), "Conditional Image Generation with
PixelCNN Decoders" (thesis §2.5.1):

    p(z) = ∏_{i,j} p(z_ij | z_<(i,j))      (raster order: all earlier rows, then the left of the row)

Causality without weight masks: every convolution is an ordinary convolution whose kernel only
covers the allowed half-plane, aligned by padding and cropping, so no weight can ever leak.

* vertical stack: kernel (k//2+1, k), padded so that output row i reads rows i-k//2 … i.  In the
  first layer the result is shifted down by one row, so the vertical features at (i, j) depend on
  rows < i only, in every layer.  (It therefore never sees the current row at all, neither its
  past nor its future; the horizontal stack supplies the current row.)
* horizontal stack: kernel (1, k//2+1), padded so that column j reads columns j-k//2 … j of its own
  row.  In the first layer ('A' mask) it is shifted right by one column, excluding the current code;
  later layers ('B' mask) may include column j, whose features already exclude the current code.
* vertical → horizontal link: a 1×1 convolution of the vertical pre-activations is added to the
  horizontal pre-activations; this is what removes the blind spot of the original PixelCNN.
* gated activation tanh(a) ⊙ σ(b) on both stacks, residual connection on the horizontal stack from
  the second layer on (in the first layer the input is the current code itself, so a residual
  would leak it).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.checks import raise_problems
from benchmark.models import eval_mode


__all__ = ["PriorConfig", "GatedPixelCNN", "PriorDivergedError", "PriorResult", "code_perplexity", "frequency_nats",
           "check_kernel_width", "train_prior", "widest_kernel"]


@dataclass(frozen=True)
class PriorConfig:
    """Size of the prior: K codes, channel width, number of gated layers, (odd) kernel size."""

    num_codes: int
    hidden: int = 64
    layers: int = 8
    kernel: int = 5

    def __post_init__(self) -> None:
        problems = []
        if self.num_codes < 2:
            problems.append(f"num_codes must be >= 2 (a prior over one code is trivial), got {self.num_codes}")
        problems += [f"{name} must be >= 1, got {value}" for name, value in (("hidden", self.hidden),
                                                                             ("layers", self.layers)) if value < 1]
        if self.kernel < 1 or self.kernel % 2 == 0:
            problems.append(f"kernel must be a positive odd integer, got {self.kernel}")
        raise_problems(problems)


def _gate(x: torch.Tensor) -> torch.Tensor:
    """Gated activation tanh(a) ⊙ sigmoid(b), a and b being the two channel halves of x."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One gated layer with a vertical and a horizontal stack; mask 'A' (first) or 'B' (later)."""

    def __init__(self, hidden: int, kernel: int, first: bool) -> None:
        super().__init__()
        self.first, self.half = first, kernel // 2
        self.v_conv = nn.Conv2d(hidden, 2 * hidden, (self.half + 1, kernel))
        self.h_conv = nn.Conv2d(hidden, 2 * hidden, (1, self.half + 1))
        self.link = nn.Conv2d(2 * hidden, 2 * hidden, 1)  # vertical → horizontal
        self.h_out = nn.Conv2d(hidden, hidden, 1)

    def forward(self, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = v.shape[-2:]
        # F.pad order: (left, right, top, bottom).  Top padding only: row i reads rows i-half … i.
        v_pre = self.v_conv(F.pad(v, (self.half, self.half, self.half, 0)))
        h_pre = self.h_conv(F.pad(h, (self.half, 0, 0, 0)))  # column j reads columns j-half … j
        if self.first:
            # Shift down one row / right one column so that the current code is excluded (mask 'A');
            # the later layers then inherit "rows < i" (vertical) and "columns < j" (horizontal).
            v_pre = F.pad(v_pre, (0, 0, 1, 0))[..., :height, :]
            h_pre = F.pad(h_pre, (1, 0, 0, 0))[..., :width]
        h_new = self.h_out(_gate(h_pre + self.link(v_pre)))
        return _gate(v_pre), h_new if self.first else h + h_new


def _check_codes(codes: torch.Tensor, num_codes: int, name: str = "codes") -> torch.Tensor:
    """Validate a (B, h, w) integer code map in [0, K) and return it as int64."""
    codes = torch.as_tensor(codes)
    if codes.dim() != 3:
        raise ValueError(f"{name} must be a 3-D (B, h, w) map of code indices, got shape {tuple(codes.shape)}")
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer code indices, got dtype {codes.dtype}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= num_codes):
        raise ValueError(f"{name} must lie in [0, {num_codes}), got range [{int(codes.min())}, {int(codes.max())}]")
    return codes.long()


class GatedPixelCNN(nn.Module):
    """Autoregressive prior over (B, h, w) code maps with values in [0, K); logits (B, K, h, w)."""

    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.num_codes, config.hidden)
        self.layers = nn.ModuleList(GatedLayer(config.hidden, config.kernel, first=i == 0) for i in range(config.layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(config.hidden, config.hidden, 1), nn.ReLU(),
                                  nn.Conv2d(config.hidden, config.num_codes, 1))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """Logits (B, K, h, w) of p(z_ij | z_<(i,j)) for every position, all at once."""
        codes = _check_codes(codes, self.config.num_codes)
        x = self.embedding(codes.to(self.embedding.weight.device)).permute(0, 3, 1, 2)
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h)
        return self.head(h)  # only the horizontal stack sees the full causal context

    def nll(self, codes: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood in nats per code."""
        codes = _check_codes(codes, self.config.num_codes)
        logits = self(codes)
        return F.cross_entropy(logits, codes.to(logits.device))

    @torch.no_grad()
    def sample(self, n: int, shape: tuple[int, int], generator: torch.Generator | None = None,
               device: torch.device | str | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Draw n code maps (n, h, w) int64 in raster order: h·w forward passes, all n at once.

        Logits are divided by ``temperature`` (< 1 sharpens).  The categorical draw happens on the
        generator's device, so a CPU generator gives the same samples whatever the model's device.
        """
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        if int(n) < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if len(shape) != 2 or min(int(s) for s in shape) < 1:
            raise ValueError(f"shape must be (h, w) with positive sizes, got {shape!r}")
        height, width = int(shape[0]), int(shape[1])
        device = torch.device(device) if device is not None else self.embedding.weight.device
        draw_device = generator.device if generator is not None else device
        with eval_mode(self):
            codes = torch.zeros(int(n), height, width, dtype=torch.long, device=device)
            for i in range(height):
                for j in range(width):
                    # Positions ≥ (i, j) are still placeholders; causality makes them irrelevant here.
                    logits = self(codes)[:, :, i, j].double()
                    # Shifted to a top logit of 0 before the division: a tiny temperature then gives a one-hot
                    # draw, not inf / inf = NaN.
                    probs = torch.softmax((logits - logits.amax(dim=1, keepdim=True)) / temperature, dim=1)
                    drawn = torch.multinomial(probs.to(draw_device), 1, generator=generator)
                    codes[:, i, j] = drawn.squeeze(1).to(device)
        return codes


@dataclass
class PriorResult:
    """The model of the epoch chosen on held-out training codes, and its validation scores;
    ``uniform_nats`` = ln K is the baseline."""

    model: GatedPixelCNN
    val_nll_nats: float
    val_bits_per_code: float
    uniform_nats: float
    best_epoch: int
    history: list[dict] = field(default_factory=list)


@torch.no_grad()
def _mean_nll(model: GatedPixelCNN, codes: torch.Tensor, batch_size: int, device: torch.device) -> float:
    """NLL in nats per code over a whole set, weighted by batch size (the last batch may be short)."""
    model.eval()
    total = 0.0
    for start in range(0, len(codes), batch_size):
        batch = codes[start:start + batch_size].to(device)
        total += float(model.nll(batch)) * len(batch)
    return total / len(codes)


def code_perplexity(codes: torch.Tensor | np.ndarray) -> float:
    """exp of the entropy of the codes' frequencies: how many codes are in effect used (K when all
    are equally frequent, 1 when one code is everything). A codebook that collapsed onto a few
    codes is easy for a prior to predict, so its NLL is low for a bad reason; this says so."""
    counts = torch.bincount(torch.as_tensor(codes).flatten().long()).double()
    p = counts[counts > 0] / counts.sum()
    return math.exp(-(p * p.log()).sum().item())


def frequency_nats(train_codes: torch.Tensor | np.ndarray, val_codes: torch.Tensor | np.ndarray,
                   num_codes: int) -> float:
    """NLL in nats per code of the validation codes under a prior that knows only how often each code
    occurs in the training codes (add-one smoothed, so that a code unseen there costs a finite amount):
    the score a PixelCNN, which also sees each code's neighbours, must beat."""
    counts = torch.bincount(torch.as_tensor(train_codes).flatten().long(), minlength=num_codes).double() + 1
    log_p = (counts / counts.sum()).log()
    return -log_p[torch.as_tensor(val_codes).flatten().long()].mean().item()


class PriorDivergedError(ValueError):
    """The prior's held-out NLL was not finite at any epoch, or at its best far above a uniform prior's:
    nothing was learnt to keep."""


# A best held-out NLL above this many times a uniform prior's (ln K nats a code) is a blown-up loss: a
# PixelCNN starts near ln K, and any that learnt something is below it.
DIVERGED_TIMES_UNIFORM = 10


def widest_kernel(height: int, width: int) -> int:
    """Widest useful kernel for h×w code maps: half of it (k // 2) already reaches every earlier code."""
    return 2 * max(height, width) - 1


def check_kernel_width(kernel: int, height: int, width: int) -> None:
    """A ``ValueError`` for a kernel wider than ``widest_kernel`` of h×w code maps."""
    if kernel > (widest := widest_kernel(height, width)):
        raise ValueError(f"kernel {kernel} is wider than {height}×{width} code maps can use: past {widest} "
                         f"its extra weights read only padding, so give a kernel of at most {widest}")


def train_prior(train_codes: torch.Tensor | np.ndarray, val_codes: torch.Tensor | np.ndarray,
                config: PriorConfig, epochs: int = 30, batch_size: int = 128, lr: float = 1e-3,
                seed: int = 0, device: torch.device | str = "cpu",
                on_epoch: Callable[[dict], None] | None = None, held_out: float = 0.1) -> PriorResult:
    """Fit a Gated PixelCNN prior to code maps by maximum likelihood (Adam), keeping the best epoch.

    The epoch is chosen on a ``held_out`` fraction of the training maps, not on the validation
    maps: a minimum picked on the validation set would flatter its own score.  ``history`` holds
    one dict per epoch: epoch, train_nll, held_out_nll, val_nll (nats), val_bits_per_code;
    ``on_epoch`` receives the same dict (for logging).  Seeded: initialisation, the held-out maps
    and shuffling come from ``seed`` without touching the global RNG state.
    """
    train = _check_codes(train_codes, config.num_codes, "train_codes")
    val = _check_codes(val_codes, config.num_codes, "val_codes")
    if len(train) < 2 or len(val) == 0:
        raise ValueError("need at least two training code maps (some are held out to choose the epoch) "
                         "and one validation code map")
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must be in (0, 1), got {held_out}")
    check_kernel_width(config.kernel, *train.shape[-2:])
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}")
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):  # seeded init, global RNG left as it was
        torch.manual_seed(seed)
        model = GatedPixelCNN(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    shuffle = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=shuffle)
    held = min(len(train) - 1, max(1, round(held_out * len(train))))
    train, selection = train[order[held:]], train[order[:held]]

    history: list[dict] = []
    best: dict | None = None
    best_state = copy.deepcopy(model.state_dict())
    for epoch in range(1, epochs + 1):
        model.train()
        total = 0.0
        for index in torch.randperm(len(train), generator=shuffle).split(batch_size):
            batch = train[index].to(device)
            loss = model.nll(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        val_nll = _mean_nll(model, val, batch_size, device)
        record = {"epoch": epoch, "train_nll": total / len(train),
                  "held_out_nll": _mean_nll(model, selection, batch_size, device), "val_nll": val_nll,
                  "val_bits_per_code": val_nll / math.log(2)}
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if best is None or record["held_out_nll"] < best["held_out_nll"] or not math.isfinite(best["held_out_nll"]):
            best, best_state = record, copy.deepcopy(model.state_dict())
    if not math.isfinite(best["held_out_nll"]):
        raise PriorDivergedError(f"the prior's loss diverged: its held-out NLL was not finite after any of its "
                                 f"{epochs} epoch{'s' * (epochs != 1)}; a lower --lr (now {lr:g}) may fit")
    uniform = math.log(config.num_codes)
    if best["held_out_nll"] > DIVERGED_TIMES_UNIFORM * uniform:  # finite, yet far worse than guessing
        raise PriorDivergedError(f"the prior's loss diverged: its best held-out NLL, {best['held_out_nll']:.4g} nats "
                                 f"a code, is over {DIVERGED_TIMES_UNIFORM} times a uniform prior's (ln K = "
                                 f"{uniform:.4g}); a lower --lr (now {lr:g}) may fit")
    model.load_state_dict(best_state)
    model.eval()
    return PriorResult(model=model, val_nll_nats=best["val_nll"], val_bits_per_code=best["val_bits_per_code"],
                       uniform_nats=uniform, best_epoch=best["epoch"], history=history)
