"""What lp-ray logs to MLflow, and how it is laid out for review (docs/architecture.md, "Tracking"):

    lp-ray/<job>                                   one experiment per job name
      IMP · seed 0 · 53b16eb2ce                    per run directory: the job's parameters (those its data
      │                                            set and model read), by_round/ series (ticket accuracy,
      │                                            weights remaining; each search's pooled accuracy and gain),
      │                                            headline means; report/ files
      ├─ round 03 · 51.2% weights                  per round: per-epoch series, the ticket's accuracies,
      │                                            ticket_uri, ticket_sha256; started and ended when it was
      └─ pool interpolation                        per search: its settings, its results as metrics, its
           └─ target 07 · 21.0% weights            verdict as the description, figure and CSV tables;
                                                   per target: its accuracies, gain, McNemar p, network_uri
      sweep fast-search-839bd077d3                 per experiment directory: the verdicts as metrics and
        └─ trial 03 · seed 3 · imp.rewind_epoch=0  description, per-sparsity series, the figure and
             └─ IMP · seed 3 · ...                 tables; a child per trial, in which its IMP run nests

Accuracies are percent (rounded to 4 decimals), gains points; every run is created when its work starts
(or, logged after the fact, with the start and end its records say), so durations are real.
"""

from __future__ import annotations

import time

from lp_ray import layout
from lp_ray.tracking.tracker import TAG_HASH, TAG_KIND, TAG_PARENT, TAG_RUN_DIR, Tracker, experiment_name


def pct(fraction: float | None) -> float | None:
    """An accuracy as logged: percent, rounded to 4 decimals (0.0125 pt is one example in 8,000)."""
    return None if fraction is None else round(100 * fraction, 4)


def pt(points: float | None) -> float | None:
    return None if points is None else round(points, 4)


def tracker_for(job, tracking_uri: str, run=None) -> Tracker:
    """The tracker of a job's runs: its experiment, or, for a run directory that has logged to this
    store before, the experiment it logged into (so a resumed run is never split over two)."""
    from lp_ray.spec import run_hash
    from lp_ray.store import read_tracking

    info = read_tracking(run) if run is not None and run.exists(layout.TRACKING) else None
    known = info.experiment_id if info is not None and info.tracking_uri == tracking_uri else None
    return Tracker(tracking_uri, experiment_name(job.name), run_hash(job), known)


def run_tracker(run, tracking_uri: str | None) -> tuple[Tracker, str] | None:
    """The tracker of an existing run directory and its imp run, for commands that log beside it
    (report, analyses); None when there is nothing to log to: no store at that URI (a command that only
    reads never creates one), or no imp run of this directory in it."""
    from lp_ray.store import read_job
    from lp_ray.tracking.stores import store_exists

    if tracking_uri is None or not store_exists(tracking_uri):
        return None
    tracker = tracker_for(read_job(run), tracking_uri, run)
    parent = imp_run_of(tracker, run)
    return None if parent is None else (tracker, parent)


# --------------------------------------------------------------------------------------------------
# IMP


def job_params(job) -> dict[str, object]:
    """The job as MLflow parameters: what the run used, with the values used. Data and model fields their
    data set and model do not read are left out (the registries say which they read; MNIST-1D's sample
    count only when train_size does not decide it, its generator's fields only where they differ from the
    package's defaults); the pool section belongs to each search's run."""
    import dataclasses

    from lp_ray.data.registry import lookup as data_set
    from lp_ray.models import lookup as model
    from lp_ray.spec import Mnist1dGenerator, job_to_dict

    data_reads = data_set(job.data.dataset).reads
    model_reads = model(job.model.name).reads
    out: dict[str, object] = {"name": job.name}
    for k, v in job_to_dict(job)["data"].items():
        if not data_reads(k) or (k == "num_samples" and job.data.train_size is not None):
            continue
        if k == "generator":
            default = dataclasses.asdict(Mnist1dGenerator())
            out.update({f"data.generator.{g}": x for g, x in v.items() if x != default[g]})
        elif v is not None:
            out[f"data.{k}"] = v
    out.update({f"model.{k}": v for k, v in job_to_dict(job)["model"].items() if model_reads(k) and v is not None})
    for section in ("train", "imp"):
        out.update({f"{section}.{k}": v for k, v in job_to_dict(job)[section].items() if v is not None})
    return out


