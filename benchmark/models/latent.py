"""What an encoder hands to the decoders: the latent and its loss term, by name."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LatentCode:
    z: torch.Tensor                 # fed to every decoder: z (Gaussian) or z_q (VQ)
    latent: torch.Tensor            # as reported: KL (Gaussian) or the VQ loss at the paper's β = 0.25, scalar
    parts: dict[str, torch.Tensor] = field(default_factory=dict)

    def objective(self, beta: float) -> torch.Tensor:
        """The latent term of the training loss at β, as the thesis writes it: β·KL, or for a
        quantized code codebook + β·commitment (a VQ-VAE's β weighs the commitment alone)."""
        if "commitment" in self.parts:
            return self.parts["codebook"] + beta * self.parts["commitment"]
        return beta * self.latent
