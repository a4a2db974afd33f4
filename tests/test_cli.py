"""CLI: bad input ends with one message and exit 2 before anything is written; train/sample/demo run."""
import json
import os

import pytest
import torch

from neumeta_fast import demo
from neumeta_fast.cli import main
from neumeta_fast.models.family import named_family
from neumeta_fast.trainer import ConfigError, TrainConfig

TINY_TRAINER = {"steps": 4, "batch_size": 16, "hidden_dim": 16, "num_layers": 2, "num_freqs": 2, "bn_batches": 2,
                "prefit_steps": 2}


def _config(tmp_path, **values):
    run = {"dataset": "synthetic", "model": "convnet", "full_width": 4, "base_steps": 3,
           "out": str(tmp_path / "run"), "checkpoint_every": 2, "trainer": TINY_TRAINER, **values}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run))
    return str(path)


@pytest.mark.parametrize("values, message", [
    ({"dataset": "imagenet"}, "unknown dataset 'imagenet'"),
    ({"dataset": "cifar10", "data_root": "/nonexistent", "full_width": 4}, "missing files"),
    ({"eval_widths": [5]}, "builds widths 1..4"),
    ({"trainer": {"stpes": 3}}, r"unknown config keys \['stpes'\]"),
    ({"modle": "mlp"}, r"unknown config keys \['modle'\]"),
    ({"model": "vgg"}, "unknown model 'vgg'"),
])
def test_train_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, values, message):
    assert main(["train", "--config", _config(tmp_path, **values)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert pytest.importorskip("re").search(message, err)
    assert not os.path.exists(tmp_path / "run")


def test_device_cuda_without_cuda_exits_2_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", "--config", _config(tmp_path), "--device", "cuda"]) == 2
    assert main(["train", "--config", _config(tmp_path, trainer={**TINY_TRAINER, "device": "cuda"})]) == 2
    assert main(["demo", "--quick", "--device", "cuda", "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all("CUDA is not available" in line for line in err)
    assert not os.path.exists(tmp_path / "run") and not os.path.exists(tmp_path / "demo")


@pytest.mark.parametrize("args,message", [
    (["--model", "vgg"], "unknown model 'vgg'"),
    (["--full-width", "0"], "widths >= 1"),
    (["--seeds", "0"], "--seeds must be >= 1"),
])
def test_demo_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "demo"
    assert main(["demo", *args, "--out", str(out), "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_missing_and_malformed_config_files(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "none.json")]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["train", "--config", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_train_resume_and_sample(tmp_path, capsys):
    config = _config(tmp_path)
    assert main(["--threads", "1", "train", "--config", config, "--no-progress"]) == 0
    out = tmp_path / "run"
    assert {"checkpoint.pt", "log.csv", "metrics.json"} <= set(os.listdir(out))
    assert len((out / "log.csv").read_text().splitlines()) == 1 + TINY_TRAINER["steps"]
    assert main(["train", "--config", config, "--no-progress", "--device", "auto"]) == 0  # resumes: nothing left
    assert "resumed" in capsys.readouterr().out
    target = tmp_path / "w2.pt"
    assert main(["sample", "--checkpoint", str(out / "checkpoint.pt"), "--width", "2", "--out", str(target)]) == 0
    model = named_family("convnet", full_width=4, num_classes=4).build(2)
    model.load_state_dict(torch.load(target, weights_only=True))
    assert main(["sample", "--checkpoint", str(out / "checkpoint.pt"), "--width", "7", "--out",
                 str(tmp_path / "w7.pt")]) == 2
    assert not os.path.exists(tmp_path / "w7.pt")
    assert "builds widths 1..4 (4 values), got 7" in capsys.readouterr().err
    before = (out / "checkpoint.pt").read_bytes()
    assert main(["train", "--config", _config(tmp_path, full_width=3), "--no-progress"]) == 2  # not the same run
    assert "other ['full_width']" in capsys.readouterr().err
    assert (out / "checkpoint.pt").read_bytes() == before


def test_demo_writes_results_and_plot(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    config = demo.DemoConfig(seeds=1, full_width=4, train_size=100, base_steps=5,
                             trainer=TrainConfig(**TINY_TRAINER))
    results = demo.run(config, str(tmp_path), progress=False, echo=lambda s: None)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["dataset"] == "digits" and saved["full_width"] == 4 and saved["seeds"] == 1
    assert [r["width"] for r in saved["rows"]] == [4, 3, 2, 1]
    assert [r["seen_in_training"] for r in saved["rows"]] == [True, True, True, False]
    for row in saved["rows"]:
        for key in ("accuracy", "accuracy_std", "nll"):
            assert set(row[key]) == {"neumeta", "individual", "pruned_l1", "no_smoothing"}
        assert all(0 <= v <= 1 for v in row["accuracy"].values())
    assert set(saved["recon_rel_error"]) == {"smoothed", "no_smoothing"}
    assert (tmp_path / "accuracy_vs_width.png").stat().st_size > 1000
    assert "| width |" in demo.table(results)


def test_demo_never_trains_the_quarter_width_or_its_neighbours():
    family = named_family("resnet8_all", full_width=64)
    config = demo.DemoConfig()
    widths = demo.training_widths(config, family)
    assert min(widths) == 8 and max(widths) == 64
    assert {15, 16, 17}.isdisjoint(widths) and {14, 18} <= set(widths)
    narrow = demo.DemoConfig(min_fraction=0.5)
    assert demo.training_widths(narrow, family) == list(range(32, 65))
    explicit = demo.DemoConfig(trainer=TrainConfig(widths=[64, 40]))
    assert demo.training_widths(explicit, family) == [64, 40]
    with pytest.raises(ConfigError, match="leave no training width"):
        demo.training_widths(demo.DemoConfig(min_fraction=0.25, held_out=1.0), family)


def test_base_checkpoint_of_another_width_exits_2(tmp_path, capsys):
    wrong = tmp_path / "base.pt"
    torch.save(named_family("convnet", full_width=8, num_classes=4).build(8).state_dict(), wrong)
    assert main(["train", "--config", _config(tmp_path, base_checkpoint=str(wrong))]) == 2
    assert "does not fit convnet at width 4" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run")
