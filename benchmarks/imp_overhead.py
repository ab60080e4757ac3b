"""IMP overhead benchmark (not a test): the same default-job IMP run two ways, in one run.

  bare    a single-process PyTorch loop: same data, model, masked SGD, pruning and rewinding, no Ray,
          no checkpoints, no MLflow (the floor any tool is measured against)
  lp-ray  `lp-ray imp` as a user runs it (default cluster spec): one Ray Train fit() for all rounds,
          epoch checkpoints, tickets and MLflow logging

Prints both wall times, the per-round medians and the ratio (target: <= 1.1x on the default job).

    .venv/bin/python benchmarks/imp_overhead.py              # the default job: 11 rounds of 40 epochs
    .venv/bin/python benchmarks/imp_overhead.py --rounds 4   # quicker (fixed costs weigh more)

The two alternate --repeats times (default 2), because this shared machine's speed drifts by ~30%.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lp_ray.data.loading import materialize_data  # noqa: E402
from lp_ray.models import build_model  # noqa: E402
from lp_ray.recipes import make_optimizer, set_lr  # noqa: E402
from lp_ray.schedules import lr_at  # noqa: E402
from lp_ray.sparsity import apply_mask, dense_mask, prunable_names, prune_fraction  # noqa: E402
from lp_ray.spec_loading import load_job  # noqa: E402
from lp_ray.store import RunDir, read_ticket_meta  # noqa: E402
from lp_ray.training import accuracy, epoch_seed, masked_train_epoch  # noqa: E402


def bare_imp(job, out: Path) -> list[float]:
    """Plain PyTorch IMP with rewinding, one process, one thread. Returns seconds per round."""
    torch.set_num_threads(1)
    data = materialize_data(job, RunDir(str(out / "run")))
    T = job.train
    torch.manual_seed(T.seed)
    model = build_model(job.model, data.num_classes, data.input_shape)
    names = prunable_names(model, job.imp.prune_linear)
    mask = dense_mask(model.state_dict(), names)
    rewind, times = None, []
    for r in range(job.imp.rounds):
        t0 = time.perf_counter()
        if r > 0:
            mask = prune_fraction(model.state_dict(), mask, job.imp.rate)
            model.load_state_dict(apply_mask(rewind, mask))
        opt = make_optimizer(model, T)
        for epoch in range(0 if r == 0 else job.imp.rewind_epoch, T.epochs):
            if r == 0 and epoch == job.imp.rewind_epoch:
                rewind = {k: v.clone() for k, v in model.state_dict().items()}
            set_lr(opt, lr_at(T, epoch))
            gen = torch.Generator().manual_seed(epoch_seed(T.seed, r, epoch))
            masked_train_epoch(model, opt, data.train, data.train_idx, T.batch_size, mask, gen, torch.device("cpu"))
            accuracy(model, data.train, data.val_idx)  # the same per-epoch validation lp-ray does
        test = accuracy(model, data.test, torch.arange(len(data.test)))
        times.append(time.perf_counter() - t0)
        print(f"  bare round {r:2d}: {times[-1]:6.1f} s  test {100 * test:.2f}%", flush=True)
    return times


def lp_ray_imp(job_path: Path, out: Path, rounds: int) -> tuple[float, list[float]]:
    out.mkdir(parents=True, exist_ok=True)
    storage = out / "runs"
    cluster = out / "cluster.yaml"
    cluster.write_text(yaml.safe_dump({"storage_path": str(storage)}))  # cluster/local.yaml otherwise
    t0 = time.perf_counter()
    subprocess.run(
        [
            str(Path(sys.executable).parent / "lp-ray"),
            "imp",
            "--job",
            str(job_path),
            "--cluster",
            str(cluster),
            "--rounds",
            str(rounds),
            "--tracking-uri",
            f"sqlite:///{out / 'mlflow.db'}",
        ],
        check=True,
    )
    wall = time.perf_counter() - t0
    run = RunDir(str(next(p for p in storage.iterdir() if p.is_dir())))
    per_round = [read_ticket_meta(run, r).seconds for r in range(rounds)]
    return wall, per_round


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--job", default=str(ROOT / "jobs/default.yaml"))
    ap.add_argument("--rounds", type=int, default=None, help="tickets to train (default: the job's)")
    ap.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="alternate bare and lp-ray this many times (the machine's speed drifts; medians)",
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks/out/imp_overhead"))
    a = ap.parse_args()
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    job = load_job(a.job)
    rounds = a.rounds or job.imp.rounds
    job.imp.rounds = rounds

    bare_walls, ours_walls, bare_rounds, ours_rounds = [], [], [], []
    for i in range(a.repeats):
        print(f"[{i + 1}/{a.repeats}] bare PyTorch loop, {rounds} rounds:", flush=True)
        t0 = time.perf_counter()
        bare_rounds += bare_imp(job, out / f"bare-{i}")
        bare_walls.append(time.perf_counter() - t0)
        print(f"[{i + 1}/{a.repeats}] lp-ray imp, {rounds} rounds:", flush=True)
        wall, per_round = lp_ray_imp(Path(a.job), out / f"lp-ray-{i}", rounds)
        ours_walls.append(wall)
        ours_rounds += per_round
        print(f"  walls: bare {bare_walls[-1]:.1f} s, lp-ray {wall:.1f} s -> {wall / bare_walls[-1]:.2f}x", flush=True)

    med = statistics.median
    print()
    print(f"{'':10} {'median wall s':>14} {'median round s':>15}   (walls: each run)")
    print(f"{'bare':10} {med(bare_walls):14.1f} {med(bare_rounds):15.1f}   {', '.join(f'{w:.1f}' for w in bare_walls)}")
    print(
        f"{'lp-ray':10} {med(ours_walls):14.1f} {med(ours_rounds):15.1f}   {', '.join(f'{w:.1f}' for w in ours_walls)}"
    )
    pair = [o / b for o, b in zip(ours_walls, bare_walls, strict=True)]
    print(
        f"ratio lp-ray / bare: wall {med(ours_walls) / med(bare_walls):.2f}x (per pair: {', '.join(f'{p:.2f}' for p in pair)}), "
        f"median round {med(ours_rounds) / med(bare_rounds):.2f}x (target: wall <= 1.1x)"
    )


if __name__ == "__main__":
    main()
