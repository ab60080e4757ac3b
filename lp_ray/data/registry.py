"""The data-set registry, and the two steps every run takes: the driver materializes the data set and
its split into the run directory once; workers and evaluators load them from there."""

from __future__ import annotations

from collections.abc import Callable

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from lp_ray.data.base import DataBundle, make_split
from lp_ray.errors import LpRayError
from lp_ray.spec import JobSpec

SPLIT_FILE = "split.safetensors"
GENERATED_FILE = "dataset.safetensors"


def _mnist1d(job: JobSpec, run) -> tuple:
    from lp_ray.data import mnist1d

    return mnist1d.load(job.data, run)


def _cifar(job: JobSpec, run) -> tuple:
    from lp_ray.data import cifar

    return cifar.load(job.data)


def _imagenet(job: JobSpec, run) -> tuple:
    from lp_ray.data import imagenet

    return imagenet.load(job.data)


def _synthetic(job: JobSpec, run) -> tuple:
    from lp_ray.data import synthetic

    return synthetic.load(job.data)


# name -> loader returning (train source, test source, num_classes, input shape)
DATASETS: dict[str, Callable] = {
    "mnist1d": _mnist1d,
    "cifar10": _cifar,
    "cifar100": _cifar,
    "imagenet": _imagenet,
    "synthetic": _synthetic,
}


def preflight(job: JobSpec) -> None:
    """Cheap checks that a data set is there, made before a run directory or MLflow run is created,
    so a missing archive leaves nothing half-made behind."""
    if job.data.dataset in ("cifar10", "cifar100"):
        from lp_ray.data.cifar import archive_path

        archive_path(job.data, job.data.dataset)
    elif job.data.dataset == "imagenet":
        from pathlib import Path

        from lp_ray.data.imagenet import require_torchvision

        require_torchvision()
        if job.data.path is None or not (Path(job.data.path) / "train").is_dir():
            raise LpRayError(f"data.path={job.data.path!r}: no ImageNet train/ folder there")


def materialize_data(job: JobSpec, run) -> DataBundle:
    """Driver side: build (or find) everything the run's data needs in the run directory, so workers on
    any node read the same examples and the same validation split forever after."""
    return load_data(job, run, create=True)


_CACHE: dict[tuple, DataBundle] = {}


def load_data(job: JobSpec, run, create: bool = False) -> DataBundle:
    key = (run.uri, job.data.dataset, job.data.path, job.data.num_samples, job.data.augment)
    if key in _CACHE:
        return _CACHE[key]
    train, test, num_classes, input_shape = DATASETS[job.data.dataset](job, run)
    if run.exists(SPLIT_FILE):
        split = st_load(run.read_bytes(SPLIT_FILE))
        train_idx, val_idx = split["train_idx"], split["val_idx"]
        if len(train_idx) + len(val_idx) != len(train):
            raise LpRayError(
                f"{run.path(SPLIT_FILE)}: the stored split covers {len(train_idx) + len(val_idx)} examples "
                f"but the training set has {len(train)}: the data set changed under this run"
            )
    elif create:
        train_idx, val_idx = make_split(len(train), job.data.val_fraction, job.data.split_seed)
        run.write_bytes(SPLIT_FILE, st_save({"train_idx": train_idx, "val_idx": val_idx}))
    else:
        raise LpRayError(f"{run.path(SPLIT_FILE)}: missing; run `lp-ray imp` on this run first")
    bundle = DataBundle(train, test, train_idx, val_idx, num_classes, input_shape)
    _CACHE[key] = bundle
    return bundle


def generated_tensors(run, build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Generated data sets are built once and stored with the run, so a package upgrade never
    changes the examples of an existing run."""
    if run.exists(GENERATED_FILE):
        return st_load(run.read_bytes(GENERATED_FILE))
    tensors = build()
    run.write_bytes(GENERATED_FILE, st_save(tensors))
    return tensors
