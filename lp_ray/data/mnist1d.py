"""MNIST-1D (Greydanus 2020), generated offline with the mnist1d package's `make_dataset`
(never its download path). The package splits 80% train / 20% test."""

from __future__ import annotations

import torch

from lp_ray.data.base import TensorSource
from lp_ray.spec import DataSpec


def load(spec: DataSpec, run):
    from lp_ray.data.registry import generated_tensors

    t = generated_tensors(run, lambda: _generate(spec.num_samples))
    train = TensorSource(t["x_train"], t["y_train"], 10)
    test = TensorSource(t["x_test"], t["y_test"], 10)
    return train, test, 10, tuple(t["x_train"].shape[1:])


def _generate(num_samples: int) -> dict[str, torch.Tensor]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    d = make_dataset(args)
    return {
        "x_train": torch.tensor(d["x"], dtype=torch.float32),
        "y_train": torch.tensor(d["y"], dtype=torch.int64),
        "x_test": torch.tensor(d["x_test"], dtype=torch.float32),
        "y_test": torch.tensor(d["y_test"], dtype=torch.int64),
    }
