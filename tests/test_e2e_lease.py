"""Two commands on one run, as a new user starts them: `lp-ray run` twice on the same storage, the
second while the first trains. The second waits (one line saying for whom), then finds nothing to do;
a third with --no-wait stops with one error line. Nothing is trained twice, MLflow holds one run per
round, search and target, no lease is left, and the tickets and pooled networks are a solo run's bytes."""

import os
import signal
import subprocess
import time

import pytest
from helpers import LP_RAY, TINY_JOB, cli, one_error_line, only_run, tiny_cluster, tree_digest, write_yaml
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e


def start(args, cwd):
    return subprocess.Popen(
        [LP_RAY, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def stop_outside_sqlite(proc: subprocess.Popen, db, timeout: float = 60) -> None:
    """SIGSTOP `proc` at a moment when it holds no lock on the SQLite file `db`: stopped inside a
    transaction, it would keep every other command out of the store ("database is locked"). SQLite's
    locks are POSIX locks, which /proc/locks lists with the holder's pid and the file's inode."""
    inode = f":{db.stat().st_ino} "
    deadline = time.time() + timeout
    while True:
        os.kill(proc.pid, signal.SIGSTOP)
        # the signal is delivered asynchronously; a process that has exited (Z) is left to the caller's checks
        while open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()[0] not in ("T", "Z"):
            time.sleep(0.01)
        with open("/proc/locks") as f:
            held = [line for line in f if line.split()[4] == str(proc.pid) and inode in line]
        if not held:
            return
        os.kill(proc.pid, signal.SIGCONT)
        assert time.time() < deadline, f"pid {proc.pid} held {db} for {timeout:.0f} s"
        time.sleep(0.05)


def networks(run_dir) -> dict[str, str]:
    """The run's tickets, masks and pooled networks (safetensors), by path, with their sha256."""
    return {k: v for k, v in tree_digest(run_dir).items() if k.endswith(".safetensors") and not k.startswith("train/")}


def test_two_runs_of_one_job_train_once(tmp_path, ray_address, finished_template):
    job = write_yaml(tmp_path / "tiny.yaml", TINY_JOB)
    cluster = write_yaml(tmp_path / "cluster.yaml", tiny_cluster(tmp_path / "runs", ray_address))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["run", "--job", str(job), "--cluster", str(cluster), "--tracking-uri", uri]
    first = start(args, tmp_path)
    deadline = time.time() + 300
    while not list((tmp_path / "runs").glob("*/lease.imp.json")):
        assert first.poll() is None and time.time() < deadline, first.communicate()
        time.sleep(0.2)
    second = start(args, tmp_path)
    # Meanwhile a third, told not to wait: one error line naming the holder; nothing of the run touched.
    # The first is held still (SIGSTOP, well inside the lease's 60 s heartbeat) while the third starts: on
    # a loaded machine the third's start-up outlasted the tiny job's IMP, and it found the rounds done.
    stop_outside_sqlite(first, tmp_path / "mlflow.db")
    try:
        third = cli("imp", *args[1:], "--no-wait", cwd=tmp_path, timeout=45)  # imp, same job and specs
    finally:
        os.kill(first.pid, signal.SIGCONT)
    line = one_error_line(third, "lease.imp.json: held by `lp-ray run --job", "--no-wait")
    assert f"pid {first.pid})" in line
    out1, err1 = first.communicate(timeout=600)
    out2, err2 = second.communicate(timeout=600)
    assert first.returncode == 0, out1 + err1
    assert second.returncode == 0, out2 + err2

    waits = [x for x in out2.splitlines() if x.startswith("waiting: ")]
    # It waited for the run, and (when the first was still pooling after) for the search: a line each.
    assert 1 <= len(waits) <= 2 and "lease.imp.json is held by `lp-ray run --job" in waits[0], out2
    assert all("lease.pool.interpolation.json is held by" in x for x in waits[1:])
    rounds = [x for x in out2.splitlines() if x.startswith("round ")]
    assert len(rounds) == 3 and all("done already" in x for x in rounds), out2  # the second trained nothing
    targets = [x for x in out2.splitlines() if x.startswith("target ")]
    assert len(targets) == 3 and all("done already" in x for x in targets), out2  # and searched nothing
    run = only_run(tmp_path)
    assert sorted(p.name for p in (run / "train").iterdir()) == ["fit_00"]  # one Ray Train run
    assert not list(run.rglob("lease.*")) and not list(run.rglob(".tmp-*"))

    solo = only_run(finished_template)
    # tickets, masks, pooled networks, and the data set, split and rewind point they came from
    assert networks(run) == networks(solo) and len(networks(run)) == 3 + 2 + 3 + 3

    client = MlflowClient(uri)
    (exp,) = [e for e in client.search_experiments() if e.name == "lp-ray/tiny"]
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    kinds = sorted(r.data.tags.get("lp_ray.kind") for r in runs)
    assert kinds == ["imp", "pool:interpolation"]
    (imp,) = [r for r in runs if r.data.tags.get("lp_ray.kind") == "imp"]
    assert [m.step for m in client.get_metric_history(imp.info.run_id, "by_round/lt_test_acc")] == [0, 1, 2]
    (search,) = [r for r in runs if r.data.tags.get("lp_ray.kind") == "pool:interpolation"]
    assert sorted(m.step for m in client.get_metric_history(search.info.run_id, "by_target/gain_pt")) == [0, 1, 2]
    assert len(client.search_logged_models([exp.experiment_id])) == 1  # the best network, once


def test_readers_never_wait_and_writers_told_not_to_wait_fail(finished):
    """While other commands hold the run's, its search's and an analysis's leases: eval, tickets and
    report run as usual (they only read); pool, imp and analyze with --no-wait are one error line each and
    leave every byte as it was; the leases are the holders' still."""
    from lp_ray import layout
    from lp_ray.lease import Lease, read_holder
    from lp_ray.store import RunDir

    run = RunDir(str(finished["run"]))
    held = [
        Lease(run, layout.lease_file(w), f"lp-ray holder {w}", say=lambda _: None)
        for w in ("imp", "pool.interpolation", "analysis.lmc")
    ]
    for lease in held:
        lease.acquire()
    try:
        before = {k: v for k, v in tree_digest(finished["run"]).items() if not k.startswith(("lease.", "report."))}
        common = {"cwd": finished["cwd"], "timeout": 120}
        uri = ["--tracking-uri", finished["tracking_uri"]]
        for args in (
            ["tickets", str(finished["run"])],
            ["eval", str(finished["run"] / "pool" / "interpolation" / "target_01.safetensors"), *uri],
            ["report", str(finished["run"]), *uri],
        ):
            proc = cli(*args, **common)
            assert proc.returncode == 0 and "waiting" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        job = finished["run"] / "job.yaml"
        cluster = ["--cluster", str(finished["cluster"])]
        for args, what in (
            (["pool", str(finished["run"]), *cluster, *uri], "lease.pool.interpolation.json"),
            (["imp", "--job", str(job), *cluster, *uri], "lease.imp.json"),
            (["analyze", "lmc", str(finished["run"]), "--serial", *uri], "lease.analysis.lmc.json"),
        ):
            proc = cli(*args, "--no-wait", **common)
            one_error_line(proc, f"{what}: held by `lp-ray holder", "--no-wait")
        after = {k: v for k, v in tree_digest(finished["run"]).items() if not k.startswith(("lease.", "report."))}
        assert after == before  # (report rewrites its own files)
        assert [read_holder(run, layout.lease_file(w)).command for w in ("imp", "pool.interpolation")] == [
            "lp-ray holder imp",
            "lp-ray holder pool.interpolation",
        ]
    finally:
        for lease in held:
            lease.release()
