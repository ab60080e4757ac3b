"""The chaos run, short (benchmarks/chaos.py runs 30 faults): a sweep of the tiny job on local storage
and `lp-ray run` on S3 (moto), under faults at seeded random moments: the driver SIGKILLed, a Ray Train
worker or an evaluator actor killed, a second copy of the command started, the S3 server stopped and
continued, the MLflow server killed and restarted. Each command is rerun until it finishes; then the run
directories must hold a solo run's networks byte for byte (and its traces and tables), no lease may be
left, and MLflow must hold exactly one of each entity (runs, LoggedModels, a round's or target's step)."""

import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
from helpers import cluster_left, only_run, start_moto, stop

pytestmark = pytest.mark.e2e

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import chaos  # noqa: E402

from lp_ray.store import RunDir  # noqa: E402

KINDS = {"imp": 1, "pool:interpolation": 1, "model": 1}  # the model: the search's best network


@pytest.fixture(scope="module")
def moto():
    proc, endpoint = start_moto("chaos")
    try:
        yield proc, endpoint
    finally:
        os.kill(proc.pid, signal.SIGCONT)  # should a failed test have left it stopped
        stop(proc)


def template_run(finished_template) -> dict:
    run = only_run(finished_template)
    return {run.name: RunDir(str(run))}


def test_chaos_short(tmp_path, ray_address, finished_template, moto):
    proc, endpoint = moto
    reference = {
        "runs": template_run(finished_template),
        "kinds": {"sweep": {**KINDS, "sweep": 1, "sweep_trial": 1}, "s3": KINDS},
        "ignore": {"sweep": ["report.parquet"]},  # the template is `lp-ray run`'s: a trial writes no run report
    }
    t0 = time.time()
    out = chaos.chaos(
        tmp_path,
        ray_address,
        endpoint,
        proc,
        faults=6,
        seed=1,
        seeds="0",
        methods=("interpolation",),
        reference=reference,
        say=lambda line: print(line, flush=True),
        first={"s3": ("tracking_down",)},  # the MLflow server killed mid-run at least once
    )
    print(out, f"{time.time() - t0:.0f} s")
    assert out["total"] == 6 and set(out["faults"]) <= {
        "driver",
        "train_worker",
        "evaluator",
        "second_copy",
        "storage_pause",
        "tracking_down",
    }
    assert out["problems"] == [] and out["failed_copies_at_end"] == 0, out
    assert out["faults"]["tracking_down"] >= 1
    assert {e["episode"].split("-")[0] for e in out["episodes"]} == {"sweep", "s3"}
    # Killed drivers reserve nothing after them: Ray removed their workers' placement groups (a command's
    # fit runs without Ray Train's placement-group cleaner: the group goes with the command's Ray job).
    left = cluster_left(ray_address)
    assert left["free_cpus"] == left["cpus"] == 2 and set(left["placement_groups"]) <= {"REMOVED"}, left


def test_chaos_check_sees_a_changed_network_a_lost_target_and_a_left_lease(tmp_path, finished_template):
    """The check can fail: a copy of a finished run with one pooled network's byte changed, a target's
    record removed and a lease file left is three problems."""
    ref = template_run(finished_template)
    (name,) = ref
    copy = tmp_path / name
    shutil.copytree(Path(ref[name].path()), copy)
    net = copy / "pool" / "interpolation" / "target_01.safetensors"
    data = bytearray(net.read_bytes())
    data[-1] ^= 1
    net.write_bytes(bytes(data))
    (copy / "pool" / "interpolation" / "target_02.json").unlink()
    (copy / "lease.imp.json").write_text("{}")
    db = finished_template / "mlflow.db"
    problems = chaos.compare(ref, chaos.duplicates(db)[1], {name: RunDir(str(copy))}, db)
    assert sorted(problems) == sorted(
        [
            f"{name}/pool/interpolation/target_01.safetensors: differs",
            f"{name}/pool/interpolation/target_02.json: missing",
            f"{name}/lease.imp.json: extra",
        ]
    )
    assert chaos.compare(ref, chaos.duplicates(db)[1], ref, db) == []
