"""Re-running `train` on a zoo retrains exactly its missing or damaged nets, leaves the good ones
untouched, and lets the (deterministic) retrained net decide whether a disputed file or the
manifest record is wrong; a whole file is never deleted."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from convergent import ConvergentError, CorruptFileError
from convergent._io import sha256_file, write_json
from convergent.data import load_dataset
from convergent.train import TrainConfig, load_zoo, train_zoo
from convergent.zoo import checkpoint_bytes, checkpoint_metadata, write_zoo_manifest

OLD_NS = 1_500_000_000 * 10**9  # an mtime long before any test run


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", subset=120)


def _train(out, dataset, **kw):
    return train_zoo(
        out,
        arch="convnet",
        model_kwargs={"width": 0.25},
        dataset=dataset,
        seeds=(0, 1),
        config=TrainConfig(epochs=1, batch_size=32),
        progress=False,
        **kw,
    )


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("pristine") / "zoo"
    _train(out, digits)
    return out


@pytest.fixture
def zoo(pristine, tmp_path):
    """A fresh copy of the trained zoo whose files all carry an old modification time."""
    out = tmp_path / "zoo"
    shutil.copytree(pristine, out)
    for path in out.iterdir():
        os.utime(path, ns=(OLD_NS, OLD_NS))
    return out


def _manifest(out):
    return json.loads((out / "manifest.json").read_text())


def _untouched(path, data):
    return path.read_bytes() == data and path.stat().st_mtime_ns == OLD_NS


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_missing_or_damaged_net_is_restored_and_good_ones_untouched(zoo, pristine, digits, damage):
    seed0, seed1 = zoo / "seed0.safetensors", zoo / "seed1.safetensors"
    good0, good1 = seed0.read_bytes(), seed1.read_bytes()
    nets = _manifest(zoo)["nets"]
    if damage == "truncate":
        seed1.write_bytes(good1[: len(good1) // 3])
    elif damage == "flip":
        seed1.write_bytes(good1[:-9] + bytes([good1[-9] ^ 0x10]) + good1[-8:])
    else:
        seed1.unlink()
    with pytest.raises(CorruptFileError, match="Re-run the `convergent train` command that made"):
        load_zoo(zoo)

    lines, epochs = [], []
    _train(zoo, digits, log=lines.append, callback=lambda n, e, m: epochs.append(n))
    assert epochs == ["seed1"]  # exactly the damaged net was retrained
    state = {"truncate": "unreadable", "flip": "altered", "delete": "missing"}[damage]
    assert lines[0].startswith("net 'seed1' of the zoo at") and lines[0].endswith("retraining it.")
    assert lines[1].startswith("net 'seed1': restored. The retrained checkpoint has the recorded")
    assert seed1.read_bytes() == good1
    assert _untouched(seed0, good0)
    manifest = _manifest(zoo)
    assert manifest["nets"] == nets
    (event,) = manifest["repairs"]
    assert (event["net"], event["found"], event["outcome"]) == ("seed1", state, "restored")
    assert load_zoo(zoo).names == ["seed0", "seed1"]  # verified

    # the advice does not loop: once restored, a re-run changes nothing
    text = (zoo / "manifest.json").read_bytes()
    _train(zoo, digits, log=lines.append, callback=lambda n, e, m: epochs.append(n))
    assert epochs == ["seed1"] and len(lines) == 2
    assert (zoo / "manifest.json").read_bytes() == text


def test_repairs_are_reported_as_warnings_by_default(zoo, digits):
    (zoo / "seed0.safetensors").unlink()
    with pytest.warns(UserWarning) as caught:
        _train(zoo, digits)
    messages = [str(w.message) for w in caught]
    assert messages[0].endswith("seed0.safetensors is missing; retraining it.")
    assert messages[1].startswith("net 'seed0': restored.") and len(messages) == 2


def test_an_edited_checksum_corrects_the_record_and_keeps_the_file(zoo, digits):
    seed0 = zoo / "seed0.safetensors"
    good = seed0.read_bytes()
    manifest = _manifest(zoo)
    true_sha = manifest["nets"][0]["sha256"]
    manifest["nets"][0]["sha256"] = "0" * 64  # edited by hand: the manifest's own checksum breaks
    write_json(zoo / "manifest.json", manifest)
    with pytest.raises(
        CorruptFileError, match="manifest was edited after training and is the side"
    ):
        load_zoo(zoo)

    lines = []
    _train(zoo, digits, log=lines.append)
    assert "the checkpoint is right and the manifest was wrong" in lines[-1]
    assert _untouched(seed0, good)
    manifest = _manifest(zoo)
    assert manifest["nets"][0]["sha256"] == true_sha
    (event,) = manifest["repairs"]
    assert event["outcome"] == "record corrected" and event["previous"]["sha256"] == "0" * 64
    assert event["found"] == "intact"
    load_zoo(zoo)


def test_another_whole_checkpoint_in_its_place_is_set_aside_not_deleted(zoo, digits):
    seed0, seed1 = zoo / "seed0.safetensors", zoo / "seed1.safetensors"
    good0, good1 = seed0.read_bytes(), seed1.read_bytes()
    shutil.copyfile(seed1, seed0)
    with pytest.raises(CorruptFileError, match="its own metadata names net 'seed1'"):
        load_zoo(zoo)

    lines = []
    _train(zoo, digits, log=lines.append)
    assert seed0.read_bytes() == good0
    (event,) = _manifest(zoo)["repairs"]
    assert event["outcome"] == "file set aside and restored"
    aside = zoo / event["displaced"]
    assert aside.name == f"seed0.displaced-{sha256_file(seed1)[:12]}.safetensors"
    assert aside.read_bytes() == good1 and f"kept as {aside.name}" in lines[-1]
    load_zoo(zoo)


def test_a_retrained_net_that_differs_is_recorded_and_the_old_record_kept(zoo, digits):
    manifest = _manifest(zoo)
    true_sha = manifest["nets"][0]["sha256"]
    old = {**manifest["nets"][0], "sha256": "f" * 64, "test_accuracy": 0.123}
    manifest["nets"][0] = old  # as if trained elsewhere (another torch, another device)
    write_zoo_manifest(zoo / "manifest.json", manifest)
    (zoo / "seed0.safetensors").unlink()

    lines = []
    _train(zoo, digits, log=lines.append)
    assert "the new weights differ from the recorded ones" in lines[-1]
    manifest = _manifest(zoo)
    record = manifest["nets"][0]
    assert record["sha256"] == true_sha == sha256_file(zoo / "seed0.safetensors")
    assert record["test_accuracy"] != 0.123
    (event,) = manifest["repairs"]
    assert event["outcome"] == "replaced with a different net" and event["previous"] == old
    load_zoo(zoo)


def test_when_no_side_is_reproduced_nothing_changes(zoo, digits):
    seed0 = zoo / "seed0.safetensors"
    shutil.copyfile(zoo / "seed1.safetensors", seed0)
    manifest = _manifest(zoo)
    manifest["nets"][0]["sha256"] = "e" * 64
    write_zoo_manifest(zoo / "manifest.json", manifest)
    before = {p.name: p.read_bytes() for p in zoo.iterdir()}
    with pytest.raises(ConvergentError, match="gives a third SHA-256.*changed nothing"):
        _train(zoo, digits, log=lambda line: None)
    assert {p.name: p.read_bytes() for p in zoo.iterdir()} == before


def test_zoo_from_before_embedded_checksums_is_restored_byte_for_byte(zoo, digits):
    # rewrite the zoo as convergent wrote it before: no checksum in checkpoints or manifest
    manifest = _manifest(zoo)
    loaded = load_zoo(zoo)
    for rec in manifest["nets"]:
        path = zoo / rec["checkpoint"]
        meta = {k: v for k, v in checkpoint_metadata(path).items() if k != "tensors_sha256"}
        path.write_bytes(checkpoint_bytes(loaded.model(rec["name"]), meta, embed_checksum=False))
        rec["sha256"] = sha256_file(path)
    del manifest["nets_sha256"]
    write_json(zoo / "manifest.json", manifest)
    legacy = {p.name: p.read_bytes() for p in zoo.glob("*.safetensors")}

    (zoo / "seed1.safetensors").unlink()
    data = bytearray(legacy["seed0.safetensors"])
    data[-2] ^= 0x04
    (zoo / "seed0.safetensors").write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="predates embedded checksums"):
        load_zoo(zoo).model("seed0")

    lines = []
    _train(zoo, digits, log=lines.append)
    assert (zoo / "seed1.safetensors").read_bytes() == legacy["seed1.safetensors"]
    assert (zoo / "seed0.safetensors").read_bytes() == legacy["seed0.safetensors"]
    outcomes = [e["outcome"] for e in _manifest(zoo)["repairs"]]
    assert outcomes == ["file set aside and restored", "restored"]
    assert len(list(zoo.glob("seed0.displaced-*.safetensors"))) == 1
    assert _manifest(zoo)["nets"] == manifest["nets"]
    load_zoo(zoo)
