"""What a lease costs a command (not a test): taking and giving back a run's lease, and one heartbeat,
on a local path and on an S3-compatible server (moto on loopback), medians over many; beside them, the
start-up a command pays anyway (`lp-ray imp` on a finished run: nothing to train), measured in the
same run.

    .venv/bin/python benchmarks/lease_cost.py [--repeats 50]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def timed(fn, repeats: int) -> float:
    """Median seconds of fn() over `repeats` calls."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def lease_costs(uri: str, repeats: int) -> tuple[float, float]:
    from lp_ray.lease import Holder, Lease, _encode
    from lp_ray.store import RunDir

    run = RunDir(uri)

    def take_and_give_back():
        lease = Lease(run, "lease.imp.json", "bench", say=lambda _: None)
        lease.acquire()
        lease.release()

    hold = Lease(run, "lease.pool.x.json", "bench")
    hold.acquire()
    beat = Holder(**{**hold.holder.__dict__, "heartbeat": 1})

    def heartbeat():  # what the heartbeat thread does each tick: read, check, rewrite
        from lp_ray.lease import read_holder

        read_holder(run, "lease.pool.x.json")
        run.write_bytes("lease.pool.x.json", _encode(beat))

    costs = timed(take_and_give_back, repeats), timed(heartbeat, repeats)
    hold.release()
    return costs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=50)
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import TINY_JOB, start_moto, stop, tiny_cluster, write_yaml

    work = Path(tempfile.mkdtemp(prefix="lp-ray-lease-"))
    rows = [("local", *lease_costs(str(work / "run"), a.repeats))]
    moto, endpoint = start_moto("bench")
    try:
        uri = f"s3://bench/run?endpoint_override={endpoint}&scheme=http&region=us-east-1"
        rows.append(("s3 (moto)", *lease_costs(uri, a.repeats)))
    finally:
        stop(moto)

    # A command's own start-up, for scale: `lp-ray imp` on a finished run has nothing to train.
    job = write_yaml(work / "tiny.yaml", TINY_JOB)
    cluster = write_yaml(work / "cluster.yaml", tiny_cluster(work / "runs"))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    cmd = [str(BIN / "lp-ray"), "imp", "--job", str(job), "--cluster", str(cluster), "--tracking-uri", uri]
    subprocess.run(cmd, cwd=work, capture_output=True, check=True)  # trains it once
    command = timed(lambda: subprocess.run(cmd, cwd=work, capture_output=True, check=True), 3)

    print(f"{'storage':<12} {'take + give back':>18} {'one heartbeat':>15}   (medians of {a.repeats})")
    for name, take, beat in rows:
        print(f"{name:<12} {1000 * take:>15.2f} ms {1000 * beat:>12.2f} ms")
    print(f"`lp-ray imp` on a finished run (nothing to train): {command:.1f} s, median of 3")
    worst = max(r[1] for r in rows)
    print(f"the lease is {100 * worst / command:.3f}% of that command's time at most")
    return 0


if __name__ == "__main__":
    sys.exit(main())
