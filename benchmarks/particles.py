"""What a particle round costs (not a test): the default job's first pruned round trained as one
network (plain IMP) and as 3 particles plus their soup (`imp.particles=3`), side by side, alternating,
each its own run directory on the default cluster (`cluster/local.yaml`: one worker per network, so 2
cores hold 2 particles at once). Reported from the rounds' meta.json (`seconds`: the round from its
start to its ticket, soup and BatchNorm recalibration included), medians over repeats: a particle round
against 3x a plain round. 1.00 would be no parallelism at all; 0.67 is 2 of 3 particles at once.

    .venv/bin/python benchmarks/particles.py [--repeats 3] [--particles 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def round_seconds(work: Path, particles: int, repeat: int) -> tuple[float, float, int]:
    """Train rounds 0 and 1 of the default job in a fresh storage folder; round 1's seconds, the whole
    command's wall seconds, and how many particles it trained at once (from its console line)."""
    storage = work / f"runs-{particles}-{repeat}"
    cluster = work / f"cluster-{particles}-{repeat}.yaml"
    local = (ROOT / "cluster" / "local.yaml").read_text()
    cluster.write_text(local.replace("storage_path: ./runs", f"storage_path: {storage}"))
    cmd = [str(BIN / "lp-ray"), "imp", "--rounds", "2", "--cluster", str(cluster)]
    cmd += [f"--tracking-uri=sqlite:///{work / 'mlflow.db'}", f"imp.particles={particles}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    (meta,) = storage.glob("*/rounds/round_01/meta.json")
    at_once = 1
    for line in proc.stdout.splitlines():
        if line.startswith("particles: ") and " train at once" in line:
            at_once = int(line.split()[1])
    return json.loads(meta.read_text())["seconds"], wall, at_once


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--particles", type=int, default=3)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lp-ray-particles-"))
    plain, soup, walls, at_once = [], [], {1: [], a.particles: []}, 1
    for k in range(a.repeats):  # alternating, so drift on a shared machine hits both alike
        for m in (1, a.particles):
            seconds, wall, slots = round_seconds(work, m, k)
            (plain if m == 1 else soup).append(seconds)
            walls[m].append(wall)
            at_once = max(at_once, slots) if m > 1 else at_once
            print(f"repeat {k}: particles={m}: round 1 {seconds:.1f} s (command {wall:.0f} s)", flush=True)
    p, s = statistics.median(plain), statistics.median(soup)
    print(f"\nplain round (1 network)          median {p:6.1f} s over {len(plain)}")
    print(f"particle round ({a.particles} + soup)        median {s:6.1f} s over {len(soup)}")
    print(f"{a.particles} x plain round                 {a.particles * p:6.1f} s")
    print(f"particle round / {a.particles} x plain        {s / (a.particles * p):.2f}  ({os.cpu_count()} cores)")
    print(f"particle round / plain round      {s / p:.2f}")
    print(f"particles trained at once (reported by lp-ray imp): {at_once}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
