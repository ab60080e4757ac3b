"""`Tracker`: lp-ray's one way into MLflow. `MlflowClient` with explicit run ids only (never the fluent API),
so nothing depends on process-global "active run" state and workers never talk to MLflow.

Runs are found again by their tags before any is created, so a killed and restarted driver, a rerun, or
a second command logs into the same runs instead of duplicating them; values are logged only when they
are new or changed, and a finished run found again keeps its end time: re-logging a finished run
changes nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

from lp_ray.errors import LpRayError
from lp_ray.progress import say
from lp_ray.rounding import clean
from lp_ray.tracking.stores import (
    artifact_location,
    check_reachable,
    create_sqlite_store,
    quiet_mlflow,
    reachable,
    store_lock,
)

TAG_HASH, TAG_KIND, TAG_KEY = "lp_ray.run_hash", "lp_ray.kind", "lp_ray.round"
TAG_PARENT = "mlflow.parentRunId"
# A run directory is the identity of an IMP run in MLflow: the same job in two storage locations is two
# runs; the same run directory resumed is one.
TAG_RUN_DIR = "lp_ray.run_dir"
NOTE = "mlflow.note.content"  # a run's description: the UI shows it on the run's Overview
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"


# How often a command riding out a tracking server's outage asks whether it answers again; when each
# outage this process has met began (by tracking URI), so `lp-ray run`'s steps say it once.
PROBE_SECONDS = 20.0
_OUTAGES: dict[str, float] = {}


def experiment_name(job_name: str) -> str:
    """lp-ray's experiments are `lp-ray/<job name>`: never confused with MLflow's own "Default"."""
    return f"lp-ray/{job_name}"


def _ms(seconds: float | None) -> int:
    return int(1000 * (time.time() if seconds is None else seconds))


class Tracker:
    def __init__(
        self, uri: str, experiment: str, run_hash: str, experiment_id: str | None = None, ride_out: bool = False
    ):
        """`experiment`: the name of the experiment to log into (created if needed); `experiment_id`:
        an existing one to keep logging into (a run directory remembers its own). A tracking server
        that does not answer is an error, or with `ride_out` an outage from the start (see `attempt`)."""
        quiet_mlflow()
        self.uri, self.run_hash = uri, run_hash
        self.remote = uri.startswith(("http://", "https://"))
        self.down_since: float | None = None
        self.missed = 0  # logging steps left out while MLflow was unreachable
        self._probed = 0.0
        self._wanted = (experiment, experiment_id)
        if self.remote:
            try:
                check_reachable(uri)
                _OUTAGES.pop(uri, None)
            except LpRayError as e:
                if not ride_out:
                    raise
                self._went_down(str(e).split(" is unreachable ", 1)[-1].strip("()"))
                return
        try:
            self._open()
        except LpRayError:
            if not self.remote or reachable(uri):
                raise
            # it answered the check a moment ago and stopped answering since
            if not ride_out:
                raise LpRayError(f"MLflow tracking server {uri} is unreachable (it stopped answering)") from None
            self._went_down("it stopped answering")

    def _open(self) -> None:
        from mlflow.tracking import MlflowClient

        experiment, experiment_id = self._wanted
        with store_lock(self.uri):
            try:
                create_sqlite_store(self.uri)  # a new one: its schema migrations run here
                self.client = MlflowClient(tracking_uri=self.uri)
                if experiment_id is not None and self.client.get_experiment(experiment_id) is not None:
                    self.experiment_id = experiment_id
                else:
                    self.experiment_id = self._experiment(experiment)
            except Exception as e:  # any store failure here means MLflow cannot be used at all
                raise LpRayError(
                    f"MLflow at {self.uri} is not usable: {(str(e).splitlines() or [type(e).__name__])[0]}"
                ) from None

    # --- a tracking server down for a while ---------------------------------------------------------

    def attempt(self, log, *args, **kwargs):
        """`log(*args, **kwargs)` (a logging step; lp-ray's are idempotent: they log what MLflow lacks),
        or None when a tracking server is unreachable: the command goes on (its run directory keeps
        everything), says so once, and asks again every PROBE_SECONDS; the first step after the server
        answers again logs what the others missed. A SQLite store's failures, and a server's that
        answers, are errors as before."""
        if self.down_since is not None and not self._back():
            self.missed += 1
            return None
        try:
            return log(*args, **kwargs)
        except LpRayError:
            raise
        except Exception:
            if not self.remote or reachable(self.uri):
                raise
            self._went_down("it stopped answering")
            self.missed += 1
            return None

    def _went_down(self, reason: str) -> None:
        """An outage begins: said once per process and server (`lp-ray run`'s steps share it)."""
        known = self.uri in _OUTAGES
        self.down_since = _OUTAGES.setdefault(self.uri, time.time())
        self._probed = time.time()
        if not known:
            say(
                f"warning: MLflow at {self.uri} is unreachable ({reason}); lp-ray goes on (the run directory "
                "keeps everything) and logs what MLflow missed when it answers again"
            )

    def _back(self) -> bool:
        if time.time() - self._probed < PROBE_SECONDS:
            return False
        self._probed = time.time()
        if not reachable(self.uri):
            return False
        if not hasattr(self, "client"):
            self._open()
        say(f"MLflow at {self.uri} answers again after {time.time() - self.down_since:.0f} s: logging what it missed")
        self.down_since = None
        _OUTAGES.pop(self.uri, None)
        return True

    def outage_note(self, what: str) -> None:
        """At a command's end: what an outage that has not ended left out, and how it gets logged."""
        if self.down_since is not None and self.missed:
            say(
                f"warning: MLflow at {self.uri} is still unreachable: it lacks part of this {what}, which the "
                "run directory holds; rerun the command once MLflow answers to log it (nothing is recomputed)"
            )

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

    def log_table(self, run_id: str, name: str, columns: dict[str, list]) -> None:
        """A table MLflow's UI shows as one (the run's Artifacts, and the evaluation view): the JSON
        `MlflowClient.log_table` writes, replaced rather than appended to when logged again (which
        log_table does), so a rerun leaves one copy of each row."""
        import json

        from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

        names = list(columns)
        rows = [list(r) for r in zip(*(columns[n] for n in names), strict=True)]
        self.log_files(run_id, {name: json.dumps({"columns": names, "data": rows}).encode()})
        tables = json.loads(self.client.get_run(run_id).data.tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]"))
        if {"path": name, "type": "table"} not in tables:
            tables.append({"path": name, "type": "table"})
            self.log_values(run_id, {}, {MLFLOW_LOGGED_ARTIFACTS: json.dumps(tables)})

    def log_run_files(self, run_id: str, run, rels, artifact_path: str | None = None) -> None:
        """Files of a run (or experiment) directory as artifacts, under their own names."""
        self.log_files(run_id, {rel.rsplit("/", 1)[-1]: run.read_bytes(rel) for rel in rels}, artifact_path)
