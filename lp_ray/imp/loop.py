"""The per-worker training loop of one IMP round, run by Ray Train's TorchTrainer on every DDP worker.

Epochs end in a checkpoint (rank 0 writes it, every rank reports), so a worker failure resumes from
the last checkpointed epoch: every epoch, unless the previous checkpoint is younger than
`checkpoint_interval_s` (rank 0's clock decides for all ranks); the last epoch always. Data order
depends only on (seed, round, epoch), so a resumed epoch replays the same batches it would have seen.
The driver hands each worker one `RoundConfig`.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import ray.train
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from lp_ray import layout
from lp_ray.data import load_data
from lp_ray.models import build_model
from lp_ray.sparsity import apply_mask, dense_mask, prunable_names
from lp_ray.spec import job_from_dict
from lp_ray.store import RunDir, decode_weights, encode_weights, read_mask
from lp_ray.training import count_correct, epoch_seed, lr_at, make_optimizer, masked_sgd_epoch, set_lr


@dataclass(frozen=True)
class RoundConfig:
    """Everything one round's workers get from the driver."""

    job: dict  # the job spec as a dict; each worker rebuilds and validates it
    run_uri: str
    round: int
    torch_threads: int
    checkpoint_interval_s: float  # 0: a checkpoint after every epoch
    board: Any = None  # the driver's ProgressBoard actor, for progress and the start gate
    inject_failure: tuple[int, int] | None = None  # test hook: (round, epoch) after which rank 0 dies once
    gated: bool = False  # started early: wait at the board's gate until the driver has written the mask

    def as_loop_config(self) -> dict:
        """Ray Train's train_loop_config is a dict: the config travels as its one entry."""
        return {"round_config": self}


