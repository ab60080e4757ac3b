"""A plugin's results held against the contract (lp_ray/plugins/__init__.py), so that a plugin that
returns the wrong thing is one `error:` line naming it, before a run directory, an MLflow run or a
Ray worker exists, rather than a shape error deep inside a Ray Train worker."""

from __future__ import annotations

from typing import Any

from lp_ray.plugins import DatasetPlugin, PluginError, Splits


def call_plugin(what: str, fn, *args, **kwargs) -> Any:
    """A plugin's function, its exception as one line naming the plugin."""
    try:
        return fn(*args, **kwargs)
    except PluginError:
        raise
    except Exception as e:
        text = (str(e).strip().splitlines() or [""])[0]
        raise PluginError(f"{what} raised {type(e).__name__}{': ' + text if text else ''}") from None


def checked_splits(plugin: DatasetPlugin, arguments: dict) -> tuple[Splits, tuple[Any, Any]]:
    """The plugin's Splits and its (train, test) parts, each an `(x, y)` pair of tensors or a map-style
    Dataset; `splits.input_shape` is filled in from the first example when the plugin left it out."""
    import torch

    what = f"data set {plugin.name!r} ({plugin.module})"
    splits = call_plugin(what, plugin.load, **arguments)
    if not isinstance(splits, Splits):
        raise PluginError(f"{what} returned {type(splits).__name__}, not lp_ray.plugins.Splits")
    k = splits.num_classes
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise PluginError(f"{what}: num_classes must be an integer >= 2, got {k!r}")
    if splits.augment is not None and not callable(splits.augment):
        raise PluginError(f"{what}: augment must be a function (x_batch, generator) -> x_batch or None")
    parts, shapes = [], []
    for label, part in (("train", splits.train), ("test", splits.test)):
        if isinstance(part, (tuple, list)) and len(part) == 2 and all(isinstance(t, torch.Tensor) for t in part):
            x, y = part
            if not x.is_floating_point() or x.dim() < 2:
                raise PluginError(
                    f"{what}: {label} x must be a float tensor, one example per row, got {x.dtype} {tuple(x.shape)}"
                )
            if y.dtype != torch.int64 or y.dim() != 1 or len(y) != len(x):
                raise PluginError(
                    f"{what}: {label} y must be int64 class indices, one per row of x, got {y.dtype} {tuple(y.shape)}"
                )
            part, first, labels = (x, y), x[0], y
        elif isinstance(part, torch.utils.data.Dataset) and hasattr(part, "__len__"):
            first_pair = call_plugin(f"{what}: {label}[0]", part.__getitem__, 0) if len(part) else None
            if not isinstance(first_pair, (tuple, list)) or len(first_pair) != 2:
                raise PluginError(f"{what}: {label}[0] must be an (x, y) pair, got {type(first_pair).__name__}")
            first, labels = torch.as_tensor(first_pair[0]), torch.as_tensor([int(first_pair[1])])
        else:
            raise PluginError(
                f"{what}: {label} must be an (x, y) pair of tensors or a map-style Dataset, got {type(part).__name__}"
            )
        if len(part[1] if isinstance(part, tuple) else part) == 0:
            raise PluginError(f"{what}: {label} has no examples")
        if labels.min() < 0 or labels.max() >= k:
            raise PluginError(
                f"{what}: {label} labels must be in [0, {k}), got {int(labels.min())}..{int(labels.max())}"
            )
        parts.append(part)
        shapes.append(tuple(first.shape))
    if shapes[0] != shapes[1]:
        raise PluginError(f"{what}: train examples are {shapes[0]} but test examples are {shapes[1]}")
    if splits.input_shape is not None and tuple(splits.input_shape) != shapes[0]:
        raise PluginError(f"{what}: input_shape says {tuple(splits.input_shape)} but the examples are {shapes[0]}")
    splits.input_shape = shapes[0]
    return splits, (parts[0], parts[1])


def checked_network(name: str, model: Any):
    import torch.nn as nn

    if not isinstance(model, nn.Module):
        raise PluginError(f"model {name!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def checked_prunable(name: str, model, rule) -> list[str]:
    names = call_plugin(f"model {name!r}: prunable", rule, model)
    state = model.state_dict()
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        raise PluginError(f"model {name!r}: prunable must return a non-empty list of state-dict names, got {names!r}")
    for n in names:
        if n not in state or not state[n].is_floating_point():
            raise PluginError(
                f"model {name!r}: prunable names {n!r}, which is not a floating-point tensor of its state dict"
            )
    if len(set(names)) != len(names):
        raise PluginError(f"model {name!r}: prunable names a tensor twice")
    return sorted(names)
