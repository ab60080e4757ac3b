"""The per-worker IMP loop: every round of the job inside one Ray Train run (docs/architecture.md, "IMP with
rewinding"). The worker group, its process group and the data live for the whole job; each round is a
stage inside it:

    mask     rank 0 reads round r's mask, or computes it from ticket r-1 on storage and writes it; then
             broadcasts it, so every rank trains under exactly the mask the run directory holds
    train    a fresh model and optimizer (as a round of its own would have), rewound and masked (the
             optimizer's state too where the recipe rewinds it); epochs end in a checkpoint (round,
             epoch, weights, optimizer state, history)
    ticket   rank 0 writes ticket, mask, history and meta.json (last: the round's "done" marker)

With `imp.particles` > 1 (docs/architecture.md, "Particles") a round after the first trains its
particles instead, in waves of one per slot of the worker group, each finished particle written with its
own marker; then rank 0 soups them into the round's ticket.

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
from dataclasses import asdict, dataclass
from typing import Any

import ray.train
import torch
import torch.distributed as dist
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from safetensors.torch import save_file
from torch.nn.parallel import DistributedDataParallel

from lp_ray import layout
from lp_ray.errors import LpRayError
from lp_ray.imp.retrain import RETRAIN, lr_for, restores_optimizer, saves_optimizer
from lp_ray.imp.soup import make_soup
from lp_ray.opened_run import OpenedRun
from lp_ray.pool.core import bn_subset, recalibrate_bn
from lp_ray.recipes import load_optimizer_state, make_optimizer, optimizer_state, set_lr
from lp_ray.schedules import per_step
from lp_ray.sparsity import apply_mask, dense_mask, density, prune_fraction
from lp_ray.spec import run_hash
from lp_ray.spec_loading import job_from_dict
from lp_ray.store import (
    ParticleRecord,
    RunDir,
    TicketMeta,
    check_sha256,
    decode_weights,
    encode_weights,
    plugin_dirs,
    read_mask,
    read_particle,
    read_ticket,
    sha256,
    ticket_done,
    write_mask,
    write_ticket,
)
from lp_ray.training import (
    accuracy,
    count_correct,
    epoch_seed,
    masked_train_epoch,
    model_to_device,
)


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
    # The DDP workers of one network (cluster.num_workers). The group holds `slots` times as many: a
    # particle round trains `slots` particles at once, one per slot (1 without particles).
    workers_per_network: int = 1

    def as_loop_config(self) -> dict:
        """Ray Train's train_loop_config is a dict: the config travels as its one entry."""
        return {"imp_config": self}


@dataclass
class Resume:
    """A round's saved progress: the last finished epoch and everything needed to go on from it. A
    particle round's checkpoint holds one of these per particle it saved (`particles`)."""

    round: int
    epoch: int
    history: dict
    model: dict[str, torch.Tensor] | None
    optimizer: dict[str, torch.Tensor] | None  # recipes.optimizer_state's tensors
    best: dict[str, torch.Tensor] | None
    particles: dict[int, Resume] | None = None
    particles_done: int = 0  # particles finished when it was taken (orders a particle round's checkpoints)


def read_checkpoint(read: Callable[[str], bytes | None], legacy_round: int | None = None) -> Resume:
    """A checkpoint from its files (`read(name)` gives a file's bytes, None if absent). Checkpoints from
    when every round was its own fit (round_RR/) do not say their round: `legacy_round` does."""
    state = json.loads(read(layout.CHECKPOINT_STATE))
    r = state.get("round", legacy_round)
    if "particles" in state:
        particles = {}
        for p in state["particles"]:
            folder = layout.checkpoint_particle(p)
            particles[p] = read_checkpoint(lambda name, folder=folder: read(f"{folder}/{name}"), r)
        return Resume(r, state["epoch"], {}, None, None, None, particles, state.get("particles_done", 0))
    best = read(layout.CHECKPOINT_BEST)
    return Resume(
        round=r,
        epoch=state["epoch"],
        history=state["history"],
        model=st_load(read(layout.CHECKPOINT_MODEL)),
        optimizer=st_load(read(layout.CHECKPOINT_OPTIMIZER)),
        best=st_load(best) if best is not None else None,
    )


