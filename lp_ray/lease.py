"""Leases: one command at a time on a piece of a run directory (docs/architecture.md, "Leases").

A command that trains, searches or analyses takes the lease of what it writes before it trains or logs
anything (`imp` the run, `pool` its search, `analyze` its analysis, `sweep` its experiment directory)
and holds it with a heartbeat while it runs. A second command on the same piece waits, says so on one
line, and then continues with what the first left (normally: nothing to do); with `--no-wait` it stops
with one error line instead. Commands that only read (`eval`, `tickets`, `report`) take none.

A lease is a small JSON file beside the work, `lease.<what>.json` (layout.lease_file), recording who
holds it: host, pid, command, since when, and a heartbeat counter the holder bumps every few seconds.

Created atomically:
- local and NFS paths: the record is written to a file of its own and hard-linked to the lease's name;
  link() fails if the name exists, atomically, on NFS too (the classic NFS-safe lock), and a reader
  never sees half a record;
- object stores (S3 and compatible, GCS), where pyarrow has no conditional write: each contender
  writes a claim file of its own, then lists the folder (listing is strongly consistent on S3 since
  2020, on GCS and MinIO): a contender that finds the lease or anyone else's claim withdraws and
  retries after a random pause; one that finds only its own claim writes the lease. Of two contenders
  the later one to finish its claim lists after the earlier claim exists, so both cannot proceed.
  Claims live for milliseconds; one older than the newest by `STALE_CLAIM_S` (server times, so no
  client clock is trusted) is a crashed contender's and is removed.

A lease is stale, and taken over, when its holder is gone: on the same host its pid no longer runs
(kill -9: taken over at once), or, from anywhere, its heartbeat has not moved for `STALE_AFTER_S` as
measured on the waiter's own clock (a lost node; no two hosts' clocks are compared). A takeover is
itself exclusive (one `takeover` marker per stale holder), so two waiters cannot both take over.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass

from lp_ray.errors import LpRayError
from lp_ray.store import RunDir, os_reason, pid_running, temp_name

STALE_AFTER_S = float(os.environ.get("LP_RAY_LEASE_STALE_S", "60"))
HEARTBEAT_S = min(10.0, STALE_AFTER_S / 6)
POLL_S = 1.0
COMMAND_ENV = "LP_RAY_COMMAND"
STALE_CLAIM_S = 30.0


@dataclass(frozen=True)
class Holder:
    token: str
    host: str
    pid: int
    command: str
    since: float  # the holder's clock, for people to read; staleness never compares clocks
    heartbeat: int = 0

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"`{self.command}` (host {self.host}, pid {self.pid}) since {started}"


def this_host() -> str:
    return socket.gethostname()


def command_line() -> str:
    """What a waiting user is shown as the holder: the command as typed (the CLI records it, and a
    sweep hands it to its trials), else this process's arguments."""
    text = os.environ.get(COMMAND_ENV) or " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])
    return text if len(text) <= 200 else text[:197] + "..."


class Lease:
    """with Lease(run, layout.lease_file("imp"), "lp-ray imp ...", wait=True, say=print): ..."""

    def __init__(self, run: RunDir, rel: str, command: str, wait: bool = True, say: Callable[[str], None] = print):
        self.run, self.rel, self.command, self.wait, self.say = run, rel, command, wait, say
        self.holder: Holder | None = None
        self.lost: Holder | None = None  # who took the lease from us (we were judged dead), if anyone
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    @property
    def where(self) -> str:
        return self.run.uri_of(self.rel)

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # --- taking and giving back --------------------------------------------------------------------

    def acquire(self) -> None:
        mine = Holder(uuid.uuid4().hex, this_host(), os.getpid(), self.command, time.time())
        announced = False
        seen, seen_at = None, time.monotonic()
        while True:
            if create_exclusive(self.run, self.rel, _encode(mine)):
                self.holder = mine
                _remove_markers(self.run, self.rel)
                self._beat = threading.Thread(target=self._heartbeat, name="lp-ray-lease", daemon=True)
                self._beat.start()
                return
            holder = read_holder(self.run, self.rel)
            if holder is None:  # given back a moment ago, or a contender's write in flight
                time.sleep(0.05 + 0.2 * random.random())
                continue
            if (holder.token, holder.heartbeat) != seen:
                seen, seen_at = (holder.token, holder.heartbeat), time.monotonic()
            reason = stale_reason(holder, time.monotonic() - seen_at)
            if reason is not None:
                if take_over(self.run, self.rel, holder):
                    self.say(f"lease {self.where}: taken over from {holder.describe()}: {reason}")
                continue
            if not self.wait:
                raise LpRayError(
                    f"{self.where}: held by {holder.describe()}; wait for it to finish, or rerun without --no-wait "
                    "to continue after it"
                )
            if not announced:
                self.say(f"waiting: {self.where} is held by {holder.describe()}; continuing when it is given back")
                announced = True
            time.sleep(POLL_S)

    def release(self) -> None:
        """Stop the heartbeat and remove the lease, if it is still ours."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self.holder is not None:
            current = read_holder(self.run, self.rel)
            if current is not None and current.token == self.holder.token:
                _delete(self.run, self.rel)
            self.holder = None

    def _heartbeat(self) -> None:
        beats = 0
        while not self._stop.wait(HEARTBEAT_S):
            try:
                current = read_holder(self.run, self.rel)
                if current is not None and current.token != self.holder.token:
                    # Judged dead by a waiter (no heartbeat for STALE_AFTER_S): stop beating; the command
                    # finds out through `lost` and stops at its next check.
                    self.lost = current
                    return
                beats += 1
                self.run.write_bytes(self.rel, _encode(Holder(**{**asdict(self.holder), "heartbeat": beats})))
            except LpRayError:
                continue  # storage away for a moment (an S3 restart): beat again at the next tick

    def check(self) -> None:
        """Raise if another command took this lease over (this one was judged dead)."""
        if self.lost is not None:
            raise LpRayError(f"{self.where}: taken over by {self.lost.describe()}; stopping so one command runs")


# --- the storage side ------------------------------------------------------------------------------


def _encode(holder: Holder) -> bytes:
    return (json.dumps(asdict(holder), sort_keys=True) + "\n").encode()


def read_holder(run: RunDir, rel: str) -> Holder | None:
    """The lease's holder, or None where there is no lease (or, for a moment, none readable)."""
    try:  # one request: a missing lease is a read that fails
        return Holder(**json.loads(run.read_bytes(rel)))
    except (LpRayError, OSError, ValueError, TypeError):
        return None


