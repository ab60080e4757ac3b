"""End to end, real Ray Train and MLflow: IMP of the tiny job with 2 DDP workers."""

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers import LP_RAY, TINY_JOB, cli, tiny_cluster, write_yaml
from mlflow.tracking import MlflowClient

from lp_ray.store import decode_weights

pytestmark = pytest.mark.e2e

CONV_WEIGHTS = 16 * 1 * 5 + 16 * 16 * 3 + 16 * 16 * 3  # width-16 conv1d: 1616 prunable weights


def expected_survivors(rounds):
    n = [CONV_WEIGHTS]
    for _ in range(rounds - 1):
        n.append(n[-1] - math.ceil(0.2 * n[-1]))
    return n


def ticket(run_dir, r):
    path = run_dir / "rounds" / f"round_{r:02d}" / "ticket.safetensors"
    return decode_weights(path.read_bytes(), str(path))


def meta(run_dir, r):
    return json.loads((run_dir / "rounds" / f"round_{r:02d}" / "meta.json").read_text())


def test_three_tickets_at_80_percent_steps_with_pruned_weights_exactly_zero(base_run):
    run = base_run["run"]
    assert sorted(p.name for p in (run / "rounds").iterdir()) == ["round_00", "round_01", "round_02"]
    survivors = []
    prev_mask = None
    for r in range(3):
        state, mask = ticket(run, r)
        n = sum(int(m.sum()) for m in mask.values())
        survivors.append(n)
        for name, m in mask.items():
            # after DDP training, every pruned weight is exactly zero
            assert torch.all(state[name][m == 0] == 0.0)
            if prev_mask is not None:
                assert torch.all(m <= prev_mask[name])  # IMP only removes weights
        prev_mask = mask
        assert meta(run, r)["density"] == pytest.approx(n / CONV_WEIGHTS)
    assert survivors == expected_survivors(3) == [1616, 1292, 1033]
    assert [round(100 * meta(run, r)["density"]) for r in range(3)] == [100, 80, 64]
    assert all(0.2 < meta(run, r)["test_acc"] <= 1.0 for r in range(3))
    assert (run / "rewind.safetensors").exists() and (run / "rounds.parquet").exists()


def test_injected_worker_failure_resumes_from_last_epoch_checkpoint(base_run):
    run = base_run["run"]
    assert (run / "rounds" / "round_01" / "injected_failure_2").exists()
    starts = meta(run, 1)["starts"]
    # first start at the rewind epoch; the restart picks up after a saved epoch, not from scratch
    assert starts[0] == 1 and len(starts) == 2 and starts[1] > 1
    history = json.loads((run / "rounds" / "round_01" / "history.json").read_text())
    assert [row["epoch"] for row in history["epochs"]] == [1, 2, 3]
    assert meta(run, 0)["starts"] == [0] and meta(run, 2)["starts"] == [1]


def test_mlflow_one_imp_run_with_every_round_as_a_step(base_run, tmp_path):
    client = MlflowClient(base_run["tracking_uri"])
    exp = client.get_experiment_by_name("lp-ray/tiny")
    run_hash = meta(base_run["run"], 0)["run_hash"]
    parents = client.search_runs(
        [exp.experiment_id],
        f"tags.`lp_ray.kind` = 'imp' and tags.`lp_ray.run_hash` = '{run_hash}' "
        f"and tags.`lp_ray.run_dir` = '{base_run['run']}'",
    )
    assert len(parents) == 1
    imp = parents[0].info.run_id
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{imp}'")
    assert all(c.data.tags["lp_ray.kind"].startswith("pool:") for c in children)  # its searches; no run per round
    stored = json.loads((base_run["run"] / "tracking.json").read_text())
    assert stored["imp_run_id"] == imp
    history = {m.step: m.value for m in client.get_metric_history(imp, "by_round/lt_test_acc")}
    seconds = {m.step: m.value for m in client.get_metric_history(imp, "by_round/round_seconds")}
    assert sorted(history) == [0, 1, 2]
    for r in range(3):
        m = meta(base_run["run"], r)
        assert history[r] == round(100 * m["test_acc"], 2)  # percent, 2 decimals
        assert seconds[r] == round(m["seconds"], 1)
    # every round's epochs on one axis: step = round x epochs + epoch (round 0 from 0, later ones from the rewind)
    steps = sorted(h.step for h in client.get_metric_history(imp, "by_epoch/val_acc"))
    assert steps == [0, 1, 2, 3, 5, 6, 7, 9, 10, 11]
    rounds_csv = Path(client.download_artifacts(imp, "rounds.csv", str(tmp_path))).read_text()
    for r in range(3):
        assert (
            meta(base_run["run"], r)["ticket_sha256"] in rounds_csv
            and f"round_{r:02d}/ticket.safetensors" in rounds_csv
        )


