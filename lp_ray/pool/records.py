"""The records of a search folder, `pool/<name>/` (layout.py): what a search writes and everything that
reads it back (reports, analyses, `lp-ray eval`, sweeps) goes through here.

    settings.json           the search's identity (PoolSpec.identity); a resumed search must match it
    trace.parquet           one row per evaluation (TRACE_SCHEMA)
    target_RR.safetensors   the pooled network of target RR
    predictions_RR.parquet  per test example: label and the predicted class of LT, LT+BN, pooled
    target_RR.json          its TargetResult, method, gain and decisions; written last: "done"
    summary.parquet         one row per finished target, rebuilt from the target_RR.json files

A quantity has one name everywhere: in the record, the tables and MLflow (`lt_test_acc`, not
`lt_test` here and `lt_test_acc` there). Records written under the old names still read.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, fields

import pyarrow as pa
import pyarrow.parquet as pq

from lp_ray import layout
from lp_ray.errors import LpRayError
from lp_ray.store import RunDir, check_sha256


@dataclass
class TargetResult:
    target: int
    density: float
    lt_val_acc: float  # the ticket as trained (LT)
    lt_test_acc: float
    val_acc: float  # the pooled network
    test_acc: float
    accepted: list[int]
    alphas: list[float]
    path: str
    sha256: str
    # The LT+BN control (the ticket recalibrated, nothing merged) and the per-example predictions file;
    # None in records written before they existed.
    lt_bn_val_acc: float | None = None
    lt_bn_test_acc: float | None = None
    predictions_sha256: str | None = None

    @property
    def gain(self) -> float:
        return self.test_acc - self.lt_test_acc


# What records written before the names were unified called these fields.
_LEGACY_NAMES = {
    "lt_val": "lt_val_acc",
    "lt_test": "lt_test_acc",
    "lt_bn_val": "lt_bn_val_acc",
    "lt_bn_test": "lt_bn_test_acc",
}


@dataclass(frozen=True)
class StepRecord:
    """One decided step of a chain, as target_RR.json keeps it."""

    step: int
    candidate: int
    alpha: float
    val_acc: float
    accepted: bool
    stage: str = "full"  # the evaluation that decided: full (exact), screen or confirm (fast)


def write_target(run: RunDir, name: str, result: TargetResult, method: str, steps: list[StepRecord]) -> None:
    """target_RR.json, the target's "done" marker: written after its weights and predictions."""
    run.write_json(
        layout.target_meta(name, result.target),
        {"result": asdict(result), "method": method, "gain": result.gain, "steps": [asdict(s) for s in steps]},
    )


def read_target(run: RunDir, name: str, t: int) -> TargetResult:
    rel = layout.target_meta(name, t)
    raw = run.read_json(rel)
    try:
        result = {_LEGACY_NAMES.get(k, k): v for k, v in raw["result"].items()}
        known = {f.name for f in fields(TargetResult)}
        return TargetResult(**{k: v for k, v in result.items() if k in known})
    except (KeyError, TypeError, AttributeError):
        raise LpRayError(f"{run.path(rel)}: not a pooled-target record; delete it to pool target {t} again") from None


def finished_targets(run: RunDir, name: str) -> dict[int, TargetResult]:
    """Every finished target of the search pool/<name>/ on disk (target_RR.json written last), each
    pooled network checked against the sha256 its record holds."""
    out = {}
    for entry in run.list_dir(layout.pool_dir(name)):
        t = layout.parse_target_meta(entry)
        if t is None:
            continue
        result = read_target(run, name, t)
        weights, rel = layout.target_weights(name, t), layout.target_meta(name, t)
        fix = f"delete {run.path(rel)} to pool target {t} again"
        check_sha256(run.read_bytes(weights), result.sha256, run.path(weights), run.path(rel), fix)
        out[t] = result
    return dict(sorted(out.items()))


def search_names(run: RunDir) -> list[str]:
    """The search folders under pool/, the paper's method first (a stray file is no search)."""
    names = [n for n in run.list_dir(layout.POOL) if run.is_dir(layout.pool_dir(n))]
    return sorted(names, key=lambda n: (n != "interpolation", n))


def all_searches(run: RunDir) -> dict[str, dict[int, TargetResult]]:
    """Every search's finished targets, read from their records on disk (never from one invocation's
    summary), the paper's method first; each pooled network checked against its recorded sha256."""
    searches = {name: finished_targets(run, name) for name in search_names(run)}
    return {n: r for n, r in searches.items() if r}


def recorded_sha256(run: RunDir, name: str, t: int) -> str | None:
    """The sha256 target_RR.json records for its pooled network (None: no record)."""
    if not run.exists(layout.target_meta(name, t)):
        return None
    return read_target(run, name, t).sha256


def check_search_name(name: str) -> None:
    """A search's name is a plain folder name under pool/: it must never reach outside it."""
    if not name or name in (".", "..") or any(c in name for c in "/\\") or name.startswith("."):
        raise LpRayError(f"--name: must be a plain folder name (no '/', not starting with '.'), got {name!r}")


