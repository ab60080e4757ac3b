"""Reading specs: YAML files, mappings and `key=value` overrides into checked `JobSpec`,
`ClusterSpec` and `PoolSpec` values (docs/architecture.md, "Specs and identity").

One loader for every source, so a value is checked the same way wherever it came from: an unknown key,
a wrong type or an impossible value is one `SpecError` that names the file (or override, or option) and
the key. Names are checked against their registries, the only lists of them: data sets
(`data/registry.py`, which also says which fields each one reads and checks them), models
(`models/__init__.py`), pool methods (`pool/methods.py`) and IMP retraining rules (`imp/retrain.py`).
None of those imports torch, so checking a job does not either.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from lp_ray.plugins import DATASET, MODEL, PluginError
from lp_ray.spec import (
    DECAY_ON,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    SELECTIONS,
    ClusterSpec,
    DataSpec,
    JobSpec,
    ModelSpec,
    PoolSpec,
    SpecError,
    default_job,
    job_to_dict,
)

# fail(key, message): raises a SpecError that says where the value came from
Fail = Callable[[str, str], None]


def load_job(path: str | Path | None, overrides: Sequence[str] = ()) -> JobSpec:
    """Load a job spec (`None`: the embedded default job), then apply `key=value` overrides; every value
    is checked as if the file had said it."""
    if path is None:
        job = default_job()
    else:
        job = job_from_dict(read_yaml(path), str(path), [Path(path).resolve().parent])
    job = apply_overrides(job, overrides, str(path) if path is not None else "the default job")
    if job.data.path and "://" not in job.data.path:
        # Relative to where the command runs; Ray workers run elsewhere, so they get an absolute path.
        job.data.path = str(Path(job.data.path).expanduser().resolve())
    return job


def job_from_dict(raw: dict, where: str = "<job>", plugin_dirs: Sequence[Path] = ()) -> JobSpec:
    """A checked job from a mapping. Its plugins are imported first (what it records in
    plugin_versions exactly; the modules it declares from `plugin_dirs`, or the working directory when none
    is given),
    so that a plugin's fields in the model and data sections are read as the plugin declares them."""
    raw = _with_plugin_fields(raw, where, plugin_dirs)
    job = build(JobSpec, raw, where)
    check_job(job, where)
    return job


def _with_plugin_fields(raw: Any, where: str, plugin_dirs: Sequence[Path]) -> Any:
    """`raw` with each plugin's fields moved from its section into the section's `options`."""
    from lp_ray.plugins import loading

    if not isinstance(raw, dict):
        return raw  # build() says what is wrong
    declared, versions = raw.get("plugins", []), raw.get("plugin_versions", {})
    if not isinstance(declared, list) or not all(isinstance(n, str) for n in declared):
        raise SpecError(f"{where}: plugins: expected a list of module names, got {_show(declared)}")
    if not isinstance(versions, dict) or not all(isinstance(v, str) for v in versions.values()):
        raise SpecError(f"{where}: plugin_versions: expected a mapping of names to versions, got {_show(versions)}")
    try:
        loading.activate(versions, list(plugin_dirs))
        loading.import_declared(declared, list(plugin_dirs) or [Path.cwd()], where)
    except PluginError as e:
        raise SpecError(str(e)) from None
    for (kind, name), plugin in list(loading.REGISTERED.items()):  # built-in names cannot be shadowed
        if name in _built_in_names(kind):
            loading.forget(plugin.module)
            raise SpecError(
                f"{where}: {plugin.module} registers {kind} {name!r}, a name built into lp-ray; choose another name"
            )
    raw = dict(raw)
    for section, name_key, kind, default in (
        ("model", "name", MODEL, ModelSpec.name),
        ("data", "dataset", DATASET, DataSpec.dataset),
    ):
        sec = raw.get(section)
        if not isinstance(sec, dict):
            continue
        name = sec.get(name_key, default)
        plugin = _find(kind, name, where) if isinstance(name, str) else None
        if plugin is None:
            continue
        ours = _fields_for_every(kind)
        taken = sorted(set(plugin.fields) & set(ours))
        if taken:
            raise SpecError(
                f"{where}: {plugin.module}: {name}'s field {taken[0]!r} is one of lp-ray's ({', '.join(ours)})"
            )
        sec = dict(sec)
        options = dict(sec.pop("options", None) or {})
        options.update({k: sec.pop(k) for k in list(sec) if k in plugin.fields})
        defaults = dataclasses.asdict(ModelSpec() if kind == MODEL else DataSpec())
        for k in sec:
            # job.yaml writes every field of the section, read by its model or data set or not: a built-in's
            # field is accepted at its default only (a plugin never reads it, so any other value is lost)
            if k not in defaults or (k not in ours and sec[k] != defaults[k]):
                raise SpecError(
                    f"{where}: unknown key '{section}.{k}' ({name}'s fields: {', '.join(plugin.fields) or 'none'}; "
                    f"lp-ray's: {', '.join(f for f in ours if f != 'options')})"
                )
        raw[section] = {**sec, "options": options}
    return raw


