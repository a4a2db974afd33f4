"""Layout: the morphable tensors of one network -> coordinate table + scatter plan.

The coordinate table follows docs/spec.md §2: one float32 6-vector per (tensor i, row a,
column b), `[i, a, b, L, A, B]` for 4-D and 2-D tensors (a-major, then b),
`[i, a, 0, L, A, 1]` for 1-D tensors, tensors in list order.

Because rows are enumerated a-major and every target tensor is contiguous, the
scatter needs no index arrays: row r of tensor t owns the `kernel_numel`
consecutive elements at `param_offset + r * kernel_numel` of the flat buffer,
taken from output columns `[col_start, col_start + kernel_numel)`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple, Sequence, Union

import torch
from torch import nn

from . import _C  # after torch: the extension links against it
from .arguments import number

Include = Union[None, str, Iterable[str], Callable[[str, torch.Tensor], bool]]
_SUBSETS_KEPT = 64  # per layout: the trainer draws a random subset each step when ratio < 1


def centre_start(kernel_numel: int, output_dim: int) -> int:
    """First of the `kernel_numel` centre outputs of a conv kernel (a 1x1 conv takes output 4 of 9)."""
    return output_dim // 2 - kernel_numel // 2 if kernel_numel < output_dim else 0


@dataclass(frozen=True)
class Segment:
    """One target tensor's block of coordinates and of the flat output buffer."""

    name: str
    shape: tuple[int, ...]
    index: int  # i: which MLP of the INR generates it (its position in the full list)
    rows: int  # coordinates (A*B for 4-D/2-D, A for 1-D)
    cols: int  # B (1 for 1-D): the divisor column (docs/spec.md §9)
    kernel_numel: int  # kh*kw for 4-D, 1 otherwise
    row_offset: int  # first row in the coordinate table
    param_offset: int  # first element in the flat output buffer

    @property
    def numel(self) -> int:
        return self.rows * self.kernel_numel

    def col_start(self, output_dim: int) -> int:
        """First INR output used: the centre slice for kernels smaller than output_dim."""
        return centre_start(self.kernel_numel, output_dim) if len(self.shape) == 4 else 0


class SegmentRow(NamedTuple):
    """One tensor's row of the segment table (docs/spec.md §10): all a fused kernel needs to rebuild the
    tensor's coordinates and to scatter its outputs. The field order is the table's column order."""

    index: int         # i: the tensor's MLP (coordinate column 0)
    rows: int          # coordinates: A*B (4-D, 2-D) or A (1-D)
    cols: int          # B, 1 for 1-D (coordinate column 5, the divisor)
    a_size: int        # A (coordinate column 4)
    kernel_numel: int  # outputs per coordinate: kh*kw for 4-D, 1 otherwise
    row_offset: int    # first row in the coordinate table
    param_offset: int  # first element in the flat output buffer
    col_start: int     # first INR output used (the centre slice)
    tile_start: int    # first tile of the tensor (tiles of `tile_rows` rows never cross tensors)


SEGMENT_COLUMNS = SegmentRow._fields


@dataclass(frozen=True)
class SegmentTable:
    """The segment table of a layout for one INR output width and tile height: one SegmentRow per tensor."""

    rows: tuple[SegmentRow, ...]
    tile_rows: int
    num_tiles: int
    _tensors: dict = field(default_factory=dict, compare=False, repr=False)

    def tensor(self, device: torch.device) -> torch.Tensor:
        """int64 [segments, len(SEGMENT_COLUMNS)], the kernels' view of the table (cached per device)."""
        device = torch.device(device)
        key = ("table", device)
        if key not in self._tensors:
            self._tensors[key] = torch.tensor(self.rows, dtype=torch.int64).to(device)
        return self._tensors[key]

    def tiles(self, device: torch.device) -> torch.Tensor:
        """int32 [num_tiles, 2]: (segment, first row) of every tile, in order (cached per device)."""
        device = torch.device(device)
        key = ("tiles", device)
        if key not in self._tensors:
            tiles = [(s, r) for s, row in enumerate(self.rows) for r in range(0, row.rows, self.tile_rows)]
            self._tensors[key] = torch.tensor(tiles, dtype=torch.int32).view(-1, 2).to(device)
        return self._tensors[key]


