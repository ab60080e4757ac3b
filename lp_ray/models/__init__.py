"""Model registry: the one list of built-in model names. Each entry builds its network from
(num_classes, model spec, input shape), and says which `model` fields it reads beyond `name` and
`num_classes` and how they are checked. Names from plugins (lp_ray/plugins) resolve through `lookup`
beside these. Builders import torch when called: checking a job stays light."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lp_ray.errors import LpRayError
from lp_ray.spec import ModelSpec

if TYPE_CHECKING:
    import torch.nn as nn


def _conv1d(num_classes, spec, input_shape):
    from lp_ray.models.conv1d import Conv1dBN

    return Conv1dBN(num_classes, spec.width, input_shape[-1])


def _check_width(m: ModelSpec, fail) -> None:
    if m.width < 1:
        fail("width", f"must be at least 1, got {m.width}")


def _resnet18(num_classes, spec, input_shape):
    from lp_ray.models.cifar_resnet import resnet18

    return resnet18(num_classes)


def _vgg16(num_classes, spec, input_shape):
    from lp_ray.models.vgg import vgg16_bn

    return vgg16_bn(num_classes)


def _vgg16_avgpool(num_classes, spec, input_shape):
    from lp_ray.models.vgg import vgg16_bn_avgpool

    return vgg16_bn_avgpool(num_classes)


def _imagenet(depth):
    def build(num_classes, spec, input_shape):
        from lp_ray.data.imagenet import require_torchvision

        tv = require_torchvision()
        return getattr(tv.models, f"resnet{depth}")(num_classes=num_classes)

    return build


def _vit(num_classes, spec, input_shape):
    from lp_ray.models.vit import ViT

    return ViT(
        num_classes,
        tuple(input_shape),
        spec.width,
        spec.depth,
        spec.heads,
        spec.patch_size,
        spec.mlp_ratio,
        spec.pooling,
    )


def _vit_prunable(network):
    from lp_ray.models.vit import prunable

    return prunable(network)


VIT_POOLINGS = ("cls", "mean")  # model.pooling: the one list of its values


def _check_vit(m: ModelSpec, fail) -> None:
    _check_width(m, fail)
    for key in ("depth", "heads", "patch_size"):
        if getattr(m, key) < 1:
            fail(key, f"must be at least 1, got {getattr(m, key)}")
    if m.width % m.heads:
        fail("heads", f"must divide width={m.width}, got {m.heads}")
    if not m.mlp_ratio > 0:
        fail("mlp_ratio", f"must be positive, got {m.mlp_ratio}")
    if m.pooling not in VIT_POOLINGS:
        fail("pooling", f"must be {' or '.join(repr(p) for p in VIT_POOLINGS)}, got {m.pooling!r}")


def _no_fields(m: ModelSpec, fail) -> None:
    pass


@dataclass(frozen=True)
class Model:
    build: Callable[..., nn.Module]  # (num_classes, spec, input shape) -> the network
    fields: tuple[str, ...] = ()  # the ModelSpec fields it reads beyond name and num_classes
    check: Callable = _no_fields  # check(spec, fail(field, message))
    # prunable(network) -> the tensors IMP prunes; None: lp-ray's rule (sparsity.prunable_names)
    prunable: Callable[[nn.Module], list[str]] | None = None
    # Whether imp.prune_linear means anything to it (a model with its own prunable rule decides alone).
    reads_prune_linear: bool = True

    def reads(self, field_name: str) -> bool:
        return field_name in ("name", "num_classes") or field_name in self.fields


MODELS: dict[str, Model] = {
    "conv1d": Model(_conv1d, ("width",), _check_width),
    "cifar_resnet18": Model(_resnet18),
    "cifar_vgg16": Model(_vgg16),
    "cifar_vgg16_avgpool": Model(_vgg16_avgpool),
    "imagenet_resnet18": Model(_imagenet(18)),
    "imagenet_resnet34": Model(_imagenet(34)),
    "vit": Model(
        _vit,
        ("width", "depth", "heads", "patch_size", "mlp_ratio", "pooling"),
        _check_vit,
        prunable=_vit_prunable,
        reads_prune_linear=False,
    ),
}


def lookup(name: str) -> Model:
    """The built-in model `name`, or the plugin registered as `name` (its fields in spec.options)."""
    if name in MODELS:
        return MODELS[name]
    from lp_ray.plugins import MODEL
    from lp_ray.plugins.loading import find, plugin_names

    plugin = find(MODEL, name)
    if plugin is None:
        raise LpRayError(f"unknown model {name!r} (known: {', '.join(sorted({*MODELS, *plugin_names(MODEL)}))})")

    def build(num_classes, spec, input_shape):
        from lp_ray.plugins.checks import call_plugin, checked_network

        what = f"model {name!r} ({plugin.module})"
        return checked_network(name, call_plugin(what, plugin.build, num_classes, tuple(input_shape), **spec.options))

    return Model(build, tuple(plugin.fields), prunable=plugin.prunable)


def build_model(spec: ModelSpec, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    return lookup(spec.name).build(spec.num_classes or num_classes, spec, input_shape)


def prunable_tensors(spec: ModelSpec, model: nn.Module, prune_linear: bool) -> list[str]:
    """The names of the network's tensors that IMP prunes: the model's own say where it has one (a
    plugin's `prunable`), else every Conv weight, and Linear weights with imp.prune_linear."""
    rule = lookup(spec.name).prunable
    if rule is None:
        from lp_ray.sparsity import prunable_names

        return prunable_names(model, prune_linear)
    from lp_ray.plugins.checks import checked_prunable

    return checked_prunable(spec.name, model, rule)
