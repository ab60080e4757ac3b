"""A run directory opened with its job, data and model: what every command that computes on a run
needs (IMP workers, pool evaluators and the pool's driver, `lp-ray eval`, the analyses, benchmarks).

    OpenedRun.of(job, run)   the job's data (its stored split) and a model template: the shapes every
                             weights file of the run must have, and the names of its prunable tensors
    open_run(uri)            the same from a run directory's job.yaml, with its finished tickets read
                             and checked (each against its meta.json sha256 and its round's mask)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn as nn

from lp_ray.data.base import DataBundle
from lp_ray.data.loading import load_data
from lp_ray.errors import LpRayError
from lp_ray.models import build_model, prunable_tensors
from lp_ray.pool.core import running_stats_norms
from lp_ray.spec import JobSpec
from lp_ray.store import RunDir, TicketMeta, finished_rounds, read_job, read_ticket, read_ticket_meta


@dataclass
class OpenedRun:
    run: RunDir
    job: JobSpec
    data: DataBundle
    template: dict[str, torch.Tensor]  # a fresh model's state dict: names and shapes
    prunable: list[str]  # the tensors the job prunes
    # Whether the network keeps BatchNorm running statistics, which a merge must recalibrate. Without them
    # (LayerNorm, GroupNorm, no normalisation) an evaluation is one pass over validation.
    has_running_stats: bool = True

    @classmethod
    def of(cls, job: JobSpec, run: RunDir) -> OpenedRun:
        data = load_data(job, run)
        model, template, prunable = model_template(job, data.num_classes, data.input_shape)
        return cls(run, job, data, template, prunable, bool(running_stats_norms(model)))

    def new_model(self) -> nn.Module:
        """A fresh instance of the run's model (initialized from torch's current seed)."""
        return build_model(self.job.model, self.data.num_classes, self.data.input_shape)

    def network(self, state: dict[str, torch.Tensor]) -> nn.Module:
        """The run's model holding `state` (a ticket's or a pooled network's weights), in eval mode."""
        model = self.new_model()
        model.load_state_dict(state)
        return model.eval()

    def example_inputs(self, n: int = 2):
        """The first `n` test examples' inputs, as numpy (what an MLflow model's signature is traced from)."""
        test = self.data.test
        return test.batch(torch.arange(min(n, len(test))), augment=False, gen=None)[0].numpy()

    def test_labels(self) -> torch.Tensor:
        test = self.data.test
        return test.batch(torch.arange(len(test)), augment=False, gen=None)[1].to(torch.int16)

    # --- the finished tickets, read and checked once, when first asked for ---------------------------

    @functools.cached_property
    def rounds(self) -> list[int]:
        return finished_rounds(self.run)

    @functools.cached_property
    def _tickets(self) -> tuple[dict, dict, dict]:
        tickets, masks, metas = {}, {}, {}
        for r in self.rounds:
            tickets[r], masks[r] = read_ticket(self.run, r, self.template, set(self.prunable))
            metas[r] = read_ticket_meta(self.run, r)
        return tickets, masks, metas

    @property
    def tickets(self) -> dict[int, dict[str, torch.Tensor]]:
        return self._tickets[0]

    @property
    def masks(self) -> dict[int, dict[str, torch.Tensor]]:
        return self._tickets[1]

    @property
    def metas(self) -> dict[int, TicketMeta]:
        return self._tickets[2]


def model_template(job: JobSpec, num_classes: int, input_shape: tuple[int, ...]) -> tuple[nn.Module, dict, list[str]]:
    """A fresh network of the job's model, its state dict (the names and shapes every weights file of
    the run must have) and the names of the tensors the job prunes."""
    model = build_model(job.model, num_classes, input_shape)
    return model, model.state_dict(), prunable_tensors(job.model, model, job.imp.prune_linear)


def open_run(run_uri: str, with_tickets: bool = True) -> OpenedRun:
    """A run directory made by `lp-ray imp` (or `import`), its job as job.yaml says. `with_tickets`:
    there must be finished tickets, and all of them are read and checked now, before anything else."""
    run = RunDir(run_uri)
    opened = OpenedRun.of(read_job(run), run)
    if with_tickets:
        if not opened.rounds:
            raise LpRayError(f"{run_uri}: no finished IMP rounds to pool")
        _ = opened.tickets
    return opened
