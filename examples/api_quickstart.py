"""lp-ray from Python: train (or resume) a job's IMP run, pool it, and look at the result as torch
modules and tables, as one would in a notebook.

    python examples/api_quickstart.py                              # the embedded default job, local Ray
    python examples/api_quickstart.py --job jobs/default.yaml --cluster cluster/local.yaml train.epochs=10

Everything here is what `lp-ray run` does, with the results in hand instead of printed: the same run
directory, checks, leases and MLflow logging. Rerunning it resumes; finished work is never redone.
"""

from __future__ import annotations

import argparse

import torch

import lp_ray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="job field overrides, e.g. train.epochs=10")
    parser.add_argument("--job", help="job spec YAML (default: the embedded default job)")
    parser.add_argument("--cluster", help="cluster spec YAML (default: a private Ray on this machine)")
    parser.add_argument("--tracking-uri", help="MLflow store (default: as lp-ray chooses)")
    parser.add_argument("--method", default="average", help="pool method (default: average, the quickest)")
    args = parser.parse_args()

    try:
        result = lp_ray.run(
            args.job,
            overrides=args.overrides,
            method=args.method,
            cluster=args.cluster,
            tracking_uri=args.tracking_uri,
        )
    except lp_ray.LpRayError as e:  # a bad input or environment: lp-ray's one-line message
        raise SystemExit(f"error: {e}") from None

    run = lp_ray.open_run(result.run_dir)
    print(f"run {run.uri}: rounds {run.rounds}, searches {run.searches()}")
    print(f"this pool: {result.pool.evaluations} evaluations in {result.pool.seconds:.1f} s")

    # The search's summary as a table (pyarrow; .to_pandas() for pandas).
    summary = run.summary(args.method)
    for row in summary.to_pylist():
        print(
            f"target {row['target']:2d}: LT test {100 * row['lt_test_acc']:.2f}%  "
            f"pooled test {100 * row['test_acc']:.2f}%  accepted {row['accepted']}"
        )

    # The sparsest pooled network as a torch module: weights pruned to its ticket's density.
    target = run.rounds[-1]
    net = run.pooled(target, search=args.method)
    zeros = sum(int((p == 0).sum()) for p in net.parameters() if p.dim() > 1)
    total = sum(p.numel() for p in net.parameters() if p.dim() > 1)
    print(
        f"pooled network of target {target}: {type(net).__name__}, {100 * zeros / total:.1f}% of its weights are zero"
    )
    x, y = run.examples("test")
    x, y = x[:500], y[:500]
    with torch.no_grad():
        correct = int((net(x).argmax(1) == y).sum())
    print(f"on the first {len(y)} test examples it is right {correct} times")


if __name__ == "__main__":
    main()
