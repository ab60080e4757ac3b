"""The report of an experiment (`lp-ray report EXPERIMENT_DIR`): the paper's Table 8 for an experiment, with honest statistics
(docs/architecture.md, "Experiments"; the tests are in lp_ray/stats.py's terms):

    per cell, method and sparsity   mean ± std over seeds of LT, LT+BN and the method (test accuracy)
    paired gain                     method − LT per seed, mean with a seeded 95% bootstrap CI over seeds
                                    and, beside it, a Student-t 95% CI (wider, honest at 3-5 seeds)
    significance                    exact McNemar of pooled vs LT on the test predictions, discordant
                                    counts summed over seeds (every seed sees the same test examples),
                                    Holm-corrected across sparsities
    verdict                         one line per cell and method: the gain averaged over sparsities, its
                                    CI, better at a/b sparsities, significant at c

Everything is read back from the trials' run directories (records checked against their sha256), so the
report can be rebuilt at any time. Test accuracies are only reported here: no decision reads them.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from lp_ray import layout
from lp_ray.analysis import of_whole_runs, reported
from lp_ray.errors import LpRayError
from lp_ray.rounding import csv_bytes
from lp_ray.stats import compare_counts, holm, mcnemar_p, paired_bootstrap_ci, paired_t_ci, t_ci
from lp_ray.store import RunDir


def is_experiment_dir(uri: str) -> bool:
    d = RunDir(uri)
    return d.exists(layout.EXPERIMENT) and d.exists(layout.TRIALS)


@dataclass(frozen=True)
class SeedResult:
    """One target of one seed's search, as the report reads it (test accuracies as fractions)."""

    lt: float
    lt_bn: float | None  # None: a record from before the LT+BN control existed
    pooled: float
    density: float
    lt_only_correct: int  # McNemar's discordant counts on the stored test predictions
    pooled_only_correct: int
    measured: dict  # what the trial's analyses measured of this pooled network (key -> value)
    pooled_correct: np.ndarray | None = None  # per test example, for pairing two variants (McNemar)
    lt_correct: np.ndarray | None = None  # per test example, for pairing two cells' tickets
    labels: np.ndarray | None = None  # the test labels the two arrays above are scored on


# (cell, method) -> target -> seed -> SeedResult
Collected = dict[tuple[str, str], dict[int, dict[int, SeedResult]]]
# cell -> (analysis, key) -> (label, seed -> value): what analyses measured of each seed's whole run
WholeRuns = dict[str, dict[tuple[str, str], tuple[str, dict[int, float]]]]


def collect(exp_dir: RunDir) -> tuple[dict, Collected, dict[str, dict[int, int]], WholeRuns]:
    """Every finished trial's searches, read back from its run directory (records checked against their
    sha256), with what its analyses measured of each pooled network; per cell and seed, the epochs its
    tickets were trained for, and what its analyses measured of the whole run."""
    from lp_ray.pool.records import finished_targets, read_predictions
    from lp_ray.store import finished_rounds, read_ticket_meta

    ident = exp_dir.read_json(layout.EXPERIMENT)
    trials = exp_dir.read_table(layout.TRIALS).to_pylist()
    data: Collected = {}
    epochs: dict[str, dict[int, int]] = {}
    whole: WholeRuns = {}
    for row in trials:
        run = RunDir(row["run_dir"])
        if run.exists(layout.ROUNDS):
            rounds = finished_rounds(run)
            epochs.setdefault(row["cell"], {})[row["seed"]] = sum(read_ticket_meta(run, r).epochs for r in rounds)
        for analysis in of_whole_runs():
            for m in analysis.of_run(run) or []:
                _, seeds = whole.setdefault(row["cell"], {}).setdefault((analysis.name, m.key), (m.label, {}))
                seeds[row["seed"]] = m.value
        searches = {m: finished_targets(run, m) for m in variant_names(ident)}
        measures = [a.measures(run, searches) for a in reported()]
        for m, results in searches.items():
            for t, r in results.items():
                preds = read_predictions(run, m, r)
                b = c = 0
                y = lt = pooled = None
                if preds is not None:
                    y, lt, pooled = (preds.column(k).to_numpy() for k in ("label", "lt", "pooled"))
                    b, c = int(((lt == y) & (pooled != y)).sum()), int(((lt != y) & (pooled == y)).sum())
                measured = {k: v for got in measures for k, v in (got.of(m, r) or {}).items()}
                cell = data.setdefault((row["cell"], m), {}).setdefault(t, {})
                cell[row["seed"]] = SeedResult(
                    r.lt_test_acc,
                    r.lt_bn_test_acc,
                    r.test_acc,
                    r.density,
                    b,
                    c,
                    measured,
                    None if y is None else pooled == y,
                    None if y is None else lt == y,
                    y,
                )
    if not data:
        raise LpRayError(f"{exp_dir.uri}: no trial has finished a pool search yet; run `lp-ray sweep` first")
    return ident, data, epochs, whole


