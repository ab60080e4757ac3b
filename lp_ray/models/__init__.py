"""Model registry: the one list of model names. Each entry builds its network from
(num_classes, model spec, input shape), and says which `model` fields it reads beyond `name` and
`num_classes` and how they are checked. Builders import torch when called: checking a job stays light."""

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


def build_model(spec: ModelSpec, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    if spec.name not in MODELS:
        raise LpRayError(f"unknown model {spec.name!r} (known: {', '.join(sorted(MODELS))})")
    return MODELS[spec.name].build(spec.num_classes or num_classes, spec, input_shape)
