"""Data safety, kind 2: results are rebuilt from every finished target on disk, never from one
invocation's targets: the summary, the report and the MLflow pool run never shrink."""

import pyarrow.parquet as pq
import pytest
from helpers import NothingChanges, cli, one_error_line
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e


def pool_run(finished):
    client = MlflowClient(finished["tracking_uri"])
    exp = client.get_experiment_by_name("lp-ray/tiny")
    (run,) = client.search_runs([exp.experiment_id], "tags.`lp_ray.kind` = 'pool:interpolation'")
    targets = sorted(m.step for m in client.get_metric_history(run.info.run_id, "by_target/pooled_test_acc"))
    return run, targets


def test_pooling_fewer_targets_keeps_every_finished_one(finished):
    run, cwd = finished["run"], finished["cwd"]
    summary = run / "pool" / "interpolation" / "summary.parquet"
    before_rows = pq.read_table(summary).to_pylist()
    before_run, before_targets = pool_run(finished)
    assert [r["target"] for r in before_rows] == [0, 1, 2]

    proc = cli("pool", str(run), "--serial", "--targets", "1", cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "target  1  done already" in proc.stdout
    assert pq.read_table(summary).to_pylist() == before_rows  # all three targets, the same numbers
    after_run, after_targets = pool_run(finished)
    assert after_run.info.status == "FINISHED"
    assert after_run.data.metrics["mean_gain_pt"] == pytest.approx(before_run.data.metrics["mean_gain_pt"])
    assert after_run.data.metrics["targets"] == 3
    assert before_targets == after_targets == [0, 1, 2]  # each target's step once

    report = cli("report", str(run), cwd=cwd)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "better than LT at" in report.stdout and "of 3 sparsities" in report.stdout


def test_empty_targets_is_an_error_that_changes_nothing(finished):
    with NothingChanges(finished["run"], finished["cwd"], finished["tracking_uri"]):
        proc = cli("pool", str(finished["run"]), "--targets", "", cwd=finished["cwd"])
        one_error_line(proc, "--targets: must be a non-empty list of rounds")


def test_a_lost_summary_is_rebuilt_from_the_records(finished):
    run, cwd = finished["run"], finished["cwd"]
    summary = run / "pool" / "interpolation" / "summary.parquet"
    rows = pq.read_table(summary).to_pylist()
    summary.unlink()
    report = cli("report", str(run), cwd=cwd)  # the report reads the targets' records, not the summary
    assert report.returncode == 0, report.stdout + report.stderr
    assert "of 3 sparsities" in report.stdout
    proc = cli("pool", str(run), "--serial", cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(0 evaluations" in proc.stdout
    assert pq.read_table(summary).to_pylist() == rows
