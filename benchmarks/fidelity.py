"""Fidelity benchmark (not a test): does lp-ray reproduce the Lottery Pools effect on the default job?

Runs the default job (jobs/default.yaml) for several seeds through the real CLI (`lp-ray imp`, then
`lp-ray pool` for interpolation, average, swa and ema), and prints per sparsity the mean ± std test
accuracy of LT and of every method (like the paper's Table 8), the mean gain of LP(interpolation) over
LT, and at how many sparsities LP beats LT (on the seed mean and over all (round, seed) cells).

    .venv/bin/python benchmarks/fidelity.py                    # 3 seeds, 2 at a time
    .venv/bin/python benchmarks/fidelity.py --seeds 0 --rounds 4   # a quick look

Results live in benchmarks/out/fidelity/ (run directories, mlflow.db, fidelity.txt). To see how much of a
gain is noise of the examples the choices were made on, run `benchmarks/selection_bias.py` on its runs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parent.parent
METHODS = ["interpolation", "average", "swa", "ema"]


def lp_ray(*args: str, log) -> None:
    cmd = [str(Path(sys.executable).parent / "lp-ray"), *args]
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}; see {log.name}")


def run_seed(seed: int, out: Path, rounds: int, parallel_evals: int, num_samples: int | None) -> Path:
    job = yaml.safe_load((ROOT / "jobs/default.yaml").read_text())
    job["name"] = "fidelity"
    if num_samples:
        job["data"]["num_samples"] = num_samples
    job.setdefault("train", {})["seed"] = seed
    job.setdefault("imp", {})["rounds"] = rounds
    job_path = out / f"job-seed{seed}.yaml"
    job_path.write_text(yaml.safe_dump(job))
    cluster_path = out / "cluster.yaml"
    tracking = f"sqlite:///{out / 'mlflow.db'}"
    with open(out / f"seed{seed}.log", "a") as log:
        t0 = time.time()
        lp_ray("imp", "--job", str(job_path), "--cluster", str(cluster_path), "--tracking-uri", tracking, log=log)
        run_dir = next(p for p in (out / "runs").iterdir() if p.is_dir() and _seed_of(p) == seed)
        t1 = time.time()
        for m in METHODS:
            lp_ray(
                "pool",
                str(run_dir),
                "--cluster",
                str(cluster_path),
                "--method",
                m,
                "--parallel-evals",
                str(parallel_evals),
                "--tracking-uri",
                tracking,
                log=log,
            )
        log.write(f"seed {seed}: imp {t1 - t0:.0f} s, pool (4 methods) {time.time() - t1:.0f} s\n")
    return run_dir


def _seed_of(run_dir: Path) -> int:
    return int(yaml.safe_load((run_dir / "job.yaml").read_text())["train"]["seed"])


def fmt(values: list[float]) -> str:
    m = statistics.mean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * m:6.2f} ± {100 * s:4.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rounds", type=int, default=11, help="tickets per seed, round 0 included (default job: 11)")
    ap.add_argument("--jobs", type=int, default=2, help="seeds run at the same time")
    ap.add_argument(
        "--num-samples",
        type=int,
        default=None,
        help="MNIST-1D samples (default: the job's 10,000; the mnist1d package's own default is 5,000)",
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks/out/fidelity"))
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    out = Path(a.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    # One worker per run, one pool evaluation per run when seeds share the machine.
    # Seeds sharing the machine keep it busy already: no early start of the next round on top.
    (out / "cluster.yaml").write_text(
        yaml.safe_dump(
            {"storage_path": str(out / "runs"), "num_workers": 1, "overlap_rounds": None if a.jobs == 1 else False}
        )
    )
    evals = max(1, 2 // a.jobs)
    # Create the MLflow store once: two processes creating a new sqlite store at the same moment race in
    # its schema migrations (seen here: "No such index" in one of them).
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{out / 'mlflow.db'}").search_experiments()
    t0 = time.time()
    with ThreadPoolExecutor(a.jobs) as pool:
        run_dirs = list(pool.map(lambda s: run_seed(s, out, a.rounds, evals, a.num_samples), seeds))
    wall = time.time() - t0

    # rows[round][method] = list over seeds
    table: dict[int, dict[str, list[float]]] = {}
    density: dict[int, float] = {}
    for rd in run_dirs:
        for row in pq.read_table(rd / "rounds.parquet").to_pylist():
            table.setdefault(row["round"], {}).setdefault("LT", []).append(row["test_acc"])
            density[row["round"]] = row["density"]
        for m in METHODS:
            for row in pq.read_table(rd / "pool" / m / "summary.parquet").to_pylist():
                table[row["target"]].setdefault(m, []).append(row["test_acc"])

    cols = ["LT"] + METHODS
    lines = [f"{'round':>5} {'remain %':>9} " + " ".join(f"{c:>15}" for c in cols) + f" {'LP-LT':>7}"]
    gains, wins, cell_wins, cells = [], 0, 0, 0
    for r in sorted(table):
        t = table[r]
        gain = statistics.mean(t["interpolation"]) - statistics.mean(t["LT"])
        gains.append(gain)
        wins += gain > 0
        cell_wins += sum(lp > lt for lp, lt in zip(t["interpolation"], t["LT"], strict=True))
        cells += len(t["LT"])
        lines.append(
            f"{r:>5} {100 * density[r]:>9.2f} " + " ".join(f"{fmt(t[c]):>15}" for c in cols) + f" {100 * gain:>+7.2f}"
        )
    lines.append(
        f"seeds {seeds}; LP(interpolation) - LT: mean gain {100 * statistics.mean(gains):+.2f} pt; "
        f"LP > LT at {wins}/{len(gains)} sparsities (seed means), {cell_wins}/{cells} (round, seed) cells; "
        f"wall {wall / 60:.1f} min"
    )
    print("\n".join(lines))
    (out / "fidelity.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
