"""The implicit neural representation: one residual MLP per morphable tensor.

Parameter names and shapes follow docs/spec.md §11 so that checkpoints of the reference
code load with `load_state_dict` unchanged:
`model.{i}.initial_layer.{weight,bias}`, `model.{i}.residual_blocks.{b}.{weight,bias}`,
`model.{i}.scalars.{b}` (0-d), `model.{i}.output_layer.{weight,bias}`.
"""
from __future__ import annotations

import re
import weakref
from typing import Mapping, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .arguments import FLOAT32_MAX, number

FreqSpec = Union[int, Sequence[int]]

# INR -> {(dtype, column_multiple): (parameter state, stacks)}: `INR.stacked` without grad.
_STACKS: "weakref.WeakKeyDictionary[INR, dict]" = weakref.WeakKeyDictionary()


# Frequencies are float32(2^k pi): k = 127 overflows to inf (and sin(inf) is NaN).
MAX_FREQ_EXPONENT = 127


def frequency_range(num_freqs: FreqSpec) -> tuple[int, int]:
    """`num_freqs` as the exponent range [low, high): an int F means [0, F)."""
    if hasattr(num_freqs, "__iter__") and not isinstance(num_freqs, (str, bytes)):
        pair = list(num_freqs)
        if len(pair) != 2:
            raise ValueError(f"num_freqs must be an int or a [low, high) pair, got {num_freqs!r}")
        low = number("num_freqs low", pair[0], integer=True, low=0)
        high = number("num_freqs high", pair[1], integer=True, low=low, high=MAX_FREQ_EXPONENT)
    else:
        low, high = 0, number("num_freqs", num_freqs, integer=True, low=0, high=MAX_FREQ_EXPONENT)
    return low, high


def check_mlp_index(mlp_index: torch.Tensor, num_mlps: int) -> None:
    """Refuse MLP indices outside [0, num_mlps), which noisy coordinates or explicit layer ids can give."""
    lo, hi = torch.stack(torch.aminmax(mlp_index)).tolist()  # one device sync
    if lo < 0 or hi >= num_mlps:
        raise ValueError(f"layer index reaches [{lo}, {hi}], outside the INR's [0, {num_mlps}) MLPs")


def group_by_mlp(mlp_index: torch.Tensor, num_mlps: int) -> tuple[torch.Tensor, list[int]]:
    """Rows grouped by the MLP that evaluates them, by one stable sort instead of a mask per MLP.

    Returns (order, counts): MLP m takes rows `order[start:start + counts[m]]`, start = sum(counts[:m]).
    Raises ValueError for an index outside [0, num_mlps).
    """
    check_mlp_index(mlp_index, num_mlps)
    order = torch.argsort(mlp_index, stable=True)
    return order, torch.bincount(mlp_index, minlength=num_mlps).tolist()


def _round_up(n: int, multiple: int) -> int:
    return (n + multiple - 1) // multiple * multiple


class ResMLP(nn.Module):
    """h = relu(W0 pe + b0); h = s_b * relu(W_b h + b_b) + h per block; out = Wo h + bo."""

    def __init__(self, in_features: int, hidden_dim: int, output_dim: int, num_layers: int, scalar: float):
        super().__init__()
        self.initial_layer = nn.Linear(in_features, hidden_dim)
        self.residual_blocks = nn.ModuleList(nn.Linear(hidden_dim, hidden_dim) for _ in range(num_layers - 1))
        self.scalars = nn.ParameterList(nn.Parameter(torch.tensor(float(scalar))) for _ in range(num_layers - 1))
        self.output_layer = nn.Linear(hidden_dim, output_dim)


