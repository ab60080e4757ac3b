"""`lp-ray analyze <name>`: one command per registered analysis (lp_ray/analysis), built from what the
analysis declares (its options, whether it evaluates on a cluster)."""

from __future__ import annotations

from pathlib import Path

import typer

from lp_ray import api
from lp_ray.cli.options import ClusterOpt, NoWaitOpt, RunArg, TrackingOpt, interruptible
from lp_ray.errors import LpRayError

analyze_app = typer.Typer(
    no_args_is_help=True,
    help="Analyses of a finished run: each writes RUN_DIR/analysis/<name>/ (Parquet tables and a PNG) and logs "
    "them to MLflow as artifacts of the run's imp run.",
)


def _analysis_command(analysis):
    """`lp-ray analyze <name>`, built from what the analysis declares: RUN_DIR, its options, the cluster
    spec when it evaluates on Ray, the tracking URI. Parses the options (a bad value is one error naming
    it), runs the analysis, prints its summary and what it wrote."""
    import inspect

    def command(run_dir: str, tracking_uri: str | None, no_wait: bool, cluster: Path | None = None, **given) -> None:
        from lp_ray.progress import console

        options = {}
        for o in analysis.options:
            try:
                options[o.name] = o.parse(given[o.name]) if o.parse else given[o.name]
            except ValueError as e:
                raise LpRayError(f"--{o.name.replace('_', '-')}: {e}") from None
        outcome = api.analyze(
            analysis.name, run_dir, cluster=cluster, tracking_uri=tracking_uri, wait=not no_wait, **options
        )
        for line in analysis.summary(outcome.rows):
            console.print(line, highlight=False)
        for f in outcome.written.files:
            console.print(f"wrote {f}", highlight=False)
        if outcome.written.mlflow_run:
            console.print(
                f"logged to MLflow run {outcome.written.mlflow_run} (artifacts under analysis/)", highlight=False
            )

    P = inspect.Parameter
    params = [P("run_dir", P.KEYWORD_ONLY, default=RunArg, annotation=str)]
    for o in analysis.options:
        flags = [f"--{o.name.replace('_', '-')}", *([o.short] if o.short else [])]
        annotation = o.type if o.type is bool or o.default is not None else o.type | None
        params.append(
            P(o.name, P.KEYWORD_ONLY, default=typer.Option(o.default, *flags, help=o.help), annotation=annotation)
        )
    if analysis.uses_cluster:
        params.append(P("cluster", P.KEYWORD_ONLY, default=ClusterOpt, annotation=Path | None))
    params.append(P("tracking_uri", P.KEYWORD_ONLY, default=TrackingOpt, annotation=str | None))
    params.append(P("no_wait", P.KEYWORD_ONLY, default=NoWaitOpt, annotation=bool))
    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = analysis.help
    command.__name__ = f"analyze_{analysis.name}"
    return interruptible(command)


def _add_analysis_commands() -> None:
    from lp_ray.analysis import ANALYSES

    for name, analysis in ANALYSES.items():
        analyze_app.command(name)(_analysis_command(analysis))


_add_analysis_commands()
