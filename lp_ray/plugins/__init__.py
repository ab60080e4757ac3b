"""Your own networks and data sets (docs/plugins.md): the contract a plugin module writes against.

A plugin is a module that registers names with the two decorators below. lp-ray imports it only
when a job declares it (`plugins: [my_nets]`, a file beside the job) or when a job names one of the
entry points of an installed package (groups `lp_ray.models` and `lp_ray.datasets`); only registered
names resolve. What a plugin provides is the smallest the pipeline needs: a network builder, or a
data set's train and test splits. Splitting, seeding, sharding, data order, caching, BatchNorm
recalibration and evaluation stay lp-ray's.

    from lp_ray.plugins import Field, Splits, register_dataset, register_model

    @register_model("mlp", fields={"hidden": Field(int, 128, check=lambda v: v >= 1 or "must be >= 1")})
    def mlp(num_classes, input_shape, hidden):
        import math, torch.nn as nn
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.ReLU(),
                             nn.Linear(hidden, num_classes))

Nothing here imports torch: a job is checked without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lp_ray.errors import LpRayError

MODEL = "model"
DATASET = "dataset"
KINDS = (MODEL, DATASET)
# The entry-point group an installed package declares each kind in (pyproject.toml:
# [project.entry-points."lp_ray.models"] resnet20 = "my_package.models:resnet20").
ENTRY_POINT_GROUPS = {MODEL: "lp_ray.models", DATASET: "lp_ray.datasets"}


class PluginError(LpRayError):
    """A plugin that cannot be used: missing, failing to import, breaking the contract."""


@dataclass(frozen=True)
class Field:
    """One field a plugin reads from its section of the job (`model:` or `data:`), beside `name` /
    `dataset`. `type`: int, float, str, bool, or list[int] / list[float] / list[str]; `check(value)`
    returns True (or None) when the value is fine, else False or a message ("must be >= 1")."""

    type: Any
    default: Any
    check: Callable[[Any], bool | str | None] | None = None
    help: str = ""


@dataclass
class Splits:
    """What a data set plugin returns. `train` and `test` are each `(x, y)` tensors (x float with one
    example per row, y int64 class indices) or a map-style `torch.utils.data.Dataset` returning
    `(x, y)` pairs, for data that does not fit in memory. lp-ray carves its seeded validation split out
    of `train`; `test` is only used to report. `input_shape`: one example's shape (default: read from
    the first example). `augment(x_batch, generator) -> x_batch`: a training-time augmentation on a
    batch, drawing randomness only from `generator` (so a run is reproducible)."""

    train: Any
    test: Any
    num_classes: int
    input_shape: tuple[int, ...] | None = None
    augment: Callable | None = None


@dataclass(frozen=True)
class ModelPlugin:
    name: str
    # build(num_classes, input_shape, **fields) -> torch.nn.Module
    build: Callable[..., Any]
    fields: dict[str, Field]
    # prunable(model) -> names of the state-dict tensors IMP prunes; None: every Conv weight, and every
    # Linear weight where the job says imp.prune_linear (lp-ray's rule for its own networks)
    prunable: Callable[[Any], list[str]] | None
    module: str  # the module that registered it


@dataclass(frozen=True)
class DatasetPlugin:
    name: str
    load: Callable[..., Splits]  # load(**fields) -> Splits; with reads_path, load(path, **fields)
    fields: dict[str, Field]
    module: str
    # The data's location is lp-ray's `data.path` (absolute by the time the plugin sees it), outside the
    # run hash as for built-in data sets: moving the files does not make a new run.
    reads_path: bool = False


# (kind, name) -> the plugin, for every module imported so far (lp_ray.plugins.loading decides which)
REGISTERED: dict[tuple[str, str], ModelPlugin | DatasetPlugin] = {}


def _register(kind: str, plugin: ModelPlugin | DatasetPlugin) -> None:
    """Record a name. (Whether it takes a built-in name, or a field takes one of lp-ray's, is checked
    where a job uses it: spec_loading.py.)"""
    old = REGISTERED.get((kind, plugin.name))
    if old is not None and old.module != plugin.module:
        raise PluginError(
            f"{kind} {plugin.name!r} is registered by two modules, {old.module} and {plugin.module}; rename one"
        )
    REGISTERED[kind, plugin.name] = plugin


def _check_fields(name: str, fields: dict[str, Field] | None) -> dict[str, Field]:
    fields = dict(fields or {})
    for key, f in fields.items():
        if not isinstance(f, Field):
            raise PluginError(f"{name}: field {key!r} must be a lp_ray.plugins.Field, got {type(f).__name__}")
        if not isinstance(key, str) or not key.isidentifier():
            raise PluginError(f"{name}: {key!r} cannot be a field name (a Python identifier is)")
    return fields


def register_model(
    name: str, *, fields: dict[str, Field] | None = None, prunable: Callable[[Any], list[str]] | None = None
):
    """Decorator: `fn(num_classes, input_shape, **fields) -> nn.Module` becomes the model `name`."""

    def register(fn):
        checked = _check_fields(name, fields)
        _register(MODEL, ModelPlugin(name, fn, checked, prunable, fn.__module__))
        return fn

    return register


def register_dataset(name: str, *, fields: dict[str, Field] | None = None, reads_path: bool = False):
    """Decorator: `fn(**fields) -> Splits` becomes the data set `name`; with `reads_path`, `fn(path,
    **fields)` gets the job's `data.path` (None when the job sets none)."""

    def register(fn):
        checked = _check_fields(name, fields)
        _register(DATASET, DatasetPlugin(name, fn, checked, fn.__module__, reads_path))
        return fn

    return register


__all__ = ["Field", "Splits", "register_model", "register_dataset", "PluginError", "ModelPlugin", "DatasetPlugin"]
