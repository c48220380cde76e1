"""MNIST, CIFAR-10 and CelebA through torchvision's dataset classes, from ``--data-root``.

torchvision only locates and parses the files here; we take its decoded arrays (MNIST,
CIFAR-10) or file list (CelebA) directly instead of iterating ``__getitem__``, which would
build one PIL image per sample.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

from benchmark.checks import first_line
from benchmark.config import CELEBA_IMAGE_SIDE

from .dataset import Dataset, DatasetNotFoundError
from .images import centre_square_resize, open_image, pad_to, uint8_to_unit
from .splits import capped_sizes, limit_indices, subset_indices

if TYPE_CHECKING:  # torchvision is imported when a dataset is loaded, not with the package
    from torchvision.datasets import MNIST

T = TypeVar("T")

# Where each torchvision class looks under the root, and what it expects to find there.
_LAYOUT = {
    "mnist": (
        "MNIST/raw",
        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte (uncompressed)",
    ),
    "cifar10": (
        "cifar-10-batches-py",
        "data_batch_1..5, test_batch, batches.meta (the extracted cifar-10-python.tar.gz)",
    ),
    "celeba": (
        "celeba",
        "img_align_celeba/*.jpg, list_eval_partition.txt, identity_CelebA.txt, list_attr_celeba.txt, "
        "list_bbox_celeba.txt, list_landmarks_align_celeba.txt",
    ),
}

CELEBA_CROP = 178  # the aligned CelebA faces are 178x218; the usual 64x64 recipe crops the centre square


def _missing_message(dataset: str, root: Path, download: bool, reason: str) -> str:
    folder, contents = _LAYOUT[dataset]
    where = root / folder
    what = "download failed" if download else "dataset files missing or unreadable"
    hint = ""
    if dataset == "mnist" and not download and any(where.glob("*-ubyte.gz")):
        # torchvision only gunzips while downloading; it never reads the .gz files itself.
        hint = " Found .gz archives there: gunzip them, torchvision reads only the uncompressed files."
    return (
        f"{dataset}: {what} in {where} (torchvision: {reason}).{hint} Run with --download on a machine "
        f"with internet, or place the torchvision layout under {root}: {folder}/ containing {contents}."
    )


def _checksummed(dataset: str) -> list[tuple[str, str]]:
    """The files of ``dataset`` whose MD5 torchvision checks against the official release's: (name, md5)."""
    if dataset == "cifar10":
        from torchvision.datasets import CIFAR10

        return [(name, md5) for name, md5 in CIFAR10.train_list + CIFAR10.test_list] + [
            (CIFAR10.meta["filename"], CIFAR10.meta["md5"])]
    if dataset == "celeba":
        from torchvision.datasets import CelebA

        # as torchvision, which lets the archive go once the images are extracted
        return [(name, md5) for _, md5, name in CelebA.file_list if Path(name).suffix not in (".zip", ".7z")]
    return []


def _altered(dataset: str, root: Path) -> list[str]:
    """Where every file of ``dataset`` that torchvision checks is there, those that fail its MD5 check
    (its one message, "not found or corrupted", said them missing); [] where one is missing."""
    from torchvision.datasets.utils import check_integrity

    folder, files = root / _LAYOUT[dataset][0], _checksummed(dataset)
    if not all((folder / name).is_file() for name, _ in files):
        return []
    return [name for name, md5 in files if not check_integrity(str(folder / name), md5)]


