"""What every data set provides: sources that hand out batches by index, and the train/val split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch


class Source(Protocol):
    """A map-style set of examples that returns whole batches (so in-memory sets never go through a
    per-example Python loop)."""

    num_classes: int

    def __len__(self) -> int: ...

    def batch(
        self, idx: torch.Tensor, augment: bool, gen: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class TensorSource:
    """Examples held in memory as one tensor (mnist1d, CIFAR, synthetic)."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    augmentation: Augment | None = None

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, idx, augment, gen):
        x = self.x[idx]
        if augment and self.augmentation is not None:
            x = self.augmentation(x, gen)
        return x, self.y[idx]


@dataclass
class DataBundle:
    train: Source  # the official training set; train_idx and val_idx index into it
    test: Source
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]


def make_split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded hold-out: a fixed random `val_fraction` of the official training set becomes validation."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    n_val = max(1, round(n * val_fraction))
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    return train_idx, val_idx


def random_crop_flip(pad: int) -> Augment:
    """Random crop with zero padding `pad` plus horizontal flip, on a batch of CHW image tensors."""

    def apply(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        flip = torch.rand(n, generator=gen) < 0.5
        # Gather crops with one advanced-indexing call instead of a Python loop over the batch.
        rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]
        cols = dx[:, None] + torch.arange(w)[None, :]
        cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]
        batch = torch.arange(n)[:, None, None, None]
        chan = torch.arange(x.shape[1])[None, :, None, None]
        return padded[batch, chan, rows, cols]

    return apply
