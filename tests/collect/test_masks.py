"""Structured, masked inputs: a BERT-style model (Hugging Face ``transformers``, built from a config
in the test: nothing downloaded) takes ``input_ids`` and ``attention_mask``; padded positions never
enter any statistic, so padded batches give the statistics of the sentences run one by one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from torch import nn

from convergent.collect import collect
from convergent.stats import merge_all

LAYERS = ["encoder.layer.0.intermediate", "encoder.layer.1"]
LENGTHS = [3, 9, 5, 7, 2, 9, 4]


def _bert(seed: int) -> nn.Module:
    config = transformers.BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=16,
    )
    torch.manual_seed(seed)
    return transformers.BertModel(config).double().eval()


def _sentences() -> list[torch.Tensor]:
    rng = np.random.default_rng(0)
    return [torch.from_numpy(rng.integers(1, 40, size=n)) for n in LENGTHS]


def _padded(sentences: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    width = max(len(s) for s in sentences)
    ids = torch.zeros(len(sentences), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(sentences):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _close(got, want, what):
    scale = max(float(np.abs(want).max()), 1.0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * scale, err_msg=what)


@pytest.fixture(scope="module")
def models():
    return {"a": _bert(0), "b": _bert(1)}


def test_padded_batches_equal_the_sentences_run_one_by_one(models):
    sentences = _sentences()
    padded = collect(
        models, _padded(sentences), LAYERS, batch_size=3, kernel_sums=True, topk=4, progress=False
    )
    alone = [
        collect(
            models, _padded([s]), LAYERS, batch_size=1, kernel_sums=True, topk=4, progress=False
        )
        for s in sentences
    ]
    for layer in LAYERS:
        assert padded[layer].samples == sum(LENGTHS)  # only real tokens are samples
        one_by_one = merge_all([stats[layer].moments for stats in alone])
        for name, value in one_by_one.state().items():
            _close(padded[layer].moments.state()[name], value, f"{layer} {name}")
        # the top tokens are real tokens: position < the sentence's length
        topk = padded[layer].topk
        filled = topk.index >= 0
        lengths = np.array(LENGTHS)[topk.index[filled]]
        assert (topk.position[filled] < lengths).all()
    assert padded[LAYERS[0]].map_shape == (9,)


def test_without_the_mask_padding_would_enter_the_statistics(models):
    sentences = _sentences()
    masked = collect(models, _padded(sentences), LAYERS, batch_size=3, progress=False)
    unmasked = collect(models, _padded(sentences), LAYERS, batch_size=3, mask=None, progress=False)
    layer = LAYERS[1]
    assert unmasked[layer].samples == len(LENGTHS) * 9 > masked[layer].samples
    diff = np.abs(unmasked[layer].moments.mean - masked[layer].moments.mean).max()
    assert diff > 1e-3


def test_masked_means_and_mask_functions(models):
    sentences = _sentences()
    data = _padded(sentences)
    by_name = collect(models, data, LAYERS, spatial="mean", mask="attention_mask", progress=False)
    by_function = collect(
        models, data, LAYERS, spatial="mean", mask=lambda b: b["attention_mask"] > 0, progress=False
    )
    assert by_name[LAYERS[1]].samples == len(LENGTHS)
    _close(by_function[LAYERS[1]].moments.comoment, by_name[LAYERS[1]].moments.comoment, "mean")
    # each sentence's mean over its own tokens, run alone, is the same sample as in the batch
    alone = merge_all(
        [
            collect(models, _padded([s]), LAYERS, spatial="mean", progress=False)[LAYERS[1]].moments
            for s in sentences
        ]
    )
    for name, value in alone.state().items():
        _close(by_name[LAYERS[1]].moments.state()[name], value, f"mean {name}")
    with pytest.raises(ValueError, match="The mask 'nope' is not one of the named inputs"):
        collect(models, data, LAYERS, mask="nope", progress=False)
    with pytest.raises(ValueError, match="must return a \\(batch, positions\\) tensor"):
        collect(models, data, LAYERS, mask=lambda b: None, progress=False)
    with pytest.raises(ValueError, match="one row per input"):
        collect(
            models,
            {"input_ids": data["input_ids"], "attention_mask": data["attention_mask"][:2]},
            LAYERS,
        )
