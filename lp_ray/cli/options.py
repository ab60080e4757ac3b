"""The options every `lp-ray` command shares, and how a long command meets Ctrl-C."""

from __future__ import annotations

import functools

import typer

JobOpt = typer.Option(None, "--job", "-j", help="Job spec YAML (default: the embedded default job, jobs/default.yaml).")
ClusterOpt = typer.Option(None, "--cluster", "-c", help="Cluster spec YAML (default: cluster/local.yaml's settings).")
SubmitOpt = typer.Option(
    False,
    "--submit",
    help="Send this command to the cluster through the Ray Jobs API and return (see `lp-ray status` / `lp-ray logs`).",
)
LogModelsOpt = typer.Option(
    "best",
    "--log-models",
    help="Networks MLflow gets as models (Models tab, loadable, registrable): best (per search, its best "
    "pooled network on validation), pooled (every pooled network), all (and every ticket) or none.",
)
RegisterOpt = typer.Option(
    None,
    "--register",
    metavar="NAME",
    help="Register each search's best pooled network as a version of this MLflow registered model "
    "(alias: the search's name).",
)
TrackingOpt = typer.Option(
    None,
    "--tracking-uri",
    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, the cluster spec, then sqlite:///mlflow.db).",
)
NoWaitOpt = typer.Option(
    False,
    "--no-wait",
    help="If another command is working on the same run (it holds its lease), stop with an error instead of "
    "waiting for it and continuing after it.",
)


INTERRUPTED = "interrupted: finished work is kept; rerun the same command to resume"


def interruptible(command):
    """Ctrl-C in a long command: say how to go on, exit 130. (Typer would turn the KeyboardInterrupt
    into a silent exit 130 before main() sees it.)"""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from lp_ray import interrupt

        try:
            with interrupt.recorded_sigint():
                result = command(*args, **kwargs)
                interrupt.check()  # a Ctrl-C swallowed in the command's last steps (its final logging)
                return result
        except KeyboardInterrupt:
            typer.echo(INTERRUPTED, err=True)
            raise typer.Exit(130) from None

    return wrapper


OverridesArg = typer.Argument(
    None,
    metavar="[KEY=VALUE]...",
    help="Job field overrides on top of the job spec, e.g. train.epochs=3 imp.rewind_epoch=0 (values are YAML).",
    show_default=False,
)


RunArg = typer.Argument(..., help="A run directory (local path or URI), as printed by `lp-ray imp`.")