def imp_run(
    tracker: Tracker, job, run, parent: str | None = None, extra_params: dict | None = None, work: bool = True
) -> str:
    """The run directory's IMP run, found or created (named for people; nested under `parent`, a sweep
    trial, when it is created by one), with the job's parameters; `work`: rounds are left to train (a
    finished run found again is otherwise left as it was)."""
    from lp_ray.spec import run_hash

    tags = {TAG_HASH: tracker.run_hash, TAG_KIND: "imp", TAG_RUN_DIR: run.uri}
    found = tracker.find(tags)
    if found is None and parent is not None:
        tags[TAG_PARENT] = parent
    imported = " · imported" if extra_params else ""
    run_id = tracker.start(f"IMP · seed {job.train.seed} · {run_hash(job)}{imported}", tags, work=work)
    tracker.log_params(run_id, {**job_params(job), **(extra_params or {})})
    return run_id


def imp_run_of(tracker: Tracker, run) -> str | None:
    """The imp run of a run directory: the one its tracking.json names when it logged to this store,
    else the one found by its tags."""
    from lp_ray.store import read_tracking

    info = read_tracking(run)
    if info is not None and info.tracking_uri == tracker.uri:
        return info.imp_run_id
    return tracker.find({TAG_HASH: tracker.run_hash, TAG_KIND: "imp", TAG_RUN_DIR: run.uri})


def _round_tags(tracker: Tracker, parent: str, r: int) -> dict[str, str]:
    return tracker.child_tags(parent, "imp_round", str(r))


def log_round(tracker: Tracker, parent: str, run, meta, history: dict, imported: bool = False) -> None:
    """A finished round, as its own child run (started and ended when the round was), and its accuracy
    on the IMP run with step = round."""
    end = meta.finished_at or time.time()
    name = f"round {meta.round:02d} · {100 * meta.density:.1f}% weights" + (" · imported" if imported else "")
    child = tracker.start(name, _round_tags(tracker, parent, meta.round), start_time=end - meta.seconds)
    names = {
        "train_loss": "train_loss",
        "train_acc": "train_acc",
        "val_acc": "val_acc",
        "lr": "lr",
        "seconds": "epoch_seconds",
        "peak_gpu_memory_mb": "peak_gpu_memory_mb",
    }
    epochs = [{**e, **{k: pct(e[k]) for k in ("train_acc", "val_acc") if k in e}} for e in history["epochs"]]
    tracker.log_series(child, epochs, "epoch", names)
    soup = {"soup": meta.soup, "particles_in_soup": str(sum(p["in_soup"] for p in meta.particles))}
    tracker.log_values(
        child,
        {
            "lt_val_acc": pct(meta.val_acc),
            "lt_test_acc": pct(meta.test_acc),
            "weights_remaining_pct": pct(meta.density),
        },
        {"ticket_uri": run.uri_of(layout.ticket(meta.round)), "ticket_sha256": meta.ticket_sha256}
        | (soup if meta.particles else {}),
    )
    for particle, h in zip(meta.particles, history.get("particles", []), strict=False):
        _log_particle(tracker, child, run, meta, particle, h, names)
    row = {
        "round": meta.round,
        "lt_test_acc": pct(meta.test_acc),
        "lt_val_acc": pct(meta.val_acc),
        "weights_remaining_pct": pct(meta.density),
    }
    tracker.log_series(parent, [row], "round", {k: f"by_round/{k}" for k in row if k != "round"})
    tracker.finish(child, end_time=end)


