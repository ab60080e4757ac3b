"""`lp-ray analyze` end to end on a real finished tiny run (its own copy and MLflow store): every
analysis writes analysis/<name>/ and logs it to the imp run, and its numbers agree with direct
computation (endpoints are the recalibrated tickets, an ensemble of one ticket is the ticket, clean
accuracies are the recorded ones, a ticket's path to itself has no barrier)."""

from __future__ import annotations

import hashlib
import json

import pyarrow.parquet as pq
import pytest
from helpers import cli, one_error_line
from mlflow.tracking import MlflowClient

from lp_ray.analysis.lmc import LMC
from lp_ray.analysis.stability import STABILITY
from lp_ray.store import RunDir

pytestmark = pytest.mark.e2e


def table(run, name, file):
    return pq.read_table(run / "analysis" / name / f"{file}.parquet").to_pylist()


def targets(run, search="interpolation"):
    out = {}
    for p in (run / "pool" / search).glob("target_*.json"):
        r = json.loads(p.read_text())["result"]
        out[r["target"]] = r
    return out


def artifacts(finished, name):
    client = MlflowClient(finished["tracking_uri"])
    imp = json.loads((finished["run"] / "tracking.json").read_text())["imp_run_id"]
    return {a.path for a in client.list_artifacts(imp, f"analysis/{name}")}


def test_lmc_endpoints_are_the_recalibrated_tickets(finished):
    run = finished["run"]
    proc = cli("analyze", "lmc", str(run), "--cluster", str(finished["cluster"]), "--alphas", "0,0.25,0.5,0.75,1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "error barrier (test, pt) between adjacent tickets: 0-1 " in proc.stdout
    path = table(run, "lmc", "path")
    assert len(path) == 3 * 5  # 3 pairs x 5 points
    lt_bn = {t: r["lt_bn_test_acc"] for t, r in targets(run).items()}
    for row in path:  # each endpoint is the ticket with its BatchNorm recalibrated: the pool's LT+BN
        if row["alpha"] == 0.0:
            assert row["test_acc"] == lt_bn[row["a"]]
        if row["alpha"] == 1.0:
            assert row["test_acc"] == lt_bn[row["b"]]
    pairs = table(run, "lmc", "pairs")
    assert [(p["a"], p["b"]) for p in pairs] == [(0, 1), (0, 2), (1, 2)]
    assert all(p["barrier_test"] >= 0 for p in pairs)
    # What an experiment's report averages over seeds: the barriers' means per group of pairs, in points
    got = {m.key: m.value for m in LMC.of_run(RunDir(str(run)))}
    assert got == pytest.approx(
        {
            "barrier_all_pairs_pt": 100 * sum(p["barrier_test"] for p in pairs) / 3,
            "barrier_with_first_pt": 100 * (pairs[0]["barrier_test"] + pairs[1]["barrier_test"]) / 2,
            "barrier_pruned_pairs_pt": 100 * pairs[2]["barrier_test"],
            "barrier_adjacent_pt": 100 * (pairs[0]["barrier_test"] + pairs[2]["barrier_test"]) / 2,
        }
    )
    assert artifacts(finished, "lmc") == {
        "analysis/lmc/path.parquet",
        "analysis/lmc/pairs.parquet",
        "analysis/lmc/lmc.png",
    }


def test_a_tickets_path_to_itself_has_no_barrier(finished):
    from lp_ray.analysis.compute import lmc
    from lp_ray.opened_run import open_run
    from lp_ray.pool.executors import build_evaluator
    from lp_ray.spec import job_to_dict

    pr = open_run(str(finished["run"]))
    ev = build_evaluator(job_to_dict(pr.job), pr.run.uri, 1)
    w = pr.tickets[1]
    scores = [ev.score(w, w, a, None) for a in lmc.ALPHAS]
    errors = [1 - s.test_acc for s in scores]
    assert lmc.barrier(lmc.ALPHAS, errors) <= 1 / 400  # alpha*w + (1-alpha)*w rounds, at most one example


def test_ensemble_of_one_ticket_is_the_ticket_and_report_shows_it(finished):
    from lp_ray.analysis.compute import ensemble
    from lp_ray.analysis.ensemble import ticket_probabilities
    from lp_ray.opened_run import open_run

    run = finished["run"]
    proc = cli("analyze", "ensemble", str(run))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r["target"]: r for r in table(run, "ensemble", "ensemble") if r["search"] == "interpolation"}
    recs = targets(run)
    for t, r in rows.items():
        assert r["members"] == 1 + len(recs[t]["accepted"])
        assert r["pooled_test_acc"] == recs[t]["test_acc"] and r["lt_test_acc"] == recs[t]["lt_test_acc"]
    pr = open_run(str(run))
    probs, labels = ticket_probabilities(pr, pr.tickets)
    for t in pr.rounds:  # one member: exactly the ticket's own test accuracy, as training recorded it
        assert ensemble.ensemble_accuracy([probs[t]], labels) == pr.metas[t].test_acc
    (best,) = table(run, "ensemble", "best_val_ticket")
    assert best["val_acc"] == max(m.val_acc for m in pr.metas.values())
    report = cli("report", str(run))
    assert report.returncode == 0, report.stdout + report.stderr
    assert "interpolation: output ensemble of the merged tickets" in report.stdout
    assert f"LT of the best validation round ({best['round']}," in report.stdout
    assert "interpolation_ensemble_acc" in pq.read_table(run / "report.parquet").column_names


