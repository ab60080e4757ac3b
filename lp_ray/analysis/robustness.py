"""`lp-ray analyze robustness`: are pooled networks more robust out of distribution (the paper's CIFAR-C
claim)? LT and every pooled network, as stored, on corrupted test sets (`compute/corruptions.py`).
`lp-ray report` shows mean corruption accuracy, and an experiment report its verdict over seeds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lp_ray import interrupt, layout
from lp_ray.analysis.protocol import Comparison, Measures, Option, Outcome, row_measures_network
from lp_ray.analysis.running import mean_present, open_finished, read_rows, write_outputs
from lp_ray.errors import LpRayError

if TYPE_CHECKING:
    from lp_ray.opened_run import OpenedRun


CORRUPTION_SEED = 0  # the generated MNIST-1D corruptions' seed, unless --seed says another


def corrupted_test_sets(opened: OpenedRun, corruptions_dir: str | None, seed: int):
    """(family, severity) -> a test Source with the same labels, for the run's data set: MNIST-1D
    families generated once and stored in the run (layout.corruptions()), or the CIFAR-C archives in
    `corruptions_dir`."""
    import numpy as np
    import torch
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    from lp_ray.analysis.compute import corruptions
    from lp_ray.data.base import TensorSource

    test = opened.data.test
    dataset = opened.job.data.dataset
    out = {}
    if dataset == "mnist1d":
        rel = layout.corruptions()
        if opened.run.exists(rel):
            stored = st_load(opened.run.read_bytes(rel))
        else:
            stored = {
                f"{family}/{s}": corruptions.corrupt_mnist1d(test.x, family, s, seed).contiguous()
                for family in corruptions.MNIST1D_FAMILIES
                for s in corruptions.SEVERITIES
            }
            opened.run.write_bytes(rel, st_save(stored, metadata={"seed": str(seed)}))
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


class Robustness:
    name = "robustness"
    help = (
        "Are pooled networks more robust out of distribution (the paper's CIFAR-C claim)? LT and every pooled "
        "network on corrupted test sets: for MNIST-1D, five generated families (gaussian noise, shift, scale, "
        "blur, dropout) at severities 1-5, seeded and stored with the run; for CIFAR, the CIFAR-10-C / "
        "CIFAR-100-C archives. Reported as mean corruption accuracy per sparsity (also in `lp-ray report`)."
    )
    options = (
        Option(
            "corruptions",
            str,
            "CIFAR runs: the unpacked CIFAR-10-C / CIFAR-100-C folder (<corruption>.npy, labels.npy).",
        ),
        Option(
            "seed",
            int,
            "MNIST-1D: the seed of the generated corruptions (stored with the run).",
            default=CORRUPTION_SEED,
        ),
    )
    uses_cluster = False
    comparisons = (Comparison("corruption", "lt_corruption", "{method} − LT{where}, mean corruption accuracy"),)

    def run(self, run_uri, cluster, tracking_uri, corruptions=None, seed=CORRUPTION_SEED) -> Outcome:
        import torch

        from lp_ray.analysis.compute.corruptions import mean_corruption_summary, plot
        from lp_ray.pool.records import all_searches
        from lp_ray.progress import console, progress_bars
        from lp_ray.store import decode_weights
        from lp_ray.training import accuracy

        opened = open_finished(run_uri)
        sets = corrupted_test_sets(opened, corruptions, seed)
        data, precision, run = opened.data, opened.job.train.precision, opened.run
        model = opened.new_model()
        # (network, round) -> (weights, sha256 of its file): the sha256 ties each row to the network measured
        networks = {("LT", r): (opened.tickets[r], opened.metas[r].ticket_sha256) for r in opened.rounds}
        for search, results in all_searches(run).items():
            for t, result in results.items():
                rel = layout.target_weights(search, t)
                state = decode_weights(run.read_bytes(rel), run.path(rel), opened.template)[0]
                networks[search, t] = (state, result.sha256)
        console.print(
            f"[bold]lp-ray analyze robustness[/] {run.uri}: {len(networks)} networks x {len(sets)} corrupted test sets"
        )
        rows = []
        bars = progress_bars()
        task = bars.add_task("robustness", total=len(networks), info="")
        with bars:
            for (network, r), (state, digest) in networks.items():
                model.load_state_dict(state)  # as stored: the ticket's own BatchNorm statistics, the pooled network's
                clean = accuracy(model, data.test, torch.arange(len(data.test)), precision=precision)
                for (family, s), source in sorted(sets.items()):
                    acc = accuracy(model, source, torch.arange(len(source)), precision=precision)
                    rows.append(
                        {
                            "network": network,
                            "round": r,
                            "density": opened.metas[r].density,
                            "corruption": family,
                            "severity": s,
                            "test_acc": acc,
                            "clean_test_acc": clean,
                            "network_sha256": digest,
                        }
                    )
                bars.advance(task)
                interrupt.check()
        summary = mean_corruption_summary(rows)
        written = write_outputs(
            opened, self.name, {"accuracy": rows, "summary": summary}, lambda png: plot(png, summary), tracking_uri
        )
        return Outcome(summary, written)

    def summary(self, summary: list[dict]) -> list[str]:
        lines = []
        for network in sorted({r["network"] for r in summary}, key=lambda n: (n != "LT", n)):
            mine = [r for r in summary if r["network"] == network]
            lines.append(
                f"{network if network == 'LT' else 'pooled ' + network}: mean corruption accuracy "
                f"{100 * sum(r['mean_corruption_acc'] for r in mine) / len(mine):.2f}%, clean "
                f"{100 * sum(r['clean_test_acc'] for r in mine) / len(mine):.2f}% (mean over sparsities)"
            )
        return lines

    # --- what the reports show ------------------------------------------------------------------------

    def measures(self, run, searches: dict) -> Measures:
        rows = {(r["network"], r["round"]): r for r in read_rows(run, self.name, "summary")}
        out = Measures()
        for (network, r), row in rows.items():
            if network == "LT":
                out.lt[r] = {"lt_corruption": row["mean_corruption_acc"]}
        for search, results in searches.items():
            for t, result in results.items():
                row, lt = rows.get((search, t)), out.lt.get(t)
                if row is not None and lt is not None and row_measures_network(row, result, "clean_test_acc"):
                    out.pooled[search, t] = {"corruption": row["mean_corruption_acc"], **lt}
        return out

    def report_columns(self, measures: Measures, rounds: list[int], searches: dict) -> dict[str, list]:
        if not measures.lt:
            return {}
        cols = {
            "lt_corruption_acc": [100 * measures.lt[r]["lt_corruption"] if r in measures.lt else None for r in rounds]
        }
        for name in searches:
            got = {t: m for (s, t), m in measures.pooled.items() if s == name}
            if got:
                cols[f"{name}_corruption_acc"] = [100 * got[r]["corruption"] if r in got else None for r in rounds]
        return cols

    def report_lines(self, d: dict, methods: list[str]) -> list[str]:
        if "lt_corruption_acc" not in d:
            return []
        lines = [f"LT: mean corruption accuracy {mean_present(d['lt_corruption_acc']):.2f}% (mean over sparsities)"]
        for m in methods:
            if f"{m}_corruption_acc" in d:
                lines.append(
                    f"{m}: mean corruption accuracy {mean_present(d[f'{m}_corruption_acc']):.2f}% (pooled, mean over sparsities)"
                )
        return lines


ROBUSTNESS = Robustness()
