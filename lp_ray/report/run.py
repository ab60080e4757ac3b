"""The report of one run: LT versus every pooled method, per sparsity, as a table (terminal, CSV, Parquet)
and a plot like the paper's Figure 3 (test accuracy against weights remaining), with what the analyses
that have run measured of the same networks (their `report_columns` and `report_lines`)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import pyarrow as pa

from lp_ray import layout
from lp_ray.errors import LpRayError
from lp_ray.pool.records import all_searches, mcnemar_vs_lt
from lp_ray.rounding import csv_bytes
from lp_ray.store import RunDir, finished_rounds, read_ticket, read_ticket_meta


def build_report(run: RunDir, verify: bool = True, analyses: Sequence = ()) -> pa.Table:
    """The report table. `verify`: check every ticket against its recorded sha256 and mask first, so
    no figure is shown for a file that was changed (the pool has just checked them when it plots).
    `analyses`: the registered analyses whose columns the report adds where they have run (the
    command passes them; this module sits below the analyses, which run IMP and the pool)."""
    rounds = finished_rounds(run)
    if not rounds:
        raise LpRayError(f"{run.uri}: no finished IMP rounds to report (is this an lp-ray run directory?)")
    if verify:
        for r in rounds:
            read_ticket(run, r)
    metas = {r: read_ticket_meta(run, r) for r in rounds}
    cols: dict[str, list] = {
        "round": rounds,
        "weights_remaining": [100 * metas[r].density for r in rounds],
        "lt_val_acc": [100 * metas[r].val_acc for r in rounds],
        "lt_test_acc": [100 * metas[r].test_acc for r in rounds],
    }
    searches = all_searches(run)
    # LT+BN (recalibrated ticket, nothing merged) is the same network in every search: take the first's.
    lt_bn = {}
    for results in searches.values():
        for r, res in results.items():
            if res.lt_bn_test_acc is not None:
                lt_bn.setdefault(r, 100 * res.lt_bn_test_acc)
    if lt_bn:
        cols["lt_bn_test_acc"] = [lt_bn.get(r) for r in rounds]
    for name, results in searches.items():
        cols[f"{name}_test_acc"] = [100 * results[r].test_acc if r in results else None for r in rounds]
        cols[f"{name}_gain"] = [100 * results[r].gain if r in results else None for r in rounds]
        cols[f"{name}_mcnemar_p"] = [mcnemar_vs_lt(run, name, results[r]) if r in results else None for r in rounds]
    for analysis in analyses:  # what `lp-ray analyze` measured of these networks, when it has run
        cols.update(analysis.report_columns(analysis.measures(run, searches), rounds, searches))
    return pa.table(cols)


def write_report(run: RunDir, table: pa.Table) -> dict[str, str]:
    """report.csv, report.parquet and report.png of `table` in the run directory."""
    run.write_table(layout.report("parquet"), table)
    run.write_bytes(layout.report("csv"), csv_bytes(table))
    png = io.BytesIO()
    _plot(table, png)
    run.write_bytes(layout.report("png"), png.getvalue())
    return {fmt: run.uri_of(layout.report(fmt)) for fmt in layout.REPORT_FORMATS}


def plot_png(run: RunDir, only: str | None = None) -> bytes:
    """The accuracy-vs-sparsity figure alone (of one search with `only`), for a search's MLflow run (its
    tickets are checked already)."""
    png = io.BytesIO()
    _plot(build_report(run, verify=False), png, only)
    return png.getvalue()


def _plot(table: pa.Table, out, only: str | None = None) -> None:
    """Test accuracy against weights remaining: LT, LT+BN and every search (or `only` one), the ticks
    labelled with each round's density, a filled star where a search's McNemar test against LT is
    significant after Holm's correction across sparsities, the legend beside the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lp_ray.stats import holm

    d = table.to_pydict()
    x = d["weights_remaining"]
    methods = [
        k[: -len("_test_acc")] for k in d if k.endswith("_test_acc") and k not in ("lt_test_acc", "lt_bn_test_acc")
    ]
    fig, ax = plt.subplots(figsize=(8.2, 4.4), dpi=120)
    ax.plot(x, d["lt_test_acc"], "o-", color="black", label="LT: the ticket as trained")
    if "lt_bn_test_acc" in d:
        pts = [(a, b) for a, b in zip(x, d["lt_bn_test_acc"], strict=True) if b is not None]
        ax.plot(*zip(*pts, strict=True), "^:", color="gray", label="LT+BN: recalibrated, nothing merged (control)")
    marked = False
    for m in methods if only is None else [only]:
        pts = [(a, b, p) for a, b, p in zip(x, d[f"{m}_test_acc"], d[f"{m}_mcnemar_p"], strict=True) if b is not None]
        if not pts:
            continue
        (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], "s--", label=f"Lottery Pools: {m}")
        ps = [p[2] for p in pts]
        if all(p is not None for p in ps):
            sig = [pt for pt, q in zip(pts, holm(ps), strict=True) if q < 0.05]
            if sig:
                ax.plot([p[0] for p in sig], [p[1] for p in sig], "*", ms=13, color=line.get_color(), mec="black")
                marked = True
    if marked:
        ax.plot([], [], "*", ms=11, color="white", mec="black", label="McNemar vs LT, p < 0.05 (Holm)")
    ax.set_xscale("log")
    ax.invert_xaxis()  # denser on the left, as the paper plots sparsity increasing to the right
    ax.set_xticks(x)
    ax.set_xticklabels([f"{v:.1f}" if v < 10 else f"{v:.0f}" for v in x], fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel("weights remaining (%), one tick per round")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(out, format="png")
    plt.close(fig)


def print_report(table: pa.Table, title: str | None = None, analyses: Sequence = ()) -> None:
    from rich.table import Table

    from lp_ray.progress import console

    d = table.to_pydict()
    methods = [
        k[: -len("_test_acc")] for k in d if k.endswith("_test_acc") and k not in ("lt_test_acc", "lt_bn_test_acc")
    ]
    has_bn = "lt_bn_test_acc" in d
    t = Table(title=title)
    for col in (
        ["round", "weights remaining %", "LT test acc %"]
        + (["LT+BN %"] if has_bn else [])
        + [c for m in methods for c in (f"LP {m} test acc %", "gain", "McNemar p")]
    ):
        t.add_column(col, justify="right")
    for i, r in enumerate(d["round"]):
        cells = [str(r), f"{d['weights_remaining'][i]:.2f}", f"{d['lt_test_acc'][i]:.2f}"]
        if has_bn:
            cells.append("-" if d["lt_bn_test_acc"][i] is None else f"{d['lt_bn_test_acc'][i]:.2f}")
        for m in methods:
            acc, gain, p = d[f"{m}_test_acc"][i], d[f"{m}_gain"][i], d[f"{m}_mcnemar_p"][i]
            cells += (
                ["-", "-", "-"]
                if acc is None
                else [
                    f"{acc:.2f}",
                    f"[{'green' if gain > 0 else 'red' if gain < 0 else 'white'}]{gain:+.2f}[/]",
                    "-" if p is None else f"{p:.3f}",
                ]
            )
        t.add_row(*cells)
    console.print(t)
    best = max(range(len(d["round"])), key=lambda i: d["lt_val_acc"][i])  # first of equals: the denser
    console.print(
        f"LT of the best validation round ({d['round'][best]}, {d['weights_remaining'][best]:.2f}% weights): "
        f"test {d['lt_test_acc'][best]:.2f}%"
    )
    for analysis in analyses:
        for line in analysis.report_lines(d, methods):
            console.print(line)
    for m in methods:
        gains = [g for g in d[f"{m}_gain"] if g is not None]
        if gains:
            ps = [p for p in d[f"{m}_mcnemar_p"] if p is not None]
            significant = f"; McNemar p < 0.05 at {sum(p < 0.05 for p in ps)} (uncorrected)" if ps else ""
            console.print(
                f"{m}: mean gain {sum(gains) / len(gains):+.2f} pt; better than LT at {sum(g > 0 for g in gains)} "
                f"of {len(gains)} sparsities{significant}. One seed: run `lp-ray sweep` for an interval over seeds."
            )
