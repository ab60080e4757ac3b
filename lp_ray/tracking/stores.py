"""Which MLflow store a command logs to, whether there is one, where its artifacts live, and the address
of its runs page in the UI."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from lp_ray.errors import LpRayError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


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


def store_exists(uri: str) -> bool:
    """Whether there is a store at `uri` to read from: a SQLite file that exists, or any server (its
    reachability is checked when a Tracker is made). Read-only commands never create a store."""
    path = sqlite_path(uri)
    return path is None or (path != ":memory:" and os.path.isfile(path))


def sqlite_path(uri: str) -> str | None:
    return uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else None


def artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a SQLite store live beside it, in `mlartifacts/<experiment>/` (`mlartifacts/lp-ray/<job>/`
    for lp-ray's experiments). MLflow's default is
    `./mlruns` in whatever directory the command happens to run in, which scattered artifacts over
    working directories (and into git). A tracking server decides for itself (None)."""
    path = sqlite_path(uri)
    if path is None or path == ":memory:":
        return None
    return Path(os.path.dirname(path) or ".").resolve().joinpath("mlartifacts", experiment).as_uri()


def runs_page(uri: str, experiment_id: str) -> str:
    """Where a user reviews the runs: the experiment's runs page in MLflow's model-training view (MLflow
    3's UI opens an experiment in its GenAI view unless the address says otherwise). For a SQLite store,
    the page `mlflow ui` serves, with the command that serves it."""
    path = f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{path}"
    return f"http://127.0.0.1:5000/{path} (after `mlflow ui --backend-store-uri {uri}`)"


@contextlib.contextmanager
def store_lock(uri: str):
    """Two commands creating one new sqlite store at once race in its schema migrations and can leave
    it broken ("table _alembic_tmp_... already exists"): set-up is serialized with a lock file beside it."""
    path = sqlite_path(uri)
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


def create_sqlite_store(uri: str) -> None:
    """Make a new SQLite store whole or not at all (call under `store_lock`). MLflow makes its schema with
    dozens of migrations whose DDL SQLite commits one by one, so a command killed among them (the chaos
    run's driver kill, 2026-12-06) left a store that every later command refused ("table
    _alembic_tmp_trace_tags already exists"). The schema is made in `<store>.creating` beside it and
    renamed into place, which is atomic; a `.creating` left by a killed creator is lp-ray's own and is
    made again. An existing store, a server or an in-memory store is left to MLflow."""
    path = sqlite_path(uri)
    if path is None or path == ":memory:" or os.path.exists(path):
        return
    from mlflow.tracking import MlflowClient

    partial = path + ".creating"
    for leftover in (partial, partial + "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(leftover)
    MlflowClient(tracking_uri="sqlite:///" + partial).search_experiments(max_results=1)
    os.rename(partial, path)


def reachable(uri: str, timeout: float = 3) -> bool:
    """Whether a tracking server answers its health check now."""
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout)
        return True
    except Exception:
        return False


def check_reachable(uri: str) -> None:
    """Fail in seconds, before any training, when a tracking server does not answer (MLflow's own
    client would retry for minutes)."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise LpRayError(f"MLflow tracking server {uri} is unreachable ({reason})") from None


def quiet_mlflow() -> None:
    """MLflow without its chatter, and with a tracking server's requests given up in seconds rather than
    MLflow's ~4 minutes of retries: lp-ray rides an outage out itself (Tracker.attempt). A user's own
    MLFLOW_HTTP_REQUEST_* settings win."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    import logging

    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


def network_uri_of(scheme: str, mlflow_id: str, tracking_uri: str | None) -> str:
    """Where the weights of a network MLflow knows are: the network_uri tag of a LoggedModel (`models:/`)
    or of a run logged before lp-ray 0.4 (`runs:/`, ticket_uri for an IMP round's). What
    `lp-ray eval models:/<id>` loads."""
    name = f"{scheme}{mlflow_id}"
    store = resolve_tracking_uri(tracking_uri, None)
    if not store_exists(store):  # reading must not create an empty store
        raise LpRayError(f"{name}: there is no MLflow store at {store}; pass --tracking-uri")
    quiet_mlflow()
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(store)
        tags = client.get_logged_model(mlflow_id).tags if scheme == "models:/" else client.get_run(mlflow_id).data.tags
    except Exception as e:
        raise LpRayError(f"{name}: cannot read it in MLflow ({str(e).splitlines()[0]})") from None
    for tag in ("network_uri", "ticket_uri"):
        if tag in tags:
            return tags[tag]
    raise LpRayError(f"{name}: it has no network_uri or ticket_uri tag (not a ticket or pooled network of lp-ray)")
