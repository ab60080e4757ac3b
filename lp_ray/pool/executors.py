"""Executors run evaluations for the pool search (docs/architecture.md, "The parallel schedule"). Two
implementations of one small protocol:

- `SerialExecutor`: in-process, one evaluation at a time, in submission order (tests, debugging).
- `RayExecutor`: a set of Ray actors that each keep the model and the evaluation data resident; at
  most `parallel` evaluations in flight; every weights set goes into the object store once.

Both call the same `Evaluator`, so with equal torch thread counts they return identical numbers.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from lp_ray.pool.core import Control, Evaluation, Evaluator, Final, Score
from lp_ray.progress import say
from lp_ray.spec import PoolSpec


@dataclass(frozen=True)
class EvalRequest:
    current: Hashable  # key of a weights set given to put()
    candidate: Hashable | None
    alpha: float
    keep: int | None
    screen: bool = False  # recalibrate on the screening subset (the fast search's first stage)


@dataclass(frozen=True)
class ScoreRequest:
    """An EvalRequest scored on validation and test (`Evaluator.score`), for analyses."""

    current: Hashable
    candidate: Hashable | None
    alpha: float
    keep: int | None


@dataclass(frozen=True)
class FinalRequest:
    current: Hashable
    keep: int | None


@dataclass(frozen=True)
class ControlRequest:
    ticket: Hashable
    keep: int | None


class Executor(Protocol):
    parallel: int

    def put(self, key: Hashable, state: dict[str, torch.Tensor]) -> None: ...

    def drop(self, key: Hashable) -> None: ...

    def submit(self, tag: Any, request: EvalRequest | ScoreRequest | FinalRequest | ControlRequest) -> None: ...

    def next_done(self) -> tuple[Any, Evaluation | Score | Final | Control]: ...

    def close(self) -> None: ...


def build_evaluator(job_dict: dict, run_uri: str, torch_threads: int, pool: PoolSpec | None = None) -> Evaluator:
    """An evaluator for a run, built the same way in the driver's process and in every actor. `pool`:
    the search's settings (its BatchNorm subset, and a fast search's screening subset); None: the
    whole training split, no screening (analyses)."""
    from lp_ray.opened_run import OpenedRun
    from lp_ray.pool.core import bn_subset, screen_subset
    from lp_ray.pool.searches import SEARCHES
    from lp_ray.spec_loading import job_from_dict
    from lp_ray.store import RunDir, plugin_dirs

    torch.set_num_threads(torch_threads)
    job = job_from_dict(job_dict, plugin_dirs=plugin_dirs(RunDir(run_uri), job_dict))
    screen = pool.screen_fraction if pool is not None and SEARCHES[pool.search].screens else None
    opened = OpenedRun.of(job, RunDir(run_uri))
    # An actor given a GPU (a fraction: four at num_gpus 0.25 share one) keeps model and data on it.
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    return Evaluator(
        opened.new_model(),
        opened.data,
        opened.prunable,
        bn_subset(opened.data.train_idx, pool.bn_samples if pool else None, job.data.split_seed),
        job.train.batch_size,
        device,
        job.train.precision,
        screen_subset(opened.data.train_idx, screen, job.data.split_seed),
    )


def _run(evaluator: Evaluator, request, current, candidate):
    if isinstance(request, FinalRequest):
        return evaluator.finalize(current, request.keep)
    if isinstance(request, ControlRequest):
        return evaluator.control(current, request.keep)
    if isinstance(request, ScoreRequest):
        return evaluator.score(current, candidate, request.alpha, request.keep)
    return evaluator.evaluate(current, candidate, request.alpha, request.keep, request.screen)


def _has_candidate(request) -> bool:
    return isinstance(request, EvalRequest | ScoreRequest) and request.candidate is not None


def _weights_key(request) -> Hashable:
    return request.ticket if isinstance(request, ControlRequest) else request.current


class SerialExecutor:
    parallel = 1

    def __init__(self, evaluator: Evaluator):
        self.evaluator = evaluator
        self.states: dict[Hashable, dict[str, torch.Tensor]] = {}
        self.queue: collections.deque = collections.deque()

    def put(self, key, state):
        self.states[key] = state

    def drop(self, key):
        self.states.pop(key, None)

    def submit(self, tag, request):
        self.queue.append((tag, request))

    def next_done(self):
        tag, req = self.queue.popleft()
        cand = self.states[req.candidate] if _has_candidate(req) else None
        return tag, _run(self.evaluator, req, self.states[_weights_key(req)], cand)

    def close(self):
        self.states.clear()


# --------------------------------------------------------------------------------------------------
# Ray


def _to_numpy(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def _to_torch(arrays: dict[str, np.ndarray] | None) -> dict[str, torch.Tensor] | None:
    # Object-store arrays are read-only views: copy before torch may touch them.
    return None if arrays is None else {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}


class EvaluatorActor:
    """Holds one Evaluator (model + data resident) for the life of a pool run."""

    def __init__(self, job_dict, run_uri, torch_threads, pool=None):
        import ray

        self.evaluator = build_evaluator(job_dict, run_uri, torch_threads, pool)
        self.node = ray.get_runtime_context().get_node_id()[:12]

    def ready(self) -> bool:
        """Answers once the actor has started (its evaluator built): the executor's signal to use it."""
        return True

    def run(self, request, current, candidate):
        result = _run(self.evaluator, request, _to_torch(current), _to_torch(candidate))
        if isinstance(result, Evaluation):
            result.node = self.node
        return result

    def peak_memory_mb(self) -> float:
        """The most GPU memory this evaluator has held (nan on a CPU), for sizing eval_resources."""
        if self.evaluator.device.type != "cuda":
            return float("nan")
        return torch.cuda.max_memory_allocated(self.evaluator.device) / 2**20


