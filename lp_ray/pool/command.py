"""`lp-ray pool`: the plumbing around the search (pool/search.py): Ray or serial executor, progress, MLflow."""

from __future__ import annotations

import time
from dataclasses import dataclass

from lp_ray import layout
from lp_ray.errors import LpRayError
from lp_ray.lease import Lease, command_line
from lp_ray.opened_run import OpenedRun, open_run
from lp_ray.pool import records
from lp_ray.pool.records import TargetResult, check_search_name, mcnemar_vs_lt
from lp_ray.pool.search import PoolSearch, QuietListener, check_targets
from lp_ray.progress import console, progress_bars, say
from lp_ray.spec import DEFAULT_PARALLEL_EVALS, ClusterSpec, PoolSpec, job_to_dict
from lp_ray.store import check_storage_reachable
from lp_ray.tracking import logged
from lp_ray.tracking.networks import DEFAULT_LOG_MODELS, best_target, check_log_models, check_registration
from lp_ray.tracking.stores import runs_page


@dataclass
class PoolOutcome:
    results: dict[int, TargetResult]
    folder: str
    seconds: float
    evaluations: int
    replayed: int
    parallel: int


def run_pool(
    run_uri: str,
    settings: PoolSpec,
    cluster: ClusterSpec,
    tracking_uri: str | None,
    name: str | None = None,
    parallel_evals: int = DEFAULT_PARALLEL_EVALS,
    executor: str = "ray",
    overwrite: bool = False,
    wait: bool = True,
    log_models: str = DEFAULT_LOG_MODELS,
    register: str | None = None,
    ride_out: bool = False,
) -> PoolOutcome:
    """Run (or resume) one search over a run directory's tickets into pool/<name>/ (default name: the
    method), then log it to MLflow: its networks as LoggedModels as `log_models` says, its best one
    registered as a version of `register` (alias: the search's name) when given. A tracking server that
    does not answer at the start is an error, or with `ride_out` (`lp-ray run`, after its IMP) an outage;
    one that stops answering later is always ridden out (Tracker.attempt). The search's lease is held from before anything is removed or
    written until the end; another command holding it is waited for (`wait`), or is an error."""
    name = settings.default_name() if name is None else name
    check_search_name(name)
    check_log_models(log_models)
    if register is not None:
        check_registration(register, name)
    if parallel_evals < 1:
        raise LpRayError(f"--parallel-evals must be at least 1, got {parallel_evals}")
    pr = open_run(run_uri)
    check_targets(settings, pr.rounds)  # before --overwrite removes anything
    check_storage_reachable(pr.run.uri)  # writable, before Ray starts
    with Lease(pr.run, layout.lease_file(f"pool.{name}"), command_line(), wait, say) as lease:
        if overwrite:
            pr.run.delete(layout.pool_dir(name))
        pr.run.remove_orphans(layout.pool_dir(name))  # half-written files of a search killed mid-write
        logging = (log_models, register, ride_out)
        return _run_leased(pr, settings, cluster, tracking_uri, name, parallel_evals, executor, lease, logging)


