"""Linear mode connectivity between tickets (the paper's Figures 1-2; Frankle et al. 2020). Pure: the
numbers come from `Evaluator.score` (pool/core.py), run on the pool's executors by analysis/lmc.py.

For a pair of tickets (a, b) and a coefficient alpha, the network is (1 - alpha) * w_a + alpha * w_b,
not re-pruned (the path between two masks), with its BatchNorm statistics recalibrated as in the pool.
Its error barrier is how far the error rises above the straight line between the two endpoints' errors,
at its highest: max over alpha of error(alpha) - ((1 - alpha) error(0) + alpha error(1)). With endpoints
of equal error it is Frankle et al.'s (the rise above their mean); tickets of different sparsity have
different errors, and a path that only falls from the worse to the better one has no barrier. A ticket
with itself has barrier 0; tickets in one linearly connected basin have a barrier near 0; a large
barrier means averaging them lands on a ridge.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ALPHAS = tuple(round(i / 10, 1) for i in range(11))


def check_alphas(alphas: Sequence[float]) -> tuple[float, ...]:
    """A path from one ticket to the other: starts at 0, ends at 1, strictly increasing."""
    a = tuple(float(x) for x in alphas)
    if len(a) < 2 or a[0] != 0.0 or a[-1] != 1.0 or any(y <= x for x, y in zip(a, a[1:], strict=False)):
        raise ValueError(f"alphas must rise strictly from 0 to 1, got {list(a)}")
    return a


def pairs(rounds: Sequence[int]) -> list[tuple[int, int]]:
    return [(a, b) for i, a in enumerate(rounds) for b in rounds[i + 1 :]]


def barrier(alphas: Sequence[float], errors: Sequence[float]) -> float:
    """max over the path of error(alpha) - ((1 - alpha) error(0) + alpha error(1)); alphas run from 0 to 1.
    Never below 0 (the endpoints themselves are on the line)."""
    a, e = np.asarray(alphas, dtype=np.float64), np.asarray(errors, dtype=np.float64)
    return float(np.max(e - ((1 - a) * e[0] + a * e[-1])))


def path_rows(rounds: Sequence[int], alphas: Sequence[float], scores: dict) -> list[dict]:
    """One row per (a, b, alpha): val and test accuracy. `scores` maps ("ticket", r) to a ticket's own
    (val, test) and (a, b, alpha) to an interior point's."""
    rows = []
    for a, b in pairs(rounds):
        for alpha in alphas:
            if alpha == 0.0:
                val, test = scores["ticket", a]
            elif alpha == 1.0:
                val, test = scores["ticket", b]
            else:
                val, test = scores[a, b, alpha]
            rows.append({"a": a, "b": b, "alpha": alpha, "val_acc": val, "test_acc": test})
    return rows


def pair_rows(rows: list[dict]) -> list[dict]:
    """Per pair: the barrier on validation and on test error, and the midpoint's test accuracy."""
    out = []
    for a, b in sorted({(r["a"], r["b"]) for r in rows}):
        path = sorted((r for r in rows if (r["a"], r["b"]) == (a, b)), key=lambda r: r["alpha"])
        mid = min(path, key=lambda r: abs(r["alpha"] - 0.5))
        out.append(
            {
                "a": a,
                "b": b,
                "barrier_val": barrier([r["alpha"] for r in path], [1 - r["val_acc"] for r in path]),
                "barrier_test": barrier([r["alpha"] for r in path], [1 - r["test_acc"] for r in path]),
                "midpoint_alpha": mid["alpha"],
                "midpoint_test_acc": mid["test_acc"],
            }
        )
    return out


BARRIER_GROUPS = (  # key, which pairs, whether a pair (a < b, rounds) is one of them given the first round
    ("all_pairs", "every pair of tickets", lambda a, b, first: True),
    ("with_first", "the first round's ticket (dense) and each pruned one", lambda a, b, first: a == first),
    ("pruned_pairs", "pairs of pruned tickets", lambda a, b, first: a != first),
    ("adjacent", "adjacent rounds", lambda a, b, first: b == a + 1),
)


def mean_barriers(pairs_: list[dict]) -> list[tuple[str, str, float]]:
    """The mean test error barrier in points over each group of pairs that has any: (key, group, mean).
    A run's one-number answer to "are its tickets on one basin?", per group, for averaging over seeds."""
    first = min(p["a"] for p in pairs_)
    out = []
    for key, group, keep in BARRIER_GROUPS:
        chosen = [100 * p["barrier_test"] for p in pairs_ if keep(p["a"], p["b"], first)]
        if chosen:
            out.append((key, group, float(np.mean(chosen))))
    return out


def midpoint_matrix(rounds: Sequence[int], pairs_: list[dict], own: dict[int, float]) -> np.ndarray:
    """Test accuracy of every pair's midpoint, symmetric; the diagonal is each ticket's own."""
    index = {r: i for i, r in enumerate(rounds)}
    m = np.full((len(rounds), len(rounds)), np.nan)
    for r in rounds:
        m[index[r], index[r]] = own[r]
    for p in pairs_:
        m[index[p["a"]], index[p["b"]]] = m[index[p["b"]], index[p["a"]]] = p["midpoint_test_acc"]
    return m


def plot(path: str, rounds: Sequence[int], densities: dict[int, float], rows: list[dict], matrix: np.ndarray) -> None:
    from lp_ray.analysis.compute.plots import save, ticket_heat_map, two_panels

    plt, fig, left, right = two_panels()
    ticket_heat_map(fig, left, matrix, rounds, densities, "viridis")
    left.set_title("test accuracy (%) at the midpoint of each pair\n(diagonal: the ticket itself, BN recalibrated)")
    for i in range(len(rounds)):
        for j in range(len(rounds)):
            if not np.isnan(matrix[i, j]):
                left.text(j, i, f"{100 * matrix[i, j]:.1f}", ha="center", va="center", fontsize=6, color="w")
    for a, b in zip(rounds, rounds[1:], strict=False):
        line = sorted((r for r in rows if (r["a"], r["b"]) == (a, b)), key=lambda r: r["alpha"])
        right.plot([r["alpha"] for r in line], [100 * (1 - r["test_acc"]) for r in line], marker=".", label=f"{a}-{b}")
    right.set_xlabel("alpha  ((1 - alpha) * ticket a + alpha * ticket b)")
    right.set_ylabel("test error (%)")
    right.set_title("error along the path between adjacent tickets")
    right.legend(fontsize=7, ncol=2)
    save(plt, fig, path)


def plot_stability(path: str, rows: list[dict]) -> None:
    """Test error along the path between the two copies, one line per starting epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k in sorted({r["from_epoch"] for r in rows}, reverse=True):
        pts = sorted((r for r in rows if r["from_epoch"] == k), key=lambda r: r["alpha"])
        ax.plot(
            [r["alpha"] for r in pts], [100 * (1 - r["test_acc"]) for r in pts], marker="o", label=f"from epoch {k}"
        )
    ax.set_xlabel("alpha  ((1 - alpha) * copy 1 + alpha * copy 2)")
    ax.set_ylabel("test error (%)")
    ax.set_title("two copies trained from one point with different data orders")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