def variant_names(ident: dict) -> list[str]:
    """The searches every trial makes, in the experiment's order: its pool variants, or its methods."""
    return [p["name"] for p in ident["pools"]] if "pools" in ident else ident["methods"]


def _common_seeds(targets: dict[int, dict[int, SeedResult]]) -> list[int]:
    return sorted(set.intersection(*(set(v) for v in targets.values())))  # seeds every target has


def _per_seed_mean(targets, seeds, value) -> np.ndarray:
    """Per seed, the mean over sparsities of value(SeedResult), in points."""
    return np.array([[100 * value(targets[t][s]) for t in sorted(targets)] for s in seeds]).mean(axis=1)


def _where(cell: str) -> str:
    return f" [{cell}]" if cell else ""


def sparsity_rows(cell: str, method: str, targets, seeds) -> list[dict]:
    """Per sparsity: mean ± std over seeds of LT, LT+BN and the method, the paired gain with its
    bootstrap and t intervals, McNemar on the summed discordant counts, Holm across sparsities."""
    per_target = []
    for t in sorted(targets):
        v = targets[t]
        lt = np.array([100 * v[s].lt for s in seeds])
        bn = np.array([100 * (v[s].lt_bn if v[s].lt_bn is not None else np.nan) for s in seeds])
        lp = np.array([100 * v[s].pooled for s in seeds])
        b, c = sum(v[s].lt_only_correct for s in seeds), sum(v[s].pooled_only_correct for s in seeds)
        per_target.append((t, v[seeds[0]].density, lt, bn, lp, mcnemar_p(b, c), b, c))
    adjusted = holm([p for *_, p, _, _ in per_target])
    rows = []
    for (t, density, lt, bn, lp, p, b, c), p_holm in zip(per_target, adjusted, strict=True):
        ci, ci_t = paired_bootstrap_ci(lp, lt), paired_t_ci(lp, lt)
        rows.append(
            {
                "cell": cell,
                "method": method,
                "round": t,
                "weights_remaining": 100 * density,
                "seeds": len(seeds),
                "lt_mean": lt.mean(),
                "lt_std": _std(lt),
                "lt_bn_mean": bn.mean(),
                "lt_bn_std": _std(bn),
                "method_mean": lp.mean(),
                "method_std": _std(lp),
                "gain_mean": ci.mean,
                "gain_t_ci_low": ci_t.low,
                "gain_t_ci_high": ci_t.high,
                "gain_bootstrap_ci_low": ci.low,
                "gain_bootstrap_ci_high": ci.high,
                "lt_only_correct": b,
                "method_only_correct": c,
                "mcnemar_p": p,
                "mcnemar_p_holm": p_holm,
            }
        )
    return rows


