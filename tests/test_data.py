"""Datasets: digits split, local CIFAR pickles, synthetic data, resumable batch stream."""
import os
import pickle

import numpy as np
import pytest
import torch

from neumeta_fast import data as D


def test_digits_split_is_stratified_and_deterministic():
    pytest.importorskip("sklearn")
    a = D.load("digits", train_size=100, seed=3)
    b = D.load("digits", train_size=100, seed=3)
    assert a.x_train.shape == (100, 1, 8, 8) and a.input_shape == (1, 8, 8)
    assert torch.equal(a.x_train, b.x_train)
    assert torch.bincount(a.y_train, minlength=10).min() == 10  # the prefix keeps classes balanced
    assert float(a.x_train.max()) <= 1.0 and len(a.y_test) > 600


def test_unknown_dataset_and_bad_split_name_the_problem():
    with pytest.raises(D.DataError, match="unknown dataset 'mnist'"):
        D.load("mnist")
    with pytest.raises(D.DataError, match="train_size"):
        D.load("synthetic", train_size=10**6)


def _write_cifar10(folder):
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
        with open(os.path.join(folder, name), "wb") as fh:
            pickle.dump(batch, fh)


def test_cifar10_reads_python_pickles(tmp_path):
    _write_cifar10(tmp_path / "cifar-10-batches-py")
    ds = D.load("cifar10", root=str(tmp_path))
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32) and ds.num_classes == 10


def test_cifar_missing_files_and_missing_root(tmp_path):
    with pytest.raises(D.DataError, match="missing files"):
        D.load("cifar100", root=str(tmp_path))
    with pytest.raises(D.DataError, match="--data-root"):
        D.load("cifar10")


def test_batch_stream_resumes_exactly():
    a = D.BatchStream(10, 3, seed=0)
    seq = [a.next() for _ in range(7)]
    b = D.BatchStream(10, 3, seed=0)
    for _ in range(4):
        b.next()
    c = D.BatchStream(10, 3, seed=99)
    c.load_state_dict(b.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(seq[4:], [c.next() for _ in range(3)]))
