"""Chaos run (not a test; tests/test_e2e_chaos.py runs a short one): faults at seeded random moments
while lp-ray works, the command rerun after each until it finishes, and then a check that nothing was
lost or duplicated.

Two tracks, each run undisturbed once for reference, then again in episodes under faults (an episode
is one whole run into fresh storage; episodes repeat until the faults are spent):

  sweep   `lp-ray sweep` of the tiny job (2 seeds x interpolation, average) on local storage, against
          driver        SIGKILL of the command's process group (then it is rerun)
          train_worker  SIGKILL of a Ray Train worker (ray::RayTrainWorker): Ray Train restarts the group
          evaluator     SIGKILL of a pool evaluator actor (ray::EvaluatorActor): Ray restarts it
          second_copy   a second copy of the same command, started while the first runs: it waits for
                        the leases, then has nothing to do (it must exit 0, unless killed as a driver)
  s3      `lp-ray run` of the tiny job on S3 storage (moto server), logging to an `mlflow server`,
          against driver, second_copy and
          storage_pause the S3 server stopped (SIGSTOP) for 2-8 s and continued (SIGCONT). moto keeps its
                        buckets in memory, so killing and restarting it would lose the run itself; to a
                        client, a stopped server is a restart: connections hang and time out.
          tracking_down the MLflow server SIGKILLed and started again 5-25 s later (on its SQLite store):
                        the command must go on, and what MLflow missed must be logged once it is back,
                        at the latest by the next command over the run (one more is run at the end).

A command that fails after a fault (e.g. a worker killed more often than max_failures allows) is rerun,
and counted. At the end of every episode its run directories must equal the reference's: every
network (tickets, masks, pooled networks, rewind point, split, data set) byte for byte, every search's
trace row for row (but for its wall seconds; evaluations in flight finish in any order), the summaries
and reports' accuracies; no lease left; every copy of the command exited 0 or was killed by us; and
MLflow must hold exactly one of each entity (imp run, search, trial, sweep, LoggedModel; each round's
and target's step once in its run's series).

    .venv/bin/python benchmarks/chaos.py                      # 30 faults, seed 0, both tracks
    .venv/bin/python benchmarks/chaos.py --faults 12 --seed 3 --tracks sweep
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import S3_TEST_CREDENTIALS as S3_ENV  # noqa: E402  (the suite's tiny job, servers and processes)
from helpers import TINY_JOB  # noqa: E402

KINDS = {
    "sweep": ("driver", "train_worker", "evaluator", "second_copy"),
    "s3": ("driver", "second_copy", "storage_pause", "tracking_down"),
}
MAX_FAILED = 5  # commands of one episode that may fail (not killed by us) before the run gives up
PROCESS_OF = {"train_worker": "ray::RayTrainWorker", "evaluator": "ray::EvaluatorActor"}


@dataclass
class Track:
    """What one track runs: a command line (with {storage} and {tracking} to fill in) and its storage."""

    name: str
    args: list[str]
    storage: str  # a folder template, or an s3:// prefix template, with {episode}
    cluster: dict
    moto: subprocess.Popen | None = None
    tracking_server: bool = False  # log to an `mlflow server` on the episode's store (else to the store itself)


@dataclass
class Tally:
    injected: collections.Counter = field(default_factory=collections.Counter)
    reruns: int = 0
    failed_runs: list[str] = field(default_factory=list)  # last error line of a command that failed
    episodes: list[dict] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.injected.values())


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def make_tracks(work: Path, ray_address: str, s3_endpoint: str | None, seeds: str, methods: list[str]) -> dict:
    job = write_yaml(work / "tiny.yaml", TINY_JOB)
    exp = write_yaml(work / "chaos.yaml", {"name": "chaos", "job": str(job), "seeds": seeds, "methods": methods})
    cluster = {
        "address": ray_address,
        "num_workers": 2,
        "resources_per_worker": {"CPU": 0.5},
        "eval_resources": {"num_cpus": 0.5},
        "max_failures": 3,
        "checkpoint_interval_s": 0,
    }
    tracks = {"sweep": Track("sweep", ["sweep", str(exp)], str(work / "{episode}" / "runs"), cluster)}
    if s3_endpoint:
        s3_cluster = {**cluster, "storage_endpoint": f"http://{s3_endpoint}", "storage_region": "us-east-1"}
        tracks["s3"] = Track("s3", ["run", "--job", str(job)], "s3://chaos/{episode}/runs", s3_cluster, None, True)
    return tracks


def command(track: Track, episode_dir: Path, episode: str, uri: str) -> list[str]:
    cluster = write_yaml(
        episode_dir / "cluster.yaml", {**track.cluster, "storage_path": track.storage.format(episode=episode)}
    )
    return [str(BIN / "lp-ray"), *track.args, "--cluster", str(cluster), "--tracking-uri", uri]


def start(argv: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, **S3_ENV, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen(
        argv, cwd=cwd, stdout=open(log, "a"), stderr=subprocess.STDOUT, env=env, start_new_session=True
    )


def ray_processes(title: str) -> list[int]:
    """Pids of this machine's processes whose title (Ray sets it to ray::<class>) starts with `title`."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace").startswith(title):
                    pids.append(int(p.name))
            except OSError:
                continue
    return pids


