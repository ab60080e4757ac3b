"""`lp-ray pool`: the plumbing around the search (pool/search.py): Ray or serial executor, progress, MLflow."""

from __future__ import annotations

import time
from dataclasses import dataclass

from lp_ray import layout
from lp_ray.errors import LpRayError
from lp_ray.opened_run import OpenedRun, open_run
from lp_ray.pool.records import TargetResult, check_search_name
from lp_ray.pool.search import PoolSearch, check_targets
from lp_ray.progress import console, progress_bars
from lp_ray.spec import ClusterSpec, PoolSpec, job_to_dict, run_hash
from lp_ray.store import check_storage_reachable


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
    parallel_evals: int = 2,
    executor: str = "ray",
    overwrite: bool = False,
) -> PoolOutcome:
    """Run (or resume) one search over a run directory's tickets into pool/<name>/ (default name: the
    method), then log it to MLflow."""
    from lp_ray.pool.executors import RayExecutor, SerialExecutor, build_evaluator

    name = settings.default_name() if name is None else name
    check_search_name(name)
    if parallel_evals < 1:
        raise LpRayError(f"--parallel-evals must be at least 1, got {parallel_evals}")
    folder = layout.pool_dir(name)
    pr = open_run(run_uri)
    check_targets(settings, pr.rounds)  # before --overwrite removes anything
    check_storage_reachable(pr.run.uri)  # writable, before Ray starts
    if overwrite:
        pr.run.delete(folder)
    tracker = _tracker(pr, tracking_uri)
    job_dict = job_to_dict(pr.job)
    if executor == "serial":
        ex = SerialExecutor(build_evaluator(job_dict, pr.run.uri, cluster.torch_threads, settings))
    elif executor == "ray":
        from lp_ray.cluster import check_storage, connect

        connect(cluster, {"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else None)
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
    search = PoolSearch(pr, settings, ex, view, name)
    console.print(
        f"[bold]lp-ray pool[/] {settings.method} on {pr.run.uri}: {len(search.targets)} target(s), "
        f"{ex.parallel} evaluation(s) in parallel -> {pr.run.uri_of(folder)}"
    )
    t0 = time.time()
    try:
        with view:
            results = search.run()
    finally:
        ex.close()
    seconds = time.time() - t0
    if tracker is not None:
        _log_pool(tracker, pr, settings, name, results, search.pooled_now, seconds, search.evaluations_done)
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


def _tracker(pr: OpenedRun, tracking_uri: str | None):
    from lp_ray.tracking import Tracker

    if tracking_uri is None:
        return None
    return Tracker(tracking_uri, pr.job.name, run_hash(pr.job))


def _log_pool(
    tracker,
    pr: OpenedRun,
    settings: PoolSpec,
    name: str,
    results: dict[int, TargetResult],
    pooled_now: set[int],
    seconds: float = 0.0,
    evaluations: int = 0,
) -> None:
    """The pool run holds every finished target of the folder (`results`); a child is logged when its
    target was pooled now or MLflow has not heard of it yet. A failure here marks the run FAILED."""
    parent = tracker.imp_run_of(pr.run)
    pool_run = tracker.pool_run(name, parent, {f"pool.{k}": v for k, v in settings.identity(pr.rounds).items()})
    try:
        _log_pool_results(tracker, pr, name, pool_run, results, pooled_now, seconds, evaluations)
        if parent is not None:  # the pooled accuracy beside LT's on the imp run, step = round
            rows = [
                {"round": t, f"lp_{name}_test_acc": r.test_acc, f"lp_{name}_val_acc": r.val_acc}
                for t, r in results.items()
            ]
            tracker.log_metrics(parent, rows, "round")
    except BaseException:
        tracker.finish(pool_run, "FAILED")
        raise
    tracker.finish(pool_run)


def _log_pool_results(
    tracker, pr: OpenedRun, name: str, pool_run: str, results, pooled_now, seconds, evaluations
) -> None:
    from lp_ray.report.run import plot_png

    for t, r in sorted(results.items()):
        known = tracker.find_child(pool_run, "pool_target", str(t))
        if t not in pooled_now and known and tracker.has_metric(known, "test_acc"):
            continue  # logged by the run that pooled it
        child = tracker.child_run(pool_run, "pool_target", str(t), f"{name} target {t:02d}")
        tracker.log_final(
            child,
            {
                "val_acc": r.val_acc,
                "test_acc": r.test_acc,
                "lt_test_acc": r.lt_test_acc,
                "lt_val_acc": r.lt_val_acc,
                # in points, so MLflow charts them readably (a fraction charts as 0.00)
                "gain_pt": 100 * r.gain,
                "density": r.density,
                **(
                    {}
                    if r.lt_bn_test_acc is None
                    else {"lt_bn_test_acc": r.lt_bn_test_acc, "lt_bn_val_acc": r.lt_bn_val_acc}
                ),
            },
            {
                "network_uri": r.path,
                "network_sha256": r.sha256,
                "accepted_rounds": ",".join(map(str, r.accepted)),
                "alphas": ",".join(f"{a:g}" for a in r.alphas),
                "target": str(t),
            },
        )
        tracker.finish(child)
    tracker.log_run_files(pool_run, pr.run, (layout.trace(name), layout.summary(name)))
    tracker.log_files(pool_run, {"accuracy_vs_sparsity.png": plot_png(pr.run)})
    gains = [r.gain for r in results.values()]
    tracker.log_final(
        pool_run,
        {
            "search_seconds": seconds,
            "evaluations": evaluations,
            "mean_gain_pt": 100 * sum(gains) / len(gains),
            "targets_improved": sum(g > 0 for g in gains),
            "targets": len(gains),
        },
    )
