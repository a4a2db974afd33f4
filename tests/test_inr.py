"""INR module: state-dict layout of SPEC 2 and loading checks."""
import pytest
import torch

import neumeta_fast
from neumeta_fast import INR


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


def test_package_surface():
    assert isinstance(neumeta_fast.__version__, str)
    status = neumeta_fast.backends("cpu")
    assert status["torch"] == "ok"
    assert set(status) >= {"torch", "triton", "cuda"}
    assert all(isinstance(v, str) and v for v in status.values())