def _run_leased(pr: OpenedRun, settings, cluster, tracking_uri, name, parallel_evals, executor, lease, logging):
    from lp_ray.pool.executors import RayExecutor, SerialExecutor, build_evaluator

    folder = layout.pool_dir(name)
    log_models, register, ride_out = logging
    tracker = logged.tracker_for(pr.job, tracking_uri, pr.run, ride_out) if tracking_uri is not None else None
    job_dict = job_to_dict(pr.job)
    if executor == "serial":
        ex = SerialExecutor(build_evaluator(job_dict, pr.run.uri, cluster.torch_threads, settings))
    elif executor == "ray":
        from lp_ray.cluster import check_storage, connect

        connect(cluster, {"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else None, pr.job.plugin_versions)
        check_storage(cluster, pr.run.uri)
        ex = RayExecutor(job_dict, pr.run.uri, cluster.torch_threads, parallel_evals, cluster.eval_resources, settings)
        if ex.parallel < parallel_evals:
            console.print(
                f"note: the cluster fits {ex.parallel} evaluation(s) of {cluster.eval_resources} at once; "
                f"running {ex.parallel} in parallel instead of {parallel_evals}"
            )
    else:
        raise LpRayError(f"unknown executor {executor!r} (serial or ray)")

    view = SearchView(settings)
    listeners = Listeners(view, LeaseWatch(lease))
    search = PoolSearch(pr, settings, ex, listeners, name)  # refuses a folder with another search first
    t0 = time.time()
    mlflow = None
    if tracker is not None:  # the search's run starts with the search, and logs each target as it is written
        done = records.finished_targets(pr.run, name)
        work = any(t not in done for t in search.targets)  # a finished search found again is left as it was
        mlflow = MlflowSearch(tracker, pr, name, settings, t0, work)
        listeners.listeners.append(mlflow)
        tracker.attempt(mlflow.run_id)
    console.print(
        f"[bold]lp-ray pool[/] {settings.method} ({settings.search} search) on {pr.run.uri}: "
        f"{len(search.targets)} target(s), {ex.parallel} evaluation(s) in parallel -> {pr.run.uri_of(folder)}"
    )
    if not pr.has_running_stats:
        console.print(
            f"no BatchNorm in {pr.job.model.name}: recalibration skipped, an evaluation is one pass over "
            "validation (bn_examples 0 in the trace); LT+BN is LT"
            + (
                "; a fast search's screening is then a full evaluation: the exact search costs no more"
                if settings.search == "fast"
                else ""
            )
        )
    try:
        with view:
            results = search.run()
    except BaseException:
        if mlflow is not None:
            tracker.attempt(mlflow.ended, "KILLED")
        raise
    finally:
        ex.close()
    seconds = time.time() - t0
    if mlflow is not None:
        outcome = search_outcome(pr, name, search, seconds)
        policy = "best" if register and log_models == "none" else log_models  # a registered network is logged
        logged_now = tracker.attempt(mlflow.finish, outcome, policy)
        if logged_now is not None:
            console.print(f"MLflow: {runs_page(tracking_uri, tracker.experiment_id)}", highlight=False)
            if register is not None:
                best = results[best_target(results)]
                version = tracker.attempt(registered, tracker, logged_now[0], register, name, name, best)
                if version is not None:
                    console.print(
                        f"MLflow: the best {name} network is version {version} of {register!r} (alias {name!r})"
                    )
        tracker.outage_note("search")
    return PoolOutcome(
        results,
        pr.run.uri_of(folder),
        seconds,
        search.evaluations_done,
        search.evaluations_replayed,
        ex.parallel,
    )


class SearchView:
    """Live view of a search (a SearchListener): targets done, evaluations done / total, evaluations/s,
    accepted so far. Off a terminal, one line per finished target."""

    def __init__(self, settings: PoolSpec):
        self.progress = progress_bars()
        self.task = self.progress.add_task(f"pool {settings.method}", total=1, info="")
        self.accepted = self.targets_done = self.targets = self.done = 0
        self.t0 = time.time()

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def _refresh(self):
        rate = self.done / max(time.time() - self.t0, 1e-9)
        self.progress.update(
            self.task,
            completed=self.done,
            info=f"targets {self.targets_done}/{self.targets}  {rate:.1f} eval/s  accepted {self.accepted}",
        )

    def on_start(self, total: int, replayed: int, targets: int, finished: int) -> None:
        self.targets, self.targets_done = targets, finished
        self.progress.update(self.task, total=total)
        if replayed:
            console.print(f"resuming: {replayed} evaluation(s) taken from the trace, not repeated")
        self._refresh()

    def on_total_changed(self, delta: int) -> None:
        self.progress.update(self.task, total=self.progress.tasks[0].total + delta)
        self._refresh()

    def on_evaluation(self, target: int) -> None:
        self.done += 1
        self._refresh()

    def on_accepted(self, target: int, candidate: int, alpha: float) -> None:
        self.accepted += 1
        self._refresh()

    def on_target_done(self, result: TargetResult, skipped: bool) -> None:
        if not skipped:
            self.targets_done += 1
        r, how = result, "done already" if skipped else "pooled"
        console.print(
            f"target {r.target:2d}  {how}: density {100 * r.density:6.2f}%  LT test {100 * r.lt_test_acc:.2f}%  "
            f"pooled test {100 * r.test_acc:.2f}% ({100 * r.gain:+.2f})  accepted {r.accepted or '-'}"
        )
        self._refresh()


# --------------------------------------------------------------------------------------------------
# MLflow


class MlflowSearch(QuietListener):
    """The search in MLflow: its run (created when first needed: at the start, or when a tracking server
    that was down answers again), each target as the search writes it (a step of the run's by_target/
    series, so a long search shows its finished targets while it runs), and its end. Every method is a
    logging step for Tracker.attempt: it logs what MLflow lacks."""

    def __init__(self, tracker, pr: OpenedRun, name: str, settings: PoolSpec, started: float, work: bool):
        self.tracker, self.pr, self.name, self.settings = tracker, pr, name, settings
        self.started, self.work = started, work
        self._ids: tuple[str | None, str] | None = None

    def run_id(self) -> tuple[str | None, str]:
        """(the IMP run's id, the search run's id), found or created once."""
        if self._ids is None:
            imp = logged.imp_run_of(self.tracker, self.pr.run)
            run = logged.search_run(
                self.tracker, imp, self.name, self.settings, self.pr.rounds, self.started, self.work
            )
            self._ids = (imp, run)
        return self._ids

    def on_target_done(self, result, skipped):
        if not skipped:
            p = mcnemar_vs_lt(self.pr.run, self.name, result)
            self.tracker.attempt(lambda: logged.log_target(self.tracker, self.run_id()[1], result, p))

    def ended(self, status: str) -> None:
        self.tracker.finish(self.run_id()[1], status)

    def finish(self, outcome: dict, log_models: str) -> tuple[str | None]:
        """Every target (those an outage kept out too), the verdict, table and networks; (the best
        network's LoggedModel id,)."""
        imp, run = self.run_id()
        files = search_files(self.pr, self.name)
        network = pooled_networks(self.pr, self.name)
        settings = {"method": self.settings.method, "search_kind": self.settings.search}
        best = logged.finish_search(self.tracker, run, imp, self.name, outcome, files, network, log_models, settings)
        return (best,)


def pooled_networks(pr: OpenedRun, name: str):
    """`network(target)`: a search's pooled network as a module and an example batch of its inputs, what
    an MLflow model is saved from (its weights checked against their record as they are read)."""
    from lp_ray.evaluate import read_weights

    example = pr.example_inputs()

    def network(target: int):
        state, _ = read_weights(pr.run, layout.target_weights(name, target), pr.template, set(pr.prunable))
        return pr.network(state), example

    return network


def registered(tracker, model_id: str, register: str, alias: str, name: str, result) -> str:
    """A pooled network's LoggedModel as a version of the registered model `register`, with `alias`."""
    from lp_ray.tracking.networks import register as register_model

    about = (
        f"{name}, target {result.target:02d}: {100 * result.density:.1f}% of the weights, test "
        f"{100 * result.test_acc:.2f}% ({100 * result.gain:+.2f} pt over its ticket)"
    )
    return register_model(tracker, model_id, register, alias, about)


def register_network(run_uri: str, search: str, target: int | None, name: str, alias: str, tracking_uri: str) -> str:
    """`lp_ray.register`: a finished search's pooled network (`target`, default: its best on validation)
    as a version of `name`, logged as an MLflow model of the search's run first if it is not one."""
    from lp_ray.spec import run_hash
    from lp_ray.tracking.networks import best_target
    from lp_ray.tracking.stores import store_exists
    from lp_ray.tracking.tracker import TAG_HASH, TAG_KIND

    pr = open_run(run_uri)
    results = records.finished_targets(pr.run, search)
    if not results:
        raise LpRayError(f"{run_uri}: pool/{search} has no finished target (searches: {records.search_names(pr.run)})")
    t = best_target(results) if target is None else target
    if t not in results:
        raise LpRayError(f"{run_uri}: pool/{search} has no finished target {t} (targets: {sorted(results)})")
    if not store_exists(tracking_uri):
        raise LpRayError(f"there is no MLflow store at {tracking_uri}; pass the one the run logged to")
    tracker = logged.tracker_for(pr.job, tracking_uri, pr.run)
    search_run = tracker.find({TAG_HASH: run_hash(pr.job), TAG_KIND: f"pool:{search}"})
    if search_run is None:
        raise LpRayError(f"the search {search} of {run_uri} is not in MLflow at {tracking_uri}; `lp-ray pool` logs it")
    p = mcnemar_vs_lt(pr.run, search, results[t])
    settings = {"method": pr.run.read_json(layout.pool_settings(search)).get("method", "")}
    model_id = logged.log_pooled_network(
        tracker, search_run, search, results[t], p, pooled_networks(pr, search), settings
    )
    return registered(tracker, model_id, name, alias, search, results[t])


class LeaseWatch(QuietListener):
    """Stops the search at its next evaluation if another command took its lease over (this one was
    judged dead), so two searches never write one folder for long."""

    def __init__(self, lease):
        self.lease = lease

    def on_evaluation(self, target):
        self.lease.check()


class Listeners:
    """Several SearchListeners as one (the progress view and MLflow)."""

    def __init__(self, *listeners):
        self.listeners = [x for x in listeners if x is not None]

    def __getattr__(self, event):
        return lambda *args, **kw: [getattr(x, event)(*args, **kw) for x in self.listeners] and None


def search_outcome(pr: OpenedRun, name: str, search: PoolSearch, seconds: float) -> dict:
    """What the search's MLflow run shows: every finished target of the folder (this invocation's and
    earlier ones'), its McNemar p against LT, and which are significant after Holm across targets."""
    from lp_ray.stats import holm

    results = search.results
    pvalues = {t: mcnemar_vs_lt(pr.run, name, r) for t, r in results.items()}
    known = {t: p for t, p in pvalues.items() if p is not None}
    adjusted = dict(zip(known, holm(list(known.values())), strict=True))
    significant = {t: (1 if results[t].gain > 0 else -1) if q < 0.05 else 0 for t, q in adjusted.items()}
    return {
        "results": results,
        "mcnemar_p": pvalues,
        "mcnemar_p_holm": adjusted,
        "significant": significant,
        "seconds": seconds,
        "evaluations": search.evaluations_done,
        "pooled_now": search.pooled_now,
    }


def search_files(pr: OpenedRun, name: str) -> dict[str, bytes]:
    """The search's figure and its trace as CSV (MLflow previews CSV, not Parquet), accuracies and weights
    in percent as everywhere a person reads them (the per-sparsity table is logged with the verdict)."""
    import pyarrow.compute as pc

    from lp_ray.report.run import plot_png
    from lp_ray.rounding import csv_bytes

    trace = pr.run.read_table(layout.trace(name))
    for column, shown in (("val_acc", "val_acc"), ("density", "weights_remaining_pct")):
        i = trace.schema.get_field_index(column)
        trace = trace.set_column(i, shown, pc.multiply(trace.column(i), 100.0))
    return {f"{name}_accuracy_vs_sparsity.png": plot_png(pr.run, only=name), "trace.csv": csv_bytes(trace)}
