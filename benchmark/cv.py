"""Cross-validation splits and per-unit seeds: the same folds for every configuration."""

from __future__ import annotations

import hashlib

import numpy as np
from sklearn.model_selection import KFold, RepeatedKFold


def fold_indices(n: int, folds: int = 5, seed: int = 0, repeats: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) index arrays of ``KFold(folds, shuffle=True, random_state=seed)``.

    With ``repeats`` > 1, scikit-learn's ``RepeatedKFold`` gives folds·repeats splits.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):  # None would split anew on every call
        raise ValueError(f"the folds' seed must be an integer, got {seed!r}")
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if n < folds:
        raise ValueError(f"{n} training images cannot be split into {folds} folds: give more images (a dataset's "
                         "test split, held out, is not among them) or fewer --folds")
    splitter = (KFold(n_splits=folds, shuffle=True, random_state=seed) if repeats == 1
                else RepeatedKFold(n_splits=folds, n_repeats=repeats, random_state=seed))
    return list(splitter.split(np.arange(n)))


def unit_seed(suite_seed: int, config_id: str, fold: int) -> int:
    """A seed derived from (suite seed, configuration, fold), stable across processes and machines."""
    digest = hashlib.sha256(f"{suite_seed}/{config_id}/{fold}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFF_FFFF


def fold_label(fold: int, folds: int, repeats: int = 1) -> str:
    """A fold for progress lines: the number that results and ``prior --fold`` use, then its place
    among the folds (and its ``repeat``, as the results' column numbers it)."""
    place = fold % folds + 1
    ordinal = f"{place}{'th' if 10 <= place % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(place % 10, 'th')}"
    return f"fold {fold} ({ordinal} of {folds}" + (f" in repeat {fold // folds})" if repeats > 1 else ")")
