"""Learning-rate schedules (docs/architecture.md, "Recipes"): what each `train.schedule` value (the list:
spec.py) means. Pure arithmetic, no torch: a job's check imports it.

    step    `lr` times `lr_drop_factor` for every drop epoch (`lr_drops`) passed, after an optional linear
            warm-up of one value per epoch over `warmup_epochs` (the paper's; the default): set once per
            epoch, exactly as every pinned run was trained
    cosine  a linear warm-up over the first `warmup_epochs` (0: none), then cosine decay from `lr` to 0
            over the remaining steps: set before every step

Every learning rate is a function of (epoch, step) alone, so a resumed or rewound round needs no
scheduler state: a round rewound to epoch k restarts the schedule at epoch k's first step.
"""

from __future__ import annotations

import math

from lp_ray.spec import TrainSpec


def lr_at(spec: TrainSpec, epoch: int, step: int = 0, steps: int = 1) -> float:
    """The learning rate of step `step` (of `steps` per epoch) in epoch `epoch`."""
    if spec.schedule == "step":
        lr = spec.lr * spec.lr_drop_factor ** sum(epoch >= d for d in spec.lr_drops)
        if epoch < spec.warmup_epochs:
            lr *= (epoch + 1) / spec.warmup_epochs
        return lr
    s, warm, total = epoch * steps + step, spec.warmup_epochs * steps, spec.epochs * steps
    if s < warm:
        return spec.lr * (s + 1) / warm
    return spec.lr * 0.5 * (1.0 + math.cos(math.pi * (s - warm) / max(total - warm, 1)))


def per_step(spec: TrainSpec) -> bool:
    """Whether the learning rate changes within an epoch (set before every step, not once per epoch)."""
    return spec.schedule != "step"
