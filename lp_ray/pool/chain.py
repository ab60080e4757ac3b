"""The greedy chain of Lottery Pools (paper Algorithm 2; docs/architecture.md "Lottery Pools") as a small
state machine.

A chain knows nothing of weights or executors: it says which (candidate, alphas) step is open, and is
told the validation accuracy of every alpha. Because a decision depends only on those numbers, the same
accuracies always give the same chain, whatever order evaluations finish in.

    step 0      the target itself (alpha 0): its validation accuracy after BN recalibration is `best`
    step i>=1   candidate i in adjacency order; every alpha of the method is scored;
                the best alpha is the first with the highest accuracy; whether it is accepted is
                the method's rule (`pool/methods.py`: > best for interpolation, always for swa and ema)

A screening chain (the fast search, `pool/searches.py`) scores a step in two stages: every alpha with
a subset recalibration (`screen`), then, when the method's rule would accept the screened winner
against the chain's best screened accuracy, that one merge with the full recalibration (`confirm`),
which decides against the chain's best confirmed accuracy. Step 0 is screened and confirmed, so both
bests start from the target itself. Methods that accept every merge are never confirmed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lp_ray.pool.methods import METHODS, Method, known
from lp_ray.pool.searches import CONFIRM, FULL, SCREEN


def candidate_order(target: int, rounds: list[int], search_num: int | None = None) -> list[int]:
    """Other tickets by adjacency: t-1, t+1, t-2, t+2, ... (the denser neighbour first), capped at
    `search_num` candidates (all of them by default; the paper's code silently dropped the last)."""
    others = set(rounds) - {target}
    order = []
    for d in range(1, max(rounds, default=0) - min(rounds, default=0) + 1):
        for c in (target - d, target + d):
            if c in others:
                order.append(c)
    return order if search_num is None else order[:search_num]


@dataclass(frozen=True)
class Step:
    target: int
    index: int  # 0: the target alone; i >= 1: the i-th candidate
    candidate: int  # the round merged in (the target itself at step 0)
    alphas: tuple[float, ...]
    stage: str = FULL  # full (exact), or screen then confirm (fast)


@dataclass(frozen=True)
class Decision:
    step: Step  # the stage whose accuracy decided
    alpha: float  # the chosen coefficient (the best one, accepted or not)
    val_acc: float
    accepted: bool


@dataclass
class Chain:
    target: int
    candidates: list[int]
    method: str = "interpolation"
    coefficients: list[float] | None = None  # the user's coefficient pool (greedy methods; swa/ema ignore it)
    ema_decay: float = 0.95
    screening: bool = False  # the fast search's two stages
    index: int = 0
    best: float | None = None
    best_screen: float | None = None  # the current network's screened accuracy (screening chains)
    merged: int = 1  # tickets averaged into `current` so far (for swa)
    decisions: list[Decision] = field(default_factory=list)
    pending: Step | None = None  # an open confirmation
    screened: float | None = None  # the screened accuracy of the merge being confirmed

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown pool method {self.method!r} (known: {known()})")

    @property
    def rule(self) -> Method:
        return METHODS[self.method]

    @property
    def done(self) -> bool:
        return self.index > len(self.candidates)

    def alphas(self) -> tuple[float, ...]:
        override = None if self.coefficients is None else tuple(self.coefficients)
        return self.rule.coefficients(self.merged, override, self.ema_decay)

    def open_step(self) -> Step | None:
        if self.done:
            return None
        if self.pending is not None:
            return self.pending
        stage = SCREEN if self.screening else FULL
        if self.index == 0:
            return Step(self.target, 0, self.target, (0.0,), stage)
        return Step(self.target, self.index, self.candidates[self.index - 1], self.alphas(), stage)

    def decide(self, accuracies: list[float]) -> Decision | None:
        """Record the open step's accuracies (one per alpha, in alpha order) and move on. None: the
        step is not decided yet (a screened step whose winner is to be confirmed: see open_step)."""
        step = self.open_step()
        if step is None:
            raise RuntimeError(f"chain for target {self.target} is finished")
        if len(accuracies) != len(step.alphas):
            raise ValueError(f"step {step.index} has {len(step.alphas)} alphas, got {len(accuracies)} accuracies")
        # First alpha in list order among the highest accuracies: max() keeps the first maximum.
        i = max(range(len(accuracies)), key=lambda j: accuracies[j])
        acc, alpha = accuracies[i], step.alphas[i]
        if step.stage == SCREEN:
            if step.index == 0 or (self.rule.selective and self.rule.accepts(acc, self.best_screen)):
                # worth the full recalibration: the target itself, or a merge the screen would accept
                self.pending, self.screened = Step(step.target, step.index, step.candidate, (alpha,), CONFIRM), acc
                return None
            # Rejected on the screen (never confirmed), or a method that accepts every merge.
            return self._decided(Decision(step, alpha, acc, not self.rule.selective), screened=acc)
        if step.stage == CONFIRM:
            self.pending = None
            return self._decided(Decision(step, alpha, acc, step.index > 0 and self.rule.accepts(acc, self.best)))
        return self._decided(Decision(step, alpha, acc, step.index > 0 and self.rule.accepts(acc, self.best)))

    def _decided(self, decision: Decision, screened: float | None = None) -> Decision:
        step = decision.step
        if step.index == 0:
            self.best, self.best_screen = decision.val_acc, self.screened
        elif decision.accepted:
            self.best = decision.val_acc
            self.best_screen = self.screened if step.stage == CONFIRM else screened
            self.merged += 1
        self.decisions.append(decision)
        self.index += 1
        return decision

    @property
    def accepted(self) -> list[Decision]:
        return [d for d in self.decisions if d.accepted]
