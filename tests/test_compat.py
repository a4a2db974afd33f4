"""neumeta_fast.compat: reference-API code runs unchanged and matches the core reference implementation."""
import copy
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neumeta_fast import INR, Layout, generate
from neumeta_fast.compat import (NeRF_MLP_Compose, NeRF_ResMLP_Compose, PermutationManager, create_key_masks,
                                 sample_coordinates, sample_merge_model, sample_single_model, sample_subset,
                                 sample_weights, weighted_regression_loss)
from neumeta_fast.compat import _device
from neumeta_fast.models import cifar_resnet, lenet, mlp
from neumeta_fast.reference import reference_coordinates, reference_forward, reference_generate

NORM = 64


class TinyNet(nn.Module):
    """A reference-style target: `learnable_parameter` = the morphable tensors of the last block."""

    def __init__(self, width=6):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.block = nn.ModuleDict({
            "conv1": nn.Conv2d(4, width, 3, padding=1, bias=False), "bn1": nn.BatchNorm2d(width),
            "conv2": nn.Conv2d(width, 4, 1, bias=False), "fc": nn.Linear(4, 3),
        })

    def forward(self, x):
        b = self.block
        h = self.stem(x)
        h = F.relu(b["bn1"](b["conv1"](h)))
        h = b["conv2"](h).mean((2, 3))
        return b["fc"](h)

    @property
    def learnable_parameter(self):
        self.keys = [k for k, _ in self.named_parameters() if k.startswith("block.")]
        return {k: v for k, v in self.state_dict().items() if k in self.keys}


def _shapes(model):
    return [(k, tuple(v.shape)) for k, v in model.learnable_parameter.items()]


def _hyper(model, cls=NeRF_ResMLP_Compose, **kw):
    return cls(input_dim=6, hidden_dim=32, output_dim=9, num_freqs=kw.pop("num_freqs", 6), num_layers=3,
               num_compose=len(model.learnable_parameter), **kw)


def _close(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()) + 1e-9)


def _args(noise=1.0):
    return SimpleNamespace(training=SimpleNamespace(coordinate_noise=noise), dimensions=SimpleNamespace(norm=NORM))


# -- hyper-model classes ----------------------------------------------------------------------------

@pytest.mark.parametrize("num_freqs", [6, [2, 6]])
def test_forward_matches_reference_and_keeps_input(num_freqs):
    torch.manual_seed(0)
    model = TinyNet()
    hyper = _hyper(model, num_freqs=num_freqs, normalizing_factor=NORM)
    coords = reference_coordinates(_shapes(model))
    coords = coords + (torch.rand_like(coords) - 0.5)  # reference-mode noise: some rows change MLP
    x = coords / NORM
    x_before = x.clone()
    with torch.no_grad():
        expected = reference_forward(hyper, coords, NORM)
        explicit = hyper(x, layer_id=coords[:, 0].int(), input_dim=coords[:, -1])
        derived = hyper(x)  # layer id and divisor from x * normalizing_factor (exact: NORM is a power of 2)
    assert torch.equal(x, x_before)
    _close(explicit, expected)
    _close(derived, expected)


def test_forward_rejects_layer_ids_outside_the_mlps():
    hyper = _hyper(TinyNet())
    x = torch.rand(4, 6) + 0.5
    with pytest.raises(ValueError, match="outside"):
        hyper(x, layer_id=torch.tensor([0, 1, -1, 2]), input_dim=torch.ones(4))


def test_state_dicts_load_both_ways():
    torch.manual_seed(0)
    model = TinyNet()
    layout = Layout.from_shapes(_shapes(model))
    for cls in (NeRF_ResMLP_Compose, NeRF_MLP_Compose):
        hyper = _hyper(model, cls=cls)
        state = hyper.state_dict()
        assert all(k.startswith("model.") for k in state) and "model.3.scalars.1" in state
        inr = INR.from_state_dict(state)
        with torch.no_grad():
            a, b = generate(hyper, layout, norm=NORM), generate(inr, layout, norm=NORM)
        assert all(torch.equal(a[k], b[k]) for k in a)
        back = _hyper(model, cls=cls)
        back.load_state_dict(INR(len(layout), hidden_dim=32, num_layers=3, num_freqs=6).state_dict())
    assert NeRF_MLP_Compose(6, 8, 9, num_layers=2).model[0].scalars[0].item() == 0.0
    assert NeRF_ResMLP_Compose(6, 8, 9, num_layers=2).model[0].scalars[0].item() == pytest.approx(0.1)


