"""Channel groups match what a dependency analysis of each model must give."""
import warnings

import pytest
import torch
from torch import nn

from neumeta_fast import smooth
from neumeta_fast.channel_groups import ChannelSlice, channel_groups, permute_channels
from neumeta_fast.compat import PermutationManager
from neumeta_fast.models import cifar_resnet, lenet


def _axes(group):
    return {(piece.name, piece.axis) for piece in group.slices}


def _group_with(groups, name, axis):
    found = [g for g in groups if (name, axis) in _axes(g)]
    assert len(found) == 1, f"{name} axis {axis} is in {len(found)} groups"
    return found[0]


def _bn(prefix):
    return {(f"{prefix}.{attr}", 0) for attr in ("weight", "bias", "running_mean", "running_var")}


def _quietly(model, x):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return channel_groups(model, x)


def test_resnet20_groups():
    model = cifar_resnet(20, hidden_width=16)
    groups = _quietly(model, torch.randn(1, 3, 32, 32))
    assert len(groups) == 3 + 9  # one per stage (tied by the residual adds) + one per block's hidden layer

    for stage, width in ((1, 16), (2, 32), (3, 64)):
        # written by: the stem (stage 1) or block 0's downsample shortcut, and every block's conv2
        if stage == 1:
            expected = {("conv1.weight", 0)} | _bn("bn1")
        else:
            expected = {(f"layer{stage}.0.downsample.0.weight", 0)} | _bn(f"layer{stage}.0.downsample.1")
        for block in range(3):
            expected |= {(f"layer{stage}.{block}.conv2.weight", 0)} | _bn(f"layer{stage}.{block}.bn2")
        # read by: the stage's blocks (block 0 of stages 2, 3 reads the previous stage), then the next stage or fc
        expected |= {(f"layer{stage}.{block}.conv1.weight", 1) for block in range(3) if stage == 1 or block > 0}
        if stage < 3:
            expected |= {(f"layer{stage + 1}.0.conv1.weight", 1), (f"layer{stage + 1}.0.downsample.0.weight", 1)}
        else:
            expected.add(("fc.weight", 1))
        group = _group_with(groups, f"layer{stage}.0.conv2.weight", 0)
        assert _axes(group) == expected
        assert group.channels == width

    for stage, hidden in ((1, 16), (2, 32), (3, 16)):
        for block in range(3):
            prefix = f"layer{stage}.{block}"
            group = _group_with(groups, f"{prefix}.conv1.weight", 0)
            assert _axes(group) == {(f"{prefix}.conv1.weight", 0), (f"{prefix}.conv2.weight", 1)} | _bn(f"{prefix}.bn1")
            assert group.channels == hidden

    permuted = set().union(*(_axes(g) for g in groups))
    assert ("conv1.weight", 1) not in permuted  # model input channels
    assert not {("fc.weight", 0), ("fc.bias", 0)} & permuted  # model outputs


def test_flatten_maps_each_channel_to_a_block_of_features():
    groups = _quietly(lenet(image_size=28), torch.randn(1, 1, 28, 28))
    group = _group_with(groups, "conv2.weight", 0)
    assert ChannelSlice("fc1.weight", 1, 0, 16 * 49, 49) in group.slices


def test_depthwise_conv_ties_its_outputs_to_its_inputs():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 8, 3, groups=4), nn.BatchNorm2d(8), nn.Conv2d(8, 5, 1))
    (group,) = _quietly(model, torch.randn(1, 3, 9, 9))
    assert group.channels == 4
    assert ChannelSlice("1.weight", 0, 0, 8, 2) in group.slices
    assert ChannelSlice("2.running_var", 0, 0, 8, 2) in group.slices
    assert ChannelSlice("3.weight", 1, 0, 8, 2) in group.slices
    assert ("1.weight", 1) not in _axes(group)  # one input channel per depthwise filter: nothing to permute


class _Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 6, 1)
        self.bn = nn.BatchNorm2d(10)
        self.c = nn.Conv2d(10, 2, 1)

    def forward(self, x):
        return self.c(self.bn(torch.cat((self.a(x), self.b(x)), 1)))