def wait_for(title: str, procs: list[subprocess.Popen], seconds: float = 60.0) -> list[int]:
    """Pids of processes titled `title`, waiting up to `seconds` for one while the command still runs
    (evaluators live only while a search runs: a fault drawn during training waits for the search)."""
    deadline = time.time() + seconds
    while time.time() < deadline and any(p.poll() is None for p in procs):
        pids = ray_processes(title)
        if pids:
            return pids
        time.sleep(0.25)
    return []


def run_episode(
    track: Track, work: Path, episode: str, faults: int, rng: random.Random, tally: Tally, say, first=()
) -> Path:
    """One whole run into fresh storage, with up to `faults` faults; rerun until it finishes. `first`:
    the kinds of its first faults (the rest are drawn)."""
    from helpers import free_port, start_mlflow_server, stop

    d = work / episode
    d.mkdir(parents=True)
    server = port = None
    if track.tracking_server:  # its store is the episode's mlflow.db, which the checks read
        port = free_port()
        server = start_mlflow_server(d, port, "mlflow.db")
    uri = f"http://127.0.0.1:{port}" if server else f"sqlite:///{d / 'mlflow.db'}"
    argv = command(track, d, episode, uri)
    log = d / "commands.log"
    procs: list[subprocess.Popen] = [start(argv, d, log)]
    outages = 0
    killed: set[int] = set()
    left = faults
    deadline = time.time() + 3600
    while True:
        assert time.time() < deadline, f"episode {episode}: not finished after an hour; see {log}"
        time.sleep(rng.uniform(2.0, 12.0) if left else 1.0)
        live = [p for p in procs if p.poll() is None]
        for p in procs:
            if p.poll() is not None and p.returncode != 0 and p.pid not in killed and not getattr(p, "counted", False):
                p.counted = True
                if outages and "MLflow tracking server" in _last_error(log):
                    killed.add(p.pid)  # started as we killed the server: its one-line refusal is ours
                else:
                    tally.failed_runs.append(_last_error(log))
        if not live:
            if any(p.returncode == 0 and p.pid not in killed for p in procs):  # one finished it all
                break
            failed = [p for p in procs if p.returncode != 0 and p.pid not in killed]
            if len(failed) > MAX_FAILED:  # failing on something no rerun fixes: say what, stop
                raise RuntimeError(f"episode {episode}: {len(failed)} commands failed, last: {_last_error(log)}")
            tally.reruns += 1
            procs.append(start(argv, d, log))
            continue
        if not left:
            continue
        done = faults - left
        kind = first[done] if done < len(first) else rng.choice(KINDS[track.name])
        if kind == "driver":
            victim = rng.choice(live)
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait()
            killed.add(victim.pid)
        elif kind in PROCESS_OF:
            pids = wait_for(PROCESS_OF[kind], procs)
            if not pids:
                continue  # none came up in a minute (the work is past that stage): draw again later
            try:
                os.kill(rng.choice(pids), signal.SIGKILL)
            except ProcessLookupError:
                continue
        elif kind == "second_copy":
            procs.append(start(argv, d, log))
        elif kind == "storage_pause":
            os.kill(track.moto.pid, signal.SIGSTOP)
            time.sleep(rng.uniform(2.0, 8.0))
            os.kill(track.moto.pid, signal.SIGCONT)
        elif kind == "tracking_down":
            stop(server)
            time.sleep(rng.uniform(5.0, 25.0))
            server = start_mlflow_server(d, port, "mlflow.db")
            outages += 1
        left -= 1
        tally.injected[kind] += 1
        say(f"  {episode}: {kind} ({tally.total} faults so far)")
    for p in procs:  # second copies still waiting finish with nothing to do
        p.wait(timeout=900)
        if p.returncode != 0 and p.pid not in killed and not getattr(p, "counted", False):
            if outages and "MLflow tracking server" in _last_error(log):
                killed.add(p.pid)
            else:
                tally.failed_runs.append(_last_error(log))
    if outages:  # the next command over the run logs what an outage kept from MLflow (nothing to compute)
        procs.append(start(argv, d, log))
        procs[-1].wait(timeout=900)
    if server is not None:
        stop(server)
    stray = [p for p in procs if p.returncode != 0 and p.pid not in killed]
    tally.episodes.append({"episode": episode, "faults": faults - left, "commands": len(procs), "failed": len(stray)})
    return d


