"""What an analysis is (the `Analysis` protocol), the options it declares for its command line, and
how the reports read what it measured.

An analysis declares everything about itself in its own module: its question (the help text), its
options (the CLI builds `lp-ray analyze <name>` from them), `run` (compute and write
`analysis/<name>/`), `summary` (the lines the command prints), and, when it measures pooled networks,
what the run report and the experiment report show of it. The registry (`analysis/__init__.py`) is the
one list of names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from lp_ray.pool.records import TargetResult


@dataclass(frozen=True)
class Option:
    """A command-line option of an analysis: `--<name with dashes>`. `parse` turns what typer read
    (None when not given) into the value `run` gets, raising ValueError with a message for a bad one."""

    name: str  # the keyword `run` takes
    type: type  # what typer reads: str, int, float, bool, list[int]
    help: str
    default: Any = None
    parse: Callable[[Any], Any] | None = None
    short: str | None = None  # e.g. "-p"


@dataclass
class Written:
    """What an analysis wrote: its files in the run directory, and the MLflow run that holds them."""

    files: list[str]
    mlflow_run: str | None


@dataclass
class Outcome:
    """What `run` returns: the rows its summary is made of, and what it wrote."""

    rows: list[dict]
    written: Written


@dataclass(frozen=True)
class Comparison:
    """A verdict over seeds that an analysis adds to the experiment report: the per-seed mean over
    sparsities of `measure` minus that of `baseline` (None: the pooled network's test accuracy). The
    report's rows get `<measure>_mean` (and `<baseline>_mean`, `<extra>_mean`) per sparsity."""

    measure: str
    baseline: str | None
    label: str  # with {method} and {where}, e.g. "output ensemble − {method}{where} (k× vs 1× inference)"
    extra: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunMeasure:
    """One number an analysis measured of a whole run rather than of a pooled network (e.g. the mean
    error barrier between its tickets), in points: the experiment report averages it over seeds with a
    Student-t interval. `key` names it among MLflow's metrics, `label` in the report's lines."""

    key: str
    label: str
    value: float


class Analysis(Protocol):
    """Also, where an analysis has them (the reports look for them): `measures(run, searches)`,
    `comparisons`, `report_columns` and `report_lines` for what it measured of pooled networks, and
    `of_run(run) -> list[RunMeasure] | None` for what it measured of the whole run (None: not run there)."""

    name: str
    help: str  # the question it answers, and how
    options: Sequence[Option]
    uses_cluster: bool  # it evaluates networks on Ray (the cluster spec matters)

    def run(self, run_uri: str, cluster, tracking_uri: str | None, **options) -> Outcome:
        """Compute, write analysis/<name>/ (the PNG last: the "done" marker) and log it to MLflow."""

    def summary(self, rows: list[dict]) -> list[str]:
        """The lines `lp-ray analyze <name>` prints."""


@dataclass
class Measures:
    """What an analysis measured of a run's networks, as the reports read it: per (search, target) of
    a pooled network, and per round of LT. Rows are matched to networks by the sha256 they recorded,
    so a search redone since its analysis is left out instead of mixed in."""

    pooled: dict[tuple[str, int], dict] = field(default_factory=dict)
    lt: dict[int, dict] = field(default_factory=dict)

    def of(self, search: str, result: TargetResult) -> dict | None:
        return self.pooled.get((search, result.target))


def row_measures_network(row: dict, result: TargetResult, legacy_key: str) -> bool:
    """Whether an analysis row measured this pooled network: its recorded sha256, or for tables written
    before analyses recorded one, the network's test accuracy under `legacy_key` (the old rule)."""
    if "network_sha256" in row:
        return row["network_sha256"] == result.sha256
    return row.get(legacy_key) == result.test_acc
