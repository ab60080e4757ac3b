"""MLflow round two, below the commands: the rounding rule, networks as LoggedModels (loadable, logged
once, a half-logged one completed), the Model Registry, a search's verdict, and a tracking server's
outage ridden out and caught up."""

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import torch
from helpers import free_port, start_mlflow_server, stop

from lp_ray.errors import LpRayError


def test_one_rounding_rule_for_what_people_read():
    from lp_ray.rounding import csv_bytes, p_value, points, signed

    assert points(96.89999999999999) == 96.9 and points(61.66666666666667) == 61.67
    assert points(0.225) == 0.23 and signed(0.225) == "+0.23" and signed(-0.004) == "-0.00"
    assert p_value(0.0123456) == 0.0123 and p_value(None) is None
    table = pa.table(
        {
            "weights_remaining": [13.421772800000002],
            "interpolation_gain": [0.22499999999999998],
            "interpolation_mcnemar_p": [0.00012345678],
            "lt_mean": [61.66666666666667],
            "ece_mean": [0.0016249999999999876],  # not points: only the noise goes
            "alphas": [[0.1, 0.30000000000000004]],
        }
    )
    lines = csv_bytes(table).decode().splitlines()
    assert lines[1] == '13.42,0.22,0.000123,61.67,0.001625,"0.1 0.3"'


@pytest.fixture
def tracker(tmp_path):
    from lp_ray.tracking.tracker import Tracker

    return Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "lp-ray/tiny", "h")


def small_network():
    from lp_ray.models import build_model
    from lp_ray.spec import ModelSpec

    torch.manual_seed(0)
    return build_model(ModelSpec(name="conv1d", width=4), 10, (1, 40)).eval()


def test_a_network_is_an_mlflow_model_loadable_without_lp_ray_and_logged_once(tracker):
    import mlflow

    from lp_ray.tracking import networks

    run = tracker.start("pool interpolation", {"lp_ray.kind": "pool:interpolation"})
    net, example = small_network(), np.random.default_rng(0).standard_normal((2, 1, 40)).astype(np.float32)
    args = (tracker, run, "interpolation target 03", networks.model_name("interpolation", 0.512, 3), net, example)
    kw = {"params": {"target": 3}, "tags": {"network_uri": "/r/t.safetensors"}, "metrics": {"gain_pt": 0.23}}
    model_id = networks.log_network(*args, **kw)
    assert networks.log_network(*args, **kw) == model_id  # found again: nothing logged twice
    (model,) = tracker.client.search_logged_models([tracker.experiment_id])
    assert model.name == "51,2pct weights · interpolation · target 03" and model.source_run_id == run
    assert model.tags["lp_ray.serialization"] == "pt2" and model.params["target"] == "3"
    assert [(m.key, m.value) for m in model.metrics] == [("network/gain_pt", 0.23)]
    assert len(tracker.client.get_metric_history(run, "network/gain_pt")) == 1
    mlflow.set_tracking_uri(tracker.uri)
    loaded = mlflow.pytorch.load_model(f"models:/{model_id}")  # a traced graph: no lp-ray class unpickled
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((5, 1, 40)).astype(np.float32))
    assert torch.allclose(loaded(x), net(x), atol=1e-6)
    # A model a killed command created but never finished is completed, not duplicated.
    pending = tracker.client.create_logged_model(
        tracker.experiment_id, name="x", source_run_id=run, tags={networks.TAG_KEY: f"{run}/ticket 00"}
    )
    done = networks.log_network(tracker, run, "ticket 00", "x", net, example, {}, {}, {})
    assert done == pending.model_id and str(tracker.client.get_logged_model(done).status).endswith("READY")
    assert len(tracker.client.search_logged_models([tracker.experiment_id])) == 2


