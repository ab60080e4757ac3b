"""The Python API (docs/api.md): every `lp-ray` command as a function with a typed result, for
notebooks and scripts. `import lp_ray` gives these names; the CLI is a thin layer over them (it
parses, calls and prints). The same checks, leases, resumption and MLflow logging as the CLI; a
problem the user can fix is an `LpRayError` with the message the CLI prints.

    import lp_ray
    result = lp_ray.run("jobs/default.yaml", overrides=["train.epochs=10"])
    run = lp_ray.open_run(result.run_dir)
    net = run.pooled(3)                      # target 3's pooled network, a torch.nn.Module
    run.summary().to_pandas()                # the search's summary as a table

A job or cluster is given as a path to its YAML file, as a loaded `JobSpec` / `ClusterSpec`, or as
None for the embedded default job / the local cluster. Ray is started (or joined) on the first call
that needs it and stays up for the next ones; `shutdown()` leaves it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lp_ray.errors import LpRayError
from lp_ray.spec import DEFAULT_PARALLEL_EVALS, ClusterSpec, JobSpec

if TYPE_CHECKING:
    import pyarrow as pa
    import torch.nn as nn

    from lp_ray.imp.command import ImpResult
    from lp_ray.pool.command import PoolOutcome

JobLike = JobSpec | str | Path | None
ClusterLike = ClusterSpec | str | Path | None


def _quiet_mlflow() -> None:
    """MLflow's store-migration INFO lines and "View run" links are noise in a command or a notebook."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def load_job(job: JobLike = None, overrides: Sequence[str] = ()) -> JobSpec:
    """A checked job: a YAML path, a JobSpec (checked again, with `overrides` on top), or None."""
    from lp_ray.spec_loading import apply_overrides
    from lp_ray.spec_loading import load_job as load

    if isinstance(job, JobSpec):
        return apply_overrides(job, overrides, f"job {job.name!r}") if overrides else job
    return load(job, overrides)


def load_cluster(cluster: ClusterLike = None) -> ClusterSpec:
    from lp_ray.spec_loading import load_cluster as load

    return cluster if isinstance(cluster, ClusterSpec) else load(cluster)


def job_tracking_uri(tracking_uri: str | None, job: JobSpec, cluster: ClusterSpec) -> str:
    """Where a command on this job logs: the given URI, $MLFLOW_TRACKING_URI, the cluster spec's, the
    store its run directory already logs to, else ./mlflow.db."""
    from lp_ray.tracking.stores import tracking_uri_for_job

    return tracking_uri_for_job(tracking_uri, job, cluster)


def run_tracking_uri(tracking_uri: str | None, cluster: ClusterSpec, run_dir: str) -> str:
    from lp_ray.store import RunDir
    from lp_ray.tracking.stores import tracking_uri_for_run

    return tracking_uri_for_run(tracking_uri, cluster.tracking_uri, RunDir(run_dir))


# --------------------------------------------------------------------------------------------------
# The commands


def imp(
    job: JobLike = None,
    *,
    overrides: Sequence[str] = (),
    rounds: int | None = None,
    cluster: ClusterLike = None,
    tracking_uri: str | None = None,
    log_models: str = "best",
    wait: bool = True,
) -> ImpResult:
    """IMP with rewinding on Ray Train: train, resume or extend (`rounds`) the job's run. `log_models`:
    "all" logs every ticket as an MLflow model (the other policies concern pooled networks)."""
    if rounds is not None and rounds < 1:
        raise LpRayError(f"--rounds must be at least 1, got {rounds}")
    j = load_job(job, [*overrides, *([f"imp.rounds={rounds}"] if rounds is not None else [])])
    c = load_cluster(cluster)
    from lp_ray.imp.command import run_imp  # (torch, Ray, MLflow: after the specs are checked)

    _quiet_mlflow()
    return run_imp(j, c, job_tracking_uri(tracking_uri, j, c), wait=wait, log_models=log_models)


