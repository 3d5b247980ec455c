"""Read image classification data in the idx format (MNIST, Fashion-MNIST, KMNIST, ...).

A directory with the four standard files (``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each
optionally gzipped) is all it needs. On Debian and Ubuntu, Fashion-MNIST comes with
``apt-get install dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist``.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import NamedTuple

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class Split(NamedTuple):
    """Images scaled to [0, 1] as float32 ``[N, H * W]`` and int64 labels ``[N]``."""

    images: np.ndarray
    labels: np.ndarray


class MissingData(FileNotFoundError):
    """The data directory lacks one of the four idx files."""


def read_idx(path: Path) -> np.ndarray:
    """One idx file (raw or ``.gz``) as a numpy array of its declared type and shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise ValueError(f"{path} is not an idx file (bad magic number)")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    array = np.frombuffer(data, dtype=_DTYPES[data[2]], offset=4 + 4 * dims)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path} holds {array.size} values but its header declares shape {shape}")
    return array.reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    raise MissingData(
        f"{directory} has no {stem}[.gz]. Point --data at a directory holding the four idx files "
        f"({', '.join(_FILES.values())}), or on Debian/Ubuntu run: "
        "sudo apt-get install dataset-fashion-mnist"
    )


def load_idx_directory(directory: Path = FASHION_MNIST_DIR) -> tuple[Split, Split]:
    """``(train, test)`` from a directory of the four standard idx files."""
    directory = Path(directory)
    arrays = {name: read_idx(_find(directory, stem)) for name, stem in _FILES.items()}

    def split(images: np.ndarray, labels: np.ndarray) -> Split:
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels in {directory}")
        flat = images.reshape(images.shape[0], -1).astype(np.float32) / 255.0
        return Split(flat, labels.astype(np.int64))

    return (
        split(arrays["train_images"], arrays["train_labels"]),
        split(arrays["test_images"], arrays["test_labels"]),
    )


def load_digits_split(seed: int = 0) -> tuple[Split, Split]:
    """scikit-learn's 8x8 digits (1797 images), 80/20 split, scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = int(0.8 * len(labels))
    train, test = order[:cut], order[cut:]
    return Split(images[train], labels[train]), Split(images[test], labels[test])