def _check_shape(name: str, shape: Sequence[int]) -> tuple[int, ...]:
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__"):
        raise TypeError(f"tensor {name!r}: shape must be a sequence of ints, got {shape!r}")
    if len(shape) not in (1, 2, 4):
        raise ValueError(
            f"tensor {name!r} has shape {tuple(shape)} ({len(shape)}-D): morphable tensors must be "
            "4-D conv weights [A, B, kh, kw], 2-D linear weights [A, B] or 1-D vectors [A]"
        )
    return tuple(number(f"tensor {name!r} shape {tuple(shape)} dimension {d}", s, integer=True, low=1,
                        why="every dimension must be positive") for d, s in enumerate(shape))


_GIB = float(1 << 30)


def _device_bytes(device: torch.device) -> int | None:
    """Total memory of `device` in bytes, or None where it is not known (e.g. the meta device)."""
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # not a POSIX system that reports it
            return None
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device).total_memory
    return None


class Layout:
    """Ordered named target tensors and everything derived from their shapes (built once)."""

    def __init__(self, entries: Sequence[tuple[str, Sequence[int]]], *, num_tensors: int | None = None,
                 indices: Sequence[int] | None = None):
        if len(entries) == 0:
            raise ValueError("a Layout needs at least one tensor")
        names = [str(n) for n, _ in entries]
        if len(set(names)) != len(names):
            raise ValueError(f"tensor names must be unique, got {names}")
        self.num_tensors = len(entries) if num_tensors is None else number("num_tensors", num_tensors, integer=True,
                                                                           low=1)
        if indices is None:
            indices = list(range(len(entries)))
        else:
            indices = [number(f"indices[{k}]", i, integer=True, low=0, high=self.num_tensors - 1)
                       for k, i in enumerate(indices)]
        if len(indices) != len(entries):
            raise ValueError(f"got {len(indices)} tensor indices for {len(entries)} tensors")
        segments, row, elem = [], 0, 0
        for (name, shape), index in zip(entries, indices):
            shape = _check_shape(name, shape)
            cols = shape[1] if len(shape) >= 2 else 1
            kernel = math.prod(shape[2:]) if len(shape) == 4 else 1
            seg = Segment(str(name), shape, index, shape[0] * cols, cols, kernel, row, elem)
            segments.append(seg)
            row += seg.rows
            elem += seg.numel
        self.segments: tuple[Segment, ...] = tuple(segments)
        self.num_rows = row
        self.numel = elem
        self._coords: dict[torch.device, torch.Tensor] = {}
        self._tables: dict[tuple[int, int], SegmentTable] = {}
        # subset layouts (their coordinate tables and the backends' plans live on them) by tensor names
        self._subsets: dict[frozenset, Layout] = {}

    # -- constructors -------------------------------------------------------
    @classmethod
    def from_shapes(cls, entries: Sequence[tuple[str, Sequence[int]]]) -> "Layout":
        return cls(entries)

    @classmethod
    def from_module(cls, module: nn.Module, include: Include = None) -> "Layout":
        """Morphable tensors of `module` in state-dict order.

        `include`: None (every parameter), a name prefix or a predicate `(name, tensor) -> bool`
        (both over parameters: buffers such as BatchNorm statistics are not generated), or an
        iterable of state-dict names.
        """
        state = module.state_dict(keep_vars=True)
        params = {n for n, _ in module.named_parameters()}
        if include is None:
            pick = lambda n, t: n in params  # noqa: E731
        elif isinstance(include, str):
            pick = lambda n, t: n in params and n.startswith(include)  # noqa: E731
        elif callable(include):
            pick = lambda n, t: n in params and include(n, t)  # noqa: E731
        else:
            wanted = list(include)
            missing = [n for n in wanted if n not in state]
            if missing:
                raise KeyError(f"tensors {missing} are not in the module's state dict")
            wanted_set = set(wanted)
            pick = lambda n, t: n in wanted_set  # noqa: E731
        entries = [(n, tuple(t.shape)) for n, t in state.items() if pick(n, t)]
        if not entries:
            raise ValueError(f"no tensor of the module matches include={include!r}")
        return cls(entries)

    def subset(self, names: Iterable[str]) -> "Layout":
        """The named tensors only, keeping their MLP index and L (for training on a tensor subset).

        The same names give the same Layout object (the most recent ones are kept), so its coordinate
        table and the backends' index plans are built once, not every training step.
        """
        wanted = set(names)
        unknown = wanted - set(self.names)
        if unknown:
            raise KeyError(f"tensors {sorted(unknown)} are not in this layout")
        key = frozenset(wanted)
        hit = self._subsets.pop(key, None)
        if hit is None:
            kept = [s for s in self.segments if s.name in wanted]
            hit = Layout([(s.name, s.shape) for s in kept], num_tensors=self.num_tensors,
                         indices=[s.index for s in kept])
        self._subsets[key] = hit  # most recent last; a training run draws many subsets, keep the latest
        if len(self._subsets) > _SUBSETS_KEPT:
            del self._subsets[next(iter(self._subsets))]
        return hit

    # -- derived data -------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [s.name for s in self.segments]

    def __len__(self) -> int:
        return len(self.segments)

    def __repr__(self) -> str:
        return f"Layout({len(self)} tensors, {self.num_rows} coordinates, {self.numel} elements)"

    def check_output_dim(self, output_dim: int) -> None:
        for s in self.segments:
            if s.kernel_numel > output_dim:
                raise ValueError(
                    f"tensor {s.name!r} has kernel {s.shape[2:]} ({s.kernel_numel} values) but the INR "
                    f"produces output_dim={output_dim}: build the INR with output_dim >= {s.kernel_numel}"
                )

    @property
    def coordinate_bytes(self) -> int:
        return self.num_rows * 6 * 4

    def check_fits(self, device: torch.device, *, weights: bool = True) -> None:
        """Refuse, before allocating, a coordinate table (+ the float32 weights) larger than `device`'s memory."""
        need = self.coordinate_bytes + (self.numel * 4 if weights else 0)
        total = _device_bytes(device)
        if total is not None and need > total:
            parts = f"{self.coordinate_bytes / _GIB:.3g} GiB of coordinates" + (
                f" + {self.numel * 4 / _GIB:.3g} GiB of float32 weights" if weights else "")
            raise ValueError(f"{self!r} needs at least {need / _GIB:.3g} GiB on {device} ({parts}), but {device} "
                             f"has {total / _GIB:.3g} GiB in total")

    def coordinates(self, device: torch.device | str | None = None) -> torch.Tensor:
        """float32 [num_rows, 6] coordinate table of docs/spec.md §2 (cached per device; do not modify)."""
        device = torch.device(device or "cpu")
        table = self._coords.get(device)
        if table is None:
            self.check_fits(device, weights=False)
            table = torch.empty(self.num_rows, 6, dtype=torch.float32, device=device)
            for s in self.segments:
                self._fill_segment(s, table[s.row_offset:s.row_offset + s.rows].view(s.shape[0], s.cols, 6))
            self._coords[device] = table
        return table

    def _fill_segment(self, s: Segment, out: torch.Tensor) -> None:
        """`out` [A, B, 6]: one C++ pass on the CPU (a broadcast add there runs far below memory speed)."""
        if out.device.type == "cpu":
            _C.fill_coordinates(out.view(-1, 6), s.index, self.num_tensors, out.shape[0], out.shape[1], s.cols)
        else:
            self._fill_segment_torch(s, out)

    def _fill_segment_torch(self, s: Segment, out: torch.Tensor) -> None:
        """The same on any device: one broadcast add of a [B, 6] row template and the a column."""
        a_size, b_size = out.shape[:2]
        template = torch.tensor([s.index, 0.0, 0.0, self.num_tensors, a_size, s.cols], device=out.device)
        template = template.repeat(b_size, 1)
        if len(s.shape) >= 2:
            template[:, 2] = torch.arange(b_size, dtype=torch.float32, device=out.device)
        a_column = torch.zeros(a_size, 1, 6, device=out.device)
        a_column[:, 0, 1] = torch.arange(a_size, dtype=torch.float32, device=out.device)
        torch.add(template, a_column, out=out)

    def segment_table(self, output_dim: int, tile_rows: int = 1) -> SegmentTable:
        """The segment table for an INR of `output_dim` outputs, tiles of `tile_rows` rows (built once)."""
        key = (output_dim, tile_rows)
        table = self._tables.get(key)
        if table is None:
            rows, tile = [], 0
            for s in self.segments:
                rows.append(SegmentRow(s.index, s.rows, s.cols, s.shape[0], s.kernel_numel, s.row_offset,
                                       s.param_offset, s.col_start(output_dim), tile))
                tile += -(-s.rows // tile_rows)
            table = self._tables[key] = SegmentTable(tuple(rows), tile_rows, tile)
        return table

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """The target tensors as views of one flat buffer."""
        if flat.dim() != 1 or flat.numel() != self.numel:
            raise ValueError(f"expected a flat buffer of {self.numel} elements, got shape {tuple(flat.shape)}")
        return {s.name: flat[s.param_offset:s.param_offset + s.numel].view(s.shape) for s in self.segments}
