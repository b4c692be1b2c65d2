"""Multi-seed training: determinism, resume, checksums, manifest, and the CLI end to end."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convergent import ConvergentError, CorruptFileError
from convergent._io import sha256_file
from convergent.cli import main
from convergent.data import load_dataset
from convergent.train import (
    TrainConfig,
    default_config,
    load_weights,
    load_zoo,
    train_zoo,
    weights_digest,
)

TINY = {"arch": "convnet", "model_kwargs": {"width": 0.25}}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", subset=240)


def _config(epochs=2):
    return TrainConfig(epochs=epochs, batch_size=32, lr=0.02)


def _train(out, dataset, seeds=(0, 1), **kw):
    args = {**TINY, "config": _config(), "progress": False, **kw}
    return train_zoo(out, dataset=dataset, seeds=seeds, **args)


def test_same_seed_and_settings_give_bit_identical_weights(tmp_path, digits):
    a = _train(tmp_path / "a", digits)
    b = _train(tmp_path / "b", digits)
    for rec_a, rec_b in zip(a.nets, b.nets):
        assert rec_a.sha256 == rec_b.sha256
        assert sha256_file(a.path / rec_a.checkpoint) == sha256_file(b.path / rec_b.checkpoint)
    # different seeds give different nets
    assert a.nets[0].sha256 != a.nets[1].sha256


def test_manifest_records_everything_about_each_net(tmp_path, digits):
    zoo = _train(tmp_path / "zoo", digits)
    manifest = json.loads((tmp_path / "zoo" / "manifest.json").read_text())
    assert manifest["format"] == "convergent-zoo"
    assert manifest["settings"]["arch"] == "convnet"
    assert manifest["dataset"]["name"] == "digits"
    net = manifest["nets"][0]
    for key in (
        "name",
        "arch",
        "kwargs",
        "seeds",
        "dataset",
        "epochs",
        "optimizer",
        "train_accuracy",
        "train_loss",
        "test_accuracy",
        "test_loss",
        "checkpoint",
        "sha256",
        "history",
    ):
        assert key in net, key
    assert net["kwargs"] == {"width": 0.25}
    assert net["seeds"] == {"init": 0, "order": 0}
    assert net["optimizer"]["lr"] == 0.02 and net["optimizer"]["name"] == "sgd"
    assert len(net["history"]) == 2
    assert net["sha256"] == sha256_file(tmp_path / "zoo" / net["checkpoint"])
    # the recorded accuracy is what the stored weights give
    model = zoo.model("seed1")
    with torch.no_grad():
        acc = (model(digits.test_images).argmax(1) == digits.test_labels).float().mean().item()
    assert acc == pytest.approx(zoo.record("seed1").test_accuracy)


def test_vary_controls_init_and_data_order(tmp_path, digits):
    both = _train(tmp_path / "both", digits, vary=("init", "order"), seeds=(3,))
    assert both.nets[0].seeds == {"init": 3, "order": 3}
    order_only = _train(tmp_path / "order", digits, vary=("order",), seeds=(1, 2))
    assert [n.seeds for n in order_only.nets] == [{"init": 0, "order": 1}, {"init": 0, "order": 2}]
    # same init, different data order: the nets still end up different
    assert order_only.nets[0].sha256 != order_only.nets[1].sha256


def test_interrupted_training_resumes_to_identical_weights(tmp_path, digits):
    reference = _train(tmp_path / "ref", digits, config=_config(epochs=3))

    class Interrupt(Exception):
        pass

    def stop_in_second_net(name, epoch, metrics):
        if name == "seed1" and epoch == 2:
            raise Interrupt

    out = tmp_path / "resumed"
    with pytest.raises(Interrupt):
        _train(out, digits, config=_config(epochs=3), callback=stop_in_second_net)
    # the first net is finished and recorded, the second left a partial checkpoint at epoch 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert [n["name"] for n in manifest["nets"]] == ["seed0"]
    assert (out / "seed1.partial.safetensors").is_file()

    epochs_run = []
    resumed = _train(
        out,
        digits,
        config=_config(epochs=3),
        callback=lambda name, epoch, m: epochs_run.append((name, epoch)),
    )
    assert epochs_run == [("seed1", 3)]  # seed0 skipped, seed1 continued from its last epoch
    assert not (out / "seed1.partial.safetensors").exists()
    assert [n.sha256 for n in resumed.nets] == [n.sha256 for n in reference.nets]
    assert resumed.record("seed1").history == reference.record("seed1").history


def test_rerun_adds_new_seeds_and_refuses_other_settings(tmp_path, digits):
    out = tmp_path / "zoo"
    _train(out, digits, seeds=(0,))
    zoo = _train(out, digits, seeds=(0, 5))
    assert zoo.names == ["seed0", "seed5"]
    with pytest.raises(ConvergentError, match="different settings .*optimizer.*another output"):
        _train(out, digits, seeds=(0,), config=_config(epochs=1))
    assert load_zoo(out).names == ["seed0", "seed5"]  # nothing lost


def test_tampered_truncated_or_missing_checkpoint_is_refused(tmp_path, digits):
    zoo = _train(tmp_path / "zoo", digits)
    ckpt = zoo.path / zoo.nets[0].checkpoint
    data = bytearray(ckpt.read_bytes())
    data[-5] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="does not match the manifest: SHA-256"):
        load_zoo(zoo.path)
    with pytest.raises(CorruptFileError, match="SHA-256"):
        zoo.model("seed0")
    ckpt.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(CorruptFileError, match="changed or truncated"):
        load_zoo(zoo.path)
    ckpt.unlink()
    with pytest.raises(CorruptFileError, match="is missing"):
        load_zoo(zoo.path)
    # without verification the manifest still reads, and the other net still loads
    assert load_zoo(zoo.path, verify=False).model("seed1") is not None


def test_load_zoo_errors(tmp_path):
    with pytest.raises(ConvergentError, match="is not a zoo"):
        load_zoo(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(ConvergentError, match="not a convergent zoo manifest"):
        load_zoo(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "convergent-zoo", "nets": [{"name": 1}]}')
    with pytest.raises(CorruptFileError, match="malformed net record"):
        load_zoo(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="not valid JSON"):
        load_zoo(tmp_path)


def test_zoo_lookup_errors(tmp_path, digits):
    zoo = _train(tmp_path / "zoo", digits, seeds=(0,))
    with pytest.raises(ValueError, match="No net named 'seed9'.*seed0"):
        zoo.model("seed9")
    with pytest.raises(ConvergentError, match="was trained with different settings"):
        _train(tmp_path / "zoo", digits, seeds=(0,), arch="mlp", model_kwargs={})
    # a foreign manifest in the output directory is not overwritten
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text('{"format": "something"}')
    with pytest.raises(ConvergentError, match="not a convergent zoo manifest"):
        _train(tmp_path / "other", digits)


def test_user_checkpoints_load_without_unpickling(tmp_path, digits):
    zoo = _train(tmp_path / "zoo", digits, seeds=(0,))
    model = zoo.model("seed0")
    pt = tmp_path / "w.pt"
    torch.save(model.state_dict(), pt)
    fresh = zoo.build("seed0")
    load_weights(fresh, pt)
    assert weights_digest(fresh) == weights_digest(model)
    # a pickle with arbitrary objects is refused by weights_only=True
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as fh:
        pickle.dump({"x": object()}, fh)
    with pytest.raises(CorruptFileError, match="weights_only=True"):
        load_weights(zoo.build("seed0"), evil)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 20)
    with pytest.raises(CorruptFileError, match="not a readable safetensors checkpoint"):
        load_weights(zoo.build("seed0"), bad)
    torch.save({"fc9.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CorruptFileError, match="does not fit the model"):
        load_weights(zoo.build("seed0"), tmp_path / "other.pt")
    state = model.state_dict()
    state["fc8.bias"] = torch.zeros(3)
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(CorruptFileError, match="has shape \\(3,\\)"):
        load_weights(zoo.build("seed0"), tmp_path / "shape.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CorruptFileError, match="does not hold a state dict"):
        load_weights(zoo.build("seed0"), tmp_path / "list.pt")


def test_corrupt_partial_checkpoint_is_reported(tmp_path, digits):
    out = tmp_path / "zoo"
    out.mkdir()
    (out / "seed0.partial.safetensors").write_bytes(b"garbage")
    with pytest.raises(CorruptFileError, match="partial checkpoint .* Delete it"):
        _train(out, digits, seeds=(0,))


def test_divergence_is_reported_with_the_fix(tmp_path, digits):
    with pytest.raises(ConvergentError, match="diverged.*Lower the learning rate"):
        _train(tmp_path / "zoo", digits, seeds=(0,), config=TrainConfig(epochs=2, lr=1e6))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "'epochs' parameter of TrainConfig"),
        ({"batch_size": 1.5}, "'batch_size' parameter of TrainConfig"),
        ({"lr": 0.0}, "'lr' parameter of TrainConfig"),
        ({"momentum": 1.0}, "'momentum' parameter of TrainConfig"),
        ({"weight_decay": -1.0}, "'weight_decay' parameter of TrainConfig"),
    ],
)
def test_train_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_default_config_and_zoo_argument_errors(tmp_path, digits):
    assert default_config("digits").epochs == 20
    assert default_config("digits", lr=0.1, epochs=None).lr == 0.1
    with pytest.raises(ValueError, match="Unknown training settings"):
        default_config("digits", lrr=0.1)
    with pytest.raises(ValueError, match="'vary' parameter must name one or more"):
        _train(tmp_path / "z", digits, vary=("weights",))
    with pytest.raises(ValueError, match="at least one seed"):
        _train(tmp_path / "z", digits, seeds=())
    with pytest.raises(ValueError, match="has duplicates"):
        _train(tmp_path / "z", digits, seeds=(1, 1))


def test_default_digits_convnet_trains_well(tmp_path):
    """The defaults train the paper-like convnet on digits to high test accuracy."""
    dataset = load_dataset("digits")
    zoo = train_zoo(tmp_path / "zoo", dataset=dataset, seeds=(0,), progress=False)
    assert zoo.nets[0].test_accuracy >= 0.95


def test_cli_train_and_layers_in_process(tmp_path, capsys):
    out = tmp_path / "zoo"
    rc = main(
        [
            "train",
            "--dataset",
            "digits",
            "--subset",
            "200",
            "--epochs",
            "1",
            "--seeds",
            "0",
            "1",
            "--arch",
            "mlp",
            "--set",
            "width=16",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "seed0" in text and "seed1" in text and "test acc" in text
    assert load_zoo(out).nets[0].kwargs == {"width": 16}
    assert main(["layers", "--arch", "convnet"]) == 0
    text = capsys.readouterr().out
    assert "conv5" in text and "fc8" in text
    assert main(["layers", "--arch", "resnet", "--input-shape", "3,32,32", "--all", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert any(r["name"] == "layer2.0.shortcut.conv" for r in rows)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["train", "--dataset", "nope"], "nope"),
        (["train", "--set", "width"], "--set expects KEY=VALUE"),
        (["train", "--arch", "alexnet", "--epochs", "1", "--subset", "50"], "Unknown architecture"),
        (["layers", "--input-shape", "1,28"], "--input-shape expects C,H,W"),
    ],
)
def test_cli_errors_are_one_clear_line(argv, match, capsys, tmp_path):
    assert main([*argv, *(["--out", str(tmp_path / "z")] if argv[0] == "train" else [])]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    assert pytest.importorskip("re").search(match, err)


def test_console_script_end_to_end(tmp_path):
    """The installed `convergent` command trains a tiny zoo (a real subprocess)."""
    exe = Path(sys.executable).with_name("convergent")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "convergent.cli"]
    env = {**os.environ, "CONVERGENT_NO_PROGRESS": "1"}
    result = subprocess.run(
        [
            *cmd,
            "train",
            "--dataset",
            "digits",
            "--subset",
            "150",
            "--epochs",
            "1",
            "--seeds",
            "0",
            "--set",
            "width=0.25",
            "--threads",
            "1",
            "--out",
            str(tmp_path / "zoo"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "seed0" in result.stdout
    assert load_zoo(tmp_path / "zoo").names == ["seed0"]


def test_unusable_device_is_refused_before_anything_is_written(tmp_path, digits):
    with pytest.raises(ValueError, match="Unknown device 'gpu' \\(for an NVIDIA GPU, use cuda\\)"):
        _train(tmp_path / "zoo", digits, device="gpu")
    with pytest.raises(TypeError, match="'width' parameter of ConvNet .*Got 'abc' instead"):
        _train(tmp_path / "zoo", digits, model_kwargs={"width": "abc"})
    assert not (tmp_path / "zoo").exists()


def test_console_script_finds_a_user_model_in_the_working_directory(tmp_path):
    """`convergent layers --arch mymodels:make` from the directory holding mymodels.py, without
    PYTHONPATH pointing there (the installed script does not put the working directory on the
    path; convergent does, as `python -m` would)."""
    exe = Path(sys.executable).with_name("convergent")
    if not exe.exists():
        pytest.skip("the console script is not installed in this environment")
    (tmp_path / "mymodels.py").write_text(
        "from torch import nn\n\n"
        "def make(in_channels=1, input_size=8, num_classes=10):\n"
        "    return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.ReLU(), nn.Flatten(),\n"
        "                         nn.LazyLinear(num_classes))\n"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src, "CONVERGENT_NO_PROGRESS": "1"}
    result = subprocess.run(
        [str(exe), "layers", "--arch", "mymodels:make", "--input-shape", "1,8,8"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "ReLU" in result.stdout and "No module named" not in result.stderr


class _HasModelChild(torch.nn.Module):
    """A net whose own top-level submodule is called ``model`` (keys ``model.weight`` ...)."""

    def __init__(self):
        super().__init__()
        self.model = torch.nn.Linear(3, 4)
        self.head = torch.nn.Linear(4, 2)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_load_weights_strips_a_wrapper_prefix_only_when_the_keys_need_it(tmp_path, suffix):
    from safetensors.torch import save_file

    def write(state, name):
        path = tmp_path / f"{name}{suffix}"
        state = {k: v.contiguous() for k, v in state.items()}
        save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
        return path

    torch.manual_seed(0)
    net = _HasModelChild()
    # its own save_file(state_dict()) loads back (keys 'model.weight' are its own)
    fresh = load_weights(_HasModelChild(), write(net.state_dict(), "own"))
    assert weights_digest(fresh) == weights_digest(net)
    # a training wrapper's file: every key prefixed with 'model.'
    wrapped = {f"model.{k}": v for k, v in net.state_dict().items()}
    fresh = load_weights(_HasModelChild(), write(wrapped, "wrapped"))
    assert weights_digest(fresh) == weights_digest(net)
    plain = torch.nn.Linear(3, 4)
    prefixed = {f"model.{k}": v for k, v in plain.state_dict().items()}
    fresh = load_weights(torch.nn.Linear(3, 4), write(prefixed, "plain"))
    assert weights_digest(fresh) == weights_digest(plain)
    # a prefix on some keys only is not a wrapper's: the file does not fit
    mixed = dict(net.state_dict())
    mixed["model.head.weight"] = mixed.pop("head.weight")
    with pytest.raises(CorruptFileError, match="does not fit the model.*model.head.weight"):
        load_weights(_HasModelChild(), write(mixed, "mixed"))
