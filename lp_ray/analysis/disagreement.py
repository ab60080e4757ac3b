"""`lp-ray analyze disagreement`: does diversity predict what a merge gains? From the test predictions
every pool search stores and the searches' traces (no weights); the numbers are
`compute/disagreement.py`'s."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lp_ray import layout
from lp_ray.analysis.protocol import Outcome
from lp_ray.analysis.running import open_finished, write_outputs
from lp_ray.errors import LpRayError

if TYPE_CHECKING:
    import numpy as np

    from lp_ray.opened_run import OpenedRun


def stored_lt_predictions(opened: OpenedRun) -> tuple[dict[int, np.ndarray], np.ndarray, dict[str, list[dict]]]:
    """Every ticket's test predictions as stored by pool searches (the `lt` column of predictions_RR
    .parquet: the ticket as trained), the labels, and each search's trace."""
    from lp_ray.pool.records import all_searches, read_predictions, read_trace

    preds: dict[int, np.ndarray] = {}
    labels = None
    traces = {}
    for search, results in all_searches(opened.run).items():
        for t, res in results.items():
            table = read_predictions(opened.run, search, res)
            if table is None:
                continue
            preds.setdefault(t, table.column("lt").to_numpy())
            labels = table.column("label").to_numpy()
        if opened.run.exists(layout.trace(search)):
            traces[search] = read_trace(opened.run, search)
    missing = [r for r in opened.rounds if r not in preds]
    if missing:
        raise LpRayError(
            f"{opened.run.uri}: no stored test predictions for round(s) {missing}; "
            f"run `lp-ray pool {opened.run.uri}` first"
        )
    return preds, labels, traces


class Disagreement:
    name = "disagreement"
    help = (
        "Does diversity predict what a merge gains? The fraction of test examples on which two tickets "
        "predict differently, for every pair (the paper's Figure G10), beside every step of every pool search: "
        "the candidate's disagreement with the target, the step's best validation gain, and whether it was "
        "accepted. Needs a finished `lp-ray pool` (it reads the stored test predictions, no weights)."
    )
    options = ()
    uses_cluster = False

    def run(self, run_uri, cluster, tracking_uri) -> Outcome:
        from lp_ray.analysis.compute import disagreement

        opened = open_finished(run_uri)
        preds, _, traces = stored_lt_predictions(opened)
        rounds = opened.rounds
        m = disagreement.matrix(rounds, preds)
        pairs = [
            {"a": a, "b": b, "disagreement": float(m[i, j])}
            for i, a in enumerate(rounds)
            for j, b in enumerate(rounds)
            if i < j
        ]
        steps = [row for search, trace in traces.items() for row in disagreement.step_rows(trace, preds, search)]
        summary = [{"search": s, **disagreement.summary([r for r in steps if r["search"] == s])} for s in traces]
        densities = {r: opened.metas[r].density for r in rounds}
        first = next(iter(traces), None)
        shown = [r for r in steps if r["search"] == first]
        written = write_outputs(
            opened,
            self.name,
            {"pairs": pairs, "steps": steps, "summary": summary},
            lambda png: disagreement.plot(png, rounds, densities, m, shown),
            tracking_uri,
        )
        return Outcome(summary, written)

    def summary(self, rows: list[dict]) -> list[str]:
        return [
            f"{s['search']}: mean disagreement of accepted candidates {100 * s['mean_disagreement_accepted']:.2f}%, "
            f"rejected {100 * s['mean_disagreement_rejected']:.2f}%; Spearman(disagreement, step's val gain) "
            f"{s['spearman_disagreement_val_gain']:+.2f} over {s['steps']} steps"
            for s in rows
        ]


DISAGREEMENT = Disagreement()
