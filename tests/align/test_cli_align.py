"""`convergent align` and `convergent interpolate` end to end on a tiny digits zoo, through a parser
built the way ``convergent.cli`` builds it, and the library functions behind them."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
import torch

from convergent._errors import ConvergentError
from convergent.align import apply_permutation_file, load_permutation
from convergent.align._run import align_pair, interpolate_run
from convergent.cli._align import add_commands
from convergent.data import load_dataset
from convergent.models import available_architectures
from convergent.report._build import merge_table
from convergent.results import load_interpolation, merge_rows
from convergent.train import TrainConfig, evaluate, train_zoo
from convergent.zoo._refs import load_dataset_for, load_net, load_pair, locate_net


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    train_zoo(
        out,
        arch="mlp",
        model_kwargs={"width": 24, "depth": 3},
        dataset=load_dataset("digits", subset=500),
        seeds=(0, 1, 2),
        config=TrainConfig(epochs=4, batch_size=32, lr=0.05),
        progress=False,
    )
    return out


def _run(argv, capsys=None):
    parser = argparse.ArgumentParser(prog="convergent")
    sub = parser.add_subparsers(dest="command")
    add_commands(sub)
    args = parser.parse_args(argv)
    code = args.func(args)
    return code, (capsys.readouterr().out if capsys else "")


def test_check_passes_for_every_builtin_architecture_and_a_user_model(capsys):
    code, out = _run(["align", "--check"], capsys)
    assert code == 0
    builtin = available_architectures()
    assert set(builtin) >= {"convnet", "mlp", "resnet", "vit"}
    for arch in builtin:
        assert f"\n{arch} " in out
    assert out.count(" yes ") == len(builtin) and "outputs unchanged within 1e-05" in out
    code, out = _run(
        ["align", "--check", "--model", "tests.helpers.user_models:tiny", "--input-shape", "2,6,6"],
        capsys,
    )
    assert code == 0 and "tests.helpers.user_models:tiny" in out and " yes " in out
    code, out = _run(
        ["align", "--check", "--model", "tests.helpers.user_models:fixed_shape"], capsys
    )
    assert code == 0 and " yes " in out


def test_check_of_a_trained_net_and_argument_refusals(zoo, capsys):
    code, out = _run(["align", "--check", str(zoo / "seed1")], capsys)
    assert code == 0 and "seed1" in out and " yes " in out
    with pytest.raises(ValueError, match="--input-shape expects C,H,W"):
        _run(["align", "--check", "--input-shape", "1,8"])
    with pytest.raises(ValueError, match="Choose one of --check and --merge"):
        _run(["align", "--check", "--merge", str(zoo)])
    with pytest.raises(ValueError, match="--check takes at most one net. Got 2"):
        _run(["align", "--check", str(zoo / "seed0"), str(zoo / "seed1")])
    with pytest.raises(ValueError, match="--merge takes one zoo directory. Got 2"):
        _run(["align", "--merge", str(zoo), str(zoo)])
    with pytest.raises(ValueError, match="align takes two nets A B .* Got 1 arguments"):
        _run(["align", str(zoo / "seed0")])


@pytest.mark.parametrize("method", ["weight", "activation"])
def test_align_writes_the_permuted_model_and_a_permutation_file_that_reproduces_it(
    zoo, tmp_path, capsys, method
):
    out = tmp_path / "aligned"
    code, text = _run(
        ["align", str(zoo / "seed0"), str(zoo / "seed1"), "--method", method, "--out", str(out)],
        capsys,
    )
    assert code == 0 and "permutation:" in text
    ds = load_dataset("digits", subset=500)
    b = load_net(locate_net(zoo / "seed1"), ds).model
    aligned = load_net(locate_net(out / "aligned.safetensors"), ds)  # arch from its metadata
    assert aligned.arch == "mlp" and aligned.kwargs == {"width": 24, "depth": 3}
    x = ds.test_images[:50]
    with torch.no_grad():
        torch.testing.assert_close(aligned.model(x), b(x), atol=1e-5, rtol=1e-5)
    perm = load_permutation(out / "permutation.safetensors")
    assert perm.info["method"] == method and perm.info["reference"]["name"] == "seed0"
    again = apply_permutation_file(b, out / "permutation.safetensors", x[:2])
    for key, value in aligned.model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value)
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) == {"aligned.safetensors", "permutation.safetensors"}


def test_activation_matching_from_a_statistics_directory_equals_collecting_it_here(zoo, tmp_path):
    from convergent.record import collect_run

    stats = tmp_path / "stats"
    collect_run(stats, zoo=zoo, split="train", exact=True, topk=None, max_inputs=300)
    net_a, net_b, ds = load_pair(
        zoo / "seed0", zoo / "seed2", arch=None, model_kwargs=None, dataset=None, data_dir=None
    )
    from convergent.align import find_permutation_groups

    images = ds.train_images[:300]
    spec = find_permutation_groups(net_a.model, images[:2])
    here = align_pair(net_a, net_b, spec, "activation", images=images)
    there = align_pair(net_a, net_b, spec, "activation", images=images, stats=stats)
    for g in spec.groups:
        assert np.array_equal(here.perms[g], there.perms[g])
    net_b.name = "seed7"
    with pytest.raises(ConvergentError, match="hold no net named 'seed7'"):
        align_pair(net_a, net_b, spec, "activation", images=images, stats=stats)
    with pytest.raises(ValueError, match="'method' parameter must be one of"):
        align_pair(net_a, net_b, spec, "lottery", images=images)
    with pytest.raises(ValueError, match="'similarity' parameter must be one of"):
        align_pair(net_a, net_b, spec, "activation", images=images, similarity="l1")


def test_interpolate_end_to_end_writes_json_csv_png_with_the_models_own_endpoints(
    zoo, tmp_path, capsys
):
    out = tmp_path / "interp"
    code, text = _run(
        [
            "interpolate",
            str(zoo / "seed0"),
            str(zoo / "seed1"),
            "--align",
            "weight",
            "--repair",
            "repair",
            "--points",
            "5",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0
    assert "loss barrier = max_alpha L(alpha) - ((1 - alpha) L(0) + alpha L(1))" in text
    assert "accuracy barrier = max_alpha ((1 - alpha) acc(0) + alpha acc(1)) - acc(alpha)" in text
    doc = json.loads((out / "interpolation.json").read_text())
    assert doc["order"] == ["naive", "aligned (weight)", "aligned (weight) + repair"]
    assert set(doc["curves"]) == set(doc["order"])
    ds = load_dataset("digits", subset=500)
    zoo_a = load_net(locate_net(zoo / "seed0"), ds).model
    zoo_b = load_net(locate_net(zoo / "seed1"), ds).model
    splits = {"train": (ds.train_images, ds.train_labels), "test": ds.split("test")}
    for split, (x, y) in splits.items():
        loss_a, acc_a = evaluate(zoo_a, x, y)
        loss_b, acc_b = evaluate(zoo_b, x, y)
        assert doc["endpoints"]["seed0"][split] == {"loss": loss_a, "accuracy": acc_a}
        assert doc["endpoints"]["seed1"][split] == {"loss": loss_b, "accuracy": acc_b}
        for label, curve in doc["curves"].items():
            values = curve["curves"][split]
            assert values["loss"][0] == loss_a and values["accuracy"][0] == acc_a
            # B itself (naive) or B permuted (the same function up to rounding)
            exact = label == "naive"
            assert values["loss"][-1] == (loss_b if exact else pytest.approx(loss_b, abs=1e-5))
            assert values["accuracy"][-1] == acc_b
            assert len(values["loss"]) == 5 and curve["barriers"][split]["loss"] >= -1e-9
    with open(out / "interpolation.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 * 2 * 5
    assert rows[0]["curve"] == "naive" and float(rows[0]["alpha"]) == 0.0
    assert float(rows[0]["loss"]) == pytest.approx(
        doc["curves"]["naive"]["curves"]["train"]["loss"][0]
    )
    assert (out / "interpolation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_barrier_of_a_net_with_itself_is_zero(zoo, tmp_path):
    run = interpolate_run(zoo / "seed2", zoo / "seed2", tmp_path / "self", align="weight", points=5)
    assert list(run.curves) == ["naive", "aligned (weight)"]
    for curve in run.curves.values():
        for split in ("train", "test"):
            assert curve.barriers[split]["loss"] == pytest.approx(0.0, abs=1e-9)
            assert curve.barriers[split]["accuracy"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="'align' parameter must be one of"):
        interpolate_run(zoo / "seed0", zoo / "seed1", tmp_path, align="rebasin")
    with pytest.raises(ValueError, match="'repair' parameter must be one of"):
        interpolate_run(zoo / "seed0", zoo / "seed1", tmp_path, repair_mode="fix")


def test_merge_a_zoo_from_the_command_line(zoo, tmp_path, capsys):
    out = tmp_path / "merged.safetensors"
    code, text = _run(
        ["align", str(zoo), "--merge", "--repair", "repair", "--out", str(out)], capsys
    )
    assert code == 0 and "merged: weight -> seed0 (+repair)" in text and "naive average" in text
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["nets"] == ["seed0", "seed1", "seed2"] and report["repair"] == "repair"
    ds = load_dataset("digits", subset=500)
    merged = load_net(locate_net(out), ds).model
    loss, acc = evaluate(merged, *ds.split("test"))
    assert report["evaluation"]["test"] == {"loss": loss, "accuracy": acc}


def test_a_merge_beside_an_interpolation_is_read_by_the_results_and_shown_by_the_report(
    zoo, tmp_path, capsys
):
    interp = tmp_path / "interpolation"
    interpolate_run(zoo / "seed0", zoo / "seed1", interp, align="weight", points=3)
    assert load_interpolation(interp).merge is None
    code, text = _run(
        [
            "align",
            str(zoo),
            "--merge",
            "--members",
            "seed0,seed2",
            "--method",
            "activation",
            "--repair",
            "repair",
            "--out",
            str(interp / "merged.safetensors"),
        ],
        capsys,
    )
    assert code == 0 and "merged: activation -> seed0 (+repair)" in text
    merge = load_interpolation(interp).merge
    assert merge["nets"] == ["seed0", "seed2"] and list(merge["members"]) == ["seed0", "seed2"]
    rows = merge_rows(merge)
    assert [r["name"] for r in rows] == ["seed0", "seed2", "naive average", "merged", "ensemble"]
    assert rows[3]["test_accuracy"] == merge["evaluation"]["test"]["accuracy"]
    table = merge_table(merge)["table"]["rows"]
    assert table[3][3] == f"{100 * merge['evaluation']['test']['accuracy']:.1f}"
    (interp / "merged.json").write_text('{"format": "something-else"}')
    with pytest.raises(ConvergentError, match="not a convergent merge file"):
        load_interpolation(interp)


def test_naming_nets_and_their_data(zoo, tmp_path):
    with pytest.raises(
        ValueError, match=r"is a zoo; name one of its nets as ZOO/NET.*seed0, seed1"
    ):
        locate_net(zoo)
    with pytest.raises(FileNotFoundError, match="is a directory, not a checkpoint file"):
        locate_net(tmp_path)
    with pytest.raises(ValueError, match="has no net named 'seed5'"):
        locate_net(zoo / "seed5")
    with pytest.raises(FileNotFoundError, match="neither a checkpoint file nor ZOO/NET"):
        locate_net(tmp_path / "nope.safetensors")
    # a bare state dict: neither the architecture nor the dataset is known until named
    ds = load_dataset("digits", subset=500)
    state = load_net(locate_net(zoo / "seed0"), ds).model.state_dict()
    torch.save(state, tmp_path / "bare.pt")
    located = locate_net(tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="Which dataset were these nets trained on"):
        load_dataset_for([located], None, None)
    with pytest.raises(
        ValueError, match=r"architecture of .*bare.pt is unknown: name it with --model"
    ):
        load_net(located, ds)
    net = load_net(located, ds, arch="mlp", model_kwargs={"width": 24, "depth": 3})
    assert net.name == "bare" and torch.equal(
        net.model.fc1.linear.weight, state["fc1.linear.weight"]
    )
    # a one-layer MLP: a checkpoint of another architecture than the zoo's nets
    torch.save(
        {"fc1.weight": torch.zeros(10, 64), "fc1.bias": torch.zeros(10)}, tmp_path / "other.pt"
    )
    with pytest.raises(ConvergentError, match="have different architectures"):
        load_pair(
            zoo / "seed0",
            tmp_path / "other.pt",
            arch="mlp",
            model_kwargs={"width": 3, "depth": 1},
            dataset="digits",
            data_dir=None,
        )
