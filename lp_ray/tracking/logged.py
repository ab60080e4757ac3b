"""What lp-ray logs to MLflow, and how it is laid out for review (docs/architecture.md, "Tracking"). A run
is something a reviewer opens (an IMP run, a search, a sweep and its trials); a round or a target is a step
of its run's series; a network is a LoggedModel (networks.py). A 10-seed x 5-search sweep is 71 runs,
so MLflow's runs page (100 to a page) keeps the tree whole.

    lp-ray/<job>                             one experiment per job name; its description: the newest
    │                                        runs' verdicts (the top of the runs page)
    ├─ IMP · seed 0 · 53b16eb2ce             per run directory: the job's parameters; by_round/ (ticket
    │  │                                     accuracies, weights remaining, seconds; each search's pooled
    │  │                                     accuracy and gain), by_epoch/ (every round's epochs on one
    │  │                                     axis), headline means, rounds.csv; description: every search's
    │  │                                     verdict, then the tickets; report/ files
    │  ├─ pool interpolation                 per search: its settings; by_target/ (step = the target's
    │  │                                     round: accuracies, gain, McNemar p raw and Holm); its verdict
    │  │                                     and per-sparsity table as the description; targets.csv
    │  │                                     and .json, figure, trace
    │  └─ round 03 · particle 1              particle rounds only: each particle's epochs and accuracy
    └─ sweep fast-search-839bd077d3          per experiment directory: the verdicts as metrics and
         └─ trial 03 · seed 3 · cell         description, per-sparsity series, figure and tables; a
              └─ IMP · seed 3 · ...          child per trial, in which its IMP run nests
    Models tab: "13,4pct weights · interpolation · target 09" (a pooled network, under its search's
    run), "51,2pct weights · ticket · round 03" (a ticket, under its IMP run), as --log-models says

Accuracies are percent and gains points, both to 2 decimals (rounding.py); every run is created when its
work starts (or, logged after the fact, with the start and end its records say), so durations are real.
"""

from __future__ import annotations

from lp_ray import layout
from lp_ray.rounding import p_value, points, signed
from lp_ray.tracking import networks
from lp_ray.tracking.tracker import NOTE, TAG_HASH, TAG_KIND, TAG_PARENT, TAG_RUN_DIR, Tracker, experiment_name


def pct(fraction: float | None) -> float | None:
    """An accuracy or a density as logged: percent, 2 decimals (lp-ray's one rounding rule, rounding.py;
    the run directory's records keep every digit)."""
    return None if fraction is None else points(100 * fraction)


def pt(value: float | None) -> float | None:
    return points(value)


def tracker_for(job, tracking_uri: str, run=None, ride_out: bool = False) -> Tracker:
    """The tracker of a job's runs: its experiment, or, for a run directory that has logged to this
    store before, the experiment it logged into (so a resumed run is never split over two)."""
    from lp_ray.spec import run_hash
    from lp_ray.store import read_tracking

    info = read_tracking(run) if run is not None and run.exists(layout.TRACKING) else None
    known = info.experiment_id if info is not None and info.tracking_uri == tracking_uri else None
    return Tracker(tracking_uri, experiment_name(job.name), run_hash(job), known, ride_out)


def run_tracker(run, tracking_uri: str | None, ride_out: bool = False) -> tuple[Tracker, str | None] | None:
    """The tracker of an existing run directory and its imp run, for commands that log beside it
    (report, analyses); None when there is nothing to log to: no store at that URI (a command that only
    reads never creates one), or no imp run of this directory in it. `ride_out`: a tracking server that
    does not answer is an outage (the imp run's id is then None, or the one tracking.json names)."""
    from lp_ray.store import read_job
    from lp_ray.tracking.stores import store_exists

    if tracking_uri is None or not store_exists(tracking_uri):
        return None
    tracker = tracker_for(read_job(run), tracking_uri, run, ride_out)
    if tracker.down_since is not None:
        return tracker, None
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
    from lp_ray.spec import Mnist1dGenerator, job_to_dict, unused_train_fields

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
    unused = {("train", k) for k in unused_train_fields(job.train)}  # another recipe's fields
    for section in ("train", "imp"):
        fields = job_to_dict(job)[section].items()
        out.update({f"{section}.{k}": v for k, v in fields if v is not None and (section, k) not in unused})
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


