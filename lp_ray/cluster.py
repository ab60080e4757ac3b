"""Connecting to Ray: a private local instance, or an existing cluster (`auto` / `host:port`)."""

from __future__ import annotations

import logging
import os

from lp_ray.errors import LpRayError
from lp_ray.spec import ClusterSpec

# Ray Train V2's controller polls workers every 2 s by default, which adds ~9 s to every fit(); it also
# consumes each ray.train.report() only when it polls, and a worker's next report waits for that. With
# a checkpoint every epoch, 0.05 s took a 40-epoch round of small epochs from 24.7 s to 20.9 s here.
_DEFAULT_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.05",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
}


# A private Ray on one machine has no spot preemption to watch and no metrics dashboard to feed; both
# are extra processes per fit() (the preemption watcher alone took ~25% of a core here while starting).
# Ray starts its workers at niceness 15 so they never starve its own daemons on a shared node; on a
# private Ray the workers ARE the job (training, pool evaluators), and at 15 any other process on a
# laptop preempts them: epochs of the old default job ran 0.64-1.72 s instead of a steady 0.84 s.
_LOCAL_ENV = {
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_METRICS_ENABLED": "0",
    "RAY_worker_niceness": "0",
}


def single_machine_env() -> dict[str, str]:
    """The settings lp-ray gives the private Ray it starts, for a Ray started by hand on one machine
    (`ray start --head` with these in its environment: a laptop's shared cluster, the test suite's)."""
    return {**_DEFAULT_ENV, **_LOCAL_ENV}


def connect(
    cluster: ClusterSpec, extra_env: dict[str, str] | None = None, plugin_versions: dict[str, str] | None = None
) -> None:
    """Start or join Ray quietly. Workers inherit only the environment present at ray.init(), so
    everything they need (MLflow URI, Train knobs) is set before it. The job's own plugin modules go to
    every worker through Ray's runtime environment (py_modules); installed packages must be installed
    on the nodes. (A process that joined Ray before cannot add modules: its workers read the run
    directory's copies, lp_ray/plugins/loading.py.)"""
    for k, v in {**_DEFAULT_ENV, **(extra_env or {})}.items():
        os.environ.setdefault(k, v)
    if os.environ.get("LP_RAY_ADDRESS", cluster.address) == "local":
        for k, v in _LOCAL_ENV.items():
            os.environ.setdefault(k, v)
        # Keep Ray 2.60's token authentication on for the private cluster; saying so explicitly
        # also silences the notice it prints on every start when the mode is left unset.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    if ray.is_initialized():
        return
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING, configure_logging=True)
    from lp_ray.plugins.loading import local_sources

    runtime_env = dict(cluster.runtime_env)
    modules = [str(p) for p in local_sources(plugin_versions or {}).values()]
    if modules:
        runtime_env["py_modules"] = [*runtime_env.get("py_modules", []), *modules]
    # A submitted command (--submit) already runs in the job's runtime environment, which holds the
    # cluster spec's and this folder with the job's own modules (submit.py); Ray refuses to be given
    # its fields again, and everything the command starts inherits them.
    if runtime_env and "LP_RAY_ADDRESS" not in os.environ:
        kwargs["runtime_env"] = runtime_env
    address = os.environ.get("LP_RAY_ADDRESS", cluster.address)  # set by --submit: inside the cluster, "auto"
    if address == "local":
        # address="local" always starts a private instance; plain ray.init() would join any cluster
        # already running on this machine (RAY_ADDRESS, or the last `ray start`).
        try:
            ray.init(address="local", num_cpus=os.cpu_count(), **kwargs)
        except Exception as e:  # e.g. raylet/GCS start-up timing out on an overloaded machine
            raise LpRayError(
                f"could not start a private Ray on this machine: {(str(e).strip().splitlines() or [type(e).__name__])[0]}"
            ) from None
        return
    if address != "auto":
        check_port(address)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        raise LpRayError(f"cannot reach the Ray cluster at {address!r}: {str(e).strip().splitlines()[0]}") from None


def use_auth_token_if_present() -> None:
    """Ray 2.60 clusters authenticate with a token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
    ~/.ray/auth_token); the Jobs client sends it only in token mode, so turn that on when a token is at
    hand. (Not for joining a cluster as a driver: a token sent to a cluster without authentication
    connects, then its actors never start; drivers follow RAY_AUTH_MODE as Ray itself does.)"""
    import os
    from pathlib import Path

    if "RAY_AUTH_MODE" in os.environ:
        return
    if (
        os.environ.get("RAY_AUTH_TOKEN")
        or os.environ.get("RAY_AUTH_TOKEN_PATH")
        or (Path.home() / ".ray" / "auth_token").is_file()
    ):
        os.environ["RAY_AUTH_MODE"] = "token"


def check_address(cluster: ClusterSpec) -> None:
    """Before anything is created: a host:port address must at least accept a TCP connection."""
    address = os.environ.get("LP_RAY_ADDRESS", cluster.address)
    if address not in ("local", "auto"):
        check_port(address)


def check_port(address: str, timeout: float = 5.0) -> None:
    """ray.init retries an unreachable GCS for a long time; a plain TCP connect says it in seconds."""
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise LpRayError(f"Ray address {address!r} is not 'local', 'auto' or host:port")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise LpRayError(f"cannot reach the Ray cluster at {address!r}: {e.strerror or e}") from None


def check_storage(cluster: ClusterSpec, uri: str) -> None:
    """A node-local run directory on a multi-node cluster would scatter tickets over machines that
    cannot read each other's disks: refuse it up front unless the spec says the path is shared."""
    import ray

    if "://" in uri or cluster.shared_storage:
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) > 1:
        raise LpRayError(
            f"storage_path {cluster.storage_path!r} is a node-local path but the Ray cluster has {len(nodes)} nodes: "
            "use s3://... (with storage_endpoint for S3-compatible servers), or an NFS mount present on every node "
            "and set shared_storage: true in the cluster spec"
        )