def test_registering_twice_makes_one_version_and_bad_names_are_one_error(tracker):
    from lp_ray.tracking import networks

    run = tracker.start("pool interpolation", {"lp_ray.kind": "pool:interpolation"})
    model_id = networks.log_network(
        tracker, run, "k", "n", small_network(), np.zeros((2, 1, 40), np.float32), {}, {}, {}
    )
    assert networks.register(tracker, model_id, "tiny-net", "interpolation", "d") == "1"
    assert networks.register(tracker, model_id, "tiny-net", "interpolation", "d") == "1"
    assert tracker.client.get_model_version_by_alias("tiny-net", "interpolation").source == f"models:/{model_id}"
    for name, alias, says in [
        ("a/b", None, "not a registered model name"),
        ("ok", "latest", "not a Model Registry alias"),
    ]:
        with pytest.raises(LpRayError, match=says):
            networks.check_registration(name, alias)
    with pytest.raises(LpRayError, match="--log-models must be one of best, pooled, all, none, got 'some'"):
        networks.check_log_models("some")


def result(target, density, lt, pooled, lt_val, val):
    return SimpleNamespace(
        target=target, density=density, lt_test_acc=lt, test_acc=pooled, lt_val_acc=lt_val, val_acc=val,
        gain=pooled - lt, lt_bn_test_acc=None, accepted=[1], alphas=[0.5], path="p", sha256="s",
    )  # fmt: skip


def test_a_search_verdict_names_sparsities_first_with_raw_and_holm_p():
    from lp_ray.tracking import networks
    from lp_ray.tracking.logged import search_verdict, verdict_line

    results = {0: result(0, 1.0, 0.9, 0.9225, 0.90, 0.91), 9: result(9, 0.134, 0.80, 0.79, 0.80, 0.79)}
    significant, p, holm = {0: 1, 9: 0}, {0: 0.001, 9: 0.5}, {0: 0.002, 9: 0.5}
    metrics = {"mean_gain_pt": 0.625, "targets": 2, "targets_better": 1, "targets_significantly_better": 1}
    metrics["targets_significantly_worse"] = 0
    assert networks.best_target(results) == 0  # decided on validation
    line = verdict_line("interpolation", metrics, results, significant)
    assert line.startswith("interpolation +0.63 pt mean over 2 sparsities") and "(100.0% · target 00)" in line
    text = search_verdict("interpolation", metrics, results, p, holm, significant, {0: "m-1"})
    assert "| 13.4% | 09 | 80.00 | 79.00 | -1.00 | 0.5 | 0.5 |  |" in text
    assert "| 100.0% | 00 (model) | 90.00 | 92.25 | +2.25 | 0.001 | 0.002 | better |" in text


def test_a_tracking_server_outage_is_ridden_out_said_once_and_caught_up(tmp_path, monkeypatch, capsys):
    """A server killed mid-command: logging steps return None at once (no traceback, no minutes of
    retries), the outage is said once; restarted, the next step logs what the others missed."""
    from lp_ray.tracking import tracker as tracking
    from lp_ray.tracking.tracker import Tracker

    port = free_port()
    server = start_mlflow_server(tmp_path, port)
    try:
        t = Tracker(f"http://127.0.0.1:{port}", "lp-ray/tiny", "h")
        run = t.start("IMP", {"lp_ray.kind": "imp"})
        steps = []

        def log_missing(upto):  # an idempotent logging step, as lp-ray's are: logs the rounds MLflow lacks
            have = {m.step for m in t.client.get_metric_history(run, "x")}
            t.log_series(run, [{"round": r, "x": r / 10} for r in range(upto) if r not in have], "round")
            steps.append(upto)
            return True

        assert t.attempt(log_missing, 1) is True
        stop(server)
        monkeypatch.setattr(tracking, "PROBE_SECONDS", 3600)
        assert t.attempt(log_missing, 2) is None and t.attempt(log_missing, 3) is None
        out = capsys.readouterr().out
        assert out.count("is unreachable (it stopped answering); lp-ray goes on") == 1, out
        server = start_mlflow_server(tmp_path, port)
        assert t.attempt(log_missing, 4) is None  # not asked again before PROBE_SECONDS
        monkeypatch.setattr(tracking, "PROBE_SECONDS", 0)
        assert t.attempt(log_missing, 4) is True
        assert "answers again after" in capsys.readouterr().out
        assert [m.step for m in t.client.get_metric_history(run, "x")] == [0, 1, 2, 3]
        assert steps == [1, 4] and t.missed == 3
    finally:
        stop(server)
        tracking._OUTAGES.clear()
