"""Make a trained network smooth without changing its function (NeuMeta's weight permutation).

Inside every channel group (see `channel_groups`) the channels are reordered along a
shortest Hamiltonian path: cities are the channels, a city's features are its rows of every
parameter in the group (out-channel slices as `W.reshape(A, -1)`, in-channel slices as
`W.transpose(0, 1).reshape(B, -1)`, 1-D tensors as one column), distances are L1.
Buffers (BatchNorm running statistics) are permuted with the group but are not features:
they are statistics, not weights an INR generates.
"""
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import tsp
from .channel_groups import ChannelGroup, _named_tensors, _permute, channel_groups


@dataclass(frozen=True)
class GroupReport:
    """One channel group: `channels` cities with `features` numbers each; path costs in L1."""

    first_slice: str  # "name[axis]" of the group's first tensor slice, to tell groups apart
    channels: int
    features: int
    cost_before: float
    cost_after: float
    applied: bool  # False when the solver's order was not better (the group kept its order)
    seconds: float  # the whole group: city rows, solver, costs, permutation
    solver_seconds: float


@dataclass(frozen=True)
class SmoothReport:
    groups: list[GroupReport] = field(default_factory=list)
    total_variation_before: float = 0.0
    total_variation_after: float = 0.0
    seconds: float = 0.0

    def __str__(self) -> str:
        applied = sum(g.applied for g in self.groups)
        return (
            f"smooth: {applied}/{len(self.groups)} groups reordered, total variation "
            f"{self.total_variation_before:.6g} -> {self.total_variation_after:.6g}, {self.seconds:.3f} s"
        )


def total_variation(model: nn.Module) -> float:
    """How much the model's weights change from one channel to the next.

    For every parameter W (each shared tensor once), the L1 distance between neighbouring
    slices along axis 0 (output channels: W[j+1] vs W[j]) plus, when W has two or more
    dims, along axis 1 (input channels: W[:, j+1] vs W[:, j]), summed in float64.
    Buffers are not counted. Permuting one axis leaves the other axis's term unchanged
    (L1 is a sum over entries), so a group's reorder changes only the terms along the
    axes it permutes.
    """
    return sum(_tensor_variation(p) for p in model.parameters())


ORIENTATIONS = ("heavy_first", "light_first", "solver")


def smooth(model: nn.Module, example_inputs: Any, *, time_limit: float | None = None, seed: int = 0,
           orientation: str = "heavy_first") -> SmoothReport:
    """Reorder the channels of every group of `model` in place along a shortest L1 path.

    The model computes the same function afterwards (parameters and buffers move
    together). A group keeps its order unless the new one lowers its path cost without
    raising the total variation of the tensors it touches, so `total_variation(model)`
    never rises.

    example_inputs: a tensor or tuple of inputs for one shape-propagation pass (eval mode).
    time_limit: seconds the solver spends per group of more than 16 channels (it searches until the
      limit; None: until converged). Groups of up to 16 channels are solved exactly.
    orientation: which way each path is read. A path and its reverse are equally short, but
      generated widths sample the path from its start (a width-w network takes positions
      a/w of the full-width order), so the two readings give different small networks.
      "heavy_first" starts each path at the end whose channel has the larger L1 norm (its
      row of every tensor in the group), so the choice depends on the path, not on the
      solver's traversal; "light_first" is the opposite; "solver" keeps the solver's reading.
    """
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
    start = time.perf_counter()
    groups = channel_groups(model, example_inputs)
    parameters = dict(model.named_parameters())
    tensors = _named_tensors(model)
    variation_before = total_variation(model)
    reports = [_smooth_group(group, parameters, tensors, time_limit, seed, orientation) for group in groups]
    return SmoothReport(reports, variation_before, total_variation(model), time.perf_counter() - start)


def _smooth_group(group: ChannelGroup, parameters, tensors, time_limit, seed, orientation) -> GroupReport:
    start = time.perf_counter()
    rows = city_rows(group, parameters)
    identity = torch.arange(group.channels, device=rows.device)
    cost_before = cost_after = _path_cost(rows, identity)
    applied = False
    solver_seconds = 0.0
    if group.channels >= 3 and rows.shape[1] > 0:
        solver_start = time.perf_counter()
        order = orient(tsp.path_order(rows, time_limit=time_limit, seed=seed).to(rows.device), rows, orientation)
        solver_seconds = time.perf_counter() - solver_start
        new_cost = _path_cost(rows, order)
        if new_cost < cost_before:
            applied = _apply_if_smoother(group, order, parameters, tensors)
            cost_after = new_cost if applied else cost_before
    first = group.slices[0]
    seconds = time.perf_counter() - start
    label = f"{first.name}[{first.axis}]"
    return GroupReport(label, group.channels, rows.shape[1], cost_before, cost_after, applied, seconds, solver_seconds)


def orient(order: torch.Tensor, rows: torch.Tensor, orientation: str) -> torch.Tensor:
    """`order` or its reverse, by `orientation` (see `smooth`). Ends of equal norm: the lower
    channel index first, so the result depends only on the path's edges."""
    if orientation == "solver":
        return order
    norms = rows.double().abs().sum(dim=1)
    first, last = order[0], order[-1]
    heavy_first = bool(norms[first] > norms[last]) or (bool(norms[first] == norms[last]) and bool(first < last))
    return order if heavy_first == (orientation == "heavy_first") else order.flip(0)


def city_rows(group: ChannelGroup, parameters: dict[str, torch.Tensor]) -> torch.Tensor:
    """The cities `smooth` orders for `group`: [channels, features], each parameter slice of the
    group with its channel axis first, flattened and concatenated (float32, on the parameters'
    device). `smooth` tries the order `tsp.path_order` gives these rows and keeps it when the
    path gets shorter and the touched tensors' variation does not grow."""
    pieces = []
    for piece in group.slices:
        if piece.name in parameters:
            window = parameters[piece.name].detach().narrow(piece.axis, piece.offset, piece.length)
            pieces.append(window.movedim(piece.axis, 0).reshape(group.channels, -1).float())
    if not pieces:
        device = next(iter(parameters.values())).device if parameters else None
        return torch.zeros(group.channels, 0, device=device)
    return torch.cat(pieces, dim=1)


def _path_cost(rows: torch.Tensor, order: torch.Tensor) -> float:
    ordered = rows.double()[order]
    return float((ordered[1:] - ordered[:-1]).abs().sum())


def _apply_if_smoother(group: ChannelGroup, order: torch.Tensor, parameters, tensors) -> bool:
    """Permute; undo it if the touched tensors' variation rose (flatten blocks and concatenation
    boundaries make it differ slightly from the path cost)."""
    touched = [parameters[name] for name in {piece.name for piece in group.slices} if name in parameters]
    before = sum(_tensor_variation(t) for t in touched)
    _permute(tensors, group, order)
    if sum(_tensor_variation(t) for t in touched) <= before:
        return True
    _permute(tensors, group, torch.argsort(order))
    return False


def _tensor_variation(tensor: torch.Tensor) -> float:
    if tensor.dim() == 0:
        return 0.0
    t = tensor.detach().double()
    variation = (t[1:] - t[:-1]).abs().sum()
    if t.dim() >= 2:
        variation = variation + (t[:, 1:] - t[:, :-1]).abs().sum()
    return float(variation)
