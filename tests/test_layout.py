"""Layout: the scatter plan, segment table, subsets and input checks (docs/spec.md §1, §10); the coordinate
table itself is tested in tests/test_coordinates.py."""
import numpy as np
import pytest
import torch
from torch import nn

from neumeta_fast import Layout


def test_segments_tile_the_flat_buffer():
    shapes = [("c", (4, 3, 3, 3)), ("p", (4, 3, 1, 1)), ("l", (5, 4)), ("v", (5,)), ("one", (1,))]
    layout = Layout.from_shapes(shapes)
    pos = 0
    for s, (_, shape) in zip(layout.segments, shapes):
        assert s.param_offset == pos and s.numel == torch.Size(shape).numel()
        pos += s.numel
    assert layout.numel == pos
    flat = torch.arange(layout.numel, dtype=torch.float32)
    views = layout.views(flat)
    assert [tuple(v.shape) for v in views.values()] == [shape for _, shape in shapes]
    assert all(v.data_ptr() >= flat.data_ptr() for v in views.values())  # views, not copies


def test_centre_slice_columns():
    layout = Layout.from_shapes([("k3", (2, 2, 3, 3)), ("k1", (2, 2, 1, 1)), ("k13", (2, 2, 1, 3)), ("l", (2, 2))])
    assert [s.col_start(9) for s in layout.segments] == [0, 4, 3, 0]


@pytest.mark.parametrize("shape", [(3, 3, 3), (2, 2, 2, 2, 2), ()])
def test_unsupported_rank_names_the_tensor(shape):
    with pytest.raises(ValueError, match="bad"):
        Layout.from_shapes([("ok", (2,)), ("bad", shape)])


def test_bad_layouts():
    with pytest.raises(ValueError, match="at least one"):
        Layout.from_shapes([])
    with pytest.raises(ValueError, match="unique"):
        Layout.from_shapes([("a", (2,)), ("a", (3,))])
    with pytest.raises(ValueError, match="positive"):
        Layout.from_shapes([("z", (0, 3))])


def test_kernel_larger_than_output_dim_is_an_error():
    layout = Layout.from_shapes([("stem", (8, 3, 7, 7))])
    with pytest.raises(ValueError, match="stem.*output_dim"):
        layout.check_output_dim(9)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)


def test_from_module_include_forms():
    net = Net()
    everything = Layout.from_module(net)
    assert everything.names == ["conv.weight", "conv.bias", "bn.weight", "bn.bias", "fc.weight", "fc.bias"]
    assert Layout.from_module(net, include="bn.").names == ["bn.weight", "bn.bias"]
    assert Layout.from_module(net, include=["fc.weight", "conv.weight"]).names == ["conv.weight", "fc.weight"]
    assert Layout.from_module(net, include=lambda n, t: t.dim() == 4).names == ["conv.weight"]
    with pytest.raises(KeyError, match="nope"):
        Layout.from_module(net, include=["nope"])
    with pytest.raises(ValueError, match="no tensor"):
        Layout.from_module(net, include="zzz")


def test_subset_keeps_indices_and_count():
    layout = Layout.from_shapes([("a", (2, 2)), ("b", (3,)), ("c", (2, 2, 3, 3))])
    sub = layout.subset(["c", "a"])
    assert sub.names == ["a", "c"] and sub.num_tensors == 3
    full = layout.coordinates()
    expected = torch.cat([full[:4], full[7:]])
    assert torch.equal(sub.coordinates(), expected)
    with pytest.raises(KeyError, match="zz"):
        layout.subset(["zz"])


def test_subset_is_built_once_per_set_of_names():
    """The trainer asks for a subset every step: its coordinate table and plans must not be rebuilt."""
    layout = Layout.from_shapes([(f"t{i}", (2, i + 1)) for i in range(12)])
    first = layout.subset(["t3", "t1"])
    assert layout.subset(["t1", "t3"]) is first
    assert layout.subset(["t1", "t3"]).coordinates() is first.coordinates()
    assert layout.subset(["t1", "t2"]) is not first
    for i in range(144):  # 78 other subsets: memory stays bounded
        layout.subset([f"t{i % 12}", f"t{i // 12}"])
    assert len(layout._subsets) == 64


@pytest.mark.parametrize("dim,error", [(3.7, TypeError), (True, TypeError), ("4", TypeError), (None, TypeError),
                                       (np.float32(4), TypeError), (torch.tensor(4), TypeError), (0, ValueError),
                                       (-2, ValueError)])
def test_dimensions_must_be_positive_integers(dim, error):
    with pytest.raises(error, match="tensor 'x'.*dimension 1"):
        Layout.from_shapes([("x", (4, dim))])


def test_numpy_integer_dimensions_are_accepted():
    layout = Layout.from_shapes([("x", (np.int64(4), np.int32(3))), ("y", torch.Size([2, 3, 1, 1]))])
    assert layout.segments[0].shape == (4, 3) and all(type(d) is int for d in layout.segments[0].shape)
    assert torch.equal(layout.coordinates(), Layout.from_shapes([("x", (4, 3)), ("y", (2, 3, 1, 1))]).coordinates())


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(num_tensors=2.5), TypeError, "num_tensors"), (dict(num_tensors=True), TypeError, "num_tensors"),
    (dict(num_tensors=0), ValueError, "num_tensors"), (dict(num_tensors=3, indices=[1.0]), TypeError, "indices"),
    (dict(num_tensors=3, indices=[3]), ValueError, r"indices\[0\] must be <= 2"),
    (dict(num_tensors=3, indices=[-1]), ValueError, "indices"),
])
def test_tensor_count_and_indices_are_checked(kwargs, error, match):
    with pytest.raises(error, match=match):
        Layout([("a", (2,))], **kwargs)


@pytest.mark.parametrize("shape", [(2**20, 2**20), (2**40, 2**40)])
def test_a_table_larger_than_memory_says_what_it_needs(shape):
    """Before allocating: how many GiB the table needs and how many the device has."""
    layout = Layout.from_shapes([("huge", shape)])
    with pytest.raises(ValueError, match=r"needs at least [0-9.e+]+ GiB on cpu .* has [0-9.]+ GiB in total"):
        layout.coordinates()


def test_segment_table_rows_name_every_column():
    """One table for every fused kernel (docs/spec.md §10): named columns, tiles that never cross tensors."""
    layout = Layout.from_shapes([("c", (5, 3, 1, 1)), ("b", (5,)), ("l", (2, 40))])
    table = layout.segment_table(9, 16)
    assert [r.col_start for r in table.rows] == [4, 0, 0] and [r.a_size for r in table.rows] == [5, 5, 2]
    assert [r.tile_start for r in table.rows] == [0, 1, 2] and table.num_tiles == 7
    assert table.tensor("cpu").tolist() == [list(r) for r in table.rows]
    assert table.tiles("cpu").tolist() == [[0, 0], [1, 0], [2, 0], [2, 16], [2, 32], [2, 48], [2, 64]]
    assert layout.segment_table(9, 16) is table and layout.segment_table(25, 16) is not table
