"""smooth() and random group permutations keep every model's function; total variation never rises."""
import warnings
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from neumeta_fast import SmoothReport, smooth, total_variation
from neumeta_fast.channel_groups import channel_groups, permute_channels
from neumeta_fast.smoothing import orient
from neumeta_fast.compat import PermutationManager
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


# -- fuzzing: random small models with tied weights, reused modules and residuals -------------------
@dataclass(frozen=True)
class _Plan:
    """A random model: `layers` to build, `steps` its forward takes.

    layers: (kind, in, out, kernel, tie) with kind "dense" (a Linear, or a Conv2d when `conv`), "norm"
    (BatchNorm) or "head" (the final Linear); tie None or (how, earlier layer index).
    steps: ("layer", index) | ("relu",) | ("add", index into the outputs so far) | ("pool",).
    """

    conv: bool
    in_width: int
    layers: tuple
    steps: tuple

    @property
    def shares_tensors(self) -> bool:
        """Some layer is tied to an earlier one, or some module is called twice."""
        called = [step[1] for step in self.steps if step[0] == "layer"]
        return any(spec[-1] is not None for spec in self.layers) or len(set(called)) < len(called)


@st.composite
def _plans(draw):
    conv = draw(st.booleans())
    widths = [draw(st.integers(2, 5))]  # width of every output so far, the model input first
    layers, steps = [], []
    for _ in range(draw(st.integers(1, 6))):
        width = widths[-1]
        op = draw(st.sampled_from(["dense", "dense", "norm", "relu", "add"]))
        tie = draw(st.sampled_from([None, None, "module", "weight", "alias", "transpose"]))
        if op in ("dense", "norm"):
            # an earlier layer of the same kind this one can be tied to (a transposed weight swaps in and out)
            fits = [i for i, (kind, a, b, _, _) in enumerate(layers)
                    if kind == op and (b if tie == "transpose" and op == "dense" else a) == width]
            source = draw(st.sampled_from(fits)) if tie and fits else None
            if tie == "module" and source is not None:
                index = source  # the same module, called again
            else:
                if source is None:
                    out = draw(st.integers(2, 5)) if op == "dense" else width
                    layers.append((op, width, out, draw(st.sampled_from([1, 3])), None))
                else:
                    _, a, b, kernel, _ = layers[source]
                    how = tie if op == "dense" else "statistics"
                    layers.append((op, width, a if how == "transpose" else b, kernel, (how, source)))
                index = len(layers) - 1
            steps.append(("layer", index))
            widths.append(layers[index][2])
        elif op == "add" and width in widths[:-1]:
            steps.append(("add", draw(st.sampled_from([i for i, w in enumerate(widths[:-1]) if w == width]))))
            widths.append(width)
        else:
            steps.append(("relu",))
            widths.append(width)
    if conv:
        steps.append(("pool",))
    layers.append(("head", widths[-1], 3, 1, None))
    steps.append(("layer", len(layers) - 1))
    return _Plan(conv, widths[0], tuple(layers), tuple(steps))


class _PlannedNet(nn.Module):
    def __init__(self, plan: _Plan):
        super().__init__()
        self.steps = plan.steps
        self.layers = nn.ModuleList(_layer(plan.conv, spec) for spec in plan.layers)
        with torch.no_grad():
            for spec, layer in zip(plan.layers, self.layers):
                if isinstance(layer, nn.modules.batchnorm._BatchNorm):  # far from identity
                    layer.running_mean.normal_()
                    layer.running_var.uniform_(0.5, 2.0)
                    layer.weight.uniform_(0.5, 1.5)
                    layer.bias.normal_()
                if spec[-1] is not None:
                    _tie(layer, self.layers[spec[-1][1]], spec[-1][0])

    def forward(self, x):
        outputs = [x]
        for step in self.steps:
            if step[0] == "layer":
                x = self.layers[step[1]](x)
            elif step[0] == "relu":
                x = torch.relu(x)
            elif step[0] == "add":
                x = x + outputs[step[1]]
            else:
                x = x.mean((2, 3))
            outputs.append(x)
        return x


