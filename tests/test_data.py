"""Datasets: digits split, local CIFAR pickles, synthetic data, resumable batch stream."""
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings, strategies as st

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


def _py2_string(value: bytes) -> bytes:
    """A Python 2 `str` in pickle protocol 2 (SHORT_BINSTRING / BINSTRING): bytes once loaded."""
    return b"U" + bytes([len(value)]) + value if len(value) < 256 else b"T" + struct.pack("<I", len(value)) + value


def _py2_cifar_batch(images: np.ndarray, labels: list[int]) -> bytes:
    """A CIFAR python-format batch as the original archive holds it: a dict pickled by Python 2's
    cPickle (protocol 2) with a numpy 1 array (numpy.core.multiarray._reconstruct + __setstate__)."""
    def small_int(n):
        return b"K" + bytes([n]) if n < 256 else b"M" + struct.pack("<H", n)
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + small_int(0) + b"\x85" + _py2_string(b"b")
             + b"\x87R(" + small_int(1) + small_int(images.shape[0]) + small_int(images.shape[1]) + b"\x86"
             + b"cnumpy\ndtype\n" + _py2_string(b"u1") + b"K\x00K\x01\x87R(K\x03" + _py2_string(b"|")
             + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89" + _py2_string(images.tobytes()) + b"tb")
    items = [(b"batch_label", _py2_string(b"training batch 1 of 5")),
             (b"labels", b"](" + b"".join(small_int(y) for y in labels) + b"e"),
             (b"data", array),
             (b"filenames", b"](" + b"".join(_py2_string(b"img_%d.png" % i) for i in range(len(labels))) + b"e")]
    return b"\x80\x02}(" + b"".join(_py2_string(k) + v for k, v in items) + b"u."


def test_cifar10_reads_batches_in_the_original_python2_format(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    images = {name: rng.integers(0, 256, (3, 3072), dtype=np.uint8)
              for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]}
    for name, x in images.items():
        (folder / name).write_bytes(_py2_cifar_batch(x, [9, 0, 4]))
    ds = D.load("cifar10", root=str(tmp_path))
    assert ds.x_train.shape == (15, 3, 32, 32) and ds.y_test.tolist() == [9, 0, 4]
    raw = torch.from_numpy(images["data_batch_2"].reshape(3, 3, 32, 32)).float() / 255.0
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    assert torch.equal(ds.x_train[3:6], (raw - mean) / std)


class _Runs:
    """Unpickling this calls `function(*args)`: what a crafted data_batch file can do to pickle.load."""

    def __init__(self, function, *args):
        self.call = (function, args)

    def __reduce__(self):
        return self.call


def _write_cifar10_batches(folder, batch) -> None:
    os.makedirs(folder, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(os.path.join(folder, name), "wb") as fh:
            pickle.dump(batch, fh)


@pytest.mark.parametrize("make", [lambda marker: _Runs(open, marker, "w"),
                                  lambda marker: _Runs(eval, f"open({marker!r}, 'w')"),
                                  lambda marker: _Runs(os.system, f"touch {marker}")], ids=["open", "eval", "system"])
def test_cifar_batch_that_runs_code_is_refused_and_runs_nothing(tmp_path, make):
    marker = str(tmp_path / "marker")
    _write_cifar10_batches(tmp_path / "cifar-10-batches-py", {b"data": make(marker), b"labels": [0]})
    with pytest.raises(D.DataError, match="data_batch_1 is not a python-format CIFAR batch: refused global"):
        D.load("cifar10", root=str(tmp_path))
    assert not os.path.exists(marker)


@pytest.mark.parametrize("batch, message", [
    ([1, 2], "expected a dict with b'data' and b'labels', got list"),
    ({b"data": np.zeros((2, 3072), np.uint8)}, "expected a dict with b'data' and b'labels'"),
    ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, r"b'data' must be a uint8 array \[N, 3072\]"),
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "b'data' must be a uint8 array"),
    ({b"data": [0] * 3072, b"labels": [0]}, "b'data' must be a uint8 array"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, r"b'labels' must be 2 ints in \[0, 10\)"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, r"b'labels' must be 2 ints in \[0, 10\)"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, "a"]}, r"b'labels' must be 2 ints"),
])
def test_cifar_batch_of_the_wrong_shape_is_named(tmp_path, batch, message):
    _write_cifar10_batches(tmp_path / "cifar-10-batches-py", batch)
    with pytest.raises(D.DataError, match=message):
        D.load("cifar10", root=str(tmp_path))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=200))
@example(content=b"")
@example(content=_py2_cifar_batch(np.zeros((1, 3072), np.uint8), [3])[:-40])  # truncated
def test_random_bytes_as_a_cifar_batch_are_a_data_error(tmp_path, content):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir(exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(content)
    with pytest.raises(D.DataError, match="is not a python-format CIFAR batch"):
        D.load("cifar10", root=str(tmp_path))


def test_cifar_missing_files_and_missing_root(tmp_path):
    with pytest.raises(D.DataError, match="missing files"):
        D.load("cifar100", root=str(tmp_path))
    with pytest.raises(D.DataError, match="config key data_root"):
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
