"""The per-worker IMP loop: every round of the job inside one Ray Train run (docs/architecture.md, "IMP with
rewinding"). The worker group, its process group and the data live for the whole job; each round is a
stage inside it:

    mask     rank 0 reads round r's mask, or computes it from ticket r-1 on storage and writes it; then
             broadcasts it, so every rank trains under exactly the mask the run directory holds
    train    a fresh model and optimizer (as a round of its own would have), rewound and masked;
             epochs end in a checkpoint (round, epoch, weights, momentum, history)
    ticket   rank 0 writes ticket, mask, history and meta.json (last: the round's "done" marker)

Checkpoints are taken every epoch, except that one younger than `checkpoint_interval_s` is not followed
by another (rank 0's clock decides for all ranks); a round's last epoch always is. A restarted worker
group resumes from the fit's last checkpoint; a new fit of the same run (a killed driver, a failed
fit, `--rounds` extending a finished run) resumes from the checkpoint the driver found on storage. Data
order depends only on (seed, round, epoch), so a resumed epoch replays the batches it would have seen.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray.train
import torch
import torch.distributed as dist
from safetensors.torch import load as st_load
from safetensors.torch import save_file

from lp_ray import layout
from lp_ray.imp.retrain import RETRAIN, lr_for
from lp_ray.opened_run import OpenedRun
from lp_ray.sparsity import apply_mask, dense_mask, density, prune_fraction
from lp_ray.spec import run_hash
from lp_ray.spec_loading import job_from_dict
from lp_ray.store import (
    RunDir,
    TicketMeta,
    decode_weights,
    encode_weights,
    read_mask,
    read_ticket,
    ticket_done,
    write_mask,
    write_ticket,
)
from lp_ray.training import count_correct, epoch_seed, make_optimizer, masked_sgd_epoch, model_to_device, set_lr


@dataclass(frozen=True)
class ImpConfig:
    """Everything the workers get from the driver."""

    job: dict  # the job spec as a dict; each worker rebuilds and validates it
    run_uri: str
    torch_threads: int
    checkpoint_interval_s: float  # 0: a checkpoint after every epoch
    board: Any = None  # the driver's ProgressBoard actor, for progress
    resume_from: str | None = None  # an earlier fit's checkpoint folder, relative to the run directory
    inject_failure: tuple[int, int] | None = None  # test hook: (round, epoch) after which rank 0 dies once

    def as_loop_config(self) -> dict:
        """Ray Train's train_loop_config is a dict: the config travels as its one entry."""
        return {"imp_config": self}


@dataclass
class Resume:
    """A round's saved progress: the last finished epoch and everything needed to go on from it."""

    round: int
    epoch: int
    history: dict
    model: dict[str, torch.Tensor]
    momentum: dict[str, torch.Tensor]
    best: dict[str, torch.Tensor] | None


def read_checkpoint(read: Callable[[str], bytes | None], legacy_round: int | None = None) -> Resume:
    """A checkpoint from its files (`read(name)` gives a file's bytes, None if absent). Checkpoints from
    when every round was its own fit (round_RR/) do not say their round: `legacy_round` does."""
    state = json.loads(read(layout.CHECKPOINT_STATE))
    best = read(layout.CHECKPOINT_BEST)
    return Resume(
        round=state.get("round", legacy_round),
        epoch=state["epoch"],
        history=state["history"],
        model=st_load(read(layout.CHECKPOINT_MODEL)),
        momentum=st_load(read(layout.CHECKPOINT_OPTIMIZER)),
        best=st_load(best) if best is not None else None,
    )


def train_imp(loop_config: dict) -> None:
    cfg: ImpConfig = loop_config["imp_config"]
    torch.set_num_threads(cfg.torch_threads)
    job = job_from_dict(cfg.job)
    run = RunDir(cfg.run_uri)
    ctx = ray.train.get_context()
    w = _Worker(cfg, job, run, ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device())
    resume = _starting_checkpoint(cfg, run)
    if resume is not None and ticket_done(run, resume.round):
        resume = None  # the checkpoint's round was finished after it was taken: never redo a finished round
    for r in range(job.imp.rounds):
        if resume is not None and resume.round == r:
            w.round(r, resume)
            resume = None
        elif not ticket_done(run, r):
            w.round(r, None)


