"""Real cluster components on loopback: a 3-node Ray cluster (ray.cluster_utils), an S3-compatible
server (moto in server mode), an `mlflow server`. Every process is started in its own session and
killed by process group."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import (
    BIN,
    TINY_JOB,
    as_driver,
    cli,
    free_port,
    only_run,
    start_mlflow_server,
    start_ray_head,
    stop,
    write_yaml,
)
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def wait_http(url: str, timeout: float = 60) -> None:
    import urllib.error
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:  # it answers (e.g. 401 without a token): it is up
            return
        except Exception:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up")


def start(args, env=None, log=None):
    return subprocess.Popen(
        args,
        env={**os.environ, **(env or {})},
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    port = free_port()
    proc = start([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], S3_ENV)
    try:
        wait_http(f"http://127.0.0.1:{port}/")
        yield f"127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    port = free_port()
    proc = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"), port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def make_bucket(endpoint: str, name: str) -> None:
    import pyarrow.fs as pafs

    for k, v in S3_ENV.items():
        os.environ.setdefault(k, v)
    pafs.S3FileSystem(
        endpoint_override=endpoint, scheme="http", region="us-east-1", allow_bucket_creation=True
    ).create_dir(name)


def test_s3_storage_and_mlflow_server_full_run(tmp_path, s3_server, mlflow_server):
    make_bucket(s3_server, "lp-ray-test")
    job = write_yaml(tmp_path / "job.yaml", {**TINY_JOB, "name": "s3job", "imp": {"rounds": 2, "rewind_epoch": 1}})
    cluster = write_yaml(
        tmp_path / "cluster.yaml",
        {
            # a private Ray: its workers get the S3 credentials of this command's environment, as the
            # nodes of a real cluster have their own
            "storage_path": "s3://lp-ray-test/runs",
            "storage_endpoint": f"http://{s3_server}",
            "storage_region": "us-east-1",
            "tracking_uri": mlflow_server,
        },
    )
    proc = cli("run", "--job", str(job), "--cluster", str(cluster), cwd=tmp_path, env=S3_ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()  # nothing local
    uri = next(l.split(": ", 1)[1].strip() for l in proc.stdout.splitlines() if l.startswith("run directory: "))
    assert uri.startswith("s3://lp-ray-test/runs/s3job-") and f"endpoint_override={s3_server}" in uri

    # Tickets and pooled networks are readable from the bucket afterwards, by any process.
    from lp_ray.store import RunDir, finished_rounds, read_ticket

    os.environ.update(S3_ENV)
    run = RunDir(uri)
    assert finished_rounds(run) == [0, 1]
    state, mask = read_ticket(run, 1)
    assert sum(int(m.sum()) for m in mask.values()) == 1292
    assert run.exists("pool/interpolation/target_01.safetensors") and run.exists("report.png")
    assert any(n.startswith("checkpoint_") for n in run.list_dir("train/fit_00"))  # Ray Train's checkpoints too
    table = cli("tickets", uri, env=S3_ENV)
    assert table.returncode == 0 and table.stdout.count("ticket.safetensors") == 2
    ev = cli("eval", run.uri_of("pool/interpolation/target_01.safetensors"), env=S3_ENV)
    assert ev.returncode == 0 and "density 79.95%" in ev.stdout

    # Everything arrived at the MLflow server.
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("lp-ray/s3job")
    runs = client.search_runs([exp.experiment_id])
    kinds = sorted(r.data.tags.get("lp_ray.kind") for r in runs)
    assert kinds == ["imp", "pool:interpolation"]  # rounds and targets are steps of these runs' series
    imp = next(r for r in runs if r.data.tags["lp_ray.kind"] == "imp")
    assert len(client.get_metric_history(imp.info.run_id, "by_epoch/train_loss")) >= 6  # both rounds' epochs
    assert [m.step for m in client.get_metric_history(imp.info.run_id, "by_round/lt_test_acc")] == [0, 1]
    pool_run = next(r for r in runs if r.data.tags["lp_ray.kind"] == "pool:interpolation")
    assert {"trace.csv", "targets.csv", "targets.json", "interpolation_accuracy_vs_sparsity.png"} <= {
        a.path for a in client.list_artifacts(pool_run.info.run_id)
    }
    assert {"report/report.csv", "report/report.png"} == {
        a.path for a in client.list_artifacts(imp.info.run_id, "report")
    }
    rounds_csv = client.download_artifacts(imp.info.run_id, "rounds.csv", str(tmp_path))
    assert Path(rounds_csv).read_text().count("s3://lp-ray-test/runs/s3job-") == 2  # each ticket's place
    # The best pooled network is an MLflow model on the server, its weights' place an s3:// URI, loadable
    # with MLflow alone, and by `lp-ray eval models:/<id>`.
    (model,) = client.search_logged_models([exp.experiment_id])
    assert model.source_run_id == pool_run.info.run_id and model.tags["network_uri"].startswith("s3://")
    assert model.model_id == pool_run.data.tags["best_model_id"]
    ev = cli("eval", f"models:/{model.model_id}", "--tracking-uri", mlflow_server, env=S3_ENV)
    assert ev.returncode == 0 and model.tags["network_uri"] in ev.stdout, ev.stdout + ev.stderr
    # What a reviewer reads, through the server: names, nesting, descriptions, durations, the runs page.
    assert imp.info.run_name.startswith("IMP · seed 0 · ")
    note = imp.data.tags["mlflow.note.content"]
    assert note.startswith("**Pool verdicts**") and "- interpolation " in note and "**2 tickets**" in note
    assert "interpolation " in client.get_experiment(exp.experiment_id).tags["mlflow.note.content"]
    assert pool_run.data.tags["mlflow.parentRunId"] == imp.info.run_id
    assert pool_run.data.tags["mlflow.note.content"].startswith("**interpolation: ")
    assert {"mean_gain_pt", "targets_significantly_better", "lt_bn_control_gain_pt"} <= set(pool_run.data.metrics)
    assert [m.step for m in client.get_metric_history(pool_run.info.run_id, "by_target/mcnemar_p_holm")] == [0, 1]
    for r in runs:  # every run ended, and lasted what its work did (started when it began, not when logged)
        assert r.info.status == "FINISHED" and r.info.end_time >= r.info.start_time
    assert imp.info.end_time - imp.info.start_time > 1000  # two rounds of training
    assert pool_run.info.end_time - pool_run.info.start_time >= 1000 * pool_run.data.metrics["search_seconds"] - 1
    assert (
        f"MLflow: {mlflow_server}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning" in proc.stdout
    )


def test_missing_bucket_and_unreachable_ray(tmp_path, s3_server):
    job = write_yaml(tmp_path / "job.yaml", TINY_JOB)
    c = write_yaml(
        tmp_path / "c.yaml", {"storage_path": "s3://no-such-bucket/runs", "storage_endpoint": f"http://{s3_server}"}
    )
    proc = cli("imp", "--job", str(job), "--cluster", str(c), cwd=tmp_path, env=S3_ENV)
    assert (
        proc.returncode == 1
        and proc.stderr.strip()
        == "error: s3://no-such-bucket/runs: bucket 'no-such-bucket' does not exist; create it first"
    )

    c = write_yaml(
        tmp_path / "c2.yaml", {"address": f"127.0.0.1:{free_port()}", "storage_path": str(tmp_path / "runs")}
    )
    t0 = time.time()
    proc = cli("imp", "--job", str(job), "--cluster", str(c), cwd=tmp_path)
    assert proc.returncode == 1 and "error: cannot reach the Ray cluster at '127.0.0.1:" in proc.stderr
    assert time.time() - t0 < 30
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


MULTI_NODE = """
import json, os, subprocess, sys
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
from ray.cluster_utils import Cluster
c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
nodes = [c.add_node(num_cpus=1) for _ in range(2)]
c.wait_for_nodes()
print(json.dumps({"address": c.address}), flush=True)
sys.stdin.read()  # stay up until the test closes stdin
c.shutdown()
"""


@pytest.fixture(scope="module")
def three_node_cluster(tmp_path_factory):
    """A head without CPUs and two 1-CPU worker nodes, each a separate raylet."""
    proc = subprocess.Popen(
        [sys.executable, "-c", MULTI_NODE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        line = proc.stdout.readline()
        yield json.loads(line)["address"]
    finally:
        try:
            proc.stdin.close()
            proc.wait(timeout=60)
        except Exception:
            pass
        stop(proc)


def wait_until_cpus_free(address: str, cpus: int) -> set[str]:
    """Waits (at most 90 s) until the cluster has `cpus` CPUs free, as after a command's workers were torn
    down; returns the worker nodes' ids as the trace writes them."""
    probe = (
        "import json, time\n"
        "deadline = time.time() + 90\n"
        f"while ray.available_resources().get('CPU', 0) < {cpus} and time.time() < deadline:\n"
        "    time.sleep(0.5)\n"
        "workers = [n['NodeID'][:12] for n in ray.nodes() if n['Alive'] and n['Resources'].get('CPU', 0) > 0]\n"
        "print(json.dumps({'free': ray.available_resources().get('CPU', 0), 'workers': workers}))\n"
    )
    state = json.loads(as_driver(address, probe))
    assert state["free"] >= cpus, state
    return set(state["workers"])


