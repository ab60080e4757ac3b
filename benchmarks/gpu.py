"""The GPU path, measured against the bare-PyTorch limit (not a test). One command on any CUDA machine with
only the project installed: synthetic CIFAR-shaped data (50,000 training images, 10% of them validation),
CIFAR ResNet-18 (SGD, BatchNorm) or with `--model vit` the small ViT of jobs/cifar10-vit.yaml (its model
and recipe: AdamW, warm-up + cosine, clipping; LayerNorm, so no recalibration), no downloads.

    .venv/bin/python benchmarks/gpu.py                        # a CUDA machine: the measurement (~8 min on one GPU)
    .venv/bin/python benchmarks/gpu.py --model vit            # the same for the transformer recipe
    .venv/bin/python benchmarks/gpu.py --device cpu --small   # the same code path on the CPU, tiny (the CI guard)

Prints, in one run:
  training   images/s of lp-ray's round loop (`lp-ray imp`: Ray Train, one GPU worker, data resident on
             the GPU) and of a bare PyTorch loop doing the same work (same batch, the job's masked
             optimizer and schedule, per-epoch validation), at fp32 and at bf16 (autocast) with
             channels-last for the CNN; the ratio (target <= 1.3x)
  pool       evaluations/s (merge, BatchNorm recalibration over the 45,000 training images, validation
             over the 5,000): lp-ray's evaluators (Ray actors) at 1 and at 4 per GPU (num_gpus 0.25),
             and a bare loop of the same evaluations; the ratio (target <= 1.5x) and whether the four
             overlap
  memory     the peak GPU memory of each
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lp_ray.data.loading import load_data  # noqa: E402
from lp_ray.models import build_model  # noqa: E402
from lp_ray.recipes import make_optimizer, set_lr  # noqa: E402
from lp_ray.schedules import lr_at, per_step  # noqa: E402
from lp_ray.sparsity import dense_mask, prunable_names  # noqa: E402
from lp_ray.spec import job_to_dict, run_name  # noqa: E402
from lp_ray.spec_loading import job_from_dict  # noqa: E402
from lp_ray.store import RunDir  # noqa: E402
from lp_ray.training import (  # noqa: E402
    count_correct,
    epoch_seed,
    masked_train_epoch,
    model_to_device,
)

SIZES = {  # full: what the issue asks for; small: seconds on a CPU. Small images are 16x16: the same code path
    # (the CIFAR ResNet-18 pools adaptively) at a quarter of the compute; the guard took 63 s instead of 80.
    "full": {"num_train": 50_000, "num_test": 2_000, "epochs": 3, "batch_size": 128, "evals": 24, "side": 32},
    "small": {"num_train": 100, "num_test": 20, "epochs": 1, "batch_size": 30, "evals": 2, "side": 16},
}


def _vit() -> tuple[dict, dict]:
    """jobs/cifar10-vit.yaml's network and recipe, with one warm-up epoch of the benchmark's few."""
    shipped = yaml.safe_load((ROOT / "jobs" / "cifar10-vit.yaml").read_text())
    recipe = {k: v for k, v in shipped["train"].items() if k not in ("epochs", "batch_size")}
    return shipped["model"], {**recipe, "warmup_epochs": 1}


MODELS = {  # --model: the network and its recipe (train fields), on the same synthetic data
    "resnet18": ({"name": "cifar_resnet18"}, {"lr_drops": []}),
    "vit": _vit(),
}


def job(size: dict, precision: str, model: str = "resnet18") -> dict:
    network, recipe = MODELS[model]
    if "warmup_epochs" in recipe:  # a warm-up shorter than training (none in the one epoch of --small)
        recipe = {**recipe, "warmup_epochs": min(recipe["warmup_epochs"], size["epochs"] - 1)}
    return {
        "name": f"gpu-bench-{model}",
        "data": {
            "dataset": "synthetic",
            "shape": [3, size["side"], size["side"]],
            "num_classes": 10,
            "num_train": size["num_train"],
            "num_test": size["num_test"],
        },
        "model": network,
        "train": {"epochs": size["epochs"], "batch_size": size["batch_size"], "precision": precision, **recipe},
        "imp": {"rounds": 2, "rewind_epoch": 0},
    }


def cluster(out: Path, device: str, evaluators: int = 1, address: str = "local") -> dict:
    gpu = device == "cuda"
    return {
        "address": address,
        "num_workers": 1,
        "use_gpu": gpu,
        "resources_per_worker": {"CPU": 1, **({"GPU": 1} if gpu else {})},
        "eval_resources": {"num_gpus": 1 / evaluators} if gpu else {"num_cpus": 1 / evaluators},
        "storage_path": str(out / "runs"),
        "checkpoint_interval_s": 30,
    }


def lp_ray_training(spec: dict, out: Path, device: str, address: str) -> tuple[Path, list[dict]]:
    """`lp-ray imp` as a user runs it; the epochs of round 1 (round 0 warms up kernels and autotuning)."""
    (out / "job.yaml").write_text(yaml.safe_dump(spec))
    (out / "cluster.yaml").write_text(yaml.safe_dump(cluster(out, device, address=address)))
    subprocess.run(
        [str(Path(sys.executable).parent / "lp-ray"), "imp", "--job", str(out / "job.yaml")]
        + ["--cluster", str(out / "cluster.yaml"), "--tracking-uri", f"sqlite:///{out / 'mlflow.db'}"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    run = out / "runs" / run_name(job_from_dict(spec))
    return run, json.loads((run / "rounds" / "round_01" / "history.json").read_text())["epochs"]


def bare_training(spec: dict, run: Path, device: torch.device) -> tuple[list[float], float]:
    """The same epochs in one process: seconds per epoch (training + validation), peak memory (MB)."""
    j = job_from_dict(spec)
    data = load_data(j, RunDir(str(run))).to(device)
    torch.manual_seed(0)
    model = model_to_device(build_model(j.model, data.num_classes, data.input_shape), device)
    mask = dense_mask(model.state_dict(), prunable_names(model))
    opt = make_optimizer(model, j.train)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    b = j.train.batch_size
    steps = -(-len(data.train_idx) // b)
    for epoch in range(j.train.epochs):
        t0 = time.perf_counter()
        set_lr(opt, lr_at(j.train, epoch))
        lr_of_step = (lambda step, e=epoch: lr_at(j.train, e, step, steps)) if per_step(j.train) else None
        gen = torch.Generator().manual_seed(epoch_seed(0, 1, epoch))
        masked_train_epoch(
            model,
            opt,
            data.train,
            data.train_idx,
            b,
            mask,
            gen,
            device,
            precision=j.train.precision,
            lr_of_step=lr_of_step,
            grad_clip=j.train.grad_clip,
        )
        count_correct(model, data.train, data.val_idx, device, precision=j.train.precision)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times, _peak(device)


def lp_ray_evaluations(
    run: Path, spec: dict, device: str, evaluators: int, n: int, address: str
) -> tuple[float, float]:
    """Evaluations/s of the pool's Ray evaluators (warm: every actor has scored once), and their peak
    memory (MB, the largest actor's)."""
    from lp_ray.cluster import connect
    from lp_ray.opened_run import open_run
    from lp_ray.pool.core import keep_count
    from lp_ray.pool.executors import EvalRequest, RayExecutor
    from lp_ray.spec_loading import load_cluster

    spec_file = run.parent.parent / f"cluster-{evaluators}-evaluators.yaml"  # in the working folder, not /tmp
    spec_file.write_text(yaml.safe_dump(cluster(run.parent.parent, device, evaluators, address)))
    c = load_cluster(spec_file)
    connect(c)  # before ray is imported here: connect() sets the environment (auth mode) ray reads then
    import ray

    pr = open_run(str(run))
    ex = RayExecutor(job_to_dict(pr.job), str(run), c.torch_threads, evaluators, c.eval_resources)
    try:
        for r in pr.rounds:
            ex.put(r, pr.tickets[r])
        req = EvalRequest(1, 0, 0.5, keep_count(pr.masks[1]))
        for i in range(ex.parallel):  # warm-up: every actor loads its data and model once
            ex.submit(i, req)
        for _ in range(ex.parallel):
            ex.next_done()
        t0 = time.perf_counter()
        for i in range(n):
            ex.submit(i, req)
        for _ in range(n):
            ex.next_done()
        rate = n / (time.perf_counter() - t0)
        peak = max(ray.get([a.peak_memory_mb.remote() for a in ex.actors]))
    finally:
        ex.close()
    return rate, peak


def bare_evaluations(run: Path, device: torch.device, n: int) -> tuple[float, float]:
    from lp_ray.opened_run import open_run
    from lp_ray.pool.core import Evaluator, bn_subset, keep_count

    pr = open_run(str(run))
    data, model = pr.data, pr.new_model()
    ev = Evaluator(
        model,
        data,
        pr.prunable,
        bn_subset(data.train_idx, None, 0),
        pr.job.train.batch_size,
        device,
        pr.job.train.precision,
    )
    keep = keep_count(pr.masks[1])
    ev.evaluate(pr.tickets[1], pr.tickets[0], 0.5, keep)  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(n):
        ev.evaluate(pr.tickets[1], pr.tickets[0], 0.5, keep)
    _sync(device)
    return n / (time.perf_counter() - t0), _peak(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--small", action="store_true", help="tiny sizes (the CPU guard), not a measurement")
    ap.add_argument("--model", choices=sorted(MODELS), default="resnet18", help="the network and its recipe")
    ap.add_argument("--out", default=None, help="working folder (default: a temporary one)")
    ap.add_argument(
        "--precisions",
        default="fp32,bf16",
        help="training precisions to measure, comma-separated (the pool uses the first); the CI guard runs "
        "bf16 only where the CPU has AVX-512 (elsewhere bf16 convolutions crawl), fp32 otherwise",
    )
    ap.add_argument(
        "--address",
        default="local",
        help="the Ray cluster to run on (default: a private one, as lp-ray's default cluster spec starts)",
    )
    a = ap.parse_args()
    precisions = a.precisions.split(",")
    if not precisions or any(p not in ("fp32", "bf16") for p in precisions):
        sys.exit(f"error: --precisions: expected fp32 and/or bf16, got {a.precisions!r}")
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: no CUDA device here; run on a GPU machine, or --device cpu --small to exercise the code path")
    size = SIZES["small" if a.small else "full"]
    device = torch.device(a.device)
    out = Path(a.out or tempfile.mkdtemp(prefix="lp-ray-gpu-"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device: {name}; {size['num_train']} synthetic 3x{size['side']}x{size['side']} images, {a.model}, batch {size['batch_size']}"
    )
    lines, runs = [], {}
    images = int(size["num_train"] * 0.9)
    for precision in precisions:
        spec = job(size, precision, a.model)
        folder = out / precision
        folder.mkdir(parents=True, exist_ok=True)
        run, epochs = lp_ray_training(spec, folder, a.device, a.address)
        runs[precision] = (run, spec)
        ours = statistics.median(e["seconds"] for e in epochs)
        ours_peak = max((e.get("peak_gpu_memory_mb", float("nan")) for e in epochs), default=float("nan"))
        bare, bare_peak = bare_training(spec, run, device)
        bare_med = statistics.median(bare[1:] if len(bare) > 1 else bare)
        lines.append(
            f"training {precision:>4}{' + channels-last' if device.type == 'cuda' and a.model != 'vit' else ''}: lp-ray "
            f"{images / ours:8.0f} images/s, bare {images / bare_med:8.0f} images/s: {ours / bare_med:.2f}x "
            f"(target <= 1.3x); peak memory lp-ray {ours_peak:.0f} MB, bare {bare_peak:.0f} MB"
        )
        print(lines[-1], flush=True)
    run, spec = runs[precisions[0]]
    n = size["evals"]
    one, one_peak = lp_ray_evaluations(run, spec, a.device, 1, n, a.address)
    four, four_peak = lp_ray_evaluations(run, spec, a.device, 4, n, a.address)
    bare, bare_peak = bare_evaluations(run, device, n)
    lines.append(
        f"pool {precisions[0]}: lp-ray {one:.2f} evaluations/s with 1 evaluator, {four:.2f} with 4 per "
        f"{'GPU' if device.type == 'cuda' else 'CPU slot'} ({four / one:.2f}x: they overlap if > 1), bare "
        f"{bare:.2f}/s: {bare / one:.2f}x (target <= 1.5x); peak memory per evaluator {one_peak:.0f} MB "
        f"(1), {four_peak:.0f} MB (4), bare {bare_peak:.0f} MB"
    )
    print(lines[-1], flush=True)
    print(f"working folder: {out}")


if __name__ == "__main__":
    main()
