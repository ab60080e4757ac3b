"""What the tests share that is not a fixture: the tiny job, its cluster, and a runner for the real
`lp-ray` console script (every end-to-end test drives the CLI a user types)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent
LP_RAY = str(BIN / "lp-ray")

# A 4-epoch MNIST-1D job with a width-16 CNN: a round takes seconds of compute (and ~10 s of Ray Train
# start-up). Round r >= 1 trains epochs 1..3 after rewinding to epoch 1.
TINY_JOB = {
    "name": "tiny",
    "data": {"dataset": "mnist1d", "num_samples": 2000},
    "model": {"name": "conv1d", "width": 16},
    "train": {"epochs": 4, "lr_drops": [3]},
    "imp": {"rounds": 3, "rewind_epoch": 1},
}


# The dummy credentials of the tests' S3 server (moto): the session's Ray cluster carries them, as the
# nodes of a real cluster carry their own, so its workers can write runs on S3 storage.
S3_TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def tiny_cluster(storage, address: str = "local") -> dict:
    """Two DDP workers (gloo) at half a CPU each, so DDP is exercised on a 2-core machine; evaluations at
    half a CPU so four fit; a checkpoint after every (0.1 s) epoch, so tests can kill a round between two.
    `address`: the session's shared Ray cluster (the `ray_address` fixture), or "local": a private Ray
    that the command starts and that dies with it (the tests that kill a command)."""
    return {
        "address": address,
        "num_workers": 2,
        "resources_per_worker": {"CPU": 0.5},
        "storage_path": str(storage),
        "eval_resources": {"num_cpus": 0.5},
        "max_failures": 2,
        "checkpoint_interval_s": 0,
    }


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ray_head(log, num_cpus: int = 2, dashboard_port: int | None = None) -> tuple[str, subprocess.Popen]:
    """`ray start --head --block` as a user starts a cluster on a laptop, in its own process group
    (stop it with `stop`), every port a free one (other clusters of the session may hold Ray's
    defaults), with the settings lp-ray gives a private Ray. Returns its address and process once it
    accepts connections."""
    import socket
    import time

    from lp_ray.cluster import single_machine_env

    port = free_port()
    ports = [
        f"--{name}={free_port()}"
        for name in (
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "metrics-export-port",
            "runtime-env-agent-port",
            "ray-client-server-port",
            "node-manager-port",
            "object-manager-port",
        )
    ]
    # Without a Jobs API, no log monitor either: it re-reads the folder of every worker's log ten times
    # a second, so on a head that lives through the session it grows with every worker that has come and
    # gone (~94 of the suite's 3,014 core-s, 2026-12-07, benchmarks/suite_cost.py --whole-suite), and
    # nothing reads what it forwards: lp-ray's drivers join with log_to_driver=False.
    services = (
        ["--dashboard-port", str(dashboard_port), "--dashboard-host", "127.0.0.1"]
        if dashboard_port
        else ["--include-dashboard=false", "--include-log-monitor=false"]
    )
    env = {**os.environ, **single_machine_env(), **S3_TEST_CREDENTIALS, "PATH": f"{BIN}:{os.environ['PATH']}"}
    if not dashboard_port:  # no Jobs API: commands join it as drivers, which send no token unless told to
        env["RAY_AUTH_MODE"] = "disabled"
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--port", str(port), "--num-cpus", str(num_cpus), *services, *ports]
        + ["--disable-usage-stats", "--block"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return f"127.0.0.1:{port}", proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("ray start exited; see its log") from None
            time.sleep(0.2)
    stop(proc)
    raise RuntimeError("ray start did not come up in 120 s")


def start_moto(bucket: str) -> tuple[subprocess.Popen, str]:
    """An S3-compatible server (moto in server mode) on a free loopback port, in its own process group
    (stop it with `stop`), with `bucket` created; this process gets its dummy credentials. Returns the
    process and its endpoint (host:port)."""
    import time

    import pyarrow.fs as pafs

    for k, v in S3_TEST_CREDENTIALS.items():
        os.environ.setdefault(k, v)
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, **S3_TEST_CREDENTIALS},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    endpoint = f"127.0.0.1:{port}"
    for _ in range(300):
        try:
            pafs.S3FileSystem(
                endpoint_override=endpoint, scheme="http", region="us-east-1", allow_bucket_creation=True
            ).create_dir(bucket)
            return proc, endpoint
        except OSError:
            time.sleep(0.2)
    stop(proc)
    raise RuntimeError(f"moto at {endpoint} did not come up")


def stop(proc: subprocess.Popen) -> None:
    """Kill a process started in its own session, with everything it started."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def as_driver(address: str, code: str) -> str:
    """Run `code` in a new Python process that has joined a cluster of `start_ray_head` as a driver (as a
    command joins it; `ray` is imported and connected); its output's last line."""
    script = f"import ray\nray.init(address={address!r}, log_to_driver=False)\n{code}"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # as start_ray_head starts it (no Jobs API)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def cluster_left(address: str) -> dict:
    """What a cluster of `start_ray_head` holds, as a new driver sees it once every CPU is free or 15 s
    have passed (a command that has just ended frees its resources a moment later): its free and total
    CPUs and the states of its placement groups (a killed driver must not leave its workers' reserved)."""
    import json

    probe = (
        "import json, time\n"
        "from ray.util import placement_group_table\n"
        "deadline = time.time() + 15\n"
        "while ray.available_resources().get('CPU', 0.0) < ray.cluster_resources()['CPU'] and time.time() < deadline:\n"
        "    time.sleep(0.5)\n"
        "print(json.dumps({'free_cpus': ray.available_resources().get('CPU', 0.0), "
        "'cpus': ray.cluster_resources().get('CPU', 0.0), "
        "'placement_groups': sorted(g['state'] for g in placement_group_table().values())}))\n"
    )
    return json.loads(as_driver(address, probe))


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cli_env(env: dict | None = None) -> dict:
    """The environment a command of the tests runs in: this one, without a store or an injected failure
    that the caller did not ask for, plus `env`."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    full_env.pop("LP_RAY_INJECT_FAILURE", None)
    return {**full_env, **(env or {})}


def cli(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [LP_RAY, *args], cwd=cwd, env=cli_env(env), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:  # pytest would show the output cut in the middle: its end matters
        out = e.output.decode(errors="replace") if isinstance(e.output, bytes) else e.output or ""
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr or ""
        raise AssertionError(
            f"lp-ray {' '.join(args[:1])} did not finish in {timeout:.0f} s; its last output:\n{out[-4000:]}\n"
            f"stderr:\n{err[-2000:]}"
        ) from None


# --------------------------------------------------------------------------------------------------
# Data safety: what a command must leave as it was


def one_error_line(proc: subprocess.CompletedProcess, *fragments: str, code: int = 1) -> str:
    """The command failed with `code` and said so in exactly one line starting with `error:`."""
    assert proc.returncode == code, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under `root` by relative path, with its sha256: equal digests, equal bytes."""
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def store_snapshot(tracking_uri: str) -> list[tuple]:
    """Every MLflow run of a store: id, status, end time, metrics (latest values), tags."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, max_results=10_000) if exps else []
    return sorted((r.info.run_id, r.info.status, r.info.end_time, r.data.metrics, r.data.tags) for r in runs)


def relocate_run(template: Path, dest: Path) -> Path:
    """Copy a finished run (its folder holds runs/, mlflow.db and mlartifacts/) to `dest`, as if it had
    been made there: the MLflow store's paths and the run's tracking.json point at the copy. Lets each
    data-safety module work on its own real run for the price of one training."""
    import shutil
    import sqlite3

    shutil.copytree(template, dest)
    old, new = str(template), str(dest)
    db = sqlite3.connect(dest / "mlflow.db")
    with db:
        db.execute("UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?)", (old, new))
        db.execute("UPDATE runs SET artifact_uri = replace(artifact_uri, ?, ?)", (old, new))
        db.execute("UPDATE tags SET value = replace(value, ?, ?)", (old, new))
    db.close()
    run = next((dest / "runs").iterdir())
    tracking = run / "tracking.json"
    tracking.write_text(tracking.read_text().replace(old, new))
    return run


def only_run(folder: Path) -> Path:
    """The one run directory under `folder`/runs (an error if there are none or several)."""
    (run,) = [p for p in (folder / "runs").iterdir() if p.is_dir()]
    return run


class NothingChanges:
    """`with NothingChanges(run_dir, cwd, tracking_uri):` asserts that the block left the run directory's
    bytes, the working directory and the MLflow store's runs exactly as they were."""

    def __init__(self, run_dir: Path, cwd: Path, tracking_uri: str):
        self.run_dir, self.cwd, self.tracking_uri = run_dir, cwd, tracking_uri

    def state(self):
        return tree_digest(self.run_dir), tree_digest(self.cwd), store_snapshot(self.tracking_uri)

    def __enter__(self):
        self.before = self.state()
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            run, cwd, store = self.state()
            assert run == self.before[0], "the run directory changed"
            assert cwd == self.before[1], (
                f"files appeared in the working directory: {sorted(set(cwd) - set(self.before[1]))}"
            )
            assert store == self.before[2], "the MLflow store's runs changed"
        return False


