"""The reference's PermutationManager, on the project's channel groups and path solver.

Its permute dict maps a state-dict name to `{"out_channels" | "in_channels": order}` (axis 0 or
1; new channel j is old channel `order[j]`). Each order spans the whole axis: a group that
covers only part of it (a concatenation, a flattened feature map) moves only its own
positions. Buffers that follow a group (BatchNorm running statistics) are listed too, so
applying the dict keeps the network's function.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from torch import nn

from .. import tsp
from ..channel_groups import ChannelSlice, channel_groups
from ..smoothing import city_rows

_AXIS_MODES = {0: "out_channels", 1: "in_channels"}
_MODE_AXES = {mode: axis for axis, mode in _AXIS_MODES.items()}


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def _mode(piece: ChannelSlice) -> str:
    if piece.axis not in _AXIS_MODES:
        raise ValueError(f"{piece.name!r} follows a channel group along axis {piece.axis}; the permute dict "
                         "can only express axis 0 (out_channels) and axis 1 (in_channels)")
    return _AXIS_MODES[piece.axis]


class PermutationManager:
    """Smooth `model` by permuting coupled channels along shortest L1 paths (function unchanged).

    ignored_keys: (name, mode) pairs `__call__` leaves in place.
    """

    OUT_CHANNELS = "out_channels"
    IN_CHANNELS = "in_channels"

    def __init__(self, model: nn.Module, example_tensor: Any, ignored_keys: Iterable[tuple[str, str]] = []):
        self.model = model
        self.example_tensor = example_tensor
        self.ignored_keys = list(ignored_keys)

    def __call__(self, ignored_keys: Iterable[tuple[str, str]] | None = None) -> nn.Module:
        ignored = self.ignored_keys if ignored_keys is None else ignored_keys
        return self.apply_permutations(self.compute_permute_dict(), ignored)

    def compute_permute_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """One path order per channel group, spread over every tensor slice of the group."""
        parameters = dict(self.model.named_parameters())
        tensors = _tensors(self.model)
        permute: dict[str, dict[str, torch.Tensor]] = {}
        for group in channel_groups(self.model, self.example_tensor):
            cities = city_rows(group, parameters)
            if group.channels < 2 or cities.shape[1] == 0:
                continue
            order = tsp.path_order(cities).cpu()
            for piece in group.slices:
                size = tensors[piece.name].shape[piece.axis]
                full = permute.setdefault(piece.name, {}).setdefault(_mode(piece), torch.arange(size))
                positions = (order[:, None] * piece.block + torch.arange(piece.block)).reshape(-1)
                full[piece.offset:piece.offset + piece.length] = positions + piece.offset
        return permute

    def apply_permutations(self, permute_dict: Mapping[str, Mapping[str, Any]],
                           ignored_keys: Iterable[tuple[str, str]] = []) -> nn.Module:
        """Reorder the named tensors in place, skipping the (name, mode) pairs in `ignored_keys`."""
        tensors = _tensors(self.model)
        ignored = {tuple(key) for key in ignored_keys}
        with torch.no_grad():
            for name, modes in permute_dict.items():
                if name not in tensors:
                    raise KeyError(f"permute dict names {name!r}, which is not a parameter or buffer of the model")
                tensor = tensors[name]
                for mode, order in modes.items():
                    if (name, mode) in ignored:
                        continue
                    if mode not in _MODE_AXES:
                        raise ValueError(f"{name!r}: unknown mode {mode!r}; expected one of {tuple(_MODE_AXES)}")
                    axis = _MODE_AXES[mode]
                    if axis >= tensor.dim():
                        raise ValueError(f"{name!r} has {tensor.dim()} dim(s): it has no {mode} axis")
                    order = torch.as_tensor(order, dtype=torch.long).cpu()
                    if not torch.equal(order.sort().values, torch.arange(tensor.shape[axis])):
                        raise ValueError(f"{name!r} {mode}: order must be a permutation of range"
                                         f"({tensor.shape[axis]}), got {order.tolist()}")
                    tensor.copy_(tensor.index_select(axis, order.to(tensor.device)))
        return self.model
