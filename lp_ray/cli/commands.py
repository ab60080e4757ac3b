"""The `lp-ray` commands: each declares its options, calls the Python API (lp_ray/api.py), prints."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from lp_ray import api
from lp_ray.cli.analyze import analyze_app
from lp_ray.cli.options import (
    ClusterOpt,
    JobOpt,
    LogModelsOpt,
    NoWaitOpt,
    OverridesArg,
    RegisterOpt,
    RunArg,
    SubmitOpt,
    TrackingOpt,
    interruptible,
)
from lp_ray.errors import LpRayError
from lp_ray.spec_loading import with_pool_options
from lp_ray.submit import job_submission_id, search_submission_id

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Lottery Pools on Ray: IMP with rewinding, then greedy interpolation of the tickets.",
)


@app.command()
@interruptible
def imp(
    overrides: list[str] | None = OverridesArg,
    job: Path | None = JobOpt,
    cluster: Path | None = ClusterOpt,
    rounds: int | None = typer.Option(
        None, "--rounds", help="Number of tickets (round 0 dense included); more than a finished run extends it."
    ),
    tracking_uri: str | None = TrackingOpt,
    log_models: str = LogModelsOpt,
    no_wait: bool = NoWaitOpt,
    submit: bool = SubmitOpt,
) -> None:
    """Train IMP with rewinding on Ray Train: one checkpointed, resumable fit() per round."""
    if submit:
        return _submit(job_submission_id("imp", api.load_job(job, _extra(overrides, rounds))), cluster)
    result = api.imp(
        job,
        overrides=overrides or (),
        rounds=rounds,
        cluster=cluster,
        tracking_uri=tracking_uri,
        log_models=log_models,
        wait=not no_wait,
    )
    typer.echo(f"run directory: {result.run.uri}")


def _extra(overrides: list[str] | None, rounds: int | None) -> list[str]:
    if rounds is not None and rounds < 1:
        raise LpRayError(f"--rounds must be at least 1, got {rounds}")
    return [*(overrides or []), *([f"imp.rounds={rounds}"] if rounds is not None else [])]


@app.command()
def tickets(
    run_dir: str = typer.Argument(..., help="A run directory (local path or URI)."),
    layers: bool = typer.Option(False, "--layers", help="Also print per-layer density of each ticket."),
) -> None:
    """Table of a run's tickets: round, density, validation and test accuracy, path."""
    from rich.table import Table

    from lp_ray.progress import console
    from lp_ray.store import RunDir

    rows = api.tickets(run_dir, layers=layers)
    table = Table(title=RunDir(run_dir).uri)
    for col in ("round", "density %", "val acc %", "test acc %", "path"):
        table.add_column(col, justify="left" if col == "path" else "right")
    for t in rows:
        table.add_row(str(t.round), *(f"{100 * v:.2f}" for v in (t.density, t.val_acc, t.test_acc)), t.uri)
    console.print(table)
    for t in rows if layers else []:
        if t.layers:
            console.print(f"round {t.round}:")
        for row in t.layers:
            console.print(
                f"  {row['layer']:<40} {row['survivors']:>10} / {row['size']:<10} {100 * row['density']:6.2f}%"
            )


def _numbers(text: str | None, what: str, kind: type) -> list | None:
    if text is None:
        return None
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        noun = "integers" if kind is int else "numbers"
        raise LpRayError(f"{what}: expected comma-separated {noun}, got {text!r}") from None


