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
) -> PoolOutcome:
    """Run (or resume) one search over a run directory's tickets into pool/<name>/ (default name: the
    method), then log it to MLflow. The search's lease is held from before anything is removed or
    written until the end; another command holding it is waited for (`wait`), or is an error."""
    name = settings.default_name() if name is None else name
    check_search_name(name)
    if parallel_evals < 1:
        raise LpRayError(f"--parallel-evals must be at least 1, got {parallel_evals}")
    pr = open_run(run_uri)
    check_targets(settings, pr.rounds)  # before --overwrite removes anything
    check_storage_reachable(pr.run.uri)  # writable, before Ray starts
    with Lease(pr.run, layout.lease_file(f"pool.{name}"), command_line(), wait, say) as lease:
        if overwrite:
            pr.run.delete(layout.pool_dir(name))
        pr.run.remove_orphans(layout.pool_dir(name))  # half-written files of a search killed mid-write
        return _run_leased(pr, settings, cluster, tracking_uri, name, parallel_evals, executor, lease)


def _run_leased(pr: OpenedRun, settings, cluster, tracking_uri, name, parallel_evals, executor, lease) -> PoolOutcome:
    from lp_ray.pool.executors import RayExecutor, SerialExecutor, build_evaluator

    folder = layout.pool_dir(name)
    tracker = logged.tracker_for(pr.job, tracking_uri, pr.run) if tracking_uri is not None else None
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
    imp = search_run = None
    if tracker is not None:  # the search's run starts with the search, and logs each target as it is written
        imp = logged.imp_run_of(tracker, pr.run)
        done = records.finished_targets(pr.run, name)
        work = any(t not in done for t in search.targets)  # a finished search found again is left as it was
        search_run = logged.search_run(tracker, imp, name, settings, pr.rounds, t0, work)
        listeners.listeners.append(MlflowTargets(tracker, search_run, pr.run, name, t0))
    console.print(
        f"[bold]lp-ray pool[/] {settings.method} ({settings.search} search) on {pr.run.uri}: "
        f"{len(search.targets)} target(s), {ex.parallel} evaluation(s) in parallel -> {pr.run.uri_of(folder)}"
    )
    try:
        with view:
            results = search.run()
    except BaseException:
        if search_run is not None:
            tracker.finish(search_run, "KILLED")
        raise
    finally:
        ex.close()
    seconds = time.time() - t0
    if search_run is not None:
        outcome = search_outcome(pr, name, search, seconds)
        for t, r in results.items():  # targets finished by an earlier run that MLflow has not heard of
            logged.log_target(tracker, search_run, r, outcome["mcnemar_p"][t], t0)
        logged.finish_search(tracker, search_run, imp, name, outcome, search_files(pr, name))
        console.print(f"MLflow: {runs_page(tracking_uri, tracker.experiment_id)}", highlight=False)
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


class MlflowTargets(QuietListener):
    """Logs each target to MLflow as its search writes it (a child of the search's run, with its own
    duration), so a long search shows its finished targets while it runs."""

    def __init__(self, tracker, search_run: str, run, name: str, started: float):
        self.tracker, self.search_run, self.run, self.name, self.started = tracker, search_run, run, name, started

    def on_target_done(self, result, skipped):
        if not skipped:
            p = mcnemar_vs_lt(self.run, self.name, result)
            logged.log_target(self.tracker, self.search_run, result, p, self.started)


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
        "significant": significant,
        "seconds": seconds,
        "evaluations": search.evaluations_done,
        "pooled_now": search.pooled_now,
    }


def search_files(pr: OpenedRun, name: str) -> dict[str, bytes]:
    """The search's figure and its tables as CSV (MLflow previews CSV, not Parquet)."""
    import io

    import pyarrow as pa
    import pyarrow.csv as pacsv

    from lp_ray.report.run import plot_png

    files = {f"{name}_accuracy_vs_sparsity.png": plot_png(pr.run, only=name)}
    for rel in (layout.summary(name), layout.trace(name)):
        table = pr.run.read_table(rel)
        for i, field in enumerate(table.schema):  # CSV has no lists: accepted rounds as "1 3 4"
            if pa.types.is_list(field.type):
                text = [" ".join(map(str, v)) for v in table.column(i).to_pylist()]
                table = table.set_column(i, field.name, pa.array(text, pa.string()))
        buf = io.BytesIO()
        pacsv.write_csv(table, buf)
        files[rel.rsplit("/", 1)[-1].replace(".parquet", ".csv")] = buf.getvalue()
    return files
