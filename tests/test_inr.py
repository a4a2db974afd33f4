"""INR module: state-dict layout of docs/spec.md §11 and loading checks."""
import numpy as np
import pytest
import torch

import neumeta_fast
from neumeta_fast import INR
from neumeta_fast.inr import group_by_mlp


def test_state_dict_keys_and_shapes():
    inr = INR(2, hidden_dim=16, num_layers=3, num_freqs=4, output_dim=9)
    state = inr.state_dict()
    expected = {}
    for i in range(2):
        expected[f"model.{i}.initial_layer.weight"] = (16, 6 + 12 * 4)
        expected[f"model.{i}.initial_layer.bias"] = (16,)
        for b in range(2):
            expected[f"model.{i}.residual_blocks.{b}.weight"] = (16, 16)
            expected[f"model.{i}.residual_blocks.{b}.bias"] = (16,)
            expected[f"model.{i}.scalars.{b}"] = ()
        expected[f"model.{i}.output_layer.weight"] = (9, 16)
        expected[f"model.{i}.output_layer.bias"] = (9,)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert all(float(state[f"model.0.scalars.{b}"]) == pytest.approx(0.1) for b in range(2))


def test_paper_config_width():
    assert INR(9, hidden_dim=512, num_layers=8, num_freqs=32).in_features == 390


def test_from_state_dict_round_trip():
    inr = INR(3, hidden_dim=8, num_layers=2, num_freqs=5, output_dim=4)
    copy = INR.from_state_dict(inr.state_dict())
    assert (copy.num_tensors, copy.hidden_dim, copy.num_layers, copy.num_freqs, copy.output_dim) == (3, 8, 2, 5, 4)
    for k, v in inr.state_dict().items():
        assert torch.equal(copy.state_dict()[k], v)
    shifted = INR.from_state_dict(INR(1, hidden_dim=8, num_freqs=[2, 6]).state_dict(), num_freqs=[2, 6])
    assert (shifted.freq_low, shifted.freq_high) == (2, 6)


def test_wrong_state_dict_keys_are_named():
    inr = INR(2, hidden_dim=8, num_layers=2, num_freqs=2)
    state = inr.state_dict()
    state["model.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="model.0.extra.weight"):
        inr.load_state_dict(state)
    with pytest.raises(ValueError, match="model.0.extra.weight"):
        INR.from_state_dict(state)
    del state["model.0.extra.weight"]
    del state["model.1.output_layer.bias"]
    with pytest.raises(RuntimeError, match="model.1.output_layer.bias"):
        inr.load_state_dict(state)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_tensors=0), "num_tensors"), (dict(num_tensors=1, num_layers=0), "num_layers"),
    (dict(num_tensors=1, input_dim=5), "input_dim"), (dict(num_tensors=1, num_freqs=[3, 1]), "num_freqs"),
    (dict(num_tensors=1, num_freqs=[1, 2, 3]), "num_freqs"),
])
def test_bad_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        INR(**kwargs)


@pytest.mark.parametrize("kwargs,error", [
    (dict(num_tensors=True), TypeError), (dict(num_tensors=2.0), TypeError), (dict(hidden_dim=3.7), TypeError),
    (dict(num_layers="2"), TypeError), (dict(output_dim=np.float32(9)), TypeError), (dict(num_freqs=2.5), TypeError),
    (dict(num_freqs=[0, 4.5]), TypeError), (dict(num_freqs=True), TypeError), (dict(scalar="0.1"), TypeError),
    (dict(scalar=float("nan")), ValueError), (dict(num_freqs=128), ValueError), (dict(num_freqs=[2, 200]), ValueError),
])
def test_numeric_arguments_are_checked(kwargs, error):
    """Bools, floats for counts, strings and NaN are refused by name instead of truncated or accepted."""
    (name,) = kwargs
    with pytest.raises(error, match=name):
        INR(**{"num_tensors": 1, **kwargs})


