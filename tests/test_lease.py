"""Leases (lp_ray/lease.py): one holder at a time, on local paths and on an S3-compatible server (moto),
with real processes racing for them; waiting, --no-wait, takeover of a dead holder's lease, a live
holder's heartbeat, a holder that lost its lease."""

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from helpers import S3_TEST_CREDENTIALS, start_moto, stop

from lp_ray import lease as lease_mod
from lp_ray.errors import LpRayError
from lp_ray.lease import Holder, Lease, read_holder
from lp_ray.store import RunDir

REL = "lease.imp.json"


def write_holder(run: RunDir, **fields) -> Holder:
    h = Holder(
        **{"token": "t0", "host": socket.gethostname(), "pid": 1, "command": "lp-ray imp", "since": 0.0, **fields}
    )
    run.write_bytes(REL, json.dumps(h.__dict__).encode())
    return h


def test_second_command_fails_with_no_wait_then_takes_it_after_release(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    first = Lease(run, REL, "lp-ray run jobs/tiny.yaml")
    first.acquire()
    held = read_holder(run, REL)
    assert held.pid == os.getpid() and held.command == "lp-ray run jobs/tiny.yaml" and held.host == socket.gethostname()
    with pytest.raises(LpRayError) as e:
        Lease(run, REL, "lp-ray imp", wait=False).acquire()
    msg = str(e.value)
    assert "held by `lp-ray run jobs/tiny.yaml`" in msg and f"pid {os.getpid()}" in msg and "--no-wait" in msg
    first.release()
    assert not (tmp_path / "run" / REL).exists()  # given back: no file left
    with Lease(run, REL, "lp-ray imp", wait=False):
        assert read_holder(run, REL).command == "lp-ray imp"
    assert sorted(os.listdir(tmp_path / "run")) == []  # no temporary or marker files left either


def test_waiter_says_so_once_and_continues_when_given_back(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    lines, got = [], []
    first = Lease(run, REL, "lp-ray imp")
    first.acquire()

    def second():
        with Lease(run, REL, "lp-ray run", say=lines.append):
            got.append(time.monotonic())

    t = threading.Thread(target=second)
    t.start()
    time.sleep(2.5)
    assert not got and len(lines) == 1
    assert lines[0].startswith("waiting: ") and "held by `lp-ray imp`" in lines[0] and "continuing when" in lines[0]
    released = time.monotonic()
    first.release()
    t.join(10)
    assert got and got[0] >= released and len(lines) == 1


def test_dead_holder_on_this_host_is_taken_over_at_once(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its pid runs nothing
    write_holder(run, pid=dead.pid, command="lp-ray imp (killed)")
    lines = []
    t0 = time.monotonic()
    with Lease(run, REL, "lp-ray imp", wait=False, say=lines.append):  # nobody to wait for: not an error
        assert read_holder(run, REL).pid == os.getpid()
    assert time.monotonic() - t0 < 5
    assert len(lines) == 1 and "taken over from `lp-ray imp (killed)`" in lines[0] and "has ended" in lines[0]


def test_killed_child_not_yet_reaped_counts_as_dead(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    child.kill()
    time.sleep(0.5)  # a zombie until waited for
    write_holder(run, pid=child.pid)
    try:
        with Lease(run, REL, "lp-ray imp", wait=False):
            pass
    finally:
        child.wait()


def test_holder_elsewhere_is_stale_only_when_its_heartbeat_stops(tmp_path, monkeypatch):
    monkeypatch.setattr(lease_mod, "STALE_AFTER_S", 1.5)
    monkeypatch.setattr(lease_mod, "HEARTBEAT_S", 0.2)
    monkeypatch.setattr(lease_mod, "POLL_S", 0.1)
    run = RunDir(str(tmp_path / "run"))
    # A live holder (heartbeating) is waited for, however long.
    live = Lease(run, REL, "lp-ray imp")
    live.acquire()
    got = []
    second = Lease(run, REL, "lp-ray run", say=lambda _: None)
    t = threading.Thread(target=lambda: (second.acquire(), got.append(1)), daemon=True)
    t.start()
    time.sleep(4)
    assert not got and read_holder(run, REL).heartbeat >= 5
    live.release()
    t.join(5)
    assert got and read_holder(run, REL).command == "lp-ray run"
    second.release()
    # A holder on another host whose heartbeat has stopped: taken over after STALE_AFTER_S.
    run2 = RunDir(str(tmp_path / "run2"))
    write_holder(run2, host="some-other-node", pid=os.getpid(), heartbeat=7)
    lines = []
    t0 = time.monotonic()
    with Lease(run2, REL, "lp-ray imp", say=lines.append):
        waited = time.monotonic() - t0
    assert 1.5 <= waited < 6
    assert lines[0].startswith("waiting: ") and "no heartbeat for" in lines[-1]


def test_holder_that_lost_its_lease_stops_at_its_next_check(tmp_path, monkeypatch):
    monkeypatch.setattr(lease_mod, "HEARTBEAT_S", 0.1)
    run = RunDir(str(tmp_path / "run"))
    mine = Lease(run, REL, "lp-ray imp")
    mine.acquire()
    mine.check()
    write_holder(run, token="someone-else", command="lp-ray imp (on node-2)", pid=os.getpid())
    time.sleep(0.5)
    with pytest.raises(LpRayError, match="taken over by `lp-ray imp \\(on node-2\\)`"):
        mine.check()
    mine.release()
    assert read_holder(run, REL).token == "someone-else"  # not ours: left alone


def _contend(uri: str, log: str, n: int) -> None:
    """A process that takes the lease `n` times and records when it held it."""
    for k, v in S3_TEST_CREDENTIALS.items():
        os.environ.setdefault(k, v)
    run = RunDir(uri)
    for _ in range(n):
        with Lease(run, REL, f"contender {os.getpid()}", say=lambda _: None):
            start = time.time()
            time.sleep(0.05)
            with open(log, "a") as f:
                f.write(f"{start} {time.time()}\n")


def race(uri: str, log, processes: int = 6, n: int = 4) -> list[tuple[float, float]]:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_contend, args=(uri, str(log), n)) for _ in range(processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    spans = sorted(tuple(map(float, line.split())) for line in log.read_text().splitlines())
    assert len(spans) == processes * n
    return spans


def test_processes_racing_hold_it_one_at_a_time_locally(tmp_path):
    spans = race(str(tmp_path / "run"), tmp_path / "log")
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False))
    assert os.listdir(tmp_path / "run") == []


@pytest.fixture(scope="module")
def s3():
    proc, endpoint = start_moto("leases")
    try:
        yield f"endpoint_override={endpoint}&scheme=http&region=us-east-1"
    finally:
        stop(proc)


def test_processes_racing_hold_it_one_at_a_time_on_s3(tmp_path, s3):
    """Object stores have no exclusive create in pyarrow: the claim-and-list scheme must still admit
    one holder at a time, and leave nothing behind."""
    uri = f"s3://leases/runs/job-abc?{s3}"
    spans = race(uri, tmp_path / "log", processes=4, n=3)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False))
    assert RunDir(uri).list_dir("") == []


def test_claim_of_a_contender_that_crashed_is_cleared_on_s3(tmp_path, s3, monkeypatch):
    monkeypatch.setattr(lease_mod, "STALE_CLAIM_S", 1.0)
    run = RunDir(f"s3://leases/runs/job-crashed?{s3}")
    run.write_bytes(f"{REL}.claim-crashed", b"{}")
    assert not lease_mod.create_exclusive(run, REL, b"{}")  # a live-looking claim: withdraw
    time.sleep(2.5)  # older than the newest claim by more than STALE_CLAIM_S (server times)
    with Lease(run, REL, "lp-ray imp", wait=False):
        assert read_holder(run, REL).command == "lp-ray imp"
    assert run.list_dir("") == []


def test_marker_of_a_waiter_killed_mid_takeover_is_cleared(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    run.write_bytes(f"{REL}.takeover-0123", b"{}")  # its waiter died between marker and lease
    with Lease(run, REL, "lp-ray imp", wait=False):
        assert os.listdir(tmp_path / "run") == [REL]
    assert os.listdir(tmp_path / "run") == []
