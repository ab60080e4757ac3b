"""`lp-ray sweep`: the trials of an experiment on Ray Tune (docs/architecture.md, "Experiments").

Each trial is a function trainable that drives IMP (Ray Train fits) and the pool (evaluator actors) for
its job, exactly as `lp-ray run` does. The experiment directory `<storage>/experiments/<name>-<hash>/`
holds experiment.json (the resolved spec and its trials) and trials.parquet (trial, cell, seed, run
directory, status).

Resuming is our own index, not `Tuner.restore`: a trial's state lives in its content-hash run directory
(finished rounds and targets on disk, mid-round checkpoints), so a rerun after a killed driver
recomputes each trial's status from disk and hands only the unfinished ones to a fresh Tuner. That also
skips a trial another sweep has finished, which Tune's own experiment state cannot know about.

Train V2 inside Tune: no Tune stop conditions or schedulers (a trial runs to the end); a trial asks Tune
for little CPU and its fit and evaluators are scheduled as ordinary Ray tasks outside its placement, so
they compete for the cluster instead of deadlocking inside a trial's reservation.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from lp_ray import layout
from lp_ray.errors import LpRayError
from lp_ray.experiment.spec import ExperimentSpec, PoolVariant, Trial
from lp_ray.lease import COMMAND_ENV, Lease, command_line
from lp_ray.progress import say
from lp_ray.spec import ClusterSpec, job_to_dict, run_hash, run_name, storage_uri
from lp_ray.store import RunDir, check_storage_reachable, join_uri

TRIAL_CPU = 0.25  # what a trial's own (driver) process asks Tune for


def experiment_dir(exp: ExperimentSpec, cluster: ClusterSpec) -> RunDir:
    return RunDir(join_uri(join_uri(storage_uri(cluster), layout.EXPERIMENTS), exp.dir_name()))


def trial_run(trial: Trial, cluster: ClusterSpec) -> RunDir:
    from lp_ray.store import run_dir_for

    return run_dir_for(trial.job, cluster)


def trial_stage(trial: Trial, variants: list[PoolVariant], cluster: ClusterSpec, analyses=()) -> tuple[str, str]:
    """(status, stage) read from the trial's run directory: done / partial / queued, and e.g.
    'round 7/11' or 'pool average 4/11 targets, 38% of its evaluations'."""
    from lp_ray.analysis.running import analysis_done
    from lp_ray.store import ticket_done

    run = trial_run(trial, cluster)
    rounds = trial.job.imp.rounds
    if not run.exists(layout.JOB):
        return "queued", ""
    trained = sum(ticket_done(run, r) for r in range(rounds))
    if trained < rounds:
        return "partial", f"round {trained}/{rounds}"
    for v in variants:
        done = sum(run.exists(layout.target_meta(v.name, r)) for r in range(rounds))
        if done < rounds:
            return (
                "partial",
                f"pool {v.name} {done}/{rounds} targets, {_search_percent(trial, v, run):.0f}% of its evaluations",
            )
    for a in analyses:
        if not analysis_done(run, a):
            return "partial", f"analysis {a}"
    return "done", "done"


def _search_percent(trial: Trial, variant: PoolVariant, run: RunDir) -> float:
    """How far a search is: its evaluations in trace.parquet out of all its chains will make (every step
    of a method scores the same number of coefficients, so the total is known before it starts; a
    fast search's confirmations count as if every step had one)."""
    from lp_ray.pool.search import planned_evaluations

    total = planned_evaluations(variant.settings(trial.job), list(range(trial.job.imp.rounds)))
    trace = layout.trace(variant.name)
    done = run.read_table(trace).num_rows if run.exists(trace) else 0
    return 100 * min(done, total) / total


def write_index(
    exp_dir: RunDir, exp: ExperimentSpec, cluster: ClusterSpec, failed: set[int] = frozenset()
) -> list[dict]:
    rows = []
    for t in exp.trials():
        status, _ = trial_stage(t, exp.variants(), cluster, exp.analyses)
        if status != "done" and t.index in failed:
            status = "failed"
        rows.append(
            {
                "trial": t.index,
                "cell": t.cell,
                "seed": t.seed,
                "run_dir": trial_run(t, cluster).uri,
                "run_name": run_name(t.job),
                "status": status,
            }
        )
    exp_dir.write_table(layout.TRIALS, pa.Table.from_pylist(rows))
    return rows


def _trial_fn(config: dict) -> None:
    """One trial, inside a Tune worker: IMP, then every pool variant's search (each in pool/<its name>/),
    then the experiment's analyses."""
    from ray import tune

    from lp_ray.imp.command import run_imp
    from lp_ray.pool.command import run_pool
    from lp_ray.spec_loading import cluster_from_dict, job_from_dict
    from lp_ray.tracking import logged
    from lp_ray.tracking.tracker import Tracker

    t = config["trial"]
    wait = t["lease"]["wait"]
    os.environ[COMMAND_ENV] = f"{t['lease']['command']} (trial {t['index']})"  # who holds its leases
    job = job_from_dict(t["job"])
    cluster = cluster_from_dict(t["cluster"], "sweep")
    uri = t["mlflow"]["uri"]
    # The trial's own run, under the sweep's, started with the trial: its IMP run nests in it.
    tracker = Tracker(uri, "", run_hash(job), t["mlflow"]["experiment_id"])
    trial = Trial(t["index"], t["cell"], t["seed"], job)
    mine = logged.trial_run(tracker, t["mlflow"]["sweep_run"], trial)
    try:
        log_models = t["mlflow"]["log_models"]
        result = run_imp(job, cluster, uri, mlflow_parent=mine, wait=wait, log_models=log_models)
        for v in t["variants"]:
            run_pool(
                result.run.uri,
                v.settings(job),
                cluster,
                uri,
                name=v.name,
                parallel_evals=_free_evaluators(cluster),
                wait=wait,
                log_models=log_models,
            )
        from lp_ray.analysis import run_analysis
        from lp_ray.analysis.running import analysis_done

        for a in t["analyses"]:
            if not analysis_done(result.run, a):
                run_analysis(a, result.run.uri, cluster, uri, wait=wait)  # its defaults
    except BaseException:
        tracker.attempt(tracker.finish, mine, "FAILED")
        raise
    tracker.attempt(tracker.finish, mine)  # (a tracking server down now: the trial's work is done all the same)
    tune.report({"finished": 1})


def _free_evaluators(cluster: ClusterSpec) -> int:
    """Evaluators that fit in what the cluster has free now (at least one): asking for more than is free
    would leave actors pending with evaluations queued on them while other trials hold the CPUs."""
    from lp_ray.pool.executors import eval_capacity

    return max(1, min(eval_capacity(cluster.eval_resources, free_only=True), 10**3))


def sweep_cluster(cluster: ClusterSpec) -> ClusterSpec:
    """The cluster spec trials run with: an absolute storage path (Tune runs each trial in its own working
    directory)."""
    if "://" not in cluster.storage_path:
        cluster = dataclasses.replace(cluster, storage_path=str(Path(cluster.storage_path).expanduser().resolve()))
    return cluster


def run_sweep(
    exp: ExperimentSpec,
    cluster: ClusterSpec,
    tracking_uri: str,
    max_concurrent: int | None,
    wait: bool = True,
    then: Callable[[RunDir], None] | None = None,
    log_models: str = "best",
) -> RunDir:
    """Every unfinished trial on Ray Tune, then `then` (the report and its logging), holding the
    experiment directory's lease (a second sweep of the same experiment waits, then finds nothing to
    do); each trial holds its run's, its searches' and its analyses' leases, so two experiments that
    share a trial compute it once. `log_models`: which networks every trial logs as MLflow models."""
    from lp_ray.cluster import check_address, check_storage, connect
    from lp_ray.preflight import preflight
    from lp_ray.tracking import logged
    from lp_ray.tracking.networks import check_log_models

    trials = exp.trials()
    # Everything checked before anything is written or started.
    check_log_models(log_models)
    for t in trials:
        preflight(t.job)
        if t.job.train.batch_size % cluster.num_workers:
            raise LpRayError(f"trial {t.index}: train.batch_size is not divisible by num_workers={cluster.num_workers}")
    if max_concurrent is not None and max_concurrent < 1:
        raise LpRayError(f"--max-concurrent must be at least 1, got {max_concurrent}")
    check_storage_reachable(storage_uri(cluster))
    check_address(cluster)
    tracker = logged.tracker_for(trials[0].job, tracking_uri)  # MLflow usable
    cluster = sweep_cluster(cluster)
    exp_dir = experiment_dir(exp, cluster)
    ident = {**exp.identity(), "trials": [{"trial": t.index, "cell": t.cell, "seed": t.seed} for t in trials]}
    if exp_dir.exists(layout.EXPERIMENT) and exp_dir.read_json(layout.EXPERIMENT) != ident:
        raise LpRayError(f"{exp_dir.uri}: holds a different experiment under the same hash; move it away")
    plugins = {k: v for t in trials for k, v in t.job.plugin_versions.items()}
    connect(cluster, {"MLFLOW_TRACKING_URI": tracking_uri}, plugins)
    check_storage(cluster, exp_dir.uri)
    with Lease(exp_dir, layout.lease_file("sweep"), command_line(), wait, say):
        mlflow = {"uri": tracking_uri, "experiment_id": tracker.experiment_id, "log_models": log_models}
        _sweep_leased(exp, trials, ident, cluster, tracker, mlflow, max_concurrent, exp_dir, wait)
        if then is not None:
            then(exp_dir)
    return exp_dir


def _sweep_leased(exp, trials, ident, cluster, tracker, mlflow, max_concurrent, exp_dir, wait) -> None:
    from lp_ray.progress import console
    from lp_ray.tracking import logged

    exp_dir.remove_orphans("")  # half-written files of a sweep killed mid-write
    if not exp_dir.exists(layout.EXPERIMENT):
        exp_dir.write_json(layout.EXPERIMENT, ident)
    rows = write_index(exp_dir, exp, cluster)
    todo = [t for t, row in zip(trials, rows, strict=True) if row["status"] != "done"]
    sweep = logged.sweep_run(tracker, exp, exp_dir, work=bool(todo))  # started with the sweep
    console.print(
        f"[bold]lp-ray sweep[/] {exp.dir_name()}: {len(trials)} trial(s) ({len(exp.seeds)} seed(s) x "
        f"{len(exp.cells())} cell(s)), pool {', '.join(exp.variant_names())}; {len(trials) - len(todo)} done already "
        f"-> {exp_dir.uri}"
    )
    failed: set[int] = set()
    if todo:
        mlflow = {**mlflow, "sweep_run": sweep}
        lease = {"wait": wait, "command": command_line()}
        try:
            failed = _tune(exp, todo, cluster, mlflow, lease, max_concurrent, exp_dir)
        except BaseException:
            tracker.finish(sweep, "KILLED")
            raise
    rows = write_index(exp_dir, exp, cluster, failed)
    bad = [r for r in rows if r["status"] != "done"]
    if bad:
        tracker.finish(sweep, "FAILED")
        raise LpRayError(
            f"{len(bad)} trial(s) did not finish ({', '.join(str(r['trial']) for r in bad)}); their logs are under "
            f"{exp_dir.path(layout.TUNE)}; rerun the same command to resume them"
        )


def _tune(exp, todo: list[Trial], cluster, mlflow: dict, lease: dict, max_concurrent, exp_dir: RunDir) -> set[int]:
    """The unfinished trials on Ray Tune; `mlflow`: the store, experiment and sweep run the trials nest
    their runs under; `lease`: whether trials wait for leases others hold, and the command they are
    shown as. Returns the trials that failed."""
    import ray
    from ray import tune

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Ctrl-C is lp-ray's to handle (exit 130, "rerun to resume"): Tune's own handler would end the fit
    # quietly, leave our index saying "did not finish" and advise Tuner.restore, which lp-ray does not use.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    total_cpu = ray.cluster_resources().get("CPU", 1.0)
    per_worker = cluster.resources_per_worker.get("CPU", 1.0) * cluster.num_workers
    # Default concurrency: as many trials as can train at once (each trial's fits need its workers).
    auto = max(1, int((total_cpu - 1e-9) // (per_worker + TRIAL_CPU))) if per_worker > 0 else 1
    concurrent = max_concurrent or auto
    space = [
        {
            "index": t.index,
            "job": job_to_dict(t.job),
            "cluster": dataclasses.asdict(cluster),
            "mlflow": mlflow,
            "lease": lease,
            "seed": t.seed,
            "cell": t.cell,
            "variants": exp.variants(),
            "analyses": exp.analyses,
        }
        for t in todo
    ]
    view = SweepView(exp, cluster)

    class Follow(tune.Callback):  # defined here: ray is imported only after connect() set its environment
        # Tune pickles its callbacks: this one holds only the set the view reads.
        def __init__(self, running: set):
            self.running = running

        def on_trial_start(self, iteration, trials, trial, **info):
            self.running.add(trial.config["trial"]["index"])

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.running.discard(trial.config["trial"]["index"])

        on_trial_error = on_trial_complete

    tuner = tune.Tuner(
        tune.with_resources(_trial_fn, {"cpu": TRIAL_CPU}),
        param_space={"trial": tune.grid_search(space)},
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrent, reuse_actors=False),
        run_config=tune.RunConfig(
            name=layout.TUNE,
            storage_path=exp_dir.path(""),
            failure_config=tune.FailureConfig(max_failures=cluster.max_failures),
            verbose=0,
            callbacks=[Follow(view.running)],
        ),
    )
    with view:
        grid = tuner.fit()
    failed = set()
    for result in grid:
        if result.error is not None:
            failed.add(result.config["trial"]["index"])
    return failed


class SweepView:
    """Live progress: trials done / running / queued, and each running trial's stage read from its run
    directory (round r/R, pool method n/N). One line whenever it changes, at most every few seconds."""

    def __init__(self, exp: ExperimentSpec, cluster: ClusterSpec):
        self.exp, self.cluster = exp, cluster
        self.trials = {t.index: t for t in exp.trials()}
        self.running: set[int] = set()
        self.stop = threading.Event()
        self.last = ""

    def line(self) -> str:
        stages = {
            i: trial_stage(t, self.exp.variants(), self.cluster, self.exp.analyses) for i, t in self.trials.items()
        }
        done = sum(s == "done" for s, _ in stages.values())
        running = sorted(i for i in self.running if stages[i][0] != "done")
        queued = len(self.trials) - done - len(running)
        parts = [f"trials: {done} done, {len(running)} running, {queued} queued"]
        for i in running:
            t = self.trials[i]
            parts.append(f"trial {i} (seed {t.seed}{', ' + t.cell if t.cell else ''}): {stages[i][1] or 'starting'}")
        return " | ".join(parts)

    def _tick(self):
        while not self.stop.wait(3.0):
            self._show()

    def _show(self) -> None:
        from lp_ray.progress import console

        try:
            line = self.line()
        except Exception:  # a file mid-write: try again next tick
            return
        if line != self.last:
            console.print(line, highlight=False)
            self.last = line

    def __enter__(self):
        self.thread = threading.Thread(target=self._tick, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=5)
        if exc[0] is None:
            self._show()  # where the sweep ended, not where the last tick happened to see it


def log_sweep(exp: ExperimentSpec, exp_dir: RunDir, tracking_uri: str, report) -> str:
    """MLflow: the sweep's run (started by run_sweep) gets the experiment report's verdicts as metrics and
    as its description, the per-sparsity series, the figure and the tables; the trials nest their runs
    in it (a trial a sweep did not run, finished by another, gets a run linking its IMP run by tags)."""
    from lp_ray.store import read_tracking
    from lp_ray.tracking import logged

    trials = exp.trials()
    tracker = logged.tracker_for(trials[0].job, tracking_uri)
    sweep = logged.sweep_run(tracker, exp, exp_dir, work=False)
    run_dirs = {row["trial"]: row["run_dir"] for row in exp_dir.read_table(layout.TRIALS).to_pylist()}
    for t in trials:
        info = read_tracking(RunDir(run_dirs[t.index]))
        if info is not None and info.tracking_uri == tracking_uri:
            trial = logged.trial_run(tracker, sweep, t, work=False)
            tracker.log_values(trial, {}, {"imp_run_id": info.imp_run_id})
            tracker.finish(trial)
    files = [
        f for f in (layout.report("csv"), layout.report("png"), layout.VERDICT, layout.PAIRS_CSV) if exp_dir.exists(f)
    ]
    logged.finish_sweep(tracker, sweep, exp_dir, report.metrics, report.series, report.verdicts, files)
    from lp_ray.progress import console
    from lp_ray.tracking.stores import runs_page

    console.print(f"MLflow: {runs_page(tracking_uri, tracker.experiment_id)}", highlight=False)
    return sweep