def train_round(loop_config: dict) -> None:
    cfg: RoundConfig = loop_config["round_config"]
    torch.set_num_threads(cfg.torch_threads)
    job = job_from_dict(cfg.job)
    run = RunDir(cfg.run_uri)
    r, T = cfg.round, job.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    board = cfg.board

    data = load_data(job, run)
    torch.manual_seed(T.seed)  # identical initialization on every rank (and every rerun)
    model = build_model(job.model, data.num_classes, data.input_shape)
    names = prunable_names(model, job.imp.prune_linear)
    if cfg.gated and not _wait_for_gate(board, r):
        return  # the round before this one failed: the driver cancelled this early start
    if r == 0:
        mask = dense_mask(model.state_dict(), names)
    else:
        mask = read_mask(run, layout.mask(r))

    opt_state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            model.load_state_dict(load_file(os.path.join(d, layout.CHECKPOINT_MODEL)))
            opt_state = load_file(os.path.join(d, layout.CHECKPOINT_OPTIMIZER))
            state = json.load(open(os.path.join(d, layout.CHECKPOINT_STATE)))
            best = (
                load_file(os.path.join(d, layout.CHECKPOINT_BEST))
                if os.path.exists(os.path.join(d, layout.CHECKPOINT_BEST))
                else None
            )
        history, start = state["history"], state["epoch"] + 1
    else:
        if r > 0:  # rewind: the weights after epoch k, masked
            rewind, _ = decode_weights(run.read_bytes(layout.REWIND), run.path(layout.REWIND), model.state_dict())
            model.load_state_dict(apply_mask(rewind, mask))
        history, start, best = (
            {"epochs": [], "starts": [], "best_val": -1.0},
            (0 if r == 0 else job.imp.rewind_epoch),
            None,
        )
    history["starts"].append(start)

    model.to(device)
    net = ray.train.torch.prepare_model(model) if world > 1 else model
    opt = make_optimizer(net, T)
    if opt_state:
        _load_momentum(opt, model, opt_state)

    train_idx, val_idx = data.train_idx, data.val_idx
    per_worker_batch = T.batch_size // world
    per_rank = -(-len(train_idx) // world)  # ceil, as shard_batches pads
    steps = -(-per_rank // per_worker_batch)
    interval = cfg.checkpoint_interval_s
    last_checkpoint = time.monotonic()
    for epoch in range(start, T.epochs):
        if r == 0 and epoch == job.imp.rewind_epoch and rank == 0 and not run.exists(layout.REWIND):
            run.write_bytes(layout.REWIND, encode_weights(model.state_dict(), metadata={"epoch": str(epoch)}))
        t0 = time.perf_counter()
        set_lr(opt, lr_at(T, epoch))
        gen = torch.Generator().manual_seed(epoch_seed(T.seed, r, epoch))

        def on_step(step, loss, epoch=epoch, last=[0.0]):  # noqa: B006 (bound per epoch: when it last pushed)
            if board is not None and rank == 0 and (time.perf_counter() - last[0] > 0.5 or step == steps - 1):
                last[0] = time.perf_counter()
                board.update.remote(
                    {"round": r, "epoch": epoch, "epochs": T.epochs, "step": step + 1, "steps": steps, "loss": loss}
                )

        loss, acc = masked_sgd_epoch(
            net, opt, data.train, train_idx, per_worker_batch, mask, gen, device, rank, world, on_step
        )
        due = epoch == T.epochs - 1 or time.monotonic() - last_checkpoint >= interval
        # one all-reduce carries the epoch's metrics and rank 0's checkpoint decision (every rank must
        # call report() the same number of times)
        loss, acc, due = _sum_over_ranks([loss, acc, float(due) if rank == 0 else 0.0], world)
        loss, acc, due = loss / world, acc / world, due > 0
        val_acc = _accuracy(net, data.train, val_idx, device, rank, world)
        row = {
            "epoch": epoch,
            "train_loss": loss,
            "train_acc": acc,
            "val_acc": val_acc,
            "lr": lr_at(T, epoch),
            "seconds": time.perf_counter() - t0,
        }
        if T.select == "best_val" and val_acc > history["best_val"]:
            history["best_val"], best = val_acc, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if epoch == T.epochs - 1:  # the test set is touched once, for the report
            if best is not None:
                model.load_state_dict(best)
            row["test_acc"] = _accuracy(net, data.test, torch.arange(len(data.test)), device, rank, world)
            row["selected_val_acc"] = history["best_val"] if best is not None else val_acc
        history["epochs"].append(row)
        if board is not None and rank == 0:
            board.update.remote(
                {
                    "round": r,
                    "epoch": epoch + 1,
                    "epochs": T.epochs,
                    "step": steps,
                    "steps": steps,
                    "loss": loss,
                    "train_acc": acc,
                    "val_acc": val_acc,
                }
            )
        if due:
            _report(model, opt, history, epoch, best, rank, row)
            last_checkpoint = time.monotonic()
            _maybe_inject_failure(cfg, run, r, epoch, rank)


def _wait_for_gate(board, r: int, poll_s: float = 0.1) -> bool:
    """An early-started round (everything above is loaded already) waits here until the driver has
    written its mask (True) or cancelled it (False)."""
    while True:
        state = ray.get(board.gate.remote(r))
        if state is not None:
            return state == "go"
        time.sleep(poll_s)


def _report(model, opt, history, epoch, best, rank, metrics) -> None:
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as d:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
            os.path.join(d, layout.CHECKPOINT_MODEL),
        )
        save_file(_momentum(opt, model), os.path.join(d, layout.CHECKPOINT_OPTIMIZER))
        if best is not None:
            save_file({k: v.contiguous() for k, v in best.items()}, os.path.join(d, layout.CHECKPOINT_BEST))
        with open(os.path.join(d, layout.CHECKPOINT_STATE), "w") as f:
            json.dump({"epoch": epoch, "history": history}, f)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def _momentum(opt, model) -> dict[str, torch.Tensor]:
    """SGD momentum buffers keyed by parameter name, so the optimizer state is safetensors, not pickle."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for group in opt.param_groups:
        for p in group["params"]:
            buf = opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                out[by_id[id(p)]] = buf.detach().cpu().contiguous()
    return out


def _load_momentum(opt, model, buffers) -> None:
    by_name = dict(model.named_parameters())
    for n, buf in buffers.items():
        p = by_name[n]
        opt.state[p]["momentum_buffer"] = buf.to(p.device).clone()


def _accuracy(net, source, idx, device, rank, world) -> float:
    correct, total = count_correct(net, source, idx, device, rank=rank, world=world)
    correct, total = _sum_over_ranks([correct, total], world)
    return correct / total


def _sum_over_ranks(values, world):
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def _maybe_inject_failure(cfg: RoundConfig, run, r, epoch, rank) -> None:
    """Test hook (LP_RAY_INJECT_FAILURE=ROUND:EPOCH): kill rank 0 hard once, right after that epoch's
    checkpoint, to prove a round recovers from its last checkpoint."""
    if cfg.inject_failure != (r, epoch) or rank != 0:
        return
    marker = layout.injected_failure(r, epoch)
    if not run.exists(marker):
        run.write_bytes(marker, b"")
        os._exit(1)