# -- coordinates -----------------------------------------------------------------------------------

def test_sample_coordinates_and_key_masks():
    model = TinyNet(width=5)
    coords, keys, indices, sizes = sample_coordinates(model)
    shapes = _shapes(model)
    assert coords.dtype == torch.float32 and torch.equal(coords, reference_coordinates(shapes))
    rows = []  # the reference's literal enumeration: one row per (a, b)
    for name, shape in shapes:
        for a in range(shape[0]):
            for b in range(shape[1] if len(shape) > 1 else 1):
                rows.append((name, (a, b) + (tuple(shape[2:]) if len(shape) == 4 else (0, 0)), len(shape)))
    assert isinstance(keys, np.ndarray) and list(keys) == [r[0] for r in rows]
    assert indices.dtype == torch.int64 and indices.tolist() == [list(r[1]) for r in rows]
    assert sizes.dtype == torch.int64 and sizes.tolist() == [r[2] for r in rows]
    masks = create_key_masks(keys)
    assert list(masks) == sorted(n for n, _ in shapes)
    for name, mask in masks.items():
        assert mask.dtype == torch.int64 and mask.tolist() == [int(k == name) for k in keys]


def test_missing_learnable_parameter_is_named():
    with pytest.raises(AttributeError, match="learnable_parameter"):
        sample_coordinates(nn.Linear(2, 2))


# -- a training step and an evaluation, written as a user of the reference writes them ----------------

def _user_training_step(hyper_model, model_cls, gt_model, x, target, selected_keys, device):
    """Reference-user code; only the import line differs from a project on the authors' code."""
    coords_tensor, keys_list, indices_list, size_list = sample_coordinates(model_cls)
    key_mask = create_key_masks(keys_list)
    selected_mask = sum([key_mask[k] for k in selected_keys]).bool()
    coords_tensor, keys_list = coords_tensor[selected_mask], keys_list[selected_mask.numpy()]
    indices_list, size_list = indices_list[selected_mask], size_list[selected_mask]
    noise = (torch.rand_like(coords_tensor) - 0.5) * 1.0
    coords_tensor = coords_tensor + noise
    model_cls, reconstructed_weights = sample_weights(hyper_model, model_cls, coords_tensor, keys_list, indices_list,
                                                      size_list, key_mask, selected_keys, device=device, NORM=NORM)
    predict = model_cls(x)
    cls_loss = F.cross_entropy(predict, target)
    reg_loss = sum([torch.norm(w, p=2) for w in reconstructed_weights])
    gt_selected_weights = [w for k, w in gt_model.learnable_parameter.items() if k in selected_keys]
    reconstruct_loss = weighted_regression_loss(reconstructed_weights, gt_selected_weights)
    loss = cls_loss + 1e-4 * reg_loss + 10.0 * reconstruct_loss
    for updated_weight in model_cls.parameters():
        updated_weight.grad = None
    loss.backward(retain_graph=True)
    torch.autograd.backward(reconstructed_weights,
                            [w.grad for k, w in model_cls.named_parameters() if k in selected_keys])
    return selected_mask, noise, loss


def test_training_step_matches_reference_weights_and_gradients():
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model_cls, gt_model = TinyNet(), TinyNet()
    hyper_model = _hyper(model_cls)
    oracle = copy.deepcopy(hyper_model)
    shapes = _shapes(model_cls)
    selected_keys = ["block.conv1.weight", "block.bn1.bias", "block.fc.weight"]
    x, target = torch.randn(5, 3, 6, 6), torch.randint(0, 3, (5,))
    stem_before = model_cls.stem.weight.detach().clone()

    selected_mask, noise, loss = _user_training_step(hyper_model, model_cls, gt_model, x, target, selected_keys,
                                                     device)

    full_noise = torch.zeros(len(selected_mask), 6)
    full_noise[selected_mask] = noise
    expected = reference_generate(oracle, shapes, NORM, noise=[full_noise])
    state = model_cls.state_dict()
    for name, _ in shapes:
        if name in selected_keys:
            _close(state[name], expected[name].detach())
    assert torch.equal(model_cls.stem.weight, stem_before)

    # the same loss through the oracle's weights, differentiated in one pass
    params = dict(model_cls.named_parameters())
    params.update({k: expected[k] for k in selected_keys})
    predict = torch.func.functional_call(model_cls, params, (x,))
    recon = [expected[k] for k, _ in shapes if k in selected_keys]
    gt = [w for k, w in gt_model.learnable_parameter.items() if k in selected_keys]
    oracle_loss = (F.cross_entropy(predict, target) + 1e-4 * sum(torch.norm(w, p=2) for w in recon)
                   + 10.0 * weighted_regression_loss(recon, gt))
    oracle_loss.backward()
    _close(loss.detach(), oracle_loss.detach())
    grads = [(torch.zeros_like(p) if p.grad is None else p.grad, q.grad)
             for p, q in zip(hyper_model.parameters(), oracle.parameters())]
    # MLPs no row reached get no gradient here and zeros in the oracle, which evaluates every row.
    # A residual scalar's gradient sums every hidden unit and cancels to a small number, so the
    # scalars are compared together, against the largest of them.
    for got, want in grads:
        if got.dim() > 0:
            _close(got, want)
    _close(torch.stack([g for g, _ in grads if g.dim() == 0]), torch.stack([w for g, w in grads if g.dim() == 0]))


