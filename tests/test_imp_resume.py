"""Where a new IMP fit resumes: the newest usable checkpoint of an unfinished round, in any earlier fit of
the run (no Ray needed: this reads the run directory only)."""

import json

from safetensors.torch import save_file

from lp_ray.imp.command import latest_checkpoint
from lp_ray.store import RunDir


def checkpoint(folder, state: dict, truncated: bool = False):
    import torch

    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({"history": {"epochs": [], "starts": []}, **state}))
    save_file({"w": torch.ones(3)}, str(folder / "model.safetensors"))
    save_file({"w": torch.zeros(3)}, str(folder / "optimizer.safetensors"))
    if truncated:  # a copy cut short by a crash
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def test_newest_usable_checkpoint_of_an_unfinished_round(tmp_path):
    run = tmp_path / "run"
    (run / "rounds" / "round_00").mkdir(parents=True)
    for name in ("meta.json", "ticket.safetensors"):  # round 0 is finished
        (run / "rounds" / "round_00" / name).write_text("{}")
    assert latest_checkpoint(RunDir(str(run))) is None

    checkpoint(run / "train" / "fit_00" / "checkpoint_a", {"round": 0, "epoch": 9})  # its round is done
    checkpoint(run / "train" / "fit_00" / "checkpoint_b", {"round": 1, "epoch": 2})
    checkpoint(run / "train" / "fit_01" / "checkpoint_c", {"round": 1, "epoch": 5}, truncated=True)
    (run / "train" / "fit_01" / "checkpoint_d").mkdir()  # no files at all
    (run / "train" / "notes").mkdir()  # not a fit folder
    checkpoint(run / "train" / "notes" / "checkpoint_e", {"round": 1, "epoch": 7})
    assert latest_checkpoint(RunDir(str(run))) == "train/fit_00/checkpoint_b"

    # A run from when every round was its own fit: round_RR/checkpoint_*, no round in state.json.
    checkpoint(run / "round_02" / "checkpoint_f", {"epoch": 1})
    assert latest_checkpoint(RunDir(str(run))) == "round_02/checkpoint_f"
