"""The numeric heart of Lottery Pools, pure torch (no Ray, no MLflow); docs/architecture.md, "Lottery Pools":

    merge:     w = alpha * w_candidate + (1 - alpha) * w_current, over every floating-point tensor
    re-prune:  keep exactly the target's number of prunable weights, by global magnitude
    recal:     BatchNorm statistics recomputed on training data (reset, cumulative average, fixed order)

`Evaluator` puts them together into the one function both executors call, so the serial and the Ray
executor compute bit-identical results.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn

from lp_ray.data.base import DataBundle, Source
from lp_ray.sparsity import Mask, apply_mask, keep_top_k, survivors
from lp_ray.training import accuracy, autocast, model_to_device, predict, to_device

State = dict[str, torch.Tensor]


def interpolate(current: Mapping[str, torch.Tensor], candidate: Mapping[str, torch.Tensor], alpha: float) -> State:
    """alpha * candidate + (1 - alpha) * current for floating-point tensors. Integer buffers (BatchNorm's
    num_batches_tracked) are counters, not weights: they keep the current network's value."""
    if set(current) != set(candidate):
        diff = sorted(set(current) ^ set(candidate))
        raise ValueError(f"state dicts differ in {len(diff)} tensors, e.g. {diff[0]}")
    out = {}
    for name, w in current.items():
        c = candidate[name]
        if w.is_floating_point():
            out[name] = alpha * c + (1.0 - alpha) * w
        else:
            out[name] = w.clone()
    return out


def reprune(state: Mapping[str, torch.Tensor], prunable: list[str], keep: int) -> tuple[State, Mask]:
    """Keep exactly `keep` prunable weights, chosen by global magnitude (ties: the earlier position)."""
    mask = keep_top_k(state, prunable, keep)
    return apply_mask(dict(state), mask), mask


def nonzero_mask(state: Mapping[str, torch.Tensor], prunable: list[str]) -> Mask:
    return {n: (state[n] != 0).to(torch.float32) for n in sorted(prunable)}


def keep_count(mask: Mask) -> int | None:
    """Survivors to re-prune a target to: its own count; None for a dense target (nothing to prune)."""
    n = survivors(mask)
    return None if n == sum(m.numel() for m in mask.values()) else n


def merge(
    current: Mapping[str, torch.Tensor],
    candidate: Mapping[str, torch.Tensor] | None,
    alpha: float,
    prunable: list[str],
    keep: int | None,
) -> tuple[State, Mask]:
    """The merged weights an evaluation scores, and their mask: interpolate (`candidate` None: the
    current weights alone), then re-prune to `keep` survivors. `keep` None means no re-pruning (the
    dense target, the prune-after ablation); the mask is then the nonzero positions. The driver calls
    this too, to rebuild an accepted merge: the same function, so the same bits."""
    state = dict(current) if candidate is None else interpolate(current, candidate, alpha)
    if keep is not None:
        return reprune(state, prunable, keep)
    return state, nonzero_mask(state, prunable)


def running_stats_norms(model: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers whose eval-mode output reads running statistics, which a merge leaves stale:
    those with `track_running_stats`. LayerNorm, GroupNorm and a BatchNorm without running statistics (it
    normalises by each batch's) have none: nothing to recalibrate. An InstanceNorm that tracks them keeps
    the merged ones: torch updates its statistics only with a fixed momentum, not the cumulative average
    that recalibration needs."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    source: Source,
    idx: torch.Tensor,
    batch_size: int,
    device: torch.device = torch.device("cpu"),
    precision: str = "fp32",
) -> None:
    """Recompute BatchNorm running statistics: reset them, use a cumulative average (momentum None),
    and run forward passes in train mode over `idx` in the given order, without augmentation.
    This is what torch.optim.swa_utils.update_bn does, on our batch sources."""
    bns = running_stats_norms(model)
    if not bns:
        return
    was_training = model.training
    saved_momenta = {}
    for bn in bns:
        bn.reset_running_stats()
        saved_momenta[bn] = bn.momentum
        bn.momentum = None
    model.train()
    for start in range(0, len(idx), batch_size):
        x, _ = source.batch(idx[start : start + batch_size], augment=False, gen=None)
        with autocast(device, precision):
            model(to_device(x, device))
    for bn, momentum in saved_momenta.items():
        bn.momentum = momentum
    model.train(was_training)


def bn_subset(train_idx: torch.Tensor, bn_samples: int | None, seed: int) -> torch.Tensor:
    """The recalibration examples: the whole training split, or a fixed seeded subset of it, in a fixed
    (sorted) order so every evaluation sees the same batches."""
    if bn_samples is None or bn_samples >= len(train_idx):
        return train_idx
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(train_idx), generator=gen)[:bn_samples]
    return train_idx[pick.sort().values]


def screen_subset(train_idx: torch.Tensor, fraction: float | None, seed: int) -> torch.Tensor | None:
    """A fast search's screening examples: a fixed seeded `fraction` of the training split (at least
    one batch's worth of examples is the caller's to ask for), sorted; None without screening. Drawn
    with its own seed so it is the same subset on every rerun, whatever `bn_samples` is."""
    if fraction is None:
        return None
    n = max(1, round(fraction * len(train_idx)))
    return bn_subset(train_idx, n, seed + 1_000_003)


