"""Experiment specs (docs/architecture.md, "Experiments"): a base job, seeds, a grid of job-field overrides
and pool methods, expanded into trials. A trial's job is the base job + its overrides + `train.seed`, so
its run directory is the ordinary content-hash run directory: a trial is exactly `lp-ray run` of that job,
and a finished trial is found again by any sweep that shares it.

    name: default
    job: ../jobs/default.yaml          # a path (relative to this file) or an inline job mapping
    seeds: [0, 1, 2, 3, 4]             # or "0-4"
    grid: {imp.rewind_epoch: [2, 0]}   # dotted job keys -> values; every combination is a cell
    methods: [interpolation, average, swa, ema]
    analyses: [ensemble, robustness]   # optional: `lp-ray analyze` runs every trial makes after its pools
    reference_cell: imp.rewind_epoch=2 # optional: the report pairs every other cell with it, seed by seed
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from lp_ray.errors import LpRayError
from lp_ray.spec import JobSpec, SpecError, job_changes
from lp_ray.spec_loading import apply_overrides, job_from_dict, load_job, read_yaml


@dataclass(frozen=True)
class Trial:
    index: int
    cell: str  # the grid overrides, "imp.rewind_epoch=0" ("" for the base job)
    seed: int
    job: JobSpec


@dataclass(frozen=True)
class PoolVariant:
    """One pool search every trial makes: its folder under pool/ and the pool fields it sets on top
    of the job's pool section (`methods: [a, b]` is the variants `a` and `b` setting only the method)."""

    name: str
    fields: dict

    def settings(self, job: JobSpec):
        from lp_ray.spec_loading import pool_variant

        return pool_variant(job.pool, self.fields, f"pool variant {self.name}")


@dataclass
class ExperimentSpec:
    name: str
    base: JobSpec
    seeds: list[int]
    grid: dict[str, list]
    methods: list[str]
    analyses: list[str] = dataclasses.field(default_factory=list)
    # `pools:` instead of `methods:`: named variants of the search (several of one method compared on
    # the same tickets), and the one every other is paired with in the report
    pools: list[PoolVariant] = dataclasses.field(default_factory=list)
    reference: str | None = None
    # a cell every other cell is paired with by seed in the report (the tickets and every search)
    reference_cell: str | None = None

    def variants(self) -> list[PoolVariant]:
        return self.pools or [PoolVariant(m, {"method": m}) for m in self.methods]

    def variant_names(self) -> list[str]:
        return [v.name for v in self.variants()]

    def cells(self) -> list[str]:
        keys = list(self.grid)
        combos = itertools.product(*(self.grid[k] for k in keys)) if keys else [()]
        return [" ".join(f"{k}={_yaml_value(v)}" for k, v in zip(keys, combo, strict=True)) for combo in combos]

    def trials(self) -> list[Trial]:
        out = []
        for cell in self.cells():
            for seed in self.seeds:
                overrides = [o for o in cell.split(" ") if o] + [f"train.seed={seed}"]
                job = apply_overrides(self.base, overrides, f"experiment {self.name}")
                out.append(Trial(len(out), cell, seed, job))
        return out

    def identity(self) -> dict:
        return {
            "name": self.name,
            # the fields that differ from their defaults: a field added later never renames an experiment
            "base": job_changes(self.base),
            "seeds": self.seeds,
            "grid": self.grid,
            "methods": self.methods,
            # only when set, so experiments from before analyses (and pool variants) existed keep their hash
            **({"analyses": self.analyses} if self.analyses else {}),
            **({"pools": [{"name": v.name, **v.fields} for v in self.pools]} if self.pools else {}),
            **({"reference": self.reference} if self.reference else {}),
            **({"reference_cell": self.reference_cell} if self.reference_cell else {}),
        }

    def experiment_hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    def dir_name(self) -> str:
        return f"{self.name}-{self.experiment_hash()}"


def _yaml_value(v) -> str:
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip().replace(" ", "")


def parse_seeds(value, where: str) -> list[int]:
    """[0, 1, 2] or "0-4" or "0,2,5"."""
    if isinstance(value, str):
        try:
            seeds = []
            for part in value.split(","):
                lo, _, hi = part.strip().partition("-")
                seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
        except ValueError:
            raise SpecError(f"{where}: seeds: expected a list of integers or a range like 0-4, got {value!r}") from None
    elif isinstance(value, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        seeds = list(value)
    else:
        raise SpecError(f"{where}: seeds: expected a list of integers or a range like 0-4, got {value!r}")
    if not seeds:
        raise SpecError(f"{where}: seeds: must name at least one seed")
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"{where}: seeds: a seed is listed twice ({seeds})")
    return seeds


