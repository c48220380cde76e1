"""Loss balancing: fixed weights (W1, W2, β) or SoftAdapt re-weighting from recent history.

SoftAdapt comes from the ``softadapt`` package (Keras 3). It is imported only when a
SoftAdapt balancer is built, with ``KERAS_BACKEND=torch`` set first (``load_softadapt``), because
the import takes seconds and selects Keras's backend for the whole process.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from benchmark.checks import check_choice, problems_of, raise_problems

SOFTADAPT_VARIANTS = {"loss-weighted": "LossWeightedSoftAdapt", "normalized": "NormalizedSoftAdapt",
                      "original": "SoftAdapt"}
DEFAULT_VARIANT = "loss-weighted"  # the thesis's
# The thesis's SoftAdapt β per family (SPEC, "Loss balancing").
DEFAULT_SOFTADAPT_BETA = {"vae": 1e-4, "vq-vae": 5e-3}
# The finite-difference order of SoftAdapt's loss slopes. Left unset, the package takes
# len(history) - 1 = 99, which it rejects (odd orders above 5 are not defined there) and which
# would amplify the noise of per-step losses enormously. 5 is the highest order the package
# tabulates: the slope comes from the last 6 values, the loss weighting from the whole window.
SOFTADAPT_ORDER = 5


@dataclass(frozen=True)
class BalanceConfig:
    """How the named loss terms are weighted.

    Fixed: recon·w1 + recon_cond·w2 + latent. SoftAdapt: the package's convex weights,
    recomputed every ``update_every`` steps from the last ``window`` values of each term
    (uniform until the first update). ``beta`` is inside the latent term (the model trains it:
    β·KL, or codebook + β·commitment for a VQ-VAE). ``beta`` and ``softadapt_beta`` left unset
    (None) mean the family's (``DEFAULT_BETA``, ``DEFAULT_SOFTADAPT_BETA``), which
    ``Configuration.balance`` fills in: one default could not fit both families.
    """

    w1: float = 1.0
    w2: float = 1.0
    beta: float | None = None
    softadapt: bool = False
    variant: str = DEFAULT_VARIANT
    softadapt_beta: float | None = None
    update_every: int = 100
    window: int = 100

    def __post_init__(self) -> None:
        raise_problems(self._problems())
        # frozen: values are made plain Python (a NumPy scalar from a grid, too) once, here
        object.__setattr__(self, "softadapt", bool(self.softadapt))
        for name in ("w1", "w2", "beta", "softadapt_beta"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, float(getattr(self, name)))

    def _problems(self) -> list[str]:
        """Every problem of these settings, each a message."""
        problems = []
        flag = isinstance(self.softadapt, (bool, np.bool_))
        if not flag:  # "no" would be true
            problems.append(f"softadapt must be True or False, got {self.softadapt!r}")
        for name in ("w1", "w2", "beta", "softadapt_beta"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                                      or not 0 <= value < math.inf):
                problems.append(f"{name} must be a finite number >= 0, got {value!r}")
        problems += problems_of(check_choice, "SoftAdapt variant", self.variant, SOFTADAPT_VARIANTS)
        if self.update_every < 1 or self.window < 2:
            problems.append(f"SoftAdapt needs update_every >= 1 and window >= 2, got "
                            f"update_every={self.update_every}, window={self.window}")
        if flag and not self.softadapt and (self.softadapt_beta is not None or self.variant != DEFAULT_VARIANT):
            problems.append("softadapt_beta and variant are SoftAdapt's settings: they need softadapt=True")
        return problems

    def fixed_weights(self, terms: tuple[str, ...]) -> dict[str, float]:
        table = {"recon": self.w1, "recon_cond": self.w2, "latent": 1.0}  # β: in the latent term
        return {name: table[name] for name in terms}


def idle_softadapt_note(balances: Iterable[BalanceConfig], train_images: int, batch_size: int,
                        epochs: int) -> str | None:
    """A note when SoftAdapt would never re-weight: a fold trains no more steps than its first update
    needs (an update after the last step weighs none; the first needs two steps' losses)."""
    steps = epochs * math.ceil(train_images / batch_size)
    idle = sorted({b.update_every for b in balances if b.softadapt and max(b.update_every, 2) >= steps})
    if not idle:
        return None
    return (f"note: SoftAdapt re-weights every {idle[0]} step{'s' * (idle[0] != 1)}, but a fold trains only "
            f"{steps} step{'s' * (steps != 1)} here "
            f"({epochs} epoch{'s' * (epochs != 1)} of {train_images} images at batch {batch_size}): its configurations keep "
            f"uniform weights")


def load_softadapt(variant: str) -> type:
    """The package's SoftAdapt class for ``variant`` (imports Keras on the torch backend).

    It computes on our torch tensors, so Keras must run on torch: a ``KERAS_BACKEND`` the user set
    for other work is set aside while Keras is imported (it reads it then alone), and put back for
    the processes this one starts; ``ValueError`` when Keras was imported already, on another
    backend (a notebook's own Keras)."""
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != "torch":
            raise ValueError(f"SoftAdapt runs on Keras's torch backend, but this process imported Keras on "
                             f"{keras.backend.backend()!r} first: set KERAS_BACKEND=torch before importing it")
    given = os.environ.get("KERAS_BACKEND")
    os.environ["KERAS_BACKEND"] = "torch"
    try:
        import softadapt
    finally:
        if given is None:
            del os.environ["KERAS_BACKEND"]
        else:
            os.environ["KERAS_BACKEND"] = given

    return getattr(softadapt, SOFTADAPT_VARIANTS[variant])


class LossBalancer:
    """Combines named loss terms into the training loss and tracks the weights used.

    ``weights``: those the next step trains with; ``applied``: those the last step trained with
    (what a fold's history records: an update after an epoch's last step weighs the next epoch's).
    """

    def __init__(self, config: BalanceConfig, terms: tuple[str, ...]) -> None:
        self.config, self.terms = config, terms
        self._algorithm = None
        if config.softadapt:
            self.weights = {name: 1.0 / len(terms) for name in terms}
            if config.softadapt_beta is None:
                raise ValueError("SoftAdapt's β is unset: Configuration.balance fills in its family's, "
                                 "or pass softadapt_beta")
            self._algorithm = load_softadapt(config.variant)(beta=config.softadapt_beta)
            self._history: list[torch.Tensor] = []
            self._step = 0
        else:
            self.weights = config.fixed_weights(terms)
        self.applied = self.weights

    def combine(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of the terms; with SoftAdapt, records them and updates the weights."""
        loss = sum(self.weights[name] * terms[name] for name in self.terms)
        self.applied = self.weights
        if self._algorithm is not None:
            self._history.append(torch.stack([terms[name].detach() for name in self.terms]))
            self._history = self._history[-self.config.window:]
            self._step += 1
            if self._step % self.config.update_every == 0 and len(self._history) >= 2:
                self._update()
        return loss

    def _update(self) -> None:
        history = torch.stack(self._history).float().cpu()  # one sync per update, not per step
        self._algorithm.accuracy_order = min(SOFTADAPT_ORDER, len(history) - 1)  # fewer values early on
        new = self._algorithm.get_component_weights(*history.numpy().T, verbose=False)  # numpy: Keras warns on tensors
        new = torch.as_tensor(new).tolist()
        if not any(map(math.isnan, new)):  # keep the old weights if SoftAdapt returns NaN
            self.weights = dict(zip(self.terms, new))
