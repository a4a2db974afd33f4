"""Trainer: objective pieces, exact resume, atomic checkpoints, evaluation, baselines, families."""
import copy
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings, strategies as st

from helpers import flip_tensor_byte
from neumeta_fast import atomic, checkpoint, data as D
from neumeta_fast.baselines import evaluate, prune_l1, recalibrate_bn, shuffle_channels, train_model
from neumeta_fast.models.family import Family, WidthError, named_family
from neumeta_fast.objective import Classification, VAE, reconstruction, relative_error
from neumeta_fast.trainer import ConfigError, TrainConfig, Trainer, resolve_device

TINY = dict(steps=6, batch_size=16, hidden_dim=16, num_layers=2, num_freqs=2, bn_batches=2, prefit_steps=0)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    data = D.synthetic(n_train=64, n_test=32)
    family = named_family("convnet", full_width=6, num_classes=4)
    base = train_model(family.build(6), data, Classification, steps=10, seed=0)
    return family, base, data


def _params(trainer):
    return [p.detach().clone() for p in list(trainer.inr.parameters()) + list(trainer.ema.parameters())]


def test_resume_is_bitwise(setup, tmp_path):
    family, base, data = setup
    config = TrainConfig(**{**TINY, "prefit_steps": 2}, ratio=0.5, noise=1.0, noise_mode="reference")
    straight = Trainer(family, base, data, config)
    straight.fit(6)
    first = Trainer(family, base, data, config)
    first.fit(3)
    path = str(tmp_path / "ck.pt")
    first.save(path)
    torch.manual_seed(1234)  # the resumed run must not depend on the caller's RNG
    resumed = Trainer(family, base, data, config)
    resumed.resume(path)
    resumed.fit(3)
    assert resumed.step_count == 6
    assert all(torch.equal(a, b) for a, b in zip(_params(straight), _params(resumed)))


def test_resume_rejects_a_different_config(setup, tmp_path):
    family, base, data = setup
    t = Trainer(family, base, data, TrainConfig(**TINY))
    path = str(tmp_path / "ck.pt")
    t.save(path)
    other = Trainer(family, base, data, TrainConfig(**{**TINY, "noise": 0.5}))
    with pytest.raises(ConfigError, match="noise"):
        other.resume(path)


