"""Two text checkpoints compared from the command line: a user model factory, token inputs from a
.npz file with an attention mask, a vocabulary; statistics, results and a report that shows which
tokens drive the matched units."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from convergent import CorruptFileError, DataNotFoundError
from convergent.cli import main
from convergent.data import load_tokens
from convergent.results import load_results
from convergent.stats import Statistics
from tests.helpers.text_models import bert

VOCAB = [f"w{i}" for i in range(40)]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    for seed in (0, 1):
        torch.manual_seed(seed)
        save_file(bert().state_dict(), str(root / f"bert{seed}.safetensors"))
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 12, size=60)
    ids = np.zeros((60, 12), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(1, 40, size=n)
        mask[i, :n] = 1
    np.savez(root / "tokens.npz", input_ids=ids, attention_mask=mask)
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return root, int(lengths.sum())


def test_two_text_checkpoints_from_the_command_line(text_run):
    root, tokens = text_run
    layers = "encoder.layer.0.intermediate,encoder.layer.1"
    argv = ["collect", "--arch", "tests.helpers.text_models:bert"]
    argv += [
        "--checkpoint",
        str(root / "bert0.safetensors"),
        "--checkpoint",
        str(root / "bert1.safetensors"),
    ]
    argv += ["--inputs", str(root / "tokens.npz"), "--vocab", str(root / "vocab.txt")]
    assert main([*argv, "--layers", layers, "--out", str(root / "stats")]) == 0
    stats = Statistics.load(root / "stats")
    assert stats.nets == ["bert0", "bert1"]
    assert stats["encoder.layer.1"].samples == tokens  # padding never counted
    assert (
        stats.info["dataset"]["name"] == "tokens"
        and stats.info["dataset"]["source"] == "../tokens.npz"
    )
    windows = stats["encoder.layer.1"].patches["tokens"]
    assert windows.shape[-1] == 9 and (windows[..., 4] > 0).all()  # the centre is a real token
    assert main(["analyze", str(root / "stats"), "--out", str(root / "results")]) == 0
    results = load_results(root / "results")
    assert results.run["fit"]["held_out"] is False  # no fit split for token inputs: in-sample
    assert main(["report", str(root / "results")]) == 0
    page = (root / "results" / "report" / "report.html").read_text()
    assert 'id="tokens-encoder.layer.1"' in page
    assert "[w" in page  # tokens shown as words, the driving token in brackets


def test_default_layers_of_a_text_model_come_from_a_trace(text_run, tmp_path):
    root, _ = text_run
    argv = [
        "collect",
        "--arch",
        "tests.helpers.text_models:bert",
        "--checkpoint",
        str(root / "bert0.safetensors"),
    ]
    argv += ["--checkpoint", str(root / "bert1.safetensors"), "--inputs", str(root / "tokens.npz")]
    assert main([*argv, "--max-inputs", "20", "--out", str(tmp_path / "s")]) == 0
    layers = list(Statistics.load(tmp_path / "s").layers)
    # the FFN activations of both blocks, in forward order, and the model's output
    assert layers[0].startswith("encoder.layer.0") and any("layer.1" in n for n in layers)


def test_token_files_are_checked(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_tokens(tmp_path / "none.npz")
    np.savez(tmp_path / "bad.npz", input_ids=np.zeros((4, 3)), attention_mask=np.zeros((5, 3)))
    with pytest.raises(CorruptFileError, match="must share their first dimension"):
        load_tokens(tmp_path / "bad.npz")
    np.savez(
        tmp_path / "lab.npz", input_ids=np.zeros((4, 3), np.int64), labels=np.zeros(3, np.int64)
    )
    with pytest.raises(CorruptFileError, match="'labels' must hold one integer per input"):
        load_tokens(tmp_path / "lab.npz")
    np.savez(tmp_path / "only.npz", labels=np.zeros(3, np.int64))
    with pytest.raises(CorruptFileError, match="holds only labels"):
        load_tokens(tmp_path / "only.npz")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "dir").mkdir()
    (tmp_path / "obj.npy").rename(tmp_path / "dir" / "input_ids.npy")
    with pytest.raises(CorruptFileError, match="cannot be read without unpickling"):
        load_tokens(tmp_path / "dir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="holds no .npy files"):
        load_tokens(tmp_path / "empty")
    ok = tmp_path / "ok"
    ok.mkdir()
    np.save(ok / "input_ids.npy", np.ones((3, 2), np.int32))
    tokens = load_tokens(ok)
    assert tokens.arrays["input_ids"].dtype == np.int64 and len(tokens) == 3
