"""What an encoder hands to the decoders: the latent and its loss term, by name."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LatentCode:
    z: torch.Tensor                 # fed to every decoder: z (Gaussian) or z_q (VQ)
    latent: torch.Tensor            # KL (Gaussian) or codebook + β·commitment (VQ), scalar
    parts: dict[str, torch.Tensor] = field(default_factory=dict)