def test_device_names_and_missing_cuda(monkeypatch):
    assert TrainConfig().device == "cpu"
    for bad in ("gpu", "cuda:x", "mps", ""):
        with pytest.raises(ConfigError, match="device must be"):
            TrainConfig(device=bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:0"):
        with pytest.raises(ConfigError, match="CUDA is not available"):
            TrainConfig(device=name)
    assert resolve_device("auto") == torch.device("cpu")


def test_resume_may_change_the_device(setup, tmp_path):
    family, base, data = setup
    t = Trainer(family, base, data, TrainConfig(**TINY, device="auto"))
    t.fit(2)
    path = str(tmp_path / "ck.pt")
    t.save(path)
    resumed = Trainer(family, base, data, TrainConfig(**TINY))
    resumed.resume(path)
    assert resumed.step_count == 2 and resumed.device == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_on_cuda_resumes_on_the_cpu(setup, tmp_path):
    family, base, data = setup
    # The torch backend draws its noise from the CPU generator, as on the CPU (philox backends draw a seed).
    config = TrainConfig(**{**TINY, "prefit_steps": 1}, ratio=0.5, noise=1.0, backend="torch", device="cuda")
    gpu = Trainer(family, base, data, config)
    rows = gpu.fit(2)
    assert all(p.is_cuda for p in list(gpu.inr.parameters()) + list(gpu.ema.parameters()))
    cpu_rows = Trainer(family, base, data, TrainConfig(**{**config.to_dict(), "device": "cpu"})).fit(2)
    assert [r["width"] for r in rows] == [r["width"] for r in cpu_rows]  # random choices come from the CPU
    assert 0 <= gpu.evaluate(4)["accuracy"] <= 1
    path = str(tmp_path / "ck.pt")
    gpu.save(path)
    resumed = Trainer(family, base, data, TrainConfig(**{**config.to_dict(), "device": "cpu"}))
    resumed.resume(path)
    assert all(torch.equal(a.cpu(), b) for a, b in zip(_params(gpu), _params(resumed)))
    assert resumed.fit(1)[0]["step"] == 3


def test_atomic_save_keeps_the_old_file_on_failure(tmp_path):
    path = str(tmp_path / "ck.pt")
    checkpoint.save({"a": torch.ones(2)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        checkpoint.save({"a": Unpicklable()}, path)
    assert torch.equal(checkpoint.load(path)["a"], torch.ones(2))
    assert os.listdir(tmp_path) == ["ck.pt"]  # no temp file left behind


def test_temp_files_of_killed_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    names = {"live": f".tmp-{os.getpid()}-a", "dead": f".tmp-{dead.pid}-b", "older": ".tmp-c", "other": "tmp-d"}
    for name in names.values():
        (tmp_path / name).write_bytes(b"")
    assert sorted(atomic.remove_orphans(str(tmp_path))) == sorted([names["dead"], names["older"]])
    assert sorted(os.listdir(tmp_path)) == sorted([names["live"], names["other"]])
    assert atomic.remove_orphans(str(tmp_path / "missing")) == []


def test_saved_checkpoint_has_the_mode_of_a_plainly_written_file(tmp_path):
    checkpoint.save({"a": torch.ones(2)}, str(tmp_path / "ck.pt"))
    (tmp_path / "plain").write_bytes(b"")
    assert os.stat(tmp_path / "ck.pt").st_mode == os.stat(tmp_path / "plain").st_mode


def test_training_lowers_the_loss_and_evaluates_every_width(setup):
    family, base, data = setup
    trainer = Trainer(family, base, data, TrainConfig(**{**TINY, "steps": 30, "lr": 3e-3}))
    rows = trainer.fit()
    assert rows[-1]["step"] == 30 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    for width in (6, 3, 1):
        metrics = trainer.evaluate(width, samples=2)
        assert 0 <= metrics["accuracy"] <= 1 and metrics["nll"] > 0
    assert trainer.recon_rel_error() > 0


def test_prefit_reproduces_the_base_weights(setup):
    family, base, data = setup
    trainer = Trainer(family, base, data, TrainConfig(**{**TINY, "hidden_dim": 64, "num_freqs": 3}))
    before = trainer.recon_rel_error()
    trainer.prefit(200)
    assert trainer.recon_rel_error() < 0.5 * before


def test_reconstruction_modes():
    gt = {"w": torch.tensor([0.01, -0.02, 0.03]), "g": torch.tensor([1.0, 2.0, 1.5])}
    gen = {k: v * 1.1 for k, v in gt.items()}
    norm = reconstruction(gen, gt, "normalised")
    # normalised: every tensor counts by its relative error, whatever its scale
    expected = sum(float(((v * 0.1) ** 2).mean() / v.var(unbiased=False)) for v in gt.values()) / 2
    assert abs(float(norm) - expected) < 1e-6
    assert float(reconstruction(gen, gt, "reference")) < float(norm)
    assert abs(relative_error(gen, gt) - 0.1) < 1e-6
    with pytest.raises(ValueError, match="unknown recon mode"):
        reconstruction(gen, gt, "l1")


def test_config_typos_and_ranges():
    with pytest.raises(ConfigError, match=r"unknown config keys \['stepz'\]"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ConfigError, match="noise_mode"):
        TrainConfig(noise_mode="all")
    with pytest.raises(ConfigError, match="ratio"):
        TrainConfig(ratio=0)


def test_family_widths_and_morph():
    family = named_family("convnet", full_width=8)
    assert family.morph == ["conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight", "bn2.weight", "bn2.bias",
                            "conv3.weight", "bn3.weight", "bn3.bias", "head.weight"]
    assert family.layout(4).names == family.morph
    with pytest.raises(WidthError, match="got 9"):
        family.layout(9)
    custom = Family(lambda w: torch.nn.Sequential(torch.nn.Linear(3, w), torch.nn.Linear(w, 2)), widths=range(2, 5))
    assert custom.morph == ["0.weight", "0.bias", "1.weight"] and custom.full_width == 4
    with pytest.raises(ValueError, match="unknown model"):
        named_family("vgg", full_width=4)


def test_resnet_all_stages_morph_every_hidden_width():
    family = named_family("resnet8_all", full_width=64)
    hidden = {n: t.shape[0] for n, t in family.build(16).state_dict().items() if n.endswith("conv1.weight")
              and n.startswith("layer")}
    assert hidden == {"layer1.0.conv1.weight": 4, "layer2.0.conv1.weight": 8, "layer3.0.conv1.weight": 16}
    assert family.morph == [f"layer{s}.0.{t}" for s in (1, 2, 3)
                            for t in ("conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight")]
    last = named_family("resnet8", full_width=64)
    assert [n for n in last.morph if not n.startswith("layer3")] == []
    x = torch.randn(2, 1, 8, 8)
    assert family.build(1)(x).shape == (2, 10)  # every stage keeps at least one hidden channel
    with pytest.raises(ValueError, match="hidden_stages"):
        from neumeta_fast.models.cifar_resnet import cifar_resnet
        cifar_resnet(8, hidden_width=4, hidden_stages="first")


def test_l1_pruning_keeps_the_largest_filters(setup):
    family, base, data = setup
    pruned = prune_l1(base, family, 3, data.x_train[:2])
    keep = base.conv1.weight.detach().abs().flatten(1).sum(1).topk(3).indices.sort().values
    assert torch.equal(pruned.conv1.weight, base.conv1.weight[keep])
    assert pruned.conv2.weight.shape == (3, 3, 3, 3)
    recalibrate_bn(pruned, data.x_train, batches=2)
    assert 0 <= evaluate(pruned, data, Classification)["accuracy"] <= 1


def test_shuffled_channels_compute_the_same_function(setup):
    family, base, data = setup
    shuffled = shuffle_channels(copy.deepcopy(base), data.x_train[:2], seed=1)
    assert not torch.equal(shuffled.conv1.weight, base.conv1.weight)
    with torch.no_grad():
        torch.testing.assert_close(shuffled.eval()(data.x_test), base.eval()(data.x_test), rtol=1e-5, atol=1e-5)


def test_vae_family_trains():
    torch.manual_seed(0)
    data = D.synthetic(n_train=32, n_test=16)
    data.x_train, data.x_test = data.x_train.sigmoid(), data.x_test.sigmoid()
    family = named_family("vae", full_width=4)
    base = train_model(family.build(4), data, VAE, steps=3, seed=0)
    trainer = Trainer(family, base, data, TrainConfig(**TINY), VAE)
    trainer.fit()
    assert evaluate(trainer.model(2), data, VAE)["mse"] > 0


def test_bad_trainer_inputs_are_named(tmp_path):
    with pytest.raises(ConfigError, match="widths"):
        TrainConfig(widths=[])
    data = D.synthetic(n_train=32, n_test=16, shape=(1, 8, 8), num_classes=4)
    family = named_family("convnet", full_width=8, num_classes=4, in_channels=1)
    wrong = Family(family.build_fn, widths=family.widths, morph=["nope.weight"])
    with pytest.raises(ConfigError, match="nope.weight"):
        Trainer(wrong, family.build(8), data, TrainConfig(steps=1, prefit_steps=0))
    with pytest.raises(ValueError, match="steps must be >= 0"):
        train_model(family.build(8), data, Classification, steps=-1)


@pytest.mark.parametrize("content", ["garbage", "module"])
def test_checkpoint_load_rejects_what_is_not_a_state_dict(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content == "garbage":
        path.write_bytes(b"not a checkpoint")
    else:
        torch.save(torch.nn.Linear(2, 2), path)  # a pickled module: refused by weights_only loading
    with pytest.raises(ValueError, match="not a checkpoint of plain tensors"):
        checkpoint.load(str(path))


def test_a_flipped_byte_in_a_checkpoint_is_refused(setup, tmp_path):
    family, base, data = setup
    path = str(tmp_path / "ck.pt")
    Trainer(family, base, data, TrainConfig(**TINY)).save(path)
    flip_tensor_byte(path)
    with pytest.raises(checkpoint.CheckpointError, match="is damaged: its contents do not match the SHA-256"):
        checkpoint.load(path)


@pytest.fixture(scope="module")
def saved_checkpoint(setup, tmp_path_factory):
    _, _, data = setup  # a small family: few tensors, so that each load takes milliseconds
    family = Family(lambda w: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, w), torch.nn.Linear(w, 4)),
                    widths=range(2, 5))
    trainer = Trainer(family, family.build(4), data, TrainConfig(**TINY))
    trainer.fit(2)
    path = str(tmp_path_factory.mktemp("ck") / "ck.pt")
    trainer.save(path, {"run": {"out": "x", "eval_widths": [1, 2]}})
    return path, checkpoint.digest(checkpoint.load(path))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.floats(0, 1), bit=st.integers(0, 7))
def test_any_flipped_bit_is_refused_or_harmless(saved_checkpoint, tmp_path, position, bit):
    """Flip one bit anywhere in a trainer checkpoint: it loads as saved (zip padding, unread
    records) or fails with CheckpointError, never another exception or other values."""
    path, expected = saved_checkpoint
    with open(path, "rb") as fh:
        damaged = bytearray(fh.read())
    damaged[int(position * (len(damaged) - 1))] ^= 1 << bit
    path = tmp_path / "flipped.pt"
    path.write_bytes(bytes(damaged))
    try:
        state = checkpoint.load(str(path))
    except checkpoint.CheckpointError:
        return
    assert checkpoint.digest(state) == expected


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's, on the way to refusing the bytes
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=300))
@example(content=b"")
@example(content=b"PK\x03\x04" + bytes(200))
@example(content=bytes(range(128, 256)))
def test_empty_and_random_files_are_named_checkpoint_errors(tmp_path, content):
    path = tmp_path / "random.pt"
    path.write_bytes(content)
    with pytest.raises(checkpoint.CheckpointError, match="not a checkpoint of plain tensors"):
        checkpoint.load(str(path))


