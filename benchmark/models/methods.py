"""The three methods on top of either family: baseline, Multidecoder, Single decoder.

A family (Gaussian / VQ) supplies the encoder, the latent and ``make_decoder``; the method
decides which decoders exist and what the loss terms are. One class covers every pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from benchmark.checks import check_choice
from benchmark.conditioning import conditioning
from benchmark.models.latent import LatentCode

METHODS = ("baseline", "multidecoder", "single")


@dataclass
class ModelOutput:
    """Named loss terms on the model's training scale, plus the reconstructions."""

    terms: dict[str, torch.Tensor]      # "recon", "latent" (at the model's β), and "recon_cond" for Multidecoder
    x_hat: torch.Tensor                 # decoder 1 (or the single decoder under its mask)
    x_hat_cond: torch.Tensor | None = None


class MultitaskVAE(nn.Module):
    """A VAE of either family trained with one of the three methods.

    baseline:      x → z → decoder(z)
    multidecoder:  x → z → decoder(z) and decoder_cond(z, m); both get the same z / z_q
    single:        x → z → decoder(z, m); an all-zero mask makes it the unconditioned decoder
    """

    def __init__(self, latent: nn.Module, method: str, channels: int, image_size: int, beta: float) -> None:
        super().__init__()
        check_choice("method", method, METHODS)
        self.method, self.channels, self.image_size = method, channels, image_size
        self.beta = beta  # of the latent term in the training loss (LatentCode.objective)
        self.latent_model = latent
        cond_dim = (channels + 1) * image_size * image_size
        self.decoder = latent.make_decoder(cond_dim if method == "single" else 0)
        self.decoder_cond = latent.make_decoder(cond_dim) if method == "multidecoder" else None

    @property
    def conditioned(self) -> bool:
        return self.method != "baseline"

    @property
    def loss_terms(self) -> tuple[str, ...]:
        """The names of ``ModelOutput.terms``, which a loss weighs: a second decoder adds ``recon_cond``."""
        return ("recon", "recon_cond", "latent") if self.method == "multidecoder" else ("recon", "latent")

    @property
    def recon_scale(self) -> float:
        """Factor from the training-scale reconstruction term to per-pixel MSE."""
        if self.latent_model.recon_reduction == "sum":
            return 1.0 / (self.channels * self.image_size * self.image_size)
        return 1.0

    def reconstruction_loss(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        squared = (x_hat.float() - x).pow(2)  # float32 sums even when the decoder ran in bf16
        if self.latent_model.recon_reduction == "sum":
            return squared.flatten(1).sum(1).mean()
        return squared.mean()

    @property
    def noise_dim(self) -> int:
        """Size of the per-image noise the encoder takes in training and validation (0: none)."""
        return self.latent_model.noise_dim

    def encode(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> LatentCode:
        return self.latent_model.encode(x, noise)

    def decode(self, z: torch.Tensor, x: torch.Tensor | None = None, mask: torch.Tensor | None = None,
               conditioned: bool = False) -> torch.Tensor:
        """Unconditioned reconstruction, or the conditioned one when ``conditioned`` (needs x, mask)."""
        if conditioned and (x is None or mask is None):
            raise ValueError("the conditioned decode needs the images x and their mask")
        if not conditioned and (x is not None or mask is not None):
            raise ValueError("x and mask condition the decode only with conditioned=True; without it the "
                             "unconditioned reconstruction ignores them")
        if self.method == "single":
            if not conditioned:  # an empty mask observes nothing, so m is all zeros
                side = self.image_size
                return self.decoder(z, z.new_zeros(z.shape[0], self.channels + 1, side, side))
            return self.decoder(z, conditioning(x, mask))
        if not conditioned:
            return self.decoder(z)
        if self.decoder_cond is None:
            raise ValueError("the baseline has no conditioned decoder")
        return self.decoder_cond(z, conditioning(x, mask))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                noise: torch.Tensor | None = None) -> ModelOutput:
        if self.conditioned and mask is None:
            raise ValueError(f"method {self.method!r} needs a mask")
        code = self.encode(x, noise)
        terms = {"latent": code.objective(self.beta)}
        if self.method == "single":
            x_hat = self.decode(code.z, x, mask, conditioned=True)
            terms["recon"] = self.reconstruction_loss(x_hat, x)
            return ModelOutput(terms, x_hat)
        x_hat = self.decode(code.z)
        terms["recon"] = self.reconstruction_loss(x_hat, x)
        if self.method == "baseline":
            return ModelOutput(terms, x_hat)
        x_hat_cond = self.decode(code.z, x, mask, conditioned=True)
        terms["recon_cond"] = self.reconstruction_loss(x_hat_cond, x)
        return ModelOutput(terms, x_hat, x_hat_cond)
