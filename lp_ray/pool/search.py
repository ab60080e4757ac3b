"""The search: the schedule of Lottery Pools over every target's greedy chain. `PoolSearch` holds the
chains, feeds evaluations to an executor, decides, and writes results as it goes (docs/architecture.md,
"The parallel schedule") into `pool/<name>/` through `records.py`: settings.json, trace.parquet
(rewritten atomically after every decided step), target_RR.safetensors + target_RR.json per target,
summary.parquet.

A target is finished when its target_RR.json exists. An unfinished chain is rebuilt from the trace on
restart (decisions are a function of the recorded accuracies), so nothing finished is re-evaluated.
Whoever runs the driver follows the search through a `SearchListener`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from lp_ray import interrupt, layout
from lp_ray.errors import LpRayError
from lp_ray.opened_run import OpenedRun
from lp_ray.pool import records
from lp_ray.pool.chain import Chain, Decision, Step, candidate_order
from lp_ray.pool.core import Control, Final, keep_count, merge
from lp_ray.pool.executors import ControlRequest, EvalRequest, Executor, FinalRequest
from lp_ray.pool.methods import METHODS
from lp_ray.pool.records import StepRecord, TargetResult
from lp_ray.pool.searches import FULL, SCREEN, SEARCHES
from lp_ray.spec import PoolSpec
from lp_ray.store import encode_weights, sha256


@dataclass
class _Open:
    step: object
    results: dict = field(default_factory=dict)  # alpha index -> Evaluation


class SearchListener(Protocol):
    """What the driver tells whoever runs it (the progress view, tests), one method per event."""

    def on_start(self, total: int, replayed: int, targets: int, finished: int) -> None:
        """The search begins: `total` evaluations are left, `replayed` were taken from the trace;
        `finished` of `targets` were done before this run."""

    def on_total_changed(self, delta: int) -> None:
        """The evaluations left changed by `delta` (a chain that accepted nothing needs no final one)."""

    def on_evaluation(self, target: int) -> None:
        """One evaluation of `target`'s chain came back."""

    def on_accepted(self, target: int, candidate: int, alpha: float) -> None:
        """`target`'s chain merged `candidate` at `alpha`."""

    def on_target_done(self, result: TargetResult, skipped: bool) -> None:
        """A target's pooled network is written (`skipped`: it was written by an earlier run)."""


class QuietListener:
    """A SearchListener that ignores everything."""

    def on_start(self, total, replayed, targets, finished):
        pass

    def on_total_changed(self, delta):
        pass

    def on_evaluation(self, target):
        pass

    def on_accepted(self, target, candidate, alpha):
        pass

    def on_target_done(self, result, skipped):
        pass


