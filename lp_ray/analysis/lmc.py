"""`lp-ray analyze lmc`: are the tickets linearly mode connected? (the paper's Figures 1-2). Every pair
of tickets along the straight line between them, BatchNorm recalibrated at every point as in the pool
(where the network has it), scored on the pool's evaluators; the numbers are `compute/lmc.py`'s."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lp_ray import layout
from lp_ray.analysis.protocol import Option, Outcome, RunMeasure
from lp_ray.analysis.running import (
    analysis_done,
    executor,
    open_finished,
    parse_alphas,
    positive,
    score_all,
    write_outputs,
)
from lp_ray.errors import LpRayError
from lp_ray.spec import DEFAULT_PARALLEL_EVALS

ALPHAS_OPTION = Option("alphas", str, "Points along each path, 0 to 1 (default 0,0.1,...,1).", parse=parse_alphas)
PARALLEL_OPTION = Option(
    "parallel_evals",
    int,
    "Evaluations in flight at once (as for lp-ray pool).",
    default=DEFAULT_PARALLEL_EVALS,
    parse=positive,
    short="-p",
)

if TYPE_CHECKING:
    from lp_ray.opened_run import OpenedRun


def paths(opened: OpenedRun, rounds, cluster, alphas, parallel, serial, tracking_uri, what) -> tuple[list[dict], dict]:
    """Every pair of `rounds` along `alphas` on the pool's evaluators: each ticket scored once (the
    endpoint of every path it is on), every interior point once."""
    from lp_ray.analysis.compute import lmc
    from lp_ray.pool.executors import ScoreRequest
    from lp_ray.progress import console

    ex = executor(opened, cluster, parallel, serial, tracking_uri)
    try:
        for r in rounds:
            ex.put(r, opened.tickets[r])
        requests: dict = {("ticket", r): ScoreRequest(r, None, 0.0, None) for r in rounds}
        for a, b in lmc.pairs(rounds):
            for alpha in alphas[1:-1]:
                requests[a, b, alpha] = ScoreRequest(a, b, alpha, None)
        console.print(
            f"[bold]lp-ray analyze {what}[/] {opened.run.uri}: {len(rounds)} networks, {len(lmc.pairs(rounds))} "
            f"pair(s) x {len(alphas)} points: {len(requests)} evaluations, {ex.parallel} in parallel"
        )
        scores = score_all(ex, requests, what)
    finally:
        ex.close()
    return lmc.path_rows(rounds, alphas, scores), scores


class LinearModeConnectivity:
    name = "lmc"
    help = (
        "Are the tickets linearly mode connected? Validation and test error along the straight line between "
        "every pair of tickets (BatchNorm recalibrated at every point, as in the pool), each pair's error "
        "barrier (Frankle et al. 2020), and a heat map of the midpoint accuracy of every pair: the paper's "
        "Figures 1-2, the reason rewinding matters to Lottery Pools."
    )
    options = (
        ALPHAS_OPTION,
        PARALLEL_OPTION,
        Option("serial", bool, "Evaluate in this process, without Ray.", default=False),
    )
    uses_cluster = True

    def run(
        self, run_uri, cluster, tracking_uri, alphas=None, parallel_evals=DEFAULT_PARALLEL_EVALS, serial=False
    ) -> Outcome:
        from lp_ray.analysis.compute import lmc

        alphas = alphas or lmc.ALPHAS
        opened = open_finished(run_uri)
        rounds = opened.rounds
        if len(rounds) < 2:
            raise LpRayError(
                f"{opened.run.uri}: linear mode connectivity needs two finished tickets, found {len(rounds)}"
            )
        rows, scores = paths(opened, rounds, cluster, alphas, parallel_evals, serial, tracking_uri, "lmc")
        pairs = lmc.pair_rows(rows)
        densities = {r: opened.metas[r].density for r in rounds}
        matrix = lmc.midpoint_matrix(rounds, pairs, {r: scores["ticket", r][1] for r in rounds})
        written = write_outputs(
            opened,
            self.name,
            {"path": rows, "pairs": pairs},
            lambda png: lmc.plot(png, rounds, densities, rows, matrix),
            tracking_uri,
        )
        return Outcome(pairs, written)

    def summary(self, pairs: list[dict]) -> list[str]:
        adjacent = [p for p in pairs if p["b"] == p["a"] + 1]
        return [
            "error barrier (test, pt) between adjacent tickets: "
            + "  ".join(f"{p['a']}-{p['b']} {100 * p['barrier_test']:+.2f}" for p in adjacent),
            f"mean barrier over all {len(pairs)} pairs: {100 * sum(p['barrier_test'] for p in pairs) / len(pairs):+.2f} pt",
        ]

    def of_run(self, run) -> list[RunMeasure] | None:
        """The mean test error barrier per group of pairs (every pair, with the first ticket, between pruned
        tickets, adjacent rounds), for the experiment report to average over seeds; None if not run."""
        from lp_ray.analysis.compute import lmc

        if not analysis_done(run, self.name):
            return None
        pairs = run.read_table(layout.analysis_file(self.name, "pairs.parquet")).to_pylist()
        return [
            RunMeasure(f"barrier_{key}_pt", f"mean error barrier (test, pt) between {group}", value)
            for key, group, value in lmc.mean_barriers(pairs)
        ]


LMC = LinearModeConnectivity()
