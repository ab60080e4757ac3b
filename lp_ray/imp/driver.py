"""The IMP round driver: one Ray Train `fit()` per round, masks computed here between rounds
(docs/architecture.md, "IMP with rewinding").

    round 0: dense training 0..E (rewind point saved by the workers after epoch k)
    round r: mask_r = prune(ticket_{r-1}); weights <- rewind point * mask_r; train k..E

A round is finished when its ticket's meta.json exists; finished rounds are skipped, and an
interrupted round resumes from its last epoch checkpoint because its Ray Train run name
(`<job>-<hash>/round_RR`, layout.train_storage) and storage are the same on every rerun. Where the cluster can hold two
rounds' worker groups, round r+1's fit() is started while round r trains and waits at a gate for its
mask (`_RoundLauncher`), hiding Ray Train's per-fit() start-up.
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, replace

import yaml

from lp_ray import interrupt, layout
from lp_ray.data import materialize_data, preflight
from lp_ray.errors import LpRayError
from lp_ray.models import build_model
from lp_ray.progress import RoundProgress, console, make_board
from lp_ray.sparsity import dense_mask, density, prunable_names, prune_fraction
from lp_ray.spec import ClusterSpec, JobSpec, job_to_dict, run_hash, run_name, storage_uri
from lp_ray.store import (
    RunDir,
    TicketMeta,
    TrackingInfo,
    check_storage_reachable,
    decode_weights,
    encode_weights,
    join_uri,
    read_job,
    read_mask,
    read_ticket,
    read_ticket_meta,
    ticket_done,
    write_mask,
    write_rounds_table,
    write_ticket,
    write_tracking,
)
from lp_ray.tracking import Tracker


@dataclass
class ImpResult:
    run: RunDir
    rounds_trained: list[int]
    rounds_skipped: list[int]


def run_dir_for(job: JobSpec, cluster: ClusterSpec) -> RunDir:
    return RunDir(join_uri(storage_uri(cluster), run_name(job)))


def prepare_run(job: JobSpec, cluster: ClusterSpec) -> RunDir:
    """Create or reopen the run directory; refuse one that belongs to a different job."""
    run = run_dir_for(job, cluster)
    if run.exists(layout.JOB):
        old = read_job(run)
        if run_hash(old) != run_hash(job):
            raise LpRayError(f"{run.path()}: holds a different job (hash {run_hash(old)}, expected {run_hash(job)})")
        job = replace(job, imp=replace(job.imp, rounds=max(job.imp.rounds, old.imp.rounds)))
    run.write_bytes(layout.JOB, yaml.safe_dump(job_to_dict(job), sort_keys=False).encode())
    return run


# Job fields that only one data set or model reads: logged to MLflow only for that one.
_ONLY_FOR = {
    "data.num_samples": ("data", "mnist1d"),
    "data.train_size": ("data", "mnist1d"),
    "data.test_size": ("data", "mnist1d"),
    "data.generator": ("data", "mnist1d"),
    "data.shape": ("data", "synthetic"),
    "data.num_classes": ("data", "synthetic"),
    "data.num_train": ("data", "synthetic"),
    "data.num_test": ("data", "synthetic"),
    "model.width": ("model", "conv1d"),
}


def flat_params(job: JobSpec) -> dict[str, object]:
    """The job as MLflow parameters, without fields the job's data set or model does not read."""
    used = {"data": job.data.dataset, "model": job.model.name}
    out = {}
    for section, values in job_to_dict(job).items():
        if not isinstance(values, dict):
            out[section] = values
            continue
        for k, v in values.items():
            key = f"{section}.{k}"
            only = next((o for p, o in _ONLY_FOR.items() if key == p), None)
            if only is not None and used[only[0]] != only[1]:
                continue
            if isinstance(v, dict):
                out.update({f"{key}.{kk}": vv for kk, vv in v.items()})
            else:
                out[key] = v
    return out


