"""Where the test suite's CPU goes (not a test): one end-to-end command, by process, and what each kind of
process spends importing its libraries. On a 2-core machine `make test` keeps both cores busy (two
pytest-xdist workers), so its time is its CPU: this is what would have to shrink. Linux only (it reads
/proc, as the suite's lease test does).

    .venv/bin/python benchmarks/suite_cost.py               # 3 repeats, alternating 2 and 1 DDP workers
    .venv/bin/python benchmarks/suite_cost.py --repeats 5
    .venv/bin/python benchmarks/suite_cost.py --whole-suite # the whole suite as `make test` runs it (~25 min)

Prints, in one run:
  command   the CPU seconds of the suite's tiny `lp-ray imp` (tests/helpers.py: TINY_JOB, 3 rounds) on a
            `ray start --head` cluster, as the end-to-end tests run it (a new store, warm data cache),
            by process: the driver, the Ray Train controller, the Ray Train workers, Ray's other actors
            (synchronization, autoscaling, idle workers), the head's daemons; and the machine's total
            (from /proc/stat, less this benchmark's own sampling: it counts processes too short to
            sample); at the suite's 2 DDP workers and at 1, alternating; medians
  imports   the CPU of a new Python process doing one thing: importing torch, MLflow, Ray Train's torch
            backend, lp-ray's worker loop; building a DDP model (torch imports its compiler then); making
            a new SQLite store and opening an existing one
With --whole-suite, instead: the whole suite as `make test` runs it (2 pytest-xdist workers, grouped),
every process on the machine sampled every 0.25 s, its CPU summed by what the process is: each lp-ray
command (the driver), Ray Train's workers, controllers and synchronization actors, lp-ray's pool
evaluators, Ray Tune's trials, each Ray daemon, pytest; with how many processes of each kind there were.
This is the table that says which kind of process a shorter suite would have to start fewer of. Whatever
else runs on the machine meanwhile lands in "other" (and in the machine's total): run it on a quiet one.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import LP_RAY, TINY_JOB, cli_env, start_ray_head, stop, tiny_cluster, write_yaml  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
KINDS = ("driver", "Ray Train controller", "Ray Train workers", "other Ray actors", "Ray daemons", "other")

IMPORTS = {
    "import torch": "import torch",
    "import mlflow": "import mlflow",
    "import ray.train.torch": "import ray.train.torch",
    "import lp_ray.imp.loop (a worker's loop)": "import lp_ray.imp.loop",
    "DDP model, beyond importing torch": (
        "import os, torch, torch.distributed as d\n"
        "os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(__import__('helpers').free_port()))\n"
        "d.init_process_group('gloo', rank=0, world_size=1)\n"
        "import resource as r; u = r.getrusage(r.RUSAGE_SELF); c = u.ru_utime + u.ru_stime\n"
        "torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))\n"
        "u = r.getrusage(r.RUSAGE_SELF); print('CPU', u.ru_utime + u.ru_stime - c)"
    ),
    "new SQLite store": "from mlflow import MlflowClient; MlflowClient('sqlite:///{tmp}/new.db').search_experiments()",
    "open that store": "from mlflow import MlflowClient; MlflowClient('sqlite:///{tmp}/new.db').search_experiments()",
}


# What each process of the suite is, from its command line (Ray retitles a worker "ray::<actor>" or
# "ray::<task>"; a Ray Train worker last seen running a task is titled by it, e.g. "ray::execute...").
RAY_PROCESS_KINDS = {
    "RayTrainWorker": "Ray Train workers",
    "execute": "Ray Train workers",
    "TrainController": "Ray Train controllers",
    "SynchronizationActor": "Ray Train synchronization actors",
    "EvaluatorActor": "lp-ray pool evaluators",
    "ImplicitFunc": "Ray Tune trials (lp-ray sweep)",
    "IDLE": "idle Ray workers",
}
RAY_DAEMONS = ("raylet", "gcs_server", "log_monitor", "monitor.py", "dashboard", "DashboardAgent", "RuntimeEnvAgent")


def suite_kind(comm: str, cmd: str) -> str:
    if "bin/lp-ray" in cmd:  # before anything else: its arguments name pytest's temporary folders
        words = cmd.split("bin/lp-ray", 1)[1].split()
        return f"lp-ray {words[0] if words else ''} (driver)"
    if cmd.startswith("ray::"):
        name = cmd[5:].replace("(", " ").replace(".", " ").split()[0] if cmd[5:].strip() else "?"
        if name in RAY_PROCESS_KINDS:
            return RAY_PROCESS_KINDS[name]
        return f"Ray daemon {name}" if name in RAY_DAEMONS else f"other Ray actors and tasks ({name})"
    daemon = next((d for d in RAY_DAEMONS if d in cmd or d in comm), None)
    if daemon and "ray" in cmd:
        return f"Ray daemon {daemon}"
    if "bin/pytest" in cmd or "-m pytest" in cmd or "exec(eval(sys.stdin" in cmd:  # xdist's workers
        return "pytest and its xdist workers"
    if "mlflow" in cmd or "gunicorn" in cmd or "uvicorn" in cmd:
        return "MLflow server"
    if "moto" in cmd:
        return "moto (S3) server"
    if " -c " in cmd:
        return "python -c (the tests' helper scripts)"
    return "other"


def machine_cpu() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / TICK  # all but idle and iowait


def _proc(pid: str) -> tuple[str, str, float, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    comm, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
    return f"{pid}:{rest[19]}", comm, (int(rest[11]) + int(rest[12])) / TICK, cmd  # key: pid + start time


def _own_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


class Sampler(threading.Thread):
    """Every process's CPU, every `interval_s` (50 ms by default), from /proc: the last value seen of each,
    and its last name (a Ray worker process is renamed when it becomes an actor). CPU before the first
    sample is not counted."""

    def __init__(self, interval_s: float = 0.05):
        super().__init__(daemon=True)
        self.seen: dict[str, list] = {}
        self.done = threading.Event()
        self.interval_s = interval_s

    def run(self):
        first = True
        while not self.done.is_set():
            for pid in os.listdir("/proc"):
                p = pid.isdigit() and _proc(pid)
                if not p:
                    continue
                key, comm, cpu, cmd = p
                entry = self.seen.setdefault(key, [comm, cmd, cpu if first else 0.0, cpu])
                entry[0], entry[3] = comm, cpu
                entry[1] = cmd or entry[1]  # a process that has exited has no command line left
            first = False
            time.sleep(self.interval_s)

    def cpu_by_process(self):
        """(comm, command line, CPU seconds while sampled) of every process seen but this benchmark."""
        for key, (comm, cmd, start, last) in self.seen.items():
            if key.split(":")[0] != str(os.getpid()):
                yield key.split(":")[0], comm, cmd, last - start

    def by_kind(self, driver_pid: int) -> dict[str, float]:
        """One command's processes in the coarse kinds of KINDS (the whole suite's `suite_kind`, merged)."""
        out = dict.fromkeys(KINDS, 0.0)
        for pid, comm, cmd, cpu in self.cpu_by_process():
            kind = suite_kind(comm, cmd)
            if pid == str(driver_pid):
                kind = "driver"
            elif kind == "Ray Train controllers":
                kind = "Ray Train controller"
            elif kind.startswith("Ray daemon"):
                kind = "Ray daemons"
            elif kind != "Ray Train workers":
                ray = kind in RAY_PROCESS_KINDS.values() or kind.startswith("other Ray actors")
                kind = "other Ray actors" if ray else "other"
            out[kind] += cpu
        return out


def one_command(address: str, work: Path, workers: int) -> dict[str, float]:
    d = Path(tempfile.mkdtemp(dir=work))
    job = write_yaml(d / "tiny.yaml", TINY_JOB)
    cluster = write_yaml(d / "cluster.yaml", {**tiny_cluster(d / "runs", address), "num_workers": workers})
    sampler = Sampler()
    sampler.start()
    time.sleep(0.2)
    c0, t0, own0 = machine_cpu(), time.perf_counter(), _own_cpu()
    cmd = [LP_RAY, "imp", "--job", str(job), "--cluster", str(cluster), "--tracking-uri", f"sqlite:///{d}/mlflow.db"]
    # Popen, not the tests' cli(): the sampler needs the driver's pid
    proc = subprocess.Popen(cmd, cwd=d, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate()
    wall, total = time.perf_counter() - t0, machine_cpu() - c0 - (_own_cpu() - own0)
    sampler.done.set()
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"error: lp-ray imp failed:\n{err[-2000:]}")
    return {**sampler.by_kind(proc.pid), "machine total": total, "wall": wall}


def whole_suite() -> None:
    """The suite as `make test` runs it, sampled; prints the CPU by kind of process and pytest's result."""
    sampler = Sampler(interval_s=0.25)  # 50 ms over ~25 min would cost a noticeable share of a core
    sampler.start()
    time.sleep(0.5)
    c0, t0, own0 = machine_cpu(), time.perf_counter(), _own_cpu()
    cmd = [sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup", "--durations", "10"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall, own = time.perf_counter() - t0, _own_cpu() - own0
    total = machine_cpu() - c0 - own
    sampler.done.set()
    sampler.join()
    by: dict[str, list[float]] = {}
    for _, comm, command, cpu in sampler.cpu_by_process():
        by.setdefault(suite_kind(comm, command), []).append(cpu)
    sampled = sum(sum(v) for v in by.values())
    print(f"the whole suite (`{' '.join(cmd[2:])}`): {wall:.0f} s wall, {total:.0f} core-s of CPU on the machine")
    print(f"(less this benchmark's own sampling, {own:.0f} core-s); by kind of process, {sampled:.0f} core-s sampled:")
    print(f"{'core-s':>8} {'share':>6} {'procs':>6} {'each':>6}  kind")
    small = {k: v for k, v in by.items() if sum(v) < 1}
    for kind, cpus in sorted(by.items(), key=lambda kv: -sum(kv[1])):
        if kind not in small:
            print(
                f"{sum(cpus):8.1f} {100 * sum(cpus) / sampled:5.1f}% {len(cpus):6d} {sum(cpus) / len(cpus):6.1f}  {kind}"
            )
    rest = sum(sum(v) for v in small.values())
    print(
        f"{rest:8.1f} {100 * rest / sampled:5.1f}% {sum(map(len, small.values())):6d}          {len(small)} kind(s) under 1 core-s each"
    )
    lines = proc.stdout.splitlines()
    slowest = [i for i, line in enumerate(lines) if "slowest" in line and "durations" in line]
    print("\n" + "\n".join(lines[slowest[0] :] if slowest else lines[-1:]))
    if proc.returncode != 0:
        sys.exit(f"error: the suite failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")


def import_costs(work: Path) -> dict[str, float]:
    out = {}
    for name, code in IMPORTS.items():
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(
            [sys.executable, "-c", code.replace("{tmp}", str(work))],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT / "tests")},
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            sys.exit(f"error: {name} failed:\n{proc.stderr[-2000:]}")
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("CPU ")]
        out[name] = float(lines[0].split()[1]) if lines else cpu
    for store in ("new SQLite store", "open that store"):  # the store's own cost: both import MLflow first
        out[store] -= out["import mlflow"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--whole-suite", action="store_true", help="the whole suite as `make test` runs it, by process")
    a = ap.parse_args()
    if a.repeats < 1:
        sys.exit(f"error: --repeats must be at least 1, got {a.repeats}")
    if not os.path.exists("/proc/stat"):
        sys.exit("error: this benchmark reads each process's CPU from /proc, which this system does not have")
    if a.whole_suite:
        import importlib.util

        if importlib.util.find_spec("xdist") is None:
            sys.exit("error: --whole-suite runs the suite as `make test` does, on pytest-xdist, which is not installed")
        whole_suite()
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ.setdefault("LP_RAY_CACHE_DIR", str(work / "cache"))  # as the suite's: its own, removed after
        log = open(work / "head.log", "w")
        address, head = start_ray_head(log)
        try:
            one_command(address, work, 2)  # warm-up: the data cache, the cluster's first fit
            rows: dict[int, list[dict]] = {2: [], 1: []}
            for r in range(a.repeats):
                for workers in (2, 1):
                    rows[workers].append(one_command(address, work, workers))
                    print(f"repeat {r + 1}, {workers} worker(s): {rows[workers][-1]['wall']:.1f} s", flush=True)
        finally:
            stop(head)
            log.close()
        imports = import_costs(work)
    print(f"\none tiny `lp-ray imp` (3 rounds) on a shared head, CPU seconds, median of {a.repeats}")
    print(f"{'':<24}{'2 DDP workers':>14}{'1 DDP worker':>14}")
    for kind in (*KINDS, "machine total", "wall"):
        med = [statistics.median(row[kind] for row in rows[w]) for w in (2, 1)]
        print(f"{kind + (' (s)' if kind == 'wall' else ''):<24}{med[0]:>14.1f}{med[1]:>14.1f}")
    print("\nCPU seconds of a new Python process doing one thing")
    for name, cpu in imports.items():
        print(f"  {name:<44}{cpu:6.2f}")


if __name__ == "__main__":
    main()