def _fields_for_every(kind: str) -> tuple[str, ...]:
    """The fields lp-ray reads for every model or data set: a plugin's fields sit beside them in the
    job's section, so they cannot take these names. (A built-in's own field, such as conv1d's `width`,
    is free: in a plugin's section the name means the plugin's field.)"""
    if kind == MODEL:
        return ("name", "num_classes", "options")
    from lp_ray.data.registry import COMMON_FIELDS

    return (*COMMON_FIELDS, "path", "augment", "options")


def _built_in_names(kind: str) -> set[str]:
    return set(_registry("model" if kind == MODEL else "data"))


def _find(kind: str, name: str, where: str):
    """The plugin a job's name resolves to; None for a built-in name (which an installed package must not
    claim: that would be silently shadowed) or an unknown one."""
    from lp_ray.plugins import loading

    if name in _built_in_names(kind):
        package = loading.entry_point_package(kind, name)
        if package is not None:
            raise SpecError(
                f"{where}: {package} declares a {kind} named {name!r}, a name built into lp-ray; rename it there"
            )
        return None
    try:
        return loading.find(kind, name)
    except PluginError as e:
        raise SpecError(f"{where}: {e}") from None


def apply_overrides(job: JobSpec, overrides: Sequence[str], where: str) -> JobSpec:
    """`section.field=value` pairs on top of a job (values are YAML: `train.lr_drops=[20,30]`,
    `pool.search_num=null`). An unknown key or a bad value is a SpecError naming the override."""
    if not overrides:
        return job
    raw = job_to_dict(job)
    raw.pop("plugin_versions", None)  # recomputed for the result: an override may name another plugin
    for text in overrides:
        key, sep, value = text.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise SpecError(f"{text!r}: expected key=value with a dotted key, e.g. train.epochs=3")
        node = raw
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                known = f" (known: {', '.join(sorted(node))})" if isinstance(node, dict) else ""
                raise SpecError(f"{text}: unknown key '{'.'.join(parts[: i + 1])}'{known}")
            if i < len(parts) - 1:
                node = node[part]
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise SpecError(f"{text}: the value is not valid YAML") from None
    return job_from_dict(raw, f"{where} with {' '.join(overrides)}")


def with_pool_options(pool: PoolSpec, options: dict[str, Any]) -> PoolSpec:
    """The pool settings with command-line options on top (None: not given), checked by the same rules
    as a spec file; a bad option is one error naming it (`--search-num: must be at least 1, got 0`)."""
    given = {k: v for k, v in options.items() if v is not None}
    settings = dataclasses.replace(pool, **given)

    def fail(field_name: str, message: str) -> None:
        flag = f"--{field_name.replace('_', '-')}" if field_name in given else f"pool.{field_name}"
        raise SpecError(f"{flag}: {message}")

    check_pool(settings, fail)
    return settings