def logged_steps(tracker: Tracker, run_id: str, key: str) -> set[int]:
    """The steps a series has on a run: what is logged already (so a rerun adds nothing)."""
    return {m.step for m in tracker.client.get_metric_history(run_id, key)}


def log_round(
    tracker: Tracker, imp: str, run, meta, history: dict, epochs_per_round: int, imported: bool = False
) -> None:
    """A finished round on the IMP run: its epochs as `by_epoch/` series (step = round x epochs per round
    + epoch, so every round's curve follows the last one's on one axis), its ticket as a `by_round/` step
    (accuracies, weights remaining, seconds); a particle round's particles as child runs."""
    names = {
        "train_loss": "by_epoch/train_loss",
        "train_acc": "by_epoch/train_acc",
        "val_acc": "by_epoch/val_acc",
        "lr": "by_epoch/lr",
        "seconds": "by_epoch/seconds",
        "peak_gpu_memory_mb": "by_epoch/peak_gpu_memory_mb",
    }
    base = meta.round * epochs_per_round
    epochs = [
        {**e, "step": base + e["epoch"], **{k: pct(e[k]) for k in ("train_acc", "val_acc") if k in e}}
        for e in history["epochs"]
    ]
    tracker.log_series(imp, [{k: v for k, v in e.items() if k != "epoch"} for e in epochs], "step", names)
    for particle, h in zip(meta.particles, history.get("particles", []), strict=False):
        _log_particle(tracker, imp, run, meta, particle, h)
    tracker.log_series(imp, [round_row(meta, imported)], "round", {k: f"by_round/{k}" for k in ROUND_METRICS})


ROUND_METRICS = ("lt_test_acc", "lt_val_acc", "weights_remaining_pct", "round_seconds")


def round_row(meta, imported: bool = False) -> dict:
    return {
        "round": meta.round,
        "lt_test_acc": pct(meta.test_acc),
        "lt_val_acc": pct(meta.val_acc),
        "weights_remaining_pct": pct(meta.density),
        "round_seconds": None if imported else round(meta.seconds, 1),
    }


def _log_particle(tracker: Tracker, imp: str, run, meta, particle: dict, history: dict) -> None:
    """One particle of a particle round, as a child of the IMP run: its epochs, its own accuracy and
    whether it joined the soup."""
    p = particle["particle"]
    tags = tracker.child_tags(imp, "imp_particle", f"{meta.round}.{p}")
    child = tracker.start(f"round {meta.round:02d} · particle {p}", tags, start_time=meta.finished_at - meta.seconds)
    epochs = [{**e, **{k: pct(e[k]) for k in ("train_acc", "val_acc") if k in e}} for e in history.get("epochs", [])]
    tracker.log_series(
        child, epochs, "epoch", {"train_loss": "train_loss", "train_acc": "train_acc", "val_acc": "val_acc", "lr": "lr"}
    )
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


def ensure_rounds_logged(tracker: Tracker, imp: str, run, metas: list, epochs_per_round: int, imported=False) -> None:
    """Rounds finished but not in MLflow (the driver died before MLflow heard of them, MLflow was
    unreachable, or they were imported): log them now, once; a logged round is left as it is. (A round
    logged by lp-ray before 0.4, as a child run, has its `by_round/` step on the IMP run too.)"""
    done = logged_steps(tracker, imp, "by_round/lt_test_acc")
    for meta in metas:
        if meta.round not in done:
            history = {"epochs": []} if imported else run.read_json(layout.history(meta.round))
            log_round(tracker, imp, run, meta, history, epochs_per_round, imported)


def log_tickets(tracker: Tracker, imp: str, run, metas: list, network) -> None:
    """Every ticket as a LoggedModel of the IMP run (`--log-models all`); `network(round)`: its module
    and an example batch."""
    for meta in metas:
        key = f"ticket {meta.round:02d}"
        if _model_ready(tracker, imp, key):
            continue
        module, example = network(meta.round)
        networks.log_network(
            tracker,
            imp,
            key,
            networks.model_name("ticket", meta.density, meta.round),
            module,
            example,
            params={"round": meta.round, "kind": "ticket (LT)", "rewind_epoch": meta.rewind_epoch},
            tags={
                networks.TAG_URI: run.uri_of(layout.ticket(meta.round)),
                networks.TAG_SHA: meta.ticket_sha256,
                NOTE: f"**Ticket of round {meta.round}** ({100 * meta.density:.1f}% of the prunable weights): "
                f"test {points(100 * meta.test_acc):.2f}%, validation {points(100 * meta.val_acc):.2f}%.",
            },
            metrics={
                "test_acc": pct(meta.test_acc),
                "val_acc": pct(meta.val_acc),
                "weights_remaining_pct": pct(meta.density),
            },
        )


