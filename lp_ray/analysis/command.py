"""`lp-ray analyze`: the plumbing around the analyses' pure parts (lmc.py, disagreement.py, ensemble.py,
corruptions.py): reading a finished run, evaluating networks (on the pool's evaluators where there are
many), and writing each analysis into the run directory, `analysis/<name>/` (Parquet tables and a PNG),
then into MLflow as artifacts of the run's imp run (under `analysis/<name>/`)."""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import torch

from lp_ray import interrupt, layout
from lp_ray.errors import LpRayError
from lp_ray.opened_run import OpenedRun, open_run
from lp_ray.progress import console, progress_bars
from lp_ray.spec import ClusterSpec, job_to_dict
from lp_ray.store import RunDir, check_storage_reachable


@dataclasses.dataclass
class Written:
    """What an analysis wrote: its files in the run directory, and the MLflow run that holds them."""

    files: list[str]
    mlflow_run: str | None


def write_outputs(
    pr: OpenedRun,
    name: str,
    tables: dict[str, list[dict]],
    plot: Callable[[str], None],
    tracking_uri: str | None,
) -> Written:
    """analysis/<name>/<table>.parquet for every table and analysis/<name>/<name>.png, each written
    atomically; then the same files as artifacts of the run's imp run (when its store is reachable)."""
    run = pr.run
    files = []
    for table, rows in tables.items():
        rel = layout.analysis_file(name, f"{table}.parquet")
        run.write_table(rel, pa.Table.from_pylist(rows))
        files.append(rel)
    with tempfile.TemporaryDirectory() as d:
        png = os.path.join(d, f"{name}.png")
        plot(png)
        rel = layout.analysis_file(name, f"{name}.png")
        with open(png, "rb") as f:
            run.write_bytes(rel, f.read())
        files.append(rel)
    return Written([run.uri_of(f) for f in files], _log_artifacts(pr, name, files, tracking_uri))


def _log_artifacts(pr: OpenedRun, name: str, files: list[str], tracking_uri: str | None) -> str | None:
    from lp_ray.tracking import run_tracker

    found = run_tracker(pr.run, tracking_uri)
    if found is None:
        return None  # a read-only analysis never creates a store
    tracker, parent = found
    tracker.log_run_files(parent, pr.run, files, f"{layout.ANALYSIS}/{name}")
    return parent


def open_finished(run_uri: str) -> OpenedRun:
    run = RunDir(run_uri)
    if not run.is_dir():
        raise LpRayError(f"{run_uri}: no such run directory")
    pr = open_run(run_uri)  # every ticket checked against its meta.json and mask
    check_storage_reachable(pr.run.uri)  # the analysis writes into it
    return pr


