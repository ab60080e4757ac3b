"""How IMP retrains a round after pruning (docs/architecture.md, "IMP with rewinding"): the one list of
`imp.retrain` names, and the step learning-rate schedule they share (`lr_at`). Every rule trains round r >= 1 for epochs rewind_epoch .. epochs-1 under round r's
mask, with the data order of (seed, round, epoch); they differ in where the weights start and which
learning rate each epoch gets. Round 0 (dense training) is the same for all. Pure: no Ray.

    rewind     weights rewound to the rewind point, the schedule from the rewind epoch (Frankle et al.
               2020; what Lottery Pools assumes; the default)
    lr_rewind  the previous ticket's trained weights kept, only the schedule rewound (Renda et al. 2020)
    finetune   the previous ticket's weights kept, every epoch at the final learning rate
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lp_ray.spec import TrainSpec


def lr_at(spec: TrainSpec, epoch: int) -> float:
    """Step schedule (drops by `lr_drop_factor` at each epoch in `lr_drops`), with optional linear warmup.
    A function of the epoch alone, so a resumed or rewound round needs no scheduler state."""
    lr = spec.lr * spec.lr_drop_factor ** sum(epoch >= d for d in spec.lr_drops)
    if epoch < spec.warmup_epochs:
        lr *= (epoch + 1) / spec.warmup_epochs
    return lr


@dataclass(frozen=True)
class Retrain:
    from_ticket: bool  # round r starts from ticket r-1 (masked) instead of the rewind point (masked)
    lr: Callable[[TrainSpec, int], float]  # the learning rate of epoch e of a round r >= 1


def _final_lr(spec: TrainSpec, epoch: int) -> float:
    return lr_at(spec, spec.epochs - 1)


RETRAIN: dict[str, Retrain] = {
    "rewind": Retrain(from_ticket=False, lr=lr_at),
    "lr_rewind": Retrain(from_ticket=True, lr=lr_at),
    "finetune": Retrain(from_ticket=True, lr=_final_lr),
}


def lr_for(name: str, spec: TrainSpec, round_: int, epoch: int) -> float:
    return lr_at(spec, epoch) if round_ == 0 else RETRAIN[name].lr(spec, epoch)