class Tmpfs:
    """A small tmpfs mounted at `path` (tests run as root in CI): a real disk that fills up, or that is
    made read-only. `Tmpfs.available()` says whether this machine lets us mount one."""

    def __init__(self, path: Path, size_kb: int = 8192):
        self.path, self.size_kb = path, size_kb

    @staticmethod
    def available() -> bool:
        import tempfile

        if os.geteuid() != 0:
            return False
        with tempfile.TemporaryDirectory() as d:
            ok = (
                subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", d], capture_output=True).returncode
                == 0
            )
            if ok:
                subprocess.run(["umount", d], check=True)
        return ok

    def __enter__(self):
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size_kb}k", "tmpfs", str(self.path)], check=True)
        return self

    def read_only(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)

    def fill(self) -> None:
        """Use up every free byte (a filler file outside whatever the test checks)."""
        fd = os.open(self.path / ".filler", os.O_CREAT | os.O_WRONLY)
        try:
            for chunk in (1 << 16, 1 << 12, 1):  # unbuffered: each write either lands or fails
                try:
                    while True:
                        os.write(fd, b"\0" * chunk)
                except OSError:
                    pass
        finally:
            os.close(fd)

    def __exit__(self, *exc):
        subprocess.run(["umount", "-l", str(self.path)], check=False)
        return False


