"""In-memory datasets for the trainer: sklearn digits (bundled), local CIFAR files, synthetic data.

Everything is small enough to live in tensors, so batching is index arithmetic over one
permutation per epoch (`BatchStream`), whose state is part of a checkpoint.
"""
from __future__ import annotations

import codecs
import os
import pickle
from dataclasses import dataclass

import numpy as np
import torch

from .errors import first_line

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray, numeric as _numeric
except ImportError:  # numpy 1
    from numpy.core import multiarray as _multiarray, numeric as _numeric

DATASETS = ("digits", "cifar10", "cifar100", "synthetic")


class DataError(ValueError):
    """A dataset that cannot be loaded as asked (unknown name, missing files, bad split)."""


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def load(name: str, *, root: str | None = None, train_size: int | None = None, seed: int = 0) -> Dataset:
    """A dataset by name. `train_size` keeps that many training examples (a smaller split)."""
    if name == "digits":
        data = _digits(seed)
    elif name in ("cifar10", "cifar100"):
        data = _cifar(name, root)
    elif name == "synthetic":
        data = synthetic(seed=seed)
    else:
        raise DataError(f"unknown dataset {name!r}; expected one of {DATASETS}")
    if train_size is not None:
        if not 0 < train_size <= len(data.y_train):
            raise DataError(f"train_size must be in [1, {len(data.y_train)}] for {name}, got {train_size}")
        data.x_train, data.y_train = data.x_train[:train_size], data.y_train[:train_size]
    return data


def _digits(seed: int) -> Dataset:
    """sklearn's 1797 8x8 digits as [N, 1, 8, 8] in [0, 1]; a fixed stratified 60/40 split per seed."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DataError("the digits dataset needs scikit-learn: pip install 'neumeta_fast[demo]'") from exc
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    train_idx, test_idx = [], []
    for c in range(10):  # stratified so small training splits keep every class
        idx = (y == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        cut = int(round(0.6 * len(idx)))
        train_idx.append(idx[:cut])
        test_idx.append(idx[cut:])
    # Interleave classes so that a prefix (train_size) stays balanced.
    train = torch.stack([t[: min(len(t) for t in train_idx)] for t in train_idx], 1).reshape(-1)
    rest = torch.cat([t[min(len(t) for t in train_idx):] for t in train_idx])
    train = torch.cat([train, rest])
    test = torch.cat(test_idx)
    return Dataset("digits", x[train], y[train], x[test], y[test], 10)


def _cifar(name: str, root: str | None) -> Dataset:
    """CIFAR from the python-format pickles (cifar-10-batches-py / cifar-100-python) under `root`,
    read without running code from them (see _BatchUnpickler)."""
    if root is None:
        raise DataError(f"{name} needs the config key data_root: the folder holding the extracted "
                        f"python-format files ({'cifar-10-batches-py' if name == 'cifar10' else 'cifar-100-python'}/; "
                        "nothing is downloaded)")
    if name == "cifar10":
        folder = os.path.join(root, "cifar-10-batches-py")
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        test_files, label_key, classes = ["test_batch"], b"labels", 10
    else:
        folder = os.path.join(root, "cifar-100-python")
        train_files, test_files, label_key, classes = ["train"], ["test"], b"fine_labels", 100
    if not os.path.isdir(folder):
        folder = root  # accept the folder itself
    missing = [f for f in train_files + test_files if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise DataError(f"{name}: missing files {missing} in {folder} (expected the python-format CIFAR archive)")

    def read(files):
        xs, ys = [], []
        for f in files:
            x, y = _cifar_batch(os.path.join(folder, f), label_key, classes)
            xs.append(x)
            ys.append(y)
        x = torch.from_numpy(np.concatenate(xs)).float() / 255.0
        mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
        std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
        return (x - mean) / std, torch.from_numpy(np.concatenate(ys))

    x_train, y_train = read(train_files)
    x_test, y_test = read(test_files)
    return Dataset(name, x_train, y_train, x_test, y_test, classes)


# What a CIFAR python-format batch may reference: numpy arrays (the names numpy 1 and 2 pickle them
# under) and, in protocol-2 files written by Python 3, bytes (`_codecs.encode`). Any other global
# (os.system, builtins.eval, ...) is refused: loading a dataset must never run code from a file.
_PICKLE_GLOBALS = {
    **{(module, "_reconstruct"): _multiarray._reconstruct
       for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "_frombuffer"): _numeric._frombuffer for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles builtin containers, numbers, strings, bytes and numpy arrays, nothing else."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name} (only numpy arrays and bytes are allowed)")
        return _PICKLE_GLOBALS[module, name]


def _cifar_batch(path: str, label_key: bytes, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One python-format CIFAR batch: images uint8 [N, 3, 32, 32] and labels int64 [N], checked."""
    try:
        with open(path, "rb") as fh:
            batch = _BatchUnpickler(fh, encoding="bytes").load()
    except Exception as exc:  # a damaged or hostile file fails in pickle, numpy or memory alike
        raise DataError(f"{path} is not a python-format CIFAR batch: {first_line(exc)}") from exc
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        keys = sorted(map(repr, batch)) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(f"{path} is not a python-format CIFAR batch: expected a dict with b'data' and "
                        f"{label_key!r}, got {keys}")
    images, labels = batch[b"data"], batch[label_key]
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 2
            and images.shape[1] == 3 * 32 * 32):
        what = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise DataError(f"{path}: b'data' must be a uint8 array [N, 3072], got {what}")
    try:
        labels = np.asarray(labels)
    except Exception as exc:  # ragged or exotic label lists
        raise DataError(f"{path}: {label_key!r} is not a list of ints: {first_line(exc)}") from exc
    if labels.shape != (len(images),) or labels.dtype.kind not in "iu" or (
            len(labels) and not 0 <= labels.min() <= labels.max() < classes):
        raise DataError(f"{path}: {label_key!r} must be {len(images)} ints in [0, {classes}), got "
                        f"{labels.dtype} {labels.shape}")
    return images.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def synthetic(n_train: int = 256, n_test: int = 128, shape: tuple[int, ...] = (1, 8, 8), num_classes: int = 4,
              seed: int = 0) -> Dataset:
    """Linearly separable random images: class = argmax of a fixed random projection (for tests)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, *shape, generator=g)
    proj = torch.randn(int(np.prod(shape)), num_classes, generator=g)
    y = (x.flatten(1) @ proj).argmax(1)
    return Dataset("synthetic", x[:n_train], y[:n_train], x[n_train:], y[n_train:], num_classes)


class BatchStream:
    """Endless minibatches: a fresh permutation per epoch from its own generator; resumable."""

    def __init__(self, n: int, batch_size: int, seed: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.n, self.batch_size = n, min(batch_size, n)
        self.generator = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.generator)
        self.pos = 0

    def next(self) -> torch.Tensor:
        if self.pos + self.batch_size > self.n:  # drop the ragged tail: equal batch sizes every step
            self.perm = torch.randperm(self.n, generator=self.generator)
            self.pos = 0
        idx = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "perm": self.perm.clone(), "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.perm = state["perm"].clone()
        self.pos = int(state["pos"])
