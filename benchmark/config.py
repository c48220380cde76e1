"""Configuration dataclasses: what is trained (model × method) and how (training settings)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

import torch

from benchmark.balancing import DEFAULT_SOFTADAPT_BETA, BalanceConfig
from benchmark.checks import FieldChecks, check_choice, field_problems, problems_of, raise_problems
from benchmark.conditioning import SAMPLINGS, PixelSampler, check_sampling
from benchmark.models import DEFAULT_BETA, METHODS, model_config

DEVICES = ("auto", "cpu", "cuda")
# auto: bf16 autocast on CUDA (Ampere and later), float32 on CPU. bf16 on a CPU with AVX-512 BF16 (or AMX) trains
# faster but changes the numbers, so there it is a choice, not the default.
PRECISIONS = ("auto", "fp32", "bf16")
# Datasets whose images have one size whatever the options.
FIXED_IMAGE_SIDE = {"mnist5k": 32, "digits": 32, "mnist": 32, "cifar10": 32}
# The sides CelebA's and a folder's images are resized to without an image_size (a suite and a search give none).
CELEBA_IMAGE_SIDE = 64
FOLDER_IMAGE_SIDE = 32
DATASET_NAMES: tuple[str, ...] = ("mnist5k", "digits", "mnist", "cifar10", "celeba")
FOLDER_PREFIX = "folder:"


def default_image_side(dataset: str) -> int:
    """The side of ``dataset``'s images loaded without an image_size, as a suite's and a search's are."""
    return FIXED_IMAGE_SIDE.get(dataset) or (CELEBA_IMAGE_SIDE if dataset == "celeba" else FOLDER_IMAGE_SIDE)


def check_dataset_name(name: str) -> None:
    """``ValueError`` for a name that is none of ``DATASET_NAMES`` nor ``folder:PATH``."""
    if not name.startswith(FOLDER_PREFIX):
        check_choice("dataset", name, DATASET_NAMES, f", {FOLDER_PREFIX}PATH")
    elif name == FOLDER_PREFIX:  # `suites` too, which takes a path it cannot see for one on another machine
        raise ValueError(f"dataset {name!r} names no folder; use {FOLDER_PREFIX}PATH")


def softadapt_weights_problem(weights: dict[str, float]) -> str:
    """The message refusing fixed ``weights`` (name: value) beside SoftAdapt, which sets the weights itself."""
    given = ", ".join(f"{name} = {value:g}" for name, value in weights.items())
    return (f"SoftAdapt weighs the loss terms itself: drop {given} (w1 and w2 are fixed weights; β may stay: it is "
            "inside the latent term)")


def second_decoder_weight_problem(method: str) -> str:
    """The message refusing w2 on ``method``, which has no second decoder for it to weigh."""
    return (f"w2 weighs the Multidecoder's second (conditioned) decoder; the {method} method has one decoder, "
            "weighed by w1")


