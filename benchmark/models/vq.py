"""VQ-VAE family: conv encoder with residual layers → z_e, nearest-code lookup, straight-through z_q."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.models.blocks import Decoder, LatentInput, conv_encoder, residual_stack, upsampling_stack
from benchmark.models.latent import LatentCode


@dataclass(frozen=True)
class VQConfig:
    num_codes: int = 128
    code_dim: int = 16
    widths: tuple[int, ...] = (32, 64)
    residual_layers: int = 0
    commitment: float = 0.25  # the VQ-VAE paper's β: the VQ loss is reported at it, whatever β trains


class VectorQuantizer(nn.Module):
    """Codebook e ∈ R^{K×D}; nearest-code lookup with the straight-through estimator."""

    def __init__(self, num_codes: int, code_dim: int, commitment: float = 0.25) -> None:
        super().__init__()
        self.commitment = commitment
        self.codebook = nn.Embedding(num_codes, code_dim)
        self.codebook.weight.data.uniform_(-1.0 / num_codes, 1.0 / num_codes)

    @torch.no_grad()
    def codes(self, z_e: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for every position: (B, h, w) int64.

        argmin_k ‖z - e_k‖² = argmin_k (‖e_k‖² - 2 z·e_k): ‖z‖² is the same for every code, so
        one fused ``addmm`` gives the ranking (in float32, also under autocast).
        """
        b, d, h, w = z_e.shape
        flat = z_e.float().permute(0, 2, 3, 1).reshape(-1, d)
        weight = self.codebook.weight.float()
        with torch.autocast(flat.device.type, enabled=False):
            distances = torch.addmm(weight.pow(2).sum(1), flat, weight.t(), alpha=-2.0)
        return distances.argmin(dim=1).view(b, h, w)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Code indices (B, h, w) → embeddings (B, D, h, w)."""
        return self.codebook(codes).permute(0, 3, 1, 2).contiguous()

    def forward(self, z_e: torch.Tensor) -> LatentCode:
        """Quantize; both losses are squared distances averaged over every element of the code map
        (the scale of the thesis's table), and ``latent`` is the VQ loss at ``commitment``."""
        z_e = z_e.float()
        codes = self.codes(z_e)
        quantized = self.lookup(codes)
        codebook_loss = F.mse_loss(quantized, z_e.detach())
        commitment_loss = F.mse_loss(z_e, quantized.detach())
        z_q = z_e + (quantized - z_e).detach()  # straight-through: gradients of z_q go to z_e
        return LatentCode(z=z_q, latent=codebook_loss + self.commitment * commitment_loss,
                          parts={"codes": codes, "codebook": codebook_loss, "commitment": commitment_loss})


class VQLatent(nn.Module):
    """Encoder and quantizer of a VQ-VAE; decoders are made by ``make_decoder``.

    Training scale: per-pixel mean squared error (the VQ-VAE paper's objective).
    """

    recon_reduction = "mean"

    def __init__(self, config: VQConfig, channels: int, image_size: int) -> None:
        super().__init__()
        self.config, self.channels = config, channels
        side = image_size // 2 ** len(config.widths)
        self.code_shape = (config.code_dim, side, side)
        last = config.widths[-1]
        self.encoder = nn.Sequential(
            conv_encoder(channels, config.widths),
            *residual_stack(last, config.residual_layers),
            nn.Conv2d(last, config.code_dim, 1),
        )
        self.quantizer = VectorQuantizer(config.num_codes, config.code_dim, config.commitment)

    noise_dim = 0  # deterministic encoder

    def encode(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> LatentCode:
        z_e = self.encoder(x)
        latent = self.quantizer(z_e)
        latent.parts["z_e"] = z_e
        return latent

    def make_decoder(self, cond_dim: int = 0) -> Decoder:
        last = self.config.widths[-1]
        body = nn.Sequential(
            nn.Conv2d(self.config.code_dim, last, 3, padding=1), nn.LeakyReLU(),
            *residual_stack(last, self.config.residual_layers),
            upsampling_stack(self.config.widths, self.channels),
        )
        return Decoder(LatentInput(self.code_shape, self.code_shape, cond_dim), body)