def intervals(t_ci, boot) -> str:
    """A mean difference with its intervals, the Student t one first (at 3-10 seeds a percentile
    bootstrap never reaches past the observed per-seed values: it undercovers), each named."""
    if t_ci.n < 2:
        return f"{boot.mean:+.2f} pt (one seed: no interval)"
    return (
        f"{t_ci.mean:+.2f} pt, Student t 95% CI [{t_ci.low:+.2f}, {t_ci.high:+.2f}] "
        f"(bootstrap 95% CI [{boot.low:+.2f}, {boot.high:+.2f}]) over {t_ci.n} seeds"
    )


def _interval_metrics(prefix: str, t_ci, boot) -> dict[str, float]:
    return {
        f"{prefix}mean_pt": boot.mean,
        f"{prefix}t_ci_low": t_ci.low,
        f"{prefix}t_ci_high": t_ci.high,
        f"{prefix}bootstrap_ci_low": boot.low,
        f"{prefix}bootstrap_ci_high": boot.high,
        f"{prefix}seeds": t_ci.n,
    }


@dataclass(frozen=True)
class Verdict:
    text: str
    metrics: dict  # the same numbers, as the sweep's MLflow run logs them


def _significant(rows: list[dict], difference: str) -> tuple[int, int]:
    """Sparsities where McNemar (Holm across sparsities, p < 0.05) finds the difference positive, negative."""
    sig = [r for r in rows if r["mcnemar_p_holm"] < 0.05]
    return sum(r[difference] > 0 for r in sig), sum(r[difference] < 0 for r in sig)


def verdict(cell: str, method: str, targets, seeds, rows: list[dict]) -> Verdict:
    """The method's gain over LT: per seed averaged over sparsities, its mean and CIs over seeds; the
    sparsities where the mean over seeds is better, and those where McNemar (summed over seeds, Holm
    across sparsities) finds it significantly better or worse."""
    lp_seed = _per_seed_mean(targets, seeds, lambda x: x.pooled)
    lt_seed = _per_seed_mean(targets, seeds, lambda x: x.lt)
    ci, t_ci = paired_bootstrap_ci(lp_seed, lt_seed), paired_t_ci(lp_seed, lt_seed)
    better, _, _ = compare_counts([r["method_mean"] for r in rows], [r["lt_mean"] for r in rows])
    sig_better, sig_worse = _significant(rows, "gain_mean")
    text = (
        f"{method} − LT{_where(cell)}: {intervals(t_ci, ci)}; better at {better}/{len(rows)} sparsities; "
        f"significantly better at {sig_better}, significantly worse at {sig_worse} (McNemar, Holm, p < 0.05)"
    )
    metrics = {
        **_interval_metrics("gain_", t_ci, ci),
        "sparsities": len(rows),
        "sparsities_better": better,
        "significantly_better": sig_better,
        "significantly_worse": sig_worse,
    }
    return Verdict(text, metrics)


def control_verdict(cell: str, targets, seeds) -> Verdict | None:
    """LT+BN − LT, once per cell (the same network in every method's search); None for records from
    before the control existed."""
    if any(targets[t][s].lt_bn is None for t in targets for s in seeds):
        return None
    order = sorted(targets)
    bn_seed = np.array([[targets[t][s].lt_bn for t in order] for s in seeds]).mean(axis=1) * 100
    lt_seed = np.array([[targets[t][s].lt for t in order] for s in seeds]).mean(axis=1) * 100
    ci, t_ci = paired_bootstrap_ci(bn_seed, lt_seed), paired_t_ci(bn_seed, lt_seed)
    text = f"LT+BN − LT{_where(cell)} (control): {intervals(t_ci, ci)}"
    return Verdict(text, _interval_metrics("lt_bn_control_gain_", t_ci, ci))