@app.command()
@interruptible
def pool(
    run_dir: str = RunArg,
    overrides: list[str] | None = typer.Argument(
        None, metavar="[pool.KEY=VALUE]...", help="Pool field overrides, e.g. pool.search_num=4.", show_default=False
    ),
    cluster: Path | None = ClusterOpt,
    method: str | None = typer.Option(
        None, "--method", "-m", help="interpolation (default), average, swa, ema or prune_after."
    ),
    parallel_evals: int = typer.Option(
        api.DEFAULT_PARALLEL_EVALS,
        "--parallel-evals",
        "-p",
        help="Evaluations in flight at once (capped by the cluster's resources).",
    ),
    targets: str | None = typer.Option(None, "--targets", help="Comma-separated target rounds (default: every round)."),
    coefficients: str | None = typer.Option(
        None, "--coefficients", help="Comma-separated coefficient pool, e.g. 0.05,0.5,0.95."
    ),
    search: str | None = typer.Option(
        None,
        "--search",
        help="exact (default: the paper's protocol) or fast (screen on a BatchNorm subset, confirm the winner).",
    ),
    search_num: int | None = typer.Option(
        None, "--search-num", help="Try at most this many candidates per target (default: all; fast: 6)."
    ),
    bn_samples: int | None = typer.Option(
        None,
        "--bn-samples",
        help="Recalibrate BatchNorm on a fixed seeded subset of this many training examples (default: all).",
    ),
    name: str | None = typer.Option(
        None, "--name", help="Output folder under pool/ (default: the method; <method>-fast for a fast search)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard an earlier search in the same folder."),
    serial: bool = typer.Option(False, "--serial", help="Evaluate in this process, without Ray."),
    tracking_uri: str | None = TrackingOpt,
    log_models: str = LogModelsOpt,
    register: str | None = RegisterOpt,
    no_wait: bool = NoWaitOpt,
    submit: bool = SubmitOpt,
) -> None:
    """Lottery Pools: greedily interpolate each target ticket with the others, evaluated in parallel on Ray."""
    if submit:
        return _submit(search_submission_id(run_dir, method, search, name), cluster)
    out = api.pool(
        run_dir,
        method=method,
        search=search,
        coefficients=_numbers(coefficients, "--coefficients", float),
        targets=_numbers(targets, "--targets", int),
        search_num=search_num,
        bn_samples=bn_samples,
        overrides=overrides or (),
        name=name,
        parallel_evals=parallel_evals,
        overwrite=overwrite,
        serial=serial,
        cluster=cluster,
        tracking_uri=tracking_uri,
        log_models=log_models,
        register=register,
        wait=not no_wait,
    )
    typer.echo(
        f"pooled networks: {out.folder} ({out.evaluations} evaluations in {out.seconds:.0f} s"
        f"{f', {out.replayed} replayed from the trace' if out.replayed else ''})"
    )


@app.command()
def report(
    run_dir: str = typer.Argument(..., help="A run directory, or an experiment directory made by `lp-ray sweep`."),
    tracking_uri: str | None = TrackingOpt,
) -> None:
    """Table and plot of LT against every pooled method, per sparsity (report.csv/.parquet/.png); for an
    experiment directory, mean ± std over seeds, paired 95% CIs, McNemar + Holm, and a verdict per method."""
    api.report(run_dir, tracking_uri=tracking_uri)


@app.command()
@interruptible
def sweep(
    experiment: Path | None = typer.Argument(None, help="Experiment spec YAML (experiments/*.yaml)."),
    job: Path | None = typer.Option(None, "--job", "-j", help="Without an experiment file: the base job spec."),
    seeds: str | None = typer.Option(None, "--seeds", help="Without an experiment file: seeds, e.g. 0-4 or 0,3."),
    grid: list[str] = typer.Option([], "--grid", help="Without an experiment file: key=v1,v2 (repeatable)."),
    methods: str | None = typer.Option(None, "--methods", help="Without an experiment file: pool methods, a,b."),
    analyses: str | None = typer.Option(
        None, "--analyses", help="Without an experiment file: analyses every trial runs, e.g. ensemble,robustness."
    ),
    cluster: Path | None = ClusterOpt,
    max_concurrent: int | None = typer.Option(
        None, "--max-concurrent", help="Trials at once (default: as many as the cluster can train at once)."
    ),
    tracking_uri: str | None = TrackingOpt,
    log_models: str = LogModelsOpt,
    no_wait: bool = NoWaitOpt,
) -> None:
    """Run an experiment on Ray Tune: every trial (seed x grid cell) is `lp-ray run` of its job, then the
    experiment report. Rerun the same command to resume: finished trials are never recomputed."""
    if experiment is not None and (job or seeds or grid or methods or analyses):
        raise typer.BadParameter("give an experiment file or --job/--seeds/--grid/--methods/--analyses, not both")
    exp_dir = api.sweep(
        experiment,
        job=job,
        seeds=seeds,
        grid=grid,
        methods=methods,
        analyses=analyses,
        cluster=cluster,
        max_concurrent=max_concurrent,
        tracking_uri=tracking_uri,
        log_models=log_models,
        wait=not no_wait,
    )
    typer.echo(f"experiment directory: {exp_dir}")


@app.command("eval")
def eval_(
    uri: str = typer.Argument(
        ...,
        help="A ticket or pooled network: its path or URI (MLflow's network_uri tag), models:/<model id> "
        "(MLflow's Models tab) or runs:/<run id> (a round or target run logged before lp-ray 0.4).",
    ),
    tracking_uri: str | None = TrackingOpt,
) -> None:
    """Load a ticket or pooled network and print its validation and test accuracy and density."""
    from lp_ray.progress import console

    out = api.evaluate(uri, tracking_uri=tracking_uri)
    console.print(
        f"{out['path']}\n  density {100 * out['density']:.2f}%  val acc {100 * out['val_acc']:.2f}%  "
        f"test acc {100 * out['test_acc']:.2f}%"
    )


