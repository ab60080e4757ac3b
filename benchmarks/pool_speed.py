"""Pool speed benchmark (not a test), on a finished run of the default job, in one run:

(a) evaluations/s with --parallel-evals 1 and 2 (Ray executor; target >= 1.7x on 2 cores)
(b) pool wall time / IMP wall time for the full interpolation search, with BatchNorm recalibrated on
    the whole training split and on a fixed 10% subset (--bn-samples), and the accuracy of both

   .venv/bin/python benchmarks/pool_speed.py RUN_DIR     # e.g. runs/default-53b16eb2ce after `make demo`
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lp_ray import layout  # noqa: E402
from lp_ray.pool.command import run_pool  # noqa: E402
from lp_ray.spec import ClusterSpec, PoolSpec  # noqa: E402
from lp_ray.store import RunDir, finished_rounds, read_ticket_meta  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--speed-targets", default="3,6", help="targets used for the evaluations/s comparison")
    a = ap.parse_args()
    run = RunDir(a.run_dir)
    cluster = ClusterSpec()
    rounds = finished_rounds(run)
    metas = [read_ticket_meta(run, r) for r in rounds]
    imp_seconds = sum(m.seconds for m in metas)
    train_size = len(__import__("safetensors.torch", fromlist=["load"]).load(run.read_bytes(layout.SPLIT))["train_idx"])

    # (a) throughput at 1 and 2 evaluations in flight, same targets, same work
    targets = [int(t) for t in a.speed_targets.split(",")]
    rates = {}
    for p in (1, 2, 1, 2):
        out = run_pool(
            run.uri,
            PoolSpec(targets=targets),
            cluster,
            None,
            name=f"bench-speed-p{p}",
            parallel_evals=p,
            overwrite=True,
        )
        rates.setdefault(p, []).append(out.evaluations / out.seconds)
    # (b) full search, full vs 10% BN recalibration
    full = run_pool(run.uri, PoolSpec(), cluster, None, name="bench-bn-full", parallel_evals=2, overwrite=True)
    sub = run_pool(
        run.uri,
        PoolSpec(bn_samples=train_size // 10),
        cluster,
        None,
        name="bench-bn-10pct",
        parallel_evals=2,
        overwrite=True,
    )

    def gains(o):
        g = [r.gain for r in o.results.values()]
        return statistics.mean(g), sum(x > 0 for x in g), len(g)

    r1, r2 = statistics.median(rates[1]), statistics.median(rates[2])
    print()
    print(
        f"(a) evaluations/s: parallel 1: {r1:.2f}, parallel 2: {r2:.2f}  (medians of {len(rates[1])}); speed-up {r2 / r1:.2f}x (target >= 1.7x)"
    )
    print(f"(b) IMP wall (sum of rounds): {imp_seconds:.0f} s")
    for label, o in (("full BN recal", full), (f"BN recal on {train_size // 10} samples", sub)):
        mg, wins, n = gains(o)
        print(
            f"    {label:28}: pool {o.seconds:6.0f} s = {o.seconds / imp_seconds:.3f}x IMP; mean gain {100 * mg:+.2f} pt, "
            f"LP > LT at {wins}/{n} sparsities"
        )
    result = {
        "evals_per_s": {"1": r1, "2": r2},
        "imp_seconds": imp_seconds,
        "pool_full_seconds": full.seconds,
        "pool_subset_seconds": sub.seconds,
        "gain_full": gains(full)[0],
        "gain_subset": gains(sub)[0],
    }
    Path(ROOT / "benchmarks/out").mkdir(parents=True, exist_ok=True)
    (ROOT / "benchmarks/out/pool_speed.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
