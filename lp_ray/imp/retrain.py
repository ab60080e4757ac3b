"""How IMP retrains a round after pruning (docs/architecture.md, "IMP with rewinding"): the one list of
`imp.retrain` names. Every rule trains round r >= 1 for epochs rewind_epoch .. epochs-1 under round r's
mask, with the data order of (seed, round, epoch) and the job's recipe (lp_ray/recipes.py); they differ in
where the weights start and which learning rate each step gets. Round 0 (dense training) is the same for
all. Pure: no Ray.

    rewind     weights rewound to the rewind point (and the optimizer's state, where the recipe rewinds
               it), the schedule from the rewind epoch (Frankle et al. 2020; what Lottery Pools assumes;
               the default)
    lr_rewind  the previous ticket's trained weights kept, only the schedule rewound (Renda et al. 2020);
               a fresh optimizer state
    finetune   the previous ticket's weights kept, every step at the schedule's final learning rate; a
               fresh optimizer state
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lp_ray.schedules import lr_at
from lp_ray.spec import JobSpec, TrainSpec


@dataclass(frozen=True)
class Retrain:
    from_ticket: bool  # round r starts from ticket r-1 (masked) instead of the rewind point (masked)
    # the learning rate of (epoch, step, steps per epoch) of a round r >= 1
    lr: Callable[[TrainSpec, int, int, int], float]


def _final_lr(spec: TrainSpec, epoch: int, step: int, steps: int) -> float:
    return lr_at(spec, spec.epochs - 1, steps - 1, steps)


RETRAIN: dict[str, Retrain] = {
    "rewind": Retrain(from_ticket=False, lr=lr_at),
    "lr_rewind": Retrain(from_ticket=True, lr=lr_at),
    "finetune": Retrain(from_ticket=True, lr=_final_lr),
}


def lr_for(name: str, spec: TrainSpec, round_: int, epoch: int, step: int = 0, steps: int = 1) -> float:
    return lr_at(spec, epoch, step, steps) if round_ == 0 else RETRAIN[name].lr(spec, epoch, step, steps)


def saves_optimizer(job: JobSpec) -> bool:
    """Whether round 0 saves the optimizer's state with the rewind point: as the job says
    (`imp.rewind_optimizer`), else AdamW's moments are saved (a fresh Adam state after a warmed-up
    schedule takes full-size steps) and SGD's momentum is not (Frankle et al. 2020, every pinned run)."""
    if job.imp.rewind_optimizer is not None:
        return job.imp.rewind_optimizer
    return job.train.optimizer == "adamw"


def restores_optimizer(job: JobSpec) -> bool:
    """Whether a round r >= 1 starts from the optimizer's state at the rewind point: where it is saved and
    the round starts from the rewind point's weights (lr_rewind and finetune keep trained weights, which
    that state does not belong to: they start a fresh one)."""
    return saves_optimizer(job) and not RETRAIN[job.imp.retrain].from_ticket
