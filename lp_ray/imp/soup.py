"""Particle soups (docs/architecture.md, "Particles"): the one list of `imp.soup` names and the averaging
they do. Pure: no Ray, and not even a torch import (tensors are used through their methods), so checking
a job stays torch-free.

A particle round trains m copies of the pruned network from the same masked start with different data
orders; its ticket is their soup, under the round's shared mask, with BatchNorm recalibrated:

    uniform  the mean of every particle (Sparse Model Soups' uniform soup; SWAMP's average)
    greedy   particles by validation accuracy, best first; each joins only if the soup's validation
             accuracy (recalibrated) does not drop (Wortsman et al.'s greedy soup, as SMS uses it)

The mean is taken as p0 + sum(p_i - p0) / m: the soup of m identical particles is the particle, bit for
bit, which a plain sum divided by m does not promise in floating point. Positions the mask zeroes are zero
in every particle, so they stay zero in the soup.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

MAX_PARTICLES = 64  # a sanity bound on imp.particles (each particle is a full retraining)


@dataclass(frozen=True)
class Soup:
    greedy: bool  # particles join one by one, kept only where validation does not drop


SOUPS: dict[str, Soup] = {"uniform": Soup(greedy=False), "greedy": Soup(greedy=True)}


def mean_state(states: Sequence[Mapping]) -> dict:
    """The mean of floating-point tensors across `states`; integer buffers (BatchNorm's
    num_batches_tracked) are counters, not weights: they keep the first state's value."""
    if not states:
        raise ValueError("a soup needs at least one particle")
    first = states[0]
    for s in states[1:]:
        if set(s) != set(first):
            raise ValueError("particles differ in their tensors")
    out = {}
    for name, w in first.items():
        if w.is_floating_point() and len(states) > 1:
            delta = sum((s[name] - w for s in states[1:]), start=w.new_zeros(w.shape))
            out[name] = w + delta / len(states)
        else:
            out[name] = w.clone()
    return out


def make_soup(
    kind: str, states: Sequence[Mapping], val_accs: Sequence[float], score: Callable[[dict], float]
) -> tuple[dict, list[int], float]:
    """(soup, the particles in it in the order they joined, its validation accuracy). `score(state)` is
    the validation accuracy of a soup after BatchNorm recalibration; `val_accs` the particles' own."""
    if kind not in SOUPS:
        raise ValueError(f"unknown soup {kind!r} (known: {', '.join(SOUPS)})")
    if not SOUPS[kind].greedy:
        soup = mean_state(states)
        return soup, list(range(len(states))), score(soup)
    order = sorted(range(len(states)), key=lambda i: (-val_accs[i], i))  # best first; ties: lower index
    members = [order[0]]
    soup = mean_state([states[order[0]]])
    best = score(soup)
    for i in order[1:]:
        trial = mean_state([states[j] for j in [*members, i]])
        acc = score(trial)
        if acc >= best:
            members, soup, best = [*members, i], trial, acc
    return soup, members, best