@dataclass(frozen=True)
class MethodConfig:
    """A method and its conditioning and loss-balancing parameters.

    Multidecoder: any sampling (the thesis grid: exact, uniform), a constant count k >= 1 (default:
    the exact grid's).
    Single decoder: sampling in {uniform, gaussian}, power-law counts with ``exponent``.
    """

    method: str = "baseline"
    sampling: str | None = None
    exponent: float | None = None
    count: int | None = None
    balance: BalanceConfig = field(default_factory=BalanceConfig)

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        raise_problems(self._problems())
        # frozen: plain Python numbers (a NumPy scalar from a grid, too), as ids and storage print them
        if self.count is not None:
            object.__setattr__(self, "count", int(self.count))
        if self.exponent is not None:
            object.__setattr__(self, "exponent", float(self.exponent))

    def _problems(self) -> list[str]:
        """Every problem of this method's parameters that the others do not hide."""
        problems = []
        b = self.balance
        # w2 of a method without a second decoder is named below, once
        weights = (("w1", b.w1), ("w2", b.w2)) if self.method == "multidecoder" else (("w1", b.w1),)
        if b.softadapt and any(value != 1.0 for _, value in weights):  # ignored in training, yet would pick the epoch
            problems.append(softadapt_weights_problem({name: value for name, value in weights if value != 1.0}))
        if self.method != "multidecoder" and b.w2 != 1.0:
            problems.append(second_decoder_weight_problem(self.method))
        if not b.softadapt and all(value == 0 for _, value in weights):  # a negative one is named by its own check
            zero = " and ".join(f"{name} = 0" for name, _ in weights)
            problems.append(f"{zero} leave{'s' * (len(weights) == 1)} no reconstruction term: no decoder would learn, "
                            f"and the epoch would be chosen on the latent term alone; give "
                            f"{' or '.join(name for name, _ in weights)} > 0")
        if self.method == "baseline":
            if self.sampling is not None or self.exponent is not None or self.count is not None:
                problems.append("the baseline takes no sampling, exponent or count")
            return problems
        if self.sampling is None:  # the checks below are of a sampling's parameters
            choices = "uniform or gaussian" if self.method == "single" else "exact, uniform or gaussian"
            return [*problems, f"method {self.method!r} needs a sampling: {choices}"]
        # which parameters the method takes (the sampling's own checks assume them right), and a mistyped
        # sampling, whatever else is wrong
        shape = problems_of(check_choice, "sampling", self.sampling, SAMPLINGS)
        if self.method == "single":
            if self.exponent is None:
                shape.append("the single decoder needs a power-law exponent")
            if self.count is not None:
                shape.append("the single decoder draws each image's count k from its power law: it takes no count")
            if self.sampling == "exact":
                shape.append("the single decoder draws a power-law count of pixels: use uniform or gaussian "
                             "sampling, not the exact grid (its count is fixed)")
        elif self.exponent is not None:
            shape.append("the multidecoder uses a constant count, not a power-law exponent")
        if not shape:
            shape += problems_of(check_sampling, self.sampling, self.count, self.exponent)
        if not shape and self.count == 0:  # the only constant count is the Multidecoder's (the exact grid's is never 0)
            shape.append("count k = 0 gives the Multidecoder's second decoder no pixel to condition on, so it "
                         "learns what the first does: give k >= 1, or no count for the exact grid's")
        return problems + shape

    def sampler(self, image_size: int) -> PixelSampler | None:
        if self.method == "baseline":
            return None
        return PixelSampler(self.sampling, image_size, count=self.count, exponent=self.exponent)


@dataclass(frozen=True)
class Configuration:
    """One row of the thesis grid: a model family and config trained with one method."""

    family: str
    config: int
    method: MethodConfig = field(default_factory=MethodConfig)

    def __post_init__(self) -> None:
        model_config(self.family, self.config)  # validates family and config

    @property
    def balance(self) -> BalanceConfig:
        """The loss balance that trains: the method's, its unset β's the family's. Resolved on
        each use, not stored, so a method reused for another family takes that family's."""
        return family_balance(self.method.balance, self.family)

    @property
    def id(self) -> str:
        """Stable, human-readable key, e.g. ``vq-vae/1/single/gaussian/a=40``."""
        m, b = self.method, self.balance
        parts = [self.family, str(self.config), m.method]
        if m.sampling:
            parts.append(m.sampling)
        if m.exponent is not None:
            parts.append(f"a={m.exponent:g}")
        if m.count is not None:
            parts.append(f"k={m.count}")
        if b.softadapt:
            name = "softadapt" if b.variant == "loss-weighted" else f"softadapt-{b.variant}"
            if b.softadapt_beta != DEFAULT_SOFTADAPT_BETA[self.family]:
                name += f"(b={b.softadapt_beta:g})"
            parts.append(name)
            if b.beta != DEFAULT_BETA[self.family]:  # inside the latent term that SoftAdapt weighs
                parts.append(f"beta={b.beta:g}")
        elif (b.w1, b.w2, b.beta) != (1.0, 1.0, DEFAULT_BETA[self.family]):
            parts.append(f"w={b.w1:g},{b.w2:g},{b.beta:g}")
        return "/".join(parts)

    def flat(self) -> dict:
        """Flat dict of every parameter, for tables and storage; a weight that has no effect
        (W₁, W₂ under SoftAdapt; W₂ without a second decoder) is None, not a misleading 1."""
        m, b = self.method, self.balance
        fixed = not b.softadapt
        return {"config_id": self.id, "family": self.family, "config": self.config, "method": m.method,
                "sampling": m.sampling or "", "exponent": m.exponent, "count": m.count,
                "softadapt": b.softadapt, "w1": b.w1 if fixed else None,
                "w2": b.w2 if fixed and m.method == "multidecoder" else None, "beta": b.beta,
                "softadapt_beta": None if fixed else b.softadapt_beta, "variant": "" if fixed else b.variant}