def build_experiment(raw: dict, where: str, base_dir: Path, base_job: JobSpec | None = None) -> ExperimentSpec:
    from lp_ray.pool.methods import METHODS, known

    keys = {"name", "job", "seeds", "grid", "methods", "analyses", "pools", "reference", "reference_cell"}
    unknown = sorted(set(raw) - keys)
    if unknown:
        raise SpecError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(sorted(keys))})")
    name = raw.get("name", "experiment")
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
        raise SpecError(f"{where}: name: must be a non-empty name without '/' or spaces, got {name!r}")
    if base_job is None:
        job = raw.get("job")
        if job is None:
            base_job = load_job(None)
        elif isinstance(job, str):
            base_job = load_job(base_dir / job)
        elif isinstance(job, dict):
            base_job = job_from_dict(job, f"{where}: job")
        else:
            raise SpecError(f"{where}: job: expected a path or a job mapping, got {type(job).__name__}")
    seeds = parse_seeds(raw.get("seeds", [0]), where)
    grid = raw.get("grid") or {}
    if not isinstance(grid, dict):
        raise SpecError(f"{where}: grid: expected a mapping of dotted job keys to lists of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SpecError(f"{where}: grid.{key}: expected a non-empty list of values, got {values!r}")
        if key == "train.seed":
            raise SpecError(f"{where}: grid.train.seed: seeds are the `seeds` key, not a grid axis")
        for v in values:  # each value checked by the job loader, as an override would be
            apply_overrides(base_job, [f"{key}={_yaml_value(v)}"], f"{where}: grid")
    if "pools" in raw and "methods" in raw:
        raise SpecError(f"{where}: methods: give `pools` (named variants) or `methods`, not both")
    pools, reference = _pool_variants(raw, where, base_job)
    methods = list(dict.fromkeys(v.settings(base_job).method for v in pools)) or raw.get(
        "methods", [base_job.pool.method]
    )
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    if not isinstance(methods, list) or not methods:
        raise SpecError(f"{where}: methods: expected a non-empty list of pool methods")
    for m in methods:
        if m not in METHODS:
            raise SpecError(f"{where}: methods: unknown method {m!r} (known: {known()})")
    analyses = raw.get("analyses") or []
    if isinstance(analyses, str):
        analyses = [a.strip() for a in analyses.split(",") if a.strip()]
    from lp_ray.analysis import ANALYSES

    if not isinstance(analyses, list) or any(a not in ANALYSES for a in analyses):
        raise SpecError(f"{where}: analyses: expected a list of {', '.join(ANALYSES)}, got {analyses!r}")
    exp = ExperimentSpec(
        name,
        base_job,
        seeds,
        {k: list(v) for k, v in grid.items()},
        list(dict.fromkeys(methods)),
        list(dict.fromkeys(analyses)),
        pools,
        reference,
    )
    reference_cell = raw.get("reference_cell")
    if reference_cell is not None:
        cells = exp.cells()
        if len(cells) < 2 or reference_cell not in cells:
            raise SpecError(
                f"{where}: reference_cell: {reference_cell!r} is not one of the grid's cells "
                f"({', '.join(repr(c) for c in cells)}); it needs a grid of two or more cells"
            )
        exp.reference_cell = reference_cell
    return exp


def _pool_variants(raw: dict, where: str, base_job: JobSpec) -> tuple[list[PoolVariant], str | None]:
    """`pools:` [{name, <pool fields>}...] and `reference:` (a variant's name), every value checked as
    the pool's options are, each error naming the variant."""
    from lp_ray.pool.records import check_search_name
    from lp_ray.spec_loading import pool_variant

    given = raw.get("pools")
    reference = raw.get("reference")
    if given is None:
        if reference is not None:
            raise SpecError(f"{where}: reference: needs `pools` (named variants) to name one of")
        return [], None
    if not isinstance(given, list) or not given or not all(isinstance(v, dict) for v in given):
        raise SpecError(f"{where}: pools: expected a non-empty list of mappings, each a name and pool fields")
    variants = []
    for i, entry in enumerate(given):
        fields = {k: v for k, v in entry.items() if k != "name"}
        name = entry.get("name")
        try:
            check_search_name(name if isinstance(name, str) else "")
        except LpRayError:
            raise SpecError(f"{where}: pools[{i}].name: a plain folder name is needed, got {name!r}") from None
        pool_variant(base_job.pool, fields, f"{where}: pools[{i}] ({name})")
        variants.append(PoolVariant(name, fields))
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise SpecError(f"{where}: pools: two variants are named alike ({names})")
    if reference is not None and reference not in names:
        raise SpecError(f"{where}: reference: {reference!r} is not one of the pools ({', '.join(names)})")
    return variants, reference


def load_experiment(path: str | Path) -> ExperimentSpec:
    return build_experiment(read_yaml(path), str(path), Path(path).resolve().parent)


def experiment_from_options(
    job_path, seeds: str | None, grid: list[str], methods: str | None, analyses: str | None = None
) -> ExperimentSpec:
    """`lp-ray sweep --job J --seeds 0-2 --grid imp.rewind_epoch=0,9 --methods interpolation,average`."""
    base = load_job(job_path)
    raw: dict = {"name": base.name, "seeds": seeds or "0"}
    g = {}
    for text in grid:
        key, sep, values = text.partition("=")
        if not sep or not key:
            raise SpecError(f"--grid {text!r}: expected key=v1,v2 with a dotted job key")
        g[key.strip()] = [yaml.safe_load(v) for v in values.split(",")]
    raw["grid"] = g
    if methods:
        raw["methods"] = methods
    if analyses:
        raw["analyses"] = analyses
    return build_experiment(raw, "the command line", Path.cwd(), base)
