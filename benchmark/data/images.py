"""Small image helpers shared by the loaders: uint8 -> [0, 1] tensors, padding, PIL crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .dataset import DatasetNotFoundError

# Pillow band names of single-channel images; "A" so that grey+alpha ("LA") counts as grey.
_GREY_BANDS = frozenset({"1", "L", "I", "F", "A"})


def uint8_to_unit(images: np.ndarray | torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` (or ``(N, H, W, C)`` with ``channels_last``) -> float32 in [0, 1]."""
    tensor = torch.as_tensor(np.asarray(images, dtype=np.uint8))
    if channels_last:
        tensor = tensor.permute(0, 3, 1, 2)
    return tensor.to(torch.float32).div_(255.0).contiguous()


def pad_to(images: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad ``(N, C, H, W)`` images symmetrically to ``size`` x ``size``.

    MNIST digits are 28x28 and the benchmark's convolutional VAEs expect 32x32; zero
    padding (rather than resizing) keeps the digits' pixels exactly as published.
    """
    height, width = images.shape[-2:]
    top, left = (size - height) // 2, (size - width) // 2
    padded = F.pad(images, (left, size - width - left, top, size - height - top))
    return padded.contiguous()


def is_greyscale(image: Image.Image) -> bool:
    """True for single-channel Pillow modes (L, LA, 1, I, I;16, F) and for palettes of greys only."""
    if image.mode in ("P", "PA"):
        palette = image.getpalette("RGB") or []  # read with the header: no pixel decode
        return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette), 3))
    return set(image.getbands()) <= _GREY_BANDS


def _unreadable(path: Path, dataset: str, err: Exception) -> DatasetNotFoundError:
    """One line naming the image, why it cannot be read and what to do about it."""
    advice = ("replace it with the file of that name from CelebA's img_align_celeba.zip" if dataset == "celeba"
              else "replace it, or move it out of the folder")
    return DatasetNotFoundError(f"{dataset}: cannot read image {path} ({err}): {advice}")


def peek_greyscale(path: Path, dataset: str) -> bool:
    """Whether ``path`` is a single-channel image, from its header only (no pixel decode)."""
    try:
        with Image.open(path) as image:
            return is_greyscale(image)
    except (OSError, Image.DecompressionBombError) as err:  # UnidentifiedImageError is an OSError
        raise _unreadable(path, dataset, err) from None


def open_image(path: Path, dataset: str, draft_size: int | None = None) -> Image.Image:
    """Open and fully decode ``path``, upright by its EXIF orientation, turning I/O and format
    errors into one clear error.

    ``draft_size`` lets JPEG decoding downscale by a power of two while keeping both sides
    at least ``draft_size`` (a large speed-up for big photos that are resized anyway).
    """
    try:
        with Image.open(path) as image:
            if draft_size is not None:
                image.draft(None, (draft_size, draft_size))
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # a phone's photo stands as it was shot
            return image
    except (OSError, Image.DecompressionBombError) as err:
        raise _unreadable(path, dataset, err) from None


def to_8bit(image: Image.Image, grey: bool) -> Image.Image:
    """Convert to "L" (``grey``) or "RGB", scaling 16/32-bit greyscale instead of clipping, and
    compositing transparent pixels on black.

    Pillow's own ``I``/``I;16`` -> ``L`` conversion clips every value above 255, which
    would turn a 16-bit PNG almost entirely white; and its conversion drops the alpha, which
    leaves the colour that a transparent pixel hides (often noise an editor left). Black is the
    zero that padding gives too.
    """
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode != "F" else max(float(values.max()), 1.0)
        image = Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if "A" in image.getbands() or "transparency" in image.info:  # RGBA, LA, PA, or a palette's transparent index
        image = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", image.size, (0, 0, 0, 255)), image)
    return image.convert("L" if grey else "RGB")


def centre_square_resize(image: Image.Image, size: int, crop: int | None = None) -> Image.Image:
    """Centre-crop a square (side ``crop``, default the short side) and resize it to ``size``.

    The crop offset is rounded like torchvision's ``CenterCrop`` so the CelebA recipe
    (crop 178 of 178x218, then resize) matches the usual torchvision pipeline.  The crop
    is materialised before resizing on purpose: ``Image.resize(box=...)`` lets the filter
    read pixels outside the box, which would blend the cropped-away border into the edge
    rows.  Pillow's bilinear filter widens its support when downscaling (antialiasing).
    """
    width, height = image.size
    side = min(width, height) if crop is None else min(crop, width, height)
    left = int(round((width - side) / 2.0))
    top = int(round((height - side) / 2.0))
    square = image.crop((left, top, left + side, top + side))
    return square if side == size else square.resize((size, size), Image.Resampling.BILINEAR)
