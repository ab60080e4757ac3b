"""Prediction disagreement between tickets (the paper's Figure G10), beside what the pool did with each
pair: does diversity predict whether a merge is accepted, and what it gains? Pure numpy: the
predictions are the per-example test predictions every pool search stores (predictions_RR.parquet, the
`lt` column is ticket RR as trained), the decisions are the searches' traces.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def matrix(rounds: Sequence[int], preds: dict[int, np.ndarray]) -> np.ndarray:
    """Fraction of test examples on which tickets i and j predict different classes."""
    m = np.zeros((len(rounds), len(rounds)))
    for i, a in enumerate(rounds):
        for j, b in enumerate(rounds):
            m[i, j] = float(np.mean(preds[a] != preds[b]))
    return m


def step_rows(trace: list[dict], preds: dict[int, np.ndarray], search: str) -> list[dict]:
    """One row per step of every chain of a search: the target, the candidate, their disagreement, the
    step's best validation accuracy minus the chain's best before it (what merging this candidate
    could gain), and whether it was accepted. (A fast search's steps count with the accuracy that
    decided them: the confirmed one, or the screened one for a step rejected on its screen.)"""
    out = []
    for target in sorted({r["target"] for r in trace}):
        rows = [r for r in trace if r["target"] == target]
        best = None
        for step in sorted({r["step"] for r in rows}):
            at = [r for r in rows if r["step"] == step]
            # A fast search's step: the confirmed evaluation decided it when there is one
            confirmed = [r for r in at if r.get("stage") == "confirm"]
            at = confirmed or at
            top = max(r["val_acc"] for r in at)
            if step == 0:
                best = top
                continue
            cand = at[0]["candidate"]
            accepted = any(r["accepted"] for r in at)
            out.append(
                {
                    "search": search,
                    "target": target,
                    "candidate": cand,
                    "distance": abs(cand - target),
                    "disagreement": float(np.mean(preds[target] != preds[cand])),
                    "val_gain": top - best,
                    "accepted": accepted,
                }
            )
            if accepted:
                best = top
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); nan when either side is constant."""
    from scipy.stats import spearmanr

    if len(set(x)) < 2 or len(set(y)) < 2:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def summary(steps: list[dict]) -> dict:
    """Mean disagreement of accepted and rejected candidates, and how disagreement ranks with a step's
    validation gain."""
    acc = [s["disagreement"] for s in steps if s["accepted"]]
    rej = [s["disagreement"] for s in steps if not s["accepted"]]
    return {
        "steps": len(steps),
        "accepted": len(acc),
        "mean_disagreement_accepted": float(np.mean(acc)) if acc else float("nan"),
        "mean_disagreement_rejected": float(np.mean(rej)) if rej else float("nan"),
        "spearman_disagreement_val_gain": spearman([s["disagreement"] for s in steps], [s["val_gain"] for s in steps]),
    }


def plot(path: str, rounds: Sequence[int], densities: dict[int, float], m: np.ndarray, steps: list[dict]) -> None:
    from lp_ray.analysis.compute.plots import save, ticket_heat_map, two_panels

    plt, fig, left, right = two_panels()
    ticket_heat_map(fig, left, m, rounds, densities, "magma")
    index = {r: i for i, r in enumerate(rounds)}
    taken = [(index[s["target"]], index[s["candidate"]]) for s in steps if s["accepted"]]
    if taken:
        left.scatter([c for _, c in taken], [t for t, _ in taken], marker="o", facecolors="none", edgecolors="c")
    left.set_title("test disagreement (%) between tickets\n(circles: candidate merged into the row's target)")
    left.set_xlabel("candidate")
    left.set_ylabel("target")
    for accepted, colour in ((False, "tab:gray"), (True, "tab:blue")):
        pts = [s for s in steps if s["accepted"] == accepted]
        right.scatter(
            [100 * s["disagreement"] for s in pts],
            [100 * s["val_gain"] for s in pts],
            s=12,
            c=colour,
            label="accepted" if accepted else "rejected",
        )
    right.axhline(0, color="k", lw=0.5)
    right.set_xlabel("disagreement of target and candidate (% of test examples)")
    right.set_ylabel("best validation gain of the step (pt)")
    right.set_title("does diversity predict what a merge gains?")
    right.legend()
    save(plt, fig, path)