def _last_error(log: Path) -> str:
    lines = [x for x in log.read_text(errors="replace").splitlines() if x.startswith("error:")]
    return lines[-1] if lines else "(no error line: see the log)"


# --- what must hold -----------------------------------------------------------------------------------


def run_dirs(track: Track, episode: str) -> dict[str, object]:
    """The episode's run directories (and a sweep's experiment directory) by name, as RunDir."""
    from lp_ray.spec import storage_uri
    from lp_ray.spec_loading import cluster_from_dict
    from lp_ray.store import RunDir

    cluster = cluster_from_dict({**track.cluster, "storage_path": track.storage.format(episode=episode)}, "chaos")
    base = RunDir(storage_uri(cluster))
    names = [n for n in base.list_dir("") if n.startswith("tiny-")]
    names += [f"experiments/{n}" for n in base.list_dir("experiments")]
    return {n: RunDir(base.uri_of(n)) for n in names}


# Times, places, and where a resumed round restarted (`starts`: an honest record of the interruptions)
VOLATILE = ("seconds", "finished_at", "started_at", "starts", "path", "run_dir", "uri", "source")


def scrub(value):
    """A record without what differs between two correct runs: wall times and where things are."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if not any(x in k for x in VOLATILE)}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def fingerprint(run) -> dict[str, object]:
    """What must equal the reference's: networks and specs byte for byte (sha256), records and tables
    without wall times and paths (a trace's rows in any order: evaluations in flight finish in any order);
    and any lease or temporary file left behind. Ray Train's and Tune's own folders, tracking.json (MLflow
    ids) and trials.parquet (paths) are left out; plots are drawings of the tables."""
    out: dict[str, object] = {}

    def walk(rel: str):
        for n in run.list_dir(rel):
            r = f"{rel}/{n}" if rel else n
            if run.is_dir(r):
                if r not in ("train", "tune"):
                    yield from walk(r)
            else:
                yield r

    for rel in walk(""):
        name = rel.rsplit("/", 1)[-1]
        if name.startswith(("lease.", ".tmp-")):
            out[rel] = "left behind"
        elif name.endswith((".safetensors", ".yaml", ".txt")):
            out[rel] = hashlib.sha256(run.read_bytes(rel)).hexdigest()
        elif name.endswith(".parquet") and name != "trials.parquet":
            rows = [scrub(r) for r in run.read_table(rel).to_pylist()]
            out[rel] = sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)
        elif name.endswith(".json") and name != "tracking.json":
            out[rel] = json.dumps(scrub(run.read_json(rel)), sort_keys=True)
    return out


def duplicates(tracking_db: Path) -> tuple[list[str], collections.Counter]:
    """MLflow entities logged twice: runs that describe the same entity (same kind, key, parent and run
    directory), LoggedModels of the same network (their lp_ray.network_key), a round's or a target's step
    logged twice in its run's series (the same key, step and model); and the count of runs per kind
    (LoggedModels as "model")."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tracking_db}")
    seen: dict[tuple, list[str]] = collections.defaultdict(list)
    kinds: collections.Counter = collections.Counter()
    steps: list[str] = []
    for e in client.search_experiments():
        for r in client.search_runs([e.experiment_id], max_results=10000):
            t = r.data.tags
            key = tuple(
                t.get(k)
                for k in ("lp_ray.kind", "lp_ray.round", "mlflow.parentRunId", "lp_ray.run_dir", "lp_ray.run_hash")
            )
            seen[key].append(r.info.run_id)
            kinds[t.get("lp_ray.kind")] += 1
            for series in ("by_round/lt_test_acc", "by_target/pooled_test_acc", "by_epoch/train_loss"):
                logged = collections.Counter(
                    (m.step, m.model_id) for m in client.get_metric_history(r.info.run_id, series)
                )
                steps += [f"{r.info.run_name} {series} step {s}: {n} times" for (s, _), n in logged.items() if n > 1]
        for m in client.search_logged_models([e.experiment_id]):
            seen[("model", m.tags.get("lp_ray.network_key"))].append(m.model_id)
            kinds["model"] += 1
    return [f"{k}: {ids}" for k, ids in seen.items() if len(ids) > 1] + steps, kinds