def test_numpy_integers_are_accepted():
    inr = INR(np.int64(2), hidden_dim=np.int32(8), num_layers=np.int64(2), num_freqs=np.array([1, 3]))
    assert (inr.num_tensors, inr.hidden_dim, inr.freq_low, inr.freq_high) == (2, 8, 1, 3)
    assert type(inr.hidden_dim) is int and type(inr.freq_high) is int


def test_package_surface():
    assert isinstance(neumeta_fast.__version__, str)
    status = neumeta_fast.backends("cpu")
    assert status["torch"] == "ok"
    assert set(status) >= {"torch", "triton", "cuda"}
    assert all(isinstance(v, str) and v for v in status.values())


def _fresh_stacks(inr, *args, **kwargs):
    with torch.no_grad():
        return inr._stack(*args, **kwargs)


def test_stacked_is_cached_without_grad_until_a_parameter_changes():
    inr = INR(3, hidden_dim=8, num_layers=3, num_freqs=2, output_dim=4)
    with torch.no_grad():
        first = inr.stacked()
        assert all(a is b for a, b in zip(first, inr.stacked()))
        assert inr.stacked(torch.float32, column_multiple=32)[0] is not first[0]  # keyed on the layout
    # optimizer step: in place on the parameters
    optimizer = torch.optim.SGD(inr.parameters(), lr=0.1)
    sum(t.sum() for t in inr.stacked()).backward()
    optimizer.step()
    with torch.no_grad():
        after_step = inr.stacked()
    assert not torch.equal(after_step[0], first[0])
    assert all(torch.equal(a, b) for a, b in zip(after_step, _fresh_stacks(inr, None, None)))
    # load_state_dict: copy_ into the same parameters
    other = INR(3, hidden_dim=8, num_layers=3, num_freqs=2, output_dim=4)
    inr.load_state_dict(other.state_dict())
    with torch.no_grad():
        loaded = inr.stacked(torch.bfloat16, column_multiple=32)
    assert all(torch.equal(a, b) for a, b in zip(loaded, _fresh_stacks(other, torch.bfloat16, 32)))
    # a new parameter object and a device/dtype move also invalidate
    inr.model[1].output_layer.bias = torch.nn.Parameter(torch.full((4,), 7.0))
    with torch.no_grad():
        assert torch.equal(inr.stacked()[6][1], torch.full((4,), 7.0))
        assert inr.double().stacked()[0].dtype == torch.float64


def test_stacked_with_grad_is_fresh_and_differentiable():
    inr = INR(2, hidden_dim=8, num_layers=2, num_freqs=2, output_dim=4)
    first, second = inr.stacked(), inr.stacked()
    assert all(a is not b and a.grad_fn is not None for a, b in zip(first, second))
    first[4].sum().backward()
    assert all(float(s.grad) == 1.0 for m in inr.model for s in m.scalars)


def test_stacked_kernel_layout_without_residual_blocks():
    inr = INR(2, hidden_dim=40, num_layers=1, num_freqs=1, output_dim=9)
    with torch.no_grad():
        w0t, b0, wrt, br, sc, wo, bo = inr.stacked(torch.float16, column_multiple=128)
    assert w0t.shape == (2, 32, 128) and b0.shape == (2, 128) and wo.shape == (2, 9, 64) and bo.shape == (2, 9)
    assert wrt.shape == (2, 0, 64, 128) and br.shape == (2, 0, 128) and sc.shape == (2, 0)
    assert w0t.dtype == torch.float16 and sc.dtype == torch.float32 and all(t.is_contiguous() for t in (w0t, wrt))
    assert torch.equal(w0t[1, :18, :40], inr.model[1].initial_layer.weight.detach().t().half())


