"""A checkpoint checked against its manifest record and against itself: every state, and messages
that say which side disagrees and never advise deleting a whole file."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from convergent import CorruptFileError
from convergent.zoo import (
    checkpoint_bytes,
    checkpoint_metadata,
    describe_check,
    inspect_checkpoint,
    manifest_edited,
    nets_sha256,
    save_checkpoint,
    tensors_sha256,
    verify_checkpoint,
    write_zoo_manifest,
)

META = {"name": "seed0", "arch": "mlp", "kwargs": {}, "seeds": {"init": 0, "order": 0}}


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    model[1].running_mean.normal_()
    return model


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "seed0.safetensors"
    sha = save_checkpoint(path, _model(), META)
    return path, sha


def test_saved_checkpoint_embeds_the_checksum_of_its_tensors(saved):
    path, sha = saved
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    check = inspect_checkpoint(path, sha)
    assert check.ok and not check.damaged and check.actual_sha256 == sha
    assert checkpoint_metadata(path)["tensors_sha256"] == tensors_sha256(load_file(str(path)))
    # deterministic bytes; the old format differs only by that metadata entry
    assert checkpoint_bytes(_model(), META) == path.read_bytes()
    assert checkpoint_bytes(_model(), META, embed_checksum=False) != path.read_bytes()


def test_tensors_checksum_sees_names_dtypes_shapes_and_values():
    base = {"a": torch.arange(6.0), "b": torch.tensor(3)}
    digest = tensors_sha256(base)
    assert digest == tensors_sha256({"b": torch.tensor(3), "a": torch.arange(6.0)})
    for other in (
        {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor(3)},
        {"a": torch.arange(6.0).double(), "b": torch.tensor(3)},
        {"c": torch.arange(6.0), "b": torch.tensor(3)},
        {"a": torch.arange(6.0) + 1e-7, "b": torch.tensor(3)},
    ):
        assert tensors_sha256(other) != digest


def test_each_state_and_its_message(saved, tmp_path):
    path, sha = saved
    good = path.read_bytes()

    path.unlink()
    check = inspect_checkpoint(path, sha)
    assert check.state == "missing" and check.damaged
    with pytest.raises(
        CorruptFileError,
        match=r"of net 'seed0', listed in the zoo manifest, is "
        r"missing\. Re-run the `convergent train` command that made this zoo "
        r"\(same settings, --out .*\): it retrains exactly the missing or damaged",
    ):
        verify_checkpoint(path, sha, net="seed0")

    path.write_bytes(good[: len(good) // 2])
    check = inspect_checkpoint(path, sha)
    assert check.state == "unreadable" and check.damaged
    with pytest.raises(
        CorruptFileError,
        match=r"not a readable safetensors file, so it was "
        r"changed or truncated after training\. Re-run",
    ):
        verify_checkpoint(path, sha)

    altered = bytearray(good)
    altered[-3] ^= 0x01  # one bit of the last tensor
    path.write_bytes(bytes(altered))
    check = inspect_checkpoint(path, sha)
    assert check.state == "altered" and check.damaged
    with pytest.raises(
        CorruptFileError,
        match=r"SHA-256 [0-9a-f]{64} \(the file\) instead of "
        rf"{sha} \(the manifest's record\)\. The file is damaged: its tensors no "
        "longer match the checksum written into it",
    ):
        verify_checkpoint(path, sha)


def test_an_edited_record_is_blamed_on_the_manifest(saved):
    path, sha = saved
    edited = "0" * 64
    check = inspect_checkpoint(path, edited)
    assert check.state == "intact" and not check.damaged
    with pytest.raises(CorruptFileError) as info:
        verify_checkpoint(path, edited, net="seed0", manifest_edited=True)
    message = str(info.value)
    assert f"SHA-256 {sha} (the file) instead of {edited} (the manifest's record)" in message
    assert "the manifest was edited after training and is the side that is wrong" in message
    assert "Do not delete the file" in message and "delete it" not in message


def test_another_whole_checkpoint_under_this_name(tmp_path):
    other = tmp_path / "seed0.safetensors"
    save_checkpoint(other, _model(1), {**META, "name": "seed1"})
    recorded = "1" * 64
    with pytest.raises(
        CorruptFileError,
        match=r"The file is intact .* and the manifest matches its "
        r"own checksum: the file is a whole checkpoint, but not the one recorded "
        r"for this net \(its own metadata names net 'seed1'\)\. Do not delete",
    ):
        verify_checkpoint(other, recorded, net="seed0", manifest_edited=False)
    # a manifest without a checksum of its own: the file's side only
    message = describe_check(inspect_checkpoint(other, recorded), net="seed0")
    assert "and the manifest matches" not in message and "names net 'seed1'" in message


def test_a_checkpoint_from_before_embedded_checksums_cannot_be_judged(tmp_path):
    path = tmp_path / "seed0.safetensors"
    path.write_bytes(checkpoint_bytes(_model(), META, embed_checksum=False))
    check = inspect_checkpoint(path, "2" * 64)
    assert check.state == "unverifiable" and not check.damaged
    with pytest.raises(
        CorruptFileError,
        match="predates embedded checksums, so convergent cannot "
        "tell whether the file or the manifest changed. Do not delete the file",
    ):
        verify_checkpoint(path, "2" * 64)


def test_manifest_checksum_of_its_own_records(tmp_path):
    manifest = {"nets": [{"name": "seed0", "sha256": "a" * 64}]}
    assert manifest_edited(manifest) is None  # written before manifests carried one
    write_zoo_manifest(tmp_path / "manifest.json", manifest)
    stored = json.loads((tmp_path / "manifest.json").read_text())
    assert stored["nets_sha256"] == nets_sha256(stored["nets"])
    assert manifest_edited(stored) is False
    stored["nets"][0]["sha256"] = "b" * 64
    assert manifest_edited(stored) is True
