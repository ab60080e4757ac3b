"""`lp-ray eval`: load any ticket or pooled network back, from its path/URI or from an MLflow run, and
score it as stored (no BatchNorm recalibration: the file holds the statistics it was reported with)."""

from __future__ import annotations

import torch

from lp_ray import layout
from lp_ray.errors import LpRayError
from lp_ray.pool.records import recorded_sha256
from lp_ray.store import RunDir, check_sha256, decode_weights, read_ticket


def resolve_network_uri(uri: str, tracking_uri: str | None) -> str:
    """`models:/<model id>` names an MLflow LoggedModel, `runs:/<run id>` an MLflow run (a round or
    target run logged before lp-ray 0.4), whose network_uri or ticket_uri tag says where the weights are."""
    for scheme in ("models:/", "runs:/"):
        if uri.startswith(scheme):
            from lp_ray.tracking.stores import network_uri_of

            return network_uri_of(scheme, uri[len(scheme) :].strip("/").split("/")[0], tracking_uri)
    return uri


def find_run_dir(uri: str) -> tuple[RunDir, str]:
    """The run directory holding a weights file: the nearest parent with a job.yaml."""
    base, sep, query = uri.partition("?")
    parts = base.rstrip("/").split("/")
    for up in range(1, min(5, len(parts))):
        candidate = "/".join(parts[:-up]) + sep + query
        run = RunDir(candidate)
        if run.exists(layout.JOB):
            return run, "/".join(parts[-up:])
    raise LpRayError(f"{uri}: not inside an lp-ray run directory (no job.yaml above it)")


def read_weights(run: RunDir, rel: str, template, prunable: set[str]):
    """A weights file of the run, checked against what recorded it: a ticket against its meta.json (and
    its round's mask), a pooled network against its target_RR.json; anything else as it decodes."""
    kind = layout.parse_weights(rel)
    if kind is not None and kind[0] == "ticket":
        return read_ticket(run, kind[1], template, prunable)
    data = run.read_bytes(rel)
    recorded = recorded_sha256(run, kind[1], kind[2]) if kind is not None else None
    if recorded is not None:
        record = run.path(layout.target_meta(kind[1], kind[2]))
        check_sha256(data, recorded, run.path(rel), record, f"delete {record} and pool again")
    return decode_weights(data, run.path(rel), template, prunable)


def evaluate_uri(uri: str, tracking_uri: str | None = None) -> dict:
    from lp_ray.opened_run import open_run
    from lp_ray.sparsity import density
    from lp_ray.training import accuracy

    uri = resolve_network_uri(uri, tracking_uri)
    run, rel = find_run_dir(uri)
    if not run.exists(rel):
        raise LpRayError(f"{uri}: no such file")
    opened = open_run(run.uri, with_tickets=False)
    state, mask = read_weights(run, rel, opened.template, set(opened.prunable))
    model = opened.new_model()
    model.load_state_dict(state)
    torch.set_num_threads(1)
    data, precision = opened.data, opened.job.train.precision
    return {
        "path": run.uri_of(rel),
        "density": density(mask),
        "val_acc": accuracy(model, data.train, data.val_idx, 1000, precision=precision),
        "test_acc": accuracy(model, data.test, torch.arange(len(data.test)), 1000, precision=precision),
    }