def pool(
    run_dir: str | Path,
    *,
    method: str | None = None,
    search: str | None = None,
    coefficients: Sequence[float] | None = None,
    targets: Sequence[int] | None = None,
    search_num: int | None = None,
    bn_samples: int | None = None,
    overrides: Sequence[str] = (),
    name: str | None = None,
    parallel_evals: int = DEFAULT_PARALLEL_EVALS,
    overwrite: bool = False,
    serial: bool = False,
    cluster: ClusterLike = None,
    tracking_uri: str | None = None,
    log_models: str = "best",
    register: str | None = None,
    wait: bool = True,
) -> PoolOutcome:
    """Lottery Pools on a finished run: greedily interpolate every target ticket with the others.
    `log_models`: which pooled networks MLflow gets as models (best, pooled, all, none); `register`: a
    registered model name the search's best network becomes a version of (alias: the search's name)."""
    from lp_ray.pool.records import check_search_name
    from lp_ray.spec_loading import pool_settings_for_run
    from lp_ray.store import RunDir, read_job

    c, run = load_cluster(cluster), RunDir(str(run_dir))
    options = {
        "method": method,
        "search": search,
        "coefficients": list(coefficients) if coefficients is not None else None,
        "targets": list(targets) if targets is not None else None,
        "search_num": search_num,
        "bn_samples": bn_samples,
    }
    settings = pool_settings_for_run(read_job(run), overrides, options)
    check_search_name(settings.default_name() if name is None else name)
    from lp_ray.pool.command import run_pool  # (torch, Ray: after every cheap check)

    _quiet_mlflow()
    return run_pool(
        run.uri,
        settings,
        c,
        run_tracking_uri(tracking_uri, c, run.uri),
        name=name,
        parallel_evals=parallel_evals,
        executor="serial" if serial else "ray",
        overwrite=overwrite,
        wait=wait,
        log_models=log_models,
        register=register,
    )


def report(run_dir: str | Path, *, tracking_uri: str | None = None) -> pa.Table:
    """The report of a run (LT against every pooled method, per sparsity) or of an experiment directory
    (means over seeds, intervals, McNemar + Holm): written beside its data, printed, and returned."""
    from lp_ray.report.command import report as write_report

    _quiet_mlflow()
    return write_report(str(run_dir), tracking_uri)


@dataclass
class RunResult:
    """What `run` did: the run directory, its IMP and pool outcomes, and the report table."""

    run_dir: str
    imp: ImpResult
    pool: PoolOutcome
    report: pa.Table


def run(
    job: JobLike = None,
    *,
    overrides: Sequence[str] = (),
    method: str | None = None,
    search: str | None = None,
    parallel_evals: int = DEFAULT_PARALLEL_EVALS,
    cluster: ClusterLike = None,
    tracking_uri: str | None = None,
    log_models: str = "best",
    register: str | None = None,
    wait: bool = True,
) -> RunResult:
    """The main job: imp, then pool, then report (`log_models`, `register`: as for `pool`)."""
    from lp_ray.spec_loading import with_pool_options
    from lp_ray.tracking.networks import check_log_models, check_registration

    j, c = load_job(job, overrides), load_cluster(cluster)
    settings = with_pool_options(j.pool, {"method": method, "search": search})  # checked before anything trains
    check_log_models(log_models)
    if register is not None:
        check_registration(register, settings.default_name())
    from lp_ray.imp.command import run_imp  # (torch, Ray, MLflow: after the specs are checked)
    from lp_ray.pool.command import run_pool
    from lp_ray.report.command import run_report

    _quiet_mlflow()
    uri = job_tracking_uri(tracking_uri, j, c)
    imp_result = run_imp(j, c, uri, wait=wait, log_models=log_models)
    pooled = run_pool(
        imp_result.run.uri,
        settings,
        c,
        uri,
        parallel_evals=parallel_evals,
        wait=wait,
        log_models=log_models,
        register=register,
        ride_out=True,
    )
    table = run_report(imp_result.run.uri, uri, ride_out=True)
    if imp_result.mlflow_behind:  # MLflow was down when imp ended: log what it missed, if it is back
        from lp_ray.imp.command import log_imp_again

        log_imp_again(j, imp_result.run, uri, log_models)
    return RunResult(imp_result.run.uri, imp_result, pooled, table)


def sweep(
    experiment: str | Path | None = None,
    *,
    job: str | Path | None = None,
    seeds: str | None = None,
    grid: Sequence[str] = (),
    methods: str | None = None,
    analyses: str | None = None,
    cluster: ClusterLike = None,
    max_concurrent: int | None = None,
    tracking_uri: str | None = None,
    log_models: str = "best",
    wait: bool = True,
) -> str:
    """An experiment on Ray Tune (every trial is `run` of its job), then its report; returns the
    experiment directory. Without an experiment file: `job`, `seeds` ("0-4"), `grid` ("key=v1,v2"),
    `methods` ("interpolation,average") and `analyses` say it. `log_models`: as for `pool`, in every trial."""
    from lp_ray.experiment.spec import experiment_from_options, load_experiment
    from lp_ray.experiment.sweep import log_sweep, run_sweep
    from lp_ray.report.command import experiment_report
    from lp_ray.tracking.stores import resolve_tracking_uri

    if experiment is not None and (job or seeds or grid or methods or analyses):
        raise LpRayError("give an experiment file or job/seeds/grid/methods/analyses, not both")
    exp = (
        load_experiment(experiment)
        if experiment is not None
        else experiment_from_options(job, seeds, list(grid), methods, analyses)
    )
    c = load_cluster(cluster)
    _quiet_mlflow()
    uri = resolve_tracking_uri(tracking_uri, c.tracking_uri)
    exp_dir = run_sweep(
        exp,
        c,
        uri,
        max_concurrent,
        wait=wait,
        then=lambda d: log_sweep(exp, d, uri, experiment_report(d.uri)),
        log_models=log_models,
    )
    return exp_dir.uri


