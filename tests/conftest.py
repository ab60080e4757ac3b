"""Shared fixtures: tiny jobs, a CLI runner that runs the real `lp-ray` console script, and one SQLite
MLflow store per test session (a new store costs ~7 s to set up)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

BIN = Path(sys.executable).parent
LP_RAY = str(BIN / "lp-ray")

# A 3-epoch MNIST-1D job with a width-16 CNN: a round takes seconds of compute.
TINY_JOB = {
    "name": "tiny",
    "data": {"dataset": "mnist1d", "num_samples": 2000},
    "model": {"name": "conv1d", "width": 16},
    "train": {"epochs": 3, "lr_drops": [2]},
    "imp": {"rounds": 3, "rewind_epoch": 1},
}


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None) if env is None or "MLFLOW_TRACKING_URI" not in env else None
    return subprocess.run([LP_RAY, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