def test_truncated_checkpoints_are_named_errors(setup, tmp_path):
    family, base, data = setup
    path = tmp_path / "ck.pt"
    Trainer(family, base, data, TrainConfig(**TINY)).save(str(path))
    raw = path.read_bytes()
    for size in (0, 10, len(raw) // 2, len(raw) - 10):
        path.write_bytes(raw[:size])
        with pytest.raises(checkpoint.CheckpointError):
            checkpoint.load(str(path))


def test_a_checkpoint_without_checksum_loads_with_a_warning(setup, tmp_path):
    """Checkpoints written before checksums resume, unverified and said so; plain state_dicts
    (a user's base model) load without a warning."""
    family, base, data = setup
    first = Trainer(family, base, data, TrainConfig(**TINY))
    first.fit(2)
    old = str(tmp_path / "old.pt")
    torch.save(first.state_dict(), old)  # the format before checksums
    resumed = Trainer(family, base, data, TrainConfig(**TINY))
    with pytest.warns(UserWarning, match="has no checksum"):
        resumed.resume(old)
    assert resumed.step_count == 2
    assert all(torch.equal(a, b) for a, b in zip(_params(first), _params(resumed)))
    plain = str(tmp_path / "plain.pt")
    torch.save(base.state_dict(), plain)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert set(checkpoint.load(plain, expect_checksum=False)) == set(base.state_dict())


def test_checkpoint_save_keeps_its_checksum_key_apart(tmp_path):
    with pytest.raises(ValueError, match="checksum entry"):
        checkpoint.save({checkpoint.CHECKSUM_KEY: torch.ones(1)}, str(tmp_path / "ck.pt"))
    checkpoint.save({"a": torch.ones(2)}, str(tmp_path / "plain.pt"), checksum=False)
    assert list(torch.load(tmp_path / "plain.pt", weights_only=True)) == ["a"]


def test_kernels_larger_than_3x3_get_an_inr_with_enough_outputs():
    """LeNet's 5x5 convolutions need 25 outputs; an INR with the default 9 failed at the first step."""
    family = named_family("lenet", full_width=4, num_classes=4, in_channels=1, image_size=8)
    data = D.synthetic(n_train=32, n_test=16, shape=(1, 8, 8), num_classes=4)
    trainer = Trainer(family, family.build(4), data, TrainConfig(steps=2, prefit_steps=1, batch_size=8,
                                                                 hidden_dim=16, num_layers=2, num_freqs=2))
    trainer.fit()
    assert trainer.inr.output_dim == 25
    assert trainer.weights(3)["conv1.weight"].shape[2:] == (5, 5)