class INR(nn.Module):
    """`num_tensors` ResMLPs over Fourier features of 6-D coordinates.

    Weight generation lives in `neumeta_fast.generate`; this module only holds parameters,
    the configuration the backends need and the stacked form their fused kernels read.
    """

    def __init__(self, num_tensors: int, hidden_dim: int = 256, num_layers: int = 4, num_freqs: FreqSpec = 16,
                 output_dim: int = 9, input_dim: int = 6, scalar: float = 0.1):
        super().__init__()
        num_tensors = number("num_tensors", num_tensors, integer=True, low=1)
        num_layers = number("num_layers", num_layers, integer=True, low=1, why="1 = no residual block")
        hidden_dim = number("hidden_dim", hidden_dim, integer=True, low=1)
        output_dim = number("output_dim", output_dim, integer=True, low=1)
        input_dim = number("input_dim", input_dim, integer=True, low=6, high=6, why="coordinates are 6-D")
        scalar = number("scalar", scalar, low=-FLOAT32_MAX, high=FLOAT32_MAX)
        self.freq_low, self.freq_high = frequency_range(num_freqs)
        self.num_tensors = num_tensors
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.output_dim = output_dim
        self.input_dim = input_dim
        self.in_features = input_dim * (1 + 2 * (self.freq_high - self.freq_low))
        self.model = nn.ModuleList(
            ResMLP(self.in_features, hidden_dim, output_dim, num_layers, scalar) for _ in range(num_tensors)
        )

    @property
    def num_freqs(self) -> int:
        return self.freq_high - self.freq_low

    def extra_repr(self) -> str:
        return (f"num_tensors={self.num_tensors}, hidden_dim={self.hidden_dim}, num_layers={self.num_layers}, "
                f"freqs=[{self.freq_low}, {self.freq_high}), output_dim={self.output_dim}")

    def stacked(self, dtype: torch.dtype | None = None, *, column_multiple: int | None = None,
                mlps: Sequence[int] | None = None) -> tuple[torch.Tensor, ...]:
        """Per-MLP parameters stacked over the L MLPs, as the fused kernels read them: w0, b0, wr, br, sc, wo, bo.

        By default in the parameters' own layout and dtype: w0 [L, H, F], b0 [L, H], wr [L, nb, H, H],
        br [L, nb, H], sc [L, nb], wo [L, O, H], bo [L, O] (nb = num_layers - 1).
        dtype:           weights and biases cast to it; the scalars become float32.
        column_multiple: the CUDA kernel's layout: w0 [L, F16, C] and wr [L, nb, H32, C] transposed to
                         [in, out], b0 [L, C], br [L, nb, C], wo [L, O, H32], zero-padded, where F16 and H32
                         round F and H up to 16 and 32 and C rounds H32 up to `column_multiple`.
        mlps:            stack only these MLPs, in this order (L = len(mlps)): the others' parameters
                         stay out of the autograd graph, so their gradients stay None.
        Differentiable while grad is on. Otherwise the result is cached until a parameter changes (seen
        by its version counter, storage, dtype or device; writes through `.data` or a collective bypass
        the counter): shared tensors, do not modify them.
        """
        params = list(self.parameters())
        if (torch.is_grad_enabled() and any(p.requires_grad for p in params)) or torch.compiler.is_compiling():
            # autograd needs a fresh graph; a compiled graph stacks by itself (the cache check would break it)
            return self._stack(dtype, column_multiple, mlps)
        state = (params[0].device, params[0].dtype, tuple((p.data_ptr(), p._version) for p in params))
        cache = _STACKS.setdefault(self, {})
        key = (dtype, column_multiple, None if mlps is None else tuple(mlps))
        hit = cache.get(key)
        if hit is None or hit[0] != state:
            hit = cache[key] = (state, self._stack(dtype, column_multiple, mlps))
        return hit[1]

    def _stack(self, dtype: torch.dtype | None, column_multiple: int | None,
               indices: Sequence[int] | None = None) -> tuple[torch.Tensor, ...]:
        mlps = list(self.model) if indices is None else [self.model[i] for i in indices]
        w0 = torch.stack([m.initial_layer.weight for m in mlps])
        b0 = torch.stack([m.initial_layer.bias for m in mlps])
        if self.num_layers > 1:
            wr = torch.stack([torch.stack([b.weight for b in m.residual_blocks]) for m in mlps])
            br = torch.stack([torch.stack([b.bias for b in m.residual_blocks]) for m in mlps])
            sc = torch.stack([torch.stack(list(m.scalars)) for m in mlps])
        else:
            L, H = b0.shape
            wr, br, sc = w0.new_zeros(L, 0, H, H), w0.new_zeros(L, 0, H), w0.new_zeros(L, 0)
        wo = torch.stack([m.output_layer.weight for m in mlps])
        bo = torch.stack([m.output_layer.bias for m in mlps])
        if column_multiple is not None:
            h, f = self.hidden_dim, self.in_features
            h_pad = _round_up(h, 32)
            ldw = _round_up(h_pad, column_multiple)
            w0 = F.pad(w0.transpose(1, 2), (0, ldw - h, 0, _round_up(f, 16) - f))
            b0 = F.pad(b0, (0, ldw - h))
            wr = F.pad(wr.transpose(2, 3), (0, ldw - h, 0, h_pad - h))
            br = F.pad(br, (0, ldw - h))
            wo = F.pad(wo, (0, h_pad - h))
            # the CUDA kernel reads raw row-major memory; a pad of zero keeps the transposed strides
            w0, wr = w0.contiguous(), wr.contiguous()
        if dtype is not None:
            w0, b0, wr, br, wo, bo = (t.to(dtype) for t in (w0, b0, wr, br, wo, bo))
            sc = sc.float()
        return w0, b0, wr, br, sc, wo, bo

    @classmethod
    def from_state_dict(cls, state: Mapping[str, object], *, num_freqs: FreqSpec | None = None,
                        weights: str = "ema") -> "INR":
        """Build an INR whose configuration is read off a state dict or training checkpoint, then load it.

        `state` is an INR state dict (`model.{i}...` keys: the reference's hyper-model or this INR) or a
        training checkpoint dict holding one: the authors' (`model_state_dict`, `ema_shadow`, `epoch`,
        `optimizer_state_dict`, `best_acc`) or this package's Trainer's (`inr`, `ema`, ...). `weights`
        picks the checkpoint's "ema" weights (what the authors evaluate and release) or the raw "model"
        weights; a plain state dict is loaded as it is.
        The frequency count follows from the first layer's width; pass `num_freqs` as a
        `[low, high)` pair when the checkpoint used a range that does not start at 0.
        """
        state = _inr_weights(state, weights)
        bad = [k for k in state if not _STATE_KEY.match(k)]
        if bad:
            raise ValueError(f"not an INR state dict: unexpected keys {bad[:5]} (a training checkpoint keeps the "
                             f"INR under one of {[k for keys in CHECKPOINT_KEYS.values() for k in keys]})")
        if "model.0.initial_layer.weight" not in state:
            raise ValueError("not an INR state dict: 'model.0.initial_layer.weight' is missing")
        num_tensors = 1 + max(int(_STATE_KEY.match(k).group(1)) for k in state)
        blocks = {int(m.group(4)) for k in state if (m := _STATE_KEY.match(k)) and m.group(4) is not None}
        hidden, in_features = state["model.0.initial_layer.weight"].shape
        output_dim = state["model.0.output_layer.weight"].shape[0]
        if (in_features - 6) % 12:
            raise ValueError(f"first layer width {in_features} is not 6 + 12 * F")
        freqs = num_freqs if num_freqs is not None else (in_features - 6) // 12
        inr = cls(num_tensors, hidden_dim=hidden, num_layers=len(blocks) + 1, num_freqs=freqs, output_dim=output_dim)
        if inr.in_features != in_features:
            raise ValueError(f"num_freqs={num_freqs!r} gives {inr.in_features} input features, checkpoint has {in_features}")
        inr.load_state_dict(state)
        return inr


