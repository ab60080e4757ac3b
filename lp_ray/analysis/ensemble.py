"""`lp-ray analyze ensemble`: what does Lottery Pools buy at no extra inference cost? The output ensemble
of the tickets each chain merged next to the pooled network; the numbers are `compute/ensemble.py`'s.
`lp-ray report` shows its columns, and an experiment report its verdict over seeds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lp_ray import interrupt
from lp_ray.analysis.protocol import Comparison, Measures, Outcome, row_measures_network
from lp_ray.analysis.running import mean_present, open_finished, read_rows, write_outputs
from lp_ray.errors import LpRayError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from lp_ray.opened_run import OpenedRun


def ticket_probabilities(
    opened: OpenedRun, states: dict, device: torch.device | None = None
) -> tuple[dict, np.ndarray]:
    """Softmax outputs on the test set of every network in `states` (as stored: its own BatchNorm
    statistics), and the labels."""
    import torch

    from lp_ray.training import probabilities

    device = device or torch.device("cpu")

    model = opened.new_model().to(device)
    test = opened.data.test
    idx = torch.arange(len(test))
    out, labels = {}, None
    for key, state in states.items():
        model.load_state_dict(state)
        probs, y = probabilities(model, test, idx, 1000, device, opened.job.train.precision)
        out[key] = probs.numpy()
        labels = y.numpy()
        interrupt.check()
    return out, labels


class OutputEnsemble:
    name = "ensemble"
    help = (
        "What does Lottery Pools buy at no extra inference cost? Per target, the output ensemble of the "
        "tickets its chain merged (the mean of their softmax outputs: k forward passes) next to the pooled "
        "network (one) and LT; and the plain baseline of the ticket with the best validation accuracy. "
        "`lp-ray report` shows the ensemble column once this has run."
    )
    options = ()
    uses_cluster = False
    comparisons = (
        Comparison("ensemble", None, "output ensemble − {method}{where} (k× vs 1× inference)", ("ensemble_members",)),
    )

    def run(self, run_uri, cluster, tracking_uri) -> Outcome:
        from lp_ray.analysis.compute import ensemble
        from lp_ray.pool.records import all_searches

        opened = open_finished(run_uri)
        searches = all_searches(opened.run)
        if not searches:
            raise LpRayError(
                f"{opened.run.uri}: no pool search to compare with; run `lp-ray pool {opened.run.uri}` first"
            )
        probs, labels = ticket_probabilities(opened, opened.tickets)
        table = [
            row for s, results in searches.items() for row in ensemble.rows(s, list(results.values()), probs, labels)
        ]
        metas = opened.metas
        best = ensemble.best_val_round({r: metas[r].val_acc for r in opened.rounds})
        baseline = [{"round": best, "val_acc": metas[best].val_acc, "test_acc": metas[best].test_acc}]
        written = write_outputs(
            opened,
            self.name,
            {"ensemble": table, "best_val_ticket": baseline},
            lambda png: ensemble.plot(png, table, (best, metas[best].test_acc)),
            tracking_uri,
        )
        return Outcome(table, written)

    def summary(self, table: list[dict]) -> list[str]:
        lines = []
        for search in sorted({r["search"] for r in table}):
            mine = [r for r in table if r["search"] == search]

            def mean(k, mine=mine):
                return 100 * sum(r[k] for r in mine) / len(mine)

            lines.append(
                f"{search}: LT {mean('lt_test_acc'):.2f}%  pooled (1x) {mean('pooled_test_acc'):.2f}%  "
                f"output ensemble ({sum(r['members'] for r in mine) / len(mine):.1f}x) "
                f"{mean('ensemble_test_acc'):.2f}% (test, mean over sparsities)"
            )
        return lines

    # --- what the reports show ------------------------------------------------------------------------

    def measures(self, run, searches: dict) -> Measures:
        rows = {(r["search"], r["target"]): r for r in read_rows(run, self.name, "ensemble")}
        out = Measures()
        for search, results in searches.items():
            for t, result in results.items():
                row = rows.get((search, t))
                if row is not None and row_measures_network(row, result, "pooled_test_acc"):
                    out.pooled[search, t] = {"ensemble": row["ensemble_test_acc"], "ensemble_members": row["members"]}
        return out

    def report_columns(self, measures: Measures, rounds: list[int], searches: dict) -> dict[str, list]:
        cols = {}
        for name in searches:
            got = {t: m for (s, t), m in measures.pooled.items() if s == name}
            if got:
                cols[f"{name}_ensemble_acc"] = [100 * got[r]["ensemble"] if r in got else None for r in rounds]
                cols[f"{name}_ensemble_members"] = [got[r]["ensemble_members"] if r in got else None for r in rounds]
        return cols

    def report_lines(self, d: dict, methods: list[str]) -> list[str]:
        lines = []
        for m in methods:
            if f"{m}_ensemble_acc" not in d:
                continue
            pairs = [
                (e, p, k)
                for e, p, k in zip(d[f"{m}_ensemble_acc"], d[f"{m}_test_acc"], d[f"{m}_ensemble_members"], strict=True)
                if e is not None
            ]
            lines.append(
                f"{m}: output ensemble of the merged tickets {mean_present([e for e, _, _ in pairs]):.2f}% "
                f"({mean_present([k for _, _, k in pairs]):.1f}x inference) vs the pooled network "
                f"{mean_present([p for _, p, _ in pairs]):.2f}% (1x), test, mean over {len(pairs)} sparsities"
            )
        return lines


ENSEMBLE = OutputEnsemble()
