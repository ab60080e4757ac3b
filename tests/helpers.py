"""What the tests share that is not a fixture: the tiny job, its cluster, and a runner for the real
`lp-ray` console script (every end-to-end test drives the CLI a user types)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent
LP_RAY = str(BIN / "lp-ray")

# A 4-epoch MNIST-1D job with a width-16 CNN: a round takes seconds of compute (and ~10 s of Ray Train
# start-up). Round r >= 1 trains epochs 1..3 after rewinding to epoch 1.
TINY_JOB = {
    "name": "tiny",
    "data": {"dataset": "mnist1d", "num_samples": 2000},
    "model": {"name": "conv1d", "width": 16},
    "train": {"epochs": 4, "lr_drops": [3]},
    "imp": {"rounds": 3, "rewind_epoch": 1},
}


def tiny_cluster(storage) -> dict:
    """Two DDP workers (gloo) at half a CPU each, so that two rounds' worker groups fit on a 2-core
    machine and the next round's fit() starts early (overlap_rounds auto); evaluations at half a CPU
    so four fit; a checkpoint after every (0.1 s) epoch, so tests can kill a round between two."""
    return {
        "num_workers": 2,
        "resources_per_worker": {"CPU": 0.5},
        "storage_path": str(storage),
        "eval_resources": {"num_cpus": 0.5},
        "max_failures": 2,
        "checkpoint_interval_s": 0,
    }


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cli(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    full_env.pop("LP_RAY_INJECT_FAILURE", None)
    full_env.update(env or {})
    return subprocess.run([LP_RAY, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
