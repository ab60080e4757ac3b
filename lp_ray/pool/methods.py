"""The pool methods: the one list of their names, and everything in which they differ.

Every method runs the same greedy chain (`pool/chain.py`, docs/architecture.md "Lottery Pools"). A
method says three things: which coefficients a step scores, whether the step's best merge is accepted,
and whether each candidate merge is re-pruned to the target's density or pruned once at the end.
Pure Python: no torch, no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# Paper Table 3's interpolation pool.
INTERPOLATION_POOL = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


class Method(Protocol):
    # True: every candidate merge is re-pruned to the target's number of weights before it is scored.
    # False: merges stay dense while the chain runs; the pooled network is pruned once, at the end.
    reprunes: bool
    # True: whether a merge is accepted depends on its accuracy (a fast search confirms the winner of
    # a step before it is accepted); False: every merge is accepted whatever it scores.
    selective: bool

    def coefficients(self, merged: int, override: tuple[float, ...] | None, ema_decay: float) -> tuple[float, ...]:
        """The alphas a step scores (w = alpha * candidate + (1 - alpha) * current); `merged` counts the
        tickets already in `current`, `override` is the user's coefficient pool (None: the method's)."""
        ...

    def accepts(self, accuracy: float, best: float) -> bool:
        """Whether the step's best merge becomes the chain's current network."""
        ...


@dataclass(frozen=True)
class Greedy:
    """Lottery Pools proper: score every coefficient, accept only a strict improvement on validation."""

    pool: tuple[float, ...]
    reprunes: bool = True
    selective: bool = True

    def coefficients(self, merged, override, ema_decay):
        return tuple(override) if override is not None else self.pool

    def accepts(self, accuracy, best):
        return accuracy > best


@dataclass(frozen=True)
class RunningMean:
    """SWA over the tickets in adjacency order: the (n+1)-th ticket gets weight 1/(n+1); every candidate
    is merged (a baseline: no selection on validation)."""

    reprunes: bool = True
    selective: bool = False

    def coefficients(self, merged, override, ema_decay):
        return (1.0 / (merged + 1),)

    def accepts(self, accuracy, best):
        return True


@dataclass(frozen=True)
class ExponentialMean:
    """Standard EMA, w = d * current + (1 - d) * candidate, every candidate merged. (The paper's code
    applied the decay to the new ticket instead.)"""

    reprunes: bool = True
    selective: bool = False

    def coefficients(self, merged, override, ema_decay):
        return (1.0 - ema_decay,)

    def accepts(self, accuracy, best):
        return True


METHODS: dict[str, Method] = {
    "interpolation": Greedy(INTERPOLATION_POOL),
    "average": Greedy((0.5,)),
    "swa": RunningMean(),
    "ema": ExponentialMean(),
    # Ablation: interpolate greedily without re-pruning; prune once at the end.
    "prune_after": Greedy(INTERPOLATION_POOL, reprunes=False),
}


def known() -> str:
    return ", ".join(METHODS)
