"""The roads in for a user's own experiment, end to end through the real CLI: an installed plugin
package (the example in examples/openlth-plugin: OpenLTH's CIFAR ResNet and an .npz data set) run by
`lp-ray run` on the session's cluster, and tickets from one's own IMP code (`lp-ray import --format
files`) of a network from one's own module, pooled without retraining. (A module of one's own on a
multi-node cluster: test_e2e_cluster.py; the Python API: test_e2e_api.py.)"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import BIN, cli, one_error_line, tiny_cluster, write_yaml

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "openlth-plugin"


def npz_images(folder: Path, n_train: int, n_test: int) -> None:
    """Ten classes of 8x8 RGB images, channels last: a bright patch at a class's own place, plus noise."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        y = rng.integers(0, 10, n)
        x = rng.normal(0, 0.5, (n, 8, 8, 3)).astype(np.float32)
        for i, c in enumerate(y):
            r, q = divmod(int(c), 5)
            x[i, 1 + 4 * r : 3 + 4 * r, q : q + 2, :] += 2.0
        np.savez(folder / f"{split}.npz", x=x, y=y.astype(np.int64))


def test_an_installed_plugin_package_runs_end_to_end(tmp_path, ray_address, tracking_uri):
    # Installed as pip installs it (its metadata declares the entry points), into a folder of its own so
    # the suite's environment is left as it was; the cluster's nodes get it through the cluster spec.
    site, source = tmp_path / "site", tmp_path / "openlth-plugin"
    shutil.copytree(EXAMPLE, source)  # pip builds in the source folder: leave the checkout as it was
    pip = [str(BIN / "pip"), "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site)]
    subprocess.run([*pip, str(source)], check=True, capture_output=True)
    env = {"PYTHONPATH": str(site)}
    npz_images(tmp_path / "data", 240, 200)
    job = write_yaml(
        tmp_path / "job.yaml",
        {
            "name": "resnet-npz",
            "data": {"dataset": "npz", "path": "data", "channels_last": True},
            "model": {"name": "openlth_cifar_resnet", "depth": 8, "base_width": 4},
            "train": {"epochs": 3, "lr_drops": [2], "batch_size": 40},
            "imp": {"rounds": 3, "rewind_epoch": 1},
        },
    )
    cluster = write_yaml(
        tmp_path / "cluster.yaml",
        {**tiny_cluster(tmp_path / "runs", ray_address), "runtime_env": {"env_vars": env}},
    )
    # A wrong value of the package's own field: one line, before anything starts, nothing written.
    bad = cli("run", "--job", str(job), "--cluster", str(cluster), "model.depth=9", cwd=tmp_path, env=env)
    one_error_line(bad, "model.depth: must be 6n+2 with n >= 1 (20, 32, 44, 56, ...), got 9")
    assert not (tmp_path / "runs").exists()

    proc = cli(
        "run", "--job", str(job), "--cluster", str(cluster), "--tracking-uri", tracking_uri, cwd=tmp_path, env=env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = next((tmp_path / "runs").iterdir())
    recorded = yaml.safe_load((run / "job.yaml").read_text())
    assert recorded["plugin_versions"] == {
        "model openlth_cifar_resnet": "lp_ray_openlth.models from lp-ray-openlth 0.1.0",
        "dataset npz": "lp_ray_openlth.npz from lp-ray-openlth 0.1.0",
    }
    assert recorded["model"]["depth"] == 8 and recorded["data"]["path"] == str(tmp_path / "data")
    rows = list(csv.DictReader((run / "report.csv").open()))
    assert [round(float(r["weights_remaining"])) for r in rows] == [100, 80, 64]
    history = json.loads((run / "rounds" / "round_00" / "history.json").read_text())
    assert len(history["epochs"]) == 3
    # lp-ray's seeded validation split of the package's 240 training images: 24 of them
    correct = json.loads((run / "rounds" / "round_00" / "meta.json").read_text())["val_acc"] * 24
    assert abs(correct - round(correct)) < 1e-6


OWN_NETS = """
from lp_ray.plugins import Field, register_model


@register_model("tiny_mlp", fields={"hidden": Field(int, 32)})
def tiny_mlp(num_classes, input_shape, hidden):
    import torch.nn as nn

    return nn.Sequential(nn.Unflatten(1, (1, input_shape[-1])), nn.Conv1d(1, 8, 5, padding=2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * input_shape[-1], hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
"""


def test_tickets_from_ones_own_imp_code_are_imported_and_pooled(tmp_path, tracking_uri):
    (tmp_path / "own_nets.py").write_text(OWN_NETS)
    spec = {
        "name": "own-tickets",
        "plugins": ["own_nets"],
        "data": {"dataset": "mnist1d", "num_samples": 2000},
        "model": {"name": "tiny_mlp", "hidden": 16},
        "imp": {"rounds": 3, "prune_linear": True},
    }
    job = write_yaml(tmp_path / "job.yaml", spec)
    cluster = write_yaml(tmp_path / "cluster.yaml", {"storage_path": str(tmp_path / "runs")})

    # Someone's own IMP: three tickets of the network (own_nets.py's, built here as their code would),
    # 100%, 80% and 64% of the weights, by magnitude.
    from safetensors.torch import save_file
    from torch import nn

    torch.manual_seed(0)
    tickets = tmp_path / "tickets"
    tickets.mkdir()
    net = nn.Sequential(
        nn.Unflatten(1, (1, 40)),
        nn.Conv1d(1, 8, 5, padding=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 40, 16),
        nn.ReLU(),
        nn.Linear(16, 10),
    )
    prunable = ["1.weight", "4.weight", "6.weight"]
    entries = []
    for r in range(3):
        state = {k: v.clone() + 0.01 * r for k, v in net.state_dict().items()}
        if r:
            flat = torch.cat([state[k].abs().flatten() for k in prunable])
            keep = int(round(len(flat) * 0.8**r))
            threshold = flat.sort(descending=True).values[keep - 1]
            masks = {k: (state[k].abs() >= threshold).float() for k in prunable}
            for k in prunable:
                state[k] = state[k] * masks[k]
            if r == 1:  # round 1 with its mask file, round 2 without: its mask is where weights are nonzero
                save_file(masks, str(tickets / f"mask_{r}.safetensors"))
        save_file(state, str(tickets / f"round_{r}.safetensors"))
        entries.append(
            {"round": r, "weights": f"round_{r}.safetensors", **({"mask": "mask_1.safetensors"} if r == 1 else {})}
        )
    save_file(net.state_dict(), str(tickets / "rewind.safetensors"))

    # A manifest that points outside its folder: one line, nothing written.
    write_yaml(tickets / "tickets.yaml", {"rounds": [{"round": 0, "weights": "../job.yaml"}]})
    bad = cli("import", str(tickets), "--format", "files", "--job", str(job), "--cluster", str(cluster), cwd=tmp_path)
    one_error_line(bad, "'../job.yaml' must be a file name inside the folder")
    assert not (tmp_path / "runs").exists()

    write_yaml(tickets / "tickets.yaml", {"rewind": "rewind.safetensors", "rounds": entries})
    proc = cli(
        "import", str(tickets), "--format", "files", "--job", str(job), "--cluster", str(cluster),
        "--tracking-uri", tracking_uri, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    densities = [
        line.split("density")[1].split("%")[0].strip() for line in proc.stdout.splitlines() if "imported:" in line
    ]
    assert densities == ["100.00", "80.00", "64.00"]
    run = next((tmp_path / "runs").iterdir())
    assert (run / "rewind.safetensors").is_file() and (run / "plugins" / "own_nets.py").read_text() == OWN_NETS

    pooled = cli("pool", str(run), "--serial", "--method", "average", "--tracking-uri", tracking_uri, cwd=tmp_path)
    assert pooled.returncode == 0, pooled.stdout + pooled.stderr
    target = json.loads((run / "pool" / "average" / "target_02.json").read_text())["result"]
    assert target["density"] == pytest.approx(0.64, abs=0.001)  # re-pruned to its ticket's density