def _open(dataset: str, root: Path, download: bool, factory: Callable[[], T]) -> T:
    """Run a torchvision constructor, re-raising its not-found/download errors as one clear line. The
    folders a failed download made and left empty are removed: they would look like a dataset half there."""
    folder = root / _LAYOUT[dataset][0]
    missing = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
    try:
        return factory()
    except Exception as err:
        # OSError covers FileNotFoundError and urllib's URLError; CelebA's download fails through gdown's own
        # errors (FileURLRetrievalError when Google Drive's quota is spent), which subclass Exception only.
        if not (isinstance(err, (RuntimeError, OSError)) or download and type(err).__module__.startswith("gdown")):
            raise
        for path in missing if download else ():
            with contextlib.suppress(OSError):  # not empty: the download left a file there
                path.rmdir()
        if not download and (altered := _altered(dataset, root)):
            raise DatasetNotFoundError(
                f"{dataset}: {', '.join(altered)} in {folder} differ from the official release (torchvision checks "
                "each file's MD5): a download cut short, or files of another version. Fetch them again with "
                "--download on a machine with internet, or place the official files there.") from None
        # torchvision's advice names its Python argument; our message gives the CLI's instead.
        reason = first_line(err).split(". You can use download=True")[0].rstrip(".")
        raise DatasetNotFoundError(_missing_message(dataset, root, download, reason)) from None


# What torchvision's idx parser raises for a file that is not a well-formed idx file: an empty
# header (ValueError), a bad magic number (AssertionError, KeyError), a wrong dtype (TypeError) or
# a size that disagrees with the header (RuntimeError from torch's view).
_IDX_ERRORS = (AssertionError, KeyError, TypeError, ValueError, RuntimeError)


def _corrupt_mnist(root: Path, what: str) -> DatasetNotFoundError:
    folder, contents = _LAYOUT["mnist"]
    return DatasetNotFoundError(
        f"mnist: {what}. Remove the files in {root / folder} and fetch them again with --download on a machine "
        f"with internet, or place the real files there: {contents}."
    )


def _read_mnist(root: Path, train: bool, download: bool) -> MNIST:
    """torchvision's MNIST for one split; a file it cannot parse, or two that disagree, fail as corrupt.

    torchvision names no file when parsing fails; this names the one at fault and how to replace it.
    """
    from torchvision.datasets import MNIST
    from torchvision.datasets.mnist import read_image_file, read_label_file

    prefix = "train" if train else "t10k"
    raw = root / _LAYOUT["mnist"][0]
    images, labels = raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"
    try:
        ds = MNIST(root, train=train, download=download)
    except _IDX_ERRORS:
        # Parse the split's two files again, with the readers MNIST uses, to find the bad one. Any
        # other failure (files missing, a failed download) re-raises for _open's message.
        for path, read in ((images, read_image_file), (labels, read_label_file)):
            try:
                if path.is_file():
                    read(str(path))
            except _IDX_ERRORS as err:
                detail = f"{path.stat().st_size:,} bytes; torchvision: {first_line(err)}"
                raise _corrupt_mnist(root, f"corrupt or unreadable file {path} ({detail})") from None
        raise
    # Well-formed idx files can still disagree: torchvision checks neither count nor image size.
    n, size = len(ds.data), tuple(ds.data.shape[1:])
    if size != (28, 28) or len(ds.targets) != n:
        what = (f"corrupt files {images} and {labels} ({n:,} images of {size[0]}x{size[1]}, {len(ds.targets):,} "
                f"labels; MNIST has one label per 28x28 image)")
        raise _corrupt_mnist(root, what)
    return ds


def _labelled(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    to_float: Callable[[np.ndarray], torch.Tensor],
    limit: int | None,
    seed: int,
) -> Dataset:
    """Apply the stratified ``limit`` cap to uint8 (images, labels) splits, then convert.

    Subsetting before the float conversion keeps memory at the size of what is kept.
    """
    (train_x, train_y), (test_x, test_y) = train, test
    keep_train, keep_test = limit_indices(limit, len(train_y), len(test_y), train_y, test_y, seed)
    return Dataset(
        name=name,
        train=to_float(train_x[keep_train]),
        test=to_float(test_x[keep_test]),
        train_labels=torch.as_tensor(train_y[keep_train], dtype=torch.int64),
        test_labels=torch.as_tensor(test_y[keep_test], dtype=torch.int64),
    )