@dataclass
class Evaluation:
    val_acc: float
    density: float
    seconds: float
    node: str = "local"  # where it ran (a Ray node id); like seconds, not part of the result
    bn_examples: int = 0  # the examples BatchNorm was recalibrated on: the evaluation's cost


@dataclass
class Score:
    """A merged network's validation and test accuracy (analyses; the pool itself decides on validation
    only and touches test once per pooled network)."""

    val_acc: float
    test_acc: float


@dataclass
class Final:
    state: State
    mask: Mask
    val_acc: float
    test_acc: float
    density: float
    test_pred: torch.Tensor | None = None  # predicted class per test example


@dataclass
class Control:
    """The controls of a target: its ticket as trained (LT) and the same ticket with its BatchNorm
    statistics recalibrated and nothing merged (LT+BN), each with its test predictions."""

    lt_test_pred: torch.Tensor
    lt_test_acc: float
    lt_bn: Final


class Evaluator:
    """Everything one evaluation needs, kept resident: a model instance, the data, the recal indices.

    `evaluate` is a pure function of (current, candidate, alpha, keep, reprune) for a fixed thread
    count: same inputs, same bits, in any process.
    """

    def __init__(
        self,
        model: nn.Module,
        data: DataBundle,
        prunable: list[str],
        bn_idx: torch.Tensor,
        batch_size: int,
        device: torch.device = torch.device("cpu"),
        precision: str = "fp32",
        screen_idx: torch.Tensor | None = None,
    ):
        self.model = model_to_device(model, device)
        self.screen_idx = screen_idx  # the fast search's screening subset (None: no screening)
        self.has_bn = bool(running_stats_norms(model))
        self.data, self.prunable, self.bn_idx = data.to(device), sorted(prunable), bn_idx
        self.batch_size, self.device, self.precision = batch_size, device, precision
        # Scoring batches only change speed, not results (eval mode): large ones keep a GPU busy. BN
        # recalibration keeps the job's batch size, whose statistics it averages.
        self.eval_batch = max(batch_size, 4096 if device.type == "cuda" else 1000)
        self.prunable_size = sum(p.numel() for n, p in model.state_dict().items() if n in self.prunable)

    def merge(
        self,
        current: Mapping[str, torch.Tensor],
        candidate: Mapping[str, torch.Tensor] | None,
        alpha: float,
        keep: int | None,
    ) -> tuple[State, Mask]:
        return merge(current, candidate, alpha, self.prunable, keep)

    def load(self, state: Mapping[str, torch.Tensor], bn_idx: torch.Tensor | None = None) -> None:
        """Put `state` into the resident model and recalibrate its BatchNorm statistics (on `bn_idx`,
        default the search's recalibration examples)."""
        self.model.load_state_dict(state)
        idx = self.bn_idx if bn_idx is None else bn_idx
        recalibrate_bn(self.model, self.data.train, idx, self.batch_size, self.device, self.precision)

    def evaluate(self, current, candidate, alpha: float, keep: int | None, screen: bool = False) -> Evaluation:
        """The merge's validation accuracy; `screen`: recalibrated on the screening subset instead."""
        t0 = time.perf_counter()
        if screen and self.screen_idx is None:
            raise ValueError("a screening evaluation on an evaluator built without a screening subset")
        idx = self.screen_idx if screen else self.bn_idx
        state, mask = self.merge(current, candidate, alpha, keep)
        self.load(state, idx)
        val = accuracy(self.model, self.data.train, self.data.val_idx, self.eval_batch, self.device, self.precision)
        return Evaluation(
            val,
            survivors(mask) / self.prunable_size,
            time.perf_counter() - t0,
            bn_examples=len(idx) if self.has_bn else 0,
        )

    def score(self, current, candidate, alpha: float, keep: int | None) -> Score:
        """`evaluate`'s network scored on validation and test: for analyses that map the space between
        tickets (linear mode connectivity), never for a decision of the pool."""
        state, _ = self.merge(current, candidate, alpha, keep)
        self.load(state)
        val = accuracy(self.model, self.data.train, self.data.val_idx, self.eval_batch, self.device, self.precision)
        return Score(val, self._test()[1])

    def _test(self) -> tuple[torch.Tensor, float]:
        pred, labels = predict(
            self.model, self.data.test, torch.arange(len(self.data.test)), self.eval_batch, self.device, self.precision
        )
        return pred, int((pred == labels).sum()) / len(labels)

    def finalize(self, current, keep: int | None) -> Final:
        """The pooled network: re-pruned if asked, BatchNorm recalibrated, scored on val and, once, on test."""
        state, mask = self.merge(current, None, 0.0, keep)
        self.load(state)
        val = accuracy(self.model, self.data.train, self.data.val_idx, self.eval_batch, self.device, self.precision)
        pred, test = self._test()
        final_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        return Final(final_state, mask, val, test, survivors(mask) / self.prunable_size, pred)

    def control(self, ticket, keep: int | None) -> Control:
        """LT (the ticket as stored, its own BatchNorm statistics) and LT+BN (`finalize` of the ticket)."""
        self.model.load_state_dict(ticket)
        lt_pred, lt_test = self._test()
        return Control(lt_pred, lt_test, self.finalize(ticket, keep))