@app.command()
@interruptible
def run(
    overrides: list[str] | None = OverridesArg,
    job: Path | None = JobOpt,
    cluster: Path | None = ClusterOpt,
    method: str | None = typer.Option(None, "--method", "-m", help="Pool method (default: the job's, interpolation)."),
    search: str | None = typer.Option(None, "--search", help="Pool search: exact or fast (default: the job's)."),
    parallel_evals: int = typer.Option(
        api.DEFAULT_PARALLEL_EVALS, "--parallel-evals", "-p", help="Pool evaluations in flight at once."
    ),
    tracking_uri: str | None = TrackingOpt,
    log_models: str = LogModelsOpt,
    register: str | None = RegisterOpt,
    no_wait: bool = NoWaitOpt,
    submit: bool = SubmitOpt,
) -> None:
    """The main job: imp, then pool, then report (what `make demo` runs on the default job)."""
    if submit:
        j = api.load_job(job, overrides or ())
        with_pool_options(j.pool, {"method": method, "search": search})  # checked before it is sent
        return _submit(job_submission_id("run", j), cluster)
    result = api.run(
        job,
        overrides=overrides or (),
        method=method,
        search=search,
        parallel_evals=parallel_evals,
        cluster=cluster,
        tracking_uri=tracking_uri,
        log_models=log_models,
        register=register,
        wait=not no_wait,
    )
    typer.echo(f"run directory: {result.run_dir}")


@app.command("import")
@interruptible
def import_(
    source: str = typer.Argument(
        ...,
        help="An OpenLTH replicate folder (.../replicate_<n>), the paper code's save folder (<L>model_SA_best.pth.tar), "
        "or a folder with tickets.yaml (--format files).",
    ),
    fmt: str = typer.Option(
        ...,
        "--format",
        "-f",
        help="openlth, lottery-pools, or files: any IMP code's tickets for any model (built in or a plugin), one "
        "weights file (safetensors or torch.save) and optional mask per round named in tickets.yaml (docs/plugins.md).",
    ),
    job: Path = typer.Option(
        ...,
        "--job",
        "-j",
        help="A job spec naming the data set and lp-ray's model the tickets are (and their training).",
    ),
    cluster: Path | None = ClusterOpt,
    tracking_uri: str | None = TrackingOpt,
) -> None:
    """Bring your own tickets: build a run directory from IMP tickets trained elsewhere (OpenLTH lottery
    levels, the Lottery Pools paper code's checkpoints, or any code's files with a tickets.yaml), read with
    safetensors or torch.load(weights_only=True) only and mapped onto the job's model, so `lp-ray pool`,
    `report`, `eval` and `analyze` work on them."""
    from lp_ray.progress import console

    run, metas = api.import_tickets(source, fmt, job, cluster=cluster, tracking_uri=tracking_uri)
    for m in metas:
        console.print(
            f"round {m.round:2d}  imported: density {100 * m.density:6.2f}%  val {100 * m.val_acc:.2f}%  "
            f"test {100 * m.test_acc:.2f}%"
        )
    console.print(f"run directory: {run.uri}")
    console.print(f"next: lp-ray pool {run.uri}")


app.add_typer(analyze_app, name="analyze")


def _submit(submission_id: str, cluster: Path | None) -> None:
    """Re-issue this very command line, minus --submit, as a Ray job."""
    from lp_ray.submit import check_submittable, submit  # (Ray's Jobs client: only when submitting)

    c = api.load_cluster(cluster)
    check_submittable(c)
    argv = [a for a in sys.argv[1:] if a != "--submit"]
    sid, what = submit(argv, submission_id, c)
    typer.echo(f"{sid}: {what}; follow it with `lp-ray status {sid}` and `lp-ray logs {sid}`")


@app.command()
def status(
    submission_id: str = typer.Argument(..., help="As printed by --submit."), cluster: Path | None = ClusterOpt
) -> None:
    """Status of a submitted command (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)."""
    from lp_ray.submit import status as job_status

    typer.echo(f"{submission_id}: {job_status(submission_id, api.load_cluster(cluster))}")


@app.command()
def logs(
    submission_id: str = typer.Argument(..., help="As printed by --submit."), cluster: Path | None = ClusterOpt
) -> None:
    """Output of a submitted command so far."""
    from lp_ray.submit import logs as job_logs

    typer.echo(job_logs(submission_id, api.load_cluster(cluster)), nl=False)
