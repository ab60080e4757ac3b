"""The two steps every run takes with its data: the driver materializes the data set and its split into
the run directory once (`materialize_data`); workers and evaluators load them from there (`load_data`).
Which data sets exist, and how each loads, is the registry's (`data/registry.py`)."""

from __future__ import annotations

from safetensors.torch import save as st_save

from lp_ray import layout
from lp_ray.data.base import DataBundle, make_split
from lp_ray.data.registry import lookup
from lp_ray.data.run_files import read_tensors
from lp_ray.errors import LpRayError
from lp_ray.spec import JobSpec


def materialize_data(job: JobSpec, run) -> DataBundle:
    """Driver side: build (or find) everything the run's data needs in the run directory, so workers on
    any node read the same examples and the same validation split forever after."""
    return load_data(job, run, create=True)


def load_sources(job: JobSpec, run) -> tuple:
    """The data set's train and test sources, class count and input shape, without the split (what an
    import needs to check tickets before it writes anything)."""
    return lookup(job.data.dataset).load(job.data, run)


_CACHE: dict[tuple, DataBundle] = {}


def load_data(job: JobSpec, run, create: bool = False) -> DataBundle:
    key = (run.uri, repr(job.data))
    if key in _CACHE:
        return _CACHE[key]
    train, test, num_classes, input_shape = load_sources(job, run)
    if run.exists(layout.SPLIT):
        split = read_tensors(run, layout.SPLIT, ("train_idx", "val_idx"))
        train_idx, val_idx = split["train_idx"], split["val_idx"]
        if len(train_idx) + len(val_idx) != len(train):
            raise LpRayError(
                f"{run.path(layout.SPLIT)}: the stored split covers {len(train_idx) + len(val_idx)} examples "
                f"but the training set has {len(train)}: the data set changed under this run"
            )
    elif create:
        train_idx, val_idx = make_split(len(train), job.data.val_fraction, job.data.split_seed)
        run.write_bytes(layout.SPLIT, st_save({"train_idx": train_idx, "val_idx": val_idx}))
    else:
        raise LpRayError(f"{run.path(layout.SPLIT)}: missing; run `lp-ray imp` on this run first")
    bundle = DataBundle(train, test, train_idx, val_idx, num_classes, input_shape)
    _CACHE[key] = bundle
    return bundle
