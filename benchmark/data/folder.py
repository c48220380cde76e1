"""``folder:PATH``: any folder of images, centre-cropped to a square and resized."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmark.config import FOLDER_IMAGE_SIDE, FOLDER_PREFIX

from .dataset import Dataset, DatasetNotFoundError
from .images import centre_square_resize, open_image, peek_greyscale, to_8bit, uint8_to_unit
from .splits import TEST_FRACTION, held_out_count, limit_indices, split_indices

IMAGE_SUFFIXES = frozenset({".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})


def find_images(root: Path) -> list[Path]:
    """All image files under ``root`` (recursively, hidden entries skipped), in a stable order."""
    return sorted(
        path
        for path in root.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )


def folder_training_images(root: Path) -> int | None:
    """How many images under ``root`` its folds split (all but the default test split); None where
    there is no folder or too few images to split."""
    found = len(find_images(root)) if root.is_dir() else 0
    return found - held_out_count(found, TEST_FRACTION) if found >= 2 else None


def folder_labels(root: Path, paths: list[Path]) -> np.ndarray | None:
    """``ImageFolder``-style class labels: the index of each image's top-level subfolder.

    Only when every image sits inside a subfolder (none directly in ``root``) and there
    are at least two such folders; otherwise the folder is treated as unlabelled.
    """
    relative = [path.relative_to(root).parts for path in paths]
    if any(len(parts) < 2 for parts in relative):
        return None
    tops = [parts[0] for parts in relative]
    if len(set(tops)) < 2:
        return None
    classes = {name: index for index, name in enumerate(sorted(set(tops)))}
    return np.asarray([classes[top] for top in tops], dtype=np.int64)


def load_folder(
    spec: str,
    path: Path,
    *,
    image_size: int | None,
    limit: int | None,
    seed: int,
    test_fraction: float,
) -> Dataset:
    """Load every image under ``path`` into a seeded train/test split.

    Images are turned upright by their EXIF orientation, centre-cropped to a square (their
    short side) and resized to ``image_size`` (default 32).  They stay RGB unless every one
    under ``path`` is greyscale, in which case the dataset has a single channel.  Labels come
    from class subfolders, if any.
    """
    if not path.is_dir():
        relative = "" if Path(spec.removeprefix(FOLDER_PREFIX)).expanduser().is_absolute() else \
            " (a relative path, in a suite file too, is taken from the folder the command runs in)"
        raise DatasetNotFoundError(f"{spec}: folder {path} does not exist or is not a directory{relative}")
    paths = find_images(path)
    if not paths:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise DatasetNotFoundError(f"{spec}: no images ({suffixes}) found under {path}")
    if len(paths) < 2:
        raise DatasetNotFoundError(f"{spec}: only one image under {path}; a train/test split needs at least two")

    labels = folder_labels(path, paths)
    train_idx, test_idx = split_indices(len(paths), labels, test_fraction, seed)
    keep_train, keep_test = limit_indices(
        limit,
        len(train_idx),
        len(test_idx),
        None if labels is None else labels[train_idx],
        None if labels is None else labels[test_idx],
        seed,
    )
    train_idx, test_idx = train_idx[keep_train], test_idx[keep_test]

    # Decode only what is kept.  The channel count depends on every image found, not only on
    # those a --limit or --seed keeps, so read the modes from the headers first (the kept ones
    # first: a colour image among them ends the search); then convert each image to L/RGB
    # *before* resizing (Pillow resizes palette images with nearest-neighbour only).
    size = FOLDER_IMAGE_SIDE if image_size is None else image_size
    kept = np.concatenate([train_idx, test_idx])
    others = np.setdiff1d(np.arange(len(paths)), kept)
    grey = all(peek_greyscale(paths[i], spec) for i in np.concatenate([kept, others]))

    def stack(indices: np.ndarray) -> torch.Tensor:
        arrays = [
            np.asarray(centre_square_resize(to_8bit(open_image(paths[i], spec, draft_size=size), grey), size))
            for i in indices
        ]
        batch = np.stack(arrays)
        return uint8_to_unit(batch[:, None] if grey else batch, channels_last=not grey)

    def label_tensor(indices: np.ndarray) -> torch.Tensor | None:
        return None if labels is None else torch.as_tensor(labels[indices], dtype=torch.int64)

    return Dataset(
        name=spec,
        train=stack(train_idx),
        test=stack(test_idx),
        train_labels=label_tensor(train_idx),
        test_labels=label_tensor(test_idx),
    )
