"""`--submit`, `lp-ray status`, `lp-ray logs`: the same commands sent to a cluster through the Ray Jobs
API, so a laptop can start a long IMP run and disconnect.

The submission id is derived from the run hash (`lp-ray-<command>-<job>-<hash>`): submitting the same
job again finds the first submission instead of starting a second one. A failed or stopped submission
is replaced, and the rerun resumes from the run directory like any rerun.
"""

from __future__ import annotations

import shlex

from lp_ray.errors import LpRayError
from lp_ray.spec import ClusterSpec

EXCLUDES = [
    ".venv",
    ".git",
    "runs",
    "mlflow.db",
    "mlflow.db.lock",
    "mlartifacts",
    "mlruns",
    "benchmarks/out",
    "data",
    "**/__pycache__",
]


def submission_id(command: str, run: str, search: str | None = None) -> str:
    """`lp-ray-<command>-<job>-<hash>` (or, for a search, `lp-ray-pool-<run folder>-<search name>`): the
    same work submitted twice gets the same id, so the second submission finds the first."""
    if search is None:
        return f"lp-ray-{command}-{run}"
    folder = run.partition("?")[0].rstrip("/").rsplit("/", 1)[-1]  # a path or URI's last component
    return f"lp-ray-{command}-{folder}-{search}"


def job_submission_id(command: str, job) -> str:
    """The submission id of `imp` or `run` of a (checked) job: named for its run."""
    from lp_ray.spec import run_name

    return submission_id(command, run_name(job))


def search_submission_id(run_dir: str, method: str | None, search: str | None, name: str | None) -> str:
    """The submission id of `pool` on a run: named for the run's folder and the search's (default) name."""
    from lp_ray.spec import PoolSpec

    default = PoolSpec(method=method or "interpolation", search=search or "exact").default_name()
    return submission_id("pool", run_dir, name or default)


def check_submittable(cluster: ClusterSpec) -> None:
    """A submitted job runs in a temporary copy of this directory on the head node: a relative storage
    path would put the run directory there, and it would vanish with the job."""
    import os

    if "://" not in cluster.storage_path and not os.path.isabs(cluster.storage_path):
        raise LpRayError(
            f"--submit needs storage the cluster shares (s3://... or an absolute NFS path); "
            f"storage_path {cluster.storage_path!r} is relative"
        )


def dashboard_address(cluster: ClusterSpec) -> str:
    if cluster.dashboard_address:
        return cluster.dashboard_address
    if cluster.address in ("local", "auto"):
        return "http://127.0.0.1:8265"
    return f"http://{cluster.address.rpartition(':')[0]}:8265"


def job_client(cluster: ClusterSpec):
    from lp_ray.cluster import check_port, use_auth_token_if_present

    use_auth_token_if_present()  # before Ray is imported: it reads the auth mode once
    from ray.job_submission import JobSubmissionClient

    address = dashboard_address(cluster)
    check_port(address.split("://", 1)[-1].rstrip("/"))
    try:
        return JobSubmissionClient(address)
    except Exception as e:
        raise LpRayError(f"Ray Jobs API at {address} is not usable: {str(e).strip().splitlines()[0]}") from None


def submit(argv: list[str], submission_id: str, cluster: ClusterSpec) -> tuple[str, str]:
    """Submit `lp-ray <argv>` (without --submit) to the cluster; returns (submission id, status)."""
    client = job_client(cluster)
    entrypoint = "lp-ray " + shlex.join(argv)
    existing = _status(client, submission_id)
    if existing in ("PENDING", "RUNNING"):
        return submission_id, f"already submitted ({existing})"
    if existing == "SUCCEEDED" and client.get_job_info(submission_id).entrypoint == entrypoint:
        return submission_id, "already submitted (SUCCEEDED)"
    if existing is not None:
        # FAILED, STOPPED, or a finished run asked for more (e.g. --rounds): replace it; the rerun resumes.
        client.delete_job(submission_id)
    _submit_when_ready(
        client, entrypoint=entrypoint, submission_id=submission_id, runtime_env=submission_runtime_env(cluster)
    )
    return submission_id, "submitted"


def submission_runtime_env(cluster: ClusterSpec) -> dict:
    """The submitted command's own environment. The job runs on the head node: it joins the cluster it
    runs in, whatever address the spec names. This directory (spec files, relative paths, a job's own
    plugin modules) travels with the job; outputs never live in it. The cluster spec's runtime_env
    applies to the command itself too, so a plugin package it installs (`pip`) is there for the
    command's driver, which resolves the job's names, as for its workers."""
    own = cluster.runtime_env
    env = {k: v for k, v in own.items() if k not in ("working_dir", "excludes", "env_vars")}
    env["env_vars"] = {**own.get("env_vars", {}), "LP_RAY_ADDRESS": "auto"}
    env["working_dir"] = "."
    env["excludes"] = [*EXCLUDES, *own.get("excludes", [])]
    return env


def _submit_when_ready(client, **kwargs) -> None:
    """A freshly started head answers HTTP before its job agent is up ("No available agent"): wait for it."""
    import time

    for attempt in range(20):
        try:
            client.submit_job(**kwargs)
            return
        except RuntimeError as e:
            if "No available agent" not in str(e) or attempt == 19:
                raise LpRayError(f"Ray Jobs API refused the submission: {str(e).strip().splitlines()[0]}") from None
            time.sleep(3)


def _status(client, submission_id: str) -> str | None:
    try:
        return str(client.get_job_status(submission_id).value)
    except RuntimeError:  # the Jobs API answers "does not exist" with a RuntimeError
        return None


def status(submission_id: str, cluster: ClusterSpec) -> str:
    client = job_client(cluster)
    s = _status(client, submission_id)
    if s is None:
        raise LpRayError(f"no submission {submission_id!r} on {dashboard_address(cluster)}")
    return s


def logs(submission_id: str, cluster: ClusterSpec) -> str:
    status(submission_id, cluster)
    return job_client(cluster).get_job_logs(submission_id)