def analysis_verdicts(cell: str, method: str, targets, seeds, rows: list[dict]) -> list[Verdict]:
    """What every seed's analyses measured: per-sparsity means added to `rows` (in place) and one
    verdict per comparison an analysis declares, for the analyses every seed and sparsity has."""
    out = []
    for analysis in reported():
        for cmp in analysis.comparisons:
            keys = [cmp.measure, *([cmp.baseline] if cmp.baseline else [])]
            if not all(k in targets[t][s].measured for t in targets for s in seeds for k in keys):
                continue
            for r in rows:
                v = targets[r["round"]]
                for k in keys:
                    r[f"{k}_mean"] = float(np.mean([100 * v[s].measured[k] for s in seeds]))
                for k in cmp.extra:
                    r[f"{k}_mean"] = float(np.mean([v[s].measured[k] for s in seeds]))
            mine = _per_seed_mean(targets, seeds, lambda x, k=cmp.measure: x.measured[k])
            if cmp.baseline:
                base = _per_seed_mean(targets, seeds, lambda x, k=cmp.baseline: x.measured[k])
            else:
                base = _per_seed_mean(targets, seeds, lambda x: x.pooled)
            ci, t_ci = paired_bootstrap_ci(mine, base), paired_t_ci(mine, base)
            label = cmp.label.format(method=method, where=_where(cell))
            out.append(Verdict(f"{label}: {intervals(t_ci, ci)}", _interval_metrics(f"{cmp.measure}_vs_", t_ci, ci)))
    return out


def paired_rows(
    cell: str, variant: str, reference: str, mine, theirs, what: str = "pooled", label: str | None = None
) -> tuple[list[dict], Verdict] | None:
    """`variant` − `reference` paired by seed: per sparsity, the per-seed difference of test accuracy of
    `what` ("pooled": the searches' networks; "lt": the tickets), its mean, Student-t and bootstrap 95%
    CIs, McNemar on the two networks' stored predictions (discordant counts summed over seeds, only where
    both were scored on the same test labels), Holm across sparsities; and the verdict over seeds, led by
    the t interval (at 3-10 seeds a percentile bootstrap undercovers). Two pool variants compare searches
    on the same tickets; two cells (`reference_cell:`) compare trainings on the same seeds and data."""
    targets = sorted(set(mine) & set(theirs))
    seeds = sorted(set.intersection(*(set(mine[t]) & set(theirs[t]) for t in targets))) if targets else []
    if not seeds:
        return None
    reference_is_variant = label is None  # two searches of one cell; else two cells (`reference_cell:`)
    label = label or f"{variant} − {reference}{_where(cell)} (pooled test accuracy, same tickets)"
    per_target = []
    for t in targets:
        a = np.array([100 * getattr(mine[t][s], what) for s in seeds])
        b = np.array([100 * getattr(theirs[t][s], what) for s in seeds])
        only_ref = only_var = 0
        for s in seeds:
            x, y = getattr(mine[t][s], f"{what}_correct"), getattr(theirs[t][s], f"{what}_correct")
            if x is not None and y is not None and np.array_equal(mine[t][s].labels, theirs[t][s].labels):
                only_ref += int((y & ~x).sum())
                only_var += int((x & ~y).sum())
        per_target.append((t, mine[t][seeds[0]].density, theirs[t][seeds[0]].density, a, b, only_ref, only_var))
    adjusted = holm([mcnemar_p(r, v) for *_, r, v in per_target])
    rows = []
    for (t, density, ref_density, a, b, only_ref, only_var), p_holm in zip(per_target, adjusted, strict=True):
        ci_t, ci = paired_t_ci(a, b), paired_bootstrap_ci(a, b)
        rows.append(
            {
                "comparison": label,
                "kind": "variants" if reference_is_variant else "cells",
                "cell": cell,
                "variant": variant,
                "reference": reference,
                "quantity": what,
                "round": t,
                "weights_remaining": 100 * density,
                "reference_weights_remaining": 100 * ref_density,
                "seeds": len(seeds),
                "variant_mean": a.mean(),
                "reference_mean": b.mean(),
                "diff_mean": ci.mean,
                "diff_t_ci_low": ci_t.low,
                "diff_t_ci_high": ci_t.high,
                "diff_bootstrap_ci_low": ci.low,
                "diff_bootstrap_ci_high": ci.high,
                "reference_only_correct": only_ref,
                "variant_only_correct": only_var,
                "mcnemar_p": mcnemar_p(only_ref, only_var),
                "mcnemar_p_holm": p_holm,
            }
        )
    order = [t for t, *_ in per_target]
    a_seed = np.array([[100 * getattr(mine[t][s], what) for t in order] for s in seeds]).mean(axis=1)
    b_seed = np.array([[100 * getattr(theirs[t][s], what) for t in order] for s in seeds]).mean(axis=1)
    ci_t, ci = paired_t_ci(a_seed, b_seed), paired_bootstrap_ci(a_seed, b_seed)
    better, _, worse = compare_counts([r["variant_mean"] for r in rows], [r["reference_mean"] for r in rows])
    sig_better, sig_worse = _significant(rows, "diff_mean")
    text = (
        f"{label}: {intervals(ci_t, ci)}; "
        f"better at {better}/{len(rows)} sparsities, worse at {worse}; significantly better at {sig_better}, "
        f"significantly worse at {sig_worse} (McNemar on the two networks' predictions, Holm, p < 0.05)"
    )
    metrics = {
        **_interval_metrics("diff_", ci_t, ci),
        "sparsities_better": better,
        "significantly_better": sig_better,
        "significantly_worse": sig_worse,
    }
    return rows, Verdict(text, metrics)


