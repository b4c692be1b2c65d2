"""A small BERT-style text model built from a config (nothing downloaded), named on the command line
as ``tests.helpers.text_models:bert`` -- the shape of the README's text-model example."""

from __future__ import annotations

import transformers


def bert(vocab_size: int = 40, hidden: int = 16, layers: int = 2, heads: int = 2):
    config = transformers.BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=32,
    )
    return transformers.BertModel(config)