def eval_capacity(eval_resources: dict[str, float], free_only: bool = False) -> int:
    """How many evaluations the cluster can host at once with the given per-evaluation resources (of
    what is free right now with `free_only`)."""
    import ray

    total = ray.available_resources() if free_only else ray.cluster_resources()
    names = {"num_cpus": "CPU", "num_gpus": "GPU", "CPU": "CPU", "GPU": "GPU"}
    caps = [math.floor(total.get(names.get(k, k), 0.0) / v + 1e-9) for k, v in eval_resources.items() if v > 0]
    return min(caps) if caps else 10**6


STALL_NOTE_S = 120.0  # how long nothing may come back before the executor says what it waits for


class RayExecutor:
    def __init__(
        self,
        job_dict: dict,
        run_uri: str,
        torch_threads: int,
        parallel: int,
        eval_resources: dict[str, float],
        pool: PoolSpec | None = None,
    ):
        import ray

        self.parallel = max(1, min(parallel, eval_capacity(eval_resources)))
        options = _actor_options(eval_resources)
        actor_cls = ray.remote(EvaluatorActor).options(**options, max_restarts=2, max_task_retries=2)
        self.eval_resources = eval_resources
        self.actors = [actor_cls.remote(job_dict, run_uri, torch_threads, pool) for _ in range(self.parallel)]
        # An actor gets work only once it has started: an evaluation bound to an actor that the cluster
        # cannot place yet (its CPUs taken by another trial, or by actors still being torn down) would
        # wait for it while started actors sit idle, and a chain waiting on that evaluation would stall.
        self.starting: dict[Any, Any] = {a.ready.remote(): a for a in self.actors}  # ready ref -> actor
        self.idle: list = []
        self.refs: dict[Hashable, Any] = {}
        self.queue: collections.deque = collections.deque()
        self.in_flight: dict[Any, tuple[Any, Any]] = {}  # object ref -> (tag, actor)

    def put(self, key, state):
        import ray

        self.refs[key] = ray.put(_to_numpy(state))

    def drop(self, key):
        self.refs.pop(key, None)

    def submit(self, tag, request):
        self.queue.append((tag, request))
        self._dispatch()

    def _dispatch(self):
        while self.idle and self.queue:
            tag, req = self.queue.popleft()
            actor = self.idle.pop()
            cand = self.refs[req.candidate] if _has_candidate(req) else None
            ref = actor.run.remote(req, self.refs[_weights_key(req)], cand)
            self.in_flight[ref] = (tag, actor)

    def next_done(self):
        import ray

        waited = 0.0
        while True:
            ready, _ = ray.wait([*self.in_flight, *self.starting], num_returns=1, timeout=STALL_NOTE_S)
            if not ready:  # nothing came back for a while: say why, when it is the cluster's doing
                waited += STALL_NOTE_S
                if not self.in_flight:
                    say(
                        f"note: waited {waited:.0f} s for the cluster to start an evaluator "
                        f"({self.eval_resources} each; free now: {_free_resources()})"
                    )
                continue
            ref = ready[0]
            if ref in self.starting:
                actor = self.starting.pop(ref)
                ray.get(ref)  # an actor that failed to start raises here
                self.idle.append(actor)
                self._dispatch()
                continue
            tag, actor = self.in_flight.pop(ref)
            self.idle.append(actor)
            result = ray.get(ref)
            self._dispatch()
            return tag, result

    def close(self):
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors, self.idle, self.refs = [], [], {}


def _free_resources() -> str:
    import ray

    free = ray.available_resources()
    return ", ".join(f"{k} {free[k]:g}" for k in ("CPU", "GPU") if k in free) or "none"


def _actor_options(resources: dict[str, float]) -> dict:
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    # Never inside the caller's placement group: a pool run by a Ray Tune trial would otherwise be
    # squeezed into the trial's own small reservation (Tune captures child tasks by default).
    out: dict[str, Any] = {"num_cpus": 0, "scheduling_strategy": PlacementGroupSchedulingStrategy(placement_group=None)}
    custom = {}
    for k, v in resources.items():
        if k in ("num_cpus", "CPU"):
            out["num_cpus"] = v
        elif k in ("num_gpus", "GPU"):
            out["num_gpus"] = v
        elif k == "memory":
            out["memory"] = v
        else:
            custom[k] = v
    if custom:
        out["resources"] = custom
    return out
