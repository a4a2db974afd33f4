"""Checkpoints: written atomically (see atomic.py), read with weights_only=True."""
from __future__ import annotations

import os
import pickle

import torch

from .atomic import atomic_open


def save(obj: dict, path: str) -> None:
    """Write `obj` to `path` so that a crash leaves either the old file or the new one, never half of one."""
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)


def load(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:  # a pickled module, or not a checkpoint
        raise ValueError(f"{path!r} is not a checkpoint of plain tensors (state_dict; loaded with weights_only=True): "
                         f"{str(exc).splitlines()[0]}") from exc