def test_concatenation_gives_each_part_its_offset():
    groups = _quietly(_Concat(), torch.randn(1, 3, 4, 4))
    a, b = _group_with(groups, "a.weight", 0), _group_with(groups, "b.weight", 0)
    assert ChannelSlice("bn.weight", 0, 0, 4, 1) in a.slices and ChannelSlice("c.weight", 1, 0, 4, 1) in a.slices
    assert ChannelSlice("bn.weight", 0, 4, 6, 1) in b.slices and ChannelSlice("c.weight", 1, 4, 6, 1) in b.slices


class _ChannelOp(nn.Module):
    """conv1 -> an op that mixes channel positions -> conv2 -> conv3 -> head."""

    def __init__(self, op):
        super().__init__()
        self.op = op
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 7, 3, padding=1)
        self.conv3 = nn.Conv2d(7, 5, 1)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        x = self.op(torch.relu(self.conv1(x)))
        x = torch.relu(self.conv3(torch.relu(self.conv2(x))))
        return self.head(x.mean((2, 3)))


@pytest.mark.parametrize(
    "op, name", [(lambda x: x.roll(1, dims=1), "roll"), (lambda x: torch.flip(x, [1]), "flip")], ids=["roll", "flip"]
)
def test_unknown_op_on_channels_is_excluded_with_a_warning(op, name):
    torch.manual_seed(0)
    model = _ChannelOp(op).eval()
    x = torch.randn(2, 3, 8, 8)
    with pytest.warns(UserWarning, match=name):
        groups = channel_groups(model, x)
    permuted = set().union(*(_axes(g) for g in groups))
    assert ("conv1.weight", 0) not in permuted and ("conv2.weight", 1) not in permuted
    assert ("conv2.weight", 0) in permuted  # channels the op never sees are still free

    expected = model(x)
    with pytest.warns(UserWarning, match=name):
        report = smooth(model, x)
    assert any(g.applied for g in report.groups)
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)


def test_group_norm_with_several_channels_per_group_is_excluded():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.GroupNorm(2, 8), nn.Conv2d(8, 4, 1), nn.GroupNorm(1, 4), nn.Conv2d(4, 2, 1))
    with pytest.warns(UserWarning, match="GroupNorm"):
        groups = channel_groups(model, torch.randn(1, 3, 4, 4))
    (group,) = groups
    assert _axes(group) == {("2.weight", 0), ("2.bias", 0), ("3.weight", 0), ("3.bias", 0), ("4.weight", 1)}


class _SharedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 1)
        self.shared = nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        x = torch.relu(self.shared(torch.relu(self.stem(x))))
        return self.head(torch.relu(self.shared(x)))


def test_module_called_twice_gets_one_order():
    torch.manual_seed(0)
    model, x = _SharedConv(), torch.randn(1, 3, 5, 5)
    (group,) = _quietly(model, x)
    assert _axes(group) == {("stem.weight", 0), ("stem.bias", 0), ("shared.weight", 0), ("shared.weight", 1),
                            ("shared.bias", 0), ("head.weight", 1)}  # fmt: skip
    expected = model(x)
    permute_channels(model, group, torch.randperm(6))
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)


def test_residual_onto_the_model_input_keeps_those_channels():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.down = nn.Linear(4, 8), nn.Linear(8, 4)

        def forward(self, x):
            return x + self.down(torch.relu(self.up(x)))

    (group,) = _quietly(Residual(), torch.randn(2, 4))
    assert _axes(group) == {("up.weight", 0), ("up.bias", 0), ("down.weight", 1)}


def test_untraceable_model_is_reported():
    class DataDependent(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(TypeError, match="torch.fx"):
        channel_groups(DataDependent(), torch.randn(2))


def test_example_inputs_that_do_not_fit_are_reported():
    with pytest.raises(ValueError, match=r"example_inputs \[\(1, 5, 28, 28\)\]"):
        channel_groups(lenet(), torch.randn(1, 5, 28, 28))


def test_permute_channels_rejects_a_non_permutation():
    (group, *_) = channel_groups(lenet(), torch.randn(1, 1, 28, 28))
    with pytest.raises(ValueError, match="permutation"):
        permute_channels(lenet(), group, [0] * group.channels)


# -- tensors with several uses: tied weights, a module called twice, aliased memory ----------------
def _tied_linear():
    """The first layer's weight reused by the second: it reads the model input, so its columns stay."""
    model = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3))
    model[2].weight = model[0].weight
    return model, torch.randn(4, 6)


