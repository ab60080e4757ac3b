"""The greedy chain of Lottery Pools (paper Algorithm 2; docs/architecture.md "Lottery Pools") as a small
state machine.

A chain knows nothing of weights or executors: it says which (candidate, alphas) step is open, and is
told the validation accuracy of every alpha. Because a decision depends only on those numbers, the same
accuracies always give the same chain, whatever order evaluations finish in.

    step 0      the target itself (alpha 0): its validation accuracy after BN recalibration is `best`
    step i>=1   candidate i in adjacency order; every alpha of the method is scored;
                the best alpha is the first with the highest accuracy; whether it is accepted is
                the method's rule (`pool/methods.py`: > best for interpolation, always for swa and ema)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lp_ray.pool.methods import METHODS, Method, known


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


@dataclass(frozen=True)
class Decision:
    step: Step
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
    index: int = 0
    best: float | None = None
    merged: int = 1  # tickets averaged into `current` so far (for swa)
    decisions: list[Decision] = field(default_factory=list)

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
        if self.index == 0:
            return Step(self.target, 0, self.target, (0.0,))
        return Step(self.target, self.index, self.candidates[self.index - 1], self.alphas())

    def decide(self, accuracies: list[float]) -> Decision:
        """Record the open step's accuracies (one per alpha, in alpha order) and move on."""
        step = self.open_step()
        if step is None:
            raise RuntimeError(f"chain for target {self.target} is finished")
        if len(accuracies) != len(step.alphas):
            raise ValueError(f"step {step.index} has {len(step.alphas)} alphas, got {len(accuracies)} accuracies")
        # First alpha in list order among the highest accuracies: max() keeps the first maximum.
        i = max(range(len(accuracies)), key=lambda j: accuracies[j])
        acc = accuracies[i]
        if step.index == 0:
            accepted = False
            self.best = acc
        else:
            accepted = self.rule.accepts(acc, self.best)
            if accepted:
                self.best = acc
                self.merged += 1
        decision = Decision(step, step.alphas[i], acc, accepted)
        self.decisions.append(decision)
        self.index += 1
        return decision

    @property
    def accepted(self) -> list[Decision]:
        return [d for d in self.decisions if d.accepted]
