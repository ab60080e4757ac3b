"""End to end on the session's Ray cluster: the transformer path. `lp-ray run` of a tiny vision
transformer (LayerNorm, no BatchNorm) trained with AdamW, warm-up + cosine, decay on weights only and
gradient clipping, 2 DDP workers, one worker killed mid-round; the same job again without the kill
(bit-identical tickets: AdamW's state is in the checkpoint); the pool without recalibration, serial and
Ray traces identical; the best network exported to MLflow as a traced pt2 model."""

import json

import pytest
import torch
from helpers import cli, only_run, tiny_cluster, write_yaml
from mlflow.tracking import MlflowClient
from test_e2e_pool import summary, trace

from lp_ray.store import decode_weights

pytestmark = pytest.mark.e2e

TINY_VIT = {
    "name": "tiny-vit",
    "data": {"dataset": "mnist1d", "num_samples": 2000},
    "model": {"name": "vit", "width": 16, "depth": 2, "heads": 2, "patch_size": 4},
    "train": {
        "epochs": 4,
        "optimizer": "adamw",
        "lr": 0.003,
        "schedule": "cosine",
        "warmup_epochs": 1,
        "weight_decay": 0.05,
        "weight_decay_on": "weights",
        "grad_clip": 1.0,
    },
    "imp": {"rounds": 3, "rewind_epoch": 1},
}
BLOCK_LINEARS = sorted(f"blocks.{b}.{n}.weight" for b in range(2) for n in ("attn.qkv", "attn.proj", "fc1", "fc2"))


def ticket(run, r):
    path = run / "rounds" / f"round_{r:02d}" / "ticket.safetensors"
    return decode_weights(path.read_bytes(), str(path))


@pytest.fixture(scope="module")
def vit_runs(tmp_path_factory, ray_address):
    """The tiny ViT's main job with a worker killed in round 1 after its epoch-2 checkpoint, and the
    same job's IMP without the kill."""
    out = {}
    for name, env in (("killed", {"LP_RAY_INJECT_FAILURE": "1:2"}), ("whole", None)):
        d = tmp_path_factory.mktemp(f"vit-{name}")
        job = write_yaml(d / "tiny-vit.yaml", TINY_VIT)
        cluster = write_yaml(d / "cluster.yaml", tiny_cluster(d / "runs", ray_address))
        uri = f"sqlite:///{d / 'mlflow.db'}"
        command = "run" if name == "killed" else "imp"
        proc = cli(command, "--job", str(job), "--cluster", str(cluster), "--tracking-uri", uri, cwd=d, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out[name] = {"dir": d, "run": only_run(d), "stdout": proc.stdout, "cluster": cluster, "uri": uri}
    return out


def test_a_killed_adamw_round_resumes_bit_for_bit(vit_runs):
    killed, whole = vit_runs["killed"]["run"], vit_runs["whole"]["run"]
    assert (killed / "rounds" / "round_01" / "injected_failure_2").exists()
    meta = json.loads((killed / "rounds" / "round_01" / "meta.json").read_text())
    assert meta["starts"][0] == 1 and len(meta["starts"]) == 2  # resumed from a checkpoint, not restarted
    for r in range(3):
        (a, mask_a), (b, mask_b) = ticket(killed, r), ticket(whole, r)
        assert sorted(mask_a) == BLOCK_LINEARS  # only the blocks' Linear weights are pruned
        for name in a:
            assert torch.equal(a[name], b[name]), (r, name)
        for name, m in mask_a.items():
            assert torch.equal(m, mask_b[name]) and torch.all(a[name][m == 0] == 0)
    assert (killed / "rewind.safetensors").exists() and (killed / "rewind_optimizer.safetensors").exists()
    # the schedule: warm-up over epoch 0, cosine after it; a rewound round restarts it at the rewind epoch
    history = json.loads((killed / "rounds" / "round_02" / "history.json").read_text())
    lrs = [row["lr"] for row in history["epochs"]]
    assert [row["epoch"] for row in history["epochs"]] == [1, 2, 3] and lrs[0] == pytest.approx(0.003)
    assert lrs[0] > lrs[1] > lrs[2] > 0


def test_the_pool_skips_recalibration_and_says_so_with_identical_serial_and_ray_traces(vit_runs):
    v = vit_runs["killed"]
    run, out = v["run"], v["stdout"]
    assert "3 rounds of 4 epochs (adamw, cosine, 1 warm-up epoch(s)), 2 worker(s)" in out
    assert "no BatchNorm in vit: recalibration skipped, an evaluation is one pass over validation" in out
    rows = trace(run, "interpolation")
    assert len(rows) == 3 * (1 + 2 * 11) and {r["bn_examples"] for r in rows} == {0}
    serial = cli("pool", str(run), "--serial", "--name", "serial", "--tracking-uri", v["uri"], cwd=v["dir"])
    assert serial.returncode == 0, serial.stdout + serial.stderr
    assert trace(run, "serial") == rows and summary(run, "serial") == summary(run, "interpolation")
    # LT+BN is the ticket itself: nothing to recalibrate
    for r in summary(run, "interpolation"):
        assert r["lt_bn_test_acc"] == r["lt_test_acc"]


def test_the_best_vit_network_is_a_traced_mlflow_model(vit_runs):
    import mlflow.pytorch

    v = vit_runs["killed"]
    client = MlflowClient(v["uri"])
    (experiment,) = [e for e in client.search_experiments() if e.name.startswith("lp-ray/")]
    models = client.search_logged_models([experiment.experiment_id])  # each search's best network
    assert len(models) == 2 and {m.tags["lp_ray.serialization"] for m in models} == {"pt2"}
    model = models[0]
    mlflow.set_tracking_uri(v["uri"])
    loaded = mlflow.pytorch.load_model(f"models:/{model.model_id}")
    x = torch.randn(3, 40)
    assert loaded(x).shape == (3, 10)
