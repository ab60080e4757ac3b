"""MLflow, owned by the driver (docs/architecture.md, "Tracking"). `MlflowClient` with explicit run ids
only (never the fluent API), so nothing depends on process-global "active run" state and workers never
talk to MLflow.

Layout: experiment = job name; one parent run per run hash (`imp`), a child run per round; later a
`pool:<method>` run with a child per target. Runs are found again by their tags before any is
created, so a killed and restarted driver logs into the same runs instead of duplicating them.

Nothing else in lp-ray imports mlflow: commands say what to log through a `Tracker`, and this module
also decides which store a command logs to (`tracking_uri_for_run`) and resolves `runs:/<id>`.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from lp_ray import layout
from lp_ray.errors import LpRayError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
TAG_HASH, TAG_KIND, TAG_ROUND = "lp_ray.run_hash", "lp_ray.kind", "lp_ray.round"
TAG_PARENT = "mlflow.parentRunId"
# A run directory is the identity of an IMP run in MLflow: the same job in two storage locations is two
# runs; the same run directory resumed is one.
TAG_RUN_DIR = "lp_ray.run_dir"


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"


def resolve_tracking_uri(cli_uri: str | None, cluster_uri: str | None) -> str:
    """--tracking-uri beats MLFLOW_TRACKING_URI beats the cluster spec beats ./mlflow.db. A relative SQLite
    path is made absolute, so a run directory remembers the same store from any working directory."""
    uri = cli_uri or os.environ.get("MLFLOW_TRACKING_URI") or cluster_uri or DEFAULT_TRACKING_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        uri = prefix + os.path.abspath(uri[len(prefix) :])
    return uri


def tracking_uri_for_run(cli_uri: str | None, cluster_uri: str | None, run) -> str:
    """The store of a command on a run directory (`run`: a RunDir, existing or not yet): an explicit
    URI (option, environment, cluster spec) wins, else the store the run's IMP logged to, so a rerun
    from another working directory never starts a second store."""
    from lp_ray.store import read_tracking

    if cli_uri or os.environ.get("MLFLOW_TRACKING_URI") or cluster_uri:
        return resolve_tracking_uri(cli_uri, cluster_uri)
    info = read_tracking(run)
    return info.tracking_uri if info is not None else resolve_tracking_uri(None, None)


def tracking_uri_for_job(cli_uri: str | None, job, cluster) -> str:
    """For imp and run: as for any command on a run, a run directory that exists already keeps logging
    where it logged. Its storage is checked first, so a missing bucket says so before anything reads it."""
    from lp_ray.spec import storage_uri
    from lp_ray.store import check_storage_reachable, run_dir_for

    check_storage_reachable(storage_uri(cluster))
    return tracking_uri_for_run(cli_uri, cluster.tracking_uri, run_dir_for(job, cluster))


def network_uri_of(mlflow_run_id: str, tracking_uri: str | None) -> str:
    """Where the weights of the network an MLflow run logged are (its network_uri tag for a pooled
    network, ticket_uri for an IMP round): what `lp-ray eval runs:/<id>` loads."""
    store = resolve_tracking_uri(tracking_uri, None)
    if not store_exists(store):  # reading must not create an empty store
        raise LpRayError(f"runs:/{mlflow_run_id}: there is no MLflow store at {store}; pass --tracking-uri")
    _quiet_mlflow()
    from mlflow.tracking import MlflowClient

    try:
        tags = MlflowClient(store).get_run(mlflow_run_id).data.tags
    except Exception as e:
        raise LpRayError(f"runs:/{mlflow_run_id}: cannot read that MLflow run ({str(e).splitlines()[0]})") from None
    for tag in NETWORK_URI_TAGS:
        if tag in tags:
            return tags[tag]
    raise LpRayError(
        f"runs:/{mlflow_run_id}: that MLflow run has no network_uri or ticket_uri tag (not a ticket or pooled network)"
    )


NETWORK_URI_TAGS = ("network_uri", "ticket_uri")


def run_tracker(run, tracking_uri: str | None) -> tuple[Tracker, str] | None:
    """The tracker of an existing run directory and its imp run, for commands that log beside it
    (report, analyses); None when there is nothing to log to: no store at that URI (a command that only
    reads never creates one), or no imp run of this directory in it."""
    from lp_ray.spec import run_hash
    from lp_ray.store import read_job

    if tracking_uri is None or not store_exists(tracking_uri):
        return None
    job = read_job(run)
    tracker = Tracker(tracking_uri, job.name, run_hash(job))
    parent = tracker.imp_run_of(run)
    return None if parent is None else (tracker, parent)


def job_params(job) -> dict[str, object]:
    """The job as MLflow parameters, without the data and model fields its data set and model do not
    read (their registries say which they do)."""
    from lp_ray.data.registry import DATASETS
    from lp_ray.models import MODELS
    from lp_ray.spec import job_to_dict

    reads = {"data": DATASETS[job.data.dataset].reads, "model": MODELS[job.model.name].reads}
    out = {}
    for section, values in job_to_dict(job).items():
        if not isinstance(values, dict):
            out[section] = values
            continue
        for k, v in values.items():
            key = f"{section}.{k}"
            if section in reads and not reads[section](k):
                continue
            if isinstance(v, dict):
                out.update({f"{key}.{kk}": vv for kk, vv in v.items()})
            else:
                out[key] = v
    return out


def _quiet_mlflow() -> None:
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    import logging

    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


def artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a SQLite store live beside it, in `mlartifacts/<experiment>/`. MLflow's default is
    `./mlruns` in whatever directory the command happens to run in, which scattered artifacts over
    working directories (and into git). A tracking server decides for itself (None)."""
    path = _sqlite_path(uri)
    if path is None or path == ":memory:":
        return None
    return Path(os.path.dirname(path) or ".").resolve().joinpath("mlartifacts", experiment).as_uri()


