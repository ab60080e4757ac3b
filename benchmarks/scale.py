"""Scale benchmark (not a test): the overhead of going multi-node and multi-worker, on this machine.

 (a) pool evaluations/s on one node vs a simulated cluster of a CPU-less head plus 2 one-CPU worker
     nodes (ray.cluster_utils; same total CPUs: 2), on the same tickets and targets
 (b) IMP round time with 1 vs 2 DDP workers (gloo) on one node, tiny job rounds of the default model

On a 2-core machine the point is the overhead, not a speed-up. Prints both and the ratios.

    .venv/bin/python benchmarks/scale.py RUN_DIR      # a finished run of the default job
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from lp_ray.store import RunDir, read_ticket_meta

ROOT = Path(__file__).resolve().parent.parent
LP_RAY = str(Path(sys.executable).parent / "lp-ray")


def lp_ray(*args, env=None) -> str:
    p = subprocess.run([LP_RAY, *args], capture_output=True, text=True, env={**os.environ, **(env or {})})
    if p.returncode:
        raise SystemExit(p.stdout + p.stderr)
    return p.stdout


def pool_rate(run_dir: str, cluster: Path, name: str, targets: str) -> float:
    out = lp_ray(
        "pool",
        run_dir,
        "--cluster",
        str(cluster),
        "--parallel-evals",
        "2",
        "--targets",
        targets,
        "--name",
        name,
        "--overwrite",
        "--tracking-uri",
        f"sqlite:///{cluster.parent / 'mlflow.db'}",
    )
    line = next(l for l in out.splitlines() if l.startswith("pooled networks:"))
    n, secs = line.split("(")[1].split(" evaluations in ")
    return int(n) / float(secs.split(" s")[0])


MULTI_NODE = """
import json, os, sys
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
from ray.cluster_utils import Cluster
c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
for _ in range(2):
    c.add_node(num_cpus=1)
c.wait_for_nodes()
print(json.dumps({"address": c.address}), flush=True)
sys.stdin.read()
c.shutdown()
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--targets", default="4,8")
    a = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="lp-ray-scale-"))
    storage = str(Path(a.run_dir).resolve().parent)

    # (a) one node vs three nodes (2 with CPUs), same CPUs, same work
    local = d / "local.yaml"
    local.write_text(yaml.safe_dump({"storage_path": storage}))
    rates_local = [pool_rate(a.run_dir, local, "scale-1node", a.targets) for _ in range(2)]
    cluster_proc = subprocess.Popen(
        [sys.executable, "-c", MULTI_NODE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        address = json.loads(cluster_proc.stdout.readline())["address"]
        multi = d / "multi.yaml"
        multi.write_text(yaml.safe_dump({"address": address, "storage_path": storage, "shared_storage": True}))
        rates_multi = [pool_rate(a.run_dir, multi, "scale-2nodes", a.targets) for _ in range(2)]
    finally:
        cluster_proc.stdin.close()
        cluster_proc.wait(timeout=60)

    # (b) IMP round time, 1 vs 2 DDP workers, two 10-epoch rounds of the default model on MNIST-1D
    job = {"name": "scale", "train": {"epochs": 10, "lr_drops": [5, 8]}, "imp": {"rounds": 2, "rewind_epoch": 1}}
    (d / "job.yaml").write_text(yaml.safe_dump(job))
    round_s = {}
    for workers in (1, 2):
        c = d / f"w{workers}.yaml"
        c.write_text(yaml.safe_dump({"num_workers": workers, "storage_path": str(d / f"runs-w{workers}")}))
        lp_ray(
            "imp", "--job", str(d / "job.yaml"), "--cluster", str(c), "--tracking-uri", f"sqlite:///{d / 'mlflow.db'}"
        )
        run = RunDir(str(next((d / f"runs-w{workers}").iterdir())))
        round_s[workers] = [read_ticket_meta(run, r).seconds for r in (0, 1)]

    ml, mm = max(rates_local), max(rates_multi)
    print(
        f"(a) pool evaluations/s, 2 in parallel: 1 node {ml:.2f}, 2 worker nodes {mm:.2f} (best of 2); ratio {mm / ml:.2f}x"
    )
    for w in (1, 2):
        print(
            f"(b) IMP with {w} DDP worker(s): round 0 {round_s[w][0]:.0f} s (10 epochs), round 1 {round_s[w][1]:.0f} s (9 epochs)"
        )
    print(f"    2 workers / 1 worker, round time: {round_s[2][0] / round_s[1][0]:.2f}x")


if __name__ == "__main__":
    main()
