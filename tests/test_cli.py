"""CLI: bad input ends with one message and exit 2 before anything is written; train/sample/demo run."""
import csv
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings, strategies as st

from helpers import flip_tensor_byte
from neumeta_fast import checkpoint, demo, runs
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


def _trainer(**values):
    return {"trainer": {**TINY_TRAINER, **values}}


@pytest.fixture
def no_training(monkeypatch):
    """Bad input must be found before any training: starting it fails the test."""
    def started(*args, **kwargs):
        raise AssertionError("training started before the input was checked")
    monkeypatch.setattr(runs, "train_model", started)
    monkeypatch.setattr(runs.Trainer, "fit", started)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("values, message", [
    ({"dataset": "imagenet"}, "unknown dataset 'imagenet'"),
    ({"dataset": "cifar10", "data_root": "/nonexistent", "full_width": 4}, "missing files"),
    ({"eval_widths": [5]}, "builds widths 1..4"),
    ({"trainer": {"stpes": 3}}, r"unknown config keys \['stpes'\]"),
    ({"modle": "mlp"}, r"unknown config keys \['modle'\]"),
    ({"model": "vgg"}, "unknown model 'vgg'"),
    ({"full_width": "8"}, r"full_width must be an int, got '8' \(str\)"),
    ({"full_width": 4.5}, r"full_width must be an int, got 4.5 \(float\)"),
    ({"full_width": 100000}, r"full_width must be in \[1, 4096\], got 100000"),
    ({"trainer": None}, "trainer must be a table of keys, got None"),
    ({"out": 12}, "out must be a string, got 12"),
    ({"base_steps": -1}, "base_steps must be >= 0, got -1"),
    ({"task": "regress"}, "unknown task 'regress'"),
    ({"task": "vae"}, "model 'convnet' does not fit task 'vae'"),
    ({"eval_widths": "12"}, "eval_widths must be a list of ints, got '12'"),
    ({"checkpoint_every": -1}, "checkpoint_every must be >= 0"),
    (_trainer(norm=0), "norm must be > 0, got 0"),
    (_trainer(noise=-1), "noise must be >= 0, got -1"),
    (_trainer(noise=5, noise_mode="reference"), r"noise=5(\.0)? > 1 in noise_mode='reference'"),
    (_trainer(backend="fast"), "backend must be one of"),
    (_trainer(steps=1e9), r"steps must be an int, got 1000000000.0 \(float\)"),
    (_trainer(hidden_dim=0), "hidden_dim must be >= 1, got 0"),
    (_trainer(num_freqs=-1), r"num_freqs must be in \[0, 32\], got -1"),
    (_trainer(lr=float("nan")), "lr must be a finite number, got nan"),
    (_trainer(seed=-1), "seed must be in"),
    (_trainer(mean_init=1), "mean_init must be true or false, got 1"),
])
def test_train_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, no_training, values, message):
    assert main(["train", "--config", _config(tmp_path, **values)]) == 2
    assert re.search(message, _one_error_line(capsys))
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("out, message", [("file", "is a file, not a folder"), ("file/run", "is a file, not a folder"),
                                          ("ru\0n", "contains a NUL character")])
def test_train_unwritable_out_exits_2_before_training(tmp_path, capsys, no_training, out, message):
    (tmp_path / "file").write_text("")
    assert main(["train", "--config", _config(tmp_path, out=str(tmp_path / out))]) == 2
    assert message in _one_error_line(capsys)
    assert os.listdir(tmp_path) == ["file", "run.json"] and (tmp_path / "file").read_text() == ""