def _starting_checkpoint(cfg: ImpConfig, run: RunDir) -> Resume | None:
    """This fit's last checkpoint (a restarted worker group), else the one the driver found on storage."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:

            def read(name):
                path = os.path.join(d, name)
                return open(path, "rb").read() if os.path.exists(path) else None

            return read_checkpoint(read)
    if cfg.resume_from is not None:

        def read_stored(name):
            rel = f"{cfg.resume_from}/{name}"
            return run.read_bytes(rel) if run.exists(rel) else None

        return read_checkpoint(read_stored, layout.parse_round_dir(cfg.resume_from.split("/")[0]))
    return None


class _Worker:
    def __init__(self, cfg: ImpConfig, job, run: RunDir, rank: int, world: int, device):
        self.cfg, self.job, self.run = cfg, job, run
        self.rank, self.world, self.device = rank, world, device
        self.opened = OpenedRun.of(job, run)
        self.data = self.opened.data.to(device)  # resident on a GPU for the whole job

    def _fresh_model(self):
        # As a round of its own would: the same seeded initialization on every rank (round 0 trains it;
        # later rounds overwrite it with the rewind point).
        torch.manual_seed(self.job.train.seed)
        return self.opened.new_model()

    def round(self, r: int, resume: Resume | None) -> None:
        job, T, run, rank, world = self.job, self.job.train, self.run, self.rank, self.world
        t_start = time.perf_counter()
        model = self._fresh_model()
        names = self.opened.prunable
        mask = self._mask(r, model.state_dict(), names)
        if resume is not None:
            model.load_state_dict(resume.model)
            history, start, best = resume.history, resume.epoch + 1, resume.best
        else:
            if r > 0:  # the rewind point (or, for lr_rewind and finetune, the previous ticket), masked
                model.load_state_dict(apply_mask(self._start_weights(r, model.state_dict(), names), mask))
            history, start, best = (
                {"epochs": [], "starts": [], "best_val": -1.0},
                (0 if r == 0 else job.imp.rewind_epoch),
                None,
            )
        if start < T.epochs:  # (a checkpoint of the last epoch whose ticket was not written yet trains nothing)
            history["starts"].append(start)

        model_to_device(model, self.device)
        net = ray.train.torch.prepare_model(model, move_to_device=False) if world > 1 else model
        opt = make_optimizer(net, T)
        if resume is not None:
            _load_momentum(opt, model, resume.momentum)

        data, board = self.data, self.cfg.board
        per_worker_batch = T.batch_size // world
        per_rank = -(-len(data.train_idx) // world)  # ceil, as shard_batches pads
        steps = -(-per_rank // per_worker_batch)
        last_checkpoint = time.monotonic()
        for epoch in range(start, T.epochs):
            if r == 0 and epoch == job.imp.rewind_epoch and rank == 0 and not run.exists(layout.REWIND):
                run.write_bytes(layout.REWIND, encode_weights(model.state_dict(), metadata={"epoch": str(epoch)}))
            t0 = time.perf_counter()
            lr = lr_for(job.imp.retrain, T, r, epoch)
            set_lr(opt, lr)
            gen = torch.Generator().manual_seed(epoch_seed(T.seed, r, epoch))

            def on_step(step, loss, epoch=epoch, last=[0.0]):  # noqa: B006 (bound per epoch: when it last pushed)
                if board is not None and rank == 0 and (time.perf_counter() - last[0] > 0.5 or step == steps - 1):
                    last[0] = time.perf_counter()
                    board.update.remote(
                        {"round": r, "epoch": epoch, "epochs": T.epochs, "step": step + 1, "steps": steps, "loss": loss}
                    )

            loss, acc = masked_sgd_epoch(
                net,
                opt,
                data.train,
                data.train_idx,
                per_worker_batch,
                mask,
                gen,
                self.device,
                rank,
                world,
                on_step,
                T.precision,
            )
            due = epoch == T.epochs - 1 or time.monotonic() - last_checkpoint >= self.cfg.checkpoint_interval_s
            # one all-reduce carries the epoch's metrics and rank 0's checkpoint decision (every rank must
            # call report() the same number of times)
            loss, acc, due = _sum_over_ranks([loss, acc, float(due) if rank == 0 else 0.0], world)
            loss, acc, due = loss / world, acc / world, due > 0
            val_acc = _accuracy(net, data.train, data.val_idx, self.device, rank, world, T.precision)
            row = {
                "epoch": epoch,
                "train_loss": loss,
                "train_acc": acc,
                "val_acc": val_acc,
                "lr": lr,
                "seconds": time.perf_counter() - t0,
            }
            if self.device.type == "cuda":  # what the round needed of the GPU, for sizing jobs
                row["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
            if T.select == "best_val" and val_acc > history["best_val"]:
                history["best_val"] = val_acc
                best = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            if epoch == T.epochs - 1:  # the test set is touched once, for the report
                if best is not None:
                    model.load_state_dict(best)
                row["test_acc"] = _accuracy(
                    net, data.test, torch.arange(len(data.test)), self.device, rank, world, T.precision
                )
                row["selected_val_acc"] = history["best_val"] if best is not None else val_acc
            history["epochs"].append(row)
            if board is not None and rank == 0:
                board.update.remote(
                    {"round": r, "epoch": epoch + 1, "epochs": T.epochs, "step": steps, "steps": steps, "loss": loss}
                    | {"train_acc": acc, "val_acc": val_acc}
                )
            if due:
                _report(r, model, opt, history, epoch, best, rank, row)
                last_checkpoint = time.monotonic()
                _maybe_inject_failure(self.cfg, run, r, epoch, rank)
        if rank == 0:
            self._write_ticket(r, model, best, mask, history, time.perf_counter() - t_start)

    def _start_weights(self, r: int, template, names: list[str]) -> dict[str, torch.Tensor]:
        if RETRAIN[self.job.imp.retrain].from_ticket:
            return read_ticket(self.run, r - 1, template, set(names))[0]
        return decode_weights(self.run.read_bytes(layout.REWIND), self.run.path(layout.REWIND), template)[0]

    def _mask(self, r: int, template, names: list[str]) -> dict[str, torch.Tensor]:
        """Round 0 is dense; round r prunes `rate` of ticket r-1's surviving weights by global magnitude.
        Rank 0 decides (reading the mask if it was written before) and broadcasts, so all ranks train
        under the bytes on storage and never depend on computing the same threshold independently."""
        if r == 0:
            return dense_mask(template, names)
        mask = None
        if self.rank == 0:
            rel = layout.mask(r)
            if self.run.exists(rel):
                mask = read_mask(self.run, rel)
            else:
                state, prev = read_ticket(self.run, r - 1, template, set(names))
                mask = prune_fraction(state, prev, self.job.imp.rate)
                write_mask(self.run, rel, mask)
        if self.world == 1:
            return mask
        out = {}
        for n in sorted(names):
            t = mask[n].contiguous() if self.rank == 0 else torch.empty(template[n].shape, dtype=torch.float32)
            dist.broadcast(t, src=0)
            out[n] = t
        return out

    def _write_ticket(self, r, model, best, mask, history, seconds) -> None:
        """Ticket, mask and history first, meta.json last (each write atomic): a round is done when its
        meta.json exists, and the driver logs it to MLflow when it sees it."""
        weights = best if best is not None else {k: v.detach().cpu() for k, v in model.state_dict().items()}
        last = history["epochs"][-1]
        meta = TicketMeta(
            round=r,
            density=density(mask),
            val_acc=last.get("selected_val_acc", last["val_acc"]),
            test_acc=last["test_acc"],
            epochs=len(history["epochs"]),
            seconds=seconds,
            starts=history["starts"],
            rewind_epoch=self.job.imp.rewind_epoch,
            run_hash=run_hash(self.job),
            finished_at=time.time(),
        )
        self.run.write_json(layout.history(r), history)
        write_ticket(self.run, r, weights, mask, meta)


def _report(r, model, opt, history, epoch, best, rank, metrics) -> None:
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
            json.dump({"round": r, "epoch": epoch, "history": history}, f)
        ray.train.report({**metrics, "round": r}, checkpoint=ray.train.Checkpoint.from_directory(d))


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


def _accuracy(net, source, idx, device, rank, world, precision) -> float:
    correct, total = count_correct(net, source, idx, device, rank=rank, world=world, precision=precision)
    correct, total = _sum_over_ranks([correct, total], world)
    return correct / total


def _sum_over_ranks(values, world):
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def _maybe_inject_failure(cfg: ImpConfig, run, r, epoch, rank) -> None:
    """Test hook (LP_RAY_INJECT_FAILURE=ROUND:EPOCH): kill rank 0 hard once, right after that epoch's
    checkpoint, to prove a round recovers from its last checkpoint."""
    if cfg.inject_failure != (r, epoch) or rank != 0:
        return
    marker = layout.injected_failure(r, epoch)
    if not run.exists(marker):
        run.write_bytes(marker, b"")
        os._exit(1)
