"""The process around an `lp-ray` command: its one error boundary (whatever goes wrong is one line and
an exit code) and an exit that no native finalizer can turn into a crash."""

from __future__ import annotations

import sys

import typer

from lp_ray import api
from lp_ray.cli.commands import app
from lp_ray.cli.options import INTERRUPTED
from lp_ray.errors import LpRayError


def main() -> None:
    import os

    # Who holds a lease, as a waiting user is shown it: the command as typed.
    os.environ.setdefault("LP_RAY_COMMAND", " ".join(["lp-ray", *sys.argv[1:]]))
    code = run_cli(sys.argv[1:])
    # Leave Ray before the interpreter exits: a driver of a cluster it did not start that left it to
    # Ray's exit hook crashed there now and then (SIGSEGV after its work was done and printed, seen in
    # the 3-node test). A private Ray is shut down here rather than at exit; same work.
    try:
        api.shutdown()
    except BaseException:  # nothing left to lose: the command's outcome is decided
        pass
    _exit(code)


def _exit(code: int) -> None:
    """Leave without the interpreter's teardown. A command's outcome is decided and on disk by now
    (every write atomic, MLflow logged synchronously, leases given back, Ray left), but native
    extensions' finalizers still crashed the process now and then after all its work was done and
    printed (SIGSEGV, exit -11, seen in the suite on `lp-ray imp --rounds 4` against a shared Ray):
    the user would see a failed command that had succeeded."""
    import logging
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_cli(argv: list[str]) -> int:
    """The one error boundary: whatever goes wrong is one line on stderr and an exit code: 1 for a
    problem with the input or the environment, 2 for a malformed command line, 130 for Ctrl-C."""
    usage = _usage_errors()
    try:
        code = app(argv, prog_name="lp-ray", standalone_mode=False)
    except usage.NoArgsIsHelpError as e:  # plain `lp-ray`: the help (typer has printed it), as before
        return e.exit_code
    except usage.UsageError as e:  # unknown option or command, missing argument, bad value
        where = e.ctx.command_path if e.ctx else "lp-ray"
        typer.echo(f"error: {e.format_message()} (see `{where} --help`)", err=True)
        return 2
    except LpRayError as e:
        typer.echo(f"error: {e}", err=True)
        return 1
    except OSError as e:  # disk full, read-only or vanished storage where no narrower handler was
        from lp_ray.store import os_reason

        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        typer.echo(f"error: {where}{os_reason(e)}", err=True)
        return 1
    except (KeyboardInterrupt, typer.Abort):
        typer.echo(INTERRUPTED, err=True)
        return 130
    return code if isinstance(code, int) else 0


def _usage_errors():
    """Typer's command-line exceptions: typer >= 0.2x vendors click as typer._click."""
    try:
        from typer._click import exceptions
    except ImportError:  # older typer: click itself
        from click import exceptions
    return exceptions
