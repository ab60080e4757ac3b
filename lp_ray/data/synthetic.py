"""Random tensors of any shape, for tests and benchmarks. Labels come from a fixed random linear map of
the inputs, so a network can actually learn them. (torch is imported inside the loader.)"""

from __future__ import annotations

from lp_ray.spec import DataSpec

FIELDS = ("shape", "num_classes", "num_train", "num_test")


def check(d: DataSpec, fail) -> None:
    if not d.shape or not d.num_classes:
        fail("shape", "the synthetic data set needs data.shape and data.num_classes")


def load(spec: DataSpec, run):
    import torch

    from lp_ray.data.base import TensorSource

    shape, k = tuple(spec.shape), spec.num_classes
    gen = torch.Generator().manual_seed(1234)
    n = spec.num_train + spec.num_test
    x = torch.randn((n, *shape), generator=gen)
    w = torch.randn((x[0].numel(), k), generator=gen)
    y = (x.flatten(1) @ w).argmax(1)
    train = TensorSource(x[: spec.num_train], y[: spec.num_train], k)
    test = TensorSource(x[spec.num_train :], y[spec.num_train :], k)
    return train, test, k, shape