def _layer(conv: bool, spec) -> nn.Module:
    kind, width_in, width_out, kernel, _ = spec
    if kind == "norm":
        return nn.BatchNorm2d(width_in) if conv else nn.BatchNorm1d(width_in)
    if conv and kind == "dense":
        return nn.Conv2d(width_in, width_out, kernel, padding=kernel // 2)
    return nn.Linear(width_in, width_out)


def _tie(layer: nn.Module, source: nn.Module, kind: str) -> None:
    if kind == "statistics":  # BatchNorm: one running mean for both layers
        layer.running_mean = source.running_mean
    elif kind == "weight":  # the same Parameter
        layer.weight = source.weight
    elif kind == "alias":  # another Parameter over the same memory
        layer.weight = nn.Parameter(source.weight.detach())
    else:  # "transpose": another Parameter over the same memory, read transposed
        layer.weight = nn.Parameter(source.weight.detach().transpose(0, 1))


def _planned(plan: _Plan, seed: int):
    torch.manual_seed(seed)
    shape = (3, plan.in_width, 4, 4) if plan.conv else (3, plan.in_width)
    return _PlannedNet(plan).eval(), torch.randn(shape)


@settings(max_examples=40, deadline=None)
@given(plan=_plans(), seed=st.integers(0, 2**16))
def test_fuzz_random_models_keep_their_function(plan, seed):
    """smooth(), random permutations of every group and PermutationManager on random models with
    tied weights, reused modules, aliased memory and residuals: the function never changes, and
    only models that share tensors warn."""
    model, x = _planned(plan, seed)
    with torch.no_grad():
        expected = model(x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        smooth(model, x, seed=seed)
        with torch.no_grad():
            _assert_same_function(expected, model(x))
        generator = torch.Generator().manual_seed(seed)
        for group in channel_groups(model, x):
            permute_channels(model, group, torch.randperm(group.channels, generator=generator))
        with torch.no_grad():
            _assert_same_function(expected, model(x))
        model, x = _planned(plan, seed)
        PermutationManager(model, x)()
        with torch.no_grad():
            _assert_same_function(expected, model(x))
    if not plan.shares_tensors:
        assert not caught, [str(w.message) for w in caught]


# -- path orientation ---------------------------------------------------------------------------------
def test_orient_reads_the_path_from_its_heavier_end():
    rows = torch.tensor([[1.0, 1.0], [5.0, 0.0], [0.0, 0.5], [3.0, 3.0]])  # L1 norms 2, 5, 0.5, 6
    order = torch.tensor([2, 0, 1, 3])  # ends: channel 2 (0.5) and channel 3 (6)
    assert orient(order, rows, "heavy_first").tolist() == [3, 1, 0, 2]
    assert orient(order, rows, "light_first").tolist() == [2, 0, 1, 3]
    assert orient(order, rows, "solver").tolist() == [2, 0, 1, 3]
    # Ends of equal norm: the lower channel index first, whichever way the solver read the path.
    ties = torch.ones(4, 2)
    for path in ([3, 1, 2, 0], [0, 2, 1, 3]):
        assert orient(torch.tensor(path), ties, "heavy_first").tolist() == [0, 2, 1, 3]


def test_smooth_does_not_depend_on_which_way_the_solver_reads_a_path(monkeypatch):
    """The solver may return a path or its reverse (equally short): the smoothed model is the same."""
    from neumeta_fast import tsp

    solve = tsp.path_order
    states = {}
    for reverse in (False, True):
        monkeypatch.setattr(tsp, "path_order", lambda rows, **kw: solve(rows, **kw).flip(0) if reverse else solve(rows, **kw))
        model, x = _build("resnet20_hidden16")
        with torch.no_grad():
            expected = model(x)
        smooth(model, x)
        with torch.no_grad():
            _assert_same_function(expected, model(x))
        states[reverse] = model.state_dict()
    for key in states[False]:
        assert torch.equal(states[False][key], states[True][key]), key


def test_solver_orientation_keeps_the_solver_reading_and_light_first_reverses_heavy_first():
    def first_rows(orientation):
        model, x = _build("resnet20_hidden16")
        smooth(model, x, orientation=orientation)
        return model.conv1.weight.detach().clone()

    heavy, light, solver = first_rows("heavy_first"), first_rows("light_first"), first_rows("solver")
    assert not torch.equal(heavy, light)
    assert torch.equal(heavy.flip(0), light)  # conv1's output channels are one group: read backwards
    assert torch.equal(solver, heavy) or torch.equal(solver, light)


def test_unknown_orientation_is_a_clear_error():
    model, x = _build("lenet")
    with pytest.raises(ValueError, match="orientation must be one of"):
        smooth(model, x, orientation="forwards")
