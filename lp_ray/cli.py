"""The `lp-ray` command. Thin: parse arguments, call the library, print. Every user-fixable problem is
an `LpRayError`, printed as one line with a non-zero exit."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from lp_ray.errors import LpRayError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Lottery Pools on Ray: IMP with rewinding, then greedy interpolation of the tickets.")

JobOpt = typer.Option(None, "--job", "-j", help="Job spec YAML (default: the embedded default job, jobs/default.yaml).")
ClusterOpt = typer.Option(None, "--cluster", "-c", help="Cluster spec YAML (default: cluster/local.yaml's settings).")
TrackingOpt = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, the cluster spec, then sqlite:///mlflow.db).")


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def imp(job: Optional[Path] = JobOpt, cluster: Optional[Path] = ClusterOpt,
        rounds: Optional[int] = typer.Option(None, "--rounds", help="Number of tickets (round 0 dense included); more than a finished run extends it."),
        tracking_uri: Optional[str] = TrackingOpt) -> None:
    """Train IMP with rewinding on Ray Train: one checkpointed, resumable fit() per round."""
    from lp_ray.imp.driver import run_imp
    from lp_ray.spec import load_cluster, load_job
    from lp_ray.tracking import resolve_tracking_uri

    j, c = load_job(job), load_cluster(cluster)
    if rounds is not None:
        if rounds < 1:
            raise LpRayError(f"--rounds must be at least 1, got {rounds}")
        j = replace(j, imp=replace(j.imp, rounds=rounds))
    result = run_imp(j, c, resolve_tracking_uri(tracking_uri, c.tracking_uri))
    typer.echo(f"run directory: {result.run.uri}")


@app.command()
def tickets(run_dir: str = typer.Argument(..., help="A run directory (local path or URI)."),
            layers: bool = typer.Option(False, "--layers", help="Also print per-layer density of each ticket.")) -> None:
    """Table of a run's tickets: round, density, validation and test accuracy, path."""
    from rich.table import Table

    from lp_ray.progress import console
    from lp_ray.store import RunDir, finished_rounds, read_mask, round_dir

    run = RunDir(run_dir)
    if not run.is_dir():
        raise LpRayError(f"{run_dir}: no such run directory")
    rounds = finished_rounds(run)
    if not rounds:
        raise LpRayError(f"{run_dir}: no finished rounds (is this an lp-ray run directory?)")
    table = Table(title=run.uri)
    for col in ("round", "density %", "val acc %", "test acc %", "path"):
        table.add_column(col, justify="left" if col == "path" else "right")
    for r in rounds:
        m = run.read_json(f"{round_dir(r)}/meta.json")
        table.add_row(str(r), f"{100 * m['density']:.2f}", f"{100 * m['val_acc']:.2f}", f"{100 * m['test_acc']:.2f}",
                      run.path(f"{round_dir(r)}/ticket.safetensors"))
    console.print(table)
    if layers:
        from lp_ray.sparsity import density_report

        for r in rounds[1:]:
            console.print(f"round {r}:")
            for row in density_report(read_mask(run, f"{round_dir(r)}/mask.safetensors")):
                console.print(f"  {row['layer']:<40} {row['survivors']:>10} / {row['size']:<10} {100 * row['density']:6.2f}%")


def main() -> None:
    import os

    # Quiet by default: MLflow's store-migration INFO lines and "View run" links are noise in a CLI.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    try:
        app()
    except LpRayError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted: finished rounds are kept; rerun the same command to resume", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
