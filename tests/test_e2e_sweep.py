"""`lp-ray sweep` end to end on real Ray Tune: the tiny job, 2 seeds x 2 grid values, one method. The
driver is SIGKILLed mid-sweep and the same command is run again: finished trials are not retrained, the
aggregate equals that of an uninterrupted sweep, and a trial's run directory is `lp-ray run` of its job."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time

import pyarrow.parquet as pq
import pytest
import yaml
from helpers import LP_RAY, TINY_JOB, cli, one_error_line, tiny_cluster, write_yaml

pytestmark = pytest.mark.e2e

EXPERIMENT = {
    "name": "tinyexp",
    "job": TINY_JOB,
    "seeds": "0-1",
    "grid": {"imp.rewind_epoch": [1, 0]},
    "methods": ["interpolation"],
    "analyses": ["ensemble"],  # run by every trial after its pool; aggregated by the report
}


def _cluster(d, address="local", file="cluster.yaml"):
    # One DDP worker per trial, evaluations at half a CPU: two trials fit on two cores. `address`: the
    # session's Ray cluster, or a private Ray for the sweeps a test kills.
    return write_yaml(d / file, {**tiny_cluster(d / "runs", address), "num_workers": 1})


def _digests(run_dir) -> dict[str, str]:
    """sha256 and mtime of every ticket and pooled network of a run directory."""
    out = {}
    for p in sorted(run_dir.rglob("*.safetensors")):
        if "rounds" in p.parts or "pool" in p.parts:
            out[str(p.relative_to(run_dir))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def _exp_dir(d):
    (exp,) = (d / "runs" / "experiments").iterdir()
    return exp


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tracking_uri, ray_address):
    d = tmp_path_factory.mktemp("sweep-ref")
    spec = write_yaml(d / "exp.yaml", EXPERIMENT)
    proc = cli(
        "sweep",
        str(spec),
        "--cluster",
        str(_cluster(d, ray_address)),
        "--max-concurrent",
        "2",
        "--tracking-uri",
        tracking_uri,
        cwd=d,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return d, proc


def test_progress_names_each_running_trials_stage(uninterrupted):
    _, proc = uninterrupted
    lines = [l for l in proc.stdout.splitlines() if l.startswith("trials: ")]
    assert lines[0].startswith("trials: 0 done") and lines[-1].startswith("trials: 4 done")
    assert any("(seed 0, imp.rewind_epoch=1): round " in l for l in lines)
    # a search's share of its evaluations, e.g. "pool interpolation 1/3 targets, 47% of its evaluations"
    assert any(re.search(r"pool interpolation \d/3 targets, \d+% of its evaluations", l) for l in lines)


def test_ctrl_c_ends_a_sweep_with_130_and_the_rerun_hint(tmp_path, tracking_uri):
    spec = write_yaml(tmp_path / "exp.yaml", {**EXPERIMENT, "name": "interrupted", "seeds": [0]})
    args = [LP_RAY, "sweep", str(spec), "--cluster", str(_cluster(tmp_path)), "--tracking-uri", tracking_uri]
    proc = subprocess.Popen(
        args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not list((tmp_path / "runs").glob("tiny-*/rounds")):
            time.sleep(0.2)
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 130, out + err
    assert "interrupted: finished work is kept; rerun the same command to resume" in err
    assert "Tuner.restore" not in out + err and "did not finish" not in err


def test_sweep_resumes_after_sigkill_without_retraining(tmp_path, uninterrupted, tracking_uri, ray_address):
    ref_dir, ref_proc = uninterrupted
    spec = write_yaml(tmp_path / "exp.yaml", EXPERIMENT)
    cluster = _cluster(tmp_path)
    args = [
        LP_RAY,
        "sweep",
        str(spec),
        "--cluster",
        str(cluster),
        "--max-concurrent",
        "1",
        "--tracking-uri",
        tracking_uri,
    ]
    proc = subprocess.Popen(
        args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    runs = tmp_path / "runs"
    try:
        deadline = time.time() + 900
        # Kill once the first trial is finished and the second has started.
        while time.time() < deadline and proc.poll() is None:
            # a trial is finished when its last step is: the ensemble analysis after its pool
            finished = [r for r in runs.glob("tiny-*") if (r / "analysis" / "ensemble" / "ensemble.png").exists()]
            started = [r for r in runs.glob("tiny-*") if (r / "rounds").exists()]
            if finished and len(started) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the sweep finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the private Ray it started
        except ProcessLookupError:
            pass
    index = pq.read_table(_exp_dir(tmp_path) / "trials.parquet").to_pylist()
    assert len(index) == 4 and {r["status"] for r in index} <= {"queued", "partial", "done"}
    before = {r.name: _digests(r) for r in finished}
    # The rerun may take two trials at a time: what is resumed must not depend on the concurrency.
    shared = _cluster(tmp_path, ray_address, "shared.yaml")  # the rerun joins the session's cluster
    again = cli("sweep", str(spec), "--cluster", str(shared), "--max-concurrent", "2", "--tracking-uri", tracking_uri)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{len(finished)} done already" in again.stdout
    for r in finished:  # not retrained, not re-pooled: the same bytes, never rewritten
        assert _digests(r) == before[r.name]
    index = pq.read_table(_exp_dir(tmp_path) / "trials.parquet").to_pylist()
    assert [r["status"] for r in index] == ["done"] * 4
    # The aggregate equals the uninterrupted sweep's (same tickets, same decisions, same statistics).
    ours = pq.read_table(_exp_dir(tmp_path) / "report.parquet").to_pylist()
    theirs = pq.read_table(_exp_dir(ref_dir) / "report.parquet").to_pylist()
    assert ours == theirs and len(ours) == 2 * 3
    verdict = (_exp_dir(tmp_path) / "verdict.txt").read_text()
    assert verdict == (_exp_dir(ref_dir) / "verdict.txt").read_text()
    assert "interpolation − LT [imp.rewind_epoch=0]:" in verdict and "over 2 seeds" in verdict
    assert "LT+BN − LT [imp.rewind_epoch=1] (control)" in verdict
    assert "output ensemble − interpolation [imp.rewind_epoch=1] (k× vs 1× inference):" in verdict
    assert "interpolation − LT [imp.rewind_epoch=1]:" in again.stdout  # printed as text, not swallowed as markup
    for r in runs.glob("tiny-*"):  # every trial's run directory equals the reference sweep's, bit for bit
        assert {k: v[0] for k, v in _digests(r).items()} == {
            k: v[0] for k, v in _digests(ref_dir / "runs" / r.name).items()
        }


def test_a_trial_is_lp_ray_run_of_its_job(tmp_path, uninterrupted, tracking_uri, ray_address):
    ref_dir, _ = uninterrupted
    job = dict(TINY_JOB, train={**TINY_JOB["train"], "seed": 1}, imp={**TINY_JOB["imp"], "rewind_epoch": 0})
    path = write_yaml(tmp_path / "job.yaml", job)
    proc = cli(
        "run", "--job", str(path), "--cluster", str(_cluster(tmp_path, ray_address)), "--tracking-uri", tracking_uri
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run,) = (tmp_path / "runs").glob("tiny-*")
    trial = ref_dir / "runs" / run.name  # the same content-hash name: the sweep's trial 3
    assert trial.is_dir()
    assert {k: v[0] for k, v in _digests(run).items()} == {k: v[0] for k, v in _digests(trial).items()}
    trace = lambda d: [  # noqa: E731
        {k: v for k, v in row.items() if k not in ("seconds", "node")}
        for row in pq.read_table(d / "pool" / "interpolation" / "trace.parquet").to_pylist()
    ]
    assert sorted(trace(run), key=str) == sorted(trace(trial), key=str)


def test_experiment_spec_errors_are_one_line(tmp_path):
    cases = [
        ({**EXPERIMENT, "colour": 1}, "unknown key 'colour'"),
        ({**EXPERIMENT, "seeds": []}, "seeds: must name at least one seed"),
        ({**EXPERIMENT, "grid": {"imp.rewind": [1]}}, "unknown key 'imp.rewind'"),
        ({**EXPERIMENT, "grid": {"imp.rewind_epoch": [9]}}, "imp.rewind_epoch: must be in [0, train.epochs=4)"),
        ({**EXPERIMENT, "methods": ["magic"]}, "methods: unknown method 'magic'"),
        ({**EXPERIMENT, "analyses": ["magic"]}, "analyses: expected a list of lmc, stability"),
        ({**EXPERIMENT, "pools": [{"name": "x", "search": "slow"}]}, "methods: give `pools` (named variants) or"),
        (
            {**{k: v for k, v in EXPERIMENT.items() if k != "methods"}, "pools": [{"name": "x", "search": "slow"}]},
            "pools[0] (x): search: unknown search 'slow' (known: exact, fast)",
        ),
        (
            {**{k: v for k, v in EXPERIMENT.items() if k != "methods"}, "pools": [{"name": "x"}], "reference": "y"},
            "reference: 'y' is not one of the pools (x)",
        ),
        (
            {**EXPERIMENT, "reference_cell": "imp.rewind_epoch=7"},
            "reference_cell: 'imp.rewind_epoch=7' is not one of the grid's cells ('imp.rewind_epoch=1', "
            "'imp.rewind_epoch=0')",
        ),
        ({**EXPERIMENT, "grid": {}, "reference_cell": ""}, "it needs a grid of two or more cells"),
        ({**EXPERIMENT, "grid": {"imp.particles": [1, 99]}}, "imp.particles: must be in [1, 64] (1: plain IMP)"),
    ]
    for i, (spec, fragment) in enumerate(cases):
        path = write_yaml(tmp_path / f"bad{i}.yaml", spec)
        proc = cli("sweep", str(path), "--cluster", str(_cluster(tmp_path)), cwd=tmp_path)
        one_error_line(proc, fragment)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_mlflow_sweep_run_holds_the_answer_and_nests_every_trial(uninterrupted, tracking_uri):
    """The sweep's run answers the question where a user lands: the verdicts as metrics (the t interval
    first, the bootstrap beside it) and as its description, one series per search over sparsity (step =
    round), the figure and tables; under it a run per trial, in which the trial's IMP run and its search
    nest."""
    from mlflow.tracking import MlflowClient

    ref_dir, _ = uninterrupted
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("lp-ray/tiny")
    exp_dir = _exp_dir(ref_dir)
    (parent,) = client.search_runs(
        [exp.experiment_id], f"tags.`lp_ray.kind` = 'sweep' and tags.`lp_ray.run_dir` = '{exp_dir}'"
    )
    assert parent.info.run_name == f"sweep {exp_dir.name}" and parent.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"report.csv", "report.png", "verdict.txt"}
    report = pq.read_table(exp_dir / "report.parquet").to_pylist()
    m = parent.data.metrics
    for cell in ("imp.rewind_epoch:0", "imp.rewind_epoch:1"):
        prefix = f"{cell}/interpolation/"
        assert m[f"{prefix}gain_t_ci_low"] <= m[f"{prefix}gain_mean_pt"] <= m[f"{prefix}gain_t_ci_high"]
        assert m[f"{prefix}gain_seeds"] == 2 and m[f"{prefix}sparsities"] == 3
        gains = client.get_metric_history(parent.info.run_id, f"{prefix}by_round/gain_pt")
        rows = {r["round"]: r for r in report if r["cell"] == cell.replace(":", "=")}
        assert {g.step: g.value for g in gains} == {t: pytest.approx(r["gain_mean"], abs=1e-5) for t, r in rows.items()}
    note = parent.data.tags["mlflow.note.content"]
    assert "- interpolation − LT [imp.rewind_epoch=1]: " in note and "Student t 95% CI" in note
    trials = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    index = {r["trial"]: r for r in pq.read_table(exp_dir / "trials.parquet").to_pylist()}
    assert sorted(t.info.run_name for t in trials) == sorted(
        f"trial {i:02d} · seed {r['seed']} · {r['cell']}" for i, r in index.items()
    )
    for t in trials:  # each trial's IMP run nests in it, and its search in the IMP run
        row = index[int(t.data.tags["lp_ray.round"])]
        (imp,) = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{t.info.run_id}'")
        assert imp.data.tags["lp_ray.kind"] == "imp" and imp.data.tags["lp_ray.run_dir"] == row["run_dir"]
        (search,) = client.search_runs(
            [exp.experiment_id],
            f"tags.`mlflow.parentRunId` = '{imp.info.run_id}' and tags.`lp_ray.kind` = 'pool:interpolation'",
        )
        assert (
            t.info.start_time
            <= imp.info.start_time
            <= search.info.start_time
            <= search.info.end_time
            <= t.info.end_time
        )
        # its best network is an MLflow model of its search: in the Models tab, a click from the trial
        model = client.get_logged_model(search.data.tags["best_model_id"])
        assert model.source_run_id == search.info.run_id and model.tags["network_uri"].startswith(row["run_dir"])
        assert search.data.tags["lp_ray.verdict"].startswith("interpolation ")
    # The tree holds at sweep scale: a trial is 3 runs (trial, IMP, search), no run per round or target,
    # and the experiment's description (the top of its runs page) links the sweep with its verdict.
    assert sum(1 for _ in _runs_under(client, exp.experiment_id, parent.info.run_id)) == 3 * len(index)
    assert (
        f"[sweep {exp_dir.name}](#/experiments/{exp.experiment_id}/runs/{parent.info.run_id})"
        in (exp.tags["mlflow.note.content"])
    )


def _runs_under(client, experiment_id: str, run_id: str):
    for child in client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'"):
        yield child
        yield from _runs_under(client, experiment_id, child.info.run_id)


def test_pool_variants_compare_two_searches_on_the_same_tickets(uninterrupted, tracking_uri):
    """`pools:` with a `reference:`: a second experiment over the same base job, seeds and grid finds the
    first one's trials (same run directories: nothing is trained, the exact search is not redone), adds a
    fast search in its own folder, and its report pairs fast with exact per sparsity and overall, with
    McNemar counts taken from the two searches' stored predictions."""
    ref_dir, _ = uninterrupted
    runs = sorted((ref_dir / "runs").glob("tiny-*"))
    exact_before = {r.name: (r / "pool" / "interpolation" / "trace.parquet").read_bytes() for r in runs}
    spec = {k: v for k, v in EXPERIMENT.items() if k not in ("methods", "analyses")}
    spec = {
        **spec,
        "name": "variants",
        "pools": [{"name": "interpolation"}, {"name": "fast", "search": "fast", "screen_fraction": 0.25}],
        "reference": "interpolation",
    }
    path = write_yaml(ref_dir / "variants.yaml", spec)
    proc = cli("sweep", str(path), "--cluster", str(ref_dir / "cluster.yaml"), "--tracking-uri", tracking_uri)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "round  0  trained" not in proc.stdout
    for r in runs:  # the same tickets, the exact search untouched, the fast one beside it
        assert (r / "pool" / "interpolation" / "trace.parquet").read_bytes() == exact_before[r.name]
        stages = {row["stage"] for row in pq.read_table(r / "pool" / "fast" / "trace.parquet").to_pylist()}
        assert stages <= {"screen", "confirm"} and "screen" in stages
    (exp,) = [d for d in (ref_dir / "runs" / "experiments").iterdir() if d.name.startswith("variants-")]
    pairs = pq.read_table(exp / "pairs.parquet").to_pylist()
    assert sorted((p["cell"], p["round"]) for p in pairs) == sorted(
        (c, t) for c in ("imp.rewind_epoch=0", "imp.rewind_epoch=1") for t in range(3)
    )
    row = next(p for p in pairs if p["cell"] == "imp.rewind_epoch=1" and p["round"] == 2)
    only_ref = only_fast = 0
    cell_runs = [r for r in runs if "rewind_epoch: 1" in (r / "job.yaml").read_text()]
    assert len(cell_runs) == 2
    for r in cell_runs:
        a = pq.read_table(r / "pool" / "interpolation" / "predictions_02.parquet").to_pydict()
        b = pq.read_table(r / "pool" / "fast" / "predictions_02.parquet").to_pydict()
        for y, p_ref, p_fast in zip(a["label"], a["pooled"], b["pooled"], strict=True):
            only_ref += p_ref == y and p_fast != y
            only_fast += p_fast == y and p_ref != y
    assert (row["reference_only_correct"], row["variant_only_correct"]) == (only_ref, only_fast)
    verdict = (exp / "verdict.txt").read_text()
    assert "fast − interpolation [imp.rewind_epoch=1] (pooled test accuracy, same tickets):" in verdict
    assert "fast − LT [imp.rewind_epoch=0]:" in verdict and "interpolation − LT [imp.rewind_epoch=0]:" in verdict


