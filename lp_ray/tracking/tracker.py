"""`Tracker`: lp-ray's one way into MLflow. `MlflowClient` with explicit run ids only (never the fluent API),
so nothing depends on process-global "active run" state and workers never talk to MLflow.

Runs are found again by their tags before any is created, so a killed and restarted driver, a rerun, or
a second command logs into the same runs instead of duplicating them; values are logged only when they
are new or changed, and a finished run found again keeps its end time: re-logging a finished run
changes nothing.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from lp_ray.errors import LpRayError
from lp_ray.tracking.stores import artifact_location, check_reachable, create_sqlite_store, quiet_mlflow, store_lock

TAG_HASH, TAG_KIND, TAG_KEY = "lp_ray.run_hash", "lp_ray.kind", "lp_ray.round"
TAG_PARENT = "mlflow.parentRunId"
# A run directory is the identity of an IMP run in MLflow: the same job in two storage locations is two
# runs; the same run directory resumed is one.
TAG_RUN_DIR = "lp_ray.run_dir"
NOTE = "mlflow.note.content"  # a run's description: the UI shows it on the run's Overview
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"


def experiment_name(job_name: str) -> str:
    """lp-ray's experiments are `lp-ray/<job name>`: never confused with MLflow's own "Default"."""
    return f"lp-ray/{job_name}"


def clean(value: float) -> float:
    """A value without float noise: 6 significant digits (0.0010000000000000002 -> 0.001,
    -0.5624999999999991 -> -0.5625), nan and inf kept as they are."""
    value = float(value)
    if not math.isfinite(value) or value == 0:
        return value
    return float(f"{value:.6g}")


def _ms(seconds: float | None) -> int:
    return int(1000 * (time.time() if seconds is None else seconds))


class Tracker:
    def __init__(self, uri: str, experiment: str, run_hash: str, experiment_id: str | None = None):
        """`experiment`: the name of the experiment to log into (created if needed); `experiment_id`:
        an existing one to keep logging into (a run directory remembers its own)."""
        quiet_mlflow()
        if uri.startswith(("http://", "https://")):
            check_reachable(uri)
        from mlflow.tracking import MlflowClient

        self.uri, self.run_hash = uri, run_hash
        with store_lock(uri):
            try:
                create_sqlite_store(uri)  # a new one: its schema migrations run here
                self.client = MlflowClient(tracking_uri=uri)
                if experiment_id is not None and self.client.get_experiment(experiment_id) is not None:
                    self.experiment_id = experiment_id
                else:
                    self.experiment_id = self._experiment(experiment)
            except Exception as e:  # any store failure here means MLflow cannot be used at all
                raise LpRayError(
                    f"MLflow at {uri} is not usable: {(str(e).splitlines() or [type(e).__name__])[0]}"
                ) from None

    def _experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        return self.client.create_experiment(
            name,
            artifact_location=artifact_location(self.uri, name),
            # MLflow 3's UI opens an untyped experiment in its GenAI view; ours train models.
            tags={EXPERIMENT_KIND_TAG: "custom_model_development"},
        )

    # --- finding or creating runs -------------------------------------------------------------------

    def find(self, tags: dict[str, str]) -> str | None:
        clauses = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=clauses, max_results=2, order_by=["attributes.start_time ASC"]
        )
        return runs[0].info.run_id if runs else None

    def start(self, name: str, tags: dict[str, str], start_time: float | None = None, work: bool = True) -> str:
        """The run with these tags, created (named `name`, started at `start_time`, default now) if none
        has them yet. A found run is marked RUNNING again when there is `work` to do in it; a finished
        one with none is left exactly as it was."""
        found = self.find(tags)
        if found is None:
            return self.client.create_run(
                self.experiment_id, start_time=_ms(start_time), run_name=name, tags=tags
            ).info.run_id
        if work and self.status(found) != "RUNNING":
            self.client.update_run(found, status="RUNNING")
        return found

    def child_tags(self, parent_id: str, kind: str, key: str) -> dict[str, str]:
        return {TAG_HASH: self.run_hash, TAG_KIND: kind, TAG_KEY: key, TAG_PARENT: parent_id}

    def finish(self, run_id: str, status: str = "FINISHED", end_time: float | None = None) -> None:
        """End a run (at `end_time`, default now), unless it already ended that way: a rerun that had
        nothing to do leaves its end time alone."""
        info = self.client.get_run(run_id).info
        if info.status == status and info.end_time:
            return
        self.client.set_terminated(run_id, status=status, end_time=_ms(end_time))

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    # --- logging ------------------------------------------------------------------------------------

    def log_values(self, run_id: str, metrics: dict[str, float | None], tags: dict[str, str] | None = None) -> None:
        """Metrics without a step (a run's results), logged only where new or changed, so a rerun adds
        nothing to their histories; tags likewise."""
        from mlflow.entities import Metric, RunTag

        data = self.client.get_run(run_id).data
        now = _ms(None)
        new = [
            Metric(k, clean(v), now, 0) for k, v in metrics.items() if v is not None and data.metrics.get(k) != clean(v)
        ]
        changed = [RunTag(k, str(v)) for k, v in (tags or {}).items() if data.tags.get(k) != str(v)]
        if new or changed:
            self.client.log_batch(run_id, metrics=new, tags=changed)

    def log_series(self, run_id: str, rows: list[dict], step_key: str, names: dict[str, str] | None = None) -> None:
        """Per-step values (a row per epoch or per round): `names` maps a row's keys to metric names
        (None: every numeric key under its own name). The caller logs a series once (its run is new)."""
        from mlflow.entities import Metric

        now = _ms(None)
        metrics = [
            Metric((names or {}).get(k, k), clean(v), now, int(row[step_key]))
            for row in rows
            for k, v in row.items()
            if k != step_key
            and (names is None or k in names)
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
            and v is not None
        ]
        for i in range(0, len(metrics), 900):  # MLflow caps a batch at 1000 entries
            self.client.log_batch(run_id, metrics=metrics[i : i + 900])

    def has_metric(self, run_id: str, key: str) -> bool:
        return key in self.client.get_run(run_id).data.metrics

    def log_params(self, run_id: str, params: dict[str, object]) -> None:
        """MLflow params are write-once: a resumed run logs only the ones it has not logged yet. Floats
        are written without float noise."""
        existing = self.client.get_run(run_id).data.params

        def text(v) -> str:
            if isinstance(v, float):
                return repr(clean(v))
            if isinstance(v, list):
                return "[" + ", ".join(text(x) for x in v) + "]"
            return str(v)

        new = {k: text(v)[:6000] for k, v in params.items() if k not in existing}
        if new:
            from mlflow.entities import Param

            self.client.log_batch(run_id, params=[Param(k, v) for k, v in new.items()])

    def describe(self, run_id: str, text: str) -> None:
        """The run's description (markdown), shown on its Overview page."""
        self.log_values(run_id, {}, {NOTE: text})

    def log_files(self, run_id: str, files: dict[str, bytes], artifact_path: str | None = None) -> None:
        """Artifacts from bytes (file name -> contents): run directories may live on S3, and MLflow
        logs local files, so each goes through a temporary folder of its own. An artifact logged again
        replaces the one of the same name."""
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            for name, data in files.items():
                local = Path(d) / name
                local.write_bytes(data)
                self.client.log_artifact(run_id, str(local), artifact_path)

    def log_run_files(self, run_id: str, run, rels, artifact_path: str | None = None) -> None:
        """Files of a run (or experiment) directory as artifacts, under their own names."""
        self.log_files(run_id, {rel.rsplit("/", 1)[-1]: run.read_bytes(rel) for rel in rels}, artifact_path)
