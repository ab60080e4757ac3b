"""What every data set provides: sources that hand out batches by index, and the train/val split."""

from __future__ import annotations

import functools
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
        idx = idx.to(self.x.device)  # a few hundred indices; the examples never leave their device
        x = self.x[idx]
        if augment and self.augmentation is not None:
            x = self.augmentation(x, gen)
        return x, self.y[idx]

    def to(self, device: torch.device) -> TensorSource:
        """The same examples resident on `device` (once), so batches are indexed and augmented there."""
        if self.x.device == torch.device(device):
            return self
        return TensorSource(self.x.to(device), self.y.to(device), self.num_classes, self.augmentation)


@dataclass
class DatasetSource:
    """Examples from a map-style `torch.utils.data.Dataset` of `(x, y)` pairs (a plugin's data that does
    not fit in memory): a batch is its examples stacked, augmented as a batch like a TensorSource's."""

    dataset: torch.utils.data.Dataset
    num_classes: int
    augmentation: Augment | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def batch(self, idx, augment, gen):
        pairs = [self.dataset[int(i)] for i in idx]
        x = torch.stack([torch.as_tensor(p[0], dtype=torch.float32) for p in pairs])
        y = torch.as_tensor([int(p[1]) for p in pairs], dtype=torch.int64)
        if augment and self.augmentation is not None:
            x = self.augmentation(x, gen)
        return x, y


@dataclass
class DataBundle:
    train: Source  # the official training set; train_idx and val_idx index into it
    test: Source
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]

    def to(self, device: torch.device) -> DataBundle:
        """In-memory sets moved to `device` (a GPU worker or evaluator keeps them there: no per-step
        host-to-device copy); sources that read from disk (ImageNet folders) stay where they are."""
        moved = [s.to(device) if isinstance(s, TensorSource) else s for s in (self.train, self.test)]
        return DataBundle(moved[0], moved[1], self.train_idx, self.val_idx, self.num_classes, self.input_shape)


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
        # The draws come from the (CPU) generator, so a GPU run crops exactly as a CPU run does; the
        # few index tensors then move to the batch's device.
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
        flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        # Gather crops with one advanced-indexing call instead of a Python loop over the batch.
        ar = functools.partial(torch.arange, device=x.device)
        rows = (dy[:, None] + ar(h)[None, :])[:, None, :, None]
        cols = dx[:, None] + ar(w)[None, :]
        cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]
        batch = ar(n)[:, None, None, None]
        chan = ar(x.shape[1])[None, :, None, None]
        return padded[batch, chan, rows, cols]

    return apply