class PoolSearch:
    def __init__(
        self,
        pr: OpenedRun,
        settings: PoolSpec,
        executor: Executor,
        listener: SearchListener | None = None,
        name: str | None = None,
    ):
        """`name`: the search's folder under pool/ (default: the method)."""
        self.pr, self.s, self.ex = pr, settings, executor
        self.listener = listener or QuietListener()
        self.name = settings.default_name() if name is None else name
        self.folder = layout.pool_dir(self.name)
        self.targets = check_targets(settings, pr.rounds)
        records.claim_settings(pr.run, self.name, settings.identity(pr.rounds))
        self.trace_rows: list[dict] = records.read_trace(pr.run, self.name)
        self.results: dict[int, TargetResult] = {}
        self.chains: dict[int, Chain] = {}
        self.current: dict[int, dict] = {}
        self.version: dict[int, int] = {}
        self.controls: dict[int, Control] = {}
        self.finals: dict[int, Final] = {}
        self.evaluations_done = 0
        self.evaluations_replayed = 0
        self.pooled_now: set[int] = set()  # targets this run wrote (the others were finished before)

    # --- setup ------------------------------------------------------------------------------------

    def keep_for(self, target: int) -> int | None:
        return keep_count(self.pr.masks[target])

    def _eval_keep(self, target: int) -> int | None:
        return self.keep_for(target) if METHODS[self.s.method].reprunes else None

    def remaining_evaluations(self) -> int:
        """Evaluations left for the unfinished chains (after replay), each counting its final one and,
        for a screening chain, one confirmation per step; what turns out not to be needed (a chain that
        accepts nothing needs no final evaluation, a step rejected on its screen no confirmation) is
        reported as a change of -1."""
        n = 0
        for chain in self.chains.values():
            steps_left = len(chain.candidates) - max(chain.index - 1, 0)  # every step of a chain has as many alphas
            per_step = len(chain.alphas()) + (1 if chain.screening else 0)
            step0 = 0 if chain.index > 0 else (2 if chain.screening else 1)
            # + its control (LT+BN, never replayed: one evaluation) + its final one
            n += step0 + steps_left * per_step + 1 + 1
        return n

    def _new_chain(self, t: int) -> Chain:
        search = SEARCHES[self.s.search]
        return Chain(
            t,
            candidate_order(t, self.pr.rounds, search.candidates_for(self.s.search_num)),
            self.s.method,
            self.s.coefficients,
            self.s.ema_decay,
            screening=search.screens,
        )

    def _set_current(self, t: int, state) -> None:
        self.version[t] = self.version.get(t, -1) + 1
        if self.version[t] > 0:  # the superseded weights are never evaluated again
            self.ex.drop(("current", t, self.version[t] - 1))
        self.current[t] = state
        self.ex.put(("current", t, self.version[t]), state)

    def _current_key(self, t: int):
        return ("current", t, self.version[t])

    def _replay(self, chain: Chain) -> None:
        """Rebuild an interrupted chain from the trace: same accuracies, same decisions, no evaluations.
        Rows are grouped by (step, stage): a screened step and its confirmation replay one after the
        other. (Traces from before stages were recorded hold full evaluations.)"""
        rows = [r for r in self.trace_rows if r["target"] == chain.target]
        by_step: dict[tuple[int, str], list[dict]] = {}
        for r in rows:
            by_step.setdefault((r["step"], r.get("stage") or FULL), []).append(r)
        while not chain.done:
            step = chain.open_step()
            if (step.index, step.stage) not in by_step:
                break
            got = sorted(
                by_step[step.index, step.stage],
                key=lambda r: step.alphas.index(r["alpha"]) if r["alpha"] in step.alphas else -1,
            )
            if [r["alpha"] for r in got] != list(step.alphas) or any(r["candidate"] != step.candidate for r in got):
                raise LpRayError(
                    f"{self.pr.run.path(layout.trace(self.name))}: step {step.index} ({step.stage}) of target "
                    f"{chain.target} does not match these settings; pass --overwrite to start over"
                )
            d = chain.decide([r["val_acc"] for r in got])
            self.evaluations_replayed += len(got)
            if d is not None and d.accepted:
                self._accept(chain, d, replay=True)

    # --- the search ---------------------------------------------------------------------------------

    def run(self) -> dict[int, TargetResult]:
        for t in self.pr.rounds:
            self.ex.put(("ticket", t), self.pr.tickets[t])
        done = records.finished_targets(self.pr.run, self.name)
        for t in self.targets:
            if t in done:
                self.results[t] = done[t]
                self.listener.on_target_done(self.results[t], skipped=True)
                continue
            chain = self._new_chain(t)
            self._set_current(t, self.pr.tickets[t])
            self._replay(chain)
            self.chains[t] = chain
        self.listener.on_start(
            total=self.remaining_evaluations(),
            replayed=self.evaluations_replayed,
            targets=len(self.targets),
            finished=len(self.results),
        )
        open_steps: dict[int, _Open] = {}
        for t in self.chains:
            self.ex.submit((t, "control", 0), ControlRequest(("ticket", t), self.keep_for(t)))
        outstanding = len(self.chains)
        outstanding += sum(self._submit_next(chain, open_steps) for chain in self.chains.values())
        while outstanding:
            (t, kind, i), result = self.ex.next_done()
            interrupt.check()
            outstanding -= 1
            self.evaluations_done += 1
            self.listener.on_evaluation(t)
            chain = self.chains[t]
            if kind == "control":
                self.controls[t] = result
                self._write_if_ready(chain)
                continue
            if kind == "final":
                self.finals[t] = result
                self._write_if_ready(chain)
                del open_steps[t]
                continue
            o = open_steps[t]
            o.results[i] = result
            if len(o.results) < len(o.step.alphas):
                continue
            evals = [o.results[j] for j in range(len(o.step.alphas))]
            d = chain.decide([e.val_acc for e in evals])
            self._record(o.step, d, evals)
            if d is not None and d.accepted:
                self._accept(chain, d)
            if chain.screening and d is not None and o.step.stage == SCREEN:
                self.listener.on_total_changed(
                    -1
                )  # decided on its screen: the confirmation it was counted with is not needed
            outstanding += self._submit_next(chain, open_steps)
        # Everything finished in this folder, not only this run's targets: a run over fewer targets
        # never shrinks the summary (or the report and MLflow runs built from it).
        self.results = records.finished_targets(self.pr.run, self.name)
        records.write_summary(self.pr.run, self.name, self.results)
        return self.results

    def _submit_next(self, chain: Chain, open_steps: dict) -> int:
        """Open the chain's next step (all its alphas) or, when the chain is done, its final evaluation.
        Returns how many evaluations were submitted."""
        t = chain.target
        step = chain.open_step()
        if step is not None:
            open_steps[t] = _Open(step)
            keep = self._eval_keep(t)
            for i, alpha in enumerate(step.alphas):
                cand = None if step.index == 0 else ("ticket", step.candidate)
                request = EvalRequest(self._current_key(t), cand, alpha, keep, screen=step.stage == SCREEN)
                self.ex.submit((t, "eval", i), request)
            return len(step.alphas)
        if chain.accepted:
            open_steps[t] = _Open(None)
            self.ex.submit((t, "final", 0), FinalRequest(self._current_key(t), self.keep_for(t)))
            return 1
        # Nothing beat the target: the pooled network is the network the chain decided on, the ticket with
        # its BatchNorm recalibrated (step 0's accuracy), which is the LT+BN control's network.
        self.listener.on_total_changed(-1)
        open_steps.pop(t, None)
        self._write_if_ready(chain)
        return 0

    def _write_if_ready(self, chain: Chain) -> None:
        """Write a target once its chain is done and its control and (when it merged anything) its final
        evaluation are back, in whichever order they arrive."""
        t = chain.target
        if not chain.done or t not in self.controls or t in self.results:
            return
        if chain.accepted and t not in self.finals:
            return
        control = self.controls[t]
        final = self.finals[t] if chain.accepted else control.lt_bn
        if not chain.accepted:  # the ticket's own mask, not one read back from its nonzero weights
            final = Final(final.state, self.pr.masks[t], final.val_acc, final.test_acc, final.density, final.test_pred)
        self._write_target(chain, final, control)

    def _accept(self, chain: Chain, d: Decision, replay: bool = False) -> None:
        t = chain.target
        new, _ = merge(
            self.current[t], self.pr.tickets[d.step.candidate], d.alpha, self.pr.prunable, self._eval_keep(t)
        )
        self._set_current(t, new)
        if not replay:
            self.listener.on_accepted(t, d.step.candidate, d.alpha)

    def _record(self, step: Step, d: Decision | None, evals) -> None:
        """The step's evaluations, appended to the trace (rewritten atomically): `d` is None for a
        screened step whose winner goes on to its confirmation."""
        for alpha, e in zip(step.alphas, evals, strict=True):
            self.trace_rows.append(
                {
                    "target": step.target,
                    "step": step.index,
                    "candidate": step.candidate,
                    "alpha": alpha,
                    "val_acc": e.val_acc,
                    "accepted": bool(d is not None and d.accepted and alpha == d.alpha),
                    "density": e.density,
                    "seconds": e.seconds,
                    "node": e.node,
                    "stage": step.stage,
                    "bn_examples": e.bn_examples,
                }
            )
        records.write_trace(self.pr.run, self.name, self.trace_rows)

    def _write_target(self, chain: Chain, final: Final, control: Control) -> None:
        """Predictions and weights first, target_RR.json last (the target's "done" marker)."""
        t, run, m = chain.target, self.pr.run, self.pr.metas[chain.target]
        preds = records.predictions_table(
            self.pr.test_labels(), control.lt_test_pred, control.lt_bn.test_pred, final.test_pred
        )
        pred_rel = layout.predictions(self.name, t)
        run.write_table(pred_rel, preds)
        rel = layout.target_weights(self.name, t)
        data = encode_weights(final.state, final.mask, {"target": str(t), "method": self.s.method})
        run.write_bytes(rel, data)
        result = TargetResult(
            target=t,
            density=final.density,
            lt_val_acc=m.val_acc,
            lt_test_acc=m.test_acc,
            val_acc=final.val_acc,
            test_acc=final.test_acc,
            accepted=[d.step.candidate for d in chain.accepted],
            alphas=[d.alpha for d in chain.accepted],
            path=run.uri_of(rel),
            sha256=sha256(data),
            lt_bn_val_acc=control.lt_bn.val_acc,
            lt_bn_test_acc=control.lt_bn.test_acc,
            predictions_sha256=sha256(run.read_bytes(pred_rel)),
        )
        steps = [
            StepRecord(d.step.index, d.step.candidate, d.alpha, d.val_acc, d.accepted, d.step.stage)
            for d in chain.decisions
        ]
        records.write_target(run, self.name, result, self.s.method, steps)
        self.results[t] = result
        self.pooled_now.add(t)
        self.listener.on_target_done(result, skipped=False)


def check_targets(settings: PoolSpec, rounds: list[int]) -> list[int]:
    """The targets of a search: the settings' or every round; each must have a finished ticket."""
    targets = settings.targets if settings.targets is not None else rounds
    missing = sorted(set(targets) - set(rounds))
    if missing:
        raise LpRayError(f"--targets: round(s) {missing} have no finished ticket (finished: {rounds})")
    return sorted(set(targets))


def planned_evaluations(settings: PoolSpec, rounds: list[int]) -> int:
    """The evaluations a search over every round makes (its chains' steps; a fast search's as if every
    step were confirmed): what a sweep measures a search's progress against."""
    search = SEARCHES[settings.search]
    total = 0
    for t in rounds:
        chain = Chain(t, [], settings.method, settings.coefficients, settings.ema_decay)
        steps = len(candidate_order(t, rounds, search.candidates_for(settings.search_num)))
        per_step = len(chain.alphas()) + (1 if search.screens else 0)
        total += (2 if search.screens else 1) + steps * per_step
    return total