def run_imp(job: JobSpec, cluster: ClusterSpec, tracking_uri: str) -> ImpResult:
    from lp_ray.cluster import connect

    if job.train.batch_size % cluster.num_workers:
        raise LpRayError(
            f"train.batch_size={job.train.batch_size} is not divisible by num_workers={cluster.num_workers}"
        )
    from lp_ray.cluster import check_address, check_storage

    # Everything that can be wrong with the environment fails here, before anything is created.
    preflight(job)
    check_storage_reachable(storage_uri(cluster))
    check_address(cluster)
    tracker = Tracker(tracking_uri, job.name, run_hash(job))  # MLflow reachable and usable
    connect(cluster, {"MLFLOW_TRACKING_URI": tracking_uri})
    check_storage(cluster, run_dir_for(job, cluster).uri)
    run = prepare_run(job, cluster)
    data = materialize_data(job, run)
    template = build_model(job.model, data.num_classes, data.input_shape).state_dict()
    prunable = prunable_names(build_model(job.model, data.num_classes, data.input_shape), job.imp.prune_linear)

    parent = tracker.imp_run(flat_params(job), run.uri)
    write_tracking(run, TrackingInfo(tracking_uri, tracker.experiment_id, parent))

    console.print(
        f"[bold]lp-ray imp[/] {run_name(job)}: {job.imp.rounds} rounds of {job.train.epochs} epochs, "
        f"{cluster.num_workers} worker(s) -> {run.uri}"
    )
    trained, skipped = [], []
    board = make_board()
    launcher = _RoundLauncher(job, cluster, run, board)
    with RoundProgress(job.imp.rounds, board) as progress:
        try:
            for r in range(job.imp.rounds):
                if ticket_done(run, r):
                    meta = read_ticket_meta(run, r)
                    _ensure_logged(tracker, parent, meta, run)
                    skipped.append(r)
                    progress.round_done(
                        f"round {r:2d}  done already: density {100 * meta.density:6.2f}%  "
                        f"val {100 * meta.val_acc:.2f}%  test {100 * meta.test_acc:.2f}%"
                    )
                    continue
                progress.round_started(r)
                mask = _round_mask(run, r, job, template, prunable)
                child = tracker.child_run(parent, "imp_round", str(r), f"round {r:02d}")
                t0 = time.time()
                final, early = launcher.run(r)
                meta, history = _finish_round(job, run, r, mask, final, time.time() - t0, template, early)
                _log_round(tracker, child, run, meta, history, parent)
                write_rounds_table(run)
                trained.append(r)
                progress.round_done(
                    f"round {r:2d}  trained: density {100 * meta.density:6.2f}%  val {100 * meta.val_acc:.2f}%  "
                    f"test {100 * meta.test_acc:.2f}%  ({meta.seconds:.0f} s)"
                )
        except BaseException as e:
            launcher.close(wait=not isinstance(e, KeyboardInterrupt))  # Ctrl-C: leave at once
            raise
    tracker.finish(parent)
    return ImpResult(run, trained, skipped)


def _round_mask(run: RunDir, r: int, job: JobSpec, template, prunable):
    """Round 0 is dense; round r prunes `rate` of ticket r-1's surviving weights by global magnitude."""
    if r == 0:
        return dense_mask(template, prunable)
    rel = layout.mask(r)
    if run.exists(rel):
        return read_mask(run, rel)
    state, prev_mask = read_ticket(run, r - 1, template, set(prunable))
    mask = prune_fraction(state, prev_mask, job.imp.rate)
    write_mask(run, rel, mask)
    return mask


class _RoundLauncher:
    """Runs each round's fit() in a thread, and starts the next round's fit() early: once round r is
    training, round r+1's fit() starts (new worker processes, imports, data, model, process group:
    ~10 s on a 2-core machine, which would otherwise sit between every two rounds) and its workers wait
    at a gate on the board until the driver has written their mask. Each round is still its own fit()
    with its own checkpoints, so resuming is unchanged; a failed round cancels the early start."""

    def __init__(self, job: JobSpec, cluster: ClusterSpec, run: RunDir, board):
        self.job, self.cluster, self.run_dir, self.board = job, cluster, run, board
        self.overlap = _can_overlap(cluster)
        self.early: tuple[int, Future] | None = None

    def _start(self, r: int, gated: bool) -> Future:
        # Daemon threads: on Ctrl-C or an error the driver exits at once, and Ray's own shutdown
        # (or, on a cluster, the driver's disconnect) ends the fits they were waiting on.
        future: Future = Future()

        def fit() -> None:
            try:
                future.set_result(_fit_round(self.job, self.cluster, self.run_dir, r, self.board, gated))
            except BaseException as e:  # handed to the waiting driver thread
                future.set_exception(e)

        threading.Thread(target=fit, name=f"lp-ray-fit-round-{r}", daemon=True).start()
        return future

    def run(self, r: int) -> tuple[dict, bool]:
        """Round r's final checkpoint state, and whether its fit() was started early. Its mask is on
        storage by now."""
        import ray

        early = bool(self.early and self.early[0] == r)
        if early:
            future = self.early[1]
            self.early = None
            ray.get(self.board.set_gate.remote(r, "go"))
        else:
            future = self._start(r, gated=False)
        nxt = r + 1
        want_early = self.overlap and nxt < self.job.imp.rounds and not ticket_done(self.run_dir, nxt)
        while True:
            try:
                return future.result(timeout=0.2), early
            except TimeoutError:
                pass
            interrupt.check()
            if want_early and self.early is None and self._training(r):
                self.early = (nxt, self._start(nxt, gated=True))

    def _training(self, r: int) -> bool:
        """Round r's workers have started their epochs (start-ups overlapping each other would only
        compete for the same cores)."""
        import ray

        try:
            s = ray.get(self.board.get.remote(), timeout=2)
        except Exception:
            return False
        return s.get("round") == r

    def close(self, wait: bool = True) -> None:
        """Cancel an early start that will not be used (the run failed or was interrupted) and, unless
        told not to, give it a moment to end cleanly at its gate; whatever is left ends with the driver."""
        import ray

        if self.early is not None:
            r, future = self.early
            self.early = None
            try:
                ray.get(self.board.set_gate.remote(r, "cancel"), timeout=5)
                if wait:
                    future.result(timeout=30)
            except Exception:
                pass  # a cancelled round ends without a checkpoint; nothing of it is kept


