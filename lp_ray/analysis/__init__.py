"""Analyses of finished runs (`lp-ray analyze <name>`): the one list of their names. Each analysis is one
module that declares all of itself (`protocol.Analysis`: its question, options, run, summary and what
the reports show of it); the numbers come from pure modules in `compute/`. Each writes
`analysis/<name>/` in the run directory (Parquet tables, then `<name>.png` last: its "done" marker) and
logs the files to MLflow under the run's imp run. An experiment can run them in every trial
(`analyses:` in its spec) and the reports aggregate them.

    lmc           error along the line between every pair of tickets, barriers, midpoint heat map
    stability     two copies trained from the rewind point (and from epoch 0), the barrier between them
    disagreement  test disagreement between tickets beside what the pool accepted
    ensemble      the output ensemble of each chain's merged tickets next to the pooled network
    robustness    LT and pooled networks on corrupted test sets
"""

from __future__ import annotations

from lp_ray import layout
from lp_ray.analysis.disagreement import DISAGREEMENT
from lp_ray.analysis.ensemble import ENSEMBLE
from lp_ray.analysis.lmc import LMC
from lp_ray.analysis.protocol import Analysis
from lp_ray.analysis.robustness import ROBUSTNESS
from lp_ray.analysis.stability import STABILITY

ANALYSES: dict[str, Analysis] = {a.name: a for a in (LMC, STABILITY, DISAGREEMENT, ENSEMBLE, ROBUSTNESS)}


def run_analysis(name: str, run_uri: str, cluster, tracking_uri: str | None, wait: bool = True, **options):
    """Run an analysis holding its lease (lease.py): one command at a time writes analysis/<name>/;
    another holding it is waited for (`wait`), or is an error. A path that is no run directory is refused
    before anything is written there."""
    from lp_ray.lease import Lease, command_line
    from lp_ray.progress import say
    from lp_ray.store import RunDir

    run = RunDir(run_uri)
    if not run.exists(layout.JOB):  # no run here: the analysis says what is wrong, writing nothing
        return ANALYSES[name].run(run_uri, cluster, tracking_uri, **options)
    with Lease(run, layout.lease_file(f"analysis.{name}"), command_line(), wait, say):
        run.remove_orphans(f"{layout.ANALYSIS}/{name}")  # half-written files of one killed mid-write
        return ANALYSES[name].run(run_uri, cluster, tracking_uri, **options)


def reported() -> list:
    """The analyses whose measurements the run and experiment reports show, in registry order."""
    return [a for a in ANALYSES.values() if hasattr(a, "measures")]


def of_whole_runs() -> list:
    """The analyses that measure a whole run (`of_run`), whose numbers the experiment report averages
    over seeds, in registry order."""
    return [a for a in ANALYSES.values() if hasattr(a, "of_run")]