def test_stacked_compiles_without_a_graph_break():
    inr = INR(2, hidden_dim=8, num_layers=2, num_freqs=2, output_dim=4)
    with torch.no_grad():
        expected = inr.stacked()[0] * 2  # an eager call fills the cache first
        compiled = torch.compile(lambda: inr.stacked()[0] * 2, backend="eager", fullgraph=True)
        assert torch.equal(compiled(), expected)
        inr.model[0].initial_layer.weight.add_(1.0)
        assert torch.equal(compiled(), inr.stacked()[0] * 2)


def test_group_by_mlp_sorts_stably_and_checks_the_range():
    order, counts = group_by_mlp(torch.tensor([2, 0, 2, 1, 0]), 4)
    assert order.tolist() == [1, 4, 3, 0, 2] and counts == [2, 1, 2, 0]
    for bad in ([0, -1], [3, 4]):
        with pytest.raises(ValueError, match=r"layer index reaches .* outside the INR's \[0, 4\) MLPs"):
            group_by_mlp(torch.tensor(bad), 4)


# -- training checkpoints: the authors' save_checkpoint dict and this package's Trainer's ---------------

def _authors_checkpoint(path, *, ema=True):
    """A file as the authors' training scripts write it; its EMA weights differ from the raw ones."""
    raw, averaged = INR(2, hidden_dim=8, num_layers=2, num_freqs=3), INR(2, hidden_dim=8, num_layers=2, num_freqs=3)
    checkpoint = {"epoch": 7, "model_state_dict": raw.state_dict(),
                  "optimizer_state_dict": torch.optim.AdamW(raw.parameters()).state_dict(), "best_acc": 0.91}
    if ema:
        checkpoint["ema_shadow"] = {k: p.data.clone() for k, p in averaged.named_parameters()}
    torch.save(checkpoint, path)
    return raw, averaged


def _same_weights(a, b):
    return a.state_dict().keys() == b.state_dict().keys() and all(
        torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_from_state_dict_reads_the_authors_checkpoint(tmp_path):
    raw, averaged = _authors_checkpoint(tmp_path / "best.pth")
    checkpoint = torch.load(tmp_path / "best.pth", weights_only=True)
    assert _same_weights(INR.from_state_dict(checkpoint), averaged)  # EMA by default
    assert _same_weights(INR.from_state_dict(checkpoint, weights="ema"), averaged)
    assert _same_weights(INR.from_state_dict(checkpoint, weights="model"), raw)
    # their loader also takes the model weights under 'state_dict'
    renamed = {("state_dict" if k == "model_state_dict" else k): v for k, v in checkpoint.items()}
    assert _same_weights(INR.from_state_dict(renamed, weights="model"), raw)


def test_from_state_dict_reads_a_trainer_checkpoint():
    raw, averaged = INR(1, hidden_dim=8, num_freqs=2), INR(1, hidden_dim=8, num_freqs=2)
    state = {"config": {}, "step": 3, "inr": raw.state_dict(), "ema": averaged.state_dict()}
    assert _same_weights(INR.from_state_dict(state), averaged)
    assert _same_weights(INR.from_state_dict(state, weights="model"), raw)


def test_checkpoint_without_the_asked_weights_names_its_keys(tmp_path):
    _authors_checkpoint(tmp_path / "no_ema.pth", ema=False)
    checkpoint = torch.load(tmp_path / "no_ema.pth", weights_only=True)
    with pytest.raises(ValueError, match=r"no ema weights.*'best_acc', 'epoch', 'model_state_dict'.*weights='model'"):
        INR.from_state_dict(checkpoint)
    with pytest.raises(ValueError, match="model_state_dict.*not a state dict"):
        INR.from_state_dict({**checkpoint, "model_state_dict": 3}, weights="model")
    with pytest.raises(ValueError, match="weights must be one of"):
        INR.from_state_dict(checkpoint, weights="best")
    with pytest.raises(ValueError, match=r"unexpected keys \['epoch', 'best_acc'\].*model_state_dict"):
        INR.from_state_dict({"epoch": 1, "best_acc": 0.5})
    with pytest.raises(TypeError, match="list"):
        INR.from_state_dict([("epoch", 1)])
