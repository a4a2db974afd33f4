"""The coordinate table (docs/spec.md §2): Layout.coordinates and the C++ fill against a literal
enumeration, the device-agnostic fill against the C++ one, and the fill's size checks."""
import random

import pytest
import torch

from neumeta_fast import Layout
from neumeta_fast.reference import reference_coordinates

from helpers import random_shapes

@pytest.mark.parametrize("seed", range(20))
def test_coordinates_equal_literal_enumeration(seed):
    rng = random.Random(seed)
    shapes = random_shapes(rng, rng.randint(1, 8))
    layout = Layout.from_shapes(shapes)
    coords = layout.coordinates()
    assert coords.dtype == torch.float32
    assert torch.equal(coords, reference_coordinates(shapes))
    assert layout.num_rows == coords.shape[0]


@pytest.mark.parametrize("shape", [(5, 3, 3, 3), (4, 7), (6,), (1,), (3, 1), (2, 2, 1, 1)])
def test_torch_fill_equals_the_cpu_fill(shape):
    """The device-agnostic fill (what CUDA uses) against the C++ one, into poisoned buffers."""
    layout = Layout.from_shapes([("x", (2, 2)), ("t", shape)])
    s = layout.segments[1]
    got = torch.full((s.shape[0], s.cols, 6), float("nan"))
    want = torch.full_like(got, float("nan"))
    layout._fill_segment_torch(s, got)
    layout._fill_segment(s, want)
    assert torch.equal(got, want)
    assert torch.equal(want.view(-1, 6), layout.coordinates()[s.row_offset:s.row_offset + s.rows])


def test_fill_coordinates_rejects_a_wrong_buffer():
    from neumeta_fast import _C
    with pytest.raises(ValueError, match=r"shape \[6, 6\], got \[5, 6\]"):
        _C.fill_coordinates(torch.empty(5, 6), 0, 1, 2, 3, 3)
    with pytest.raises(ValueError, match="contiguous float32 CPU"):
        _C.fill_coordinates(torch.empty(6, 6, dtype=torch.float64), 0, 1, 2, 3, 3)


@pytest.mark.parametrize("rows,a_size,b_size,cols,match", [
    (0, 2**32, 2**32, 2**32, "overflows int64"),  # the product wraps to 0 rows and matched an empty buffer
    (1, -1, -1, 1, "must be >= 0"), (6, -2, -3, 3, "must be >= 0"), (6, 2, 3, 0, "cols >= 1"),
])
def test_fill_coordinates_checks_sizes_without_overflow(rows, a_size, b_size, cols, match):
    from neumeta_fast import _C
    with pytest.raises(ValueError, match=match):
        _C.fill_coordinates(torch.empty(rows, 6), 0, 1, a_size, b_size, cols)
