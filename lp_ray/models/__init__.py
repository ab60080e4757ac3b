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


def _no_fields(m: ModelSpec, fail) -> None:
    pass


@dataclass(frozen=True)
class Model:
    build: Callable[..., nn.Module]  # (num_classes, spec, input shape) -> the network
    fields: tuple[str, ...] = ()  # the ModelSpec fields it reads beyond name and num_classes
    check: Callable = _no_fields  # check(spec, fail(field, message))
    # prunable(network) -> the tensors IMP prunes; None: lp-ray's rule (sparsity.prunable_names)
    prunable: Callable[[nn.Module], list[str]] | None = None

    def reads(self, field_name: str) -> bool:
        return field_name in ("name", "num_classes") or field_name in self.fields


MODELS: dict[str, Model] = {
    "conv1d": Model(_conv1d, ("width",), _check_width),
    "cifar_resnet18": Model(_resnet18),
    "cifar_vgg16": Model(_vgg16),
    "cifar_vgg16_avgpool": Model(_vgg16_avgpool),
    "imagenet_resnet18": Model(_imagenet(18)),
    "imagenet_resnet34": Model(_imagenet(34)),
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