def test_an_analysis_row_counts_only_for_the_network_it_measured(finished, tmp_path):
    """Reports match an analysis row to a pooled network by the sha256 the row recorded: a row whose
    network is no longer the search's (a search redone since, even to the same test accuracy) is left
    out instead of mixed in."""
    import shutil

    import pyarrow as pa

    run = tmp_path / finished["run"].name
    shutil.copytree(finished["run"], run)
    path = run / "analysis" / "ensemble" / "ensemble.parquet"
    rows = pq.read_table(path).to_pylist()  # written by the test above
    assert rows and all(r["network_sha256"] == targets(run)[r["target"]]["sha256"] for r in rows)
    store = f"sqlite:///{tmp_path / 'none.db'}"  # no store there: the report logs nowhere
    assert "interpolation_ensemble_acc" in pq.read_table(run / "report.parquet").column_names
    for r in rows:
        r["network_sha256"] = "0" * 64  # the same accuracies, measured of another network
    pq.write_table(pa.Table.from_pylist(rows), path)
    report = cli("report", str(run), "--tracking-uri", store)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "output ensemble of the merged tickets" not in report.stdout
    assert "interpolation_ensemble_acc" not in pq.read_table(run / "report.parquet").column_names


def test_robustness_clean_is_recorded_and_corruptions_are_stored_once(finished):
    run = finished["run"]
    proc = cli("analyze", "robustness", str(run))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stored = run / "analysis" / "robustness" / "corruptions.safetensors"
    digest = hashlib.sha256(stored.read_bytes()).hexdigest()
    summary = table(run, "robustness", "summary")
    recs = targets(run)
    metas = {r: json.loads((run / "rounds" / f"round_{r:02d}" / "meta.json").read_text()) for r in range(3)}
    for s in summary:  # severity 0 is the clean test set: the accuracies training and pooling recorded
        expected = metas[s["round"]]["test_acc"] if s["network"] == "LT" else recs[s["round"]]["test_acc"]
        assert s["clean_test_acc"] == expected
        assert 0 < s["mean_corruption_acc"] < 1
    assert len(table(run, "robustness", "accuracy")) == 6 * 25  # (3 LT + 3 pooled) x 5 families x 5 severities
    again = cli("analyze", "robustness", str(run))
    assert again.returncode == 0 and hashlib.sha256(stored.read_bytes()).hexdigest() == digest
    assert pq.read_table(run / "analysis" / "robustness" / "summary.parquet").to_pylist() == summary
    report = cli("report", str(run))
    assert (
        "LT: mean corruption accuracy" in report.stdout and "interpolation: mean corruption accuracy" in report.stdout
    )


def test_disagreement_from_stored_predictions(finished):
    run = finished["run"]
    proc = cli("analyze", "disagreement", str(run))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "interpolation: mean disagreement of accepted candidates" in proc.stdout
    pairs = table(run, "disagreement", "pairs")
    assert [(p["a"], p["b"]) for p in pairs] == [(0, 1), (0, 2), (1, 2)]
    assert all(0 < p["disagreement"] < 1 for p in pairs)
    steps = table(run, "disagreement", "steps")
    assert len(steps) == 3 * 2  # every target tried both other tickets
    accepted = {(s["target"], s["candidate"]) for s in steps if s["accepted"]}
    assert accepted == {(t, c) for t, r in targets(run).items() for c in r["accepted"]}


def test_analysis_errors_are_one_line(finished, tmp_path):
    import shutil

    one_error_line(cli("analyze", "lmc", str(finished["run"]), "--alphas", "0,0.5"), "--alphas: alphas must rise")
    one_error_line(cli("analyze", "ensemble", str(tmp_path / "nope")), "no such run directory")
    unpooled = tmp_path / finished["run"].name
    shutil.copytree(finished["run"], unpooled, ignore=shutil.ignore_patterns("pool", "analysis", "train"))
    for name in ("disagreement", "ensemble"):  # both need a finished search, and say which command makes it
        one_error_line(cli("analyze", name, str(unpooled)), "run `lp-ray pool")
    assert not (unpooled / "analysis").exists()


def test_stability_copies_are_a_resumable_run_beside_this_one(finished):
    run = finished["run"]
    args = ["analyze", "stability", str(run), "--from-epoch", "1", "--alphas", "0,0.5,1"]
    args += ["--cluster", str(finished["cluster"])]
    proc = cli(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (copies,) = run.parent.glob("tiny-stability-*")
    meta = [json.loads((copies / "rounds" / f"round_{r:02d}" / "meta.json").read_text()) for r in range(3)]
    assert [m["density"] for m in meta] == [1.0, 1.0, 1.0] and meta[1]["starts"] == [1]
    barriers = table(run, "stability", "barriers")
    assert [b["from_epoch"] for b in barriers] == [1] and barriers[0]["copies_run"] == str(copies)
    assert "from epoch 1: error barrier between the copies" in proc.stdout
    (measure,) = STABILITY.of_run(RunDir(str(run)))
    assert (measure.key, measure.value) == ("barrier_from_epoch_1_pt", 100 * barriers[0]["barrier_test"])
    again = cli(*args)  # the copies are found again by their hash: nothing retrained
    assert again.returncode == 0 and again.stdout.count("done already") == 3
