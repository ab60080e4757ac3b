"""How a search scores the steps of its chains (`pool.search`): the one list of search names. Pure
Python, like the methods (docs/architecture.md, "Fast search").

    exact  the paper's protocol: every (candidate, coefficient) merge is recalibrated on the whole
           training split (or `bn_samples`) and scored on validation; every candidate is tried
    fast   every coefficient of a step is screened with BatchNorm recalibrated on a fixed seeded
           `screen_fraction` of the training split; the step's best merge, if it would be accepted on
           the screened accuracies, is confirmed with the full recalibration and accepted only if the
           confirmed accuracy beats the chain's (also fully recalibrated) best; at most
           `candidates` candidates by adjacency unless `search_num` says otherwise. The pooled network
           is always fully recalibrated and scored once on test.

Why fast is built this way (measured on the default job, docs/results.md): recalibration is most of an
evaluation's cost, and 400 validation examples make every accuracy noisy to ~0.9 pt, so a subset's
statistics lose little at screening; the confirmation keeps every accepted merge decided on the full
protocol's numbers; distant candidates are rarely accepted (5 of 42 at distance >= 5) but take 38% of
an exact search's evaluations.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Search:
    screens: bool  # steps are screened on a BatchNorm subset, then confirmed
    candidates: int | None  # candidates per target when search_num is not given (None: all)

    def candidates_for(self, search_num: int | None) -> int | None:
        return search_num if search_num is not None else self.candidates


SEARCHES: dict[str, Search] = {
    "exact": Search(screens=False, candidates=None),
    "fast": Search(screens=True, candidates=6),
}

# The stages of an evaluation, as the trace records them.
FULL, SCREEN, CONFIRM = "full", "screen", "confirm"


def known() -> str:
    return ", ".join(SEARCHES)
