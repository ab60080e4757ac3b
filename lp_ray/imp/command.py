"""`lp-ray imp`: the whole job is one Ray Train run (docs/architecture.md, "IMP with rewinding").

    round 0: dense training 0..E (rewind point saved by the workers after epoch k)
    round r: mask_r = prune(ticket_{r-1}); weights <- rewind point * mask_r; train k..E

The worker group lives for the whole job and trains every unfinished round in turn (imp/loop.py); rank 0
writes each round's mask, ticket and meta.json. The driver starts the fit, follows the rounds as their
meta.json appears, and logs each to MLflow as it finishes. A round is finished when its meta.json
exists: finished rounds are never retrained, and an interrupted round resumes from its last epoch
checkpoint, whatever stopped it (a crashed worker, a killed driver, Ctrl-C).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from dataclasses import dataclass, replace

from lp_ray import interrupt, layout
from lp_ray.data.loading import materialize_data
from lp_ray.errors import LpRayError
from lp_ray.lease import Lease, command_line
from lp_ray.opened_run import OpenedRun
from lp_ray.preflight import preflight
from lp_ray.progress import RoundProgress, console, make_board, say
from lp_ray.spec import ClusterSpec, JobSpec, job_to_dict, run_hash, run_name, storage_uri
from lp_ray.store import (
    RunDir,
    TrackingInfo,
    check_storage_reachable,
    read_job,
    read_ticket,
    read_ticket_meta,
    run_dir_for,
    ticket_done,
    write_job,
    write_rounds_table,
    write_tracking,
)
from lp_ray.tracking import logged
from lp_ray.tracking.networks import DEFAULT_LOG_MODELS, check_log_models, logs_tickets
from lp_ray.tracking.stores import runs_page


@dataclass
class ImpResult:
    run: RunDir
    rounds_trained: list[int]
    rounds_skipped: list[int]
    mlflow_behind: bool = False  # MLflow was unreachable at the end: the IMP run lacks part of the rounds


def prepare_run(job: JobSpec, cluster: ClusterSpec) -> RunDir:
    """Create or reopen the run directory; refuse one that belongs to a different job."""
    run = run_dir_for(job, cluster)
    if run.exists(layout.JOB):
        old = read_job(run)
        if run_hash(old) != run_hash(job):
            raise LpRayError(f"{run.path()}: holds a different job (hash {run_hash(old)}, expected {run_hash(job)})")
        job = replace(job, imp=replace(job.imp, rounds=max(job.imp.rounds, old.imp.rounds)))
    write_job(run, job)
    return run


def run_imp(
    job: JobSpec,
    cluster: ClusterSpec,
    tracking_uri: str,
    mlflow_parent: str | None = None,
    wait: bool = True,
    log_models: str = DEFAULT_LOG_MODELS,
) -> ImpResult:
    """Train (or resume, or extend) the job's IMP rounds in its run directory and log them to MLflow;
    `mlflow_parent`: the run a new IMP run nests under (a sweep's trial). The run's lease is held from
    before the run directory is written until the end; another command holding it is waited for
    (`wait`), or is an error. `log_models`: "all" logs the tickets as MLflow LoggedModels."""
    from lp_ray.cluster import connect

    check_log_models(log_models)
    if job.train.batch_size % cluster.num_workers:
        raise LpRayError(
            f"train.batch_size={job.train.batch_size} is not divisible by num_workers={cluster.num_workers}"
        )
    from lp_ray.cluster import check_address, check_storage

    # Everything that can be wrong with the environment fails here, before anything is created.
    preflight(job)
    check_storage_reachable(storage_uri(cluster))
    check_address(cluster)
    tracker = logged.tracker_for(job, tracking_uri, run_dir_for(job, cluster))  # MLflow reachable and usable
    connect(cluster, {"MLFLOW_TRACKING_URI": tracking_uri}, job.plugin_versions)
    check_storage(cluster, run_dir_for(job, cluster).uri)
    with Lease(run_dir_for(job, cluster), layout.lease_file("imp"), command_line(), wait, say) as lease:
        return _run_leased(job, cluster, tracking_uri, tracker, mlflow_parent, lease, log_models)


def _run_leased(job, cluster, tracking_uri, tracker, mlflow_parent, lease: Lease, log_models: str) -> ImpResult:
    run = prepare_run(job, cluster)
    for folder in ["", *(layout.round_dir(r) for r in range(job.imp.rounds))]:
        run.remove_orphans(folder)  # half-written files of an imp killed mid-write
    materialize_data(job, run)

    rounds = range(job.imp.rounds)
    skipped = [r for r in rounds if ticket_done(run, r)]
    check_rewind_point(job, run, [r for r in rounds if r > 0 and r not in skipped])
    parent = logged.imp_run(tracker, job, run, mlflow_parent, work=len(skipped) < job.imp.rounds)
    write_tracking(run, TrackingInfo(tracking_uri, tracker.experiment_id, parent))

    console.print(
        f"[bold]lp-ray imp[/] {run_name(job)}: {job.imp.rounds} rounds of {job.train.epochs} epochs{_recipe(job)}{_particles(job)}, "
        f"{cluster.num_workers} worker(s) -> {run.uri}"
    )
    trained: list[int] = []
    epochs = job.train.epochs
    board = make_board()
    finished = [read_ticket_meta(run, r) for r in skipped]  # each round's meta read once, as it finishes
    with RoundProgress(job.imp.rounds, board) as progress:
        tracker.attempt(logged.ensure_rounds_logged, tracker, parent, run, finished, epochs)
        for meta in finished:
            r = meta.round
            progress.round_done(
                f"round {r:2d}  done already: density {100 * meta.density:6.2f}%  "
                f"val {100 * meta.val_acc:.2f}%  test {100 * meta.test_acc:.2f}%"
            )
        todo = [r for r in rounds if r not in skipped]
        if todo:
            fit = _start_fit(job, cluster, run, board)
            while todo:
                ended = _wait(fit, 0.2)
                # Rounds finish inside the one fit: log each as its meta.json appears (written last).
                while todo and ticket_done(run, todo[0]):
                    r = todo.pop(0)
                    meta = read_ticket_meta(run, r)
                    write_rounds_table(run)
                    trained.append(r)
                    finished.append(meta)
                    # this round, and any an outage of MLflow kept from it
                    tracker.attempt(logged.ensure_rounds_logged, tracker, parent, run, finished, epochs)
                    progress.round_done(
                        f"round {r:2d}  trained: density {100 * meta.density:6.2f}%  val {100 * meta.val_acc:.2f}%  "
                        f"test {100 * meta.test_acc:.2f}%  ({meta.seconds:.0f} s)"
                    )
                interrupt.check()
                lease.check()
                if ended and todo:
                    fit.result()  # raises the fit's error, if it had one
                    raise LpRayError(f"round {todo[0]}: the Ray Train run ended without its ticket in {run.path()}")
    write_rounds_table(run, only_if_stale=True)  # a driver killed after a round's ticket, before its table
    if tracker.attempt(log_imp, tracker, parent, job, run, log_models) is not None:
        console.print(f"MLflow: {runs_page(tracking_uri, tracker.experiment_id)}", highlight=False)
    tracker.outage_note("IMP run")
    return ImpResult(run, trained, skipped, mlflow_behind=tracker.down_since is not None)


def log_imp_again(job: JobSpec, run: RunDir, tracking_uri: str, log_models: str) -> None:
    """After an outage of MLflow that outlasted `imp`: the IMP run's logging once more, if MLflow answers
    now (`lp-ray run` calls it after its pool and report, so a short outage leaves nothing behind)."""
    from lp_ray.store import read_tracking

    tracker = logged.tracker_for(job, tracking_uri, run, ride_out=True)
    if tracker.attempt(log_imp, tracker, read_tracking(run).imp_run_id, job, run, log_models) is not None:
        say(f"MLflow at {tracking_uri}: the IMP run has every round now")
    else:
        tracker.outage_note("IMP run")


def log_imp(tracker, parent: str, job: JobSpec, run, log_models: str) -> bool:
    """Every round in MLflow (those an outage kept out too), the tickets as LoggedModels when `log_models`
    says so, and the IMP run's headline and description."""
    metas = [read_ticket_meta(run, r) for r in range(job.imp.rounds)]
    logged.ensure_rounds_logged(tracker, parent, run, metas, job.train.epochs)
    if logs_tickets(log_models):
        opened = OpenedRun.of(job, run)
        example = opened.example_inputs()
        logged.log_tickets(tracker, parent, run, metas, lambda r: (opened.network(read_ticket(run, r)[0]), example))
    logged.finish_imp(tracker, parent, metas, run)
    return True


def check_rewind_point(job: JobSpec, run, todo: list[int]) -> None:
    """Rounds left to rewind need the optimizer's state at the rewind point where the recipe rewinds it:
    a rewind point with weights only (a run whose file was deleted) is one line here, not a failed round."""
    from lp_ray.imp.retrain import restores_optimizer

    if todo and restores_optimizer(job) and run.exists(layout.REWIND) and not run.exists(layout.REWIND_OPTIMIZER):
        raise LpRayError(
            f"{run.path(layout.REWIND_OPTIMIZER)} is missing: the rewind point holds no optimizer state, which "
            f"this job's recipe ({job.train.optimizer}) rewinds; restore the file, or run the job with "
            "imp.rewind_optimizer: false (a new run)"
        )


def _recipe(job: JobSpec) -> str:
    """The recipe where it is not the paper's (SGD, step schedule): `(adamw, cosine, 2 warm-up epochs)`."""
    t = job.train
    if t.optimizer == "sgd" and t.schedule == "step":
        return ""
    warm = f", {t.warmup_epochs} warm-up epoch(s)" if t.warmup_epochs else ""
    return f" ({t.optimizer}, {t.schedule}{warm})"


def _particles(job: JobSpec) -> str:
    i = job.imp
    return "" if i.particles == 1 else f" ({i.particles} particles per round after the first, {i.soup} soup)"


def _wait(fit: Future, seconds: float) -> bool:
    """Whether the fit has ended (its error, if any, stays in the future). A Ctrl-C while waiting
    propagates: only the future's own outcome is caught."""
    try:
        fit.exception(timeout=seconds)
    except TimeoutError:
        return False
    return True


def _start_fit(job: JobSpec, cluster: ClusterSpec, run: RunDir, board) -> Future:
    """The job's Ray Train run, in a daemon thread: on Ctrl-C or an error the driver leaves at once, and
    Ray's shutdown (or, on a cluster, the driver's disconnect) ends the fit it was waiting on."""
    future: Future = Future()

    def fit() -> None:
        try:
            future.set_result(_fit(job, cluster, run, board))
        except BaseException as e:  # handed to the waiting driver thread
            future.set_exception(e)

    threading.Thread(target=fit, name="lp-ray-imp-fit", daemon=True).start()
    return future


def _fit(job: JobSpec, cluster: ClusterSpec, run: RunDir, board) -> None:
    """Every unfinished round in one TorchTrainer.fit(). Each invocation gets a new Ray Train run name
    (train/fit_NN): a finished Ray Train run would only hand back its old result, so extending a run or
    resuming after a killed driver must start a new one; it resumes from the newest usable checkpoint of
    any earlier fit of this run (`latest_checkpoint`), and Ray Train restarts a crashed worker group from
    this fit's own last checkpoint."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

    from lp_ray.imp.loop import ImpConfig, train_imp

    inject = os.environ.get("LP_RAY_INJECT_FAILURE")
    config = ImpConfig(
        job=job_to_dict(job),
        run_uri=run.uri,
        torch_threads=cluster.torch_threads,
        checkpoint_interval_s=cluster.checkpoint_interval_s,
        board=board,
        resume_from=latest_checkpoint(run),
        inject_failure=tuple(int(x) for x in inject.split(":")) if inject else None,
        workers_per_network=cluster.num_workers,
    )
    slots = particle_slots(job, cluster)
    if job.imp.particles > 1:
        say(
            f"particles: {slots} of {job.imp.particles} train at once ({cluster.num_workers} worker(s) each: "
            f"what the cluster has free room for now)"
        )
    storage_root, run_folder = run.path().rsplit("/", 1)
    fits = [n for n in run.list_dir(layout.TRAIN) if layout.parse_fit(n) is not None]
    name = layout.train_fit(1 + max((layout.parse_fit(n) for n in fits), default=-1))
    trainer = imp_trainer_class(fit_in_driver())(
        train_imp,
        train_loop_config=config.as_loop_config(),
        scaling_config=ScalingConfig(
            num_workers=cluster.num_workers * slots,
            use_gpu=cluster.use_gpu,
            resources_per_worker=cluster.resources_per_worker,
            placement_strategy=cluster.placement_strategy,
        ),
        run_config=RunConfig(
            name=f"{run_folder}/{name}",
            storage_path=storage_root,
            storage_filesystem=run.fs if run.scheme else None,
            failure_config=FailureConfig(max_failures=cluster.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    try:
        trainer.fit()
    except Exception as e:
        r = next((r for r in range(job.imp.rounds) if not ticket_done(run, r)), job.imp.rounds - 1)
        raise LpRayError(f"round {r} failed after {cluster.max_failures} restarts: {_root_cause(e)}") from None


def imp_trainer_class(in_driver: bool) -> type:
    """Ray Train's TorchTrainer less the default callbacks an IMP fit has no use for, each one more
    process per fit, started while the workers start (docs/architecture.md, "IMP with rewinding"):

    - Ray Data's: Ray 2.60 starts a DatasetManager actor in every fit() even when the trainer has no
      `datasets` (lp-ray's never has: each worker loads its data itself); nothing reads it.
    - The placement-group cleaner, when the fit runs in a command's driver (`in_driver`): a detached
      actor that removes the workers' placement group should the controller die while its Ray job lives
      on. Ray removes the group itself once its creator (the controller) and its job are both gone, and
      a command's job ends with the command. The cleaner also asks Ray's State API, which needs the
      dashboard that a private Ray (or `ray start --include-dashboard=false`) has not: after a killed
      driver it retries until its thread fails, and its process stays on the cluster. Sweep trials keep
      it: their fits run in Tune's actors, under a job that outlives them.

    Measured, a tiny `lp-ray imp` on an idle 2-core machine: without Ray Data's, median 26.3 vs 27.0 s
    (6 alternating pairs, within noise: it is off the critical path); without the cleaner as well (the
    worker group waits for its registration), 17.7 vs 19.2 s on a shared cluster (4 alternating pairs,
    faster in each)."""
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    unused = (DatasetsCallback, PlacementGroupCleanerCallback) if in_driver else (DatasetsCallback,)

    class ImpTrainer(TorchTrainer):
        def _create_default_callbacks(self):
            return [c for c in super()._create_default_callbacks() if not isinstance(c, unused)]

    return ImpTrainer


def fit_in_driver() -> bool:
    """Whether this process is a command's Ray driver (not a task or actor, such as a sweep's trial)."""
    import ray

    return ray.get_runtime_context().worker.mode == ray.SCRIPT_MODE


def particle_slots(job: JobSpec, cluster: ClusterSpec) -> int:
    """How many particles of a round train at once: as many worker groups of `num_workers` as the
    cluster has free room for now (at least one, at most `imp.particles`; 1 without particles). Results
    do not depend on it: a particle's training is a function of (seed, round, particle) alone."""
    import ray

    if job.imp.particles == 1:
        return 1
    free = ray.available_resources()
    need = dict(cluster.resources_per_worker)
    if cluster.use_gpu:
        need.setdefault("GPU", 1.0)
    room = min((int(free.get(k, 0.0) // (v * cluster.num_workers) + 1e-9) for k, v in need.items() if v > 0), default=1)
    return max(1, min(job.imp.particles, room))


def latest_checkpoint(run: RunDir) -> str | None:
    """The newest (round, epoch) checkpoint of an unfinished round that any earlier fit of this run left
    (relative to the run directory), or None. A checkpoint whose files do not all read back (a copy cut
    short by a crash) is passed over for the one before it. Runs made when every round was its own fit
    keep theirs under round_RR/; they count too, so an upgrade mid-run loses nothing."""
    from lp_ray.imp.loop import read_checkpoint

    folders = [f"{layout.TRAIN}/{n}" for n in run.list_dir(layout.TRAIN) if layout.parse_fit(n) is not None]
    folders += [n for n in run.list_dir("") if layout.parse_round_dir(n) is not None]
    found = []
    for folder in folders:
        for c in run.list_dir(folder):
            rel = f"{folder}/{c}"
            if not c.startswith("checkpoint_") or not run.exists(f"{rel}/{layout.CHECKPOINT_STATE}"):
                continue
            try:
                state = run.read_json(f"{rel}/{layout.CHECKPOINT_STATE}")
                r = state.get("round", layout.parse_round_dir(folder))
                if r is not None and not ticket_done(run, r):  # a particle round's: later waves are newer
                    found.append((r, state.get("particles_done", 0), state["epoch"], rel))
            except (LpRayError, KeyError, TypeError, AttributeError):
                continue
    for r, _, _, rel in sorted(found, reverse=True):

        def read(name, rel=rel):
            return run.read_bytes(f"{rel}/{name}") if run.exists(f"{rel}/{name}") else None

        try:
            read_checkpoint(read, r)
            return rel
        except Exception:  # truncated safetensors or JSON: the checkpoint before it
            continue
    return None


def _root_cause(e: BaseException) -> str:
    while e.__cause__ is not None:
        e = e.__cause__
    return (str(e).strip().splitlines() or [type(e).__name__])[-1][:300]
