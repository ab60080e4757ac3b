"""What logging a network as an MLflow LoggedModel costs (not a test): seconds and bytes per network, for
the default job's network (conv1d on MNIST-1D) and a CIFAR ResNet-18, into a fresh SQLite store with
its artifacts beside it, as `lp-ray pool` logs them (pt2 export, explicit requirements). Medians over
`--repeats`; beside them, what one network's weights take in the run directory (safetensors), which
the run keeps either way. The numbers choose --log-models' default (docs/mlflow.md).

    .venv/bin/python benchmarks/logged_models.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(name: str, model_spec, input_shape, num_classes: int, repeats: int) -> dict:
    import numpy as np
    import torch
    from safetensors.torch import save as save_safetensors

    from lp_ray.models import build_model
    from lp_ray.tracking import networks
    from lp_ray.tracking.tracker import Tracker

    torch.manual_seed(0)
    net = build_model(model_spec, num_classes, input_shape).eval()
    example = np.zeros((2, *input_shape), np.float32)
    with tempfile.TemporaryDirectory() as d:
        tracker = Tracker(f"sqlite:///{d}/mlflow.db", "lp-ray/bench", "h")
        run = tracker.start("pool interpolation", {"lp_ray.kind": "pool:bench"})
        seconds = []
        for i in range(repeats + 1):  # the first pays torch.export's and MLflow's imports
            t0 = time.perf_counter()
            networks.log_network(tracker, run, f"net {i}", f"net {i:02d}", net, example, {}, {}, {"test_acc": 1.0})
            seconds.append(time.perf_counter() - t0)
        stored = folder_bytes(Path(d) / "mlartifacts") / (repeats + 1)
    weights = len(save_safetensors({k: v.contiguous() for k, v in net.state_dict().items()}))
    return {
        "network": name,
        "seconds_median": statistics.median(seconds[1:]),
        "first_seconds": seconds[0],
        "mlflow_mb": stored / 2**20,
        "run_dir_mb": weights / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from lp_ray.spec import ModelSpec

    rows = [
        measure("conv1d (default job)", ModelSpec(name="conv1d"), (1, 40), 10, args.repeats),
        measure("CIFAR ResNet-18", ModelSpec(name="cifar_resnet18"), (3, 32, 32), 10, args.repeats),
    ]
    print(f"{'network':24} {'s/network':>10} {'first s':>8} {'MLflow MB':>10} {'run dir MB':>10}")
    for r in rows:
        print(
            f"{r['network']:24} {r['seconds_median']:10.2f} {r['first_seconds']:8.2f} "
            f"{r['mlflow_mb']:10.2f} {r['run_dir_mb']:10.2f}"
        )
    print("Per search of T targets: 'pooled' and 'all' multiply these by T (and by the rounds for 'all'); 'best' by 1.")


if __name__ == "__main__":
    main()
