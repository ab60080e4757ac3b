"""Selection-bias check (not a test): how much of a Lottery Pools "gain" is noise of the data it was chosen on?

Lottery Pools makes up to (candidates × coefficients) comparisons per target and keeps the best, so an
accuracy measured on the same examples the choices were made on is biased upwards (the winner's curse).
The paper's code made its choices on the test set in places (docs/architecture.md, "Lottery Pools"); lp-ray decides
on the validation split only. This script re-runs the interpolation chain of every target of finished
runs (e.g. the fidelity benchmark's) under three protocols, with lp-ray's own chain and evaluator, and
prints LT vs LP test accuracy for each:

    val    lp-ray: decide on the validation split, report on the test set (read from `lp-ray pool`'s summary)
    test   decide on the test set and report on the same test set (the paper code's protocol): optimistic
    split  decide on a seeded half of the test set, report on the other half: an unbiased estimate with
           more examples to decide on than the validation split has

LT is the ticket as trained (what `lp-ray report` shows), on the same examples as LP's figure.

    .venv/bin/python benchmarks/selection_bias.py benchmarks/out/fidelity/runs/*    # after fidelity.py

Run directories are processed side by side (`--jobs`, one torch thread each).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lp_ray import layout  # noqa: E402
from lp_ray.opened_run import open_run  # noqa: E402
from lp_ray.pool.chain import Chain, candidate_order  # noqa: E402
from lp_ray.pool.core import Evaluator, bn_subset, keep_count, merge  # noqa: E402
from lp_ray.training import accuracy  # noqa: E402

PROTOCOLS = ("val", "test", "split")


def greedy(ev: Evaluator, pr, target: int, keep, score) -> dict:
    """The interpolation chain of `target`, with `score(state)` (after BN recalibration) deciding."""
    chain = Chain(target, candidate_order(target, pr.rounds))
    current = pr.tickets[target]
    while not chain.done:
        step = chain.open_step()
        cand = None if step.index == 0 else pr.tickets[step.candidate]
        accs = []
        for alpha in step.alphas:
            ev.load(ev.merge(current, cand, alpha, keep)[0])
            accs.append(score())
        d = chain.decide(accs)
        if d.accepted:
            current, _ = merge(current, cand, d.alpha, pr.prunable, keep)
    return current


def run_one(run_dir: str, split_seed: int) -> dict:
    torch.set_num_threads(1)
    pr = open_run(run_dir)
    data, model = pr.data, pr.new_model()
    ev = Evaluator(model, data, pr.prunable, bn_subset(data.train_idx, None, 0), pr.job.train.batch_size)
    test = data.test
    everything = torch.arange(len(test))
    perm = torch.randperm(len(test), generator=torch.Generator().manual_seed(split_seed))
    half_a, half_b = perm[: len(test) // 2].sort().values, perm[len(test) // 2 :].sort().values

    def acc(idx):
        return accuracy(ev.model, test, idx, 2000)

    summary = {r["target"]: r for r in pq.read_table(f"{run_dir}/{layout.summary('interpolation')}").to_pylist()}
    rows = {}
    for t in pr.rounds:
        keep = keep_count(pr.masks[t])
        ev.model.load_state_dict(pr.tickets[t])  # LT as trained, no recalibration
        lt_all, lt_b = acc(everything), acc(half_b)
        row = {"val": (summary[t]["lt_test_acc"], summary[t]["test_acc"])}
        for name, decide_on, report_on, lt in (
            ("test", everything, everything, lt_all),
            ("split", half_a, half_b, lt_b),
        ):
            final = greedy(ev, pr, t, keep, lambda decide_on=decide_on: acc(decide_on))
            ev.load(ev.merge(final, None, 0.0, keep)[0])
            row[name] = (lt, acc(report_on))
        rows[t] = row
        print(
            f"  {Path(run_dir).name} target {t:2d}: "
            + "  ".join(f"{p} {100 * (lp - lt):+.2f}" for p, (lt, lp) in row.items()),
            flush=True,
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", nargs="+", help="finished runs with `lp-ray pool --method interpolation` done")
    ap.add_argument("--jobs", type=int, default=2, help="run directories processed at the same time")
    ap.add_argument("--split-seed", type=int, default=0, help="seed of the test set's halves for `split`")
    a = ap.parse_args()
    t0 = time.time()
    with ProcessPoolExecutor(a.jobs) as pool:
        results = list(pool.map(run_one, a.run_dirs, [a.split_seed] * len(a.run_dirs)))

    lines = [f"{'protocol':>8} {'decides on':>22} {'reports on':>20} {'mean LP-LT':>11} {'LP > LT':>9} {'LP < LT':>9}"]
    where = {
        "val": ("validation split", "test set"),
        "test": ("test set", "the same test set"),
        "split": ("half of the test set", "the other half"),
    }
    for p in PROTOCOLS:
        gains = [lp - lt for rows in results for (lt, lp) in (row[p] for row in rows.values())]
        lines.append(
            f"{p:>8} {where[p][0]:>22} {where[p][1]:>20} {100 * statistics.mean(gains):>+10.2f}  "
            f"{sum(g > 0 for g in gains):>4}/{len(gains):<4} {sum(g < 0 for g in gains):>4}/{len(gains):<4}"
        )
    lines.append(f"{len(a.run_dirs)} runs, (round, run) cells; wall {(time.time() - t0) / 60:.1f} min")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