def pool_variant(pool: PoolSpec, fields: dict[str, Any], where: str) -> PoolSpec:
    """The pool settings with a mapping of fields on top (an experiment's pool variant), built and
    checked like a spec file's pool section: `where` names the source in every error."""
    raw = {**dataclasses.asdict(pool), **fields}
    settings = build(PoolSpec, raw, where)

    def fail(key: str, message: str) -> None:
        raise SpecError(f"{where}: {key}: {message}")

    check_pool(settings, fail)
    return settings


def pool_settings_for_run(job: JobSpec, overrides: Sequence[str], options: dict[str, Any]) -> PoolSpec:
    """The settings of a search on an existing run: its job's pool section, then `pool.*` overrides, then
    the command's options, checked once. The other job fields made the run's tickets: they cannot
    change here."""
    others = [o for o in overrides if not o.strip().startswith("pool.")]
    if others:
        raise SpecError(f"{others[0]}: only pool.* fields can be set on an existing run (its job made its tickets)")
    job = apply_overrides(job, overrides, "the run's job")
    return with_pool_options(job.pool, options)


def load_cluster(path: str | Path | None) -> ClusterSpec:
    if path is None:
        return ClusterSpec()
    return cluster_from_dict(read_yaml(path), str(path))


def cluster_from_dict(raw: dict, where: str = "<cluster>") -> ClusterSpec:
    cluster = build(ClusterSpec, raw, where)
    check_cluster(cluster, where)
    return cluster


# --------------------------------------------------------------------------------------------------
# YAML into dataclasses


