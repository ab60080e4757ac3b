"""Model registry: name -> builder(num_classes, spec)."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from lp_ray.errors import LpRayError
from lp_ray.spec import ModelSpec


def _conv1d(num_classes, spec, input_shape):
    from lp_ray.models.conv1d import Conv1dBN

    return Conv1dBN(num_classes, spec.width, input_shape[-1])


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


MODELS: dict[str, Callable[..., nn.Module]] = {
    "conv1d": _conv1d,
    "cifar_resnet18": _resnet18,
    "cifar_vgg16": _vgg16,
    "cifar_vgg16_avgpool": _vgg16_avgpool,
    "imagenet_resnet18": _imagenet(18),
    "imagenet_resnet34": _imagenet(34),
}


def build_model(spec: ModelSpec, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    if spec.name not in MODELS:
        raise LpRayError(f"unknown model {spec.name!r} (known: {', '.join(sorted(MODELS))})")
    return MODELS[spec.name](spec.num_classes or num_classes, spec, input_shape)
