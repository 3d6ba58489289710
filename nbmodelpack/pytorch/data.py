"""MNIST from the shipped idx files (the official test split; no download).

A dataset helper for tutorials, tests and demos, which import it explicitly;
no library code path reaches it (evaluation always takes the caller's data).
``accuracy`` is re-exported from :mod:`nbmodelpack.pytorch.evaluate` for the tutorials.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError
from .evaluate import accuracy

__all__ = ["MNIST_PREPROCESS", "accuracy", "mnist", "mnist_loaders", "normalize"]

_FILES = {
    "images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    "labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
}


def _default_root() -> Path:
    env = os.environ.get("NBMODELPACK_MNIST")
    if env:
        return Path(env)
    # The repository ships the files under notebooks/data (also the tutorials' cwd).
    for base in (Path.cwd(), Path.cwd() / "notebooks", Path(__file__).resolve().parents[2] / "notebooks"):
        if (base / "data" / _FILES["images"][0]).exists():
            return base / "data"
    return Path.cwd() / "data"


def _read(path: Path, md5: str, magic: int) -> np.ndarray:
    if not path.exists():
        raise UsageError(f"MNIST file missing: {path}", hint="set NBMODELPACK_MNIST to the folder with the t10k-*.gz files")
    raw = path.read_bytes()
    if hashlib.md5(raw).hexdigest() != md5:  # noqa: S324 - matches the published MD5SUMS
        raise UsageError(f"{path.name} does not match its published MD5")
    data = gzip.decompress(raw)
    if int.from_bytes(data[:4], "big") != magic:
        raise UsageError(f"{path.name} is not an idx file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def mnist(root: str | os.PathLike[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The 10,000 MNIST test images as ``uint8 [N, 1, 28, 28]`` and labels ``int64 [N]``.

    Example:
        >>> images, labels = mnist()  # doctest: +SKIP
        >>> images.shape  # doctest: +SKIP
        torch.Size([10000, 1, 28, 28])
    """
    base = Path(root) if root is not None else _default_root()
    images = _read(base / _FILES["images"][0], _FILES["images"][1], 2051)
    labels = _read(base / _FILES["labels"][0], _FILES["labels"][1], 2049)
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
# processing.json for raw 28x28 grayscale images, matching :func:`mnist_loaders`.
MNIST_PREPROCESS = {"mode": "L", "size": [28, 28], "scale": 1 / 255, "mean": [MNIST_MEAN], "std": [MNIST_STD], "layout": "NCHW"}


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images → normalized float32, as :data:`MNIST_PREPROCESS` describes."""
    return (images.float() / 255 - MNIST_MEAN) / MNIST_STD


def mnist_loaders(
    n_train: int = 8000, batch_size: int = 128, root: str | os.PathLike[str] | None = None, seed: int = 0
) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    """Train on the first ``n_train`` images, evaluate on the rest (normalized float32).

    Example:
        >>> train, test = mnist_loaders(n_train=8000)  # doctest: +SKIP
    """
    images, labels = mnist(root)
    x = normalize(images)
    train = torch.utils.data.TensorDataset(x[:n_train], labels[:n_train])
    test = torch.utils.data.TensorDataset(x[n_train:], labels[n_train:])
    g = torch.Generator().manual_seed(seed)
    return (
        torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True, generator=g),
        torch.utils.data.DataLoader(test, batch_size=512),
    )
