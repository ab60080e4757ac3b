"""`lp-ray report EXPERIMENT_DIR`: the paper's Table 8 for an experiment, with honest statistics
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

import io

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from lp_ray import layout
from lp_ray.errors import LpRayError
from lp_ray.stats import compare_counts, holm, mcnemar_p, paired_bootstrap_ci, paired_t_ci
from lp_ray.store import RunDir


def is_experiment_dir(uri: str) -> bool:
    d = RunDir(uri)
    return d.exists(layout.EXPERIMENT) and d.exists(layout.TRIALS)


def collect(exp_dir: RunDir) -> tuple[dict, dict]:
    """{(cell, method): {target: {seed: (lt, lt_bn, pooled, density, b, c, analyses)}}} from every
    finished trial; `analyses` holds what `lp-ray analyze` measured of that pooled network, if anything."""
    from lp_ray.pool.records import finished_targets, read_predictions

    ident = exp_dir.read_json(layout.EXPERIMENT)
    trials = exp_dir.read_table(layout.TRIALS).to_pylist()
    data: dict = {}
    for row in trials:
        run = RunDir(row["run_dir"])
        measured = _analyses_of(run)
        for m in ident["methods"]:
            for t, r in finished_targets(run, m).items():
                preds = read_predictions(run, m, r)
                b = c = 0
                if preds is not None:
                    y, lt, pooled = (preds.column(k).to_numpy() for k in ("label", "lt", "pooled"))
                    b, c = int(((lt == y) & (pooled != y)).sum()), int(((lt != y) & (pooled == y)).sum())
                cell = data.setdefault((row["cell"], m), {}).setdefault(t, {})
                cell[row["seed"]] = (
                    r.lt_test_acc,
                    r.lt_bn_test_acc,
                    r.test_acc,
                    r.density,
                    b,
                    c,
                    measured(m, t, r.test_acc),
                )
    if not data:
        raise LpRayError(f"{exp_dir.uri}: no trial has finished a pool search yet; run `lp-ray sweep` first")
    return ident, data


def _analyses_of(run: RunDir):
    """What the trial's analyses measured, as a function (method, target, pooled test acc) -> dict:
    the output ensemble's accuracy and size, LT's and the pooled network's mean corruption accuracy.
    A row is taken only while its pooled network is still the search's (same test accuracy)."""

    def rows(name: str, table: str) -> list[dict]:
        rel = layout.analysis_file(name, f"{table}.parquet")
        return run.read_table(rel).to_pylist() if run.exists(rel) else []

    ensemble = {(r["search"], r["target"]): r for r in rows("ensemble", "ensemble")}
    robust = {(r["network"], r["round"]): r for r in rows("robustness", "summary")}

    def measured(method: str, t: int, pooled: float) -> dict:
        out = {}
        e = ensemble.get((method, t))
        if e is not None and e["pooled_test_acc"] == pooled:
            out["ensemble"], out["members"] = e["ensemble_test_acc"], e["members"]
        lt, lp = robust.get(("LT", t)), robust.get((method, t))
        if lt is not None and lp is not None and lp["clean_test_acc"] == pooled:
            out["lt_corruption"], out["corruption"] = lt["mean_corruption_acc"], lp["mean_corruption_acc"]
        return out

    return measured


def _analysis_summary(cell: str, method: str, targets: dict, seeds: list[int], rows: list[dict]) -> list[str]:
    """Per-sparsity means of what every seed's analyses measured (columns of `rows`, in place), and a
    verdict per analysis: output ensemble − pooled, and pooled − LT in mean corruption accuracy."""
    where = f" [{cell}]" if cell else ""
    out = []
    for key, other, label in (
        ("ensemble", None, f"output ensemble − {method}{where} (k× vs 1× inference)"),
        ("corruption", "lt_corruption", f"{method} − LT{where}, mean corruption accuracy"),
    ):
        if not all(key in targets[t][s][6] for t in targets for s in seeds):
            continue
        for r in rows:
            v = targets[r["round"]]
            r[f"{key}_mean"] = float(np.mean([100 * v[s][6][key] for s in seeds]))
            if other:
                r[f"{other}_mean"] = float(np.mean([100 * v[s][6][other] for s in seeds]))
            else:
                r["ensemble_members_mean"] = float(np.mean([v[s][6]["members"] for s in seeds]))
        mine = np.array([[100 * targets[t][s][6][key] for t in sorted(targets)] for s in seeds]).mean(axis=1)
        if other:
            base = np.array([[100 * targets[t][s][6][other] for t in sorted(targets)] for s in seeds]).mean(axis=1)
        else:
            base = np.array([[100 * targets[t][s][2] for t in sorted(targets)] for s in seeds]).mean(axis=1)
        ci = paired_bootstrap_ci(mine, base)
        out.append(f"{label}: {ci.mean:+.2f} pt [95% CI {ci.low:+.2f}, {ci.high:+.2f}] over {ci.n} seeds")
    return out


