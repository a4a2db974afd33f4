"""Weight sampling with the reference's signatures, on `neumeta_fast.generate`.

Writes go explicitly into the model's own parameters (by state-dict name): the reference
relies on `learnable_parameter` sharing storage with them instead.
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn

from ..arguments import number
from ..encoding import check_norm
from ..generate import generate, generate_into, write_weights
from ..inr import INR
from ..layout import Layout, centre_start
from ..noise import routing_error
from ._device import resolve_device
from .coordinates import layout_indices, learnable_layout, learnable_parameters, params_layout


def _selected_names(params: Mapping[str, torch.Tensor], key_mask: Mapping[str, torch.Tensor],
                    selected_keys: Sequence[str] | None) -> list[str]:
    """Selected tensor names in `learnable_parameter` order (the order of the returned weights)."""
    wanted = set(map(str, key_mask if selected_keys is None else selected_keys))
    if not wanted:
        raise ValueError("no tensor selected: selected_keys is empty")
    unknown = sorted(n for n in wanted if n not in key_mask or n not in params)
    if unknown:
        raise KeyError(f"selected keys {unknown} are missing from key_mask or from model.learnable_parameter")
    return [n for n in params if n in wanted]


def _row_owner(key_mask: Mapping[str, torch.Tensor], names: list[str], num_rows: int) -> torch.Tensor:
    """For each coordinate row: position in `names` of the tensor it belongs to.

    As in the reference, `coords` are the rows of the full table that the selected keys' masks
    cover, in table order.
    """
    masks = torch.stack([torch.as_tensor(key_mask[n]).cpu().bool() for n in names])
    covered = masks.any(0)
    if int(covered.sum()) != num_rows:
        raise ValueError(f"coords has {num_rows} rows but the selected keys' masks cover {int(covered.sum())} "
                         "coordinates: pass the rows of the selected tensors (e.g. from sample_subset)")
    return masks[:, covered].to(torch.int64).argmax(0)


@dataclass(frozen=True)
class _Selection:
    """The selected tensors' Layout and its rows in canonical order: owner (position in the selection),
    indices and sizes as `sample_coordinates` gives them. Shared between calls: do not modify."""

    layout: Layout
    owner: torch.Tensor
    indices: torch.Tensor
    sizes: torch.Tensor


@functools.lru_cache(maxsize=16)
def _selection(full: Layout, names: tuple[str, ...]) -> _Selection:
    """Built once per (model layout, selected names): a new Layout per call would rebuild its coordinates
    and the backends' plans every training step."""
    layout = full.subset(names)
    owner = torch.repeat_interleave(torch.arange(len(layout)), torch.tensor([s.rows for s in layout.segments]))
    return _Selection(layout, owner, *layout_indices(layout))


def _canonical_noise(selection: _Selection, owner: torch.Tensor, coords: torch.Tensor, indices: torch.Tensor,
                     sizes: torch.Tensor) -> torch.Tensor | None:
    """Noise d with `layout.coordinates() + d == coords` bit for bit, when rows are in the layout's own
    order (the case `sample_coordinates` + `sample_subset` produce); None otherwise."""
    if not (torch.equal(owner, selection.owner) and torch.equal(torch.as_tensor(indices).cpu(), selection.indices)
            and torch.equal(torch.as_tensor(sizes).cpu(), selection.sizes)):
        return None
    base = selection.layout.coordinates(coords.device)
    noise = coords - base
    if not torch.equal(base + noise, coords) or routing_error(base[:, 0], noise[None, :, 0]) is not None:
        return None  # not exact (|noise| > 0.5), or rows routed past generate()'s rule: the generic path
    return noise


