"""How much do the greedy chain's tie rules move a Lottery Pools gain? (not a test)

Two rules of the interpolation chain are decided on validation accuracies that, with a small validation
split, tie often (400 examples: one example is 0.25 pt):

    accept    a step's best merge is kept when its accuracy is  >  the chain's best (lp-ray, the paper's
              code) or  >=  it (the paper's text: kept "if its accuracy on the held-out set does not
              decrease")
    alpha     among coefficients with equal accuracy the step takes the first in list order, the
              smallest alpha (lp-ray, the paper's code) or the last, the largest alpha

This script replays the interpolation chain of every target of finished runs under the four
combinations, with lp-ray's own merge and evaluator, and prints LP - LT on the test set for each: the
mean over runs (seeds) with a 95% bootstrap CI, merges accepted per target, and how often each rule was
hit. lp-ray's own rule (>, first) is not recomputed: it is read from the run's trace and summary, and
the replay of every other rule starts from those recorded accuracies, so only the evaluations after a
rule first changes a decision are run.

    .venv/bin/python benchmarks/chain_rules.py runs/default-*/       # runs with `lp-ray pool` done

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
from lp_ray.pool.chain import candidate_order  # noqa: E402
from lp_ray.pool.core import Evaluator, bn_subset, keep_count, merge  # noqa: E402
from lp_ray.pool.methods import INTERPOLATION_POOL  # noqa: E402
from lp_ray.stats import paired_bootstrap_ci  # noqa: E402

RULES = {  # name -> (accept ties, take the last alpha among ties)
    "> first (lp-ray)": (False, False),
    ">= first": (True, False),
    "> last": (False, True),
    ">= last": (True, True),
}


def choose(accs: list[float], last: bool) -> int:
    best = max(accs)
    hits = [i for i, a in enumerate(accs) if a == best]
    return hits[-1] if last else hits[0]


def replay(target, candidates, evaluate, ties: bool, last: bool) -> tuple[tuple, dict]:
    """The chain of `target` under one rule: (accepted path, counts). `evaluate(path, candidate, alpha)`
    scores a merge of the path's network with `candidate` (None: the target alone)."""
    path: tuple = ()
    best = evaluate(path, None, 0.0)
    counts = {"steps": 0, "alpha_ties": 0, "best_ties": 0}
    for c in candidates:
        accs = [evaluate(path, c, a) for a in INTERPOLATION_POOL]
        i = choose(accs, last)
        counts["steps"] += 1
        counts["alpha_ties"] += accs.count(accs[i]) > 1
        counts["best_ties"] += accs[i] == best
        if accs[i] > best or (ties and accs[i] == best):
            path, best = path + ((c, INTERPOLATION_POOL[i]),), accs[i]
    return path, counts


def run_one(run_dir: str) -> dict:
    torch.set_num_threads(1)
    pr = open_run(run_dir)
    data, model = pr.data, pr.new_model()
    ev = Evaluator(model, data, pr.prunable, bn_subset(data.train_idx, None, 0), pr.job.train.batch_size)
    name = "interpolation"
    summary = {r["target"]: r for r in pq.read_table(f"{run_dir}/{layout.summary(name)}").to_pylist()}
    trace = pq.read_table(f"{run_dir}/{layout.trace(name)}").to_pylist()
    out = {"gains": {rule: [] for rule in RULES}, "merges": {rule: [] for rule in RULES}, "counts": {}, "evals": 0}
    for t in pr.rounds:
        keep = keep_count(pr.masks[t])
        # Seed the memo with lp-ray's own evaluations: (path, candidate, alpha) -> val acc.
        memo: dict = {}
        path: tuple = ()
        rows = sorted((r for r in trace if r["target"] == t), key=lambda r: (r["step"], r["alpha"]))
        for step in sorted({r["step"] for r in rows}):
            step_rows = [r for r in rows if r["step"] == step]
            for r in step_rows:
                memo[(path, None if step == 0 else r["candidate"], r["alpha"])] = r["val_acc"]
            taken = [r for r in step_rows if r["accepted"]]
            if step > 0 and taken:
                path = path + ((taken[0]["candidate"], taken[0]["alpha"]),)
        states = {(): pr.tickets[t]}

        def state_of(p, states=states, t=t, keep=keep):
            if p not in states:
                prev = state_of(p[:-1])
                c, a = p[-1]
                states[p] = merge(prev, pr.tickets[c], a, pr.prunable, keep)[0]
            return states[p]

        def evaluate(p, c, a, memo=memo, keep=keep):
            key = (p, c, a)
            if key not in memo:
                memo[key] = ev.evaluate(state_of(p), None if c is None else pr.tickets[c], a, keep).val_acc
                out["evals"] += 1
            return memo[key]

        lt = summary[t]["lt_test_acc"]
        for rule, (ties, last) in RULES.items():
            p, counts = replay(t, candidate_order(t, pr.rounds), evaluate, ties, last)
            if rule.startswith("> first"):
                test = summary[t]["test_acc"]  # what lp-ray wrote; the replay must agree on the path
                assert list(p) == list(zip(summary[t]["accepted"], summary[t]["alphas"], strict=True)), (t, p)
            else:
                test = ev.finalize(state_of(p), keep).test_acc
            out["gains"][rule].append(test - lt)
            out["merges"][rule].append(len(p))
            for k, v in counts.items():
                out["counts"].setdefault(rule, {}).setdefault(k, 0)
                out["counts"][rule][k] += v
        print(
            f"  {Path(run_dir).name} target {t:2d}: "
            + "  ".join(f"{rule.split(' (')[0]} {100 * out['gains'][rule][-1]:+.2f}" for rule in RULES),
            flush=True,
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", nargs="+", help="finished runs with `lp-ray pool --method interpolation` done")
    ap.add_argument("--jobs", type=int, default=2, help="run directories processed at the same time")
    a = ap.parse_args()
    t0 = time.time()
    with ProcessPoolExecutor(a.jobs) as pool:
        results = list(pool.map(run_one, a.run_dirs))
    print(
        f"\n{'rule':>18} {'LP-LT (pt)':>11} {'95% CI over runs':>18} {'per run':>32} {'merges/target':>14} {'alpha ties':>11} {'ties w/ best':>13}"
    )
    for rule in RULES:
        per_run = [100 * statistics.mean(r["gains"][rule]) for r in results]
        ci = paired_bootstrap_ci(per_run, [0.0] * len(per_run))
        merges = statistics.mean(m for r in results for m in r["merges"][rule])
        steps = sum(r["counts"][rule]["steps"] for r in results)
        at = sum(r["counts"][rule]["alpha_ties"] for r in results)
        bt = sum(r["counts"][rule]["best_ties"] for r in results)
        print(
            f"{rule:>18} {ci.mean:>+11.2f}   [{ci.low:+.2f}, {ci.high:+.2f}]   "
            f"{' '.join(f'{g:+.2f}' for g in per_run):>32} {merges:>14.2f} {at / steps:>11.0%} {bt / steps:>13.0%}"
        )
    print(
        f"{len(results)} runs x {len(results[0]['gains'][next(iter(RULES))])} targets; "
        f"{sum(r['evals'] for r in results)} evaluations replayed; wall {(time.time() - t0) / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