def test_reference_cell_pairs_each_cell_with_it_seed_by_seed(uninterrupted, tracking_uri):
    """`reference_cell:` (how the particles experiment compares soups with plain IMP): the same trials,
    nothing trained; the report pairs the other cell's tickets and pooled networks with the reference
    cell's, seed by seed, McNemar counts from both trials' stored predictions, and states each cell's
    training compute as the tickets' meta.json record it."""
    ref_dir, _ = uninterrupted
    spec = {**EXPERIMENT, "name": "cells", "reference_cell": "imp.rewind_epoch=1"}
    path = write_yaml(ref_dir / "cells.yaml", spec)
    proc = cli("sweep", str(path), "--cluster", str(ref_dir / "cluster.yaml"), "--tracking-uri", tracking_uri)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "round  0  trained" not in proc.stdout
    (exp,) = [d for d in (ref_dir / "runs" / "experiments").iterdir() if d.name.startswith("cells-")]
    pairs = pq.read_table(exp / "pairs.parquet").to_pylist()
    assert {(p["kind"], p["quantity"], p["variant"], p["cell"], p["reference"]) for p in pairs} == {
        ("cells", q, v, "imp.rewind_epoch=0", "imp.rewind_epoch=1")
        for q, v in (("lt", "LT"), ("pooled", "interpolation"))
    }
    runs = {}
    for r in (ref_dir / "runs").glob("tiny-*"):
        job = yaml.safe_load((r / "job.yaml").read_text())
        runs[(job["imp"]["rewind_epoch"] == 1, job["train"]["seed"] == 1)] = r
    assert len(runs) == 4
    for quantity, key in (("lt", "lt_test_acc"), ("pooled", "test_acc")):
        row = next(p for p in pairs if p["quantity"] == quantity and p["round"] == 2)
        diffs, only_ref, only_mine = [], 0, 0
        for seed in (False, True):
            mine, ref = runs[(False, seed)], runs[(True, seed)]
            a = json.loads((mine / "pool" / "interpolation" / "target_02.json").read_text())["result"][key]
            b = json.loads((ref / "pool" / "interpolation" / "target_02.json").read_text())["result"][key]
            diffs.append(100 * (a - b))
            col = "lt" if quantity == "lt" else "pooled"
            x = pq.read_table(mine / "pool" / "interpolation" / "predictions_02.parquet").to_pydict()
            y = pq.read_table(ref / "pool" / "interpolation" / "predictions_02.parquet").to_pydict()
            assert x["label"] == y["label"]  # same seed: the same test set, so McNemar pairs example by example
            for label, p_mine, p_ref in zip(x["label"], x[col], y[col], strict=True):
                only_ref += p_ref == label and p_mine != label
                only_mine += p_mine == label and p_ref != label
        assert row["diff_mean"] == pytest.approx(sum(diffs) / 2, abs=1e-9)
        assert (row["reference_only_correct"], row["variant_only_correct"]) == (only_ref, only_mine)
    verdict = (exp / "verdict.txt").read_text()
    # the printed table's title is text: the cells' brackets are not swallowed as rich markup
    assert (
        "LT [imp.rewind_epoch=0] − [imp.rewind_epoch=1] (the tickets, paired by seed): test accuracy %" in proc.stdout
    )
    assert "LT [imp.rewind_epoch=0] − [imp.rewind_epoch=1] (the tickets, paired by seed): " in verdict
    assert (
        "interpolation [imp.rewind_epoch=0] − [imp.rewind_epoch=1] (pooled test accuracy, paired by seed): " in verdict
    )
    epochs = sum(json.loads(m.read_text())["epochs"] for m in runs[(False, False)].glob("rounds/round_*/meta.json"))
    assert (
        f"training [imp.rewind_epoch=0]: {epochs} epochs of IMP per seed (all rounds, all particles), 2 seeds"
        in verdict
    )


