import json
import time

import pytest
import torch

from lp_ray import layout
from lp_ray.errors import LpRayError
from lp_ray.models import build_model
from lp_ray.sparsity import dense_mask, prunable_names, prune_fraction
from lp_ray.spec import ModelSpec
from lp_ray.store import RunDir, TicketMeta, finished_rounds, read_ticket, sha256, write_rounds_table, write_ticket


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model(ModelSpec(name="conv1d", width=8), 10, (40,))


def test_ticket_round_trip(tmp_path, model):
    run = RunDir(str(tmp_path / "run"))
    state = model.state_dict()
    names = prunable_names(model)
    mask = prune_fraction(state, dense_mask(state, names), 0.2)
    write_ticket(run, 0, state, dense_mask(state, names), TicketMeta(round=0, density=1.0, val_acc=0.5, test_acc=0.4))
    digest = write_ticket(run, 1, state, mask, TicketMeta(round=1, density=0.8, val_acc=0.5, test_acc=0.4))
    assert finished_rounds(run) == [0, 1]
    assert sha256(run.read_bytes(layout.ticket(1))) == digest
    assert json.loads(run.read_bytes(layout.ticket_meta(1)))["ticket_sha256"] == digest
    got, got_mask = read_ticket(run, 1, state, set(names))
    assert all(torch.equal(got[k], state[k]) for k in state)
    assert all(torch.equal(got_mask[k], mask[k]) for k in mask)
    table = write_rounds_table(run)
    assert table.column("round").to_pylist() == [0, 1] and table.column("density").to_pylist() == [1.0, 0.8]
    # no temporary files are left behind
    assert not [p for p in (tmp_path / "run").rglob(".tmp-*")]


def test_corrupt_truncated_and_mismatched_tickets(tmp_path, model):
    run = RunDir(str(tmp_path / "run"))
    state = model.state_dict()
    names = prunable_names(model)
    write_ticket(run, 0, state, dense_mask(state, names), TicketMeta(round=0, density=1.0, val_acc=0.0, test_acc=0.0))
    path = tmp_path / "run" / "rounds" / "round_00" / "ticket.safetensors"
    good = path.read_bytes()

    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(LpRayError, match=r"round_00/ticket.safetensors: corrupt or truncated weights file"):
        read_ticket(run, 0, state)
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(LpRayError, match="corrupt or truncated"):
        read_ticket(run, 0, state)

    path.write_bytes(good)
    wider = build_model(ModelSpec(name="conv1d", width=16), 10, (40,)).state_dict()
    with pytest.raises(
        LpRayError,
        match=r"ticket.safetensors: does not match the model \(features.0.weight has shape \(8, 1, 5\), expected \(16, 1, 5\)\)",
    ):
        read_ticket(run, 0, wider)
    other_arch = build_model(ModelSpec(name="cifar_vgg16"), 10, (3, 32, 32)).state_dict()
    with pytest.raises(LpRayError, match=r"does not match the model \(missing"):
        read_ticket(run, 0, other_arch)
    with pytest.raises(LpRayError, match="mask covers 3 tensors, the job prunes 4"):
        read_ticket(run, 0, state, set(prunable_names(model, prune_linear=True)))
    with pytest.raises(LpRayError, match="round_05/ticket.safetensors: no such file"):
        read_ticket(run, 5, state)


def test_ticket_is_not_a_pickle(tmp_path, model):
    run = RunDir(str(tmp_path / "run"))
    state = model.state_dict()
    write_ticket(
        run,
        0,
        state,
        dense_mask(state, prunable_names(model)),
        TicketMeta(round=0, density=1.0, val_acc=0.0, test_acc=0.0),
    )
    raw = (tmp_path / "run" / "rounds" / "round_00" / "ticket.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    assert json.loads(header["__metadata__"]["lp_ray"]) == {"format": "lp-ray-ticket/1", "round": "0"}
    assert "state/features.0.weight" in header and "mask/features.0.weight" in header


def test_identical_weights_give_identical_files_across_processes(tmp_path, model):
    import subprocess
    import sys

    code = (
        "import torch, hashlib; from lp_ray.store import encode_weights; torch.manual_seed(0); "
        "w={'a': torch.randn(3), 'b': torch.randn(2)}; "
        "print(hashlib.sha256(encode_weights(w, {'a': torch.ones(3)}, {'round': '1', 'method': 'x', 'z': 'y'})).hexdigest())"
    )
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout for _ in range(4)}
    assert len(digests) == 1 and len(next(iter(digests)).strip()) == 64