def _can_overlap(cluster: ClusterSpec) -> bool:
    """Whether two rounds' worker groups fit on the cluster at once (overlap_rounds unset = auto)."""
    if cluster.overlap_rounds is not None:
        return cluster.overlap_rounds
    import ray

    total = ray.cluster_resources()
    need = {k: v * cluster.num_workers for k, v in cluster.resources_per_worker.items()}
    if cluster.use_gpu:
        need["GPU"] = max(need.get("GPU", 0.0), float(cluster.num_workers))
    return all(total.get(k, 0.0) >= 2 * v for k, v in need.items() if v > 0)


def _fit_round(job: JobSpec, cluster: ClusterSpec, run: RunDir, r: int, board, gated: bool = False) -> dict:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from lp_ray.imp.loop import RoundConfig, train_round

    inject = os.environ.get("LP_RAY_INJECT_FAILURE")
    config = RoundConfig(
        job=job_to_dict(job),
        run_uri=run.uri,
        round=r,
        torch_threads=cluster.torch_threads,
        checkpoint_interval_s=cluster.checkpoint_interval_s,
        board=board,
        inject_failure=tuple(int(x) for x in inject.split(":")) if inject else None,
        gated=gated,
    )
    storage_root, run_folder = run.path().rsplit("/", 1)
    trainer = TorchTrainer(
        train_round,
        train_loop_config=config.as_loop_config(),
        scaling_config=ScalingConfig(
            num_workers=cluster.num_workers,
            use_gpu=cluster.use_gpu,
            resources_per_worker=cluster.resources_per_worker,
            placement_strategy=cluster.placement_strategy,
        ),
        run_config=RunConfig(
            name=f"{run_folder}/{layout.train_storage(r)}",
            storage_path=storage_root,
            storage_filesystem=run.fs if run.scheme else None,
            failure_config=FailureConfig(max_failures=cluster.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    try:
        result = trainer.fit()
    except Exception as e:
        raise LpRayError(f"round {r} failed after {cluster.max_failures} restarts: {_root_cause(e)}") from None
    if result.checkpoint is None:
        raise LpRayError(f"round {r} finished without a checkpoint in {run.path(layout.train_storage(r))}")
    fs, path = result.checkpoint.filesystem, result.checkpoint.path
    with fs.open_input_stream(f"{path}/{layout.CHECKPOINT_STATE}") as f:
        state = json.loads(f.read())
    weights = layout.CHECKPOINT_BEST if job.train.select == "best_val" else layout.CHECKPOINT_MODEL
    with fs.open_input_stream(f"{path}/{weights}") as f:
        state["weights"] = f.read()
    return state


def _root_cause(e: BaseException) -> str:
    while e.__cause__ is not None:
        e = e.__cause__
    return (str(e).strip().splitlines() or [type(e).__name__])[-1][:300]


def _finish_round(job, run, r, mask, state, seconds, template, started_early: bool = False) -> tuple[TicketMeta, dict]:
    from safetensors.torch import load as st_load

    weights = st_load(state["weights"])
    decode_weights(encode_weights(weights), f"round {r} checkpoint", template)  # shape check
    history = state["history"]
    last = history["epochs"][-1]
    meta = TicketMeta(
        round=r,
        density=density(mask),
        val_acc=last.get("selected_val_acc", last["val_acc"]),
        test_acc=last["test_acc"],
        epochs=len(history["epochs"]),
        seconds=seconds,
        starts=history["starts"],
        rewind_epoch=job.imp.rewind_epoch,
        run_hash=run_hash(job),
        started_early=started_early,
    )
    digest = write_ticket(run, r, weights, mask, meta)
    run.write_json(layout.history(r), history)
    return replace(meta, ticket_sha256=digest), history


def _log_round(tracker: Tracker, child: str, run: RunDir, meta: TicketMeta, history: dict, parent: str) -> None:
    tracker.log_metrics(child, history["epochs"], "epoch")
    # On the parent with step = round, so MLflow draws accuracy against the IMP round natively.
    row = {"round": meta.round, "lt_val_acc": meta.val_acc, "lt_test_acc": meta.test_acc, "density": meta.density}
    tracker.log_metrics(parent, [row], "round")
    tracker.log_final(
        child,
        {"final_val_acc": meta.val_acc, "final_test_acc": meta.test_acc, "density": meta.density},
        {
            "ticket_uri": run.uri_of(layout.ticket(meta.round)),
            "ticket_sha256": meta.ticket_sha256,
            "density": f"{meta.density:.6f}",
        },
    )
    tracker.finish(child)


def _ensure_logged(tracker: Tracker, parent: str, meta: TicketMeta, run: RunDir) -> None:
    """A round finished but the driver died before MLflow heard of it: log it now, once."""
    child = tracker.child_run(parent, "imp_round", str(meta.round), f"round {meta.round:02d}")
    info = tracker.client.get_run(child)
    if "final_test_acc" not in info.data.metrics:
        _log_round(tracker, child, run, meta, run.read_json(layout.history(meta.round)), parent)
    elif info.info.status != "FINISHED":
        tracker.finish(child)
