"""Coordinate tables in the reference's format: flat arrays with one row per coordinate.

Rows follow docs/spec.md §2 (one coordinate per (tensor, a, b), a-major, tensors in
`learnable_parameter` order), so they are exactly `Layout.coordinates()`.
"""
from __future__ import annotations

import functools
import random
from typing import Mapping

import numpy as np
import torch
from torch import nn

from ..arguments import number
from ..layout import Layout


def learnable_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """`model.learnable_parameter` (name -> tensor, the tensors the INR generates), checked."""
    if not hasattr(model, "learnable_parameter"):
        raise AttributeError(f"{type(model).__name__} has no `learnable_parameter` (an ordered dict name -> tensor "
                             "of the tensors the hyper-model generates), which the reference API requires")
    params = model.learnable_parameter
    if not isinstance(params, Mapping) or len(params) == 0:
        raise ValueError(f"{type(model).__name__}.learnable_parameter must be a non-empty dict name -> tensor, "
                         f"got {type(params).__name__} of length {len(params) if hasattr(params, '__len__') else '?'}")
    return dict(params)


def params_layout(params: Mapping[str, torch.Tensor]) -> Layout:
    """The Layout of `params`, shared by every call with the same names and shapes, so that the
    coordinate table and the backends' plans cached on it are built once."""
    return _layout_of(tuple((name, tuple(t.shape)) for name, t in params.items()))


@functools.lru_cache(maxsize=16)
def _layout_of(entries: tuple[tuple[str, tuple[int, ...]], ...]) -> Layout:
    return Layout.from_shapes(entries)


def learnable_layout(model: nn.Module) -> Layout:
    return params_layout(learnable_parameters(model))


def layout_indices(layout: Layout) -> tuple[torch.Tensor, torch.Tensor]:
    """Per coordinate: (a, b, kh, kw) with zeros where a tensor has no such dimension, and the tensor's rank."""
    coords = layout.coordinates()
    indices = torch.zeros(layout.num_rows, 4, dtype=torch.int64)
    indices[:, :2] = coords[:, 1:3].to(torch.int64)
    sizes = torch.empty(layout.num_rows, dtype=torch.int64)
    for s in layout.segments:
        rows = slice(s.row_offset, s.row_offset + s.rows)
        if len(s.shape) == 4:
            indices[rows, 2] = s.shape[2]
            indices[rows, 3] = s.shape[3]
        sizes[rows] = len(s.shape)
    return indices, sizes


def sample_coordinates(model_cls: nn.Module):
    """(coords [N, 6] float32, keys [N] numpy str array, indices [N, 4] int64, sizes [N] int64) of the model."""
    layout = learnable_layout(model_cls)
    keys = np.repeat(np.array(layout.names), [s.rows for s in layout.segments])
    indices, sizes = layout_indices(layout)
    return layout.coordinates().clone(), keys, indices, sizes


def create_key_masks(keys_list) -> dict[str, torch.Tensor]:
    """Tensor name -> int64 0/1 mask over the coordinates, names sorted (as `np.unique` sorts them)."""
    unique, inverse = np.unique(np.asarray(keys_list), return_inverse=True)
    inverse = torch.from_numpy(inverse.reshape(-1))
    return {str(key): (inverse == i).long() for i, key in enumerate(unique)}


def sample_subset(coords_tensor, keys_list, indices_list, size_list, key_mask=None, ratio=0.5):
    """A random `ratio` of the tensors (Python's `random`, as the reference): their rows and names.

    Returns (coords, keys, indices, sizes, selected_keys); ratio >= 1 returns everything.
    """
    ratio = number("ratio", ratio, above=0)
    if not len(coords_tensor) == len(keys_list) == len(indices_list) == len(size_list):
        raise ValueError(f"coords, keys, indices and sizes must have one row per coordinate, got lengths "
                         f"{len(coords_tensor)}, {len(keys_list)}, {len(indices_list)}, {len(size_list)}")
    unique = np.unique(keys_list)
    if ratio >= 1.0:
        return coords_tensor, keys_list, indices_list, size_list, unique
    if key_mask is None:
        key_mask = create_key_masks(keys_list)
    selected = random.sample(list(unique), k=int(len(unique) * ratio))
    if not selected:
        raise ValueError(f"ratio={ratio} selects no tensor out of {len(unique)}")
    mask = sum(key_mask[k] for k in selected).bool()
    return coords_tensor[mask], keys_list[mask.numpy()], indices_list[mask], size_list[mask], selected
