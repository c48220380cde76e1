"""Model registry: the SPEC's configurations of each family, combined with a method."""

from __future__ import annotations

import torch

from benchmark.checks import check_choice
from benchmark.models.blocks import eval_mode
from benchmark.models.gaussian import GaussianConfig, GaussianLatent
from benchmark.models.latent import LatentCode
from benchmark.models.methods import METHODS, ModelOutput, MultitaskVAE
from benchmark.models.vq import VectorQuantizer, VQConfig, VQLatent

FAMILIES = ("vae", "vq-vae")
FAMILY_TITLES = {"vae": "Gaussian VAE", "vq-vae": "VQ-VAE"}
# β of the latent term: the KL weight of a Gaussian VAE, the commitment weight of a VQ-VAE
# (the VQ-VAE paper's, at which the VQ loss is also reported).
DEFAULT_BETA = {"vae": 1.0, "vq-vae": VQConfig.commitment}

MODEL_CONFIGS: dict[str, dict[int, GaussianConfig | VQConfig]] = {
    "vae": {
        1: GaussianConfig(latent_dim=16, widths=(32, 64, 128, 256)),
        2: GaussianConfig(latent_dim=64, widths=(32, 64, 128, 256)),
    },
    "vq-vae": {
        1: VQConfig(num_codes=128, code_dim=16, widths=(32, 64), residual_layers=0),
        2: VQConfig(num_codes=128, code_dim=32, widths=(128, 256), residual_layers=2),
        3: VQConfig(num_codes=256, code_dim=64, widths=(128, 256), residual_layers=4),
    },
}


def model_config(family: str, config: int) -> GaussianConfig | VQConfig:
    """The SPEC table's configuration ``config`` of ``family``."""
    check_choice("model family", family, FAMILIES)
    check_choice(f"{family} config", config, MODEL_CONFIGS[family])
    return MODEL_CONFIGS[family][config]


def build_model(family: str, config: int, method: str, channels: int = 1, image_size: int = 32,
                beta: float | None = None) -> MultitaskVAE:
    """A ``MultitaskVAE`` for images of shape (channels, image_size, image_size), training its
    latent term at ``beta`` (default: the family's, ``DEFAULT_BETA``)."""
    cfg = model_config(family, config)
    check_choice("method", method, METHODS)
    factor = 2 ** len(cfg.widths)
    if image_size < factor or image_size % factor:
        raise ValueError(f"image size {image_size} does not fit {family} config {config}: "
                         f"it must be a positive multiple of {factor} (the total downsampling)")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    latent = GaussianLatent(cfg, channels, image_size) if family == "vae" else VQLatent(cfg, channels, image_size)
    return MultitaskVAE(latent, method, channels, image_size, DEFAULT_BETA[family] if beta is None else beta)


def weight_count(family: str, config: int, method: str, channels: int = 1, image_size: int = 32) -> int:
    """The trainable weights of ``build_model(family, config, method, channels, image_size)``:
    what a method costs in model size (a conditioned decoder's input layer dominates)."""
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        model = build_model(family, config, method, channels, image_size)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["DEFAULT_BETA", "FAMILIES", "FAMILY_TITLES", "METHODS", "MODEL_CONFIGS", "GaussianConfig", "LatentCode",
           "ModelOutput", "MultitaskVAE", "VQConfig", "VectorQuantizer", "build_model", "eval_mode", "model_config"]