def test_too_many_threads_exit_2(capsys):
    assert main(["--threads", "100000", "sample", "--checkpoint", "x", "--width", "1", "--out", "y"]) == 2
    assert "--threads must be in [1, " in _one_error_line(capsys)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run: its folder (checkpoint.pt, log.csv, metrics.json)."""
    folder = tmp_path_factory.mktemp("trained")
    assert main(["train", "--config", _config(folder), "--no-progress"]) == 0
    return folder / "run"


def _damage(path, how):
    raw = path.read_bytes()
    if how == "flipped":
        flip_tensor_byte(path)
    else:
        path.write_bytes({"empty": b"", "truncated": raw[:len(raw) // 2], "random": os.urandom(len(raw))}[how])


@pytest.mark.parametrize("args, message", [
    (["--samples", "0"], r"samples must be >= 1 \(K-sample averaging\), got 0"),
    (["--samples", "-2"], "samples must be >= 1"),
    (["--out", "{tmp}"], "is a folder; give the path of a file"),
    (["--out", "{tmp}/file/w.pt"], "is a file, not a folder"),
    (["--checkpoint", "flipped"], "is damaged: its contents do not match the SHA-256"),
    (["--checkpoint", "truncated"], "not a checkpoint of plain tensors"),
    (["--checkpoint", "empty"], "not a checkpoint of plain tensors"),
    (["--checkpoint", "random"], "not a checkpoint of plain tensors"),
])
def test_sample_bad_input_exits_2_and_writes_nothing(trained, tmp_path, capsys, args, message):
    ckpt = tmp_path / "checkpoint.pt"
    shutil.copy(trained / "checkpoint.pt", ckpt)
    (tmp_path / "file").write_text("")
    command = {"--checkpoint": str(ckpt), "--width": "2", "--out": str(tmp_path / "w.pt")}
    if args[0] == "--checkpoint":
        _damage(ckpt, args[1])
    else:
        command[args[0]] = args[1].format(tmp=tmp_path)
    assert main(["sample", *[x for kv in command.items() for x in kv]]) == 2
    assert re.search(message, _one_error_line(capsys))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "file"]


@pytest.mark.parametrize("how", ["flipped", "truncated", "empty"])
def test_resume_from_a_damaged_checkpoint_exits_2(trained, tmp_path, capsys, no_training, how):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    _damage(out / "checkpoint.pt", how)
    damaged = (out / "checkpoint.pt").read_bytes()
    assert main(["train", "--config", _config(tmp_path), "--no-progress"]) == 2
    assert re.search("is damaged|not a checkpoint of plain tensors", _one_error_line(capsys))
    assert (out / "checkpoint.pt").read_bytes() == damaged


def test_resume_refusal_names_the_changed_key_and_both_values(trained, tmp_path, capsys, no_training):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    assert main(["train", "--config", _config(tmp_path, **_trainer(noise=0.5, lr=0.01))]) == 2
    err = _one_error_line(capsys)
    assert "trainer.lr: checkpoint 0.001, now 0.01; trainer.noise: checkpoint 0.0, now 0.5" in err


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
    bad.write_text("[" * 100000)  # nested past the parser's recursion limit
    assert main(["train", "--config", str(bad)]) == 2
    assert "not valid JSON" in _one_error_line(capsys)


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
    model = runs.load_sample(str(target))  # family and width recorded in the file
    assert model.conv1.out_channels == 2 and not model.training
    plain = named_family("convnet", full_width=4, num_classes=4).build(2)
    plain.load_state_dict(torch.load(target, weights_only=True)["state_dict"])
    assert main(["sample", "--checkpoint", str(out / "checkpoint.pt"), "--width", "7", "--out",
                 str(tmp_path / "w7.pt")]) == 2
    assert not os.path.exists(tmp_path / "w7.pt")
    assert "builds widths 1..4 (4 values), got 7" in capsys.readouterr().err
    before = (out / "checkpoint.pt").read_bytes()
    assert main(["train", "--config", _config(tmp_path, full_width=3), "--no-progress"]) == 2  # not the same run
    assert "full_width: checkpoint 4, now 3" in capsys.readouterr().err
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
    assert saved["neumeta_all_widths"]["width"] == [1, 2, 3, 4]  # NeuMeta at every width
    dense = dict(zip(saved["neumeta_all_widths"]["width"], saved["neumeta_all_widths"]["accuracy"]))
    assert all(dense[r["width"]] == r["accuracy"]["neumeta"] for r in saved["rows"])


def test_demo_never_trains_the_quarter_width_or_its_neighbours():
    family = named_family("resnet8_all", full_width=64)
    config = demo.DemoConfig()
    widths = demo.training_widths(config, family)
    assert min(widths) == 8 and max(widths) == 64
    assert {15, 16, 17}.isdisjoint(widths) and {14, 18} <= set(widths)
    narrow = demo.DemoConfig(trainer=TrainConfig(min_fraction=0.5))
    assert demo.training_widths(narrow, family) == list(range(32, 65))
    explicit = demo.DemoConfig(trainer=TrainConfig(widths=[64, 40]))
    assert demo.training_widths(explicit, family) == [64, 40]
    with pytest.raises(ConfigError, match="leave no training width"):
        demo.training_widths(demo.DemoConfig(trainer=TrainConfig(min_fraction=0.25), held_out=1.0), family)


def test_base_checkpoint_of_another_width_exits_2(tmp_path, capsys):
    wrong = tmp_path / "base.pt"
    torch.save(named_family("convnet", full_width=8, num_classes=4).build(8).state_dict(), wrong)
    assert main(["train", "--config", _config(tmp_path, base_checkpoint=str(wrong))]) == 2
    assert "does not fit convnet at width 4" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run")


def test_demo_unwritable_out_exits_2_before_the_work(tmp_path, capsys, monkeypatch):
    def started(*args, **kwargs):
        raise AssertionError("the demo's work started before --out was checked")
    monkeypatch.setattr(demo, "_job", started)
    (tmp_path / "file").write_text("")
    assert main(["demo", "--quick", "--jobs", "1", "--out", str(tmp_path / "file" / "demo"), "--no-progress"]) == 2
    assert "is a file, not a folder" in _one_error_line(capsys)


def _start_cli(*args, cwd, extra=""):
    """`python -m neumeta_fast ARGS` in a fresh process (after the Python lines `extra`), in `cwd`."""
    code = f"import sys\n{extra}\nfrom neumeta_fast.cli import main\nsys.exit(main({list(args)!r}))"
    return subprocess.Popen([sys.executable, "-c", code], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def test_train_is_reproducible_across_processes(tmp_path, monkeypatch):
    """Same config in a fresh process (its own random startup seed) and in this one (whose RNG earlier
    tests moved): bit-identical results."""
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder in folders:
        folder.mkdir()
        (folder / "run.json").write_text(open(_config(folder, out="run")).read())
    proc = _start_cli("train", "--config", "run.json", "--no-progress", cwd=folders[0])
    monkeypatch.chdir(folders[1])
    torch.rand(3)
    assert main(["train", "--config", "run.json", "--no-progress"]) == 0
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    a, b = (checkpoint.load(str(f / "run" / "checkpoint.pt")) for f in folders)
    assert checkpoint.digest(a) == checkpoint.digest(b)  # base model, INR, EMA, optimizer, RNG states
    assert (folders[0] / "run" / "log.csv").read_text() == (folders[1] / "run" / "log.csv").read_text()
    a, b = (json.loads((f / "run" / "metrics.json").read_text()) for f in folders)
    assert a.pop("provenance")["command_line"] != b.pop("provenance")["command_line"] and a == b


# Killed by SIGKILL while writing the step-4 checkpoint: after step 4 was logged, before the write ended.
_KILL_IN_SECOND_CHECKPOINT = """
import os, signal, torch
save, calls = torch.save, []
def dying_save(obj, fh):
    calls.append(1)
    if len(calls) == 2:
        fh.write(b"half a checkpoint")
        fh.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    save(obj, fh)