def test_rerunning_a_finished_sweep_changes_nothing_in_mlflow(uninterrupted, tracking_uri):
    """The same sweep again: every trial is done, so nothing runs, and MLflow is left exactly as it was:
    no new run, no value logged again, no end time moved."""
    from helpers import store_snapshot

    ref_dir, _ = uninterrupted
    before = store_snapshot(tracking_uri)
    again = cli(
        "sweep", str(ref_dir / "exp.yaml"), "--cluster", str(ref_dir / "cluster.yaml"), "--tracking-uri", tracking_uri
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "4 done already" in again.stdout
    assert store_snapshot(tracking_uri) == before


def test_lmc_in_every_trial_is_averaged_over_seeds_by_the_report(uninterrupted, tracking_uri):
    """`analyses: [lmc]` over the same trials (nothing trained): each trial measures its tickets' paths,
    and the report averages each trial's mean barrier over the seeds of its cell, in verdict.txt and as
    the sweep run's metrics. (Last in this module: it adds analysis/lmc/ to the shared trials.)"""
    from mlflow.tracking import MlflowClient

    ref_dir, _ = uninterrupted
    path = write_yaml(ref_dir / "connected.yaml", {**EXPERIMENT, "name": "connected", "analyses": ["lmc"]})
    proc = cli("sweep", str(path), "--cluster", str(ref_dir / "cluster.yaml"), "--tracking-uri", tracking_uri)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "round  0  trained" not in proc.stdout
    (exp,) = [d for d in (ref_dir / "runs" / "experiments").iterdir() if d.name.startswith("connected-")]
    verdict = (exp / "verdict.txt").read_text()
    client = MlflowClient(tracking_uri)
    (sweep,) = client.search_runs(
        [client.get_experiment_by_name("lp-ray/tiny").experiment_id],
        f"tags.`lp_ray.kind` = 'sweep' and tags.`lp_ray.run_dir` = '{exp}'",
    )
    for rewind in (0, 1):
        means = []
        for r in (ref_dir / "runs").glob("tiny-*"):
            if f"rewind_epoch: {rewind}" in (r / "job.yaml").read_text():
                pairs = pq.read_table(r / "analysis" / "lmc" / "pairs.parquet").to_pylist()
                means.append(100 * sum(p["barrier_test"] for p in pairs) / len(pairs))
        assert len(means) == 2
        line = next(
            l for l in verdict.splitlines() if l.startswith(f"lmc [imp.rewind_epoch={rewind}]: ") and "every pair" in l
        )
        assert f": {sum(means) / 2:+.2f}, Student t 95% CI [" in line and line.endswith("over 2 seeds")
        key = f"imp.rewind_epoch:{rewind}/lmc/barrier_all_pairs_pt_mean"
        assert sweep.data.metrics[key] == pytest.approx(sum(means) / 2)