def test_tickets_table(base_run):
    proc = cli("tickets", str(base_run["run"]))
    assert proc.returncode == 0
    rows = [l for l in proc.stdout.splitlines() if "ticket.safetensors" in l]
    assert len(rows) == 3 and "79.95" in rows[1] and "63.92" in rows[2]


def _checkpoints(run_dir, r):
    """Round r's epoch checkpoints, in any of the run's Ray Train fits (train/fit_NN/checkpoint_*)."""
    found = []
    for state in run_dir.glob("train/fit_*/checkpoint_*/state.json"):
        try:
            if json.loads(state.read_text())["round"] == r:
                found.append(state.parent)
        except (ValueError, KeyError, OSError):
            continue  # being written
    return found


def test_driver_sigkill_in_round_2_then_rerun_resumes_and_extends(tmp_path, tracking_uri, ray_address):
    # 30 short epochs: round 2 must still be training when the test sees its second checkpoint.
    job_spec = {**TINY_JOB, "name": "killed", "train": {"epochs": 30, "lr_drops": [20]}}
    job = write_yaml(tmp_path / "job.yaml", job_spec)
    cluster = write_yaml(tmp_path / "cluster.yaml", tiny_cluster(tmp_path / "runs"))
    args = [LP_RAY, "imp", "--job", str(job), "--cluster", str(cluster), "--tracking-uri", tracking_uri]
    env = {k: v for k, v in os.environ.items() if k not in ("LP_RAY_INJECT_FAILURE", "MLFLOW_TRACKING_URI")}
    proc = subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    run_dir = None
    deadline = time.time() + 400
    try:
        while time.time() < deadline and proc.poll() is None:
            runs = (
                [p for p in (tmp_path / "runs").glob("killed-*") if p.is_dir()] if (tmp_path / "runs").exists() else []
            )
            if runs and len(_checkpoints(runs[0], 2)) >= 2:
                run_dir = runs[0]
                break
            time.sleep(0.05)
        assert run_dir is not None, "round 2 never wrote two checkpoints"
        proc.send_signal(signal.SIGKILL)  # the driver dies without any cleanup
        proc.wait()
        time.sleep(1)
    finally:
        # and so does the rest of that machine's Ray session (raylet, GCS, workers)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not (run_dir / "rounds" / "round_02" / "meta.json").exists()
    # Rounds 0-2 ran in one Ray Train run: one fit folder, round 2's checkpoints in it.
    assert sorted(p.name for p in (run_dir / "train").iterdir()) == ["fit_00"]
    before = {
        r: (
            (run_dir / "rounds" / f"round_{r:02d}" / "ticket.safetensors").stat().st_mtime_ns,
            meta(run_dir, r)["ticket_sha256"],
        )
        for r in (0, 1)
    }

    # The rerun may run anywhere: on the session's cluster, not the dead private Ray. It also extends the
    # run by one round (--rounds 4): the killed round resumes and the new one trains in the same fit,
    # reusing the finished tickets.
    cluster = write_yaml(tmp_path / "shared.yaml", tiny_cluster(tmp_path / "runs", ray_address))
    specs = ["--job", str(job), "--cluster", str(cluster), "--tracking-uri", tracking_uri]
    again = cli("imp", *specs, "--rounds", "4", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "round  0  done already" in again.stdout and "round  1  done already" in again.stdout
    assert again.stdout.count("done already") == 2
    assert "round  2  trained" in again.stdout and "round  3  trained" in again.stdout
    for r in (0, 1):  # not retrained
        path = run_dir / "rounds" / f"round_{r:02d}" / "ticket.safetensors"
        assert (path.stat().st_mtime_ns, meta(run_dir, r)["ticket_sha256"]) == before[r]
    starts = meta(run_dir, 2)["starts"]
    assert len(starts) == 2 and starts[0] == 1 and starts[1] > 1  # resumed mid-round, not from the rewind point
    assert sorted(p.name for p in (run_dir / "train").iterdir()) == ["fit_00", "fit_01"]  # a new fit resumed it
    assert meta(run_dir, 3)["density"] == pytest.approx(expected_survivors(4)[3] / CONV_WEIGHTS)
    assert meta(run_dir, 3)["starts"] == [1]  # the new round: from the rewind point

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("lp-ray/killed")
    all_runs = client.search_runs([exp.experiment_id])
    (parent,) = all_runs  # one run, every round once
    assert parent.data.tags.get("lp_ray.kind") == "imp"
    steps = [m.step for m in client.get_metric_history(parent.info.run_id, "by_round/lt_test_acc")]
    assert steps == [0, 1, 2, 3]


def test_a_failed_round_ends_the_run_with_one_line_and_nothing_after_it(tmp_path, tracking_uri, ray_address):
    """Round 1 fails for good (no restarts allowed) inside the one Ray Train run: the command ends with a
    one-line error naming the round, round 0's ticket stays, and no later round starts."""
    job_spec = {**TINY_JOB, "name": "failed", "train": {"epochs": 30, "lr_drops": [20]}}
    job = write_yaml(tmp_path / "job.yaml", job_spec)
    cluster = write_yaml(tmp_path / "cluster.yaml", {**tiny_cluster(tmp_path / "runs", ray_address), "max_failures": 0})
    proc = cli(
        "imp",
        "--job",
        str(job),
        "--cluster",
        str(cluster),
        "--tracking-uri",
        tracking_uri,
        cwd=tmp_path,
        env={"LP_RAY_INJECT_FAILURE": "1:20"},
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "error: round 1 failed after 0 restarts" in proc.stderr and "Traceback" not in proc.stderr
    run_dir = next((tmp_path / "runs").glob("failed-*"))
    assert (run_dir / "rounds" / "round_00" / "meta.json").exists()
    assert (run_dir / "rounds" / "round_01" / "injected_failure_20").exists()
    assert not (run_dir / "rounds" / "round_01" / "meta.json").exists()
    assert not (run_dir / "rounds" / "round_02").exists()  # its mask was never written
    assert _checkpoints(run_dir, 1) and not _checkpoints(run_dir, 2)


def test_ctrl_c_stops_at_once_and_the_rerun_resumes(tmp_path, tracking_uri, ray_address):
    """Fits run in driver threads: Ctrl-C (SIGINT) must still end the command promptly, with exit 130
    and the resume hint, and a rerun finishes the job from the finished rounds."""
    job_spec = {
        **TINY_JOB,
        "name": "interrupted",
        "train": {"epochs": 30, "lr_drops": [20]},
        "imp": {"rounds": 2, "rewind_epoch": 1},
    }
    job = write_yaml(tmp_path / "job.yaml", job_spec)
    cluster = write_yaml(tmp_path / "cluster.yaml", tiny_cluster(tmp_path / "runs"))
    args = [LP_RAY, "imp", "--job", str(job), "--cluster", str(cluster), "--tracking-uri", tracking_uri]
    env = {k: v for k, v in os.environ.items() if k not in ("LP_RAY_INJECT_FAILURE", "MLFLOW_TRACKING_URI")}
    proc = subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            runs = list((tmp_path / "runs").glob("interrupted-*")) if (tmp_path / "runs").exists() else []
            if runs and _checkpoints(runs[0], 0):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be interrupted: " + proc.stderr.read()[-1500:]
        proc.send_signal(signal.SIGINT)
        t0 = time.time()
        out, err = proc.communicate(timeout=120)
        # Not a hang: the fit runs in a driver thread, and a driver that waited for it would not end
        # before the job did. (Ray's shutdown on a loaded 2-core machine takes up to ~30 s.)
        assert time.time() - t0 < 90
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 130, out + err
    assert "interrupted: finished work is kept; rerun the same command to resume" in err, out + err
    cluster = write_yaml(tmp_path / "shared.yaml", tiny_cluster(tmp_path / "runs", ray_address))
    again = cli("imp", "--job", str(job), "--cluster", str(cluster), "--tracking-uri", tracking_uri, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "round  1  trained" in again.stdout


def test_lr_rewind_and_finetune_keep_the_trained_weights(tmp_path, tracking_uri, ray_address):
    """imp.retrain: round 0 is the same dense training for every rule; round 1 of lr_rewind replays the
    schedule from the rewind epoch, finetune trains at the final learning rate, and each is a run of its
    own (the rule is in the run hash, the default is not)."""
    cluster = write_yaml(tmp_path / "cluster.yaml", {**tiny_cluster(tmp_path / "runs", ray_address), "num_workers": 1})
    lrs, tickets = {}, {}
    for retrain in ("lr_rewind", "finetune"):
        spec = {**TINY_JOB, "name": "retrain", "imp": {**TINY_JOB["imp"], "rounds": 2, "retrain": retrain}}
        job = write_yaml(tmp_path / f"{retrain}.yaml", spec)
        proc = cli("imp", "--job", str(job), "--cluster", str(cluster), "--tracking-uri", tracking_uri, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        run = next(l.split(": ", 1)[1] for l in proc.stdout.splitlines() if l.startswith("run directory: "))
        history = json.loads((Path(run) / "rounds" / "round_01" / "history.json").read_text())
        lrs[retrain] = [round(row["lr"], 6) for row in history["epochs"]]
        tickets[retrain] = [meta(Path(run), r)["ticket_sha256"] for r in (0, 1)]
    assert lrs == {"lr_rewind": [0.1, 0.1, 0.01], "finetune": [0.01, 0.01, 0.01]}  # epochs 1-3, drop at 3
    assert tickets["lr_rewind"][0] == tickets["finetune"][0]  # the same round 0
    assert tickets["lr_rewind"][1] != tickets["finetune"][1]
    assert len(list((tmp_path / "runs").glob("retrain-*"))) == 2
