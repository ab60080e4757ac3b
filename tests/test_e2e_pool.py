"""End to end, real Ray and MLflow: `lp-ray run` / `pool` / `report` / `eval` on the tiny run."""

import io
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import LP_RAY, cli
from mlflow.tracking import MlflowClient

from lp_ray.store import decode_weights

pytestmark = pytest.mark.e2e


def trace(run, name):
    rows = pq.read_table(run / "pool" / name / "trace.parquet").to_pylist()
    return sorted(
        ({k: v for k, v in r.items() if k not in ("seconds", "node")} for r in rows),
        key=lambda r: (r["target"], r["step"], r.get("stage") or "", r["alpha"]),
    )


def summary(run, name):
    return [
        {k: v for k, v in r.items() if k != "path"}
        for r in pq.read_table(run / "pool" / name / "summary.parquet").to_pylist()
    ]


def pool(base, *args):
    proc = cli(
        "pool", str(base["run"]), "--cluster", str(base["cluster"]), "--tracking-uri", base["tracking_uri"], *args
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_run_command_ends_with_table_and_plot(base_run):
    run, out = base_run["run"], base_run["stdout"]
    assert "LT test acc %" in out and "LP interpolation test acc %" in out and "gain" in out
    assert f"plot:   {run / 'report.png'}" in out
    assert (run / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv = (run / "report.csv").read_text().splitlines()
    assert csv[0].split(",")[:4] == ['"round"', '"weights_remaining"', '"lt_val_acc"', '"lt_test_acc"']
    assert len(csv) == 4
    assert [r["target"] for r in summary(run, "interpolation")] == [0, 1, 2]


def test_pooled_tickets_have_exactly_the_target_density(base_run):
    run = base_run["run"]
    for t in range(3):
        m = json.loads((run / "rounds" / f"round_{t:02d}" / "meta.json").read_text())
        _, target_mask = decode_weights((run / "rounds" / f"round_{t:02d}" / "ticket.safetensors").read_bytes(), "t")
        state, mask = decode_weights((run / "pool" / "interpolation" / f"target_{t:02d}.safetensors").read_bytes(), "p")
        want = sum(int(v.sum()) for v in target_mask.values())
        assert sum(int((state[n] != 0).sum()) for n in mask) == want
        assert json.loads((run / "pool" / "interpolation" / f"target_{t:02d}.json").read_text())["result"][
            "density"
        ] == pytest.approx(m["density"])
    dens = {r["target"]: r["density"] for r in trace(run, "interpolation")}
    assert dens[0] == 1.0


def test_serial_and_ray_traces_identical_for_1_2_and_4_parallel(base_run):
    run = base_run["run"]
    pool(base_run, "--serial", "--name", "serial")
    p1 = pool(base_run, "--parallel-evals", "1", "--name", "p1")
    p4 = pool(base_run, "--parallel-evals", "4", "--name", "p4")
    assert "1 evaluation(s) in parallel" in p1.stdout and "4 evaluation(s) in parallel" in p4.stdout
    reference = trace(run, "serial")
    assert len(reference) == 3 * (1 + 2 * 11)
    for name in ("p1", "p4", "interpolation"):  # `lp-ray run` pooled with 2 in parallel
        assert trace(run, name) == reference, name
        assert summary(run, name) == summary(run, "serial"), name


def test_sigkill_mid_search_then_rerun_reevaluates_nothing(base_run):
    run = base_run["run"]
    reference = trace(run, "interpolation")
    args = [
        LP_RAY,
        "pool",
        str(run),
        "--cluster",
        str(base_run["cluster"]),
        "--tracking-uri",
        base_run["tracking_uri"],
        "--parallel-evals",
        "2",
        "--name",
        "killed",
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    path = run / "pool" / "killed" / "trace.parquet"
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            # the search replaces the trace while we poll: read it in one go (Parquet readers open a
            # path more than once, and a file replaced between two opens reads as torn)
            if path.exists() and len(pq.read_table(io.BytesIO(path.read_bytes()))) >= 12:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the search finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    done_before = len(pq.read_table(path))
    assert done_before < len(reference)
    again = pool(base_run, "--parallel-evals", "2", "--name", "killed")
    m = re.search(r"\((\d+) evaluations in \d+ s, (\d+) replayed from the trace\)", again.stdout)
    assert m, again.stdout
    evaluated, replayed = int(m.group(1)), int(m.group(2))
    assert replayed == done_before
    finals = sum(1 for r in summary(run, "interpolation") if r["accepted"])
    finished_targets = [t for t in range(3) if (run / "pool" / "killed" / f"target_{t:02d}.json").exists()]
    # nothing recorded was evaluated again (+ each unfinished target's LT+BN control)
    assert evaluated <= len(reference) - done_before + finals + 3
    assert trace(run, "killed") == reference  # every evaluation exactly once, same numbers
    assert summary(run, "killed") == summary(run, "interpolation")
    assert len(finished_targets) == 3


def test_dense_target_average_and_eval(base_run):
    run = base_run["run"]
    pool(base_run, "--method", "average", "--targets", "0")
    s = summary(run, "average")
    assert [r["target"] for r in s] == [0] and s[0]["density"] == 1.0
    rows = trace(run, "average")
    assert [(r["step"], r["candidate"], r["alpha"]) for r in rows] == [(0, 0, 0.0), (1, 1, 0.5), (2, 2, 0.5)]
    out = cli("eval", str(run / "pool" / "average" / "target_00.safetensors"))
    assert out.returncode == 0, out.stderr
    assert f"test acc {100 * s[0]['test_acc']:.2f}%" in out.stdout and "density 100.00%" in out.stdout


def test_mlflow_search_run_its_targets_its_best_network_and_eval_from_mlflow(base_run, tmp_path):
    """What a user reviewing the run in MLflow reads: runs named for people, the search's result as
    metrics (percent, 2 decimals) and its verdict with a per-sparsity table as the description, each
    target a step of the search's series with its McNemar p (raw and Holm), real durations, parameters
    only for what was used, the best network an MLflow model loadable by MLflow alone and by lp-ray."""
    import mlflow
    import numpy as np

    from lp_ray.api import open_run
    from lp_ray.pool.records import finished_targets, mcnemar_vs_lt
    from lp_ray.rounding import p_value, points
    from lp_ray.store import RunDir

    client = MlflowClient(base_run["tracking_uri"])
    exp = client.get_experiment_by_name("lp-ray/tiny")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # not MLflow 3's GenAI view
    imps = client.search_runs(
        [exp.experiment_id], f"tags.`lp_ray.kind` = 'imp' and tags.`lp_ray.run_dir` = '{base_run['run']}'"
    )
    assert len(imps) == 1  # another run directory of the same job (the multi-node test) is another MLflow run
    imp = imps[0]
    run_hash = json.loads((base_run["run"] / "rounds" / "round_00" / "meta.json").read_text())["run_hash"]
    assert imp.info.run_name == f"IMP · seed 0 · {run_hash}"
    pools = client.search_runs(
        [exp.experiment_id],
        f"tags.`lp_ray.kind` = 'pool:interpolation' and tags.`mlflow.parentRunId` = '{imp.info.run_id}'",
    )
    assert len(pools) == 1 and pools[0].info.run_name == "pool interpolation"
    search = pools[0]
    artifacts = {a.path for a in client.list_artifacts(search.info.run_id)}
    assert artifacts == {"trace.csv", "targets.csv", "targets.json", "interpolation_accuracy_vs_sparsity.png"}
    assert {a.path for a in client.list_artifacts(imp.info.run_id, "report")} == {
        "report/report.csv",
        "report/report.png",
    }
    assert client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{search.info.run_id}'") == []
    run = RunDir(str(base_run["run"]))
    results = finished_targets(run, "interpolation")
    gains = [100 * r.gain for r in results.values()]

    def series(key):
        return {m.step: m.value for m in client.get_metric_history(search.info.run_id, f"by_target/{key}")}

    assert sorted(series("pooled_test_acc")) == [0, 1, 2]
    for t, r in results.items():
        assert series("pooled_test_acc")[t] == points(100 * r.test_acc)
        assert series("lt_test_acc")[t] == points(100 * r.lt_test_acc)
        assert series("lt_bn_test_acc")[t] == points(100 * r.lt_bn_test_acc)
        assert series("gain_pt")[t] == points(100 * r.gain)
        assert series("mcnemar_p")[t] == p_value(mcnemar_vs_lt(run, "interpolation", r))
        assert series("mcnemar_p_holm")[t] >= series("mcnemar_p")[t]
    table = Path(client.download_artifacts(search.info.run_id, "targets.csv", str(tmp_path))).read_text()
    assert table.splitlines()[0].startswith('"weights_remaining_pct","target","lt_test_acc","pooled_test_acc"')
    assert f"\n100,0,{points(100 * results[0].lt_test_acc):g}," in table  # percent, no float noise
    m = search.data.metrics
    assert m["mean_gain_pt"] == points(sum(gains) / 3) and m["targets"] == 3
    assert m["targets_better"] == sum(g > 0 for g in gains)
    assert m["evaluations"] > 0 and search.info.end_time - search.info.start_time >= 1000 * m["search_seconds"] - 1
    note = search.data.tags["mlflow.note.content"]
    assert note.startswith(f"**interpolation: {m['mean_gain_pt']:+.2f} pt** mean test gain") and "| Holm p |" in note
    params = search.data.params
    assert params["method"] == "interpolation" and params["coefficients"].startswith("[0.05, 0.1, 0.2")
    assert "ema_decay" not in params and "screen_fraction" not in params
    # The imp run: the job's parameters only (no pool section), series by round, headline means, verdicts.
    lt = client.get_metric_history(imp.info.run_id, "by_round/lt_test_acc")
    lp = client.get_metric_history(imp.info.run_id, "by_round/interpolation/pooled_test_acc")
    assert sorted(x.step for x in lt) == [0, 1, 2] and sorted(x.step for x in lp) == [0, 1, 2]
    assert {x.step: x.value for x in lp}[2] == points(100 * results[2].test_acc)
    assert imp.data.metrics["interpolation/mean_gain_pt"] == m["mean_gain_pt"]
    assert imp.data.tags["mlflow.note.content"].startswith("**Pool verdicts**")
    params = imp.data.params
    assert "data.num_samples" in params and "data.shape" not in params and "data.num_train" not in params
    assert not [k for k in params if k.startswith(("pool.", "data.generator"))]
    # The best network (largest validation gain) is an MLflow model of the search's run.
    (model,) = [x for x in client.search_logged_models([exp.experiment_id]) if x.source_run_id == search.info.run_id]
    best = max(results, key=lambda t: (results[t].val_acc - results[t].lt_val_acc, -results[t].density))
    assert model.params["target"] == str(best) and model.tags["network_sha256"] == results[best].sha256
    assert {x.key: x.value for x in model.metrics}["network/pooled_test_acc"] == points(100 * results[best].test_acc)
    mlflow.set_tracking_uri(base_run["tracking_uri"])
    loaded = mlflow.pytorch.load_model(f"models:/{model.model_id}")
    x, _ = open_run(base_run["run"]).examples("test", range(16))
    mine = open_run(base_run["run"]).pooled(best)
    assert np.allclose(loaded(x).detach().numpy(), mine(x).detach().numpy(), atol=1e-5)
    out = cli("eval", f"models:/{model.model_id}", "--tracking-uri", base_run["tracking_uri"])
    assert out.returncode == 0, out.stderr
    assert f"test acc {100 * results[best].test_acc:.2f}%" in out.stdout
    assert f"density {100 * results[best].density:.2f}%" in out.stdout


def test_relogging_a_finished_search_changes_nothing_in_mlflow(base_run):
    """A rerun of a finished search (nothing to pool) finds its runs again: no new run, model or value
    logged again, the same end times."""
    from helpers import store_snapshot

    client = MlflowClient(base_run["tracking_uri"])

    def histories():
        imp = json.loads((base_run["run"] / "tracking.json").read_text())["imp_run_id"]
        keys = ("by_round/lt_test_acc", "by_round/interpolation/pooled_test_acc", "interpolation/mean_gain_pt")
        exp = client.get_experiment_by_name("lp-ray/tiny").experiment_id
        models = sorted(m.model_id for m in client.search_logged_models([exp]))
        return {k: len(client.get_metric_history(imp, k)) for k in keys}, models

    before = store_snapshot(base_run["tracking_uri"]), histories()
    pool(base_run)
    assert (store_snapshot(base_run["tracking_uri"]), histories()) == before


def test_fast_search_serial_and_ray_identical_and_cheaper(base_run):
    """pool --search fast: bit-identical traces from the serial and the Ray executor, every evaluation
    recorded with its stage and the examples BatchNorm saw, fewer of them than the exact search's."""
    run = base_run["run"]
    pool(base_run, "--search", "fast", "--serial", "--name", "fast-serial")
    ray = pool(base_run, "--search", "fast", "--parallel-evals", "2")
    assert "pool/interpolation-fast" in ray.stdout
    fast = trace(run, "interpolation-fast")
    assert fast == trace(run, "fast-serial")
    assert summary(run, "interpolation-fast") == summary(run, "fast-serial")
    rows = pq.read_table(run / "pool" / "interpolation-fast" / "trace.parquet").to_pylist()
    exact = pq.read_table(run / "pool" / "interpolation" / "trace.parquet").to_pylist()
    assert {r["stage"] for r in rows} == {"screen", "confirm"} and {r["stage"] for r in exact} == {"full"}
    assert sum(r["bn_examples"] for r in rows) < sum(r["bn_examples"] for r in exact)