def cell_pairs(cell: str, reference_cell: str, names: list[str], data: Collected) -> list[tuple[str, tuple]]:
    """`reference_cell:` every other cell against it, paired by seed (same seed: same data, same start):
    the tickets once (LT, the same in every search of a cell), then every search's pooled network.
    Returns (metric name, paired_rows' answer) pairs."""
    methods = [m for m in names if (cell, m) in data and (reference_cell, m) in data]
    vs = f"[{cell}] − [{reference_cell}]"
    compared = [("lt", "LT", methods[0], f"LT {vs} (the tickets, paired by seed)")] if methods else []
    compared += [("pooled", m, m, f"{m} {vs} (pooled test accuracy, paired by seed)") for m in methods]
    out = []
    for what, name, m, label in compared:
        got = paired_rows(cell, name, reference_cell, data[cell, m], data[reference_cell, m], what, label)
        if got is not None:
            out.append((f"{name.lower()}_vs_reference_cell", got))
    return out


def training_verdicts(epochs: dict[str, dict[int, int]]) -> list[tuple[str, Verdict]]:
    """Per cell, the training each seed's tickets cost: epochs summed over rounds and, in particle rounds,
    over particles (each particle trains its round's epochs), as the trials' meta.json record them."""
    out = []
    for cell in sorted(epochs):
        per_seed = epochs[cell]
        values = sorted(set(per_seed.values()))
        spread = f"{values[0]}" if len(values) == 1 else f"{values[0]}-{values[-1]}"
        text = f"training{_where(cell)}: {spread} epochs of IMP per seed (all rounds, all particles), {len(per_seed)} seeds"
        out.append((cell, Verdict(text, {"imp_epochs_per_seed": float(np.mean(list(per_seed.values())))})))
    return out


def whole_run_verdicts(whole: WholeRuns) -> list[tuple[str, str, str, Verdict]]:
    """Per cell, each number an analysis measured of every seed's whole run (e.g. lmc's mean barrier
    between tickets): its mean over the seeds that ran it, with a Student-t 95% interval."""
    out = []
    for cell in sorted(whole):
        for (name, key), (label, per_seed) in whole[cell].items():
            values = [per_seed[s] for s in sorted(per_seed)]
            ci = t_ci(values)
            spread = (
                " (one seed: no interval)"
                if ci.n < 2
                else f", Student t 95% CI [{ci.low:+.2f}, {ci.high:+.2f}] over {ci.n} seeds"
            )
            metrics = {"mean": ci.mean, "t_ci_low": ci.low, "t_ci_high": ci.high, "seeds": ci.n}
            out.append((cell, name, key, Verdict(f"{name}{_where(cell)}: {label}: {ci.mean:+.2f}{spread}", metrics)))
    return out


