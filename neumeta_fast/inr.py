"""The implicit neural representation: one residual MLP per morphable tensor.

Parameter names and shapes follow SPEC 2 so that checkpoints of the reference
code load with `load_state_dict` unchanged:
`model.{i}.initial_layer.{weight,bias}`, `model.{i}.residual_blocks.{b}.{weight,bias}`,
`model.{i}.scalars.{b}` (0-d), `model.{i}.output_layer.{weight,bias}`.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence, Union

import torch
from torch import nn

FreqSpec = Union[int, Sequence[int]]


def frequency_range(num_freqs: FreqSpec) -> tuple[int, int]:
    """`num_freqs` as the exponent range [low, high): an int F means [0, F)."""
    if isinstance(num_freqs, int):
        low, high = 0, num_freqs
    else:
        pair = list(num_freqs)
        if len(pair) != 2:
            raise ValueError(f"num_freqs must be an int or a [low, high) pair, got {num_freqs!r}")
        low, high = int(pair[0]), int(pair[1])
    if not 0 <= low <= high:
        raise ValueError(f"num_freqs must describe 0 <= low <= high, got {num_freqs!r}")
    return low, high


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

    Weight generation lives in `neumeta_fast.generate`; this module only holds parameters
    and the configuration the backends need.
    """

    def __init__(self, num_tensors: int, hidden_dim: int = 256, num_layers: int = 4, num_freqs: FreqSpec = 16,
                 output_dim: int = 9, input_dim: int = 6, scalar: float = 0.1):
        super().__init__()
        if num_tensors < 1:
            raise ValueError(f"num_tensors must be >= 1, got {num_tensors}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1 (1 = no residual block), got {num_layers}")
        if hidden_dim < 1 or output_dim < 1:
            raise ValueError(f"hidden_dim and output_dim must be >= 1, got {hidden_dim}, {output_dim}")
        if input_dim != 6:
            raise ValueError(f"coordinates are 6-D (SPEC 2); input_dim must be 6, got {input_dim}")
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

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], *, num_freqs: FreqSpec | None = None) -> "INR":
        """Build an INR whose configuration is read off a (reference or own) state dict, then load it.

        The frequency count follows from the first layer's width; pass `num_freqs` as a
        `[low, high)` pair when the checkpoint used a range that does not start at 0.
        """
        pattern = re.compile(r"model\.(\d+)\.(initial_layer\.(weight|bias)|residual_blocks\.(\d+)\.(weight|bias)"
                             r"|scalars\.(\d+)|output_layer\.(weight|bias))$")
        bad = [k for k in state if not pattern.match(k)]
        if bad:
            raise ValueError(f"not an INR state dict: unexpected keys {bad[:5]}")
        if "model.0.initial_layer.weight" not in state:
            raise ValueError("not an INR state dict: 'model.0.initial_layer.weight' is missing")
        num_tensors = 1 + max(int(pattern.match(k).group(1)) for k in state)
        blocks = {int(m.group(4)) for k in state if (m := pattern.match(k)) and m.group(4) is not None}
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
