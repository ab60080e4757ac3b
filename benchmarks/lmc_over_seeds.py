"""Linear mode connectivity over an experiment's seeds (not a test): reads every finished trial's
`analysis/lmc/pairs.parquet` (an experiment run with `analyses: [lmc]`) and prints, per grid cell, the
mean error barrier (test, pt) with its Student-t 95% interval over seeds, for every pair of tickets,
for the pairs with the dense ticket (round 0), for pairs of pruned tickets, and for adjacent rounds.
A barrier near 0 means the straight line between two tickets stays as accurate as its endpoints: the
room Lottery Pools works in.

   .venv/bin/python benchmarks/lmc_over_seeds.py EXPERIMENT_DIR
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lp_ray.stats import paired_t_ci  # noqa: E402

GROUPS = {
    "all pairs": lambda p: True,
    "with the dense ticket": lambda p: p["a"] == 0,
    "pruned tickets only": lambda p: p["a"] >= 1,
    "adjacent rounds": lambda p: p["b"] == p["a"] + 1,
}


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    exp = Path(sys.argv[1])
    trials = pq.read_table(exp / "trials.parquet").to_pylist()
    by_cell: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for t in trials:
        path = Path(t["run_dir"]) / "analysis" / "lmc" / "pairs.parquet"
        if t["status"] != "done" or not path.exists():
            print(f"trial {t['trial']} ({t['cell']}, seed {t['seed']}): no lmc analysis, left out")
            continue
        pairs = pq.read_table(path).to_pylist()
        for group, keep in GROUPS.items():
            chosen = [100 * p["barrier_test"] for p in pairs if keep(p)]
            by_cell[t["cell"]][f"barrier, {group} (pt)"].append(statistics.mean(chosen))
        mid = [100 * p["midpoint_test_acc"] for p in pairs if p["a"] >= 1]
        by_cell[t["cell"]]["midpoint test acc, pruned pairs (%)"].append(statistics.mean(mid))
    for cell, groups in by_cell.items():
        print(f"{cell}:")
        for group, values in groups.items():
            ci = paired_t_ci(values, [0.0] * len(values))
            sign = "" if group.endswith("(%)") else "+"
            print(f"  {group:>38}: {ci.mean:{sign}.2f} [{ci.low:{sign}.2f}, {ci.high:{sign}.2f}] over {ci.n} seeds")


if __name__ == "__main__":
    main()
