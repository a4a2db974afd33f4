"""Checkpoints: written atomically (temp file in the same folder + os.replace), read with weights_only=True."""
from __future__ import annotations

import os
import pickle
import tempfile

import torch


def save(obj: dict, path: str) -> None:
    """Write `obj` to `path` so that a crash leaves either the old file or the new one, never half of one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:  # a pickled module, or not a checkpoint
        raise ValueError(f"{path!r} is not a checkpoint of plain tensors (state_dict; loaded with weights_only=True): "
                         f"{str(exc).splitlines()[0]}") from exc