def compare(
    ref: dict, ref_kinds: collections.Counter, got: dict, got_db: Path, partial: bool = False, ignore: tuple = ()
) -> list[str]:
    """Everything in which an episode (its run directories `got`, its MLflow store) differs from the
    reference (empty: nothing lost). `partial`: the reference holds some of the directories only;
    `ignore`: files (relative to a run directory) the reference has and the episode's command never
    writes."""
    problems = []
    if partial:
        got = {k: v for k, v in got.items() if k in ref}
    if sorted(ref) != sorted(got):
        return [f"run directories {sorted(got)} != {sorted(ref)}"]
    for name in ref:
        a, b = fingerprint(ref[name]), fingerprint(got[name])
        for rel in sorted(set(a) | set(b)):
            if a.get(rel) != b.get(rel) and rel not in ignore:
                problems.append(f"{name}/{rel}: {'missing' if rel not in b else 'differs' if rel in a else 'extra'}")
    dup, kinds = duplicates(got_db)
    problems += [f"MLflow duplicate {d}" for d in dup]
    if kinds != ref_kinds:
        problems.append(f"MLflow runs per kind {dict(kinds)} != reference {dict(ref_kinds)}")
    return problems


def chaos(
    work: Path,
    ray_address: str,
    s3_endpoint: str | None,
    moto=None,
    faults: int = 30,
    seed: int = 0,
    tracks: tuple[str, ...] = ("sweep", "s3"),
    seeds: str = "0-1",
    methods=("interpolation", "average"),
    say=print,
    reference: dict | None = None,
    first: dict | None = None,
) -> dict:
    """The whole chaos run; returns the tally and every problem found (none: all survived).
    `reference`: instead of an undisturbed run per track, run directories known to hold what it would
    ({"runs": {name: RunDir}, "kinds": {track: MLflow runs per kind}}; the short test's). `first`: per
    track, the kinds of its first episode's first faults (the short test makes sure of one of each)."""
    rng = random.Random(seed)
    chosen = {k: v for k, v in make_tracks(work, ray_address, s3_endpoint, seeds, list(methods)).items() if k in tracks}
    per_track = {name: faults // len(chosen) + (i < faults % len(chosen)) for i, name in enumerate(chosen)}
    tally, problems = Tally(), []
    for name, track in chosen.items():
        track.moto = moto
        if reference is None:
            say(f"{name}: undisturbed reference run")
            run_episode(track, work, f"{name}-reference", 0, rng, Tally(), say)
            ignore = ()
            ref_runs, ref_kinds = (
                run_dirs(track, f"{name}-reference"),
                duplicates(work / f"{name}-reference" / "mlflow.db")[1],
            )
        else:
            ref_runs, ref_kinds = reference["runs"], collections.Counter(reference["kinds"][name])
            ignore = tuple(reference.get("ignore", {}).get(name, ()))
        left, n = per_track[name], 0
        while left > 0:
            episode = f"{name}-chaos-{n}"
            say(f"{name}: episode {n} under faults ({left} to inject)")
            before = tally.total
            run_episode(track, work, episode, left, rng, tally, say, (first or {}).get(name, ()) if n == 0 else ())
            left -= tally.total - before
            got = run_dirs(track, episode)
            found = compare(ref_runs, ref_kinds, got, work / episode / "mlflow.db", reference is not None, ignore)
            problems += [f"{episode}: {p}" for p in found]
            n += 1
    failed_copies = sum(e["failed"] for e in tally.episodes)
    return {
        "faults": dict(tally.injected),
        "total": tally.total,
        "episodes": tally.episodes,
        "reruns": tally.reruns,
        "failed_commands": tally.failed_runs,
        "failed_copies_at_end": failed_copies,
        "problems": problems,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faults", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tracks", default="sweep,s3")
    ap.add_argument("--seeds", default="0-1", help="The sweep's seeds (default 0-1).")
    ap.add_argument("--methods", default="interpolation,average", help="The sweep's pool methods.")
    ap.add_argument("--work", type=Path, default=None, help="Where to run (default: a new temporary folder).")
    a = ap.parse_args()
    from helpers import start_moto, start_ray_head, stop

    work = a.work or Path(tempfile.mkdtemp(prefix="lp-ray-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    for k, v in S3_ENV.items():  # the Ray workers write to S3 with these (the head passes its environment on)
        os.environ.setdefault(k, v)
    address, head = start_ray_head(open(work / "ray-head.log", "w"))
    moto = endpoint = None
    try:
        if "s3" in a.tracks:
            moto, endpoint = start_moto("chaos")
        t0 = time.time()
        out = chaos(
            work, address, endpoint, moto, a.faults, a.seed, tuple(a.tracks.split(",")), a.seeds, a.methods.split(",")
        )
        out["minutes"] = round((time.time() - t0) / 60, 1)
    finally:
        if moto is not None:
            os.kill(moto.pid, signal.SIGCONT)
            stop(moto)
        stop(head)
    print(json.dumps(out, indent=2))
    print(
        f"{out['total']} faults injected ({', '.join(f'{k} {v}' for k, v in sorted(out['faults'].items()))}), "
        f"{len(out['episodes'])} episodes, {out['reruns']} reruns, {len(out['failed_commands'])} command(s) failed "
        f"and were rerun; {'all survived: nothing lost or duplicated' if not out['problems'] else 'PROBLEMS: ' + '; '.join(out['problems'][:10])}"
    )
    return 0 if not out["problems"] and not out["failed_copies_at_end"] else 1


if __name__ == "__main__":
    sys.exit(main())