@dataclass
class ExperimentReport:
    table: pa.Table  # per cell, search and sparsity: LT, LT+BN, the search, its gain
    verdicts: list[str]
    pairs: pa.Table | None = None  # per cell, variant and sparsity: variant − reference (`reference:`)
    metrics: dict = dataclasses.field(default_factory=dict)  # the verdicts' numbers, by MLflow metric name
    series: list[dict] = dataclasses.field(default_factory=list)  # per round: means and gains, by metric name


def metric_prefix(cell: str, what: str, cells: int) -> str:
    """`<what>/`, or `<cell>/<what>/` when the experiment has several cells, in the characters MLflow
    allows in a metric name (`imp.rewind_epoch=2` becomes `imp.rewind_epoch:2`)."""
    import re

    key = f"{cell}/{what}" if cells > 1 and cell else what
    return re.sub(r"[^\w./\- :]", ":", key.replace("=", ":")) + "/"


def build(exp_dir: RunDir) -> ExperimentReport:
    ident, data, epochs, whole = collect(exp_dir)
    names = variant_names(ident)
    cells = sorted({c for c, _ in data})
    rows, verdicts, measured, metrics, series = [], [], [], {}, {}
    for (cell, method), targets in sorted(data.items(), key=lambda kv: (kv[0][0], names.index(kv[0][1]))):
        seeds = _common_seeds(targets)
        mine = sparsity_rows(cell, method, targets, seeds)
        prefix = metric_prefix(cell, method, len(cells))
        v = verdict(cell, method, targets, seeds, mine)
        verdicts.append(v)
        for a in analysis_verdicts(cell, method, targets, seeds, mine):
            measured.append(a)
            metrics.update({f"{prefix}{k}": x for k, x in a.metrics.items()})
        metrics.update({f"{prefix}{k}": x for k, x in v.metrics.items()})
        for r in mine:  # one chart shows them over sparsity: step = round
            series.setdefault(r["round"], {"round": r["round"]}).update(
                {
                    f"{prefix}by_round/lt_test_acc": r["lt_mean"],
                    f"{prefix}by_round/pooled_test_acc": r["method_mean"],
                    f"{prefix}by_round/gain_pt": r["gain_mean"],
                    f"{prefix}by_round/gain_t_ci_low": r["gain_t_ci_low"],
                    f"{prefix}by_round/gain_t_ci_high": r["gain_t_ci_high"],
                }
            )
        rows += mine
    for cell in cells:
        method = next(m for m in names if (cell, m) in data)
        targets = data[(cell, method)]
        control = control_verdict(cell, targets, _common_seeds(targets))
        if control is not None:
            verdicts.append(control)
            prefix = metric_prefix(cell, "", len(cells)).strip("/")
            metrics.update({f"{prefix + '/' if prefix else ''}{k}": x for k, x in control.metrics.items()})
    pairs, paired = [], []
    reference = ident.get("reference")
    for cell in cells if reference else []:
        for variant in names:
            if variant == reference or (cell, variant) not in data or (cell, reference) not in data:
                continue
            got = paired_rows(cell, variant, reference, data[cell, variant], data[cell, reference])
            if got is not None:
                pairs += got[0]
                paired.append(got[1])
                prefix = metric_prefix(cell, f"{variant}_vs_{reference}", len(cells))
                metrics.update({f"{prefix}{k}": x for k, x in got[1].metrics.items()})
    reference_cell = ident.get("reference_cell")
    for cell in [c for c in cells if c != reference_cell] if reference_cell in cells else []:
        for key, (got_rows, got) in cell_pairs(cell, reference_cell, names, data):
            pairs += got_rows
            paired.append(got)
            metrics.update({f"{metric_prefix(cell, key, len(cells))}{k}": x for k, x in got.metrics.items()})
    for cell, v in training_verdicts(epochs):
        prefix = metric_prefix(cell, "", len(cells)).strip("/")
        metrics.update({f"{prefix + '/' if prefix else ''}{k}": x for k, x in v.metrics.items()})
        paired.append(v)
    for cell, name, key, v in whole_run_verdicts(whole):
        measured.append(v)
        metrics.update({f"{metric_prefix(cell, name, len(cells))}{key}_{k}": x for k, x in v.metrics.items()})
    keys = list(dict.fromkeys(k for r in rows for k in r))  # analysis columns exist only where measured
    table = pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows])
    return ExperimentReport(
        table,
        [v.text for v in verdicts + paired + measured],
        pa.Table.from_pylist(pairs) if pairs else None,
        {k: float(x) for k, x in metrics.items()},
        [series[r] for r in sorted(series)],
    )


