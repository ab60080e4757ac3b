"""The optimizer of a training recipe (docs/architecture.md, "Recipes"): what each `train.optimizer` and
`train.weight_decay_on` value (their lists: spec.py) means, and the optimizer's state as named tensors
(checkpoints and the rewind point are safetensors, never pickle). The learning rate is schedules.py's.
Pure torch.

    optimizer  sgd      SGD with `momentum` (the paper's; the default)
               adamw    AdamW with `adam_betas`, `adam_eps` (transformers)
    decay on   all      weight decay on every parameter (the paper's; the default)
               weights  only on Linear and Conv weights: not on biases, normalisation parameters,
                        embeddings or tokens (the usual transformer recipe)
"""

from __future__ import annotations

import torch
import torch.nn as nn

from lp_ray.spec import TrainSpec

# Modules whose `weight` is decayed under weight_decay_on=weights; everything else is not.
_DECAYED_KINDS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def param_groups(model: nn.Module, spec: TrainSpec) -> list[dict]:
    """The optimizer's parameter groups: one (every parameter, in the model's order) unless weight decay
    skips what is not a Linear or Conv weight."""
    if spec.weight_decay_on == "all" or spec.weight_decay == 0:
        return [{"params": list(model.parameters())}]
    decayed = {id(m.weight) for m in model.modules() if isinstance(m, _DECAYED_KINDS) and m.weight is not None}
    params = list(model.parameters())
    return [
        {"params": [p for p in params if id(p) in decayed]},
        {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    groups = param_groups(model, spec)
    if spec.optimizer == "adamw":
        betas = (spec.adam_betas[0], spec.adam_betas[1])
        return torch.optim.AdamW(groups, lr=spec.lr, betas=betas, eps=spec.adam_eps, weight_decay=spec.weight_decay)
    return torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def optimizer_state(opt: torch.optim.Optimizer, model: nn.Module) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state as named tensors: SGD's momentum buffer under the parameter's
    name (as checkpoints always held it), any other entry (AdamW's exp_avg, exp_avg_sq, step) under
    `<entry>/<parameter name>`."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for group in opt.param_groups:
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                if isinstance(value, torch.Tensor):
                    name = by_id[id(p)] if key == "momentum_buffer" else f"{key}/{by_id[id(p)]}"
                    out[name] = value.detach().cpu().contiguous()
    return out


def load_optimizer_state(
    opt: torch.optim.Optimizer,
    model: nn.Module,
    tensors: dict[str, torch.Tensor],
    mask: dict[str, torch.Tensor] | None = None,
) -> None:
    """`optimizer_state`'s tensors back into `opt`; with `mask`, the moments of pruned weights zeroed (a
    rewound round starts its pruned weights with no history)."""
    by_name = dict(model.named_parameters())
    # Adam's step count stays on the CPU unless the optimizer is capturable or fused (as torch's own
    # load_state_dict keeps it): a CUDA step tensor is an error for the default implementation.
    step_on_param = bool(opt.defaults.get("capturable") or opt.defaults.get("fused"))
    for key, value in tensors.items():
        entry, _, name = key.rpartition("/")
        p = by_name[name]
        on_cpu = entry == "step" and not step_on_param
        value = value.clone() if on_cpu else value.to(p.device).clone()
        if mask is not None and name in mask and value.shape == p.shape:
            value.mul_(mask[name].to(value))
        opt.state[p][entry or "momentum_buffer"] = value