# --------------------------------------------------------------------------------------------------
# Predictions


def predictions_table(labels, lt_pred, lt_bn_pred, pooled_pred) -> pa.Table:
    """Per test example: its label and the predicted class of LT, LT+BN and the pooled network, so any
    paired statistic (McNemar, disagreement) can be computed later without the weights."""
    return pa.table(
        {
            "example": pa.array(range(len(labels)), pa.int32()),
            "label": pa.array(labels.numpy(), pa.int16()),
            "lt": pa.array(lt_pred.numpy(), pa.int16()),
            "lt_bn": pa.array(lt_bn_pred.numpy(), pa.int16()),
            "pooled": pa.array(pooled_pred.numpy(), pa.int16()),
        }
    )


def read_predictions(run: RunDir, name: str, result: TargetResult) -> pa.Table | None:
    """A finished target's predictions, checked against its record (None for records without them)."""
    if result.predictions_sha256 is None:
        return None
    rel = layout.predictions(name, result.target)
    data = run.read_bytes(rel)  # read once: checked, then parsed from the same bytes
    record = run.path(layout.target_meta(name, result.target))
    check_sha256(data, result.predictions_sha256, run.path(rel), record, f"delete {record} to pool it again")
    return pq.read_table(io.BytesIO(data))


def mcnemar_vs_lt(run: RunDir, name: str, result: TargetResult) -> float | None:
    """Exact McNemar p of the pooled network vs LT on the target's stored test predictions (None: a
    record from before predictions were stored)."""
    from lp_ray.stats import mcnemar_exact

    preds = read_predictions(run, name, result)
    if preds is None:
        return None
    d = {k: preds.column(k).to_numpy() for k in ("label", "lt", "pooled")}
    return mcnemar_exact(d["lt"] == d["label"], d["pooled"] == d["label"])[2]


# --------------------------------------------------------------------------------------------------
# Trace and summary

TRACE_SCHEMA = pa.schema(
    [
        ("target", pa.int32()),
        ("step", pa.int32()),
        ("candidate", pa.int32()),
        ("alpha", pa.float64()),
        ("val_acc", pa.float64()),
        ("accepted", pa.bool_()),
        ("density", pa.float64()),
        ("seconds", pa.float64()),
        ("node", pa.string()),
        # full: the search's recalibration (exact); screen: a subset recalibration; confirm: a screened
        # winner again with the full one (fast). Empty in traces from before stages were recorded.
        ("stage", pa.string()),
        ("bn_examples", pa.int64()),  # the examples BatchNorm was recalibrated on: the evaluation's cost
    ]
)


def trace_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=TRACE_SCHEMA)


def read_trace(run: RunDir, name: str) -> list[dict]:
    """The search's evaluations so far, one dict per row ([] before the first decided step)."""
    rel = layout.trace(name)
    return run.read_table(rel).to_pylist() if run.exists(rel) else []


def write_trace(run: RunDir, name: str, rows: list[dict]) -> None:
    run.write_table(layout.trace(name), trace_table(rows))


def summary_table(rows: list[TargetResult]) -> pa.Table:
    return pa.table(
        {
            "target": pa.array([r.target for r in rows], pa.int32()),
            "density": [r.density for r in rows],
            "lt_val_acc": [r.lt_val_acc for r in rows],
            "lt_test_acc": [r.lt_test_acc for r in rows],
            "val_acc": [r.val_acc for r in rows],
            "test_acc": [r.test_acc for r in rows],
            "gain": [r.gain for r in rows],
            "lt_bn_val_acc": [r.lt_bn_val_acc for r in rows],
            "lt_bn_test_acc": [r.lt_bn_test_acc for r in rows],
            "accepted": pa.array([r.accepted for r in rows], pa.list_(pa.int32())),
            "alphas": pa.array([r.alphas for r in rows], pa.list_(pa.float64())),
            "path": [r.path for r in rows],
            "sha256": [r.sha256 for r in rows],
        }
    )


def write_summary(run: RunDir, name: str, results: dict[int, TargetResult]) -> None:
    run.write_table(layout.summary(name), summary_table([results[t] for t in sorted(results)]))


# --------------------------------------------------------------------------------------------------
# Settings


def claim_settings(run: RunDir, name: str, identity: dict) -> None:
    """settings.json: the identity of the search in this folder. A first search writes it; a later one
    must match it (resuming a search with other settings would mix two searches in one trace)."""
    rel = layout.pool_settings(name)
    if not run.exists(rel):
        run.write_json(rel, identity)
        return
    old = run.read_json(rel)
    if old != identity:
        diff = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
        raise LpRayError(
            f"{run.path(layout.pool_dir(name))}: holds a search with different settings ({', '.join(diff)}); "
            f"pass --overwrite to start it over or --name to keep both"
        )