def build(exp_dir: RunDir) -> tuple[pa.Table, list[str]]:
    ident, data = collect(exp_dir)
    rows, verdicts, analysis_verdicts = [], [], []
    for (cell, method), targets in sorted(data.items(), key=lambda kv: (kv[0][0], ident["methods"].index(kv[0][1]))):
        seeds = sorted(set.intersection(*(set(v) for v in targets.values())))  # seeds every target has
        per_target, ci_t = [], {}
        for t in sorted(targets):
            v = targets[t]
            lt = np.array([100 * v[s][0] for s in seeds])
            bn = np.array([100 * (v[s][1] if v[s][1] is not None else np.nan) for s in seeds])
            lp = np.array([100 * v[s][2] for s in seeds])
            ci = paired_bootstrap_ci(lp, lt)
            ci_t[t] = paired_t_ci(lp, lt)
            b, c = sum(v[s][4] for s in seeds), sum(v[s][5] for s in seeds)
            per_target.append((t, v[seeds[0]][3], lt, bn, lp, ci, mcnemar_p(b, c), b, c))
        adjusted = holm([p for *_, p, _, _ in per_target])
        first_row = len(rows)
        for (t, density, lt, bn, lp, ci, p, b, c), p_holm in zip(per_target, adjusted, strict=True):
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
                    "gain_ci_low": ci.low,
                    "gain_ci_high": ci.high,
                    "gain_t_ci_low": ci_t[t].low,
                    "gain_t_ci_high": ci_t[t].high,
                    "lt_only_correct": b,
                    "method_only_correct": c,
                    "mcnemar_p": p,
                    "mcnemar_p_holm": p_holm,
                }
            )
        # The verdict: per seed, the gain averaged over sparsities; its mean and CI over seeds.
        lt_seed = np.array([[100 * targets[t][s][0] for t in sorted(targets)] for s in seeds]).mean(axis=1)
        lp_seed = np.array([[100 * targets[t][s][2] for t in sorted(targets)] for s in seeds]).mean(axis=1)
        ci = paired_bootstrap_ci(lp_seed, lt_seed)
        t_ci = paired_t_ci(lp_seed, lt_seed)
        better, _, _ = compare_counts([r[4].mean() for r in per_target], [r[2].mean() for r in per_target])
        significant = sum(p < 0.05 for p in adjusted)
        where = f" [{cell}]" if cell else ""
        verdicts.append(
            f"{method} − LT{where}: {ci.mean:+.2f} pt [95% CI {ci.low:+.2f}, {ci.high:+.2f}] over {ci.n} seeds; "
            f"better at {better}/{len(per_target)} sparsities; significant (Holm, p < 0.05) at {significant}"
            + (f"; Student t 95% CI [{t_ci.low:+.2f}, {t_ci.high:+.2f}]" if t_ci.n > 1 else "")
        )
        analysis_verdicts += _analysis_summary(cell, method, targets, seeds, rows[first_row:])
    # The control: LT+BN − LT, once per cell (the same network in every method's search).
    for cell in sorted({c for c, _ in data}):
        method = next(m for m in ident["methods"] if (cell, m) in data)
        targets = data[(cell, method)]
        seeds = sorted(set.intersection(*(set(v) for v in targets.values())))
        if any(targets[t][s][1] is None for t in targets for s in seeds):
            continue
        lt_seed = np.array([[targets[t][s][0] for t in sorted(targets)] for s in seeds]).mean(axis=1) * 100
        bn_seed = np.array([[targets[t][s][1] for t in sorted(targets)] for s in seeds]).mean(axis=1) * 100
        ci = paired_bootstrap_ci(bn_seed, lt_seed)
        where = f" [{cell}]" if cell else ""
        verdicts.append(
            f"LT+BN − LT{where} (control): {ci.mean:+.2f} pt [95% CI {ci.low:+.2f}, {ci.high:+.2f}] over {ci.n} seeds"
        )
    keys = list(dict.fromkeys(k for r in rows for k in r))  # analysis columns exist only where measured
    return pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows]), verdicts + analysis_verdicts