def test_sample_merge_model_matches_reference_average():
    torch.manual_seed(0)
    model = TinyNet()
    hyper_model = _hyper(model)
    before = copy.deepcopy(model.state_dict())
    shapes = _shapes(model)
    K, rows = 4, reference_coordinates(shapes).shape[0]

    torch.manual_seed(1)
    merged = sample_merge_model(hyper_model, model, _args(1.0), K=K, device="cpu")
    torch.manual_seed(1)  # the reference draws torch.rand_like(coords) for samples 1..K-1
    noise = [None] + [(torch.rand(rows, 6) - 0.5) * 1.0 for _ in range(K - 1)]
    with torch.no_grad():
        expected = reference_generate(hyper_model, shapes, NORM, noise=noise)

    assert merged is not model and not merged.training and not hyper_model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    state = merged.state_dict()
    for name, w in expected.items():
        _close(state[name], w)
    assert torch.equal(state["stem.weight"], before["stem.weight"])


def test_sample_merge_model_with_one_sample_is_noise_free():
    """The reference's sample 0 is clean, so K=1 is the noise-free model (and draws no noise)."""
    torch.manual_seed(0)
    model = TinyNet()
    hyper_model = _hyper(model)
    rng_before = torch.get_rng_state()
    merged = sample_merge_model(hyper_model, model, _args(1.0), K=1, device="cpu")
    assert torch.equal(torch.get_rng_state(), rng_before)
    with torch.no_grad():
        expected = reference_generate(hyper_model, _shapes(model), NORM)
    for name, w in expected.items():
        _close(merged.state_dict()[name], w)


@pytest.mark.parametrize("call,error,match", [
    (lambda m, h, a: sample_merge_model(h, m, a, K=True, device="cpu"), TypeError, "K"),
    (lambda m, h, a: sample_merge_model(h, m, a, K=2.0, device="cpu"), TypeError, "K"),
    (lambda m, h, a: sample_merge_model(h, m, a, K=0, device="cpu"), ValueError, "K"),
    (lambda m, h, a: sample_merge_model(h, m, _args("0.5"), device="cpu"), TypeError, "coordinate_noise"),
    (lambda m, h, a: sample_single_model(h, m, device="cpu", cfg=SimpleNamespace(dimensions=SimpleNamespace(norm=True))),
     TypeError, "cfg.dimensions.norm"),
    (lambda m, h, a: sample_weights(h, m, *a, device="cpu", NORM="64"), TypeError, "NORM"),
    (lambda m, h, a: sample_weights(h, m, *a, device="cpu", NORM=NORM, large_batch_size=0.5), TypeError,
     "large_batch_size"),
    (lambda m, h, a: sample_subset(*a[:4], a[4], ratio=float("nan")), ValueError, "ratio"),
    (lambda m, h, a: weighted_regression_loss([torch.ones(2)], [torch.ones(2)], epsilon="1e-6"), TypeError,
     "epsilon"),
    (lambda m, h, a: _hyper(m, normalizing_factor=0), ValueError, "normalizing_factor"),
])
def test_numeric_arguments_are_checked(call, error, match):
    model = TinyNet()
    coords, keys, indices, sizes = sample_coordinates(model)
    with pytest.raises(error, match=match):
        call(model, _hyper(model), (coords, keys, indices, sizes, create_key_masks(keys)))