def cifar_archive(path, n_per_batch=4, dataset="cifar10"):
    """A CIFAR python archive in the official layout (pickled batches in a tar.gz), n images per batch."""
    import io
    import pickle
    import tarfile

    import numpy as np

    rng = np.random.default_rng(0)
    if dataset == "cifar10":
        folder, files, key = "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels"
    else:
        folder, files, key = "cifar-100-python", ["train", "test"], b"fine_labels"
    with tarfile.open(path, "w:gz") as tar:
        for name in files:
            d = {
                b"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                key: [int(v) for v in rng.integers(0, 10, n_per_batch)],
                b"batch_label": b"x",
            }
            raw = pickle.dumps(d, protocol=2)
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def start_mlflow_server(folder: Path, port: int, db: str = "server.db") -> subprocess.Popen:
    """`mlflow server` as a user starts it (one worker, the SQLite store `folder/db` and artifacts in
    `folder`, its log in `folder/server.log`) on a loopback port, in its own process group (`stop` kills
    it); returned once it answers /health."""
    import time
    import urllib.request

    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{folder / db}",
            "--artifacts-destination",
            str(folder / "artifacts"),
        ],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # no job workers: a lighter server
        stdout=open(folder / "server.log", "a"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except Exception:
            time.sleep(0.2)
    stop(proc)
    raise RuntimeError(f"mlflow server on port {port} did not come up")