def _std(x: np.ndarray) -> float:
    return float(x.std(ddof=1)) if len(x) > 1 else 0.0


def write(exp_dir: RunDir, table: pa.Table, verdicts: list[str]) -> dict[str, str]:
    exp_dir.write_table(layout.report("parquet"), table)
    buf = io.BytesIO()
    pacsv.write_csv(table, buf)
    exp_dir.write_bytes(layout.report("csv"), buf.getvalue())
    exp_dir.write_bytes(layout.VERDICT, ("\n".join(verdicts) + "\n").encode())
    png = io.BytesIO()
    _plot(table, png)
    exp_dir.write_bytes(layout.report("png"), png.getvalue())
    return {k: exp_dir.uri_of(k) for k in layout.EXPERIMENT_REPORT}


def _plot(table: pa.Table, out) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table.to_pylist()
    cells = sorted({r["cell"] for r in rows})
    fig, axes = plt.subplots(1, len(cells), figsize=(6.5 * len(cells), 4.2), dpi=120, squeeze=False)
    for ax, cell in zip(axes[0], cells, strict=True):
        mine = [r for r in rows if r["cell"] == cell]
        first = [r for r in mine if r["method"] == mine[0]["method"]]
        x = [r["weights_remaining"] for r in first]
        ax.plot(x, [r["lt_mean"] for r in first], "o-", color="black", label="LT")
        ax.plot(x, [r["lt_bn_mean"] for r in first], "^:", color="gray", label="LT+BN")
        for method in dict.fromkeys(r["method"] for r in mine):
            rs = [r for r in mine if r["method"] == method]
            xs = [r["weights_remaining"] for r in rs]
            mean = np.array([r["method_mean"] for r in rs])
            lt = np.array([r["lt_mean"] for r in rs])
            # the band: the paired gain's 95% CI, drawn around the method's mean
            lo = lt + np.array([r["gain_ci_low"] for r in rs])
            hi = lt + np.array([r["gain_ci_high"] for r in rs])
            (line,) = ax.plot(xs, mean, "s--", label=f"LP {method}")
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15)
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_title(cell or "base job")
        ax.set_xlabel("weights remaining (%)")
        ax.set_ylabel(f"test accuracy (%), mean of {first[0]['seeds']} seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, format="png")
    plt.close(fig)


def print_table(table: pa.Table, verdicts: list[str]) -> None:
    from rich.table import Table

    from lp_ray.progress import console

    rows = table.to_pylist()
    for cell in sorted({r["cell"] for r in rows}):
        mine = [r for r in rows if r["cell"] == cell]
        methods = list(dict.fromkeys(r["method"] for r in mine))
        t = Table(title=f"{cell or 'base job'}: test accuracy %, mean ± std over {mine[0]['seeds']} seeds")
        for col in ["round", "weights %", "LT", "LT+BN"] + [
            c for m in methods for c in (m, "gain [95% CI]", "p (Holm)")
        ]:
            t.add_column(col, justify="right")
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
                        f"{r['gain_mean']:+.2f} [{r['gain_ci_low']:+.2f}, {r['gain_ci_high']:+.2f}]",
                        f"{r['mcnemar_p_holm']:.3f}",
                    ]
                )
            t.add_row(*cells)
        console.print(t)
    for v in verdicts:
        console.print(v, highlight=False, markup=False)  # "[cell]" is text, not rich markup


def _pm(mean: float, std: float) -> str:
    return "-" if mean != mean else f"{mean:.2f} ± {std:.2f}"
