import pytest
import torch

from lp_ray.models import build_model
from lp_ray.sparsity import prunable_names
from lp_ray.spec import ModelSpec


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    "name, classes, shape, count",
    [
        ("conv1d", 10, (40,), 28682),
        ("cifar_resnet18", 10, (3, 32, 32), 11173962),
        ("cifar_resnet18", 100, (3, 32, 32), 11220132),
        ("cifar_vgg16", 10, (3, 32, 32), 14728266),
    ],
)
def test_parameter_counts_pinned(name, classes, shape, count):
    m = build_model(ModelSpec(name=name), classes, shape)
    assert n_params(m) == count
    out = m(torch.zeros(2, *shape))
    assert out.shape == (2, classes)


def test_conv1d_layout_and_prunable_layers():
    m = build_model(ModelSpec(name="conv1d", width=64), 10, (40,))
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv1d)]
    assert [(c.kernel_size[0], c.stride[0], c.out_channels) for c in convs] == [(5, 2, 64), (3, 2, 64), (3, 2, 64)]
    assert sum(isinstance(mod, torch.nn.BatchNorm1d) for mod in m.modules()) == 3
    assert prunable_names(m) == ["features.0.weight", "features.3.weight", "features.6.weight"]
    assert "classifier.weight" in prunable_names(m, prune_linear=True)


def test_resnet18_has_cifar_stem():
    m = build_model(ModelSpec(name="cifar_resnet18"), 10, (3, 32, 32))
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
    assert not any(isinstance(mod, torch.nn.MaxPool2d) for mod in m.modules())
