"""`lp-ray analyze stability`: is training stable to SGD noise from the rewind point? (Frankle et al.
2020). Two copies trained from the weights after epoch k with different data orders, as rounds 1 and 2
of an ordinary IMP run beside this one, and the error barrier between them (`lmc.paths`)."""

from __future__ import annotations

import dataclasses

from lp_ray import layout
from lp_ray.analysis.lmc import ALPHAS_OPTION, PARALLEL_OPTION, paths
from lp_ray.analysis.protocol import Option, Outcome, RunMeasure
from lp_ray.analysis.running import analysis_done, open_finished, write_outputs
from lp_ray.errors import LpRayError
from lp_ray.spec import DEFAULT_PARALLEL_EVALS


def stability_job(job, from_epoch: int):
    """The job whose rounds 1 and 2 are the two copies: nothing is pruned (imp.rate 0), so every round
    r >= 1 restarts from the weights after `from_epoch` (0: the initialization) and trains to the end
    with the data order of round r. Round 0 trains the dense network that writes the starting point. It
    is a run directory of its own (job name `<job>-stability`), checkpointed and resumable like any IMP
    run, and found again by its hash when the analysis is rerun."""
    imp = dataclasses.replace(job.imp, rate=0.0, rounds=3, rewind_epoch=from_epoch)
    return dataclasses.replace(job, name=f"{job.name}-stability", imp=imp)


class Stability:
    name = "stability"
    help = (
        "Is the network stable to SGD noise from the rewind point? Two copies are trained from the weights "
        "after epoch k with different data orders (Ray Train, checkpointed and resumable, in a run directory "
        "of their own beside this one), and the error barrier between them is measured (Frankle et al. 2020). "
        "From the rewind epoch the copies should be connected; from epoch 0 (initialization) they need not be: "
        "the contrast that makes rewinding matter."
    )
    options = (
        Option(
            "from_epoch",
            list[int],
            "Epoch the two copies start from (repeatable; default: the run's rewind epoch and 0).",
        ),
        ALPHAS_OPTION,
        PARALLEL_OPTION,
    )
    uses_cluster = True

    def run(
        self, run_uri, cluster, tracking_uri, from_epoch=None, alphas=None, parallel_evals=DEFAULT_PARALLEL_EVALS
    ) -> Outcome:
        from lp_ray.analysis.compute import lmc
        from lp_ray.imp.command import run_imp
        from lp_ray.opened_run import open_run
        from lp_ray.progress import console

        alphas = alphas or lmc.ALPHAS
        opened = open_finished(run_uri)
        epochs = from_epoch or sorted({opened.job.imp.rewind_epoch, 0}, reverse=True)
        for k in epochs:
            if not 0 <= k < opened.job.train.epochs:
                raise LpRayError(f"--from-epoch: must be in [0, train.epochs={opened.job.train.epochs}), got {k}")
        if opened.run.scheme is None:  # the copies' run directories beside the run (a URI: the cluster spec's storage)
            cluster = dataclasses.replace(cluster, storage_path=opened.run.uri.rsplit("/", 1)[0])
        rows, pairs = [], []
        for k in epochs:
            job = stability_job(opened.job, k)
            console.print(f"[bold]stability[/] from epoch {k}: two copies from there, rounds 1 and 2 of {job.name}")
            copies = open_run(run_imp(job, cluster, tracking_uri).run.uri)
            path, _ = paths(
                copies, [1, 2], cluster, alphas, parallel_evals, False, tracking_uri, f"stability from epoch {k}"
            )
            rows += [{"from_epoch": k, **r} for r in path]
            pairs += [{"from_epoch": k, "copies_run": copies.run.uri, **p} for p in lmc.pair_rows(path)]
        written = write_outputs(
            opened,
            self.name,
            {"path": rows, "barriers": pairs},
            lambda png: lmc.plot_stability(png, rows),
            tracking_uri,
        )
        return Outcome(pairs, written)

    def summary(self, pairs: list[dict]) -> list[str]:
        return [
            f"from epoch {p['from_epoch']}: error barrier between the copies {100 * p['barrier_test']:+.2f} pt (test)"
            for p in pairs
        ]

    def of_run(self, run) -> list[RunMeasure] | None:
        """The test error barrier between the two copies from each epoch, for the experiment report to
        average over seeds; None if not run."""
        if not analysis_done(run, self.name):
            return None
        return [
            RunMeasure(
                f"barrier_from_epoch_{p['from_epoch']}_pt",
                f"error barrier (test, pt) between two copies trained from epoch {p['from_epoch']}",
                100 * p["barrier_test"],
            )
            for p in run.read_table(layout.analysis_file(self.name, "barriers.parquet")).to_pylist()
        ]


STABILITY = Stability()