def _log_particle(tracker: Tracker, round_run: str, run, meta, particle: dict, history: dict, names) -> None:
    """One particle of a particle round, as a child of its round's run: its epochs, its own accuracy and
    whether it joined the soup."""
    p = particle["particle"]
    tags = tracker.child_tags(round_run, "imp_particle", f"{meta.round}.{p}")
    child = tracker.start(f"round {meta.round:02d} · particle {p}", tags, start_time=meta.finished_at - meta.seconds)
    epochs = [{**e, **{k: pct(e[k]) for k in ("train_acc", "val_acc") if k in e}} for e in history.get("epochs", [])]
    tracker.log_series(child, epochs, "epoch", names)
    tracker.log_values(
        child,
        {"particle_val_acc": pct(particle["val_acc"]), "particle_test_acc": pct(particle["test_acc"])},
        {
            "particle_uri": run.uri_of(layout.particle_weights(meta.round, p)),
            "particle_sha256": particle["sha256"],
            "in_soup": str(particle["in_soup"]).lower(),
        },
    )
    tracker.finish(child, end_time=meta.finished_at or None)


# The name a round's LT test accuracy was logged under before it took the records' name (lt_test_acc):
# a round logged so is logged, and is not logged again.
LT_TEST_ACC_BEFORE = "ticket_test_acc"


def ensure_round_logged(tracker: Tracker, parent: str, run, meta, imported: bool = False) -> None:
    """A round finished but the driver died before MLflow heard of it (or an imported one): log it now,
    once; a round logged before is left exactly as it is."""
    found = tracker.find(_round_tags(tracker, parent, meta.round))
    logged = found is not None and any(tracker.has_metric(found, m) for m in ("lt_test_acc", LT_TEST_ACC_BEFORE))
    if not logged:
        history = {"epochs": []} if imported else run.read_json(layout.history(meta.round))
        log_round(tracker, parent, run, meta, history, imported)


def finish_imp(tracker: Tracker, imp: str, metas: list, run=None) -> None:
    """The IMP run's headline: the mean over its tickets (MLflow shows a series' last step, not its mean),
    and a description of what the run holds."""
    accs = [100 * m.test_acc for m in metas]
    soups = [m for m in metas if m.particles]
    tracker.describe(
        imp,
        f"**{len(metas)} tickets**, from 100% to {100 * min(m.density for m in metas):.1f}% of the prunable "
        f"weights; ticket test accuracy {min(accs):.2f}–{max(accs):.2f}% (mean {sum(accs) / len(accs):.2f}%)."
        + (
            f" {len(soups)} of them are {soups[0].soup} soups of {len(soups[0].particles)} particles each "
            "(a child run per particle under its round)."
            if soups
            else ""
        )
        + (f"\n\nRun directory: `{run.uri}`." if run is not None else "")
        + "\n\nEach round is a child run; each pool search a child run with its verdict; the report (table and "
        "figure of every search against sparsity) is under Artifacts › report once `lp-ray report` has run.",
    )
    tracker.log_values(
        imp,
        {
            "mean_lt_test_acc": pct(sum(m.test_acc for m in metas) / len(metas)),
            "rounds": len(metas),
        },
    )
    tracker.finish(imp)


# --------------------------------------------------------------------------------------------------
# A search


def search_params(settings, rounds: list[int]) -> dict[str, object]:
    """The search's settings as used: the coefficients it tries (not None), only the fields its method
    and search read."""
    from lp_ray.pool.chain import Chain
    from lp_ray.pool.methods import METHODS, Greedy, RunningMean
    from lp_ray.pool.searches import SEARCHES

    method = METHODS[settings.method]
    out: dict[str, object] = {"method": settings.method, "search": settings.search}
    if isinstance(method, Greedy):
        out["coefficients"] = list(Chain(0, [], settings.method, settings.coefficients).alphas())
    elif not isinstance(method, RunningMean):
        out["ema_decay"] = settings.ema_decay
    search = SEARCHES[settings.search]
    cap = search.candidates_for(settings.search_num)
    out["candidates"] = "all" if cap is None else cap
    out["bn_samples"] = "all" if settings.bn_samples is None else settings.bn_samples
    if search.screens:
        out["screen_fraction"] = settings.screen_fraction
    out["tickets"] = len(rounds)
    return out


