"""Analyses of finished runs (`lp-ray analyze <name>`): the one list of their names. Each writes
`analysis/<name>/` in the run directory (Parquet tables, then `<name>.png` last: its "done" marker) and
logs the files to MLflow under the run's imp run. An experiment can run them in every trial
(`analyses:` in its spec) and `lp-ray report` aggregates them over seeds.

    lmc           error along the line between every pair of tickets, barriers, midpoint heat map
    stability     two copies trained from the rewind point (and from epoch 0), the barrier between them
    disagreement  test disagreement between tickets beside what the pool accepted
    ensemble      the output ensemble of each chain's merged tickets next to the pooled network
    robustness    LT and pooled networks on corrupted test sets
"""

from __future__ import annotations

from collections.abc import Callable


def _lmc(run_uri, cluster, tracking_uri):
    from lp_ray.analysis.command import run_lmc
    from lp_ray.analysis.lmc import ALPHAS

    return run_lmc(run_uri, cluster, tracking_uri, ALPHAS)


def _stability(run_uri, cluster, tracking_uri):
    from lp_ray.analysis.command import run_stability
    from lp_ray.analysis.lmc import ALPHAS
    from lp_ray.store import RunDir, read_job

    k = read_job(RunDir(run_uri)).imp.rewind_epoch
    return run_stability(run_uri, cluster, tracking_uri, sorted({k, 0}, reverse=True), ALPHAS)


def _disagreement(run_uri, cluster, tracking_uri):
    from lp_ray.analysis.command import run_disagreement

    return run_disagreement(run_uri, tracking_uri)


def _ensemble(run_uri, cluster, tracking_uri):
    from lp_ray.analysis.command import run_ensemble

    return run_ensemble(run_uri, tracking_uri)


def _robustness(run_uri, cluster, tracking_uri):
    from lp_ray.analysis.command import run_robustness

    return run_robustness(run_uri, tracking_uri)


# name -> run(run_uri, cluster spec, tracking URI) with the analysis's defaults
ANALYSES: dict[str, Callable] = {
    "lmc": _lmc,
    "stability": _stability,
    "disagreement": _disagreement,
    "ensemble": _ensemble,
    "robustness": _robustness,
}


def analysis_done(run, name: str) -> bool:
    from lp_ray import layout

    return run.exists(layout.analysis_file(name, f"{name}.png"))
