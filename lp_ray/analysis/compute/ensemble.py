"""What Lottery Pools buys at no extra inference cost: the output ensemble of the tickets a chain merged
(the average of their softmax outputs, k forward passes per example) next to the pooled network (one),
and the plain baseline of the ticket with the best validation accuracy. Pure numpy: the probabilities
come from analysis/ensemble.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ensemble_accuracy(probs: Sequence[np.ndarray], labels: np.ndarray) -> float:
    """Accuracy of the mean of the members' class probabilities (ties: the lower class index)."""
    mean = np.mean(np.stack([np.asarray(p, dtype=np.float64) for p in probs]), axis=0)
    return float(np.mean(mean.argmax(axis=1) == labels))


def rows(search: str, records: list, probs: dict[int, np.ndarray], labels: np.ndarray) -> list[dict]:
    """Per target of a search: LT, the pooled network and the ensemble of the target with every ticket
    its chain accepted (members = 1 + accepted: the inference cost, in forward passes)."""
    out = []
    for rec in sorted(records, key=lambda r: r.target):
        members = [rec.target, *rec.accepted]
        out.append(
            {
                "search": search,
                "target": rec.target,
                "density": rec.density,
                "members": len(members),
                "lt_test_acc": rec.lt_test_acc,
                "pooled_test_acc": rec.test_acc,
                "ensemble_test_acc": ensemble_accuracy([probs[m] for m in members], labels),
                # the pooled network measured: a report uses the row only while the search still has it
                "network_sha256": rec.sha256,
            }
        )
    return out


def best_val_round(val: dict[int, float]) -> int:
    """The round a user picking one ticket on validation would ship (the first of equals: the denser)."""
    return max(sorted(val), key=lambda r: val[r])


def plot(path: str, table: list[dict], best: tuple[int, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for search in sorted({r["search"] for r in table}):
        pts = sorted((r for r in table if r["search"] == search), key=lambda r: -r["density"])
        x = [100 * r["density"] for r in pts]
        ax.plot(x, [100 * r["pooled_test_acc"] for r in pts], marker="o", label=f"pooled ({search}, 1x)")
        ax.plot(
            x, [100 * r["ensemble_test_acc"] for r in pts], marker="^", ls="--", label=f"output ensemble ({search}, kx)"
        )
    first = sorted((r for r in table if r["search"] == table[0]["search"]), key=lambda r: -r["density"])
    ax.plot([100 * r["density"] for r in first], [100 * r["lt_test_acc"] for r in first], marker="s", c="k", label="LT")
    ax.axhline(100 * best[1], c="gray", ls=":", label=f"LT of the best validation round ({best[0]})")
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("pooled network (one forward pass) vs the output ensemble of the tickets it merged")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
