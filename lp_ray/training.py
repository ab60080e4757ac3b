"""Training and evaluation steps shared by the Ray Train loop, the pool evaluators and the benchmarks.
Pure torch: distributed reduction is passed in, so nothing here imports Ray."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from lp_ray.data.base import Source
from lp_ray.recipes import set_lr


def autocast(device: torch.device, precision: str = "fp32"):
    """bf16: forward passes (and losses) under torch.autocast, on CUDA and on the CPU alike, so the CPU
    runs the very code path a GPU does. fp32: a disabled context, so results are those of plain fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on the compute device; image batches channels-last on CUDA (faster convolutions on tensor
    cores). On the CPU nothing changes: fp32 results there stay bit-identical."""
    x = x.to(device, non_blocking=True)
    if device.type == "cuda" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def model_to_device(model: nn.Module, device: torch.device) -> nn.Module:
    if device.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return model.to(device, memory_format=torch.channels_last)
    return model.to(device)


def epoch_seed(seed: int, round_: int, epoch: int, particle: int = 0) -> int:
    """Data order and augmentation depend only on (seed, round, epoch, particle): a resumed epoch replays
    exactly. Particle 0 has the order plain IMP has; particle p > 0 is offset far beyond any (round, epoch)."""
    return (seed * 1_000_003 + round_ * 10_007 + epoch + particle * 1_000_000_000_039) % (2**63)


def shard_batches(
    idx: torch.Tensor, batch_size: int, rank: int, world: int, gen: torch.Generator | None
) -> Iterator[torch.Tensor]:
    """Shuffle (if `gen`), pad to a multiple of `world` by wrapping (as DistributedSampler does) so every
    rank runs the same number of steps, take this rank's share, and cut it into batches."""
    order = idx[torch.randperm(len(idx), generator=gen)] if gen is not None else idx
    per_rank = -(-len(order) // world)
    if per_rank * world > len(order):
        order = torch.cat([order, order[: per_rank * world - len(order)]])
    mine = order[rank::world]
    for start in range(0, len(mine), batch_size):
        yield mine[start : start + batch_size]


def masked_train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    source: Source,
    idx: torch.Tensor,
    batch_size: int,
    masks: dict[str, torch.Tensor],
    gen: torch.Generator,
    device: torch.device,
    rank: int = 0,
    world: int = 1,
    on_step: Callable[[int, float], None] | None = None,
    precision: str = "fp32",
    lr_of_step: Callable[[int], float] | None = None,
    grad_clip: float | None = None,
) -> tuple[float, float]:
    """One epoch in which pruned weights stay exactly zero: gradients are masked before the step (so
    momentum and Adam's moments never grow there), clipped to a global norm of `grad_clip` if given, and
    weights masked after it. `lr_of_step(step)`: the learning rate set before each step (a per-step
    schedule; None keeps the optimizer's). Returns (mean loss, accuracy) on this rank."""
    model.train()
    params = dict(model.named_parameters())
    masked = [(params[_ddp_name(n, params)], m.to(device)) for n, m in masks.items() if _has_mask_effect(m)]
    total_loss, correct, seen = 0.0, 0, 0
    for step, b in enumerate(shard_batches(idx, batch_size, rank, world, gen)):
        if lr_of_step is not None:
            set_lr(opt, lr_of_step(step))
        x, y = source.batch(b, augment=True, gen=gen)
        x, y = to_device(x, device), y.to(device, non_blocking=True)
        with autocast(device, precision):
            out = model(x)
            loss = F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            for p, m in masked:
                p.grad.mul_(m)
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        with torch.no_grad():
            for p, m in masked:
                p.mul_(m)
        total_loss += loss.item() * len(y)
        correct += (out.argmax(1) == y).sum().item()
        seen += len(y)
        if on_step is not None:
            on_step(step, loss.item())
    return total_loss / max(seen, 1), correct / max(seen, 1)


def _ddp_name(name: str, params: dict) -> str:
    return name if name in params else f"module.{name}"


def _has_mask_effect(m: torch.Tensor) -> bool:
    return bool((m == 0).any())


@torch.no_grad()
def count_correct(
    model: nn.Module,
    source: Source,
    idx: torch.Tensor,
    device: torch.device,
    batch_size: int = 1000,
    rank: int = 0,
    world: int = 1,
    precision: str = "fp32",
) -> tuple[int, int]:
    """(correct, total) over this rank's share of `idx`, in eval mode, without augmentation.
    Shares do not overlap (no padding), so summing over ranks gives the exact accuracy."""
    model.eval()
    mine = idx[rank::world]
    correct = 0
    for start in range(0, len(mine), batch_size):
        x, y = source.batch(mine[start : start + batch_size], augment=False, gen=None)
        with autocast(device, precision):
            out = model(to_device(x, device))
        correct += (out.argmax(1) == y.to(device)).sum().item()
    return correct, len(mine)


def _eval_outputs(model, source, idx, batch_size, device, precision):
    """(outputs, labels) per batch of `idx`, in eval mode, without augmentation: what predict() and
    probabilities() read."""
    model.eval()
    for start in range(0, len(idx), batch_size):
        x, y = source.batch(idx[start : start + batch_size], augment=False, gen=None)
        with autocast(device, precision):
            out = model(to_device(x, device))
        yield out, y


@torch.no_grad()
def predict(
    model: nn.Module,
    source: Source,
    idx: torch.Tensor,
    batch_size: int = 1000,
    device: torch.device = torch.device("cpu"),
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted class, label) per example of `idx`, in eval mode, without augmentation (int16)."""
    preds, labels = [], []
    for out, y in _eval_outputs(model, source, idx, batch_size, device, precision):
        preds.append(out.argmax(1).cpu())
        labels.append(y)
    return torch.cat(preds).to(torch.int16), torch.cat(labels).to(torch.int16)


@torch.no_grad()
def probabilities(
    model: nn.Module,
    source: Source,
    idx: torch.Tensor,
    batch_size: int = 1000,
    device: torch.device = torch.device("cpu"),
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax class probabilities, label) per example of `idx`, in eval mode, without augmentation."""
    probs, labels = [], []
    for out, y in _eval_outputs(model, source, idx, batch_size, device, precision):
        probs.append(torch.softmax(out.float(), dim=1).cpu())
        labels.append(y)
    return torch.cat(probs), torch.cat(labels)


def accuracy(
    model: nn.Module,
    source: Source,
    idx: torch.Tensor,
    batch_size: int = 1000,
    device: torch.device = torch.device("cpu"),
    precision: str = "fp32",
) -> float:
    """Eval-mode accuracy over `idx` without augmentation, in one process: the counting the training
    loop reports (it sums `count_correct` over ranks instead)."""
    correct, total = count_correct(model, source, idx, device, batch_size=batch_size, precision=precision)
    return correct / total