def _tied_conv():
    model = nn.Sequential(nn.Conv2d(6, 6, 1), nn.ReLU(), nn.Conv2d(6, 6, 1), nn.ReLU(), nn.Conv2d(6, 2, 1))
    model[2].weight = model[0].weight
    return model, torch.randn(2, 6, 4, 4)


class _CalledOnItsOwnOutput(nn.Module):
    """One Linear called on the model input, then again on its own output."""

    def __init__(self):
        super().__init__()
        self.layer, self.head = nn.Linear(6, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.head(torch.relu(self.layer(torch.relu(self.layer(x)))))


def _transposed_alias():
    """Two Parameters over one memory, one the transpose of the other (a state dict that aliases tensors)."""
    model = nn.Sequential(*[m for _ in range(3) for m in (nn.Linear(6, 6), nn.ReLU())], nn.Linear(6, 3))
    model[4].weight = nn.Parameter(model[2].weight.detach().t())
    return model, torch.randn(4, 6)


@pytest.mark.parametrize("build, warning", [
    (_tied_linear, "0.weight axis 1 is shared"), (_tied_conv, "0.weight axis 1 is shared"),
    (lambda: (_CalledOnItsOwnOutput(), torch.randn(4, 6)), "layer.weight axis 1 is shared"),
    (_transposed_alias, r"\['2.weight', '4.weight'\] share memory"),
], ids=["tied_linear", "tied_conv_1x1", "module_called_on_input_and_own_output", "transposed_alias"])
def test_uses_that_cannot_move_together_keep_their_channels_with_a_warning(build, warning):
    torch.manual_seed(0)
    model, x = build()
    model.eval()
    expected = model(x)
    with pytest.warns(UserWarning, match=warning):
        groups = channel_groups(model, x)
    for group in groups:
        permute_channels(model, group, torch.randperm(group.channels))
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)
    with pytest.warns(UserWarning, match=warning):
        smooth(model, x)
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)
    with pytest.warns(UserWarning, match=warning):
        PermutationManager(model, x)()  # the reference's API, on the same groups
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)


def test_a_weight_tied_between_hidden_layers_moves_once_for_both():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(),
                          nn.Linear(6, 2))
    model[4].weight = model[2].weight
    x = torch.randn(4, 3)
    expected = model(x)
    (group,) = _quietly(model, x)  # every hidden width is one group: the tied weight maps it onto itself
    assert {("0.weight", 0), ("2.weight", 0), ("2.weight", 1), ("4.bias", 0), ("6.weight", 1)} <= _axes(group)
    permute_channels(model, group, torch.randperm(6))
    assert torch.equal(model[2].weight, model[4].weight)
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)


def test_parameters_aliasing_one_memory_move_once():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(),
                          nn.Linear(6, 2))
    model[4].weight = nn.Parameter(model[2].weight.detach())  # another Parameter object, the same memory
    x = torch.randn(4, 3)
    expected = model(x)
    (group,) = _quietly(model, x)
    assert not {piece.name for piece in group.slices} & {"4.weight"}  # permuted under its alias's name only
    permute_channels(model, group, torch.randperm(6))
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)


def test_shared_batchnorm_statistics_follow_both_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 6, 1), nn.BatchNorm2d(6),
                          nn.ReLU(), nn.Conv2d(6, 2, 1)).eval()
    with torch.no_grad():
        model[1].running_mean.normal_()
    model[4].running_mean = model[1].running_mean
    x = torch.randn(2, 3, 4, 4)
    expected = model(x)
    (group,) = _quietly(model, x)  # the shared statistic ties both layers' channels
    assert {("0.weight", 0), ("3.weight", 0), ("1.running_mean", 0)} <= _axes(group)
    permute_channels(model, group, torch.randperm(6))
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)


def test_tensors_without_strided_memory_are_no_obstacle():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    model.register_buffer("lookup", torch.eye(3).to_sparse())  # has no data pointer to compare
    (group,) = _quietly(model, torch.randn(2, 3))
    assert ("0.weight", 0) in _axes(group)