def search_run(
    tracker: Tracker, imp: str | None, name: str, settings, rounds: list[int], started: float, work: bool = True
) -> str:
    """The search's run, created with the search's start time (nested under the IMP run); `work`: targets
    are left to pool (a finished search found again is otherwise left as it was)."""
    tags = {TAG_HASH: tracker.run_hash, TAG_KIND: f"pool:{name}"}
    if imp:
        tags[TAG_PARENT] = imp
    run_id = tracker.start(f"pool {name}", tags, start_time=started, work=work)
    tracker.log_params(run_id, search_params(settings, rounds))
    return run_id


def log_target(tracker: Tracker, search: str, result, mcnemar_p: float | None, started: float) -> None:
    """A finished target, as a child of its search's run: started with the search, ended when written.
    A target logged before is left as it is."""
    tags = tracker.child_tags(search, "pool_target", str(result.target))
    found = tracker.find(tags)
    if found is not None and tracker.has_metric(found, "pooled_test_acc"):
        return
    child = tracker.start(f"target {result.target:02d} · {100 * result.density:.1f}% weights", tags, started)
    tracker.log_values(
        child,
        {
            "pooled_test_acc": pct(result.test_acc),
            "pooled_val_acc": pct(result.val_acc),
            "lt_test_acc": pct(result.lt_test_acc),
            "lt_val_acc": pct(result.lt_val_acc),
            "lt_bn_test_acc": pct(result.lt_bn_test_acc),
            "lt_bn_val_acc": pct(result.lt_bn_val_acc),
            "gain_pt": pt(100 * result.gain),
            "mcnemar_p": mcnemar_p,
            "weights_remaining_pct": pct(result.density),
        },
        {
            "network_uri": result.path,
            "network_sha256": result.sha256,
            "accepted_rounds": ",".join(map(str, result.accepted)) or "-",
            "alphas": ",".join(f"{a:g}" for a in result.alphas) or "-",
            "target": str(result.target),
        },
    )
    tracker.finish(child)


def finish_search(tracker: Tracker, search: str, imp: str | None, name: str, outcome: dict, files: dict) -> None:
    """The search's results as metrics and its verdict as the description, its figure and tables (CSV,
    which MLflow previews); on the IMP run, the search's series by round and its mean gain."""
    results, pvalues = outcome["results"], outcome["mcnemar_p"]
    gains = [100 * r.gain for r in results.values()]
    controls = [100 * (r.lt_bn_test_acc - r.lt_test_acc) for r in results.values() if r.lt_bn_test_acc is not None]
    significant = outcome["significant"]  # target -> +1 / -1 / 0 (McNemar, Holm across targets)
    better = sum(g > 0 for g in gains)
    metrics = {
        "mean_gain_pt": pt(sum(gains) / len(gains)),
        "mean_pooled_test_acc": pct(sum(r.test_acc for r in results.values()) / len(results)),
        "mean_lt_test_acc": pct(sum(r.lt_test_acc for r in results.values()) / len(results)),
        "lt_bn_control_gain_pt": pt(sum(controls) / len(controls)) if controls else None,
        "targets": len(results),
        "targets_better": better,
        "targets_significantly_better": sum(s > 0 for s in significant.values()),
        "targets_significantly_worse": sum(s < 0 for s in significant.values()),
    }
    if outcome["pooled_now"] or not tracker.has_metric(search, "evaluations"):  # a rerun with nothing to do
        metrics |= {"search_seconds": round(outcome["seconds"], 1), "evaluations": outcome["evaluations"]}
    tracker.log_values(search, metrics)
    tracker.describe(search, search_verdict(name, metrics, results, pvalues, significant))
    tracker.log_files(search, files)
    if imp is not None:
        # the targets this search pooled now: the others were logged by the run that pooled them
        rows = [
            {"round": t, "pooled_test_acc": pct(r.test_acc), "gain_pt": pt(100 * r.gain)}
            for t, r in results.items()
            if t in outcome["pooled_now"]
        ]
        tracker.log_series(imp, rows, "round", {k: f"by_round/{name}/{k}" for k in ("pooled_test_acc", "gain_pt")})
        tracker.log_values(imp, {f"{name}/mean_gain_pt": metrics["mean_gain_pt"]})
    tracker.finish(search)


