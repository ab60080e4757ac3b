"""The Python API's own rules (lp_ray/api.py), without Ray: what `import lp_ray` loads, how jobs and
options are taken, and that a bad input is an LpRayError with the CLI's message. (The API driving a
run: test_e2e_api.py.)"""

from __future__ import annotations

import subprocess
import sys

import pytest

import lp_ray
from lp_ray.spec import JobSpec, run_hash


def test_import_lp_ray_is_light_and_hands_out_the_commands():
    code = (
        "import sys, lp_ray; f = lp_ray.run; print(sorted(m for m in ('torch', 'ray', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert {"run", "imp", "pool", "open_run", "sweep", "analyze"} <= set(dir(lp_ray))
    with pytest.raises(AttributeError):
        lp_ray.not_a_command  # noqa: B018


def test_a_job_is_a_path_a_jobspec_or_the_default():
    default = lp_ray.load_job()
    assert isinstance(default, JobSpec) and run_hash(default) == "53b16eb2ce"  # the default job's run
    changed = lp_ray.load_job(default, ["train.epochs=30", "train.lr_drops=[10,20]"])
    assert changed.train.epochs == 30 and default.train.epochs == 40
    assert lp_ray.load_job("jobs/default.yaml").train == default.train
    with pytest.raises(lp_ray.LpRayError, match=r"train.epochs: must be at least 1, got 0"):
        lp_ray.load_job(default, ["train.epochs=0"])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"alphas": "0,2"}, r"analysis lmc: alphas: alphas must rise strictly from 0 to 1, got \[0.0, 2.0\]"),
        ({"parallel_evals": 0}, r"analysis lmc: parallel_evals: must be at least 1, got 0"),
        ({"nope": 1}, r"analysis lmc: unknown option 'nope' \(known: alphas, parallel_evals, serial\)"),
    ],
)
def test_an_analysis_options_are_checked_as_the_cli_checks_them(tmp_path, options, message):
    with pytest.raises(lp_ray.LpRayError, match=message):
        lp_ray.analyze("lmc", tmp_path, **options)
    assert list(tmp_path.iterdir()) == []


def test_unknown_names_and_missing_runs_are_the_clis_errors(tmp_path):
    with pytest.raises(lp_ray.LpRayError, match=r"unknown analysis 'lcm' \(known: .*lmc"):
        lp_ray.analyze("lcm", tmp_path)
    with pytest.raises(lp_ray.LpRayError, match=r"no such run directory"):
        lp_ray.tickets(tmp_path / "nope")
    with pytest.raises(lp_ray.LpRayError, match=r"not an lp-ray run directory \(no job.yaml\)"):
        lp_ray.open_run(tmp_path)