_STATE_KEY = re.compile(r"model\.(\d+)\.(initial_layer\.(weight|bias)|residual_blocks\.(\d+)\.(weight|bias)"
                        r"|scalars\.(\d+)|output_layer\.(weight|bias))$")

# Where training checkpoints keep the INR's weights, first match wins: the authors' scripts save
# model_state_dict and ema_shadow (their loader also reads state_dict); this package's Trainer saves inr and ema.
CHECKPOINT_KEYS = {"ema": ("ema_shadow", "ema"), "model": ("model_state_dict", "state_dict", "inr")}


def _inr_weights(state: Mapping[str, object], weights: str) -> Mapping[str, object]:
    """The INR state dict in `state`: its entry for `weights` when `state` is a training checkpoint, else `state`."""
    if weights not in CHECKPOINT_KEYS:
        raise ValueError(f"weights must be one of {sorted(CHECKPOINT_KEYS)}, got {weights!r}")
    if not isinstance(state, Mapping):
        raise TypeError(f"expected a state dict or a checkpoint dict, got {type(state).__name__}")
    if not any(k in state for keys in CHECKPOINT_KEYS.values() for k in keys):
        return state
    found = next((k for k in CHECKPOINT_KEYS[weights] if k in state), None)
    if found is None:
        other = next(w for w in CHECKPOINT_KEYS if w != weights)
        raise ValueError(f"the checkpoint has no {weights} weights (none of the keys {list(CHECKPOINT_KEYS[weights])}); "
                         f"keys present: {sorted(map(str, state))}: pass weights={other!r} for its {other} weights")
    inner = state[found]
    if not isinstance(inner, Mapping):
        raise ValueError(f"checkpoint entry {found!r} is a {type(inner).__name__}, not a state dict")
    return inner
