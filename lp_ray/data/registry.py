"""The data-set registry: the one list of data-set names, and for each what it reads and checks.

Each data set is one module (`data/<name>.py`) that owns the fields of the job's `data` section it reads
(FIELDS, beside the common ones below), their checks (`check`), a cheap look for its files before
anything starts (`preflight`) and its loader (`load`). A new data set is its module plus a line here.
Nothing here imports torch (the loaders import it when called): checking a job stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lp_ray.data import cifar, imagenet, mnist1d, synthetic
from lp_ray.spec import DataSpec, JobSpec

# Fields of the data section every data set reads: which one, and how its validation split is carved.
COMMON_FIELDS = ("dataset", "val_fraction", "split_seed")


def _nothing_to_find(spec: DataSpec) -> None:
    """Generated in the run directory: nothing to find beforehand."""


@dataclass(frozen=True)
class DataSet:
    fields: tuple[str, ...]  # the DataSpec fields it reads, beyond COMMON_FIELDS
    # check(spec, fail): its fields' rules; fail(field, message) raises a SpecError naming the source
    check: Callable
    # load(job, run directory) -> (train source, test source, num_classes, input shape)
    load: Callable
    # a cheap check that the data is there, made before anything is started or written
    preflight: Callable[[DataSpec], None] = _nothing_to_find
    # shape(spec) -> (classes, one example's shape) without loading: what a plugin network is checked on
    shape: Callable[[DataSpec], tuple[int, tuple[int, ...]]] | None = None

    def reads(self, field_name: str) -> bool:
        return field_name in COMMON_FIELDS or field_name in self.fields


def _fixed(classes: int, shape: tuple[int, ...]) -> Callable:
    return lambda spec: (classes, shape)


DATASETS: dict[str, DataSet] = {
    "mnist1d": DataSet(
        mnist1d.FIELDS, mnist1d.check, mnist1d.load, shape=lambda s: (10, (s.generator.final_seq_length,))
    ),
    "cifar10": DataSet(cifar.FIELDS, cifar.check, cifar.load, cifar.preflight, _fixed(10, (3, 32, 32))),
    "cifar100": DataSet(cifar.FIELDS, cifar.check, cifar.load, cifar.preflight, _fixed(100, (3, 32, 32))),
    "imagenet": DataSet(
        imagenet.FIELDS, imagenet.check, imagenet.load, imagenet.preflight, _fixed(1000, (3, 224, 224))
    ),
    "synthetic": DataSet(
        synthetic.FIELDS, synthetic.check, synthetic.load, shape=lambda s: (s.num_classes, tuple(s.shape))
    ),
}


def lookup(name: str) -> DataSet:
    """The built-in data set `name`, or the plugin registered as `name` (data/plugin.py)."""
    if name in DATASETS:
        return DATASETS[name]
    from lp_ray.data.plugin import plugin_parts

    return DataSet(*plugin_parts(name, known=DATASETS))


def preflight(job: JobSpec) -> None:
    """Cheap checks that a data set is there, made before a run directory or MLflow run is created,
    so a missing archive leaves nothing half-made behind. (lp_ray/preflight.py adds the plugins' checks.)"""
    lookup(job.data.dataset).preflight(job.data)
