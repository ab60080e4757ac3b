"""End to end, real Ray Train and MLflow: IMP with particles (imp.particles: 3) on the tiny job, two DDP
workers per particle, two particles at once on the 2-CPU cluster."""

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers import LP_RAY, TINY_JOB, cli, only_run, stop, tiny_cluster, write_yaml
from mlflow.tracking import MlflowClient

from lp_ray.store import decode_weights

pytestmark = pytest.mark.e2e

# 24 epochs, so that a particle's training lasts long enough (~3 s) to be killed in the middle of it.
JOB = {
    **TINY_JOB,
    "name": "particles",
    "train": {"epochs": 24, "lr_drops": [16]},
    "imp": {"rounds": 3, "rewind_epoch": 1, "particles": 3},
}


def round_dir(run_dir, r):
    return run_dir / "rounds" / f"round_{r:02d}"


def meta(run_dir, r):
    return json.loads((round_dir(run_dir, r) / "meta.json").read_text())


def files(run_dir) -> dict[str, bytes]:
    """Every ticket, mask and particle file of the run, by path."""
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted((run_dir / "rounds").rglob("*.safetensors"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tracking_uri, ray_address):
    """The particle job run once without interruption."""
    d = tmp_path_factory.mktemp("particles-ref")
    job = write_yaml(d / "job.yaml", JOB)
    cluster = write_yaml(d / "cluster.yaml", tiny_cluster(d / "runs", ray_address))
    proc = cli("imp", "--job", str(job), "--cluster", str(cluster), "--tracking-uri", tracking_uri, cwd=d)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = only_run(d)
    return {"dir": d, "run": run_dir, "job": job, "cluster": cluster, "stdout": proc.stdout}


def test_a_particle_round_keeps_its_particles_and_its_ticket_is_their_soup(reference):
    run = reference["run"]
    assert "3 particles per round after the first, uniform soup" in reference["stdout"]
    assert not list(round_dir(run, 0).glob("particle_*"))  # round 0, the dense network, is one network
    for r in (1, 2):
        m = meta(run, r)
        assert m["soup"] == "uniform" and [p["particle"] for p in m["particles"]] == [0, 1, 2]
        states = []
        for p in m["particles"]:
            raw = (round_dir(run, r) / f"particle_{p['particle']:02d}.safetensors").read_bytes()
            assert hashlib.sha256(raw).hexdigest() == p["sha256"] and p["in_soup"]
            record = json.loads((round_dir(run, r) / f"particle_{p['particle']:02d}.json").read_text())
            assert record["sha256"] == p["sha256"] and len(record["history"]["epochs"]) == 23
            states.append(decode_weights(raw, "particle")[0])
        assert m["epochs"] == 3 * 23  # the training compute of the round: epochs x particles
        soup, mask = decode_weights((round_dir(run, r) / "ticket.safetensors").read_bytes(), "ticket")
        assert len({torch.equal(states[0]["features.0.weight"], s["features.0.weight"]) for s in states}) == 2
        for name in mask:  # the particles' mean under the shared mask (BatchNorm statistics recalibrated)
            mean = sum(s[name] for s in states) / 3
            assert torch.allclose(soup[name], mean * mask[name], atol=1e-6), name
            assert torch.count_nonzero(soup[name][mask[name] == 0]) == 0
        assert 0 < m["val_acc"] <= 1 and 0 < m["test_acc"] <= 1


def test_mlflow_a_child_per_particle_under_the_imp_run(reference, tracking_uri, tmp_path):
    client = MlflowClient(tracking_uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        f"tags.`lp_ray.run_dir` = '{reference['run']}'",
    )
    (imp,) = [r for r in runs if r.data.tags.get("lp_ray.kind") == "imp"]
    assert "2 of them are uniform soups of 3 particles each" in imp.data.tags["mlflow.note.content"]
    exp = [imp.info.experiment_id]
    particles = client.search_runs(exp, f"tags.`mlflow.parentRunId` = '{imp.info.run_id}'")
    assert sorted(p.info.run_name for p in particles) == [
        f"round 0{r} · particle {i}" for r in (1, 2) for i in range(3)
    ]
    rounds_csv = Path(client.download_artifacts(imp.info.run_id, "rounds.csv", str(tmp_path))).read_text()
    assert rounds_csv.count(',"uniform",3') == 2, rounds_csv  # each soup round: its soup, and how many joined it
    for p in particles:
        r, i = map(int, p.data.tags["lp_ray.round"].split("."))
        m = meta(reference["run"], r)
        assert p.data.tags["lp_ray.kind"] == "imp_particle"
        assert p.data.tags["particle_sha256"] == m["particles"][i]["sha256"]
        assert p.data.metrics["particle_test_acc"] == pytest.approx(100 * m["particles"][i]["test_acc"], abs=1e-2)
        assert len(client.get_metric_history(p.info.run_id, "val_acc")) == 23


def test_driver_sigkill_mid_particle_then_rerun_gives_the_same_soup(tmp_path, tracking_uri, ray_address, reference):
    """Killed while round 1's last particle trains (the first two finished): the rerun never retrains a
    finished particle, resumes the third from its checkpoint and ends with the reference's bytes."""
    job = write_yaml(tmp_path / "job.yaml", JOB)
    cluster = write_yaml(tmp_path / "cluster.yaml", tiny_cluster(tmp_path / "runs"))  # a private Ray
    args = [LP_RAY, "imp", "--job", str(job), "--cluster", str(cluster), "--tracking-uri", tracking_uri]
    env = {k: v for k, v in os.environ.items() if k not in ("LP_RAY_INJECT_FAILURE", "MLFLOW_TRACKING_URI")}
    proc = subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    run_dir = None
    try:
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None:
            runs = list((tmp_path / "runs").glob("particles-*")) if (tmp_path / "runs").exists() else []
            if runs and _mid_particle(runs[0], 1, 2):
                run_dir = runs[0]
                break
            time.sleep(0.05)
        assert run_dir is not None, "round 1's third particle never wrote a checkpoint"
    finally:
        stop(proc)  # SIGKILL to the driver and everything it started
    # Ray's workers live in process groups of their own and notice their raylet's death at their next
    # call into Ray: let them go before looking at what the killed run left.
    _wait_until_quiet(run_dir)
    done = {p: (round_dir(run_dir, 1) / f"particle_{p:02d}.safetensors").stat().st_mtime_ns for p in (0, 1)}
    assert not (round_dir(run_dir, 1) / "particle_02.json").exists()

    shared = write_yaml(tmp_path / "shared.yaml", tiny_cluster(tmp_path / "runs", ray_address))
    again = cli("imp", "--job", str(job), "--cluster", str(shared), "--tracking-uri", tracking_uri, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "round  0  done already" in again.stdout and "round  1  trained" in again.stdout, again.stdout
    for p in (0, 1):  # finished particles are never retrained
        assert (round_dir(run_dir, 1) / f"particle_{p:02d}.safetensors").stat().st_mtime_ns == done[p]
    record = json.loads((round_dir(run_dir, 1) / "particle_02.json").read_text())
    assert len(record["history"]["starts"]) == 2 and record["history"]["starts"][1] > 1  # resumed mid-particle
    assert files(run_dir) == files(reference["run"])  # bit-identical tickets, masks and particles


def test_rounds_extends_a_particle_run(reference, tracking_uri):
    run, before = reference["run"], files(reference["run"])
    proc = cli(
        "imp",
        "--job",
        str(reference["job"]),
        "--cluster",
        str(reference["cluster"]),
        "--tracking-uri",
        tracking_uri,
        "--rounds",
        "4",
        cwd=reference["dir"],
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "round  2  done already" in proc.stdout and "round  3  trained" in proc.stdout
    after = files(run)
    assert {k: v for k, v in after.items() if k in before} == before
    assert len(meta(run, 3)["particles"]) == 3 and meta(run, 3)["density"] < meta(run, 2)["density"]


def test_particles_compose_with_retrain_and_particle_0_is_plain_imps_ticket(tmp_path, tracking_uri, ray_address):
    """`imp.retrain: finetune` (SMS's fine-tuning variant): every particle starts from ticket 0's trained
    weights, and particle 0 (plain IMP's data order) is, tensor for tensor, the ticket plain IMP with the
    same rule trains."""
    cluster = write_yaml(tmp_path / "cluster.yaml", tiny_cluster(tmp_path / "runs", ray_address))
    base = {**TINY_JOB, "name": "compose", "imp": {"rounds": 2, "retrain": "finetune"}}
    weights, epochs = {}, 0
    for m in (1, 2):
        job = write_yaml(tmp_path / f"job{m}.yaml", {**base, "imp": {**base["imp"], "particles": m}})
        proc = cli("imp", "--job", str(job), "--cluster", str(cluster), "--tracking-uri", tracking_uri, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        run = next(p for p in (tmp_path / "runs").iterdir() if p.is_dir() and p.name not in weights)
        name = "ticket.safetensors" if m == 1 else "particle_00.safetensors"
        weights[run.name] = decode_weights((round_dir(run, 1) / name).read_bytes(), name)[0]
        epochs = meta(run, 1)["epochs"] if m == 1 else epochs
        if m == 2:  # each particle trains what plain IMP's round does
            assert (
                meta(run, 1)["epochs"] == 2 * epochs
                and [p["epochs"] for p in meta(run, 1)["particles"]] == [epochs] * 2
            )
    plain, particle = weights.values()
    assert plain.keys() == particle.keys()
    assert all(torch.equal(plain[k], particle[k]) for k in plain)


def test_a_bad_particles_value_is_one_error_line_before_anything_starts(tmp_path):
    for imp, message in [
        ({"particles": 0}, "imp.particles: must be in [1, 64] (1: plain IMP), got 0"),
        ({"particles": 2, "soup": "best"}, "imp.soup: unknown soup 'best' (known: uniform, greedy)"),
    ]:
        job = write_yaml(tmp_path / "bad.yaml", {**JOB, "imp": {**JOB["imp"], **imp}})
        cluster = write_yaml(tmp_path / "cluster.yaml", tiny_cluster(tmp_path / "runs"))
        proc = cli("imp", "--job", str(job), "--cluster", str(cluster), cwd=tmp_path)
        assert proc.returncode != 0
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], proc.stderr
        assert not (tmp_path / "runs").exists()


def _wait_until_quiet(run_dir, quiet_s: float = 3.0, limit_s: float = 60.0) -> None:
    """Until no file of the run directory has changed for `quiet_s` seconds."""
    deadline = time.time() + limit_s
    while time.time() < deadline:
        newest = max((p.stat().st_mtime for p in run_dir.rglob("*") if p.is_file()), default=0.0)
        if time.time() - newest >= quiet_s:
            return
        time.sleep(0.5)


def _mid_particle(run_dir, r: int, p: int) -> bool:
    """Particle p of round r has an epoch checkpoint past its first and is not finished."""
    if (round_dir(run_dir, r) / f"particle_{p:02d}.json").exists():
        return False
    for state in run_dir.glob(f"train/fit_*/checkpoint_*/particle_{p:02d}/state.json"):
        try:
            s = json.loads(state.read_text())
            if s["round"] == r and s["epoch"] >= 2:
                return True
        except (ValueError, KeyError, OSError):
            continue  # being written
    return False