def train_imp(loop_config: dict) -> None:
    cfg: ImpConfig = loop_config["imp_config"]
    torch.set_num_threads(cfg.torch_threads)
    run = RunDir(cfg.run_uri)
    job = job_from_dict(cfg.job, plugin_dirs=plugin_dirs(run, cfg.job))
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


def particle_rounds(job) -> bool:
    return job.imp.particles > 1


class _Worker:
    """One worker of the fit. Without particles the whole group trains each round's one network (DDP).
    With particles the group is `slots` groups of `workers_per_network` workers: slot s trains one
    particle of a wave while the other slots train theirs, each slot its own DDP group; round 0 (and any
    one-network stage) is trained by slot 0 while the others wait at the same epoch boundaries, because
    every worker must report to Ray Train the same number of times."""

    def __init__(self, cfg: ImpConfig, job, run: RunDir, rank: int, world: int, device):
        self.cfg, self.job, self.run = cfg, job, run
        self.rank, self.world, self.device = rank, world, device
        self.per = max(1, min(cfg.workers_per_network, world))
        self.slots = max(1, world // self.per)
        self.slot, self.local = divmod(rank, self.per)
        self.group = None  # the slot's process group for DDP and its reductions (None: the default group)
        if self.slots > 1 and self.per > 1:
            groups = [dist.new_group(list(range(s * self.per, (s + 1) * self.per))) for s in range(self.slots)]
            self.group = groups[self.slot] if self.slot < self.slots else None
        self.opened = OpenedRun.of(job, run)
        self.data = self.opened.data.to(device)  # resident on a GPU for the whole job

    def _fresh_model(self):
        # As a round of its own would: the same seeded initialization on every rank (round 0 trains it;
        # later rounds overwrite it with the rewind point).
        torch.manual_seed(self.job.train.seed)
        return self.opened.new_model()

    # --- a round ------------------------------------------------------------------------------------

    def round(self, r: int, resume: Resume | None) -> None:
        t_start = time.perf_counter()
        names = self.opened.prunable
        template = self._fresh_model().state_dict()
        mask = self._mask(r, template, names)
        if r == 0 or not particle_rounds(self.job):
            self._wave(r, [None], mask, resume, t_start)
            return
        # A particle round: the particles not finished yet, in waves of one per slot; then the soup.
        m = self.job.imp.particles
        todo = [p for p in range(m) if not self.run.exists(layout.particle_record(r, p))]
        for i in range(0, len(todo), self.slots):
            self._wave(r, todo[i : i + self.slots], mask, resume, t_start, particles_done=m - len(todo) + i)
        self._barrier()
        if self.rank == 0:
            self._write_soup(r, mask, time.perf_counter() - t_start)
        self._barrier()

    def _wave(self, r, plan: list, mask, resume: Resume | None, t_start: float, particles_done: int = 0) -> None:
        """Train the networks of `plan` at once, slot s the s-th: [None] is the round's one network (its
        ticket); otherwise particle numbers. All workers step through the same epochs and report together."""
        T = self.job.train
        starts = {p: self._start_epoch(r, _resume_of(resume, p)) for p in plan}
        mine = plan[self.slot] if self.slot < len(plan) else _IDLE
        net = None if mine is _IDLE else _Network(self, r, mine, mask, _resume_of(resume, mine), starts[mine])
        last_checkpoint = time.monotonic()
        for epoch in range(min(starts.values()), T.epochs):
            row = net.train_epoch(epoch) if net is not None and epoch >= net.start else None
            due = row.pop("_due") if row is not None else False  # one network: its group's decision
            if self.slots > 1:  # several: rank 0's clock decides for every slot
                due = epoch == T.epochs - 1 or time.monotonic() - last_checkpoint >= self.cfg.checkpoint_interval_s
                (votes,) = _sum_over_ranks([float(due) if self.rank == 0 else 0.0], self.world)
                due = votes > 0
            if due:
                self._report(r, plan, net, row, particles_done, epoch)
                last_checkpoint = time.monotonic()
                _maybe_inject_failure(self.cfg, self.run, r, epoch, self.rank)
        if net is not None and self.local == 0:
            if mine is None:
                self._write_ticket(r, net.model, net.best, mask, net.history, time.perf_counter() - t_start)
            else:
                self._write_particle(r, mine, net, time.perf_counter() - net.created)
        if self.slots > 1:
            self._barrier()

    def _start_epoch(self, r: int, resume: Resume | None) -> int:
        if resume is not None:
            return resume.epoch + 1
        return 0 if r == 0 else self.job.imp.rewind_epoch

    def _report(self, r, plan, net, row, particles_done: int, epoch: int) -> None:
        """Every worker reports; a network's first worker puts its state into the checkpoint (Ray Train
        merges the workers' folders into one). A particle round's checkpoint says which particles it
        holds; a one-network round's has the files at its top, as before particles existed."""
        metrics = {**(row or {}), "round": r}
        writes = net is not None and self.local == 0
        if not writes and not (self.rank == 0 and plan != [None]):
            ray.train.report(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory() as d:
            if writes:
                folder = d if net.particle is None else os.path.join(d, layout.checkpoint_particle(net.particle))
                os.makedirs(folder, exist_ok=True)
                net.save_checkpoint(folder)
            if self.rank == 0 and plan != [None]:
                state = {"round": r, "epoch": epoch, "particles": plan, "particles_done": particles_done}
                with open(os.path.join(d, layout.CHECKPOINT_STATE), "w") as f:
                    json.dump(state, f)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))

    def _barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    # --- storage ------------------------------------------------------------------------------------

    def _start_weights(self, r: int, template, names: list[str]) -> dict[str, torch.Tensor]:
        if RETRAIN[self.job.imp.retrain].from_ticket:
            return read_ticket(self.run, r - 1, template, set(names))[0]
        return decode_weights(self.run.read_bytes(layout.REWIND), self.run.path(layout.REWIND), template)[0]

    def rewind_optimizer_state(self) -> dict[str, torch.Tensor]:
        """The optimizer's state at the rewind point (the driver checked it exists: check_rewind_point)."""
        rel = layout.REWIND_OPTIMIZER
        try:
            return st_load(self.run.read_bytes(rel))
        except Exception as e:  # safetensors raises several types on bad bytes
            raise LpRayError(f"{self.run.path(rel)}: corrupt or truncated ({str(e).splitlines()[0]})") from None

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

    def _write_particle(self, r: int, p: int, net: _Network, seconds: float) -> None:
        """A finished particle: its weights, then its record (the particle's "done" marker)."""
        weights = net.best if net.best is not None else {k: v.detach().cpu() for k, v in net.model.state_dict().items()}
        data = encode_weights(weights, metadata={"round": str(r), "particle": str(p)})
        self.run.write_bytes(layout.particle_weights(r, p), data)
        last = net.history["epochs"][-1]
        record = ParticleRecord(
            particle=p,
            val_acc=last.get("selected_val_acc", last["val_acc"]),
            test_acc=last["test_acc"],
            epochs=len(net.history["epochs"]),
            seconds=seconds,
            sha256=sha256(data),
            history=net.history,
        )
        self.run.write_json(layout.particle_record(r, p), asdict(record))

    def _write_soup(self, r: int, mask, seconds: float) -> None:
        """The round's ticket: the particles' soup under the round's mask, BatchNorm recalibrated on a
        seeded `soup_bn_fraction` of the training split, scored on validation and, once, on test."""
        job, T, data = self.job, self.job.train, self.data
        template = self._fresh_model().state_dict()
        records = [read_particle(self.run, r, p) for p in range(job.imp.particles)]
        states = []
        for rec in records:
            raw = self.run.read_bytes(layout.particle_weights(r, rec.particle))
            check_sha256(
                raw,
                rec.sha256,
                self.run.path(layout.particle_weights(r, rec.particle)),
                self.run.path(layout.particle_record(r, rec.particle)),
                "delete the particle's two files and rerun `lp-ray imp`",
            )
            states.append(decode_weights(raw, self.run.path(layout.particle_weights(r, rec.particle)), template)[0])
        n_bn = max(1, round(job.imp.soup_bn_fraction * len(data.train_idx)))
        bn_idx = bn_subset(data.train_idx, n_bn, soup_bn_seed(T.seed, r))
        model = model_to_device(self._fresh_model(), self.device)

        def score(state) -> float:
            model.load_state_dict(state)
            recalibrate_bn(model, data.train, bn_idx, T.batch_size, self.device, T.precision)
            return accuracy(model, data.train, data.val_idx, 1000, self.device, T.precision)

        soup, members, val_acc = make_soup(job.imp.soup, states, [rec.val_acc for rec in records], score)
        soup = apply_mask(soup, mask)
        score(soup)  # the soup's own recalibrated statistics
        test_acc = accuracy(model, data.test, torch.arange(len(data.test)), 1000, self.device, T.precision)
        weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        meta = TicketMeta(
            round=r,
            density=density(mask),
            val_acc=val_acc,
            test_acc=test_acc,
            epochs=sum(rec.epochs for rec in records),
            seconds=seconds,
            starts=[],
            rewind_epoch=job.imp.rewind_epoch,
            run_hash=run_hash(job),
            finished_at=time.time(),
            soup=job.imp.soup,
            particles=[
                {
                    "particle": rec.particle,
                    "sha256": rec.sha256,
                    "val_acc": rec.val_acc,
                    "test_acc": rec.test_acc,
                    "epochs": rec.epochs,
                    "in_soup": rec.particle in members,
                }
                for rec in records
            ],
        )
        history = {
            "epochs": [],
            "starts": [],
            "particles": [{"particle": rec.particle, **rec.history} for rec in records],
        }
        self.run.write_json(layout.history(r), history)
        write_ticket(self.run, r, weights, mask, meta)


