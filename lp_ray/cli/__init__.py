"""The `lp-ray` command (docs/api.md: the CLI is a thin layer over the Python API). Thin: parse
arguments, call `lp_ray.api`, print. Every user-fixable problem is an `LpRayError`, printed as one line
with a non-zero exit.

    options.py    the options every command shares, and Ctrl-C handling
    commands.py   the commands
    analyze.py    `lp-ray analyze <name>`, one command per registered analysis
    main.py       the process around a command: its one error boundary and its exit
"""

from lp_ray.cli.commands import app
from lp_ray.cli.main import main, run_cli
from lp_ray.cli.options import interruptible

__all__ = ["app", "main", "run_cli", "interruptible"]
