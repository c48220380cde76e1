"""``load_dataset``: validate the arguments, then dispatch to the loader for a name."""

from __future__ import annotations

from pathlib import Path

from benchmark.config import FIXED_IMAGE_SIDE, FOLDER_PREFIX, check_dataset_name

from .dataset import Dataset
from .embedded import load_digits, load_mnist5k
from .folder import load_folder
from .splits import TEST_FRACTION
from .torchvision_sets import load_celeba, load_cifar10, load_mnist

# Datasets read from --data-root through torchvision, with their fetch hint.
_ROOTED = ("mnist", "cifar10", "celeba")


def unused_source_note(name: str, data_root: str | Path | None, download: bool) -> str | None:
    """One line when ``--data-root`` or ``--download`` is given for a dataset that does not come
    from there (mnist5k and digits ship with their packages; a folder is its own path), else None."""
    if name in _ROOTED or not (data_root or download):
        return None
    given = " and ".join(flag for flag, on in (("--data-root", data_root), ("--download", download)) if on)
    where = f"is read from {name[len(FOLDER_PREFIX):]}" if name.startswith(FOLDER_PREFIX) else "ships with the package"
    return f"note: {given} not used: {name} {where} ({', '.join(_ROOTED)} come from --data-root)"


def _check_arguments(limit: int | None, test_fraction: float, image_size: int | None, seed: int) -> None:
    # bool is an int subclass; limit=True is a bug, not "one image".
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer (>= 1) or None, got {limit!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in the open interval (0, 1), got {test_fraction!r}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be a positive integer (>= 1) or None, got {image_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:  # numpy's seed range
        raise ValueError(f"seed must be an integer in [0, 2^32), got {seed!r}")


def load_dataset(
    name: str,
    data_root: str | Path | None = None,
    *,
    download: bool = False,
    limit: int | None = None,
    seed: int = 0,
    test_fraction: float = TEST_FRACTION,
    image_size: int | None = None,
) -> Dataset:
    """Load a dataset by name as float32 ``(N, C, H, W)`` tensors in ``[0, 1]``.

    Names: ``mnist5k`` (embedded, default), ``digits`` (embedded), ``mnist``, ``cifar10``,
    ``celeba`` (torchvision layout under ``data_root``; ``download=True`` fetches it when
    online) and ``folder:PATH`` (any folder of png/jpg/jpeg/bmp images).

    ``seed`` and ``test_fraction`` define the train/test split of the datasets that have
    none of their own (mnist5k, digits, folders; stratified by label where there are
    labels).  mnist, cifar10 and celeba keep their official splits.  ``limit`` keeps a
    seeded subset of at most ``limit`` training images, shrinking the test split by the
    same factor (stratified where there are labels).  ``image_size`` sets the square side
    for ``folder:`` (default 32) and ``celeba`` (default 64); other datasets have a fixed
    size of 32 and accept only that.

    Raises ``ValueError`` for bad arguments and :class:`DatasetNotFoundError` (a
    ``ValueError``) when a dataset's files are missing, with a one-line explanation.
    """
    _check_arguments(limit, test_fraction, image_size, seed)
    check_dataset_name(name)
    if name.startswith(FOLDER_PREFIX):
        return load_folder(
            name,
            Path(name[len(FOLDER_PREFIX):]).expanduser().absolute(),
            image_size=image_size,
            limit=limit,
            seed=seed,
            test_fraction=test_fraction,
        )
    native = FIXED_IMAGE_SIDE.get(name)  # image_size may only restate it
    if native is not None and image_size not in (None, native):
        raise ValueError(f"dataset {name!r} has a fixed image size of {native}; got image_size={image_size}")

    if name == "mnist5k":
        return load_mnist5k(limit=limit, seed=seed, test_fraction=test_fraction)
    if name == "digits":
        return load_digits(limit=limit, seed=seed, test_fraction=test_fraction)

    assert name in _ROOTED
    if data_root is None:
        raise ValueError(
            f"dataset {name!r} needs --data-root: pass --data-root DIR (with --download on a machine "
            f"with internet to fetch it there through torchvision, or copy torchvision's {name} layout "
            "into DIR), or use the embedded 'mnist5k' or 'digits' datasets, which need no files"
        )
    # absolute() rather than resolve(): report the path the user gave, symlinks intact.
    root = Path(data_root).expanduser().absolute()
    if name == "mnist":
        return load_mnist(root, download=download, limit=limit, seed=seed)
    if name == "cifar10":
        return load_cifar10(root, download=download, limit=limit, seed=seed)
    return load_celeba(root, download=download, limit=limit, seed=seed, image_size=image_size)


def limit_note(dataset: str, limit: int | None, used: int) -> str | None:
    """One line when ``limit`` asked for more training images than ``dataset`` has (all ``used``)."""
    if limit is None or used >= limit:
        return None
    return f"note: limit {limit:,} is more than the {used:,} training images of {dataset}; all of them are used"