def analyze(
    name: str,
    run_dir: str | Path,
    *,
    cluster: ClusterLike = None,
    tracking_uri: str | None = None,
    wait: bool = True,
    **options: Any,
):
    """One of the registered analyses (`lp-ray analyze --help` lists them) on a finished run; `options`
    are the analysis's own (as the CLI's options, with underscores; `alphas="0,0.5,1"` or a list).
    Returns its outcome: `.rows` (its table) and `.written` (files, MLflow run)."""
    from lp_ray.analysis import ANALYSES, run_analysis

    if name not in ANALYSES:
        raise LpRayError(f"unknown analysis {name!r} (known: {', '.join(ANALYSES)})")
    declared = {o.name: o for o in ANALYSES[name].options}
    unknown = sorted(set(options) - set(declared))
    if unknown:
        raise LpRayError(f"analysis {name}: unknown option {unknown[0]!r} (known: {', '.join(declared) or 'none'})")
    given = {}
    for k, o in declared.items():
        value = options.get(k, o.default)
        if o.parse is not None and (value is None or isinstance(value, o.type)):  # as the CLI's text would be
            try:
                value = o.parse(value)
            except ValueError as e:
                raise LpRayError(f"analysis {name}: {k}: {e}") from None
        given[k] = value
    c = load_cluster(cluster)
    _quiet_mlflow()
    uri = run_tracking_uri(tracking_uri, c, str(run_dir))
    return run_analysis(name, str(run_dir), c, uri, wait=wait, **given)


def evaluate(network: str, *, tracking_uri: str | None = None) -> dict:
    """A ticket or pooled network (path, URI, models:/<MLflow model id>, or runs:/<MLflow run id>): its
    density and validation and test accuracy (fractions)."""
    from lp_ray.evaluate import evaluate_uri

    return evaluate_uri(network, tracking_uri)


def register(
    run_dir: str | Path,
    name: str,
    *,
    search: str = "interpolation",
    target: int | None = None,
    alias: str | None = None,
    tracking_uri: str | None = None,
) -> str:
    """One pooled network of a run (`target`; default: the search's best on validation) as a version of
    the MLflow registered model `name`, with `alias` (default: the search's name); logged as an MLflow
    model first where it is not one yet. Returns the version number."""
    from lp_ray.pool.command import register_network
    from lp_ray.store import RunDir
    from lp_ray.tracking.networks import check_registration

    check_registration(name, search if alias is None else alias)
    _quiet_mlflow()
    run = RunDir(str(run_dir))
    uri = run_tracking_uri(tracking_uri, load_cluster(None), run.uri)
    return register_network(run.uri, search, target, name, search if alias is None else alias, uri)


def import_tickets(
    source: str | Path, fmt: str, job: JobLike, *, cluster: ClusterLike = None, tracking_uri: str | None = None
):
    """Tickets trained elsewhere as a run directory (`fmt`: see `lp-ray import --help`), read without
    unpickling; returns (run directory, the imported tickets' records)."""
    from lp_ray.importing.command import import_run
    from lp_ray.tracking.stores import resolve_tracking_uri

    if job is None:
        raise LpRayError("import needs the job the tickets belong to (its data set, model and training)")
    j, c = load_job(job), load_cluster(cluster)
    _quiet_mlflow()
    return import_run(str(source), fmt, j, c, resolve_tracking_uri(tracking_uri, c.tracking_uri))


@dataclass
class TicketRow:
    round: int
    density: float
    val_acc: float
    test_acc: float
    uri: str
    layers: list[dict] = field(default_factory=list)  # per prunable tensor: size, survivors, density