def _std(x: np.ndarray) -> float:
    return float(x.std(ddof=1)) if len(x) > 1 else 0.0


def write(exp_dir: RunDir, report: ExperimentReport) -> dict[str, str]:
    """report.csv/.parquet/.png and verdict.txt; with a reference variant, pairs.csv/.parquet too."""
    _write_table(exp_dir, layout.report("parquet"), layout.report("csv"), report.table)
    exp_dir.write_bytes(layout.VERDICT, ("\n".join(report.verdicts) + "\n").encode())
    png = io.BytesIO()
    _plot(report.table, png, exp_dir.path().rsplit("/", 1)[-1])
    exp_dir.write_bytes(layout.report("png"), png.getvalue())
    files = list(layout.EXPERIMENT_REPORT)
    if report.pairs is not None:
        _write_table(exp_dir, layout.PAIRS_PARQUET, layout.PAIRS_CSV, report.pairs)
        files += [layout.PAIRS_CSV, layout.PAIRS_PARQUET]
    return {k: exp_dir.uri_of(k) for k in files}


def _write_table(exp_dir: RunDir, parquet: str, csv: str, table: pa.Table) -> None:
    exp_dir.write_table(parquet, table)
    exp_dir.write_bytes(csv, csv_bytes(table))


def _plot(table: pa.Table, out, title: str = "") -> None:
    """Per cell: mean test accuracy over seeds of LT, LT+BN and every search against weights remaining,
    the band around each search the Student-t 95% CI of its paired gain over LT (drawn around LT + gain,
    i.e. where the search's mean would be), a star where McNemar (Holm) finds it significantly better or
    worse; ticks at every round's density, the legend beside the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table.to_pylist()
    cells = sorted({r["cell"] for r in rows})
    # one y axis for every cell: two cells are compared by eye across panels
    fig, axes = plt.subplots(1, len(cells), figsize=(8.4 * len(cells), 4.6), dpi=120, squeeze=False, sharey=True)
    for ax, cell in zip(axes[0], cells, strict=True):
        mine = [r for r in rows if r["cell"] == cell]
        first = [r for r in mine if r["method"] == mine[0]["method"]]
        x = [r["weights_remaining"] for r in first]
        ax.plot(x, [r["lt_mean"] for r in first], "o-", color="black", label="LT: the ticket as trained")
        ax.plot(x, [r["lt_bn_mean"] for r in first], "^:", color="gray", label="LT+BN: recalibrated (control)")
        marked = False
        for method in dict.fromkeys(r["method"] for r in mine):
            rs = [r for r in mine if r["method"] == method]
            xs = [r["weights_remaining"] for r in rs]
            mean = np.array([r["method_mean"] for r in rs])
            lt = np.array([r["lt_mean"] for r in rs])
            lo = lt + np.array([r["gain_t_ci_low"] for r in rs])
            hi = lt + np.array([r["gain_t_ci_high"] for r in rs])
            (line,) = ax.plot(xs, mean, "s--", label=f"Lottery Pools: {method}")
            if not np.isnan(lo).any():
                ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15)
            sig = [(r["weights_remaining"], r["method_mean"]) for r in rs if r["mcnemar_p_holm"] < 0.05]
            if sig:
                ax.plot(*zip(*sig, strict=True), "*", ms=12, color=line.get_color(), mec="black")
                marked = True
        ax.fill_between([], [], [], color="gray", alpha=0.15, label="95% CI of the gain over LT (Student t, seeds)")
        if marked:
            ax.plot([], [], "*", ms=11, color="white", mec="black", label="McNemar vs LT, p < 0.05 (Holm)")
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xticks(x)
        ax.set_xticklabels([f"{v:.1f}" if v < 10 else f"{v:.0f}" for v in x], fontsize=7)
        ax.minorticks_off()
        ax.set_title(" · ".join(p for p in (title, cell) if p) or "the experiment's job")
        ax.set_xlabel("weights remaining (%), one tick per round")
        ax.set_ylabel(f"test accuracy (%), mean of {first[0]['seeds']} seeds")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(out, format="png")
    plt.close(fig)


def print_table(report: ExperimentReport) -> None:
    from rich.markup import escape  # "[t 95% CI]" and "[cell]" are text, not rich markup
    from rich.table import Table

    from lp_ray.progress import console

    rows = report.table.to_pylist()
    for cell in sorted({r["cell"] for r in rows}):
        mine = [r for r in rows if r["cell"] == cell]
        methods = list(dict.fromkeys(r["method"] for r in mine))
        t = Table(title=escape(f"{cell or 'base job'}: test accuracy %, mean ± std over {mine[0]['seeds']} seeds"))
        for col in ["round", "weights %", "LT", "LT+BN"] + [
            c for m in methods for c in (m, "gain [t 95% CI]", "p (Holm)")
        ]:
            t.add_column(escape(col), justify="right")
        for rnd in sorted({r["round"] for r in mine}):
            by = {r["method"]: r for r in mine if r["round"] == rnd}
            first = by[methods[0]]
            cells = [str(rnd), f"{first['weights_remaining']:.2f}", _pm(first["lt_mean"], first["lt_std"])]
            cells.append(_pm(first["lt_bn_mean"], first["lt_bn_std"]))
            for m in methods:
                r = by.get(m)
                cells += (
                    ["-", "-", "-"]
                    if r is None
                    else [
                        _pm(r["method_mean"], r["method_std"]),
                        f"{r['gain_mean']:+.2f} [{r['gain_t_ci_low']:+.2f}, {r['gain_t_ci_high']:+.2f}]",
                        f"{r['mcnemar_p_holm']:.3f}",
                    ]
                )
            t.add_row(*cells)
        console.print(t)
    _print_pairs(report.pairs)
    for v in report.verdicts:
        console.print(v, highlight=False, markup=False)  # "[cell]" is text, not rich markup


def _print_pairs(pairs: pa.Table | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    from lp_ray.progress import console

    rows = pairs.to_pylist() if pairs is not None else []
    for comparison in dict.fromkeys(r["comparison"] for r in rows):
        mine = [r for r in rows if r["comparison"] == comparison]
        first = mine[0]
        # two searches of one cell are named by search, two cells by cell
        names = (first["reference"], first["variant"] if first["kind"] == "variants" else first["cell"])
        t = Table(title=escape(f"{comparison}: test accuracy %, {first['seeds']} seeds"))
        for col in ("round", "weights %", *names, "difference [t 95% CI]", "p (Holm)"):
            t.add_column(escape(col), justify="right")
        for r in mine:
            t.add_row(
                str(r["round"]),
                f"{r['weights_remaining']:.2f}",
                f"{r['reference_mean']:.2f}",
                f"{r['variant_mean']:.2f}",
                f"{r['diff_mean']:+.2f} [{r['diff_t_ci_low']:+.2f}, {r['diff_t_ci_high']:+.2f}]",
                f"{r['mcnemar_p_holm']:.3f}",
            )
        console.print(t)


def _pm(mean: float, std: float) -> str:
    return "-" if mean != mean else f"{mean:.2f} ± {std:.2f}"
