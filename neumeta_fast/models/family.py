"""Family: a width-parameterised model builder plus which of its tensors the INR generates."""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from ..layout import Layout


class WidthError(ValueError):
    """A width the family cannot build."""


class Family:
    """Models of one architecture at different widths.

    build:  width -> a freshly initialised module.
    widths: every width `build` accepts (the largest is the full width the base model has).
    morph:  state-dict names of the generated tensors at the full width, or None for every
            parameter whose shape depends on the width (found by building two widths).
    """

    def __init__(self, build: Callable[[int], nn.Module], *, widths: Iterable[int],
                 morph: Sequence[str] | None = None, name: str = "custom"):
        self.build_fn = build
        self.widths = sorted({int(w) for w in widths})
        if not self.widths or self.widths[0] < 1:
            raise WidthError(f"a family needs widths >= 1, got {list(widths)}")
        self.full_width = self.widths[-1]
        self.name = name
        self.morph = list(morph) if morph is not None else self._width_dependent()
        if not self.morph:
            raise ValueError(f"family {name!r}: no parameter depends on the width; pass morph=[...] explicitly")
        self._layouts: dict[int, Layout] = {}

    def _width_dependent(self) -> list[str]:
        with torch.random.fork_rng(devices=[]):  # probe builds must not move the caller's RNG
            full = dict(self.build_fn(self.full_width).named_parameters())
            if len(self.widths) == 1:
                return list(full)
            small = dict(self.build_fn(self.widths[0]).named_parameters())
        return [n for n, p in full.items() if n in small and small[n].shape != p.shape]

    def check_width(self, width: int) -> int:
        if int(width) not in self.widths:
            raise WidthError(f"family {self.name!r} builds widths {self.widths[0]}..{self.full_width} "
                             f"({len(self.widths)} values), got {width}")
        return int(width)

    def build(self, width: int) -> nn.Module:
        return self.build_fn(self.check_width(width))

    def layout(self, width: int) -> Layout:
        """The generated tensors at `width` (cached: the coordinate table is built once per width)."""
        width = self.check_width(width)
        if width not in self._layouts:
            self._layouts[width] = Layout.from_module(self.build_fn(width), include=self.morph)
        return self._layouts[width]

    def __repr__(self) -> str:
        return f"Family({self.name!r}, widths {self.widths[0]}..{self.full_width}, {len(self.morph)} morphed tensors)"


def fraction_width(full_width: int, fraction: float) -> int:
    """round(fraction * full_width), at least 1."""
    return max(1, int(round(fraction * full_width)))


def named_family(name: str, *, full_width: int, num_classes: int = 10, in_channels: int = 1,
                 image_size: int = 8) -> Family:
    """Built-in families by name: convnet, mlp, lenet, vae, and resnet8/20/32/56 (the last stage's
    hidden width, as NeuMeta) or resnet8_all/20_all/... (every stage's hidden width, in proportion)."""
    from .cifar_resnet import cifar_resnet
    from .convnet import convnet
    from .mlp import mlp
    from .vae import conv_vae
    widths = range(1, full_width + 1)
    builders: dict[str, Callable[[int], nn.Module]] = {
        "convnet": lambda w: convnet(w, num_classes, in_channels),
        "mlp": lambda w: mlp(in_channels * image_size * image_size, num_classes, hidden_width=w, hidden_layers=2),
        "vae": lambda w: conv_vae(w, in_channels=in_channels, image_size=image_size),
    }
    for depth in (8, 20, 32, 56):
        for suffix, stages in (("", "last"), ("_all", "all")):
            builders[f"resnet{depth}{suffix}"] = (lambda d, s: lambda w: cifar_resnet(
                d, num_classes, hidden_width=w, in_channels=in_channels, hidden_stages=s))(depth, stages)
    builders["lenet"] = lambda w: _lenet(w, num_classes, in_channels, image_size)
    if name not in builders:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(builders)}")
    return Family(builders[name], widths=widths, name=name)


def _lenet(width: int, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    from .lenet import lenet
    # Every LeNet width scales with `width` (ratios close to the classic 6, 16, 120, 84).
    return lenet(num_classes, in_channels, image_size, (width, 2 * width, 8 * width, 6 * width))