def _model_ready(tracker: Tracker, run_id: str, key: str) -> bool:
    found = networks.find(tracker, f"{run_id}/{key}")
    return found is not None and str(found.status).endswith("READY")


def finish_imp(tracker: Tracker, imp: str, metas: list, run=None) -> None:
    """The IMP run's headline: the mean over its tickets (MLflow shows a series' last step, not its
    mean), its rounds as a table, and a description: the tickets, then every search's verdict."""
    accs = [100 * m.test_acc for m in metas]
    soups = [m for m in metas if m.particles]
    tickets = (
        f"**{len(metas)} tickets**, from 100% to {100 * min(m.density for m in metas):.1f}% of the prunable "
        f"weights; ticket test accuracy {min(accs):.2f}–{max(accs):.2f}% (mean {sum(accs) / len(accs):.2f}%)."
        + (
            f" {len(soups)} of them are {soups[0].soup} soups of {len(soups[0].particles)} particles each "
            "(a child run per particle)."
            if soups
            else ""
        )
        + (f" Run directory: `{run.uri}`." if run is not None else "")
    )
    tracker.log_values(
        imp,
        {"mean_lt_test_acc": pct(sum(m.test_acc for m in metas) / len(metas)), "rounds": len(metas)},
        {TAG_TICKETS: tickets},
    )
    if run is not None:
        tracker.log_files(imp, {"rounds.csv": rounds_csv(run, metas)})
    describe_imp(tracker, imp)
    describe_experiment(tracker)
    tracker.finish(imp)


def rounds_csv(run, metas: list) -> bytes:
    """The tickets as a table: what each round's run held before 0.4 (its accuracies, its weights' place
    and sha256, a particle round's soup and how many particles joined it)."""
    import pyarrow as pa

    from lp_ray.rounding import csv_bytes

    soups = any(m.particles for m in metas)
    rows = [
        {
            **round_row(m),
            "ticket_uri": run.uri_of(layout.ticket(m.round)),
            "ticket_sha256": m.ticket_sha256,
            **({"soup": m.soup, "particles_in_soup": sum(p["in_soup"] for p in m.particles)} if soups else {}),
        }
        for m in metas
    ]
    return csv_bytes(pa.Table.from_pylist(rows))


TAG_TICKETS = "lp_ray.tickets"  # the IMP run's tickets in a sentence (its description's first line)
TAG_VERDICT = "lp_ray.verdict"  # a search's or a sweep's verdict in a line (its parents' descriptions)


def describe_imp(tracker: Tracker, imp: str) -> None:
    """The IMP run's description, rebuilt from what MLflow holds: its tickets, then each of its searches'
    verdict (newest search last), then where to look."""
    run = tracker.client.get_run(imp)
    searches = tracker.client.search_runs(
        [tracker.experiment_id],
        f"tags.`{TAG_PARENT}` = '{imp}' and tags.`{TAG_KIND}` LIKE 'pool:%'",
        order_by=["attributes.start_time ASC"],
    )
    verdicts = [f"- {s.data.tags[TAG_VERDICT]}" for s in searches if TAG_VERDICT in s.data.tags]
    text = [
        *(
            ["**Pool verdicts** (test gain over the ticket, McNemar with Holm across sparsities):", *verdicts]
            if verdicts
            else []
        ),
        run.data.tags.get(TAG_TICKETS, ""),
        "Per round: `by_round/` metrics (step = round) and `rounds.csv`; per epoch: `by_epoch/` (step = round × "
        "epochs + epoch). Each pool search is a child run with its per-sparsity table; the networks are in the "
        "experiment's Models tab. `lp-ray report` adds the report (table and figure) under Artifacts › report.",
    ]
    tracker.describe(imp, "\n\n".join(t for t in text if t).replace("\n\n- ", "\n- "))


