"""smooth() and random group permutations keep every model's function; total variation never rises."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neumeta_fast import SmoothReport, smooth, total_variation
from neumeta_fast.channel_groups import channel_groups, permute_channels
from neumeta_fast.models import cifar_resnet, lenet, mlp, resnet18


class DepthwiseSeparable(nn.Module):
    """Stem, depthwise conv with depth multiplier 2, pointwise conv, head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(6)
        self.depthwise = nn.Conv2d(6, 12, 3, padding=1, groups=6)
        self.depthwise_bn = nn.BatchNorm2d(12)
        self.pointwise = nn.Conv2d(12, 10, 1)
        self.pointwise_bn = nn.BatchNorm2d(10)
        self.head = nn.Linear(10, 4)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        x = F.relu(self.depthwise_bn(self.depthwise(x)))
        x = F.relu(self.pointwise_bn(self.pointwise(x)))
        return self.head(x.mean((2, 3)))


class ConcatBlock(nn.Module):
    """Two branches concatenated on channels, a BatchNorm over the concatenation, a conv after it."""

    def __init__(self):
        super().__init__()
        self.branch_a = nn.Conv2d(3, 5, 3, padding=1)
        self.branch_b = nn.Conv2d(3, 7, 1)
        self.bn = nn.BatchNorm2d(12)
        self.merge = nn.Conv2d(12, 8, 3, padding=1)
        self.head = nn.Linear(8 * 4 * 4, 3)

    def forward(self, x):
        x = torch.cat([self.branch_a(x), torch.relu(self.branch_b(x))], dim=1)
        x = F.max_pool2d(torch.relu(self.merge(torch.relu(self.bn(x)))), 4)
        return self.head(torch.flatten(x, 1))


class TransformerMLP(nn.Module):
    """Token projection, pre-norm Linear-GELU-Linear with a residual, final LayerNorm, head."""

    def __init__(self, features=12, width=16, hidden=32, classes=3):
        super().__init__()
        self.embed = nn.Linear(features, width)
        self.norm1 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)
        self.norm2 = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, tokens):
        x = self.embed(tokens)
        x = x + self.fc2(self.act(self.fc1(self.norm1(x))))
        return self.head(self.norm2(x).mean(1))


MODELS = {
    "resnet20_hidden16": (lambda: cifar_resnet(20, hidden_width=16), (2, 3, 32, 32)),
    "resnet20_hidden64": (lambda: cifar_resnet(20, hidden_width=64), (2, 3, 32, 32)),
    "resnet18": (lambda: resnet18(num_classes=10, base_width=8), (2, 3, 32, 32)),
    "lenet": (lambda: lenet(), (2, 1, 28, 28)),
    "mlp": (lambda: mlp(64, hidden_width=24, hidden_layers=3), (2, 64)),
    "depthwise_separable": (DepthwiseSeparable, (2, 3, 8, 8)),
    "concat": (ConcatBlock, (2, 3, 16, 16)),
    "transformer_mlp": (TransformerMLP, (2, 5, 12)),
}


def _build(name):
    """A model in eval mode whose normalisation layers are far from identity, and an input."""
    torch.manual_seed(0)
    builder, input_shape = MODELS[name]
    model = builder()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
            if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_()
    return model.eval(), torch.randn(input_shape)


def _assert_same_function(before, after):
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5 * before.abs().max().item())


@pytest.mark.parametrize("name", list(MODELS))
def test_smooth_keeps_function_and_lowers_variation(name):
    model, x = _build(name)
    with torch.no_grad():
        expected = model(x)
    report = smooth(model, x)
    with torch.no_grad():
        _assert_same_function(expected, model(x))
    assert isinstance(report, SmoothReport)
    assert any(group.applied for group in report.groups), "no group was reordered: the test would prove nothing"
    assert report.total_variation_after <= report.total_variation_before
    assert report.total_variation_after == pytest.approx(total_variation(model), rel=1e-12)
    for group in report.groups:
        assert group.cost_after <= group.cost_before


@pytest.mark.parametrize("name", list(MODELS))
def test_random_group_permutations_keep_function(name):
    model, x = _build(name)
    with torch.no_grad():
        expected = model(x)
    generator = torch.Generator().manual_seed(1)
    weights_before = [p.clone() for p in model.parameters()]
    for group in channel_groups(model, x):
        permute_channels(model, group, torch.randperm(group.channels, generator=generator))
    assert any(not torch.equal(a, b) for a, b in zip(weights_before, model.parameters()))
    with torch.no_grad():
        _assert_same_function(expected, model(x))


def test_report_sizes_match_the_groups():
    model, x = _build("lenet")
    groups = channel_groups(model, x)
    report = smooth(model, x)
    assert [g.channels for g in report.groups] == [g.channels for g in groups]
    # conv2 group: 16 channels, features = conv2 rows (6*5*5) + bias (1) + fc1 columns (120 * 7*7 per channel)
    conv2 = next(g for g in report.groups if g.first_slice == "conv2.weight[0]")
    assert (conv2.channels, conv2.features) == (16, 6 * 25 + 1 + 120 * 49)
    assert "groups reordered" in str(report)


def test_total_variation_definition():
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]]))
        model.bias.copy_(torch.tensor([1.0, -1.0]))
    rows = 2 + 1 + 1  # |W[1] - W[0]| summed
    columns = (1 + 0) + (2 + 0)  # |W[:, 1] - W[:, 0]| + |W[:, 2] - W[:, 1]|
    bias = 2
    assert total_variation(model) == rows + columns + bias


def test_smooth_is_deterministic_and_keeps_training_mode():
    states = []
    for _ in range(2):
        model, x = _build("resnet20_hidden16")
        model.train()
        smooth(model, x, seed=3)
        assert model.training
        states.append(model.state_dict())
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_smooth_moves_running_statistics_with_their_channels():
    model, x = _build("resnet20_hidden16")
    mean_before = model.bn1.running_mean.clone()
    smooth(model, x)
    assert not torch.equal(model.bn1.running_mean, mean_before)
    assert torch.equal(model.bn1.running_mean.sort().values, mean_before.sort().values)
