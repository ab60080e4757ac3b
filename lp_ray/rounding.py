"""One rounding rule for what people read (descriptions, MLflow metrics, CSV tables): accuracies in percent
and gains in points to 2 decimals of a point, p-values to 3 significant digits, anything else to 6
significant digits (which only removes float noise: 0.0016249999999999876 -> 0.001625). The records
(JSON, Parquet) keep full precision; a rounded figure is only ever shown.

    points(x)      percent or points, 2 decimals: 96.89999999999999 -> 96.9, 0.225 -> 0.23
    p_value(p)     3 significant digits: 0.0123456 -> 0.0123
    clean(x)       6 significant digits
    csv_bytes(t)   an Arrow table as CSV with those rules, by its column names (lp-ray's own tables
                   name their units: *_acc, *_pt, *_pct, gain*, weights_remaining and the
                   experiment table's lt_*/method_* are points or percent; *_p, *_p_holm p-values)
"""

from __future__ import annotations

import decimal
import io
import math
import re

import pyarrow as pa

# Columns in percent or points: accuracies, gains, weights remaining, and the experiment table's LT and
# method means, spreads and intervals. Others (an analysis's own measure, a count) get `clean`.
_POINTS = re.compile(r"(_acc|_pt|_pct|_gain|weights_remaining)($|_)|^(gain|lt|lt_bn|method)_")
_P_VALUE = re.compile(r"(_p|_p_holm)$")


def points(x: float | None) -> float | None:
    """Percent or points to 2 decimals, rounding half away from zero as a reader does (0.225 -> 0.23,
    which Python's round() makes 0.23 or 0.22 depending on the float's last bit)."""
    if x is None or not math.isfinite(x):
        return x
    return float(decimal.Decimal(repr(float(x))).quantize(decimal.Decimal("0.01"), decimal.ROUND_HALF_UP))


def signed(x: float) -> str:
    """A gain as text: '+0.23', '-1.05', '+0.00'."""
    return f"{points(x):+.2f}"


def p_value(p: float | None) -> float | None:
    if p is None or not math.isfinite(p) or p == 0:
        return p
    return float(f"{p:.3g}")


def clean(x: float | None) -> float | None:
    """6 significant digits, nan and inf as they are."""
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x) or x == 0:
        return x
    return float(f"{x:.6g}")


def rule_for(column: str):
    """The rounding of a column, by its name."""
    if _P_VALUE.search(column):
        return p_value
    if _POINTS.search(column):
        return points
    return clean


def csv_bytes(table: pa.Table) -> bytes:
    """The table as CSV, every float column rounded by its name's rule, lists written as space-separated
    values (CSV has none)."""
    import pyarrow.csv as pacsv

    for i, field in enumerate(table.schema):
        values = table.column(i).to_pylist()
        if pa.types.is_floating(field.type):
            rule = rule_for(field.name)
            table = table.set_column(i, field.name, pa.array([rule(v) for v in values], pa.float64()))
        elif pa.types.is_list(field.type):
            rule = rule_for(field.name) if pa.types.is_floating(field.type.value_type) else None
            text = [None if v is None else " ".join(f"{rule(x):g}" if rule else str(x) for x in v) for v in values]
            table = table.set_column(i, field.name, pa.array(text, pa.string()))
    buf = io.BytesIO()
    pacsv.write_csv(table, buf)
    return buf.getvalue()