def describe_experiment(tracker: Tracker, shown: int = 8) -> None:
    """The experiment's description (the top of its runs page, where the printed address lands): the
    verdicts of its newest top-level runs (IMP runs and sweeps), each linked."""
    runs = [
        r
        for kind in ("imp", "sweep")  # (MLflow's search has no IN for tags)
        for r in tracker.client.search_runs(
            [tracker.experiment_id], f"tags.`{TAG_KIND}` = '{kind}'", order_by=["attributes.start_time DESC"]
        )
    ]
    runs.sort(key=lambda r: -r.info.start_time)
    top = [r for r in runs if TAG_PARENT not in r.data.tags][:shown]
    lines, first = [], None
    for r in top:
        link = f"[{r.info.run_name}](#/experiments/{tracker.experiment_id}/runs/{r.info.run_id})"
        if r.data.tags.get(TAG_KIND) == "sweep":
            verdict = r.data.tags.get(TAG_VERDICT, "not finished")
            lines.append(f"- **{link}**: {verdict}")
            first = first or f"**{r.info.run_name}**: {verdict}"
            continue
        searches = tracker.client.search_runs(
            [tracker.experiment_id],
            f"tags.`{TAG_PARENT}` = '{r.info.run_id}' and tags.`{TAG_KIND}` LIKE 'pool:%'",
            order_by=["attributes.start_time ASC"],
        )
        verdicts = [s.data.tags[TAG_VERDICT] for s in searches if TAG_VERDICT in s.data.tags]
        lines.append(f"- **{link}**: " + ("; ".join(verdicts) if verdicts else "no pool search yet"))
        first = first or (f"**{r.info.run_name}**: {'; '.join(verdicts)}" if verdicts else None)
    if lines:
        # The runs page shows a description's first line until it is opened: the newest verdict.
        text = "\n\n".join(
            [
                *([first] if first else []),
                "Newest runs and their verdicts (test gain over the ticket, McNemar with Holm across "
                "sparsities; a sweep: the t-interval over seeds); open a run for its table:\n" + "\n".join(lines),
            ]
        )
        if tracker.client.get_experiment(tracker.experiment_id).tags.get(NOTE) != text:
            tracker.client.set_experiment_tag(tracker.experiment_id, NOTE, text)


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


def target_metrics(result, mcnemar_p: float | None) -> dict[str, float | None]:
    """A target's figures, as `by_target/` metrics (step = the target's round) of its search's run and
    the metrics of its LoggedModel."""
    values = {
        "weights_remaining_pct": pct(result.density),
        "pooled_test_acc": pct(result.test_acc),
        "pooled_val_acc": pct(result.val_acc),
        "lt_test_acc": pct(result.lt_test_acc),
        "lt_val_acc": pct(result.lt_val_acc),
        "lt_bn_test_acc": pct(result.lt_bn_test_acc),
        "lt_bn_val_acc": pct(result.lt_bn_val_acc),
        "gain_pt": pt(100 * result.gain),
        "mcnemar_p": p_value(mcnemar_p),
    }
    return {f"by_target/{k}": v for k, v in values.items()}


def log_target(tracker: Tracker, search: str, result, mcnemar_p: float | None) -> None:
    """A finished target as a step of its search's `by_target/` series, once (a rerun adds nothing)."""
    if result.target in logged_steps(tracker, search, "by_target/pooled_test_acc"):
        return
    row = {"target": result.target, **target_metrics(result, mcnemar_p)}
    tracker.log_series(search, [row], "target")


def log_pooled_network(
    tracker: Tracker, search: str, name: str, result, mcnemar_p, network, settings: dict | None = None
) -> str:
    """A target's pooled network as a LoggedModel of its search's run (found again if it is one);
    `network(target)`: its module and an example batch; `settings`: the search's method and kind, as
    params. Its id."""
    key = f"{name} target {result.target:02d}"
    found = networks.find(tracker, f"{search}/{key}")
    if found is not None and str(found.status).endswith("READY"):
        return found.model_id
    module, example = network(result.target)
    return networks.log_network(
        tracker,
        search,
        key,
        networks.model_name(name, result.density, result.target),
        module,
        example,
        params={
            "target": result.target,
            "search": name,
            **(settings or {}),
            "accepted_rounds": ",".join(map(str, result.accepted)) or "-",
            "alphas": ",".join(f"{a:g}" for a in result.alphas) or "-",
            "weights_remaining_pct": pct(result.density),
        },
        tags={
            networks.TAG_URI: result.path,
            networks.TAG_SHA: result.sha256,
            NOTE: f"**{name}, {where(result)}**: test {points(100 * result.test_acc):.2f}% "
            f"({signed(100 * result.gain)} pt over its ticket, McNemar p {_p_text(mcnemar_p)}); the ticket "
            f"interpolated with round(s) {', '.join(map(str, result.accepted)) or 'none'}, then pruned back to "
            f"its sparsity. Weights: `{result.path}`.",
        },
        metrics={k.split("/", 1)[1]: v for k, v in target_metrics(result, mcnemar_p).items()},
    )


