"""Sweep overhead benchmark (not a test): N trials through `lp-ray sweep` vs the same N jobs through
`lp-ray run` one after another, in one run, each in a fresh storage folder and MLflow store.

Prints the wall times and the ratio sweep / sequential runs, at one trial at a time (target <= 1.1x)
and at two at a time (on a 2-core machine two trials share the cores; the ratio says what that buys).

    .venv/bin/python benchmarks/sweep.py                 # the tiny job, 2 seeds (minutes)
    .venv/bin/python benchmarks/sweep.py --seeds 3 --job jobs/default.yaml
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
LP_RAY = str(Path(sys.executable).parent / "lp-ray")
TINY = {
    "name": "tiny",
    "data": {"dataset": "mnist1d", "num_samples": 2000},
    "model": {"name": "conv1d", "width": 16},
    "train": {"epochs": 4, "lr_drops": [3]},
    "imp": {"rounds": 3, "rewind_epoch": 1},
}


def timed(args: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([LP_RAY, *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"lp-ray {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", type=Path, help="base job spec (default: the tiny test job)")
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    job = yaml.safe_load(args.job.read_text()) if args.job else TINY
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        results = {}
        for label, concurrent in (("sweep, 1 at a time", 1), ("sweep, 2 at a time", 2), ("lp-ray run x N", None)):
            d = base / label.replace(" ", "_").replace(",", "")
            d.mkdir()
            (d / "job.yaml").write_text(yaml.safe_dump(job))
            if concurrent is None:
                results[label] = sum(
                    timed(["run", "--job", "job.yaml", f"train.seed={s}"], d) for s in range(args.seeds)
                )
            else:
                spec = {"name": "bench", "job": "job.yaml", "seeds": f"0-{args.seeds - 1}"}
                (d / "exp.yaml").write_text(yaml.safe_dump(spec))
                results[label] = timed(["sweep", "exp.yaml", "--max-concurrent", str(concurrent)], d)
            print(f"{label:22s} {results[label]:7.1f} s", flush=True)
    runs = results["lp-ray run x N"]
    for label in ("sweep, 1 at a time", "sweep, 2 at a time"):
        print(f"{label} / sequential runs: {results[label] / runs:.2f}x")


if __name__ == "__main__":
    main()
