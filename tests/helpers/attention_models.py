"""Small attention models for the permutation tracer: a pre-norm ViT written with separate q, k, v,
proj Linear modules and an explicit reshape into heads (the structure of convergent's ``vit``), and a
BERT-style encoder built from Hugging Face ``transformers``' own ``BertLayer`` (no download)."""

from __future__ import annotations

import torch
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, sdpa: bool = False) -> None:
        super().__init__()
        self.heads, self.sdpa = heads, sdpa
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.heads, c // self.heads).transpose(1, 2)
        k = self.k(x).reshape(b, n, self.heads, c // self.heads).transpose(1, 2)
        v = self.v(x).reshape(b, n, self.heads, c // self.heads).transpose(1, 2)
        if self.sdpa:
            out = nn.functional.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q @ k.transpose(-2, -1)) * self.scale
            out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class MLPBlock(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, sdpa: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, sdpa)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, 2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Patch embedding (a strided conv), class token or mean pooling, pre-norm blocks, head."""

    def __init__(
        self,
        in_channels: int = 1,
        input_size=(8, 8),
        num_classes: int = 10,
        dim: int = 16,
        heads: int = 4,
        depth: int = 2,
        patch: int = 4,
        pool: str = "cls",
        sdpa: bool = False,
    ) -> None:
        super().__init__()
        h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
        tokens = (h // patch) * (w // patch)
        self.pool = pool
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(0.1 * torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(0.1 * torch.randn(1, tokens + (pool == "cls"), dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, sdpa) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        if self.pool == "cls":
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.norm(self.blocks(x + self.pos_embed))
        return self.head(x[:, 0] if self.pool == "cls" else x.mean(dim=1))


def tiny_vit(in_channels: int = 1, input_size=(8, 8), num_classes: int = 10, **kw) -> nn.Module:
    return TinyViT(in_channels, input_size, num_classes, **kw)


class BertStyle(nn.Module):
    """Token features -> Linear embedding -> ``transformers.BertLayer`` x depth -> mean -> head."""

    def __init__(self, features: int = 6, hidden: int = 16, heads: int = 4, depth: int = 2) -> None:
        super().__init__()
        from transformers import BertConfig
        from transformers.models.bert.modeling_bert import BertLayer

        config = BertConfig(
            hidden_size=hidden,
            num_attention_heads=heads,
            intermediate_size=2 * hidden,
            num_hidden_layers=depth,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        config._attn_implementation = "eager"
        self.embed = nn.Linear(features, hidden)
        self.layers = nn.ModuleList([BertLayer(config) for _ in range(depth)])
        self.classifier = nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for layer in self.layers:
            h = layer(h)
            h = h[0] if isinstance(h, tuple) else h
        return self.classifier(h.mean(dim=1))
