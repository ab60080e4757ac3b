"""The data files a run directory stores: its train/validation split, and a generated data set's
examples (so a package upgrade never changes an existing run's data)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from lp_ray import layout
from lp_ray.data import generated_cache
from lp_ray.errors import LpRayError


def read_tensors(run, rel: str, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """A safetensors file the run wrote once (its split, its generated data), with the tensors it must
    hold; corrupt bytes or a different file are one error naming it."""
    try:
        tensors = st_load(run.read_bytes(rel))
    except LpRayError:
        raise
    except Exception as e:  # safetensors raises several types on bad bytes
        raise LpRayError(f"{run.path(rel)}: corrupt or truncated ({str(e).splitlines()[0]}); restore it") from None
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise LpRayError(f"{run.path(rel)}: not this run's {rel} (no {missing[0]} tensor); restore it")
    return tensors


def generated_tensors(
    run, dataset: str, inputs: dict, build: Callable[[], dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Generated data sets are built once and stored with the run, so a package upgrade never
    changes the examples of an existing run. A new run takes them from this machine's cache when an
    earlier run generated the same `inputs` (everything `build` reads), else builds and caches them."""
    if run.exists(layout.DATASET):
        return read_tensors(run, layout.DATASET, ("x_train", "y_train", "x_test", "y_test"))
    tensors = generated_cache.get(dataset, inputs)
    if tensors is None:
        tensors = build()
        generated_cache.put(dataset, inputs, tensors)
    run.write_bytes(layout.DATASET, st_save(tensors))
    return tensors
