"""MNIST-1D (Greydanus 2020), generated offline with the mnist1d package's `make_dataset` (never its
download path), with the job's generator arguments. The package splits 80% train / 20% test of
`num_samples`; a job that gives `train_size` and `test_size` gets exactly those. (torch is imported
inside the loader: the registry and its checks stay light.)"""

from __future__ import annotations

from lp_ray.spec import DataSpec

FIELDS = ("num_samples", "train_size", "test_size", "generator")


def check(d: DataSpec, fail) -> None:
    if d.num_samples < 100:
        fail("num_samples", f"must be at least 100, got {d.num_samples}")
    if (d.train_size is None) != (d.test_size is None):
        fail("train_size", "give both data.train_size and data.test_size, or neither")
    if d.train_size is not None:
        if d.num_samples != DataSpec.num_samples:
            fail("num_samples", "set either data.num_samples or data.train_size and data.test_size")
        if d.train_size < 20 or d.test_size < 10:
            fail("train_size", f"need at least 20 train and 10 test examples, got {d.train_size}, {d.test_size}")
        if (d.train_size + d.test_size) % 10:
            fail(
                "test_size",
                f"train_size + test_size must be a multiple of 10 (examples per class), got {d.train_size + d.test_size}",
            )
    g = d.generator
    if g.template_len < 1 or g.final_seq_length < 8 or len(g.padding) != 2 or g.max_translation < 0:
        fail("generator", "template_len >= 1, final_seq_length >= 8, padding [lo, hi], max_translation >= 0")
    if min(g.scale_coeff, g.corr_noise_scale, g.iid_noise_scale, g.shear_scale) < 0:
        fail("generator", "scales must be >= 0")


def load(spec: DataSpec, run):
    from lp_ray.data.base import TensorSource
    from lp_ray.data.run_files import generated_tensors

    t = generated_tensors(run, "mnist1d", generator_inputs(spec), lambda: generate(spec))
    train = TensorSource(t["x_train"], t["y_train"], 10)
    test = TensorSource(t["x_test"], t["y_test"], 10)
    return train, test, 10, tuple(t["x_train"].shape[1:])


def generator_inputs(spec: DataSpec) -> dict:
    """Everything `generate` reads, and the version of the package that does the generating: what a
    cached copy of the examples must match (data/generated_cache.py)."""
    import dataclasses
    from importlib.metadata import version

    return {
        **{k: v for k, v in dataclasses.asdict(spec).items() if k in FIELDS},
        "package": f"mnist1d {version('mnist1d')}",
    }


def generate(spec: DataSpec) -> dict:
    import dataclasses

    import torch
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