def search_verdict(name: str, metrics: dict, results: dict, pvalues: dict, significant: dict) -> str:
    """The search in a few lines of markdown, for the run's Overview."""
    worse = [t for t, s in significant.items() if s < 0]
    lines = [
        f"**{name}: {metrics['mean_gain_pt']:+.2f} pt** mean test gain over the ticket (LT) across "
        f"{metrics['targets']} sparsities; better at {metrics['targets_better']}/{metrics['targets']}; "
        f"significantly better at {metrics['targets_significantly_better']}, significantly worse at "
        f"{metrics['targets_significantly_worse']} (exact McNemar vs LT, Holm across sparsities, p < 0.05)"
        + (f": target(s) {', '.join(map(str, worse))}" if worse else "")
        + ".",
    ]
    if metrics.get("lt_bn_control_gain_pt") is not None:
        lines.append(
            f"Control: the ticket with its BatchNorm recalibrated and nothing merged (LT+BN) gains "
            f"{metrics['lt_bn_control_gain_pt']:+.2f} pt; what merging adds is the difference."
        )
    lines.append(
        "One seed: run `lp-ray sweep` for an interval over seeds. Decisions were made on validation; test "
        "accuracy was measured once per network, to report."
    )
    return "\n\n".join(lines)


# --------------------------------------------------------------------------------------------------
# An experiment (lp-ray sweep)


def sweep_run(tracker: Tracker, exp, exp_dir, work: bool = True) -> str:
    """The parent run of one experiment directory, created when the sweep starts; `work`: trials are
    left to run (a finished sweep found again is otherwise left as it was)."""
    tags = {TAG_HASH: exp.experiment_hash(), TAG_KIND: "sweep", TAG_RUN_DIR: exp_dir.uri}
    run_id = tracker.start(f"sweep {exp.dir_name()}", tags, work=work)
    tracker.log_params(
        run_id,
        {
            "seeds": exp.seeds,
            "grid": exp.grid or "-",
            "pools": ", ".join(exp.variant_names()),
            **({"reference": exp.reference} if exp.reference else {}),
        },
    )
    return run_id


def trial_run(tracker: Tracker, sweep: str, trial, work: bool = True) -> str:
    """A trial's run under its sweep's, created when the trial starts; its IMP run nests in it."""
    tags = {TAG_KIND: "sweep_trial", "lp_ray.round": str(trial.index), TAG_PARENT: sweep}
    name = " · ".join(x for x in (f"trial {trial.index:02d}", f"seed {trial.seed}", trial.cell) if x)
    run_id = tracker.start(name, tags, work=work)
    tracker.log_values(run_id, {}, {"seed": str(trial.seed), "cell": trial.cell or "-"})
    return run_id


def finish_sweep(
    tracker: Tracker, sweep: str, exp_dir, metrics: dict, series: list[dict], verdicts: list[str], files
) -> None:
    """The experiment's verdicts as metrics and as the description, the per-sparsity series (step =
    round), its figure and tables; ended once."""
    tracker.log_values(sweep, metrics)
    if series and not tracker.has_metric(sweep, next(iter(k for k in series[0] if k != "round"))):
        tracker.log_series(sweep, series, "round")
    tracker.describe(sweep, "\n\n".join(f"- {v}" for v in verdicts))
    tracker.log_run_files(sweep, exp_dir, files)
    tracker.finish(sweep)