def tickets(run_dir: str | Path, *, layers: bool = False) -> list[TicketRow]:
    """A run's finished tickets, each read and checked against what recorded it."""
    from lp_ray import layout
    from lp_ray.sparsity import density_report
    from lp_ray.store import RunDir, finished_rounds, read_mask, read_ticket, read_ticket_meta

    run = RunDir(str(run_dir))
    if not run.is_dir():
        raise LpRayError(f"{run_dir}: no such run directory")
    rounds = finished_rounds(run)
    if not rounds:
        raise LpRayError(f"{run_dir}: no finished rounds (is this an lp-ray run directory?)")
    rows = []
    for r in rounds:
        read_ticket(run, r)  # its bytes and mask are what was recorded
        m = read_ticket_meta(run, r)
        per_layer = density_report(read_mask(run, layout.mask(r))) if layers and r > 0 else []
        rows.append(TicketRow(r, m.density, m.val_acc, m.test_acc, run.uri_of(layout.ticket(r)), per_layer))
    return rows


def shutdown() -> None:
    """Leave the Ray this process started or joined (the next call starts or joins it again)."""
    import sys

    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


# --------------------------------------------------------------------------------------------------
# A finished run, opened


class Run:
    """A run directory opened for a notebook: its job, tickets and pooled networks as torch modules, its
    tables as pyarrow Tables (`.to_pandas()` for pandas). Every file is checked against what recorded
    it when read, as the commands do."""

    def __init__(self, run_dir: str | Path):
        from lp_ray.opened_run import open_run as opened

        self._opened = opened(str(run_dir))

    @property
    def uri(self) -> str:
        return self._opened.run.uri

    @property
    def job(self) -> JobSpec:
        return self._opened.job

    @property
    def rounds(self) -> list[int]:
        return self._opened.rounds

    def searches(self) -> list[str]:
        from lp_ray.pool.records import search_names

        return sorted(search_names(self._opened.run))

    def ticket(self, round: int) -> nn.Module:
        """Round `round`'s ticket (its mask applied: pruned weights are zero), in eval mode."""
        if round not in self._opened.tickets:
            raise LpRayError(f"{self.uri}: no finished round {round} (rounds: {self.rounds})")
        return self._module(self._opened.tickets[round])

    def pooled(self, target: int, search: str = "interpolation") -> nn.Module:
        """Target `target`'s pooled network of the search `search` (a folder under pool/)."""
        from lp_ray import layout
        from lp_ray.evaluate import read_weights

        rel = layout.target_weights(search, target)
        if not self._opened.run.exists(rel):
            raise LpRayError(f"{self._opened.run.path(rel)}: no such pooled network (searches: {self.searches()})")
        state, _ = read_weights(self._opened.run, rel, self._opened.template, set(self._opened.prunable))
        return self._module(state)

    def examples(self, split: str = "test", indices: Sequence[int] | None = None) -> tuple:
        """Examples of the run's data as one `(x, y)` batch of tensors, without augmentation: `split` is
        "test", "val" (lp-ray's seeded validation split) or "train" (the rest of the training set);
        `indices` within that split (default: all of it)."""
        import torch

        data = self._opened.data
        source, idx = {
            "test": (data.test, torch.arange(len(data.test))),
            "val": (data.train, data.val_idx),
            "train": (data.train, data.train_idx),
        }.get(split, (None, None))
        if source is None:
            raise LpRayError(f"split must be test, val or train, got {split!r}")
        if indices is not None:
            wanted = torch.as_tensor(list(indices), dtype=torch.long)
            if len(wanted) and (int(wanted.min()) < 0 or int(wanted.max()) >= len(idx)):
                raise LpRayError(f"{split} has {len(idx)} examples: indices must be in [0, {len(idx)})")
            idx = idx[wanted]
        return source.batch(idx, augment=False, gen=None)

    def mask(self, round: int) -> dict:
        return self._opened.masks[round]

    def rounds_table(self) -> pa.Table:
        from lp_ray.store import rounds_table

        return rounds_table(self._opened.run)

    def summary(self, search: str = "interpolation") -> pa.Table:
        from lp_ray import layout

        return self._table(layout.summary(search))

    def trace(self, search: str = "interpolation") -> pa.Table:
        from lp_ray import layout

        return self._table(layout.trace(search))

    def report(self) -> pa.Table:
        """The report table (built from the run's records; nothing is written)."""
        from lp_ray.analysis import reported
        from lp_ray.report.run import build_report

        return build_report(self._opened.run, analyses=reported())

    def _table(self, rel: str) -> pa.Table:
        if not self._opened.run.exists(rel):
            raise LpRayError(f"{self._opened.run.path(rel)}: no such table (searches: {self.searches()})")
        return self._opened.run.read_table(rel)

    def _module(self, state) -> nn.Module:
        return self._opened.network(state)


def open_run(run_dir: str | Path) -> Run:
    return Run(run_dir)
