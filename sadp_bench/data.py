"""The benchmark's data: idx files (MNIST, Fashion-MNIST, KMNIST, ...) or scikit-learn's digits.

A directory with the four standard files (``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each
optionally gzipped) is all it needs. On Debian and Ubuntu, Fashion-MNIST comes with
``apt-get install dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist``.
scikit-learn's 8x8 digits (``--dataset digits``) are a quick check, not the benchmark.

:func:`load_data` returns torch tensors (:class:`Data`); torch is imported only there, so
the command line and the report can import this module without it.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    import torch

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
GET_DATA = (
    "To get Fashion-MNIST: `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; installs "
    f"{FASHION_MNIST_DIR}), or `--data DIR` with a directory holding train-images-idx3-ubyte, "
    "train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (optionally .gz), "
    "or `--dataset digits` for scikit-learn's 8x8 digits (a quick check, not the benchmark)."
)
"""Where the data comes from: printed after a :class:`MissingData` error."""
_DTYPES: dict[int, Any] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


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
    """scikit-learn's 8x8 digits (1797 images), 80/20 split, scaled to [0, 1].

    Raises:
        ImportError: scikit-learn is not installed (it comes with ``sadp-core[bench]``).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            f"{error}: --dataset digits needs scikit-learn (pip install scikit-learn, or "
            'pip install "sadp-core[bench]")'
        ) from error

    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = int(0.8 * len(labels))
    train, test = order[:cut], order[cut:]
    return Split(images[train], labels[train]), Split(images[test], labels[test])


@dataclass(frozen=True)
class Data:
    """Training and test tensors (images flattened to ``[N, side * side]`` in [0, 1])."""

    name: str
    side: int
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def load_data(dataset: str, directory: Path, train_size: int | None, test_size: int | None) -> Data:
    """Fashion-MNIST (or any idx directory) or scikit-learn's digits, optionally a fixed subset.

    A subset is drawn once with a fixed generator (seed 12345), independent of the run seeds,
    so every method, seed and framework trains on the same examples.

    Raises:
        MissingData: the idx directory lacks one of the four files.
    """
    import torch

    if dataset == "digits":
        train, test = load_digits_split(0)
        name = "sklearn digits (8x8)"
    else:
        train, test = load_idx_directory(directory)
        name = f"idx files in {directory}"
    rng = np.random.default_rng(12345)

    def subset(images: np.ndarray, labels: np.ndarray, size: int | None) -> tuple[torch.Tensor, ...]:
        if size is not None and size < len(labels):
            keep = np.sort(rng.permutation(len(labels))[:size])
            images, labels = images[keep], labels[keep]
        return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)

    train_x, train_y = subset(train.images, train.labels, train_size)
    test_x, test_y = subset(test.images, test.labels, test_size)
    side = round(train_x.shape[1] ** 0.5)
    if side * side != train_x.shape[1]:
        raise ValueError(f"images of {train_x.shape[1]} pixels are not square")
    return Data(name, side, train_x, train_y, test_x, test_y)