def read_yaml(path: str | Path) -> dict:
    """A spec file's top-level mapping; an unreadable or malformed file is one SpecError naming it."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{path}: no such file")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file (a YAML spec was expected)") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read it ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"{path}: malformed YAML{where}: {problem}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


# Keys that were once part of a spec: a file that still sets one is told why it is gone.
_REMOVED = {
    (ClusterSpec, "overlap_rounds"): (
        "removed: IMP now runs as one Ray Train run whose worker group lives for the whole job, so there is "
        "no per-round start-up left to overlap; delete the key"
    ),
}


def build(cls: type, raw: Any, where: str, path: tuple[str, ...] = ()) -> Any:
    """A spec dataclass from a mapping, every value coerced to its field's type (nested dataclasses,
    lists, mappings, optional values); unknown keys and wrong types name `where` and the key."""
    key = ".".join(path) or "top level"
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: {key}: expected a mapping, got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    for key_name in unknown:
        if (cls, key_name) in _REMOVED:
            raise SpecError(f"{where}: {'.'.join(path + (key_name,))}: {_REMOVED[cls, key_name]}")
    if unknown:
        full = ".".join(path + (str(unknown[0]),))
        raise SpecError(f"{where}: unknown key '{full}' (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(value, hints[name], where, path + (name,))
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, where: str, path: tuple[str, ...]) -> Any:
    key = ".".join(path)
    if tp is Any:  # a plugin's fields: checked against what the plugin declares (check_plugin_options)
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where, path)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # X | None
        if value is None:
            return None
        return _coerce(value, [a for a in args if a is not type(None)][0], where, path)
    if origin is list:
        if not isinstance(value, list):
            raise SpecError(f"{where}: {key}: expected a list, got {_show(value)}")
        return [_coerce(v, args[0], where, path + (f"[{i}]",)) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SpecError(f"{where}: {key}: expected a mapping, got {_show(value)}")
        return {str(k): _coerce(v, args[1], where, path + (str(k),)) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise SpecError(f"{where}: {key}: expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{where}: {key}: expected an integer, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{where}: {key}: expected a number, got {_show(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SpecError(f"{where}: {key}: expected a string, got {_show(value)}")
        return value
    raise TypeError(f"unsupported spec type {tp}")


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:80]


# --------------------------------------------------------------------------------------------------
# Checks


def check_job(job: JobSpec, where: str) -> None:
    from lp_ray.imp.retrain import RETRAIN
    from lp_ray.imp.soup import MAX_PARTICLES, SOUPS
    from lp_ray.plugins.loading import plugin_names

    def known_names(kind: str) -> list[str]:
        return sorted(_built_in_names(kind) | plugin_names(kind))

    def fail(key: str, message: str) -> None:
        raise SpecError(f"{where}: {key}: {message}")

    d, m, t, i = job.data, job.model, job.train, job.imp
    if not job.name or any(c in job.name for c in "/\\ "):
        fail("name", f"must be a non-empty name without '/' or spaces, got {job.name!r}")
    data_plugin = _find(DATASET, d.dataset, where)
    if data_plugin is None and not _built_in(DATASET, d.dataset):
        fail("data.dataset", f"unknown data set {d.dataset!r} (known: {', '.join(known_names(DATASET))})")
    if not 0.0 < d.val_fraction < 1.0:
        fail("data.val_fraction", f"must be in (0, 1), got {d.val_fraction}")
    model_plugin = _find(MODEL, m.name, where)
    if model_plugin is None and not _built_in(MODEL, m.name):
        fail("model.name", f"unknown model {m.name!r} (known: {', '.join(known_names(MODEL))})")
    for section, spec, name, plugin in (("data", d, d.dataset, data_plugin), ("model", m, m.name, model_plugin)):
        if plugin is not None:
            spec.options = check_plugin_options(plugin, spec.options, where, section)
        elif spec.options:
            fail(f"{section}.{next(iter(spec.options))}", f"unknown key ({name} is built in and has no such field)")
        else:
            _registry(section)[name].check(spec, lambda key, message, s=section: fail(f"{s}.{key}", message))
    _record_plugin_versions(job, where)
    if m.num_classes is not None and m.num_classes < 2:
        fail("model.num_classes", f"must be at least 2, got {m.num_classes}")
    if t.epochs < 1:
        fail("train.epochs", f"must be at least 1, got {t.epochs}")
    if t.batch_size < 1:
        fail("train.batch_size", f"must be at least 1, got {t.batch_size}")
    if t.lr <= 0:
        fail("train.lr", f"must be positive, got {t.lr}")
    if not 0.0 <= t.momentum < 1.0:
        fail("train.momentum", f"must be in [0, 1), got {t.momentum}")
    if t.weight_decay < 0:
        fail("train.weight_decay", f"must be >= 0, got {t.weight_decay}")
    if t.optimizer not in OPTIMIZERS:
        fail("train.optimizer", f"unknown optimizer {t.optimizer!r} (known: {', '.join(OPTIMIZERS)})")
    if t.schedule not in SCHEDULES:
        fail("train.schedule", f"unknown schedule {t.schedule!r} (known: {', '.join(SCHEDULES)})")
    if t.schedule == "step" and (any(not 0 < e < t.epochs for e in t.lr_drops) or t.lr_drops != sorted(t.lr_drops)):
        fail("train.lr_drops", f"must be increasing epochs inside (0, {t.epochs}), got {t.lr_drops}")
    if not 0 < t.lr_drop_factor <= 1:
        fail("train.lr_drop_factor", f"must be in (0, 1], got {t.lr_drop_factor}")
    if len(t.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in t.adam_betas):
        fail("train.adam_betas", f"must be two numbers in [0, 1), got {t.adam_betas}")
    if not t.adam_eps > 0:
        fail("train.adam_eps", f"must be positive, got {t.adam_eps}")
    if t.weight_decay_on not in DECAY_ON:
        fail("train.weight_decay_on", f"must be one of {', '.join(DECAY_ON)}, got {t.weight_decay_on!r}")
    if t.grad_clip is not None and not t.grad_clip > 0:
        fail("train.grad_clip", f"must be positive (or null: no clipping), got {t.grad_clip}")
    if not 0 <= t.warmup_epochs < t.epochs:
        fail("train.warmup_epochs", f"must be in [0, {t.epochs}), got {t.warmup_epochs}")
    if t.select not in SELECTIONS:
        fail("train.select", f"must be {' or '.join(repr(s) for s in SELECTIONS)}, got {t.select!r}")
    if t.precision not in PRECISIONS:
        fail("train.precision", f"must be one of {', '.join(PRECISIONS)}, got {t.precision!r}")
    if i.rounds < 1:
        fail("imp.rounds", f"must be at least 1 (round 0 is the dense network), got {i.rounds}")
    if not 0.0 <= i.rate < 1.0:  # 0: every round retrains the dense network (the stability analysis's copies)
        fail("imp.rate", f"must be in [0, 1), got {i.rate}")
    if i.retrain not in RETRAIN:
        fail("imp.retrain", f"unknown retraining {i.retrain!r} (known: {', '.join(RETRAIN)})")
    if not 0 <= i.rewind_epoch < t.epochs:
        fail("imp.rewind_epoch", f"must be in [0, train.epochs={t.epochs}), got {i.rewind_epoch}")
    if i.prune_linear and model_plugin is None and not _registry("model")[m.name].reads_prune_linear:
        fail(
            "imp.prune_linear",
            f"{m.name} says which of its layers are pruned (docs/imp.md, Transformers); leave it false",
        )
    if not 1 <= i.particles <= MAX_PARTICLES:
        fail("imp.particles", f"must be in [1, {MAX_PARTICLES}] (1: plain IMP), got {i.particles}")
    if i.soup not in SOUPS:
        fail("imp.soup", f"unknown soup {i.soup!r} (known: {', '.join(SOUPS)})")
    if not 0.0 < i.soup_bn_fraction <= 1.0:
        fail("imp.soup_bn_fraction", f"must be in (0, 1], got {i.soup_bn_fraction}")
    check_pool(job.pool, lambda key, message: fail(f"pool.{key}", message))


def _built_in(kind: str, name: str) -> bool:
    return name in _built_in_names(kind)


def _registry(section: str) -> dict:
    from lp_ray.data.registry import DATASETS
    from lp_ray.models import MODELS

    return MODELS if section == "model" else DATASETS


def check_plugin_options(plugin, options: dict[str, Any], where: str, section: str) -> dict[str, Any]:
    """A plugin's fields as it declares them: known keys, each value of its type and passing its check,
    the defaults filled in (so job.yaml records every value the plugin was called with)."""
    unknown = sorted(set(options) - set(plugin.fields))
    if unknown:
        known = ", ".join(sorted(plugin.fields)) or "none"
        raise SpecError(f"{where}: unknown key '{section}.{unknown[0]}' ({plugin.name}'s fields: {known})")
    out = {}
    for key, f in plugin.fields.items():
        value = _coerce(options[key], f.type, where, (section, key)) if key in options else f.default
        verdict = _run_check(f.check, value, plugin.module) if f.check is not None else True
        if verdict is not True and verdict is not None:
            message = verdict if isinstance(verdict, str) else f"{value!r} is not allowed"
            raise SpecError(f"{where}: {section}.{key}: {message}")
        out[key] = value
    return out


def _run_check(check: Callable, value: Any, module: str) -> Any:
    try:
        return check(value)
    except Exception as e:  # the plugin's own bug: one line naming it
        raise SpecError(f"{module}: the check of a field raised {type(e).__name__}: {e}") from None


def _record_plugin_versions(job: JobSpec, where: str) -> None:
    """Set job.plugin_versions to the code the job's plugin names resolve to now; a job that records other
    versions (a run directory's job.yaml whose plugin file was edited since) is an error."""
    from lp_ray.plugins.loading import versions_of

    try:
        now = versions_of([(MODEL, job.model.name), (DATASET, job.data.dataset)])
    except PluginError as e:
        raise SpecError(f"{where}: {e}") from None
    if job.plugin_versions and job.plugin_versions != now:
        k = next(k for k in sorted({*job.plugin_versions, *now}) if job.plugin_versions.get(k) != now.get(k))
        raise SpecError(
            f"{where}: plugin_versions: {k} was {job.plugin_versions.get(k, 'not a plugin')}, now it is "
            f"{now.get(k, 'not a plugin')}: restore the plugin the run was made with, or drop plugin_versions to start a new run"
        )
    job.plugin_versions = now


def check_pool(p: PoolSpec, fail: Fail) -> None:
    """The one set of rules for pool settings, from a spec file or from `lp-ray pool`'s options;
    `fail(field, message)` raises an error that names where the value came from."""
    from lp_ray.pool import searches
    from lp_ray.pool.methods import METHODS, known

    if p.method not in METHODS:
        fail("method", f"unknown method {p.method!r} (known: {known()})")
    if p.search not in searches.SEARCHES:
        fail("search", f"unknown search {p.search!r} (known: {searches.known()})")
    if not 0.0 < p.screen_fraction < 1.0:
        fail("screen_fraction", f"must be in (0, 1), got {p.screen_fraction}")
    if p.coefficients is not None and (not p.coefficients or any(not 0 < a < 1 for a in p.coefficients)):
        fail("coefficients", f"must be a non-empty list of numbers in (0, 1), got {p.coefficients}")
    if p.search_num is not None and p.search_num < 1:
        fail("search_num", f"must be at least 1, got {p.search_num}")
    if p.bn_samples is not None and p.bn_samples < 1:
        fail("bn_samples", f"must be at least 1, got {p.bn_samples}")
    if not 0.0 < p.ema_decay < 1.0:
        fail("ema_decay", f"must be in (0, 1), got {p.ema_decay}")
    if p.targets is not None and (not p.targets or any(t < 0 for t in p.targets)):
        fail("targets", f"must be a non-empty list of rounds (>= 0), got {p.targets}")


def check_cluster(c: ClusterSpec, where: str) -> None:
    def fail(key: str, message: str) -> None:
        raise SpecError(f"{where}: {key}: {message}")

    if c.num_workers < 1:
        fail("num_workers", f"must be at least 1, got {c.num_workers}")
    if not c.storage_path.strip():
        fail("storage_path", "must not be empty (a local path, an NFS mount or a URI such as s3://bucket/runs)")
    if c.placement_strategy not in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"):
        fail("placement_strategy", f"must be PACK, SPREAD, STRICT_PACK or STRICT_SPREAD, got {c.placement_strategy!r}")
    if c.address.startswith("ray://"):
        fail("address", "ray:// (Ray Client) is not supported for Ray Train; use 'auto' or host:port")
    if c.checkpoint_interval_s < 0:
        fail("checkpoint_interval_s", f"must be >= 0, got {c.checkpoint_interval_s}")
    if c.max_failures < 0:
        fail("max_failures", f"must be >= 0, got {c.max_failures}")
    if c.torch_threads < 1:
        fail("torch_threads", f"must be at least 1, got {c.torch_threads}")
    from lp_ray.spec import RUNTIME_ENV_KEYS

    for k in c.runtime_env:
        if k not in RUNTIME_ENV_KEYS:
            fail(f"runtime_env.{k}", f"unknown key (lp-ray passes on: {', '.join(RUNTIME_ENV_KEYS)})")
    env_vars = c.runtime_env.get("env_vars", {})
    if not isinstance(env_vars, dict) or not all(isinstance(v, str) for v in env_vars.values()):
        fail("runtime_env.env_vars", "must map names to strings")
    for k, v in {**c.resources_per_worker, **c.eval_resources}.items():
        if v < 0:
            fail(k, f"resources must be >= 0, got {v}")
