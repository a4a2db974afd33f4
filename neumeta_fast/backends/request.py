"""What a backend is asked to generate: one validated, backend-neutral description."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import noise as _noise
from ..layout import Layout


@dataclass(frozen=True)
class Request:
    norm: float
    samples: int
    noise: float
    noise_mode: str
    generator: torch.Generator | None
    noise_tensor: torch.Tensor | None  # explicit [samples, rows, 6] noise, used as given
    dtype: torch.dtype  # MLP compute dtype; outputs are float32
    device: torch.device

    def sample_noise(self, k: int, layout: Layout) -> torch.Tensor | None:
        """Noise added to sample k's coordinates (already restricted to the mode's columns), or None."""
        if self.noise_tensor is not None:
            raw = self.noise_tensor[k]
        elif _noise.noisy_samples(self.samples, self.noise)[k]:
            gen_device = self.generator.device if self.generator is not None else self.device
            raw = _noise.draw(layout.num_rows, self.noise, self.generator, gen_device).to(self.device)
        else:
            return None
        return _noise.restricted(raw, self.noise_mode)

    def seed(self) -> int:
        """A 62-bit seed drawn from the generator, for backends with an in-kernel counter-based RNG."""
        return philox_seed(self.generator)


def philox_seed(generator: torch.Generator | None) -> int:
    """A 62-bit key drawn from `generator` on its own device (CPU or CUDA); the global RNG when None."""
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=device).item())