def load_mnist(root: Path, *, download: bool, limit: int | None, seed: int) -> Dataset:
    """Full MNIST (60k/10k), official split, zero-padded from 28x28 to 32x32."""
    def arrays(train: bool) -> tuple[np.ndarray, np.ndarray]:
        ds = _open("mnist", root, download, lambda: _read_mnist(root, train, download))
        return ds.data.numpy(), ds.targets.numpy()

    def to_float(images: np.ndarray) -> torch.Tensor:
        return pad_to(uint8_to_unit(images[:, None]), 32)

    return _labelled("mnist", arrays(True), arrays(False), to_float, limit, seed)


def load_cifar10(root: Path, *, download: bool, limit: int | None, seed: int) -> Dataset:
    """CIFAR-10 (50k/10k), official split, 3x32x32."""
    from torchvision.datasets import CIFAR10

    def arrays(train: bool) -> tuple[np.ndarray, np.ndarray]:
        ds = _open("cifar10", root, download, lambda: CIFAR10(root, train=train, download=download))
        return np.asarray(ds.data), np.asarray(ds.targets, dtype=np.int64)  # data is (N, 32, 32, 3)

    def to_float(images: np.ndarray) -> torch.Tensor:
        return uint8_to_unit(images, channels_last=True)

    return _labelled("cifar10", arrays(True), arrays(False), to_float, limit, seed)


def _decode_faces(folder: Path, filenames: list[str], size: int) -> torch.Tensor:
    """Decode CelebA JPEGs: centre-crop 178x178, resize to ``size``; returns float (N, 3, size, size)."""
    out = np.empty((len(filenames), size, size, 3), dtype=np.uint8)  # uint8 until the end: 4x less memory
    for i, filename in enumerate(filenames):
        image = open_image(folder / filename, "celeba").convert("RGB")
        out[i] = np.asarray(centre_square_resize(image, size, crop=CELEBA_CROP))
    return uint8_to_unit(out, channels_last=True)


def load_celeba(
    root: Path, *, download: bool, limit: int | None, seed: int, image_size: int | None
) -> Dataset:
    """CelebA aligned faces, official "train"/"test" partitions, 3x64x64 by default.

    The "valid" partition is left out: the benchmark makes its own validation folds
    from the training pool.  There are no class labels (attributes are multi-label).
    """
    from torchvision.datasets import CelebA

    # One split="all" construction (it checks the layout and reads the file list), with the
    # partitions read here, rather than split="train" and split="test": torchvision's
    # per-split selection crashes ("iteration over a 0-d tensor") when a split holds exactly
    # one image, and every construction re-parses all five ~200k-line list files.
    ds = _open("celeba", root, download, lambda: CelebA(root, split="all", target_type=[], download=download))
    partition_file = root / "celeba" / "list_eval_partition.txt"
    # torchvision has parsed this file already, so it is well formed: "<file> <0|1|2>" lines.
    partition = [int(line.split()[1]) for line in partition_file.read_text().splitlines() if line.strip()]
    files = list(ds.filename)
    train_files = [name for name, part in zip(files, partition, strict=True) if part == 0]
    test_files = [name for name, part in zip(files, partition, strict=True) if part == 2]
    n_train, n_test = capped_sizes(limit, len(train_files), len(test_files))
    if n_train == 0 or n_test == 0:
        raise DatasetNotFoundError(
            f"celeba: {root / 'celeba' / 'list_eval_partition.txt'} lists {len(train_files)} train "
            f"and {len(test_files)} test images; both splits need at least one"
        )

    def pick(files: list[str], k: int, stream: int) -> list[str]:
        return [files[i] for i in subset_indices(len(files), k, None, seed, stream)]

    folder = root / "celeba" / "img_align_celeba"
    size = CELEBA_IMAGE_SIDE if image_size is None else image_size
    return Dataset(
        name="celeba",
        train=_decode_faces(folder, pick(train_files, n_train, 1), size),
        test=_decode_faces(folder, pick(test_files, n_test, 2), size),
        train_labels=None,
    )
