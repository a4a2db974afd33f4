"""The reference's hyper-model classes, as `neumeta_fast.INR` subclasses.

Same constructor arguments and state-dict keys as the reference, so its checkpoints load
unchanged, and `neumeta_fast.generate` accepts these modules directly.
"""
from __future__ import annotations

import torch

from ..backends.torch_backend import evaluate_grouped
from ..encoding import check_norm, fourier_features, frequencies
from ..inr import INR, FreqSpec


class NeRF_ResMLP_Compose(INR):
    """`num_compose` residual MLPs (one per morphable tensor) over Fourier features of 6-D coordinates.

    `normalizing_factor` only matters when `forward` has to derive the layer id and the divisor
    from `x` itself (`x` is then `coordinates / normalizing_factor`).
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_freqs: FreqSpec = 10,
                 num_layers: int = 4, num_compose: int = 4, normalizing_factor: float = 1.0, scalar: float = 0.1):
        super().__init__(num_compose, hidden_dim=hidden_dim, num_layers=num_layers, num_freqs=num_freqs,
                         output_dim=output_dim, input_dim=input_dim, scalar=scalar)
        self.norm = check_norm("normalizing_factor", normalizing_factor)  # the reference's attribute name

    def forward(self, x: torch.Tensor, layer_id: torch.Tensor | None = None,
                input_dim: torch.Tensor | None = None) -> torch.Tensor:
        """INR outputs [N, output_dim] for `x` = coordinates / norm.

        layer_id:  which MLP evaluates each row (default `int(x[:, 0] * normalizing_factor)`).
        input_dim: the raw B column each output is divided by (default `x[:, -1] * normalizing_factor`).
        Unlike the reference, `x` is not modified.
        """
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"x must be [N, {self.input_dim}] coordinates, got shape {tuple(x.shape)}")
        if layer_id is None:
            layer_id = (x[:, 0] * self.norm).int()
        if input_dim is None:
            input_dim = x[:, -1] * self.norm
        x = torch.cat([x[:, :3] / x[:, 3:], x[:, 3:]], dim=1)  # the reference divides x[:, :3] in place
        pe = fourier_features(x, frequencies(self.freq_low, self.freq_high, x.device))
        return self._per_layer(pe, layer_id.to(torch.int64)) / input_dim.unsqueeze(-1)

    def _per_layer(self, pe: torch.Tensor, layer_id: torch.Tensor) -> torch.Tensor:
        """Each row through its layer's MLP: rows grouped by one stable sort, not by a mask per layer."""
        if layer_id.shape != pe.shape[:1]:
            raise ValueError(f"layer_id must have one entry per row ({pe.shape[0]}), got shape {tuple(layer_id.shape)}")
        if pe.shape[0] == 0:
            return pe.new_zeros(0, self.output_dim)
        return evaluate_grouped(self, pe, layer_id)  # ids outside [0, L) raise (the reference: -1 = last MLP)


class NeRF_MLP_Compose(NeRF_ResMLP_Compose):
    """The reference's plain variant: the same residual MLPs with the residual scalars starting at 0.0."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_freqs: FreqSpec = 10,
                 num_layers: int = 4, num_compose: int = 4, normalizing_factor: float = 1.0):
        super().__init__(input_dim, hidden_dim, output_dim, num_freqs=num_freqs, num_layers=num_layers,
                         num_compose=num_compose, normalizing_factor=normalizing_factor, scalar=0.0)
