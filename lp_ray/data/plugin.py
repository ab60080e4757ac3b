"""A data set from a plugin (lp_ray.plugins.register_dataset) as lp-ray's sources: its splits are
checked against the contract (lp_ray/plugins/checks.py), then served like a built-in data set's.
A plugin's loader is called once per process and set of fields; what it returns is lp-ray's to split,
order, shard and augment (with `data.augment`)."""

from __future__ import annotations

from lp_ray.spec import DataSpec

_LOADED: dict[tuple, tuple] = {}


def plugin_parts(name: str, known) -> tuple:
    """What data/registry.py's DataSet holds, for the plugin registered as `name`: its fields, check,
    load, preflight and shape (`known`: the built-in names, for the message of an unknown one)."""
    from lp_ray.errors import LpRayError
    from lp_ray.plugins import DATASET
    from lp_ray.plugins.loading import find, plugin_names

    plugin = find(DATASET, name)
    if plugin is None:
        raise LpRayError(f"unknown data set {name!r} (known: {', '.join(sorted({*known, *plugin_names(DATASET)}))})")

    def load(spec: DataSpec, run=None):
        return _sources(plugin, spec)

    def preflight(spec: DataSpec) -> None:
        _sources(plugin, spec)  # loads and checks; writes nothing

    def shape(spec: DataSpec) -> tuple:
        _, _, classes, input_shape = _sources(plugin, spec)
        return classes, input_shape

    reads = (*plugin.fields, *(["path"] if plugin.reads_path else []))
    return tuple(reads), lambda spec, fail: None, load, preflight, shape


def _sources(plugin, spec: DataSpec) -> tuple:
    from lp_ray.data.base import DatasetSource, TensorSource
    from lp_ray.plugins.checks import checked_splits
    from lp_ray.plugins.loading import identity

    given = {**spec.options, **({"path": spec.path} if plugin.reads_path else {})}
    key = (plugin.name, identity(plugin), repr(sorted(given.items())), spec.augment)
    if key not in _LOADED:
        splits, (train, test) = checked_splits(plugin, given)
        augmentation = splits.augment if spec.augment else None

        def source(part, augment):
            if isinstance(part, tuple):
                return TensorSource(part[0], part[1], splits.num_classes, augment)
            return DatasetSource(part, splits.num_classes, augment)

        _LOADED[key] = (source(train, augmentation), source(test, None), splits.num_classes, splits.input_shape)
    return _LOADED[key]