def family_balance(balance: BalanceConfig, family: str) -> BalanceConfig:
    """``balance`` with its unset β, and under SoftAdapt its unset SoftAdapt β, the family's."""
    softadapt_beta = balance.softadapt_beta
    if balance.softadapt and softadapt_beta is None:
        softadapt_beta = DEFAULT_SOFTADAPT_BETA[family]
    return replace(balance, beta=DEFAULT_BETA[family] if balance.beta is None else balance.beta,
                   softadapt_beta=softadapt_beta)


def check_device(device: str) -> None:
    """Raise ``ValueError`` unless ``device`` is auto, cpu, cuda or cuda:N."""
    if not re.fullmatch(r"cuda:\d+", device):
        check_choice("device", device, DEVICES, ", cuda:N")


# The checks of ``TrainConfig``'s fields (``field_problems``), which a search's settings and options share.
TRAIN_CHECKS: FieldChecks = {
    "epochs": (int, "a number (an integer)", lambda v: [] if v >= 1 else [f"epochs must be >= 1, got {v}"]),
    "batch_size": (int, "a number (an integer)", lambda v: [] if v >= 1 else [f"batch size must be >= 1, got {v}"]),
    "lr": ((int, float), "a number", lambda v: [] if v > 0 and math.isfinite(v) else [
        f"learning rate must be a finite number > 0, got {v}"]),
    "weight_decay": ((int, float), "a number", lambda v: [] if v >= 0 and math.isfinite(v) else [
        f"weight_decay must be a finite number >= 0, got {v}"]),
    "device": (str, "a name", lambda v: problems_of(check_device, v)),
    "precision": (str, "a name", lambda v: problems_of(check_choice, "precision", v, PRECISIONS)),
}


@dataclass(frozen=True)
class TrainConfig:
    """How one fold is trained (the thesis: AdamW, lr 1e-3, batch 128, 100 epochs)."""

    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-2
    device: str = "auto"
    precision: str = "auto"  # training steps under bf16 autocast: auto (on an Ampere or later GPU) | fp32 | bf16

    def __post_init__(self) -> None:
        raise_problems(self._problems())

    def _problems(self) -> list[str]:
        """Every problem of these settings, each a message, in the fields' order."""
        return field_problems(self, TRAIN_CHECKS)[0]

    def autocast(self, device: torch.device) -> bool:
        """Whether the training steps run under bf16 autocast on ``device``."""
        # auto: only on a GPU with bf16 units (compute capability 8.0, Ampere); older ones emulate it, slower
        return self.precision == "bf16" or (self.precision == "auto" and device.type == "cuda"
                                            and torch.cuda.get_device_capability(device)[0] >= 8)

    def effective_precision(self, device: torch.device) -> str:
        """``fp32`` or ``bf16``: the precision the training steps run in on ``device``."""
        return "bf16" if self.autocast(device) else "fp32"
