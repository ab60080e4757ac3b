"""`lp-ray import`: a run directory built from tickets trained elsewhere (formats in sources.py), so that
`lp-ray pool`, `report`, `eval` and `analyze` work on them as on lp-ray's own.

The run directory is `<storage>/<job name>-import-<id>`, where the id hashes the format, the source
files' bytes and the job's run hash: it never collides with a run `lp-ray imp` would train for the same
job, and importing the same files again finds it. Every ticket is mapped onto lp-ray's model (all
tensors present, shapes equal), masked exactly (the pruned weights are zero), scored once on the job's
validation split and test set (its meta.json), and recorded in import.json with its source file's sha256.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from lp_ray import layout
from lp_ray.errors import LpRayError
from lp_ray.importing.sources import FORMATS, Format
from lp_ray.lease import Lease, command_line
from lp_ray.progress import say
from lp_ray.spec import ClusterSpec, JobSpec, run_hash, storage_uri
from lp_ray.store import RunDir, TicketMeta, check_storage_reachable, join_uri, write_job, write_mask, write_ticket


def import_run(
    source: str, fmt: str, job: JobSpec, cluster: ClusterSpec, tracking_uri: str | None
) -> tuple[RunDir, list]:
    from lp_ray.data.loading import load_sources
    from lp_ray.opened_run import model_template
    from lp_ray.preflight import preflight

    folder = Path(source).expanduser()
    if fmt not in FORMATS:
        raise LpRayError(f"--format: unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    form = FORMATS[fmt]
    if not folder.is_dir():
        raise LpRayError(f"{folder}: no such folder")
    if not form.reads(job.model.name):
        raise LpRayError(
            f"model.name={job.model.name!r}: {fmt} tickets can be imported as {', '.join(form.names)} (the architectures "
            "lp-ray has that compute the same function)"
        )
    preflight(job)
    check_storage_reachable(storage_uri(cluster))
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in form.suffixes)
    digests = {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    ident = {"format": fmt, "files": digests, "run_hash": run_hash(job)}
    run_id = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
    run = RunDir(join_uri(storage_uri(cluster), f"{job.name}-import-{run_id}"))

    # Everything is read and checked before anything is written: every file decoded (weights_only),
    # every ticket mapped onto lp-ray's model. (The importable data sets are read, never generated.)
    raw = form.read(folder)
    _, _, num_classes, input_shape = load_sources(job, run)  # (the run's split is written later: no OpenedRun yet)
    model, template, prunable = model_template(job, num_classes, input_shape)
    tickets = {r: _map(form, job, r, state, mask, template, prunable) for r, (state, mask) in raw.items()}
    if sorted(tickets) != list(range(len(tickets))):
        raise LpRayError(f"{folder}: rounds {sorted(tickets)} are not 0, 1, 2, ...: a round is missing")
    rewind = form.rewind(folder)
    if rewind is not None:  # the same checks as a ticket's: every tensor of lp-ray's model, shapes equal
        rewind = _map(form, job, "the rewind point", rewind, None, template, [])[0]

    with Lease(run, layout.lease_file("imp"), command_line(), True, say):  # an imp or import writing it waits
        return _import_leased(run, job, tickets, model, ident, folder, tracking_uri, fmt, rewind)


def _import_leased(run, job, tickets, model, ident, folder, tracking_uri, fmt, rewind=None):
    from lp_ray.data.loading import materialize_data
    from lp_ray.sparsity import density
    from lp_ray.store import read_ticket_meta, ticket_done, write_rounds_table

    write_job(run, job)
    data = materialize_data(job, run)
    if rewind is not None and not run.exists(layout.REWIND):
        from lp_ray.store import encode_weights

        run.write_bytes(layout.REWIND, encode_weights(rewind, metadata={"imported": "true"}))
    rows = []
    for r, (state, mask) in sorted(tickets.items()):
        if ticket_done(run, r):  # imported before (the same bytes: the run's name hashes them)
            rows.append(read_ticket_meta(run, r))
            continue
        model.load_state_dict(state)
        val, test = _score(model, data, job)
        meta = TicketMeta(round=r, density=density(mask), val_acc=val, test_acc=test, run_hash=run_hash(job))
        if r > 0:
            write_mask(run, layout.mask(r), mask)
        write_ticket(run, r, state, mask, meta)
        rows.append(meta)
    run.write_json(layout.IMPORT_RECORD, {**ident, "source": str(folder.resolve())})
    write_rounds_table(run)
    if tracking_uri is not None:
        _log(run, job, tracking_uri, rows, fmt, folder)
    return run, rows


def _map(form: Format, job: JobSpec, r: int, state, mask, template, prunable):
    """One ticket in lp-ray's names, checked against lp-ray's model, masked exactly."""
    name_of = form.name_of(job.model.name)
    where = f"round {r}" if isinstance(r, int) else r
    if form.normalizes_inside and "normalize.mean" in state:
        _check_normalization(job, state, where)
    out = {}
    for k, v in state.items():
        new = name_of(k)
        if new is not None:
            out[new] = v.detach().clone()
    missing, extra = sorted(set(template) - set(out)), sorted(set(out) - set(template))
    if missing or extra:
        what = f"no {missing[0]}" if missing else f"an unexpected {extra[0]}"
        raise LpRayError(f"{where}: does not fit lp-ray's {job.model.name} ({what}); is --job's model the one trained?")
    for k, v in template.items():
        if tuple(out[k].shape) != tuple(v.shape):
            raise LpRayError(
                f"{where}: {k} has shape {tuple(out[k].shape)}, lp-ray's {job.model.name} has {tuple(v.shape)}"
            )
        out[k] = out[k].to(v.dtype)
    source_mask = {name_of(k): v for k, v in (mask or {}).items() if name_of(k) is not None}
    for k, m in source_mask.items():
        if k not in prunable and bool((m == 0).any()):
            raise LpRayError(f"{where}: the source pruned {k}, which this job does not prune (imp.prune_linear: true?)")
    if mask is None and form.mask_from_zeros and r != 0:
        source_mask = {k: (out[k] != 0).float() for k in prunable}
    lp_mask = {k: (source_mask.get(k, torch.ones_like(out[k])) != 0).float() for k in sorted(prunable)}
    for k, m in lp_mask.items():  # OpenLTH saves weights as the last step left them: zero the pruned ones
        out[k] = out[k] * m
    return out, lp_mask


def _check_normalization(job: JobSpec, state, where: str) -> None:
    """The paper's models normalize their inputs inside; lp-ray's loaders do it before: they must agree."""
    from lp_ray.data.cifar import MEAN, STD

    if job.data.dataset not in MEAN:
        raise LpRayError(
            f"{where}: normalizes its inputs inside the model; lp-ray reads such tickets for cifar10/100 only"
        )
    mean, std = state["normalize.mean"].flatten().tolist(), state["normalize.std"].flatten().tolist()
    ours_mean, ours_std = MEAN[job.data.dataset], STD[job.data.dataset]
    if any(abs(a - b) > 1e-4 for a, b in zip(mean + std, list(ours_mean) + list(ours_std), strict=True)):
        raise LpRayError(
            f"{where}: normalizes with mean {mean} std {std}, lp-ray's {job.data.dataset} loader with {list(ours_mean)} "
            f"{list(ours_std)}: the same weights would compute something else here"
        )


def _score(model, data, job) -> tuple[float, float]:
    from lp_ray.training import accuracy

    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    model.to(device)
    d = data.to(device)
    val = accuracy(model, d.train, d.val_idx, 1000, device, job.train.precision)
    test = accuracy(model, d.test, torch.arange(len(d.test)), 1000, device, job.train.precision)
    model.to("cpu")
    return val, test


def _log(run: RunDir, job: JobSpec, tracking_uri: str, metas, fmt: str, folder: Path) -> None:
    from lp_ray.store import TrackingInfo, read_ticket_meta, write_tracking
    from lp_ray.tracking import logged

    tracker = logged.tracker_for(job, tracking_uri, run)
    extra = {"import.format": fmt, "import.source": str(folder)}
    parent = logged.imp_run(tracker, job, run, extra_params=extra)
    write_tracking(run, TrackingInfo(tracking_uri, tracker.experiment_id, parent))
    found = [read_ticket_meta(run, m.round) for m in metas]
    logged.ensure_rounds_logged(tracker, parent, run, found, job.train.epochs, imported=True)
    logged.finish_imp(tracker, parent, found, run)
    from lp_ray.progress import console
    from lp_ray.tracking.stores import runs_page

    console.print(f"MLflow: {runs_page(tracking_uri, tracker.experiment_id)}", highlight=False)
