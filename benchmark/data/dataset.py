"""The in-memory dataset container returned by :func:`benchmark.data.load_dataset`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch


class DatasetNotFoundError(ValueError):
    """The files of a dataset are missing (or unreadable) where we looked for them.

    A ``ValueError`` subclass so that callers treating every bad user input the same way
    (the CLI prints the message and exits) need no special case, while tests and scripts
    can still tell "files missing" apart from "bad argument".
    """


def pixel_digest(images: torch.Tensor) -> str:
    """SHA-256 of ``images`` (floats in [0, 1]) rounded to 8-bit values, in their order: it tells a pool
    of training images from another of the same count (other files under a folder, or the same in
    another order, which makes other folds), and a float's last bits do not change it. Read in chunks,
    as a CelebA pool as bytes would be another 2 GB."""
    digest = hashlib.sha256(repr(tuple(images.shape)).encode())
    for chunk in images.split(1024):
        digest.update(chunk.mul(255).round_().to(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test pair of image tensors, ready for a VAE.

    ``train`` and ``test`` are float32 ``(N, C, H, W)`` tensors with values in ``[0, 1]``,
    contiguous and on the CPU.  ``train_labels`` (and ``test_labels``) are int64 class
    indices where the dataset has classes, else ``None``.

    ``eq=False`` because dataclass equality would compare tensors element-wise (and raise
    on the ambiguous truth value); identity equality and hashing are what callers need.
    """

    name: str
    train: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor | None
    # Not needed by the benchmark itself, but free to keep and useful for stratifying or
    # for label-aware evaluations; defaulted so ``Dataset(name, train, test, labels)`` works.
    test_labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        # Fail at construction rather than deep inside a training loop.
        for split, images in (("train", self.train), ("test", self.test)):
            if images.dtype != torch.float32 or images.dim() != 4:
                raise ValueError(
                    f"Dataset {self.name!r}: {split} must be a float32 (N, C, H, W) tensor, "
                    f"got {images.dtype} with shape {tuple(images.shape)}"
                )
        if self.train.shape[1:] != self.test.shape[1:]:
            raise ValueError(
                f"Dataset {self.name!r}: train images {tuple(self.train.shape[1:])} and "
                f"test images {tuple(self.test.shape[1:])} differ in shape"
            )
        for split, labels, images in (
            ("train", self.train_labels, self.train),
            ("test", self.test_labels, self.test),
        ):
            if labels is not None and (labels.dtype != torch.int64 or labels.shape != images.shape[:1]):
                raise ValueError(
                    f"Dataset {self.name!r}: {split} labels must be int64 of shape "
                    f"({images.shape[0]},), got {labels.dtype} {tuple(labels.shape)}"
                )

    @property
    def channels(self) -> int:
        """Number of image channels (1 for greyscale, 3 for RGB)."""
        return int(self.train.shape[1])

    @property
    def image_size(self) -> int:
        """Side length of the (square) images in pixels."""
        return int(self.train.shape[2])

    def __repr__(self) -> str:
        # The generated repr would print the tensors themselves.
        return (
            f"Dataset(name={self.name!r}, train={tuple(self.train.shape)}, "
            f"test={tuple(self.test.shape)}, labelled={self.train_labels is not None})"
        )
