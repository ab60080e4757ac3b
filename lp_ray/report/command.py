"""`lp-ray report DIR`: the report of a run directory or of an experiment directory, written beside the
data it is built from, printed, and (for a run) logged to its imp run in MLflow. Every record is read
and checked before anything is written."""

from __future__ import annotations

from lp_ray import layout
from lp_ray.errors import LpRayError
from lp_ray.progress import console
from lp_ray.store import RunDir


def report(uri: str, tracking_uri: str | None):
    """The report of a run directory (its table) or an experiment directory (its ExperimentReport)."""
    from lp_ray.report.experiment import is_experiment_dir

    if is_experiment_dir(uri):
        return experiment_report(uri)
    return run_report(uri, tracking_uri)


def run_report(run_dir: str, tracking_uri: str | None, ride_out: bool = False):
    """report.csv/.parquet/.png of a run; MLflow gets the files under its imp run's report/ (when the
    store and the run exist: a report never creates a store). A tracking server that does not answer is
    an error before anything is written, or with `ride_out` (`lp-ray run`'s last step, after hours of
    work) an outage the report is written through."""
    from lp_ray.analysis import reported
    from lp_ray.report.run import build_report, print_report, write_report
    from lp_ray.tracking.logged import run_tracker
    from lp_ray.tracking.stores import runs_page, tracking_uri_for_run

    run = RunDir(run_dir)
    if not run.is_dir():
        raise LpRayError(f"{run_dir}: no such run directory")
    table = build_report(run, analyses=reported())  # every check (tickets, pooled networks) before anything is written
    found = run_tracker(run, tracking_uri_for_run(tracking_uri, None, run), ride_out)  # MLflow checked first
    paths = write_report(run, table)
    print_report(table, title=run.uri, analyses=reported())
    if found is not None:
        tracker, imp_run = found
        # the figure and the CSV (MLflow previews it); the Parquet copy holds the same table
        files = [layout.report("csv"), layout.report("png")]
        logged_files = imp_run is not None and tracker.attempt(
            lambda: tracker.log_run_files(imp_run, run, files, "report") or True
        )
        if logged_files:
            console.print(f"MLflow: {runs_page(tracker.uri, tracker.experiment_id)}", highlight=False)
        elif tracker.down_since is not None:
            tracker.missed += 1
            tracker.outage_note("report")
    console.print(f"report: {paths['csv']}, {paths['parquet']}")
    console.print(f"plot:   {paths['png']}")
    return table


def experiment_report(exp_uri: str):
    from lp_ray.report import experiment

    exp_dir = RunDir(exp_uri)
    report = experiment.build(exp_dir)  # every record checked before anything is written
    paths = experiment.write(exp_dir, report)
    experiment.print_table(report)
    csv, parquet, png, verdict = (paths[f] for f in layout.EXPERIMENT_REPORT)
    console.print(f"report: {csv}, {parquet}, {verdict}")
    if layout.PAIRS_CSV in paths:
        console.print(f"pairs:  {paths[layout.PAIRS_CSV]}, {paths[layout.PAIRS_PARQUET]}")
    console.print(f"plot:   {png}")
    return report