def finish_search(
    tracker: Tracker,
    search: str,
    imp: str | None,
    name: str,
    outcome: dict,
    files: dict,
    network=None,
    log_models: str = networks.DEFAULT_LOG_MODELS,
    settings: dict | None = None,
) -> str | None:
    """The search's results as metrics, its verdict as the description (and a line on its IMP run's and
    the experiment's), its per-sparsity table (CSV and an MLflow table), figure and trace; its networks
    as LoggedModels as `log_models` says (`network(target)` builds one; `settings`: the method and search
    kind they record). The best network's model id."""
    results, pvalues = outcome["results"], outcome["mcnemar_p"]
    adjusted, significant = outcome["mcnemar_p_holm"], outcome["significant"]
    for t, r in results.items():  # targets finished by an earlier command that MLflow has not heard of
        log_target(tracker, search, r, pvalues[t])
    have = {m.step: m.value for m in tracker.client.get_metric_history(search, "by_target/mcnemar_p_holm")}
    holm_rows = [
        {"target": t, "by_target/mcnemar_p_holm": p_value(q)} for t, q in adjusted.items() if have.get(t) != p_value(q)
    ]
    tracker.log_series(search, holm_rows, "target")  # again where a new target changed Holm's family
    gains = [100 * r.gain for r in results.values()]
    controls = [100 * (r.lt_bn_test_acc - r.lt_test_acc) for r in results.values() if r.lt_bn_test_acc is not None]
    best = networks.best_target(results)
    metrics = {
        "mean_gain_pt": pt(sum(gains) / len(gains)),
        "mean_pooled_test_acc": pct(sum(r.test_acc for r in results.values()) / len(results)),
        "mean_lt_test_acc": pct(sum(r.lt_test_acc for r in results.values()) / len(results)),
        "lt_bn_control_gain_pt": pt(sum(controls) / len(controls)) if controls else None,
        "targets": len(results),
        "targets_better": sum(g > 0 for g in gains),
        "targets_significantly_better": sum(s > 0 for s in significant.values()),
        "targets_significantly_worse": sum(s < 0 for s in significant.values()),
        "best_target": best,
    }
    if outcome["pooled_now"] or not tracker.has_metric(search, "evaluations"):  # a rerun with nothing to do
        metrics |= {"search_seconds": round(outcome["seconds"], 1), "evaluations": outcome["evaluations"]}
    models: dict[int, str] = {}
    if network is not None and log_models != "none":
        wanted = [t for t in sorted(results) if t != best] if networks.logs_every_pooled(log_models) else []
        for t in [*wanted, best]:  # by sparsity (the Models tab lists them so), the best last: see log_network
            models[t] = log_pooled_network(tracker, search, name, results[t], pvalues[t], network, settings)
    line = verdict_line(name, metrics, results, significant)
    tracker.log_values(
        search,
        metrics,
        {TAG_VERDICT: line, **({"best_model_id": models[best]} if best in models else {})},
    )
    tracker.describe(search, search_verdict(name, metrics, results, pvalues, adjusted, significant, models))
    table = targets_table(results, pvalues, adjusted, significant, models)
    tracker.log_files(search, {**files, "targets.csv": _csv(table)})
    tracker.log_table(search, "targets.json", _columns(table))
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
    if imp is not None:
        describe_imp(tracker, imp)
    describe_experiment(tracker)
    return models.get(best)


def where(result) -> str:
    """A target named by its sparsity first: "13.4% · target 09"."""
    return f"{100 * result.density:.1f}% · target {result.target:02d}"


def verdict_line(name: str, metrics: dict, results: dict, significant: dict) -> str:
    better = [where(results[t]) for t in sorted(results) if significant.get(t, 0) > 0]
    worse = [where(results[t]) for t in sorted(results) if significant.get(t, 0) < 0]
    return (
        f"{name} {signed(metrics['mean_gain_pt'])} pt mean over {metrics['targets']} sparsities, better at "
        f"{metrics['targets_better']}; significantly better at {len(better)}"
        + (f" ({', '.join(better)})" if better else "")
        + f", worse at {len(worse)}"
        + (f" ({', '.join(worse)})" if worse else "")
    )