def test_a_replaced_ticket_a_disagreeing_mask_and_a_gap_are_refused(tmp_path, model):
    run = RunDir(str(tmp_path / "run"))
    state = model.state_dict()
    names = prunable_names(model)
    masks = [dense_mask(state, names)]
    masks.append(prune_fraction(state, masks[0], 0.2))
    masks.append(prune_fraction(state, masks[1], 0.2))
    for r, m in enumerate(masks):
        write_ticket(run, r, state, m, TicketMeta(round=r, density=1.0, val_acc=0.5, test_acc=0.4))
    from lp_ray.store import write_mask

    write_mask(run, layout.mask(1), masks[1])
    path = tmp_path / "run" / "rounds"
    good = (path / "round_01" / "ticket.safetensors").read_bytes()
    # another round's valid ticket in its place: it decodes, but it is not the bytes meta.json recorded
    (path / "round_01" / "ticket.safetensors").write_bytes((path / "round_02" / "ticket.safetensors").read_bytes())
    with pytest.raises(
        LpRayError,
        match=r"round_01/ticket.safetensors: its sha256 \(.*\) is not the one recorded in .*round_01/meta.json",
    ):
        read_ticket(run, 1, state, set(names))
    (path / "round_01" / "ticket.safetensors").write_bytes(good)
    write_mask(run, layout.mask(1), masks[2])  # the round's mask file no longer matches its ticket
    with pytest.raises(
        LpRayError, match=r"round_01/mask.safetensors: disagrees with the mask inside .*round_01/ticket"
    ):
        read_ticket(run, 1, state, set(names))
    (path / "round_01" / "meta.json").unlink()
    with pytest.raises(
        LpRayError,
        match=r"round_01: round 1 has no finished ticket but round 2 has; recompute it with `lp-ray imp --job .*job.yaml`",
    ):
        finished_rounds(run)


def test_temporary_files_of_killed_writers_are_removed_and_nobody_elses(tmp_path):
    """A writer killed between its temporary file and the rename leaves the temporary behind; the next
    command removes those whose writer (on this host) no longer runs, and leaves live writers' and
    foreign hosts' alone."""
    import os
    import subprocess
    import sys

    from lp_ray.store import _HOST, TMP_PREFIX

    run = RunDir(str(tmp_path / "run"))
    run.write_bytes("rounds.parquet", b"old")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    names = {
        "dead": f"{TMP_PREFIX}{_HOST}-{dead.pid}-0123456789ab-rounds.parquet",
        "live": f"{TMP_PREFIX}{_HOST}-{os.getpid()}-0123456789ab-rounds.parquet",
        "elsewhere": f"{TMP_PREFIX}other_node-{dead.pid}-0123456789ab-rounds.parquet",
        "old style": f"{TMP_PREFIX}0123456789abcdef0123456789abcdef-rounds.parquet",
    }
    for n in names.values():
        (tmp_path / "run" / n).write_bytes(b"half")
    assert run.remove_orphans("") == 1
    left = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert left == sorted([names["live"], names["elsewhere"], names["old style"], "rounds.parquet"])
    assert (tmp_path / "run" / "rounds.parquet").read_bytes() == b"old"


def test_rounds_table_repaired_when_stale_and_left_alone_when_not(tmp_path, model):
    """A driver killed after a round's meta.json and before rounds.parquet: the rerun, finding every
    round finished, repairs the table; a current table is not rewritten."""
    run = RunDir(str(tmp_path / "run"))
    state = model.state_dict()
    mask = dense_mask(state, prunable_names(model))
    write_ticket(run, 0, state, mask, TicketMeta(round=0, density=1.0, val_acc=0.5, test_acc=0.4))
    write_rounds_table(run)
    write_ticket(run, 1, state, mask, TicketMeta(round=1, density=1.0, val_acc=0.6, test_acc=0.5))  # no table
    table = tmp_path / "run" / "rounds.parquet"
    assert run.read_table("rounds.parquet").column("round").to_pylist() == [0]
    write_rounds_table(run, only_if_stale=True)
    assert run.read_table("rounds.parquet").column("round").to_pylist() == [0, 1]
    stamp = table.stat().st_mtime_ns
    time.sleep(0.01)
    write_rounds_table(run, only_if_stale=True)
    assert table.stat().st_mtime_ns == stamp