def _scatter(out: torch.Tensor, rows: torch.Tensor, idx: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """One tensor from INR outputs of arbitrary rows; entries without a row keep the target's values."""
    base = target.detach().to(device=out.device, dtype=out.dtype)
    vals = out[rows]
    if target.dim() == 4:
        kh, kw = target.shape[2:]
        k = kh * kw
        if k > out.shape[1]:
            raise ValueError(f"kernel {kh}x{kw} needs {k} outputs per coordinate, the hyper-model gives {out.shape[1]}")
        start = centre_start(k, out.shape[1])
        return base.index_put((idx[:, 0], idx[:, 1]), vals[:, start:start + k].reshape(-1, kh, kw))
    if target.dim() == 2:
        return base.index_put((idx[:, 0], idx[:, 1]), vals[:, 0])
    return base.index_put((idx[:, 0],), vals[:, 0])


def _generic(hyper_model, params, names, owner, coords, indices, norm) -> dict[str, torch.Tensor]:
    """Rows in any order (or a hyper-model that is not an INR): its forward, then a scatter by indices."""
    out = hyper_model(coords / norm, layer_id=coords[:, 0].int(), input_dim=coords[:, -1])
    idx = torch.as_tensor(indices).to(device=coords.device, dtype=torch.int64)
    owner = owner.to(coords.device)
    return {n: _scatter(out, owner == s, idx[owner == s], params[n]) for s, n in enumerate(names)}


def sample_weights(hyper_model, model_cls, coords_tensor, keys_list, indices_list, size_list, key_mask,
                   selected_keys=None, device="cuda", large_batch_size=4096, NORM=1):
    """Generate the selected tensors at the given (possibly noisy) coordinates and write them into `model_cls`.

    Returns (model_cls, weights): the generated tensors in `learnable_parameter` order, differentiable
    w.r.t. the hyper-model when grad is enabled. `selected_keys=None` selects every key of `key_mask`.
    Rows are assigned to tensors by `key_mask` (as the reference; `keys_list` is not read), and
    `large_batch_size` is accepted for compatibility: the backends choose their own chunking.
    """
    norm = check_norm("NORM", NORM)
    number("large_batch_size", large_batch_size, integer=True, low=1)
    device = resolve_device(device, hyper_model)
    params = learnable_parameters(model_cls)
    names = _selected_names(params, key_mask, selected_keys)
    coords = torch.as_tensor(coords_tensor).to(device=device, dtype=torch.float32)
    owner = _row_owner(key_mask, names, coords.shape[0])
    selection = _selection(params_layout(params), tuple(names))
    noise = (_canonical_noise(selection, owner, coords, indices_list, size_list)
             if isinstance(hyper_model, INR) else None)
    if noise is not None:
        weights = generate(hyper_model, selection.layout, norm=norm, noise_mode="reference",
                           noise_tensor=noise.unsqueeze(0) if noise.any() else None)
    else:
        weights = _generic(hyper_model, params, names, owner, coords, indices_list, norm)
    write_weights(model_cls, weights)
    return model_cls, [weights[n] for n in names]


def _generate_into(hyper_model, model: nn.Module, *, norm: float, noise: float, samples: int) -> nn.Module:
    if not isinstance(hyper_model, INR):
        raise TypeError(f"hyper_model must be a neumeta_fast hyper-model (NeRF_ResMLP_Compose, NeRF_MLP_Compose "
                        f"or INR), got {type(hyper_model).__name__}: load its state dict into one")
    return generate_into(hyper_model, model, learnable_layout(model), norm=norm, noise=noise, samples=samples,
                         noise_mode="reference").eval()


def sample_merge_model(hyper_model, model, args, K=50, device="cuda"):
    """A copy of `model` whose learnable tensors are the average of K generated samples.

    Sample 0 is noise-free, samples 1..K-1 use `args.training.coordinate_noise` (reference-mode noise),
    so K=1 is the noise-free model; coordinates are divided by `args.dimensions.norm`. The weights
    are averaged inside `generate`: one model copy, not K. Like the reference, puts `hyper_model` in eval mode.
    """
    K = number("K", K, integer=True, low=1)
    noise = number("args.training.coordinate_noise", args.training.coordinate_noise, low=0)
    norm = check_norm("args.dimensions.norm", args.dimensions.norm)
    hyper_model.eval()
    device = resolve_device(device, hyper_model)
    merged = copy.deepcopy(model).to(device)
    # generate()'s single sample is a noisy draw (training); the reference's sample 0 is always clean
    return _generate_into(hyper_model, merged, norm=norm, noise=noise if K > 1 else 0.0, samples=K)


def sample_single_model(hyper_model, model, device="cuda", cfg=None):
    """`model` (in place, eval mode) with noise-free generated weights; reads `cfg.dimensions.norm`."""
    if cfg is None:
        raise ValueError("sample_single_model needs cfg: the coordinate normaliser is read from cfg.dimensions.norm")
    norm = check_norm("cfg.dimensions.norm", cfg.dimensions.norm)
    resolve_device(device, hyper_model)
    return _generate_into(hyper_model, model, norm=norm, noise=0.0, samples=1)
