"""Checkpoints: written atomically (see atomic.py), read with weights_only=True, checked on load.

A checkpoint carries a SHA-256 of its contents (every tensor's dtype, shape and bytes, and every
other value), so a file damaged on disk is refused instead of silently giving other weights.
Plain state_dicts for other programs (`sample`'s output, a user's base model) carry none.
"""
from __future__ import annotations

import hashlib
import os
import warnings

import torch

from .atomic import atomic_open
from .errors import first_line

CHECKSUM_KEY = "sha256"


class CheckpointError(ValueError):
    """A file that is not an intact checkpoint (unreadable, damaged, or not a dict of tensors)."""


def save(obj: dict, path: str, *, checksum: bool = True) -> None:
    """Write `obj` to `path` so that a crash leaves either the old file or the new one, never half of one.
    checksum=False writes `obj` alone: a plain state_dict that `load_state_dict(torch.load(path))` takes."""
    if checksum:
        if CHECKSUM_KEY in obj:
            raise ValueError(f"{CHECKSUM_KEY!r} is the checkpoint's checksum entry; rename that key")
        obj = {**obj, CHECKSUM_KEY: digest(obj)}
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)


def load(path: str, *, expect_checksum: bool = True) -> dict:
    """The dict saved at `path`, its checksum verified. One without a checksum (written by an older
    version, or a plain state_dict) loads unchecked, with a warning when `expect_checksum`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file fails in zip, pickle, unicode or EOF handling alike
        raise CheckpointError(f"{path!r} is not a checkpoint of plain tensors (state_dict; loaded with "
                              f"weights_only=True), or it is damaged: {first_line(exc)}") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path!r} holds a {type(obj).__name__}, not a dict of tensors (state_dict)")
    if CHECKSUM_KEY not in obj:
        if expect_checksum:
            warnings.warn(f"checkpoint {path!r} has no checksum (written before checkpoints carried one): "
                          "loading it unverified", stacklevel=2)
        return obj
    saved = obj.pop(CHECKSUM_KEY)
    if saved != digest(obj):
        raise CheckpointError(f"checkpoint {path!r} is damaged: its contents do not match the SHA-256 stored "
                              "with them (the file changed after it was written)")
    return obj


def digest(obj) -> str:
    """SHA-256 of a nested structure of dicts, lists, tuples, tensors and plain values, in order."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"tensor {t.dtype} {tuple(t.shape)} {obj.requires_grad};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(f"{type(obj).__name__} {len(obj)};".encode())
        for key, value in obj.items():
            _feed(h, key)
            _feed(h, value)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__} {len(obj)};".encode())
        for value in obj:
            _feed(h, value)
    else:  # numbers, strings, None, bools: repr is exact (floats round-trip)
        h.update(f"{type(obj).__name__} {obj!r};".encode())

