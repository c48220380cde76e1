"""Benchmark datasets as in-memory float tensors in [0, 1].

>>> from benchmark.data import load_dataset
>>> data = load_dataset("mnist5k", limit=200)   # embedded, no download
>>> data.train.shape, data.channels, data.image_size
(torch.Size([200, 1, 32, 32]), 1, 32)
"""

from benchmark.config import DATASET_NAMES, FOLDER_PREFIX, check_dataset_name

from .dataset import Dataset, DatasetNotFoundError, pixel_digest
from .registry import limit_note, load_dataset, unused_source_note

__all__ = ["DATASET_NAMES", "FOLDER_PREFIX", "Dataset", "DatasetNotFoundError", "check_dataset_name", "limit_note",
           "load_dataset", "pixel_digest", "unused_source_note"]