def _executor(pr: OpenedRun, cluster: ClusterSpec, parallel: int, serial: bool, tracking_uri: str | None):
    from lp_ray.pool.executors import RayExecutor, SerialExecutor, build_evaluator

    job_dict = job_to_dict(pr.job)
    if serial:
        return SerialExecutor(build_evaluator(job_dict, pr.run.uri, None, cluster.torch_threads))
    from lp_ray.cluster import check_storage, connect

    connect(cluster, {"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else None)
    check_storage(cluster, pr.run.uri)
    return RayExecutor(job_dict, pr.run.uri, None, cluster.torch_threads, parallel, cluster.eval_resources)


def score_all(ex, requests: dict, what: str) -> dict:
    """Run every ScoreRequest (key -> request) on the executor, with a progress bar; key -> (val, test)."""
    out = {}
    bars = progress_bars()
    task = bars.add_task(what, total=len(requests), info="")
    with bars:
        for key, req in requests.items():
            ex.submit(key, req)
        for _ in range(len(requests)):
            key, score = ex.next_done()
            out[key] = (score.val_acc, score.test_acc)
            bars.advance(task)
            interrupt.check()
    return out


# --------------------------------------------------------------------------------------------------
# Linear mode connectivity


def run_lmc(
    run_uri: str,
    cluster: ClusterSpec,
    tracking_uri: str | None,
    alphas: tuple[float, ...],
    parallel: int = 2,
    serial: bool = False,
) -> tuple[list[dict], Written]:
    from lp_ray.analysis import lmc

    pr = open_finished(run_uri)
    if len(pr.rounds) < 2:
        raise LpRayError(f"{pr.run.uri}: linear mode connectivity needs two finished tickets, found {len(pr.rounds)}")
    rows, scores = lmc_paths(pr, pr.rounds, cluster, alphas, parallel, serial, tracking_uri, "lmc")
    pairs = lmc.pair_rows(rows)
    densities = {r: pr.metas[r].density for r in pr.rounds}
    matrix = lmc.midpoint_matrix(pr.rounds, pairs, {r: scores["ticket", r][1] for r in pr.rounds})
    written = write_outputs(
        pr,
        "lmc",
        {"path": rows, "pairs": pairs},
        lambda png: lmc.plot(png, pr.rounds, densities, rows, matrix),
        tracking_uri,
    )
    return pairs, written


def lmc_paths(pr: OpenedRun, rounds, cluster, alphas, parallel, serial, tracking_uri, what) -> tuple[list[dict], dict]:
    """Every pair of `rounds` along `alphas` on the pool's evaluators: each ticket scored once (the
    endpoints), every interior point once."""
    from lp_ray.analysis import lmc
    from lp_ray.pool.executors import ScoreRequest

    ex = _executor(pr, cluster, parallel, serial, tracking_uri)
    try:
        for r in rounds:
            ex.put(r, pr.tickets[r])
        requests: dict = {("ticket", r): ScoreRequest(r, None, 0.0, None) for r in rounds}
        for a, b in lmc.pairs(rounds):
            for alpha in alphas[1:-1]:
                requests[a, b, alpha] = ScoreRequest(a, b, alpha, None)
        console.print(
            f"[bold]lp-ray analyze {what}[/] {pr.run.uri}: {len(rounds)} networks, {len(lmc.pairs(rounds))} pair(s) x "
            f"{len(alphas)} points: {len(requests)} evaluations, {ex.parallel} in parallel"
        )
        scores = score_all(ex, requests, what)
    finally:
        ex.close()
    return lmc.path_rows(rounds, alphas, scores), scores


# --------------------------------------------------------------------------------------------------
# Stability of the rewind point (Frankle et al. 2020): two copies trained from it with different data orders


def stability_job(job, from_epoch: int):
    """The job whose rounds 1 and 2 are the two copies: nothing is pruned (imp.rate 0), so every round
    r >= 1 restarts from the weights after `from_epoch` (0: the initialization) and trains to the end
    with the data order of round r. Round 0 trains the dense network that writes the starting point. It
    is a run directory of its own (job name `<job>-stability`), checkpointed and resumable like any IMP
    run, and found again by its hash when the analysis is rerun."""
    imp = dataclasses.replace(job.imp, rate=0.0, rounds=3, rewind_epoch=from_epoch)
    return dataclasses.replace(job, name=f"{job.name}-stability", imp=imp)


def run_stability(
    run_uri: str,
    cluster: ClusterSpec,
    tracking_uri: str,
    from_epochs: list[int],
    alphas: tuple[float, ...],
    parallel: int = 2,
) -> tuple[list[dict], Written]:
    from lp_ray.analysis import lmc
    from lp_ray.imp.command import run_imp

    pr = open_finished(run_uri)
    for k in from_epochs:
        if not 0 <= k < pr.job.train.epochs:
            raise LpRayError(f"--from-epoch: must be in [0, train.epochs={pr.job.train.epochs}), got {k}")
    if pr.run.scheme is None:  # the copies' run directories beside the run (a URI: the cluster spec's storage)
        cluster = dataclasses.replace(cluster, storage_path=pr.run.uri.rsplit("/", 1)[0])
    rows, pairs = [], []
    for k in from_epochs:
        job = stability_job(pr.job, k)
        console.print(f"[bold]stability[/] from epoch {k}: two copies from there, rounds 1 and 2 of {job.name}")
        copies = open_run(run_imp(job, cluster, tracking_uri).run.uri)
        path, _ = lmc_paths(copies, [1, 2], cluster, alphas, parallel, False, tracking_uri, f"stability from epoch {k}")
        rows += [{"from_epoch": k, **r} for r in path]
        pairs += [{"from_epoch": k, "copies_run": copies.run.uri, **p} for p in lmc.pair_rows(path)]
    written = write_outputs(
        pr, "stability", {"path": rows, "barriers": pairs}, lambda png: _plot_stability(png, rows), tracking_uri
    )
    return pairs, written


def _plot_stability(path: str, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k in sorted({r["from_epoch"] for r in rows}, reverse=True):
        pts = sorted((r for r in rows if r["from_epoch"] == k), key=lambda r: r["alpha"])
        ax.plot(
            [r["alpha"] for r in pts], [100 * (1 - r["test_acc"]) for r in pts], marker="o", label=f"from epoch {k}"
        )
    ax.set_xlabel("alpha  ((1 - alpha) * copy 1 + alpha * copy 2)")
    ax.set_ylabel("test error (%)")
    ax.set_title("two copies trained from one point with different data orders")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------
# Disagreement


def stored_lt_predictions(pr: OpenedRun) -> tuple[dict[int, np.ndarray], np.ndarray, dict[str, list[dict]]]:
    """Every ticket's test predictions as stored by pool searches (the `lt` column of predictions_RR
    .parquet: the ticket as trained), the labels, and each search's trace."""
    from lp_ray.pool.records import all_searches, read_predictions

    preds: dict[int, np.ndarray] = {}
    labels = None
    traces = {}
    for search, results in all_searches(pr.run).items():
        for t, res in results.items():
            table = read_predictions(pr.run, search, res)
            if table is None:
                continue
            preds.setdefault(t, table.column("lt").to_numpy())
            labels = table.column("label").to_numpy()
        if pr.run.exists(layout.trace(search)):
            traces[search] = pr.run.read_table(layout.trace(search)).to_pylist()
    missing = [r for r in pr.rounds if r not in preds]
    if missing:
        raise LpRayError(
            f"{pr.run.uri}: no stored test predictions for round(s) {missing}; run `lp-ray pool {pr.run.uri}` first"
        )
    return preds, labels, traces


def run_disagreement(run_uri: str, tracking_uri: str | None) -> tuple[list[dict], Written]:
    from lp_ray.analysis import disagreement

    pr = open_finished(run_uri)
    preds, _, traces = stored_lt_predictions(pr)
    rounds = pr.rounds
    m = disagreement.matrix(rounds, preds)
    pairs = [
        {"a": a, "b": b, "disagreement": float(m[i, j])}
        for i, a in enumerate(rounds)
        for j, b in enumerate(rounds)
        if i < j
    ]
    steps = [row for search, trace in traces.items() for row in disagreement.step_rows(trace, preds, search)]
    summary = [{"search": s, **disagreement.summary([r for r in steps if r["search"] == s])} for s in traces]
    densities = {r: pr.metas[r].density for r in rounds}
    first = next(iter(traces), None)
    shown = [r for r in steps if r["search"] == first]
    written = write_outputs(
        pr,
        "disagreement",
        {"pairs": pairs, "steps": steps, "summary": summary},
        lambda png: disagreement.plot(png, rounds, densities, m, shown),
        tracking_uri,
    )
    return summary, written


# --------------------------------------------------------------------------------------------------
# Output ensemble and the best-validation ticket


def ticket_probabilities(
    pr: OpenedRun, states: dict, device: torch.device = torch.device("cpu")
) -> tuple[dict, np.ndarray]:
    """Softmax outputs on the test set of every network in `states` (as stored: its own BatchNorm
    statistics), and the labels."""
    from lp_ray.data.loading import load_data
    from lp_ray.models import build_model
    from lp_ray.training import probabilities

    data = load_data(pr.job, pr.run)
    model = build_model(pr.job.model, data.num_classes, data.input_shape).to(device)
    idx = torch.arange(len(data.test))
    out, labels = {}, None
    for key, state in states.items():
        model.load_state_dict(state)
        probs, y = probabilities(model, data.test, idx, 1000, device, pr.job.train.precision)
        out[key] = probs.numpy()
        labels = y.numpy()
        interrupt.check()
    return out, labels


def run_ensemble(run_uri: str, tracking_uri: str | None) -> tuple[list[dict], Written]:
    from lp_ray.analysis import ensemble
    from lp_ray.pool.records import all_searches

    pr = open_finished(run_uri)
    searches = all_searches(pr.run)
    if not searches:
        raise LpRayError(f"{pr.run.uri}: no pool search to compare with; run `lp-ray pool {pr.run.uri}` first")
    probs, labels = ticket_probabilities(pr, pr.tickets)
    table = [row for s, results in searches.items() for row in ensemble.rows(s, list(results.values()), probs, labels)]
    best = ensemble.best_val_round({r: pr.metas[r].val_acc for r in pr.rounds})
    baseline = [{"round": best, "val_acc": pr.metas[best].val_acc, "test_acc": pr.metas[best].test_acc}]
    written = write_outputs(
        pr,
        "ensemble",
        {"ensemble": table, "best_val_ticket": baseline},
        lambda png: ensemble.plot(png, table, (best, pr.metas[best].test_acc)),
        tracking_uri,
    )
    return table, written


# --------------------------------------------------------------------------------------------------
# Robustness: LT and pooled networks on corrupted test sets


def corrupted_test_sets(pr: OpenedRun, corruptions_dir: str | None, seed: int):
    """(family, severity) -> a test Source with the same labels, for the run's data set: MNIST-1D
    families generated once and stored in the run (analysis/robustness/corruptions.safetensors), or the
    CIFAR-C archives in `corruptions_dir`."""
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    from lp_ray.analysis import corruptions
    from lp_ray.data.base import TensorSource
    from lp_ray.data.loading import load_data

    data = load_data(pr.job, pr.run)
    test = data.test
    dataset = pr.job.data.dataset
    out = {}
    if dataset == "mnist1d":
        rel = layout.corruptions()
        if pr.run.exists(rel):
            stored = st_load(pr.run.read_bytes(rel))
        else:
            stored = {
                f"{family}/{s}": corruptions.corrupt_mnist1d(test.x, family, s, seed).contiguous()
                for family in corruptions.MNIST1D_FAMILIES
                for s in corruptions.SEVERITIES
            }
            pr.run.write_bytes(rel, st_save(stored, metadata={"seed": str(seed)}))
        for key, x in stored.items():
            family, s = key.rsplit("/", 1)
            out[family, int(s)] = TensorSource(x, test.y, test.num_classes)
        return out
    if dataset in corruptions.CIFAR_C_SOURCES:
        from lp_ray.data.cifar import MEAN, STD

        folder = corruptions.cifar_c_folder(corruptions_dir, dataset)
        names, labels, images = corruptions.read_cifar_c(folder, len(test))
        if not np.array_equal(labels, test.y.numpy()):
            raise LpRayError(f"{folder / 'labels.npy'}: its labels are not this run's {dataset} test labels")
        mean, std = torch.tensor(MEAN[dataset]).view(1, 3, 1, 1), torch.tensor(STD[dataset]).view(1, 3, 1, 1)
        for name in names:
            for s in corruptions.SEVERITIES:
                x = (torch.from_numpy(images(name, s)).float() / 255.0 - mean) / std
                out[name, s] = TensorSource(x, test.y, test.num_classes)
        return out
    raise LpRayError(f"data set {dataset!r}: no corrupted test sets (mnist1d generates them; cifar10/100 read CIFAR-C)")


def run_robustness(
    run_uri: str, tracking_uri: str | None, corruptions_dir: str | None = None, seed: int = 0
) -> tuple[list[dict], Written]:
    from lp_ray.data.loading import load_data
    from lp_ray.models import build_model
    from lp_ray.pool.records import all_searches
    from lp_ray.store import decode_weights
    from lp_ray.training import accuracy

    pr = open_finished(run_uri)
    sets = corrupted_test_sets(pr, corruptions_dir, seed)
    data = load_data(pr.job, pr.run)
    model = build_model(pr.job.model, data.num_classes, data.input_shape)
    precision = pr.job.train.precision
    networks = {("LT", r): pr.tickets[r] for r in pr.rounds}
    for search, results in all_searches(pr.run).items():
        for t in results:
            rel = layout.target_weights(search, t)
            networks[search, t] = decode_weights(pr.run.read_bytes(rel), pr.run.path(rel), model.state_dict())[0]
    console.print(
        f"[bold]lp-ray analyze robustness[/] {pr.run.uri}: {len(networks)} networks x {len(sets)} corrupted test sets"
    )
    rows = []
    bars = progress_bars()
    task = bars.add_task("robustness", total=len(networks), info="")
    with bars:
        for (network, r), state in networks.items():
            model.load_state_dict(state)  # as stored: the ticket's own BatchNorm statistics, the pooled network's
            clean = accuracy(model, data.test, torch.arange(len(data.test)), precision=precision)
            for (family, s), source in sorted(sets.items()):
                acc = accuracy(model, source, torch.arange(len(source)), precision=precision)
                rows.append(
                    {
                        "network": network,
                        "round": r,
                        "density": pr.metas[r].density,
                        "corruption": family,
                        "severity": s,
                        "test_acc": acc,
                        "clean_test_acc": clean,
                    }
                )
            bars.advance(task)
            interrupt.check()
    summary = robustness_summary(rows)
    written = write_outputs(
        pr,
        "robustness",
        {"accuracy": rows, "summary": summary},
        lambda png: _plot_robustness(png, summary),
        tracking_uri,
    )
    return summary, written


def robustness_summary(rows: list[dict]) -> list[dict]:
    """Per network and round: clean accuracy and mean corruption accuracy (over every corruption and
    severity 1-5, as CIFAR-C is usually reported)."""
    out = []
    for network, r in sorted({(x["network"], x["round"]) for x in rows}, key=lambda k: (k[0] != "LT", k)):
        mine = [x for x in rows if (x["network"], x["round"]) == (network, r)]
        out.append(
            {
                "network": network,
                "round": r,
                "density": mine[0]["density"],
                "clean_test_acc": mine[0]["clean_test_acc"],
                # fsum: the same value whatever order the sets were read in
                "mean_corruption_acc": math.fsum(x["test_acc"] for x in mine) / len(mine),
            }
        )
    return out


def _plot_robustness(path: str, summary: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for network in sorted({x["network"] for x in summary}, key=lambda n: (n != "LT", n)):
        pts = sorted((x for x in summary if x["network"] == network), key=lambda x: -x["density"])
        ax.plot(
            [100 * x["density"] for x in pts],
            [100 * x["mean_corruption_acc"] for x in pts],
            marker="o",
            label=network if network == "LT" else f"pooled ({network})",
        )
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel("mean corruption accuracy (%)")
    ax.set_title("out of distribution: accuracy on corrupted test sets, severities 1-5")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
