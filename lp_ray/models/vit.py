"""A small vision transformer (Dosovitskiy et al. 2021) for 1-D signals (MNIST-1D: patches of
`patch_size` samples) and images (CIFAR: `patch_size` x `patch_size` pixels): a Linear patch embedding,
a learned position embedding, `depth` pre-norm blocks (LayerNorm, multi-head self-attention, LayerNorm,
GELU MLP), a final LayerNorm and a Linear head on the class token or the mean of the tokens. No
BatchNorm and no dropout: a pool evaluation needs no recalibration, and training is deterministic.

IMP prunes the Linear weights of the blocks (attention's qkv and output projections, the MLP's two
layers): 96.6% of the parameters of jobs/mnist1d-vit.yaml's network, 97.9% of jobs/cifar10-vit.yaml's.
The patch embedding and the head stay dense, as the paper's CNNs keep their classifier dense: every
token passes through the one and every class is read by the other, so a weight there carries the most
per weight removed (`prunable`)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from lp_ray.errors import LpRayError


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, ...],
        width: int = 64,
        depth: int = 4,
        heads: int = 4,
        patch_size: int = 4,
        mlp_ratio: float = 2.0,
        pooling: str = "cls",
    ):
        super().__init__()
        self.patch, self.pooling = patch_size, pooling
        # (length,) and (channels, length): 1-D patches; (channels, height, width): square 2-D patches.
        self.spatial = tuple(input_shape[1:]) if len(input_shape) == 3 else (input_shape[-1],)
        channels = input_shape[0] if len(input_shape) >= 2 else 1
        if any(s % patch_size for s in self.spatial):
            raise LpRayError(f"model.patch_size: {patch_size} does not divide the input's size {self.spatial}")
        tokens = math.prod(s // patch_size for s in self.spatial)
        self.embed = nn.Linear(channels * patch_size ** len(self.spatial), width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width)) if pooling == "cls" else None
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + (pooling == "cls"), width))
        self.blocks = nn.Sequential(*(Block(width, heads, round(width * mlp_ratio)) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)
        self._init()

    def _init(self):
        # ViT's usual initialization: truncated normal (std 0.02) weights, zero biases, and embeddings.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def patches(self, x):
        """(batch, tokens, channels * patch values): non-overlapping patches, row-major."""
        p, b = self.patch, x.shape[0]
        if len(self.spatial) == 1:
            x = x.reshape(b, -1, self.spatial[0])  # (batch, channels, length)
            c, n = x.shape[1], self.spatial[0] // p
            return x.reshape(b, c, n, p).permute(0, 2, 1, 3).reshape(b, n, c * p)
        c, (h, w) = x.shape[1], self.spatial
        x = x.reshape(b, c, h // p, p, w // p, p)
        return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c * p * p)

    def forward(self, x):
        tokens = self.embed(self.patches(x))
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = self.norm(self.blocks(tokens + self.pos_embed))
        return self.head(tokens[:, 0] if self.cls_token is not None else tokens.mean(dim=1))


def prunable(model: nn.Module) -> list[str]:
    """The Linear weights of the blocks: attention (qkv, proj) and MLP (fc1, fc2)."""
    return sorted(
        f"{name}.weight" for name, m in model.named_modules() if name.startswith("blocks.") and isinstance(m, nn.Linear)
    )
