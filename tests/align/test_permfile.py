"""Permutation files: a round trip gives back the permutation and its groups; a file that does not fit
the model (other width, other architecture, other wiring) or is damaged is refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convergent._errors import CorruptFileError
from convergent._io import load_arrays, save_arrays
from convergent.align import (
    PermutationMismatchError,
    apply_permutation,
    apply_permutation_file,
    check_fits,
    find_permutation_groups,
    load_permutation,
    permutation_file,
    save_permutation,
)
from convergent.models import build_model


def _resnet(width: float = 0.5) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("resnet", in_channels=1, input_size=8, num_classes=10, width=width).eval()


def _saved(tmp_path, model):
    x = torch.randn(2, 1, 8, 8)
    spec = find_permutation_groups(model, x)
    perms = spec.random_permutations(seed=3)
    info = {"method": "weight", "note": "planted"}
    path = save_permutation(
        tmp_path / "perm.safetensors", permutation_file(perms, spec, model.state_dict(), info)
    )
    return path, spec, perms, x


def test_round_trip_keeps_permutations_groups_shapes_and_applies_like_the_original(tmp_path):
    model = _resnet()
    path, spec, perms, x = _saved(tmp_path, model)
    loaded = load_permutation(path)
    assert list(loaded.perms) == list(spec.groups)
    for name, group in spec.groups.items():
        assert np.array_equal(loaded.perms[name], perms[name])
        assert loaded.perms[name].dtype == np.int64
        other = loaded.spec.groups[name]
        assert (other.size, other.axes, other.layers) == (group.size, group.axes, group.layers)
    assert loaded.shapes["stem.conv.weight"] == tuple(model.stem.conv.weight.shape)
    assert loaded.info == {"method": "weight", "note": "planted"}
    # the file is plain safetensors + JSON: readable without convergent's classes
    arrays, meta = load_arrays(path)
    assert meta["format"] == "convergent-permutation" and "perm[i]" in meta["convention"]
    assert set(arrays) == set(spec.groups)

    applied = apply_permutation_file(model, path, x)
    expected = apply_permutation(model.state_dict(), spec, perms)
    for key, value in applied.state_dict().items():
        assert torch.equal(value, expected[key])
    with torch.no_grad():
        torch.testing.assert_close(applied(x), model(x), atol=1e-5, rtol=0)
    # the model handed in is left as it was
    assert torch.equal(model.stem.conv.weight, _resnet().stem.conv.weight)


def test_a_file_that_does_not_fit_is_refused_naming_the_mismatch(tmp_path):
    model = _resnet()
    path, spec, perms, x = _saved(tmp_path, model)
    with pytest.raises(
        PermutationMismatchError,
        match=r"'stem.conv.weight' has shape \(16, 1, 3, 3\) in the ResNet, the file expects \(8, 1, 3, 3\)",
    ):
        apply_permutation_file(_resnet(width=1.0), path)
    mlp = build_model("mlp", in_channels=1, input_size=8, num_classes=10)
    with pytest.raises(
        PermutationMismatchError, match=r"permutes '.*', which the MLP does not have"
    ):
        apply_permutation_file(mlp, path)

    # same parameter names and shapes, other groups: only tracing the model tells
    loaded = load_permutation(path)
    dropped = next(iter(loaded.spec.groups))
    del loaded.spec.groups[dropped]
    check_fits(loaded, model)  # the parameters alone still fit
    with pytest.raises(
        PermutationMismatchError, match=rf"groups \['{dropped}'\] that the file lacks"
    ):
        check_fits(loaded, model, x)
    loaded = load_permutation(path)
    group = next(iter(loaded.spec.groups.values()))
    group.axes = group.axes[:-1]
    with pytest.raises(PermutationMismatchError, match=rf"group '{group.name}' permutes \d+ units"):
        apply_permutation_file(model, loaded, x)


def test_damaged_or_foreign_files_are_refused(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_arrays(foreign, {"x": np.arange(3)}, {"format": "something-else"})
    with pytest.raises(CorruptFileError, match="is not a convergent permutation file"):
        load_permutation(foreign)
    model = _resnet()
    path, spec, perms, _ = _saved(tmp_path, model)
    arrays, meta = load_arrays(path)
    name = next(iter(arrays))
    arrays[name] = np.zeros_like(arrays[name])
    save_arrays(tmp_path / "bad.safetensors", arrays, meta)
    with pytest.raises(
        CorruptFileError, match=rf"array of group '{name}' is missing or not a perm"
    ):
        load_permutation(tmp_path / "bad.safetensors")


def test_attention_head_groups_round_trip_and_damaged_head_structure_is_refused(tmp_path):
    from tests.helpers.attention_models import TinyViT

    torch.manual_seed(0)
    vit = TinyViT().eval()
    path, spec, perms, x = _saved(tmp_path, vit)
    loaded = load_permutation(path)
    for name, group in spec.groups.items():
        assert (loaded.spec.groups[name].heads, loaded.spec.groups[name].tie) == (
            group.heads,
            group.tie,
        )
    again = apply_permutation_file(vit, path, x)
    expected = apply_permutation(vit.state_dict(), spec, perms)
    for key, value in again.state_dict().items():
        assert torch.equal(value, expected[key])
    arrays, meta = load_arrays(path)
    q = "blocks.0.attn.q"
    broken = dict(arrays)
    broken[q] = np.arange(16)[[1, 0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]]
    broken[q][[3, 4]] = broken[q][[4, 3]]
    save_arrays(tmp_path / "mixed.safetensors", broken, meta)
    with pytest.raises(CorruptFileError, match="mixes units of different heads"):
        load_permutation(tmp_path / "mixed.safetensors")
    meta["groups"][q]["heads"] = 3
    save_arrays(tmp_path / "heads.safetensors", arrays, meta)
    with pytest.raises(CorruptFileError, match="of 16 units cannot be split into 3 heads"):
        load_permutation(tmp_path / "heads.safetensors")