TWO_ROUNDS = {**TINY_JOB, "imp": {"rounds": 2, "rewind_epoch": 1}}


def spread_over_nodes(address: str, storage) -> dict:
    """Two DDP workers on two nodes. Every node of this simulated cluster sees the same disk: a shared
    path, as NFS would be."""
    return {
        "address": address,
        "num_workers": 2,
        "placement_strategy": "STRICT_SPREAD",
        "storage_path": str(storage),
        "shared_storage": True,
    }


@pytest.fixture(scope="module")
def single_node_run(finished_template):
    """The reference for the multi-node run: the session's finished tiny run (2 DDP workers on one node; a
    worker killed once in round 1 and resumed). A two-round job is the same run (rounds are not in the run
    hash), so its rounds 0 and 1 are what the two-round job trains on one node. Only read here."""
    return only_run(finished_template)


def test_multi_node_imp_and_pool_match_single_node(tmp_path, single_node_run, three_node_cluster, tracking_uri):
    job = write_yaml(tmp_path / "job.yaml", TWO_ROUNDS)
    # A node-local path on a multi-node cluster is refused, before anything is written.
    local = write_yaml(
        tmp_path / "local.yaml",
        {"address": three_node_cluster, "num_workers": 2, "storage_path": str(tmp_path / "runs")},
    )
    proc = cli("imp", "--job", str(job), "--cluster", str(local), "--tracking-uri", tracking_uri, cwd=tmp_path)
    assert proc.returncode == 1 and "is a node-local path but the Ray cluster has 3 nodes" in proc.stderr
    assert not (tmp_path / "runs").exists()

    cluster = write_yaml(tmp_path / "cluster.yaml", spread_over_nodes(three_node_cluster, tmp_path / "runs"))
    proc = cli("imp", "--job", str(job), "--cluster", str(cluster), "--tracking-uri", tracking_uri, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = next((tmp_path / "runs").iterdir())
    assert run.name == single_node_run.name  # the same job: the same run identity
    for r in (0, 1):  # 2 DDP workers on two nodes train exactly what 2 workers on one node trained
        here = json.loads((run / "rounds" / f"round_{r:02d}" / "meta.json").read_text())
        there = json.loads((single_node_run / "rounds" / f"round_{r:02d}" / "meta.json").read_text())
        assert here["ticket_sha256"] == there["ticket_sha256"], r

    worker_nodes = wait_until_cpus_free(three_node_cluster, 2)  # the IMP's Train workers are gone
    proc = cli("pool", str(run), "--cluster", str(cluster), "--parallel-evals", "2", "--tracking-uri", tracking_uri)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 evaluation(s) in parallel" in proc.stdout
    trace = pq.read_table(run / "pool" / "interpolation" / "trace.parquet").to_pylist()
    # Evaluations ran on the worker nodes (the head has no CPU). Not asserted: that both nodes got work.
    # An evaluator gets work only once it has started, and these 24 evaluations can be over before the
    # second one's process is up on a loaded machine (CI saw all 24 on one node once).
    assert {row["node"] for row in trace} <= worker_nodes and trace
    serial = cli("pool", str(run), "--serial", "--name", "serial", "--tracking-uri", tracking_uri)
    assert serial.returncode == 0, serial.stderr

    def strip(rows):
        return sorted(
            ({k: v for k, v in r.items() if k not in ("seconds", "node")} for r in rows),
            key=lambda r: (r["target"], r["step"], r["alpha"]),
        )

    assert strip(trace) == strip(pq.read_table(run / "pool" / "serial" / "trace.parquet").to_pylist())


OWN_MODULE = """
from lp_ray.plugins import Field, register_model


@register_model("wide_cnn", fields={"channels": Field(int, 8)})
def wide_cnn(num_classes, input_shape, channels):
    import torch.nn as nn

    return nn.Sequential(
        nn.Unflatten(1, (1, input_shape[-1])), nn.Conv1d(1, channels, 5, padding=2), nn.BatchNorm1d(channels),
        nn.ReLU(), nn.AdaptiveAvgPool1d(4), nn.Flatten(), nn.Linear(4 * channels, num_classes),
    )
"""


def test_a_module_of_ones_own_reaches_every_node_from_the_drivers_folder(tmp_path, three_node_cluster, tracking_uri):
    """The plugin file exists only in the driver's working directory: Ray ships it to the Train workers
    and pool evaluators on both worker nodes, and the run directory keeps the copy later commands use."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "my_cnn.py").write_text(OWN_MODULE)
    write_yaml(
        project / "job.yaml",
        {**TWO_ROUNDS, "name": "own-cnn", "plugins": ["my_cnn"], "model": {"name": "wide_cnn", "channels": 6}},
    )
    cluster = write_yaml(project / "cluster.yaml", spread_over_nodes(three_node_cluster, tmp_path / "runs"))
    proc = cli("run", "--job", "job.yaml", "--cluster", "cluster.yaml", "--tracking-uri", tracking_uri, cwd=project)
    # Both rounds trained: STRICT_SPREAD put the two DDP workers on the two worker nodes (the head has no
    # CPU), and each built the network from the shipped module.
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = next((tmp_path / "runs").iterdir())
    assert [json.loads((run / "rounds" / f"round_{r:02d}" / "meta.json").read_text())["round"] for r in (0, 1)] == [
        0,
        1,
    ]
    assert (run / "plugins" / "my_cnn.py").read_text() == OWN_MODULE
    trace = pq.read_table(run / "pool" / "interpolation" / "trace.parquet").to_pylist()
    assert len(trace) >= 2  # the pool's evaluators (on whichever node had room then) built it too

    # The file beside the job is edited afterwards: the run keeps pooling with the code that made it.
    (project / "my_cnn.py").write_text(OWN_MODULE.replace("Field(int, 8)", "Field(int, 10)"))
    again = cli("pool", str(run), "--method", "average", "--cluster", str(cluster), "--tracking-uri", tracking_uri)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (run / "pool" / "average" / "summary.parquet").is_file()


def test_submit_through_jobs_api_is_idempotent(tmp_path, tracking_uri):
    dash = free_port()
    head_log = open(tmp_path / "head.log", "w")
    address, head = start_ray_head(head_log, dashboard_port=dash)
    try:
        wait_http(f"http://127.0.0.1:{dash}/api/version", timeout=120)
        write_yaml(tmp_path / "job.yaml", {**TINY_JOB, "name": "submitted", "imp": {"rounds": 1, "rewind_epoch": 1}})
        cluster = write_yaml(
            tmp_path / "cluster.yaml",
            {
                "address": address,
                "storage_path": str(tmp_path / "runs"),
                "dashboard_address": f"http://127.0.0.1:{dash}",
            },
        )
        args = ["imp", "--job", "job.yaml", "--cluster", "cluster.yaml", "--tracking-uri", tracking_uri, "--submit"]
        first = cli(*args, cwd=tmp_path)
        assert first.returncode == 0, first.stdout + first.stderr
        sid = first.stdout.split(":", 1)[0]
        assert sid.startswith("lp-ray-imp-submitted-") and ": submitted;" in first.stdout
        again = cli(*args, cwd=tmp_path)
        assert again.returncode == 0 and f"{sid}: already submitted (" in again.stdout

        deadline, state = time.time() + 300, ""
        while time.time() < deadline:
            state = cli("status", sid, "--cluster", str(cluster)).stdout.strip()
            if state.endswith(("SUCCEEDED", "FAILED", "STOPPED")):
                break
            time.sleep(2)
        logs = cli("logs", sid, "--cluster", str(cluster)).stdout
        assert state == f"{sid}: SUCCEEDED", logs
        assert "round  0  trained" in logs
        assert (next((tmp_path / "runs").iterdir()) / "rounds" / "round_00" / "meta.json").exists()

        # (in a fresh process: this one imported Ray before token auth was on)
        code = (
            f"from ray.job_submission import JobSubmissionClient as C; "
            f"print([j.submission_id for j in C('http://127.0.0.1:{dash}').list_jobs()])"
        )
        listed = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "RAY_AUTH_MODE": "token"}
        )
        assert listed.stdout.strip() == str([sid]), listed.stderr  # the second submission started nothing
        assert cli(*args, cwd=tmp_path).stdout.startswith(f"{sid}: already submitted (SUCCEEDED)")
        missing = cli("status", "nope", "--cluster", str(cluster))
        assert missing.returncode == 1 and "no submission 'nope'" in missing.stderr
    finally:
        stop(head)