torch.save = dying_save
"""


def test_kill_9_loses_no_logged_step_leaves_no_temp_file_and_resumes_without_repeats(tmp_path, capsys):
    config = _config(tmp_path, **_trainer(steps=6))
    proc = _start_cli("train", "--config", config, "--no-progress", cwd=tmp_path, extra=_KILL_IN_SECOND_CHECKPOINT)
    proc.communicate(timeout=120)
    assert proc.returncode == -9
    out = tmp_path / "run"
    assert [r["step"] for r in csv.DictReader(open(out / "log.csv"))] == ["1", "2", "3", "4"]  # flushed per row
    orphans = [n for n in os.listdir(out) if n.startswith(".tmp-")]
    assert len(orphans) == 1 and "checkpoint.pt" in os.listdir(out)  # the step-2 checkpoint
    assert main(["train", "--config", config, "--no-progress"]) == 0
    assert "resumed" in capsys.readouterr().out and not orphans[0] in os.listdir(out)
    assert [r["step"] for r in csv.DictReader(open(out / "log.csv"))] == ["1", "2", "3", "4", "5", "6"]


class _Checked(Exception):
    """Raised in place of the work once `train` has checked a fuzzed config (the fuzz tests the checks)."""


# Per key: values that run in a second, a few of them wrong (out of range, wrong type).
_RUN_VALUES = {
    "dataset": ["synthetic", "digits", "cifar10", 3], "data_root": [None, "/nonexistent", 1],
    "train_size": [None, 1, 2, 16, 0, 10 ** 6], "model": ["convnet", "mlp", "lenet", "vae", "resnet8_all", "vgg"],
    "full_width": [1, 2, 4, 0, "4", 4.0], "task": ["classify", "vae", "regress"], "base_steps": [0, 1, 3, -1],
    "base_checkpoint": [None, "", "."], "eval_widths": [[], [1], [4, 2], [5], "12", [2.0]],
    "checkpoint_every": [0, 1, 2, -1], "out": ["run", "", 5], "trainer": [None, [], "x"],
}
_TRAINER_VALUES = {
    "steps": [0, 1, 3, -1, 2.0], "batch_size": [1, 2, 16, 0], "widths": [None, [4], [1, 4], [], [9], [True]],
    "min_fraction": [0.25, 1, 0.0, 2], "lr": [1e-3, 1.0, 0, float("inf")], "weight_decay": [0.0, 1.0, -1],
    "grad_clip": [1e-6, 10.0, 0], "ema_decay": [0.0, 0.9, 1.0], "schedule": ["cosine", "constant", "linear"],
    "warmup_steps": [0, 1, 5, -1], "ce_weight": [0, 1.0, -1], "reg_weight": [0, 1.0, -1],
    "recon_weight": [0, 100.0, -1], "recon": ["normalised", "reference", "l1"], "prefit_steps": [0, 1, -1],
    "prefit_lr": [1e-3, 0], "noise": [0.0, 0.5, 1.0, 5.0, -1, float("nan")],
    "noise_mode": ["channels", "reference", "all"], "ratio": [0.5, 1.0, 0.01, 0], "norm": [1, 64.0, 1e-3, 0, -1],
    "hidden_dim": [1, 4, 0], "num_layers": [1, 2, 0], "num_freqs": [0, 1, 3, -1, 40, [0, 2]],
    "mean_init": [True, False, 0], "eval_samples": [1, 3, 0], "bn_batches": [1, 2, 0], "seed": [0, 7, -1, 2 ** 63],
    "backend": ["auto", "torch", "fast"], "device": ["cpu", "auto", "gpu"],
}


def _changes(values: dict, extra=st.nothing()):
    """Up to three keys of `values`, each set to one of its values (or to an `extra` one)."""
    keys = st.lists(st.sampled_from(sorted(values)), unique=True, max_size=3)
    return keys.flatmap(lambda ks: st.fixed_dictionaries({k: st.sampled_from(values[k]) | extra for k in ks}))


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
                     max_leaves=4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(run=_changes(_RUN_VALUES, _JSON), trainer=_changes(_TRAINER_VALUES, _JSON))
def test_fuzzed_config_values_are_accepted_or_exit_2_with_one_line(tmp_path, capsys, monkeypatch, run, trainer):
    """Any JSON value for any key: `train` checks them all before working, or exits 2 with one line."""
    def checked(*args):
        prepare(*args)
        raise _Checked
    prepare = runs._prepare
    monkeypatch.setattr(runs, "_prepare", checked)
    monkeypatch.chdir(tmp_path)  # a fuzzed relative `out` resolves here; nothing is written
    config = _config(tmp_path, **{"trainer": {**TINY_TRAINER, **trainer}, **run})
    try:
        assert main(["train", "--config", config]) == 2
    except _Checked:
        event("accepted")
        return
    event("exit 2")
    _one_error_line(capsys)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(run=_changes({k: v for k, v in _RUN_VALUES.items() if k not in ("dataset", "data_root", "out")}),
       trainer=_changes(_TRAINER_VALUES))
def test_fuzzed_small_configs_train_or_exit_2_with_one_line(tmp_path_factory, capsys, run, trainer):
    """Real runs (a second each): every config trains to the end or exits 2 with one line."""
    folder = tmp_path_factory.mktemp("fuzz")
    config = _config(folder, **{"trainer": {**TINY_TRAINER, **trainer}, **run})
    if main(["train", "--config", config, "--no-progress"]) == 0:
        event("trained")
        assert (folder / "run" / "metrics.json").exists()
    else:
        event("exit 2")
        _one_error_line(capsys)


def test_resume_may_change_the_trainer_device(trained, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    state = checkpoint.load(str(out / "checkpoint.pt"))
    state["run"]["trainer"] = {**state["run"]["trainer"], "device": "cuda"}  # trained on a GPU machine
    checkpoint.save(state, str(out / "checkpoint.pt"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", "--config", _config(tmp_path), "--no-progress"]) == 0
    assert "resumed" in capsys.readouterr().out


# -- help texts ---------------------------------------------------------------------------------

def _subparsers():
    import argparse
    from neumeta_fast.cli import _parser
    parser = _parser()
    choices = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    return parser, choices


def test_every_option_has_help():
    parser, subs = _subparsers()
    for name, sub in [("(top)", parser), *subs.items()]:
        missing = [a.dest for a in sub._actions if not a.help]
        assert not missing, f"{name}: options without help: {missing}"


def test_train_help_lists_every_config_key_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for cls in (runs.RunConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            assert f"  {f.name} (default {json.dumps(default)}): " in text, f.name


def test_sample_help_says_the_width_is_a_channel_count_and_how_to_load(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "absolute channel count" in text and "load_sample(" in text and '["state_dict"]' in text


def test_load_sample_refuses_other_files(tmp_path):
    path = tmp_path / "plain.pt"
    checkpoint.save({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ConfigError, match="not a file written by `sample`"):
        runs.load_sample(str(path))


def test_train_reports_the_base_model_and_flags_untrained_widths(tmp_path, capsys):
    config = _config(tmp_path, eval_widths=[4, 1], trainer={**TINY_TRAINER, "min_fraction": 0.5})
    assert main(["train", "--config", config, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"base model \(width 4\): accuracy \d+\.\d\d%", out)
    assert re.search(r"generated width 1: accuracy .*\(outside the trained widths 2\.\.4\)", out)
    assert re.search(r"generated width 4: accuracy \S+, nll \S+\n", out)  # trained: no flag
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["outside_trained_range"] == [1] and "accuracy" in metrics["base"]
    assert metrics["provenance"]["torch_version"] == torch.__version__


def test_paper_config_parses_to_the_papers_setting():
    path = os.path.join(os.path.dirname(__file__), "..", "configs", "cifar10_resnet20_paper.json")
    run = runs.RunConfig.from_file(path)
    trainer = TrainConfig.from_dict(run.trainer)
    family = runs._family(run)
    assert (run.dataset, run.model, run.full_width) == ("cifar10", "resnet20", 64)
    assert trainer.training_widths(family) == list(range(32, 65))
    assert (trainer.hidden_dim, trainer.num_layers, trainer.num_freqs, trainer.norm) == (512, 8, 32, 64)
    assert (trainer.noise, trainer.noise_mode, trainer.batch_size) == (1.0, "reference", 64)


# -- the demo's output folders, progress and provenance -------------------------------------------

def test_quick_and_full_demo_write_to_their_own_folders(monkeypatch):
    outs = []
    monkeypatch.setattr(demo, "run", lambda config, out, **kwargs: outs.append(out))
    assert main(["demo", "--quick"]) == 0 and main(["demo"]) == 0
    assert outs == [os.path.join("out", "demo-quick"), os.path.join("out", "demo")]


def _tiny_demo(seeds=1):
    return demo.DemoConfig(seeds=seeds, full_width=4, train_size=100, base_steps=5, trainer=TrainConfig(**TINY_TRAINER))


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    """A finished tiny demo with progress on (stdout not a terminal: plain lines): its folder and output."""
    pytest.importorskip("sklearn")
    out = tmp_path_factory.mktemp("demo")
    lines = []
    results = demo.run(_tiny_demo(seeds=2), str(out), progress=True, echo=lines.append)
    return out, "\n".join(lines), results


def test_demo_prints_its_plan_progress_and_log(tiny_demo):
    out, text, _ = tiny_demo
    first = text.splitlines()[0]
    assert first.startswith("demo: 2 seed(s) x 2 jobs") and "widths 4/3/2/1" in first
    assert re.search(r"expected duration: about \d+ s \(measured here", text)
    assert re.search(r"100% \(\d+/\d+ steps\), \d+ s elapsed", text)
    assert "seed 1: NeuMeta job done" in text and "the plot " + str(out / "accuracy_vs_width.png") in text
    log = (out / "log.txt").read_text().splitlines()
    assert log and all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", line) for line in log)
    assert any("100% (" in line for line in log)


def test_results_carry_provenance_and_per_seed_values(tiny_demo):
    out, _, _ = tiny_demo
    saved = json.loads((out / "results.json").read_text())
    prov = saved["provenance"]
    assert set(prov) >= {"package_version", "git_commit", "torch_version", "device", "date", "command_line"}
    assert prov["torch_version"] == torch.__version__ and prov["device"].startswith("cpu")
    assert saved["seeds"] == 2 and saved["seed_values"] == [0, 1]
    for row in saved["rows"]:
        for method, values in row["accuracy_per_seed"].items():
            assert len(values) == 2 and row["accuracy"][method] == pytest.approx(sum(values) / 2)
    assert len(saved["neumeta_all_widths"]["accuracy_per_seed"]) == 2
    text = json.dumps(saved)
    assert text.count('"min_fraction"') == 1  # one key, one meaning: the trainer's smallest trained fraction


def test_one_seed_table_has_no_spread():
    rows = [{"width": 4, "compression": 0.0, "seen_in_training": True,
             "accuracy": dict.fromkeys(demo.METHODS, 0.5), "accuracy_std": dict.fromkeys(demo.METHODS, 0.0),
             "accuracy_interval95": dict.fromkeys(demo.METHODS, [0.5, 0.5])}]
    one = {"metric": "accuracy", "seeds": 1, "rows": rows, "recon_rel_error": {"smoothed": 0.5, "no_smoothing": 0.6},
           "paired_neumeta_minus_individual": []}
    assert "±" not in demo.table(one) and "50.00" in demo.table(one)
    assert "50.00 ± 0.00 [50.0, 50.0]" in demo.table({**one, "seeds": 2})


def test_multi_seed_table_has_intervals_and_the_paired_unseen_comparison(tiny_demo):
    _, _, results = tiny_demo
    unseen = [row for row in results["rows"] if not row["seen_in_training"]]
    assert unseen and [p["width"] for p in results["paired_neumeta_minus_individual"]] == [r["width"] for r in unseen]
    for row, pair in zip(unseen, results["paired_neumeta_minus_individual"]):
        per_seed = row["accuracy_per_seed"]
        diffs = [a - b for a, b in zip(per_seed["neumeta"], per_seed["individual"])]
        assert pair["mean"] == pytest.approx(sum(diffs) / len(diffs))
        low, high = pair["interval95"]
        assert low <= pair["mean"] <= high
    for row in results["rows"]:
        for method, (low, high) in row["accuracy_interval95"].items():
            assert low <= row["accuracy"][method] <= high
    text = demo.table(results)
    assert "95% t-interval" in text and "paired by seed" in text


def test_demo_says_when_it_replaces_earlier_results(tiny_demo):
    out, _, _ = tiny_demo
    lines = []
    demo.run(_tiny_demo(), str(out), progress=False, echo=lines.append)
    assert any("holds the results of an earlier run" in line and "replaces them" in line for line in lines)
