"""What the pairwise analyses' figures share: a two-panel figure whose left panel is a heat map over
tickets (rows and columns labelled with round and density), saved without a display."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def two_panels():
    """(pyplot, figure, left axes, right axes), on the Agg backend: analyses run on headless machines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    return plt, fig, left, right


def ticket_heat_map(fig, ax, matrix: np.ndarray, rounds: Sequence[int], densities: dict[int, float], cmap: str):
    """`matrix` (fractions) as percentages over the tickets `rounds`, with a colour bar."""
    labels = [f"{r}\n{100 * densities[r]:.0f}%" for r in rounds]
    im = ax.imshow(100 * matrix, cmap=cmap)
    ax.set_xticks(range(len(rounds)), labels, fontsize=7)
    ax.set_yticks(range(len(rounds)), labels, fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.046)


def save(plt, fig, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