def test_sample_single_model_and_shuffled_rows_match_reference():
    torch.manual_seed(0)
    model = TinyNet()
    hyper_model = _hyper(model)
    with torch.no_grad():
        expected = reference_generate(hyper_model, _shapes(model), NORM)
    single = sample_single_model(hyper_model, model, device="cpu", cfg=_args())
    assert single is model and not single.training
    for name, w in expected.items():
        _close(model.state_dict()[name], w)

    # rows in any order (the reference's shuffle_coordiates) take the generic path: forward + scatter
    other = TinyNet()
    coords, keys, indices, sizes = sample_coordinates(other)
    perm = torch.randperm(len(keys))
    coords, keys, indices, sizes = coords[perm], keys[perm.numpy()], indices[perm], sizes[perm]
    key_mask = create_key_masks(keys)
    with torch.no_grad():
        other, weights = sample_weights(hyper_model, other, coords, keys, indices, sizes, key_mask, device="cpu",
                                        NORM=NORM)
    for (name, w), generated in zip(expected.items(), weights):
        _close(other.state_dict()[name], w)
        _close(generated, w)
    with pytest.raises(ValueError, match="cfg"):
        sample_single_model(hyper_model, model, device="cpu")


def test_sample_weights_reuses_the_layout_of_a_selection(monkeypatch):
    """Repeated calls with the same tensors share one Layout (its coordinates and the backends' plans)."""
    from neumeta_fast.compat import sampling

    layouts = []

    def recording_generate(inr, layout, **kwargs):
        layouts.append(layout)
        return generate(inr, layout, **kwargs)

    monkeypatch.setattr(sampling, "generate", recording_generate)
    model, narrow = TinyNet(), TinyNet(width=5)
    hyper_model = _hyper(model)
    coords, keys, indices, sizes = sample_coordinates(model)
    key_mask = create_key_masks(keys)
    selected = ["block.conv1.weight", "block.fc.weight"]
    rows = sum(key_mask[k] for k in selected).bool()
    narrow_coords, narrow_keys, narrow_indices, narrow_sizes = sample_coordinates(narrow)
    with torch.no_grad():
        for _ in range(2):
            sample_weights(hyper_model, model, coords, keys, indices, sizes, key_mask, device="cpu", NORM=NORM)
            sample_weights(hyper_model, model, coords[rows], keys[rows.numpy()], indices[rows], sizes[rows], key_mask,
                           selected, device="cpu", NORM=NORM)
        sample_weights(hyper_model, narrow, narrow_coords, narrow_keys, narrow_indices, narrow_sizes,
                       create_key_masks(narrow_keys), device="cpu", NORM=NORM)
    full, subset, full_again, subset_again, narrower = layouts
    assert full_again is full and subset_again is subset and subset.names == selected
    assert narrower is not full and narrower.segments[0].shape == (5, 4, 3, 3)


def test_sample_subset_selects_whole_tensors():
    model = TinyNet()
    coords, keys, indices, sizes = sample_coordinates(model)
    key_mask = create_key_masks(keys)
    sub_coords, sub_keys, sub_indices, sub_sizes, selected = sample_subset(coords, keys, indices, sizes, key_mask,
                                                                          ratio=0.5)
    assert len(selected) == 3 and set(sub_keys) == set(selected)
    assert len(sub_coords) == len(sub_keys) == len(sub_indices) == len(sub_sizes) == sum(
        int(key_mask[k].sum()) for k in selected)


def test_cuda_default_falls_back_with_one_warning(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available: the default device is usable")
    monkeypatch.setattr(_device, "_warned", False)
    torch.manual_seed(0)
    model = TinyNet()
    hyper_model = _hyper(model)
    coords, keys, indices, sizes = sample_coordinates(model)
    key_mask = create_key_masks(keys)
    with pytest.warns(RuntimeWarning, match="CUDA is not available"):
        sample_weights(hyper_model, model, coords, keys, indices, sizes, key_mask, NORM=NORM)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sample_merge_model(hyper_model, model, _args(), K=2)


def test_mismatched_rows_and_devices_are_reported():
    model = TinyNet()
    hyper_model = _hyper(model)
    coords, keys, indices, sizes = sample_coordinates(model)
    key_mask = create_key_masks(keys)
    with pytest.raises(ValueError, match="rows"):
        sample_weights(hyper_model, model, coords[:-1], keys, indices, sizes, key_mask, device="cpu", NORM=NORM)
    with pytest.raises(ValueError, match="hyper-model's parameters are on"):
        sample_weights(hyper_model, model, coords, keys, indices, sizes, key_mask, device="meta", NORM=NORM)


def test_weighted_regression_loss():
    torch.manual_seed(0)
    w = [torch.randn(4, 3, 3, 3), torch.randn(7)]
    gt = [torch.randn(4, 3, 3, 3), torch.randn(7)]
    expected = torch.stack([(((a - b) ** 2) * (b.abs() + 1e-6) / (b.abs() + 1e-6).max()).mean()
                            for a, b in zip(w, gt)]).mean()
    _close(weighted_regression_loss(w, gt), expected)
    with pytest.raises(ValueError, match="equally many"):
        weighted_regression_loss(w, gt[:1])


# -- PermutationManager ------------------------------------------------------------------------------

def _permutable(name):
    torch.manual_seed(0)
    model, shape = {
        "resnet20": (lambda: cifar_resnet(20, hidden_width=16), (2, 3, 32, 32)),
        "lenet": (lambda: lenet(), (2, 1, 28, 28)),
        "mlp": (lambda: mlp(64, hidden_width=24, hidden_layers=3), (2, 64)),
    }[name]
    model = model()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):  # far from identity, so a stale statistic would show
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_()
    return model.eval(), torch.randn(shape)


