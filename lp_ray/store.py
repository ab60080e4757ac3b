"""The run directory, read and written through `pyarrow.fs` (local paths, NFS, s3://), the same
filesystem layer Ray Train uses, so one run directory serves a laptop and a cluster. Which files a run
holds is said in one place, `layout.py`; this module reads and writes them, and turns what is read
back into typed records (`TicketMeta`, `TrackingInfo`).

Every write is atomic: a temporary name, then a rename. A stage is finished only when its last output
(a ticket's meta.json) exists, so rerunning a command skips finished stages.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import uuid
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lp_ray import layout
from lp_ray.errors import LpRayError

if TYPE_CHECKING:
    import torch

# torch and safetensors are imported by the functions that read and write weights: a command that
# fails on its input (a wrong path, a bad option) says so without loading torch (~1.5 s).

TICKET_FORMAT = "lp-ray-ticket/1"
TMP_PREFIX = ".tmp-"
ATOMIC_UPLOADS = ("s3", "gs", "gcs")  # object stores: an upload appears whole or not at all
_HOST = socket.gethostname().replace("-", "_")  # '-' separates the parts of a temporary file's name


def temp_name(final: str) -> str:
    """Where a file is written before it is renamed to `final`: beside it, named for its writer (host,
    pid), so that `RunDir.remove_orphans` can tell a dead writer's leftover from a live one's."""
    folder, name = final.rsplit("/", 1)
    return f"{folder}/{TMP_PREFIX}{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}-{name}"


def pid_running(pid: int) -> bool:
    """Whether a process of this host runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def resolve_fs(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it. URIs may carry filesystem options as a query, e.g.
    s3://bucket/runs?endpoint_override=127.0.0.1:9000&scheme=http&region=us-east-1."""
    if "://" in uri:
        try:
            return pafs.FileSystem.from_uri(uri)
        except (pa.ArrowInvalid, OSError) as e:
            raise LpRayError(f"{uri}: cannot open storage: {e}") from None
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def join_uri(uri: str, rel: str) -> str:
    """`uri`/`rel`, keeping a filesystem-options query at the end."""
    base, sep, query = uri.partition("?")
    return f"{base.rstrip('/')}/{rel}{sep}{query}"


def check_storage_reachable(uri: str) -> None:
    """Before a run writes anything: a local storage path must be (or be creatable as) a writable
    directory; object stores fail late and slowly, so their bucket is checked."""
    if "://" not in uri:
        _check_local_storage(uri)
        return
    if not uri.startswith(("s3://", "gs://")):
        return
    fs, path = resolve_fs(uri)
    bucket = path.split("/")[0]
    try:
        info = fs.get_file_info(bucket)
    except OSError as e:
        raise LpRayError(f"{uri.partition('?')[0]}: storage unreachable ({str(e).splitlines()[0]})") from None
    if info.type == pafs.FileType.NotFound:
        raise LpRayError(f"{uri.partition('?')[0]}: bucket {bucket!r} does not exist; create it first")


def _check_local_storage(path: str) -> None:
    """The nearest existing folder of `path` must be a directory we can write in (`storage_path` a file,
    or on read-only storage, failed with a traceback after Ray and MLflow had started)."""
    p = os.path.abspath(os.path.expanduser(path))
    existing = p
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise LpRayError(f"storage_path {path!r}: {existing} is a file, not a directory")
    probe = os.path.join(existing, f".lp-ray-write-check-{uuid.uuid4().hex}")
    try:  # access() would say yes to root on a read-only mount's permission bits; a real write says no
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        os.unlink(probe)
    except OSError as e:
        raise LpRayError(f"storage_path {path!r}: cannot write in {existing} ({os_reason(e)})") from None


class RunDir:
    """One run directory on some pyarrow filesystem. Paths given to methods are relative to it."""

    def __init__(self, uri: str):
        self.fs, self.base = resolve_fs(uri)
        self.base = self.base.rstrip("/")
        head, _, self.query = uri.partition("?")
        self.scheme = head.split("://", 1)[0] if "://" in head else None
        self.uri = self.uri_of("")

    def uri_of(self, rel: str = "") -> str:
        """What to hand to another process or log: a local path, or scheme://path?options."""
        if self.scheme is None:
            return self.path(rel)
        return f"{self.scheme}://{self.path(rel)}" + (f"?{self.query}" if self.query else "")

    def path(self, rel: str = "") -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def is_dir(self, rel: str = "") -> bool:
        return self.fs.get_file_info(self.path(rel)).type == pafs.FileType.Directory

    def read_bytes(self, rel: str) -> bytes:
        try:
            with self.fs.open_input_stream(self.path(rel)) as f:
                return f.read()
        except FileNotFoundError:
            raise LpRayError(f"{self.path(rel)}: no such file") from None
        except OSError as e:
            raise LpRayError(f"{self.path(rel)}: cannot read it ({os_reason(e)})") from None

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Atomic: readers see the old file or the whole new one, never half of it. A failed write (disk
        full, read-only storage) removes its temporary file and leaves the old file as it was.

        On an object store one upload already is atomic (an object appears whole when its upload
        completes), so it is written in place: a temporary object and a copy would cost twice the
        requests and leave the temporary behind when the writer is killed between the two (seen in the
        chaos run). Elsewhere the temporary file is named for its writer (host, pid), so a later command
        can remove the ones whose writer died (`remove_orphans`)."""
        final = self.path(rel)
        parent = final.rsplit("/", 1)[0]
        if self.scheme in ATOMIC_UPLOADS:
            try:
                with self.fs.open_output_stream(final) as f:
                    f.write(data)
                return
            except OSError as e:
                raise LpRayError(f"{final}: cannot write it ({os_reason(e)})") from None
        tmp = temp_name(final)
        try:
            self.fs.create_dir(parent, recursive=True)
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, final)
        except OSError as e:
            try:
                self.fs.delete_file(tmp)
            except OSError:
                pass  # never created, or the storage is gone: nothing of ours is left either way
            raise LpRayError(f"{final}: cannot write it ({os_reason(e)})") from None

    def remove_orphans(self, rel: str = "") -> int:
        """Remove the temporary files in folder `rel` that a writer on this host left when it was killed
        mid-write (its pid no longer runs); others' are left alone. Returns how many. Object stores are
        written in place (`write_bytes`) and hold none: nothing to list there."""
        if self.scheme in ATOMIC_UPLOADS:
            return 0
        removed = 0
        for name in self.list_dir(rel):
            parts = name[len(TMP_PREFIX) :].split("-", 2) if name.startswith(TMP_PREFIX) else []
            if len(parts) == 3 and parts[0] == _HOST and parts[1].isdigit() and not pid_running(int(parts[1])):
                try:
                    self.fs.delete_file(self.path(f"{rel}/{name}" if rel else name))
                    removed += 1
                except OSError:
                    pass  # removed by another command meanwhile
        return removed

    def read_json(self, rel: str) -> Any:
        raw = self.read_bytes(rel)
        try:
            return json.loads(raw)
        except json.JSONDecodeError as e:
            raise LpRayError(f"{self.path(rel)}: corrupt JSON: {e}") from None

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())

    def list_dir(self, rel: str) -> list[str]:
        sel = pafs.FileSelector(self.path(rel), allow_not_found=True)
        return sorted(i.base_name for i in self.fs.get_file_info(sel))

    def write_table(self, rel: str, table: pa.Table) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf)
        self.write_bytes(rel, buf.getvalue())

    def read_table(self, rel: str) -> pa.Table:
        try:
            return pq.read_table(io.BytesIO(self.read_bytes(rel)))
        except pa.ArrowInvalid as e:
            raise LpRayError(f"{self.path(rel)}: corrupt Parquet file: {e}") from None

    def delete(self, rel: str) -> None:
        if self.exists(rel):
            info = self.fs.get_file_info(self.path(rel))
            if info.type == pafs.FileType.Directory:
                self.fs.delete_dir(self.path(rel))
            else:
                self.fs.delete_file(self.path(rel))


def os_reason(e: OSError) -> str:
    """The cause of an OSError in a few words (`No space left on device`), for one-line errors; pyarrow
    wraps it as "Error writing bytes to file. Detail: [errno 28] No space left on device"."""
    text = e.strerror or (str(e).strip().splitlines() or [type(e).__name__])[0]
    m = re.search(r"\[errno \d+\] (.+)$", text)
    return m.group(1) if m else text


def read_job(run: RunDir):
    """The job spec a run directory was made for (its job.yaml), validated like any spec file."""
    import yaml

    from lp_ray.spec_loading import job_from_dict

    if not run.exists(layout.JOB):
        raise LpRayError(f"{run.uri}: not an lp-ray run directory (no {layout.JOB}); run `lp-ray imp` first")
    try:
        raw = yaml.safe_load(run.read_bytes(layout.JOB))
    except yaml.YAMLError:
        raise LpRayError(f"{run.path(layout.JOB)}: malformed YAML") from None
    job = job_from_dict(raw, run.path(layout.JOB), plugin_dirs(run, raw))
    _check_job_made_the_tickets(run, job)
    return job


def write_job(run: RunDir, job) -> None:
    """The run's job.yaml: the resolved job spec the run was made for (read back by `read_job`), and
    beside it a copy of each plugin module of the job's own, so later commands (and every worker) run
    the very code the tickets were made with."""
    import yaml

    from lp_ray.plugins.loading import local_sources
    from lp_ray.spec import job_to_dict

    for module, path in local_sources(job.plugin_versions).items():
        run.write_bytes(layout.plugin_source(module), path.read_bytes())
    run.write_bytes(layout.JOB, yaml.safe_dump(job_to_dict(job), sort_keys=False).encode())


def plugin_dirs(run: RunDir, raw_job: Any) -> list:
    """Where the run's copies of its plugin modules can be imported from: its plugins/ folder, or for a
    run on remote storage a local copy of it (under the cache folder, by content)."""
    from pathlib import Path

    versions = raw_job.get("plugin_versions") if isinstance(raw_job, dict) else None
    if not versions or not run.exists(layout.PLUGINS):
        return []
    if "://" not in run.uri:
        return [Path(run.path(layout.PLUGINS))]
    import tempfile

    from lp_ray.data.generated_cache import cache_dir

    names = [n for n in run.list_dir(layout.PLUGINS) if n.endswith(".py")]
    files = {n: run.read_bytes(f"{layout.PLUGINS}/{n}") for n in names}
    digest = hashlib.sha256(b"".join(n.encode() + files[n] for n in sorted(files))).hexdigest()[:16]
    folder = (cache_dir() or Path(tempfile.gettempdir()) / "lp-ray") / "plugins" / digest
    folder.mkdir(parents=True, exist_ok=True)
    for n, data in files.items():
        if not (folder / n).is_file():
            (folder / n).write_bytes(data)
    return [folder]


def run_dir_for(job, cluster) -> RunDir:
    """Where a job's run directory is: `<storage>/<job name>-<run hash>`."""
    from lp_ray.spec import run_name, storage_uri

    return RunDir(join_uri(storage_uri(cluster), run_name(job)))


def _check_job_made_the_tickets(run: RunDir, job) -> None:
    """An edited job.yaml would have every later command read the tickets as another job's."""
    from lp_ray.spec import run_hash

    if run.exists(layout.ticket_meta(0)):
        recorded = read_ticket_meta(run, 0).run_hash
        if recorded and recorded != run_hash(job):
            raise LpRayError(
                f"{run.path(layout.JOB)}: describes a job with run hash {run_hash(job)}, but the tickets here were "
                f"trained for {recorded}; restore the job.yaml the run was made with"
            )


# --------------------------------------------------------------------------------------------------
# Records read back: a ticket's meta.json and the run's tracking.json


@dataclass
class TicketMeta:
    """A finished round, as its meta.json says (written last: the round's "done" marker)."""

    round: int
    density: float
    val_acc: float
    test_acc: float
    epochs: int = 0
    seconds: float = 0.0
    starts: list[int] = field(default_factory=list)  # the epoch each (re)start of the round began at
    rewind_epoch: int = 0
    run_hash: str = ""
    ticket_sha256: str = ""
    finished_at: float = 0.0  # unix time the ticket was written (0: before it was recorded)
    # A particle round (imp.particles > 1): the soup kind, and per particle its number, sha256, own
    # validation and test accuracy, epochs and whether it joined the soup. Absent from plain rounds' meta.json.
    soup: str = ""
    particles: list[dict] = field(default_factory=list)


@dataclass
class ParticleRecord:
    """A finished particle of a particle round, as its particle_PP.json says (written after its weights)."""

    particle: int
    val_acc: float
    test_acc: float
    epochs: int
    seconds: float
    sha256: str
    history: dict = field(default_factory=dict)


@dataclass
class TrackingInfo:
    """Where a run logs in MLflow, so a resumed run (and pool, report) logs into the same runs."""

    tracking_uri: str
    experiment_id: str
    imp_run_id: str


def _record(cls, run: RunDir, rel: str):
    raw = run.read_json(rel)
    names = {f.name for f in fields(cls)}
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    missing = [k for k in required if not isinstance(raw, dict) or k not in raw]
    if missing:
        raise LpRayError(f"{run.path(rel)}: not a valid {rel.rsplit('/', 1)[-1]} (no {', '.join(missing)})")
    return cls(**{k: v for k, v in raw.items() if k in names})


def read_ticket_meta(run: RunDir, r: int) -> TicketMeta:
    return _record(TicketMeta, run, layout.ticket_meta(r))


def read_particle(run: RunDir, r: int, p: int) -> ParticleRecord:
    return _record(ParticleRecord, run, layout.particle_record(r, p))


def read_tracking(run: RunDir) -> TrackingInfo | None:
    return _record(TrackingInfo, run, layout.TRACKING) if run.exists(layout.TRACKING) else None


def write_tracking(run: RunDir, info: TrackingInfo) -> None:
    run.write_json(layout.TRACKING, asdict(info))


# --------------------------------------------------------------------------------------------------
# Weights files (tickets, rewind point, pooled networks): safetensors, never pickle.


def encode_weights(
    state: Mapping[str, torch.Tensor],
    mask: Mapping[str, torch.Tensor] | None = None,
    metadata: dict[str, str] | None = None,
) -> bytes:
    import torch
    from safetensors.torch import save as st_save

    tensors = {f"state/{k}": v.detach().cpu().contiguous().clone() for k, v in state.items()}
    for k, v in (mask or {}).items():
        tensors[f"mask/{k}"] = v.detach().cpu().to(torch.float32).contiguous().clone()
    # One metadata entry holding sorted JSON: safetensors writes its metadata map in hash order, which
    # changes between processes, and identical weights must give an identical file (and sha256).
    meta = json.dumps({"format": TICKET_FORMAT, **(metadata or {})}, sort_keys=True)
    return st_save(tensors, metadata={"lp_ray": meta})


def decode_weights(
    data: bytes, where: str, expected: Mapping[str, torch.Tensor] | None = None, expected_mask: set[str] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Decode a weights file and check it against the model it must fit. Any problem is one error that
    names the file: truncated or corrupt bytes, a different architecture, a wrong shape."""
    from safetensors.torch import load as st_load

    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises several types on bad bytes
        raise LpRayError(f"{where}: corrupt or truncated weights file ({str(e).splitlines()[0]})") from None
    state = {k[len("state/") :]: v for k, v in tensors.items() if k.startswith("state/")}
    mask = {k[len("mask/") :]: v for k, v in tensors.items() if k.startswith("mask/")}
    if not state:
        raise LpRayError(f"{where}: not an lp-ray weights file (no state/ tensors)")
    if expected is not None:
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        if missing or extra:
            what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
            raise LpRayError(
                f"{where}: does not match the model ({what}; {len(missing)} missing, {len(extra)} unexpected tensors)"
            )
        for k, v in expected.items():
            if tuple(state[k].shape) != tuple(v.shape):
                raise LpRayError(
                    f"{where}: does not match the model ({k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)})"
                )
        for k, m in mask.items():
            if k not in state or m.shape != state[k].shape:
                raise LpRayError(f"{where}: mask {k} does not match the weights")
    if expected_mask is not None and set(mask) != set(expected_mask):
        raise LpRayError(f"{where}: mask covers {len(mask)} tensors, the job prunes {len(expected_mask)}")
    return state, mask


def write_mask(run: RunDir, rel: str, mask: Mapping[str, torch.Tensor]) -> None:
    import torch
    from safetensors.torch import save as st_save

    tensors = {f"mask/{k}": v.detach().cpu().to(torch.float32).contiguous().clone() for k, v in mask.items()}
    run.write_bytes(rel, st_save(tensors, metadata={"format": TICKET_FORMAT}))


def read_mask(run: RunDir, rel: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load as st_load

    try:
        tensors = st_load(run.read_bytes(rel))
    except LpRayError:
        raise
    except Exception as e:
        raise LpRayError(f"{run.path(rel)}: corrupt or truncated mask file ({str(e).splitlines()[0]})") from None
    return {k[len("mask/") :]: v for k, v in tensors.items() if k.startswith("mask/")}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_sha256(data: bytes, recorded: str, where: str, recorded_in: str, fix: str) -> None:
    """A weights file must be the bytes its record says it is: a file replaced by another valid one
    (another round's ticket, say) decodes fine and would be used without a word."""
    actual = sha256(data)
    if recorded and actual != recorded:
        raise LpRayError(
            f"{where}: its sha256 ({actual[:12]}...) is not the one recorded in {recorded_in} "
            f"({recorded[:12]}...): the file was changed or replaced; {fix}"
        )


def write_ticket(run: RunDir, r: int, state, mask, meta: TicketMeta) -> str:
    """Ticket first, then meta.json: meta.json is the round's 'done' marker. Returns the ticket's sha256."""
    data = encode_weights(state, mask, {"round": str(r)})
    digest = sha256(data)
    run.write_bytes(layout.ticket(r), data)
    record = {**asdict(meta), "ticket_sha256": digest}
    if not meta.particles:  # a plain round's meta.json is what it was before particles existed
        record.pop("soup"), record.pop("particles")
    run.write_json(layout.ticket_meta(r), record)
    return digest


def ticket_done(run: RunDir, r: int) -> bool:
    return run.exists(layout.ticket_meta(r)) and run.exists(layout.ticket(r))


def read_ticket(run: RunDir, r: int, expected=None, expected_mask=None):
    """Round r's ticket (weights, mask), checked: it decodes and fits the model, its bytes are the ones
    its meta.json recorded, and its mask is the round's mask.safetensors (round 0 has none)."""
    import torch

    rel = layout.ticket(r)
    data = run.read_bytes(rel)
    state, mask = decode_weights(data, run.path(rel), expected, expected_mask)
    if run.exists(layout.ticket_meta(r)):
        meta = read_ticket_meta(run, r)
        fix = f"restore it, or delete {run.path(layout.round_dir(r))} and rerun `lp-ray imp` to retrain the round"
        check_sha256(data, meta.ticket_sha256, run.path(rel), run.path(layout.ticket_meta(r)), fix)
    if run.exists(layout.mask(r)):
        stored = read_mask(run, layout.mask(r))
        if set(stored) != set(mask) or any(not torch.equal(stored[k], mask[k]) for k in mask):
            raise LpRayError(
                f"{run.path(layout.mask(r))}: disagrees with the mask inside {run.path(rel)} "
                f"(the round trained with the first; one of them was changed or replaced)"
            )
    return state, mask


def finished_rounds(run: RunDir) -> list[int]:
    """The rounds with a finished ticket: 0, 1, ..., n. A gap (a round missing before a finished one)
    is an error: every ticket after it was pruned from it, and pooling around it would go unnoticed."""
    found = [layout.parse_round_dir(name) for name in run.list_dir(layout.ROUNDS)]
    rounds = sorted(r for r in found if r is not None and ticket_done(run, r))
    missing = sorted(set(range(rounds[-1] + 1)) - set(rounds)) if rounds else []
    if missing:
        m = missing[0]
        later = next(r for r in rounds if r > m)
        raise LpRayError(
            f"{run.path(layout.round_dir(m))}: round {m} has no finished ticket but round {later} has; "
            f"recompute it with `lp-ray imp --job {run.path(layout.JOB)}` and the cluster spec that made this run "
            f"(finished rounds are kept, round {m} is trained again)"
        )
    return rounds


def rounds_table(run: RunDir) -> pa.Table:
    """One row per finished round, from the tickets' meta.json files (what rounds.parquet holds)."""
    metas = [read_ticket_meta(run, r) for r in finished_rounds(run)]
    cols = ["round", "density", "val_acc", "test_acc", "epochs", "seconds", "ticket_sha256"]
    table = pa.table({c: [getattr(m, c) for m in metas] for c in cols})
    return table.append_column("path", pa.array([run.uri_of(layout.ticket(m.round)) for m in metas], pa.string()))


def write_rounds_table(run: RunDir, only_if_stale: bool = False) -> pa.Table:
    """rounds.parquet is derived from the tickets' meta.json files, so it can always be rebuilt.
    `only_if_stale`: write it only where it differs from the rounds on disk (a rerun that finds every
    round finished must still repair a table its killed predecessor never got to write)."""
    table = rounds_table(run)
    if only_if_stale and run.exists(layout.ROUNDS_TABLE):
        try:
            if run.read_table(layout.ROUNDS_TABLE).equals(table):
                return table
        except (LpRayError, pa.ArrowException):
            pass  # unreadable: rebuilt below
    run.write_table(layout.ROUNDS_TABLE, table)
    return table
