"""What every analysis does around its own numbers: open a finished run, evaluate networks on the
pool's executors (where there are many), write `analysis/<name>/` (Parquet tables, then the PNG: the
"done" marker) and log the files to MLflow as artifacts of the run's imp run."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from lp_ray import interrupt, layout
from lp_ray.analysis.protocol import Written
from lp_ray.errors import LpRayError
from lp_ray.spec import ClusterSpec, job_to_dict

if TYPE_CHECKING:
    from lp_ray.opened_run import OpenedRun
    from lp_ray.store import RunDir

# torch, pyarrow and Ray are imported where they are used: the registry (and with it the command line
# that is built from it) stays light.


def analysis_done(run: RunDir, name: str) -> bool:
    """Whether analysis/<name>/ is complete: its PNG, written last, is there."""
    return run.exists(layout.analysis_file(name, f"{name}.png"))


def open_finished(run_uri: str) -> OpenedRun:
    from lp_ray.opened_run import open_run
    from lp_ray.store import RunDir, check_storage_reachable

    run = RunDir(run_uri)
    if not run.is_dir():
        raise LpRayError(f"{run_uri}: no such run directory")
    opened = open_run(run_uri)  # every ticket checked against its meta.json and mask
    check_storage_reachable(opened.run.uri)  # the analysis writes into it
    return opened


def write_outputs(
    opened: OpenedRun, name: str, tables: dict[str, list[dict]], plot: Callable[[str], None], tracking_uri: str | None
) -> Written:
    """analysis/<name>/<table>.parquet for every table and analysis/<name>/<name>.png, each written
    atomically; then the same files as artifacts of the run's imp run (when its store is reachable;
    an analysis never creates a store)."""
    import os
    import tempfile

    import pyarrow as pa

    from lp_ray.tracking.logged import run_tracker

    run = opened.run
    files = []
    for table, rows in tables.items():
        rel = layout.analysis_file(name, f"{table}.parquet")
        run.write_table(rel, pa.Table.from_pylist(rows))
        files.append(rel)
    with tempfile.TemporaryDirectory() as d:  # matplotlib writes to a local file
        png = os.path.join(d, f"{name}.png")
        plot(png)
        rel = layout.analysis_file(name, f"{name}.png")
        with open(png, "rb") as f:
            run.write_bytes(rel, f.read())
        files.append(rel)
    found = run_tracker(run, tracking_uri)
    if found is not None:
        from lp_ray.progress import console
        from lp_ray.tracking.stores import runs_page

        tracker, imp_run = found
        tracker.log_run_files(imp_run, run, files, f"{layout.ANALYSIS}/{name}")
        console.print(f"MLflow: {runs_page(tracker.uri, tracker.experiment_id)}", highlight=False)
    return Written([run.uri_of(f) for f in files], found[1] if found else None)


def executor(opened: OpenedRun, cluster: ClusterSpec, parallel: int, serial: bool, tracking_uri: str | None):
    """The pool's executors over this run: Ray actors, or with `serial` this process."""
    from lp_ray.pool.executors import RayExecutor, SerialExecutor, build_evaluator

    job_dict = job_to_dict(opened.job)
    if serial:
        return SerialExecutor(build_evaluator(job_dict, opened.run.uri, cluster.torch_threads))
    from lp_ray.cluster import check_storage, connect

    connect(cluster, {"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else None, opened.job.plugin_versions)
    check_storage(cluster, opened.run.uri)
    return RayExecutor(job_dict, opened.run.uri, cluster.torch_threads, parallel, cluster.eval_resources)


def score_all(ex, requests: dict, what: str) -> dict:
    """Run every ScoreRequest (key -> request) on the executor, with a progress bar; key -> (val, test)."""
    from lp_ray.progress import progress_bars

    out = {}
    bars = progress_bars()
    task = bars.add_task(what, total=len(requests), info="")
    with bars:
        for key, req in requests.items():
            ex.submit(key, req)
        for _ in range(len(requests)):
            key, score = ex.next_done()
            out[key] = (score.val_acc, score.test_acc)
            bars.advance(task)
            interrupt.check()
    return out


def read_rows(run: RunDir, name: str, table: str) -> list[dict]:
    """An analysis table of the run ([] when the analysis has not run)."""
    rel = layout.analysis_file(name, f"{table}.parquet")
    return run.read_table(rel).to_pylist() if run.exists(rel) else []


def parse_alphas(text: str | None) -> tuple[float, ...]:
    """--alphas: comma-separated points from 0 to 1 (default 0, 0.1, ..., 1)."""
    from lp_ray.analysis.compute import lmc

    if text is None:
        return lmc.ALPHAS
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated numbers, got {text!r}") from None
    return lmc.check_alphas(values)


def positive(value: int) -> int:
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def mean_present(values) -> float:
    """The mean of the values that are there (report columns hold None where nothing was measured)."""
    values = [v for v in values if v is not None]
    return sum(values) / len(values)