@pytest.mark.parametrize("name", ["resnet20", "lenet", "mlp"])
def test_permutation_manager_keeps_function(name):
    model, x = _permutable(name)
    with torch.no_grad():
        before = model(x)
    manager = PermutationManager(model, x)
    permute_dict = manager.compute_permute_dict()
    orders = [(k, m, o) for k, modes in permute_dict.items() for m, o in modes.items()]
    assert orders and {m for _, m, _ in orders} <= {"out_channels", "in_channels"}
    assert any(not torch.equal(o, torch.arange(len(o))) for _, _, o in orders)
    if name == "resnet20":
        assert "layer3.2.bn1.running_mean" in permute_dict
    assert manager.apply_permutations(permute_dict) is model
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5 * before.abs().max().item())


def test_permutation_manager_call_honours_ignored_keys():
    model, x = _permutable("mlp")
    order = PermutationManager(copy.deepcopy(model), x).compute_permute_dict()["hidden.0.bias"]["out_channels"]
    assert not torch.equal(order, torch.arange(len(order)))
    bias, weight = model.hidden[0].bias.detach().clone(), model.hidden[0].weight.detach().clone()
    assert PermutationManager(model, x, ignored_keys=[("hidden.0.bias", "out_channels")])() is model
    assert torch.equal(model.hidden[0].bias, bias)
    assert torch.equal(model.hidden[0].weight, weight[order])
    with pytest.raises(ValueError, match="permutation"):
        PermutationManager(model, x).apply_permutations({"hidden.0.bias": {"out_channels": [0] * 24}})


# -- neumeta_fast.upstream: the authors' models and checkpoint files with the package's own API -----------

def test_model_layout_is_the_learnable_parameters_in_order():
    from neumeta_fast.upstream import model_layout
    model = TinyNet(width=5)
    layout = model_layout(model)
    assert [(s.name, s.shape, s.index) for s in layout.segments] == [
        (name, shape, i) for i, (name, shape) in enumerate(_shapes(model))]
    assert layout is model_layout(TinyNet(width=5))  # one Layout (and its cached plans) per shape set
    with pytest.raises(AttributeError, match="learnable_parameter"):
        model_layout(nn.Linear(2, 2))


def test_load_inr_generates_what_the_authors_hyper_model_does(tmp_path):
    from neumeta_fast.generate import generate_into
    from neumeta_fast.upstream import load_inr, model_layout
    torch.manual_seed(0)
    model = TinyNet()
    raw, ema = _hyper(model), _hyper(model)
    # the authors' save_checkpoint; best_acc is a NumPy float64 there (sklearn's accuracy_score)
    torch.save({"epoch": 3, "model_state_dict": raw.state_dict(), "optimizer_state_dict": {},
                "ema_shadow": {k: p.data.clone() for k, p in ema.named_parameters()},
                "best_acc": np.float64(0.875)}, tmp_path / "cifar10_nerf_best.pth")
    with pytest.raises(Exception, match="weights_only"):  # why a plain torch.load is not enough
        torch.load(tmp_path / "cifar10_nerf_best.pth", weights_only=True)
    for weights, hyper in (("ema", ema), ("model", raw)):
        inr = load_inr(tmp_path / "cifar10_nerf_best.pth", weights=weights)
        target = generate_into(inr, TinyNet(), model_layout(model), norm=NORM)
        with torch.no_grad():
            expected = generate(hyper, Layout.from_shapes(_shapes(model)), norm=NORM)
        assert all(torch.equal(target.state_dict()[k], w) for k, w in expected.items())
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_inr(tmp_path / "missing.pth")