def stale_reason(holder: Holder, unchanged_s: float) -> str | None:
    """Why the holder is gone, or None while it may be alive."""
    if holder.host == this_host() and not pid_running(holder.pid):
        return f"its process {holder.pid} has ended"
    if unchanged_s >= STALE_AFTER_S:
        return f"no heartbeat for {unchanged_s:.0f} s"
    return None


def take_over(run: RunDir, rel: str, stale: Holder) -> bool:
    """Remove a stale lease, if this process wins the one takeover of that holder."""
    marker = f"{rel}.takeover-{stale.token}"
    if not create_exclusive(run, marker, _encode(stale)):
        time.sleep(POLL_S)  # another waiter is taking it over
        return False
    current = read_holder(run, rel)
    if current is not None and current.token == stale.token:
        _delete(run, rel)
    _delete(run, marker)
    return True


def _remove_markers(run: RunDir, rel: str) -> None:
    """Takeover markers of earlier holders, left by a waiter killed mid-takeover: a marker matters only
    while its holder's lease exists, and the lease is now ours."""
    folder, _, name = rel.rpartition("/")
    for n in run.list_dir(folder):
        if n.startswith(f"{name}.takeover-"):
            _delete(run, f"{folder}/{n}" if folder else n)


def create_exclusive(run: RunDir, rel: str, data: bytes) -> bool:
    """Write `rel` with `data` if no file has that name, atomically; whether it was written."""
    if run.scheme is None:
        return _link_exclusive(run.path(rel), data)
    return _claim_exclusive(run, rel, data)


def _link_exclusive(path: str, data: bytes) -> bool:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = temp_name(path)  # a dead writer's is removed like any other (RunDir.remove_orphans)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    except OSError as e:
        raise LpRayError(f"{path}: cannot write it ({os_reason(e)})") from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _claim_exclusive(run: RunDir, rel: str, data: bytes) -> bool:
    import pyarrow.fs as pafs

    prefix = f"{rel.rsplit('/', 1)[-1]}.claim-"
    claim = f"{rel}.claim-{uuid.uuid4().hex}"
    run.write_bytes(claim, data)
    try:
        folder = run.path(rel).rsplit("/", 1)[0]
        infos = run.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        names = {i.base_name: i for i in infos}
        mine = names.get(claim.rsplit("/", 1)[-1])
        claims = [i for n, i in names.items() if n.startswith(prefix)]
        newest = max((i.mtime for i in claims if i.mtime is not None), default=None)
        others = []
        for i in claims:
            if i is mine:
                continue
            if newest is not None and i.mtime is not None and (newest - i.mtime).total_seconds() > STALE_CLAIM_S:
                _delete_path(run, i.path)  # a contender that crashed mid-claim
                continue
            others.append(i)
        if rel.rsplit("/", 1)[-1] in names or others:
            return False
        run.write_bytes(rel, data)
        return True
    finally:
        _delete(run, claim)


def _delete(run: RunDir, rel: str) -> None:
    _delete_path(run, run.path(rel))


def _delete_path(run: RunDir, path: str) -> None:
    try:
        run.fs.delete_file(path)
    except (FileNotFoundError, OSError):
        pass  # gone already: someone else cleaned up
