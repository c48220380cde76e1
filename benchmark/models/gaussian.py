"""Gaussian VAE family: conv encoder → (μ, log σ²) → reparameterised z, KL to N(0, I)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from benchmark.models.blocks import Decoder, LatentInput, conv_encoder, upsampling_stack
from benchmark.models.latent import LatentCode


@dataclass(frozen=True)
class GaussianConfig:
    latent_dim: int = 16
    widths: tuple[int, ...] = (32, 64, 128, 256)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) summed over latent dims, averaged over the batch."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1).mean()


class GaussianLatent(nn.Module):
    """Encoder and latent of a Gaussian VAE; decoders are made by ``make_decoder``.

    Training scale (the thesis code's ELBO): squared error summed over an image's pixels.
    z is sampled whenever noise is given (training, and validation with the trainer's seeded
    noise, so that validation measures the ELBO's terms as the thesis's code did); in eval mode
    without noise z = μ (reconstruction figures).
    """

    recon_reduction = "sum"

    def __init__(self, config: GaussianConfig, channels: int, image_size: int) -> None:
        super().__init__()
        self.config, self.channels = config, channels
        side = image_size // 2 ** len(config.widths)
        self.feature_shape = (config.widths[-1], side, side)
        self.encoder = conv_encoder(channels, config.widths)
        flat = config.widths[-1] * side * side
        self.fc_mu = nn.Linear(flat, config.latent_dim)
        self.fc_logvar = nn.Linear(flat, config.latent_dim)

    @property
    def noise_dim(self) -> int:
        return self.config.latent_dim

    def encode(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> LatentCode:
        """``noise``: ε ~ N(0, I) of shape (B, latent_dim) for the reparameterisation; drawn
        here when not given in training mode, and z = μ when not given in eval mode. The trainer
        passes it, in training and validation, from generators of its own so that every source
        of randomness of a fold is seeded (and can be vectorised over folds)."""
        h = self.encoder(x).flatten(1)
        mu, logvar = self.fc_mu(h), self.fc_logvar(h)
        if noise is None and self.training:
            noise = torch.randn_like(mu)
        z = mu if noise is None else mu + noise.to(mu.dtype) * torch.exp(0.5 * logvar)
        return LatentCode(z=z, latent=kl_to_standard_normal(mu, logvar), parts={"mu": mu, "logvar": logvar})

    def make_decoder(self, cond_dim: int = 0) -> Decoder:
        latent_input = LatentInput((self.config.latent_dim,), self.feature_shape, cond_dim)
        return Decoder(latent_input, upsampling_stack(self.config.widths, self.channels))
