"""MNIST-1D (Greydanus 2020), generated offline with the mnist1d package's `make_dataset` (never its
download path), with the job's generator arguments. The package splits 80% train / 20% test of
`num_samples`; a job that gives `train_size` and `test_size` gets exactly those."""

from __future__ import annotations

import torch

from lp_ray.data.base import TensorSource
from lp_ray.spec import DataSpec


def load(spec: DataSpec, run):
    from lp_ray.data.registry import generated_tensors

    t = generated_tensors(run, lambda: _generate(spec))
    train = TensorSource(t["x_train"], t["y_train"], 10)
    test = TensorSource(t["x_test"], t["y_test"], 10)
    return train, test, 10, tuple(t["x_train"].shape[1:])


def _generate(spec: DataSpec) -> dict[str, torch.Tensor]:
    import dataclasses

    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    for k, v in dataclasses.asdict(spec.generator).items():
        setattr(args, k, v)
    if spec.train_size is None:
        args.num_samples = spec.num_samples
    else:
        args.num_samples = spec.train_size + spec.test_size
        # The package splits at int(n * train_split): aim half an example past the boundary so float
        # rounding cannot move it.
        args.train_split = (spec.train_size + 0.5) / args.num_samples
    d = make_dataset(args)
    out = {
        "x_train": torch.tensor(d["x"], dtype=torch.float32),
        "y_train": torch.tensor(d["y"], dtype=torch.int64),
        "x_test": torch.tensor(d["x_test"], dtype=torch.float32),
        "y_test": torch.tensor(d["y_test"], dtype=torch.int64),
    }
    if spec.train_size is not None:
        assert (len(out["y_train"]), len(out["y_test"])) == (spec.train_size, spec.test_size)
    return out