def search_verdict(name, metrics, results, pvalues, adjusted, significant, models) -> str:
    """The search in markdown, for the run's Overview: the verdict, then per sparsity its gain and
    McNemar p (raw and Holm) as a table, densest first."""
    lines = [
        f"**{name}: {signed(metrics['mean_gain_pt'])} pt** mean test gain over the ticket (LT) across "
        f"{metrics['targets']} sparsities; better at {metrics['targets_better']}/{metrics['targets']}; "
        f"significantly better at {metrics['targets_significantly_better']}, significantly worse at "
        f"{metrics['targets_significantly_worse']} (exact McNemar vs LT, Holm across sparsities, p < 0.05).",
    ]
    if metrics.get("lt_bn_control_gain_pt") is not None:
        lines.append(
            f"Control: the ticket with its BatchNorm recalibrated and nothing merged (LT+BN) gains "
            f"{signed(metrics['lt_bn_control_gain_pt'])} pt; what merging adds is the difference."
        )
    rows = [
        "| weights | target | LT test % | pooled test % | gain pt | McNemar p | Holm p | |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in sorted(results):
        r = results[t]
        mark = {1: "better", -1: "worse"}.get(significant.get(t, 0), "")
        model = " (model)" if t in models else ""
        rows.append(
            f"| {100 * r.density:.1f}% | {t:02d}{model} | {points(100 * r.lt_test_acc):.2f} | "
            f"{points(100 * r.test_acc):.2f} | {signed(100 * r.gain)} | {_p_text(pvalues.get(t))} | "
            f"{_p_text(adjusted.get(t))} | {mark} |"
        )
    lines.append("\n".join(rows))
    best = networks.best_target(results)
    lines.append(
        f"Best network (largest validation gain): {where(results[best])}"
        + (" — in the Models tab, and this run's Logged models." if best in models else ".")
        + " One seed: run `lp-ray sweep` for an interval over seeds. Decisions were made on validation; "
        "test accuracy was measured once per network, to report."
    )
    return "\n\n".join(lines)


def _p_text(p) -> str:
    return "–" if p is None else f"{p_value(p):.3g}"


def targets_table(results, pvalues, adjusted, significant, models):
    """The search per sparsity (percent and points, rounded as shown), densest first."""
    import pyarrow as pa

    rows = []
    for t in sorted(results):
        r = results[t]
        rows.append(
            {
                "weights_remaining_pct": 100 * r.density,
                "target": t,
                "lt_test_acc": 100 * r.lt_test_acc,
                "pooled_test_acc": 100 * r.test_acc,
                "gain_pt": 100 * r.gain,
                "mcnemar_p": pvalues.get(t),
                "mcnemar_p_holm": adjusted.get(t),
                "significant": {1: "better", -1: "worse"}.get(significant.get(t, 0), ""),
                "lt_val_acc": 100 * r.lt_val_acc,
                "pooled_val_acc": 100 * r.val_acc,
                "lt_bn_test_acc": None if r.lt_bn_test_acc is None else 100 * r.lt_bn_test_acc,
                "accepted_rounds": " ".join(map(str, r.accepted)),
                "alphas": " ".join(f"{a:g}" for a in r.alphas),
                "model_id": models.get(t, ""),
                "network_uri": r.path,
            }
        )
    return pa.Table.from_pylist(rows)


def _csv(table) -> bytes:
    from lp_ray.rounding import csv_bytes

    return csv_bytes(table)


def _columns(table) -> dict[str, list]:
    """The table as MLflow's log_table takes it, rounded as its CSV is."""
    from lp_ray.rounding import rule_for

    out = {}
    for name in table.column_names:
        values = table.column(name).to_pylist()
        if any(isinstance(v, float) for v in values):
            values = [rule_for(name)(v) if isinstance(v, float) else v for v in values]
        out[name] = values
    return out


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
    tracker.log_values(sweep, {}, {TAG_VERDICT: "; ".join(verdicts)[:5000] or "no verdict"})
    tracker.log_run_files(sweep, exp_dir, files)
    tracker.finish(sweep)
    describe_experiment(tracker)
