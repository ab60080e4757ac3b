"""Data safety, kind 3: wrong data is refused, not used. Tickets and pooled networks are checked against
the sha256 recorded when they were written, a round's mask file against its ticket, and a gap in the
rounds names the missing round and how to recompute it."""

import json
import shutil

import pytest
from helpers import NothingChanges, cli, one_error_line

pytestmark = pytest.mark.e2e

READERS = ("pool", "tickets", "report")  # every command that reads a run's tickets


def commands(finished, *extra):
    run = str(finished["run"])
    return {
        "pool": ["pool", run, "--name", "fresh", "--cluster", str(finished["cluster"])],
        "tickets": ["tickets", run, "--layers"],
        "report": ["report", run],
        **{name: args for name, args in extra},
    }


def refused_everywhere(finished, fragments, extra=()):
    """Every reader fails with one line naming the problem; nothing is written anywhere."""
    with NothingChanges(finished["run"], finished["cwd"], finished["tracking_uri"]):
        for args in commands(finished, *extra).values():
            one_error_line(cli(*args, cwd=finished["cwd"]), *fragments)
    assert not (finished["run"] / "pool" / "fresh").exists()


def test_a_ticket_replaced_by_another_rounds_ticket(finished):
    rounds = finished["run"] / "rounds"
    ticket = rounds / "round_01" / "ticket.safetensors"
    good = ticket.read_bytes()
    ticket.write_bytes((rounds / "round_02" / "ticket.safetensors").read_bytes())  # a valid ticket, the wrong one
    try:
        refused_everywhere(
            finished,
            ["round_01/ticket.safetensors: its sha256", "is not the one recorded in", "round_01/meta.json"],
            [("eval", ["eval", str(ticket)])],
        )
    finally:
        ticket.write_bytes(good)


def test_a_mask_file_that_disagrees_with_its_ticket(finished):
    rounds = finished["run"] / "rounds"
    mask = rounds / "round_01" / "mask.safetensors"
    good = mask.read_bytes()
    mask.write_bytes((rounds / "round_02" / "mask.safetensors").read_bytes())
    try:
        refused_everywhere(finished, ["round_01/mask.safetensors: disagrees with the mask inside"])
    finally:
        mask.write_bytes(good)


def test_a_replaced_pooled_network(finished):
    pool = finished["run"] / "pool" / "interpolation"
    target = pool / "target_00.safetensors"
    good = target.read_bytes()
    target.write_bytes((pool / "target_01.safetensors").read_bytes())
    try:
        with NothingChanges(finished["run"], finished["cwd"], finished["tracking_uri"]):
            for args in (["eval", str(target)], ["report", str(finished["run"])]):
                one_error_line(cli(*args, cwd=finished["cwd"]), "target_00.safetensors: its sha256", "target_00.json")
    finally:
        target.write_bytes(good)


def test_a_missing_round_is_a_gap_the_message_says_how_to_close(finished, tmp_path):
    run = finished["run"]
    kept = tmp_path / "round_01"
    shutil.move(run / "rounds" / "round_01", kept)
    sha = (kept / "meta.json").read_text()
    line = None
    with NothingChanges(run, finished["cwd"], finished["tracking_uri"]):
        for args in commands(finished).values():
            line = one_error_line(
                cli(*args, cwd=finished["cwd"]), "round 1 has no finished ticket but round 2 has", "recompute it with"
            )
    # the command the message gives does recompute it, bit for bit (finished rounds are kept)
    assert f"`lp-ray imp --job {run / 'job.yaml'}`" in line
    again = cli("imp", "--job", str(run / "job.yaml"), "--cluster", str(finished["cluster"]), cwd=finished["cwd"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert "round  0  done already" in again.stdout and "round  2  done already" in again.stdout
    assert "round  1  trained" in again.stdout
    assert (
        json.loads((run / "rounds" / "round_01" / "meta.json").read_text())["ticket_sha256"]
        == json.loads(sha)["ticket_sha256"]
    )
    assert (run / "rounds" / "round_01" / "ticket.safetensors").read_bytes() == (
        kept / "ticket.safetensors"
    ).read_bytes()