_IDLE = object()  # a slot with no network in this wave


def _resume_of(resume: Resume | None, particle: int | None) -> Resume | None:
    """The saved state of the wave's network `particle` (None: the round's one network), if any."""
    if resume is None or particle is _IDLE:
        return None
    if particle is None:
        return resume if resume.particles is None else None
    return (resume.particles or {}).get(particle)


def soup_bn_seed(seed: int, r: int) -> int:
    """The seed of round r's soup recalibration subset: fixed per (seed, round), so a rerun recomputes it."""
    return seed * 1_000_003 + r * 10_007 + 7_919


class _Network:
    """One network of a round being trained by this worker's slot: the round's ticket, or a particle.
    Built as a round always was: a fresh seeded model, the start weights (rewind point or previous ticket)
    under the mask, or the saved state of a resumed epoch."""

    def __init__(self, w: _Worker, r: int, particle: int | None, mask, resume: Resume | None, start: int):
        T = w.job.train
        self.w, self.r, self.particle, self.mask, self.start = w, r, particle, mask, start
        self.created = time.perf_counter()
        model = w._fresh_model()
        if resume is not None:
            model.load_state_dict(resume.model)
            self.history, self.best = resume.history, resume.best
        else:
            if r > 0:  # the rewind point (or, for lr_rewind and finetune, the previous ticket), masked
                model.load_state_dict(apply_mask(w._start_weights(r, model.state_dict(), w.opened.prunable), mask))
            self.history, self.best = {"epochs": [], "starts": [], "best_val": -1.0}, None
        if start < T.epochs:  # (a checkpoint of the last epoch whose ticket was not written yet trains nothing)
            self.history["starts"].append(start)
        model_to_device(model, w.device)
        if w.per == 1:
            net = model
        elif w.group is None:
            net = ray.train.torch.prepare_model(model, move_to_device=False)
        else:  # one DDP group per slot: a particle's workers average gradients among themselves only
            ids = [w.device] if w.device.type == "cuda" else None
            net = DistributedDataParallel(model, device_ids=ids, process_group=w.group)
        self.model, self.net = model, net
        self.opt = make_optimizer(net, T)
        if resume is not None:
            load_optimizer_state(self.opt, model, resume.optimizer)
        elif r > 0 and restores_optimizer(w.job):  # the optimizer's state at the rewind point, pruned moments zeroed
            load_optimizer_state(self.opt, model, w.rewind_optimizer_state(), mask)
        per_worker_batch = T.batch_size // w.per
        per_rank = -(-len(w.data.train_idx) // w.per)  # ceil, as shard_batches pads
        self.steps = -(-per_rank // per_worker_batch)
        self.per_worker_batch = per_worker_batch
        self.last_checkpoint = time.monotonic()

    def train_epoch(self, epoch: int) -> dict:
        w, r, job, T = self.w, self.r, self.w.job, self.w.job.train
        run, rank, world, data, board = w.run, w.local, w.per, w.data, w.cfg.board
        if r == 0 and epoch == job.imp.rewind_epoch and rank == 0 and not run.exists(layout.REWIND):
            if saves_optimizer(job):  # before the weights: the rewind point exists once both do
                state = st_save(optimizer_state(self.opt, self.model), metadata={"epoch": str(epoch)})
                run.write_bytes(layout.REWIND_OPTIMIZER, state)
            run.write_bytes(layout.REWIND, encode_weights(self.model.state_dict(), metadata={"epoch": str(epoch)}))
        t0 = time.perf_counter()
        steps = self.steps
        lr = lr_for(job.imp.retrain, T, r, epoch, 0, steps)
        set_lr(self.opt, lr)
        lr_of_step = (lambda step: lr_for(job.imp.retrain, T, r, epoch, step, steps)) if per_step(T) else None
        gen = torch.Generator().manual_seed(epoch_seed(T.seed, r, epoch, self.particle or 0))
        shown = {"round": r, "epochs": T.epochs, "steps": self.steps} | (
            {} if self.particle is None else {"particle": self.particle}
        )
        pushes = board is not None and w.rank == 0

        def on_step(step, loss, last=[0.0]):  # noqa: B006 (bound per epoch: when it last pushed)
            if pushes and (time.perf_counter() - last[0] > 0.5 or step == steps - 1):
                last[0] = time.perf_counter()
                board.update.remote({**shown, "epoch": epoch, "step": step + 1, "loss": loss})

        loss, acc = masked_train_epoch(
            self.net,
            self.opt,
            data.train,
            data.train_idx,
            self.per_worker_batch,
            self.mask,
            gen,
            w.device,
            rank,
            world,
            on_step,
            T.precision,
            lr_of_step,
            T.grad_clip,
        )
        due = epoch == T.epochs - 1 or time.monotonic() - self.last_checkpoint >= w.cfg.checkpoint_interval_s
        # one all-reduce carries the epoch's metrics and rank 0's checkpoint decision (every rank must
        # call report() the same number of times)
        loss, acc, due = _sum_over_ranks([loss, acc, float(due) if rank == 0 else 0.0], world, w.group)
        loss, acc, due = loss / world, acc / world, due > 0
        if due:
            self.last_checkpoint = time.monotonic()
        val_acc = _accuracy(self.net, data.train, data.val_idx, w.device, rank, world, T.precision, w.group)
        row = {
            "epoch": epoch,
            "train_loss": loss,
            "train_acc": acc,
            "val_acc": val_acc,
            "lr": lr,
            "seconds": time.perf_counter() - t0,
        }
        if w.device.type == "cuda":  # what the round needed of the GPU, for sizing jobs
            row["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(w.device) / 2**20
        if T.select == "best_val" and val_acc > self.history["best_val"]:
            self.history["best_val"] = val_acc
            self.best = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        if epoch == T.epochs - 1:  # the test set is touched once, for the report
            if self.best is not None:
                self.model.load_state_dict(self.best)
            row["test_acc"] = _accuracy(
                self.net, data.test, torch.arange(len(data.test)), w.device, rank, world, T.precision, w.group
            )
            row["selected_val_acc"] = self.history["best_val"] if self.best is not None else val_acc
        self.history["epochs"].append(row)
        if pushes:
            board.update.remote(
                {**shown, "epoch": epoch + 1, "step": steps, "loss": loss} | {"train_acc": acc, "val_acc": val_acc}
            )
        return {**row, "_due": due}

    def save_checkpoint(self, folder: str) -> None:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()},
            os.path.join(folder, layout.CHECKPOINT_MODEL),
        )
        save_file(optimizer_state(self.opt, self.model), os.path.join(folder, layout.CHECKPOINT_OPTIMIZER))
        if self.best is not None:
            save_file({k: v.contiguous() for k, v in self.best.items()}, os.path.join(folder, layout.CHECKPOINT_BEST))
        epoch = self.history["epochs"][-1]["epoch"] if self.history["epochs"] else self.start - 1
        with open(os.path.join(folder, layout.CHECKPOINT_STATE), "w") as f:
            json.dump({"round": self.r, "epoch": epoch, "history": self.history}, f)


def _accuracy(net, source, idx, device, rank, world, precision, group=None) -> float:
    correct, total = count_correct(net, source, idx, device, rank=rank, world=world, precision=precision)
    correct, total = _sum_over_ranks([correct, total], world, group)
    return correct / total


def _sum_over_ranks(values, world, group=None):
    """Sums over the ranks of `group` (None: every rank of the fit), `world` of them."""
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, group=group)
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