def store_exists(uri: str) -> bool:
    """Whether there is a store at `uri` to read from: a SQLite file that exists, or any server (its
    reachability is checked when a Tracker is made). Read-only commands never create a store."""
    path = _sqlite_path(uri)
    return path is None or (path != ":memory:" and os.path.isfile(path))


def _sqlite_path(uri: str) -> str | None:
    return uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else None


@contextlib.contextmanager
def _store_lock(uri: str):
    """Two commands creating one new sqlite store at once race in its schema migrations and can leave
    it broken ("table _alembic_tmp_... already exists"): set-up is serialized with a lock file beside it."""
    path = _sqlite_path(uri)
    if path is None or path == ":memory:" or not os.path.isdir(os.path.dirname(path) or "."):
        yield
        return
    import fcntl

    with open(path + ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Tracker:
    def __init__(self, uri: str, experiment: str, run_hash: str):
        _quiet_mlflow()
        if uri.startswith(("http://", "https://")):
            _check_reachable(uri)
        from mlflow.tracking import MlflowClient

        self.uri, self.run_hash = uri, run_hash
        with _store_lock(uri):
            try:  # a new sqlite store runs its schema migrations here
                self.client = MlflowClient(tracking_uri=uri)
                exp = self.client.get_experiment_by_name(experiment)
                self.experiment_id = (
                    exp.experiment_id
                    if exp
                    else self.client.create_experiment(
                        experiment,
                        artifact_location=artifact_location(uri, experiment),
                        # MLflow 3's UI opens an untyped experiment in its GenAI view; ours train models.
                        tags={EXPERIMENT_KIND_TAG: "custom_model_development"},
                    )
                )
            except Exception as e:  # any store failure here means MLflow cannot be used at all
                raise LpRayError(
                    f"MLflow at {uri} is not usable: {(str(e).splitlines() or [type(e).__name__])[0]}"
                ) from None

    # --- finding or creating runs -------------------------------------------------------------

    def _find(self, tags: dict[str, str]) -> str | None:
        clauses = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=clauses, max_results=2, order_by=["attributes.start_time ASC"]
        )
        return runs[0].info.run_id if runs else None

    def _find_or_create(self, run_name: str, tags: dict[str, str]) -> str:
        found = self._find(tags)
        if found:
            if self.client.get_run(found).info.status != "RUNNING":
                self.client.update_run(found, status="RUNNING")
            return found
        return self.client.create_run(self.experiment_id, run_name=run_name, tags=tags).info.run_id

    def imp_run(self, params: dict[str, object], run_dir: str) -> str:
        run_id = self._find_or_create(
            f"imp {self.run_hash}", {TAG_HASH: self.run_hash, TAG_KIND: "imp", TAG_RUN_DIR: run_dir}
        )
        self.log_params(run_id, params)
        return run_id

    def log_params(self, run_id: str, params: dict[str, object]) -> None:
        """MLflow params are write-once: a resumed run logs only the ones it has not logged yet."""
        existing = self.client.get_run(run_id).data.params
        new = {k: str(v)[:6000] for k, v in params.items() if k not in existing}
        if new:
            from mlflow.entities import Param

            self.client.log_batch(run_id, params=[Param(k, v) for k, v in new.items()])

    def find_imp_run(self, run_dir: str) -> str | None:
        return self._find({TAG_HASH: self.run_hash, TAG_KIND: "imp", TAG_RUN_DIR: run_dir})

    def imp_run_of(self, run) -> str | None:
        """The imp run of a run directory: the one its tracking.json names when it logged to this store,
        else the one found by its tags."""
        from lp_ray.store import read_tracking

        info = read_tracking(run)
        if info is not None and info.tracking_uri == self.uri:
            return info.imp_run_id
        return self.find_imp_run(run.uri)

    def sweep_run(self, experiment_dir: str, name: str) -> str:
        """The parent run of one experiment directory (`lp-ray sweep`); a child per trial links its runs."""
        return self._find_or_create(
            f"sweep {name}", {TAG_HASH: self.run_hash, TAG_KIND: "sweep", TAG_RUN_DIR: experiment_dir}
        )

    def find_pool_run(self, name: str, imp_run_id: str) -> str | None:
        return self._find({TAG_KIND: f"pool:{name}", TAG_PARENT: imp_run_id})

    def pool_run(self, name: str, imp_run_id: str | None, params: dict[str, object]) -> str:
        """`pool:<name>`, nested under the IMP parent run when there is one (it links the two in the UI)."""
        tags = {TAG_HASH: self.run_hash, TAG_KIND: f"pool:{name}"}
        if imp_run_id:
            tags[TAG_PARENT] = imp_run_id
        run_id = self._find_or_create(f"pool:{name}", tags)
        self.log_params(run_id, params)
        return run_id

    def child_run(self, parent_id: str, kind: str, key: str, name: str) -> str:
        return self._find_or_create(name, self._child_tags(parent_id, kind, key))

    def find_child(self, parent_id: str, kind: str, key: str) -> str | None:
        """An existing child run, left as it is (child_run would mark a found run RUNNING again)."""
        return self._find(self._child_tags(parent_id, kind, key))

    def _child_tags(self, parent_id: str, kind: str, key: str) -> dict[str, str]:
        return {TAG_HASH: self.run_hash, TAG_KIND: kind, TAG_ROUND: key, TAG_PARENT: parent_id}

    # --- logging --------------------------------------------------------------------------------

    def log_metrics(self, run_id: str, rows: list[dict], step_key: str) -> None:
        """Log a list of per-step dicts (e.g. one per epoch), replacing nothing already logged."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(k, float(v), now, int(row[step_key]))
            for row in rows
            for k, v in row.items()
            if k != step_key and isinstance(v, (int, float)) and v is not None
        ]
        for i in range(0, len(metrics), 900):  # MLflow caps a batch at 1000 entries
            self.client.log_batch(run_id, metrics=metrics[i : i + 900])

    def log_final(self, run_id: str, metrics: dict[str, float], tags: dict[str, str] | None = None) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, local_path, artifact_path)

    def log_files(self, run_id: str, files: dict[str, bytes], artifact_path: str | None = None) -> None:
        """Artifacts from bytes (file name -> contents): run directories may live on S3, and MLflow
        logs local files, so each goes through a temporary folder of its own."""
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            for name, data in files.items():
                local = Path(d) / name
                local.write_bytes(data)
                self.client.log_artifact(run_id, str(local), artifact_path)

    def log_run_files(self, run_id: str, run, rels, artifact_path: str | None = None) -> None:
        """Files of a run (or experiment) directory as artifacts, under their own names."""
        self.log_files(run_id, {rel.rsplit("/", 1)[-1]: run.read_bytes(rel) for rel in rels}, artifact_path)

    def has_metric(self, run_id: str, key: str) -> bool:
        return key in self.client.get_run(run_id).data.metrics

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    # --- what an IMP round logs (imp, import) ---------------------------------------------------------

    def round_run(self, parent: str, r: int, name: str | None = None) -> str:
        return self.child_run(parent, "imp_round", str(r), name or f"round {r:02d}")

    def log_round(self, child: str, parent: str, run, meta, history: dict) -> None:
        """A finished round: per-epoch metrics on its child run, its accuracies on the imp run with
        step = round (so MLflow charts accuracy against the round), the ticket's location and sha256."""
        self.log_metrics(child, history["epochs"], "epoch")
        row = {"round": meta.round, "lt_val_acc": meta.val_acc, "lt_test_acc": meta.test_acc, "density": meta.density}
        self.log_metrics(parent, [row], "round")
        self.log_final(
            child,
            {"final_val_acc": meta.val_acc, "final_test_acc": meta.test_acc, "density": meta.density},
            {
                "ticket_uri": run.uri_of(layout.ticket(meta.round)),
                "ticket_sha256": meta.ticket_sha256,
                "density": f"{meta.density:.6f}",
            },
        )
        self.finish(child)

    def ensure_round_logged(self, parent: str, run, meta) -> None:
        """A round finished but the driver died before MLflow heard of it: log it now, once."""
        child = self.round_run(parent, meta.round)
        if not self.has_metric(child, "final_test_acc"):
            self.log_round(child, parent, run, meta, run.read_json(layout.history(meta.round)))
        elif self.status(child) != "FINISHED":
            self.finish(child)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)


def _check_reachable(uri: str) -> None:
    """Fail in seconds, before any training, when a tracking server does not answer (MLflow's own
    client would retry for minutes)."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise LpRayError(f"MLflow tracking server {uri} is unreachable ({reason})") from None
