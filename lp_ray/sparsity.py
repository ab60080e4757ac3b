"""Masks and global magnitude pruning (docs/architecture.md, "IMP with rewinding"). Pure torch: no Ray,
no MLflow.

A mask is a plain `{parameter name: 0/1 float tensor}` covering exactly the prunable parameters.
Pruning is global: one threshold over all prunable tensors together. Ties in magnitude are broken
deterministically by position (tensors in name order, then flat index; the earlier weight survives),
so the same weights always give the same mask on every machine.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
import torch.nn as nn

Mask = dict[str, torch.Tensor]


def prunable_names(model: nn.Module, prune_linear: bool = False) -> list[str]:
    """Conv weights always (the paper's code); linear weights when the job says so. Biases and
    BatchNorm parameters are never pruned."""
    kinds: tuple[type, ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    if prune_linear:
        kinds += (nn.Linear,)
    return sorted(f"{name}.weight" if name else "weight" for name, m in model.named_modules() if isinstance(m, kinds))


def dense_mask(weights: Mapping[str, torch.Tensor], names: Iterable[str]) -> Mask:
    return {n: torch.ones_like(weights[n], dtype=torch.float32) for n in sorted(names)}


def survivors(mask: Mask) -> int:
    return int(sum(int(m.sum().item()) for m in mask.values()))


def mask_size(mask: Mask) -> int:
    return sum(m.numel() for m in mask.values())


def density(mask: Mask) -> float:
    return survivors(mask) / mask_size(mask)


def keep_top_k(weights: Mapping[str, torch.Tensor], names: Iterable[str], k: int, allowed: Mask | None = None) -> Mask:
    """Mask keeping exactly the `k` largest-magnitude weights over the tensors `names`, globally.

    `allowed` restricts the choice to positions where it is 1 (IMP prunes only surviving weights).
    Ties are broken by position: a stable descending sort keeps the earlier weight.
    """
    names = sorted(names)
    total = sum(weights[n].numel() for n in names)
    if not 0 <= k <= total:
        raise ValueError(f"cannot keep {k} of {total} weights")
    scores = []
    for n in names:
        s = weights[n].detach().abs().flatten().to(torch.float64)
        if allowed is not None:
            # -1 sorts below every magnitude, so disallowed positions are chosen last (never, if k fits).
            s = torch.where(allowed[n].flatten() > 0, s, torch.full_like(s, -1.0))
        scores.append(s)
    keep = _top_k_by_position(torch.cat(scores), k)
    mask, start = {}, 0
    for n in names:
        size = weights[n].numel()
        mask[n] = keep[start : start + size].view_as(weights[n]).clone()
        start += size
    return mask


def _top_k_by_position(flat: torch.Tensor, k: int) -> torch.Tensor:
    """0/1 float mask of the `k` largest entries of `flat`, ties to the earlier position: exactly what a
    stable descending sort's first `k` give, in O(n) (a selection, not a sort: 0.1 s instead of 1.9 s per
    re-prune of a CIFAR ResNet-18 on a CPU core). NaN has no magnitude order, so it takes the sort."""
    keep = torch.zeros(flat.numel(), dtype=torch.float32)
    if k == 0:
        return keep
    if torch.isnan(flat).any():
        keep[torch.sort(flat, descending=True, stable=True).indices[:k]] = 1.0
        return keep
    threshold = torch.kthvalue(flat, flat.numel() - k + 1).values  # the k-th largest
    above = flat > threshold
    keep[above] = 1.0
    ties = (flat == threshold).nonzero().flatten()  # ascending positions: the earlier ones stay
    keep[ties[: k - int(above.sum())]] = 1.0
    return keep


def prune_fraction(weights: Mapping[str, torch.Tensor], mask: Mask, rate: float) -> Mask:
    """IMP step: remove `rate` of the *remaining* weights by global magnitude (OpenLTH rounds the
    number pruned up)."""
    remaining = survivors(mask)
    to_prune = math.ceil(rate * remaining)
    return keep_top_k(weights, mask.keys(), remaining - to_prune, allowed=mask)


def apply_mask(weights: dict[str, torch.Tensor], mask: Mask) -> dict[str, torch.Tensor]:
    """Return a copy of `weights` with masked positions set to exactly zero."""
    out = dict(weights)
    for n, m in mask.items():
        out[n] = weights[n] * m.to(weights[n].dtype)
    return out


def density_report(mask: Mask) -> list[dict]:
    """Per-layer and overall survivors, for `lp-ray tickets --layers` and the ticket metadata."""
    rows = [
        {"layer": n, "size": m.numel(), "survivors": int(m.sum().item()), "density": float(m.mean().item())}
        for n, m in sorted(mask.items())
    ]
    rows.append(
        {"layer": "(all prunable)", "size": mask_size(mask), "survivors": survivors(mask), "density": density(mask)}
    )
    return rows
