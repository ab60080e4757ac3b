"""The Python API as a script uses it (examples/api_quickstart.py, the README's example): on this
module's copy of the session's finished run, `lp_ray.run` resumes it (nothing retrained), pools it with
a method it has not run, and `lp_ray.open_run` hands back its tables and a pooled network as a module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cli_env

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "api_quickstart.py"


def test_the_api_example_script_resumes_pools_and_opens_a_run(base_run):
    before = sorted(p.name for p in (base_run["run"] / "rounds").iterdir())
    args = ["--job", str(base_run["job"]), "--cluster", str(base_run["cluster"])]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--tracking-uri", base_run["tracking_uri"]],
        cwd=base_run["dir"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "round  0  done already" in out and "trained:" not in out  # resumed: every round was finished
    assert f"run {base_run['run']}: rounds [0, 1, 2], searches ['average', 'interpolation']" in out
    assert out.count("target ") >= 3 and "LT test" in out
    right = int(out.split("on the first 400 test examples it is right ")[1].split(" times")[0])
    assert 200 < right <= 400  # the tiny job's pooled network of its sparsest target: ~63% on its test set
    assert "% of its weights are zero" in out
    assert sorted(p.name for p in (base_run["run"] / "rounds").iterdir()) == before
    assert (base_run["run"] / "pool" / "average" / "summary.parquet").is_file()

    # A bad input is the CLI's one line, raised as LpRayError and printed by the script.
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "train.epochs=0"],
        cwd=base_run["dir"],
        env=cli_env(),
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and bad.stderr.strip().endswith("train.epochs: must be at least 1, got 0")
