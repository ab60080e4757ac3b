"""Job and cluster specs: dataclasses loaded from YAML, validated, and hashed into a run identity
(docs/architecture.md, "Specs and identity").

A job spec says *what* to compute (data, model, training, IMP, pool); a cluster spec says *where*
(Ray address, workers, storage, MLflow). Only the job spec feeds the run hash. `key=value` overrides
(`train.epochs=3`) go through the same loader and the same checks as a spec file. Names (data sets,
models, pool methods) are checked against their registries, the only lists of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lp_ray.errors import LpRayError


class SpecError(LpRayError):
    """A spec file is malformed: unknown key, wrong type or impossible value."""


# --------------------------------------------------------------------------------------------------
# Job spec


@dataclass
class Mnist1dGenerator:
    """The mnist1d package's generator arguments (its defaults): what makes the task harder or easier."""

    template_len: int = 12
    padding: list[int] = field(default_factory=lambda: [36, 60])
    scale_coeff: float = 0.4
    max_translation: int = 48
    corr_noise_scale: float = 0.25
    iid_noise_scale: float = 0.02
    shear_scale: float = 0.75
    shuffle_seq: bool = False
    final_seq_length: int = 40
    seed: int = 42


@dataclass
class DataSpec:
    dataset: str = "mnist1d"
    # mnist1d: samples generated offline, split 80% train / 20% test as the mnist1d package splits ...
    num_samples: int = 10000
    # ... unless both sizes are given: `train_size` examples for training (validation included) and
    # `test_size` for test, generated together (their sum a multiple of the 10 classes).
    train_size: int | None = None
    test_size: int | None = None
    generator: Mnist1dGenerator = field(default_factory=Mnist1dGenerator)
    # cifar10/cifar100: the official python archive; imagenet: a folder with train/ and val/.
    path: str | None = None
    # Held-out validation split carved from train (paper Appendix D: 10%), seeded by `split_seed`.
    val_fraction: float = 0.1
    split_seed: int = 0
    augment: bool = True
    # synthetic: random tensors of this shape (per sample) and class count.
    shape: list[int] | None = None
    num_classes: int | None = None
    num_train: int = 512
    num_test: int = 256


@dataclass
class ModelSpec:
    name: str = "conv1d"
    width: int = 64  # conv1d only
    num_classes: int | None = None  # default: the data set's


@dataclass
class TrainSpec:
    epochs: int = 40
    batch_size: int = 64  # global batch, split over DDP workers
    lr: float = 0.1
    lr_drops: list[int] = field(default_factory=lambda: [20, 30])
    lr_drop_factor: float = 0.1
    warmup_epochs: int = 0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    # Which epoch's weights become the ticket: "final" (default) or "best_val" (best on validation).
    select: str = "final"
    # Arithmetic of forward passes (training, BN recalibration, evaluation): "fp32" (default) or "bf16"
    # (torch.autocast; in the run hash only when set).
    precision: str = "fp32"


@dataclass
class ImpSpec:
    # Number of tickets, the dense round 0 included: densities 1, 0.8, 0.64, ... for rate 0.2.
    rounds: int = 11
    rate: float = 0.2
    rewind_epoch: int = 2
    prune_linear: bool = False
    # How round r >= 1 retrains (imp/retrain.py): "rewind" (weights and schedule back to rewind_epoch),
    # "lr_rewind" (trained weights kept, schedule rewound) or "finetune" (weights kept, final learning rate).
    retrain: str = "rewind"


@dataclass
class PoolSpec:
    """The pool settings: the job's pool section, with `lp-ray pool`'s options and overrides on top
    (`with_pool_options`). Validated in one place, `check_pool`."""

    method: str = "interpolation"  # a key of pool/methods.py's METHODS
    coefficients: list[float] | None = None  # default: the method's
    search_num: int | None = None  # default: every other ticket
    bn_samples: int | None = None  # default: the whole training split
    ema_decay: float = 0.95
    targets: list[int] | None = None  # default: every round

    def identity(self, rounds: list[int]) -> dict:
        """Everything that changes a chain's decisions (not which targets run): a search resumed in the
        same folder must match it."""
        d = dataclasses.asdict(self)
        d.pop("targets")
        return {**d, "tickets": rounds}


@dataclass
class JobSpec:
    name: str = "default"
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    imp: ImpSpec = field(default_factory=ImpSpec)
    pool: PoolSpec = field(default_factory=PoolSpec)


# Fields that never change a ticket: where a file lives, how many rounds to run (extending a run by
# more rounds reuses the old ones), and the pool section (pool results live in their own folder).
_NOT_IN_HASH = {("name",), ("data", "path"), ("imp", "rounds"), ("pool",)}


def run_hash(job: JobSpec) -> str:
    """Short hash of every results-affecting field that differs from its default (as OpenLTH does),
    so that adding a new field with a default never renames old runs."""
    changed = _non_default(job, JobSpec(), ())
    if changed is _SAME:  # the default job itself
        changed = {}
    blob = json.dumps(changed, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def job_changes(job: JobSpec) -> dict:
    """Every field of the job that differs from its default, the run hash's exclusions included (name,
    rounds, pool): a job's identity that a new field with a default never changes (experiment hashes)."""
    changed = _non_default(job, JobSpec(), (), frozenset())
    return {} if changed is _SAME else changed


def _non_default(value: Any, default: Any, path: tuple[str, ...], skip=_NOT_IN_HASH) -> Any:
    if dataclasses.is_dataclass(value):
        out = {}
        for f in dataclasses.fields(value):
            sub = path + (f.name,)
            if sub in skip:
                continue
            v = _non_default(getattr(value, f.name), getattr(default, f.name), sub, skip)
            if v is not _SAME:
                out[f.name] = v
        return out if out else _SAME
    return _SAME if value == default else value


_SAME = object()


def run_name(job: JobSpec) -> str:
    return f"{job.name}-{run_hash(job)}"


# --------------------------------------------------------------------------------------------------
# Cluster spec


@dataclass
class ClusterSpec:
    # "local" starts a private Ray on this machine; "auto" or "host:port" joins a running cluster.
    address: str = "local"
    # One DDP worker by default: on a 2-core laptop the default job's tiny CNN trains fastest in one
    # process (a second worker adds a gloo all-reduce per step and halves the cores per worker), and
    # the spare core keeps the driver and Ray's own processes responsive.
    num_workers: int = 1
    use_gpu: bool = False
    resources_per_worker: dict[str, float] = field(default_factory=lambda: {"CPU": 1.0})
    placement_strategy: str = "PACK"
    # What one pool evaluation asks Ray for (e.g. {num_gpus: 0.25} packs four on a GPU).
    eval_resources: dict[str, float] = field(default_factory=lambda: {"num_cpus": 1.0})
    # Where run directories live: a local path, an NFS mount, or a pyarrow.fs URI such as s3://bucket/prefix.
    storage_path: str = "./runs"
    # S3-compatible storage: endpoint (host:port or http(s)://host:port) and region; credentials come
    # from the usual AWS environment variables or instance profile.
    storage_endpoint: str | None = None
    storage_region: str | None = None
    # A local storage_path on a multi-node cluster must be a shared mount (NFS): say so here.
    shared_storage: bool = False
    tracking_uri: str | None = None
    # Ray Jobs API (for --submit): default http://<head host>:8265.
    dashboard_address: str | None = None
    max_failures: int = 3
    torch_threads: int = 1
    # A checkpoint at the end of every epoch, except that one younger than this many seconds is not
    # followed by another (the round's last epoch always is): a crash loses at most this much work. Epochs
    # longer than this (the paper's jobs) are checkpointed every one; the default job's 0.7 s epochs were
    # spending ~10% of their time on checkpoints. 0 = every epoch.
    checkpoint_interval_s: float = 10.0


def storage_uri(cluster: ClusterSpec) -> str:
    """storage_path with the S3 options folded into a pyarrow URI query."""
    path = cluster.storage_path
    if not path.startswith("s3://"):
        return path
    opts = []
    if cluster.storage_endpoint:
        endpoint = cluster.storage_endpoint
        scheme = "https"
        if "://" in endpoint:
            scheme, endpoint = endpoint.split("://", 1)
        opts += [f"endpoint_override={endpoint}", f"scheme={scheme}"]
    if cluster.storage_region:
        opts.append(f"region={cluster.storage_region}")
    if not opts:
        return path
    return path + ("&" if "?" in path else "?") + "&".join(opts)


# --------------------------------------------------------------------------------------------------
# Loading and validation


def default_job() -> JobSpec:
    """The embedded default job, jobs/default.yaml's twin: MNIST-1D small in train (4,000, validation
    included) and large in test (8,000), so that it sits below its ceiling (LT ~97%) and 0.1 pt is 8 test
    examples. It is not JobSpec(): the dataclass defaults are the fixed baseline run hashes are taken
    against, so changing the default job renames its runs instead of reusing old ones."""
    return JobSpec(data=DataSpec(train_size=4000, test_size=8000))


def load_job(path: str | Path | None, overrides: typing.Sequence[str] = ()) -> JobSpec:
    """Load a job spec (`None`: the embedded default job), then apply `key=value` overrides; every value
    is checked as if the file had said it."""
    if path is None:
        job = default_job()
    else:
        job = _build(JobSpec, _read_yaml(path), str(path), ())
        _check_job(job, str(path))
    job = apply_overrides(job, overrides, str(path) if path is not None else "the default job")
    if job.data.path and "://" not in job.data.path:
        # Relative to where the command runs; Ray workers run elsewhere, so they get an absolute path.
        job.data.path = str(Path(job.data.path).expanduser().resolve())
    return job


def apply_overrides(job: JobSpec, overrides: typing.Sequence[str], where: str) -> JobSpec:
    """`section.field=value` pairs on top of a job (values are YAML: `train.lr_drops=[20,30]`,
    `pool.search_num=null`). An unknown key or a bad value is a SpecError naming the override."""
    if not overrides:
        return job
    raw = job_to_dict(job)
    for text in overrides:
        key, sep, value = text.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise SpecError(f"{text!r}: expected key=value with a dotted key, e.g. train.epochs=3")
        node = raw
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                known = f" (known: {', '.join(sorted(node))})" if isinstance(node, dict) else ""
                raise SpecError(f"{text}: unknown key '{'.'.join(parts[: i + 1])}'{known}")
            if i < len(parts) - 1:
                node = node[part]
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise SpecError(f"{text}: the value is not valid YAML") from None
    return job_from_dict(raw, f"{where} with {' '.join(overrides)}")


def with_pool_options(pool: PoolSpec, options: dict[str, Any]) -> PoolSpec:
    """The pool settings with command-line options on top (None: not given), checked by the same rules
    as a spec file; a bad option is one error naming it (`--search-num: must be at least 1, got 0`)."""
    given = {k: v for k, v in options.items() if v is not None}
    settings = dataclasses.replace(pool, **given)

    def fail(field_name: str, message: str) -> None:
        flag = f"--{field_name.replace('_', '-')}" if field_name in given else f"pool.{field_name}"
        raise SpecError(f"{flag}: {message}")

    check_pool(settings, fail)
    return settings


def load_cluster(path: str | Path | None) -> ClusterSpec:
    if path is None:
        return ClusterSpec()
    raw = _read_yaml(path)
    cluster = _build(ClusterSpec, raw, str(path), ())
    _check_cluster(cluster, str(path))
    return cluster


def job_from_dict(raw: dict, where: str = "<job>") -> JobSpec:
    job = _build(JobSpec, raw, where, ())
    _check_job(job, where)
    return job


def job_to_dict(job: JobSpec) -> dict:
    return dataclasses.asdict(job)


def _read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{path}: no such file")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file (a YAML spec was expected)") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read it ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"{path}: malformed YAML{where}: {problem}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


# Keys that were once part of a spec: a file that still sets one is told why it is gone.
_REMOVED = {
    (ClusterSpec, "overlap_rounds"): (
        "removed: IMP now runs as one Ray Train run whose worker group lives for the whole job, so there is "
        "no per-round start-up left to overlap; delete the key"
    ),
}


def _build(cls: type, raw: Any, where: str, path: tuple[str, ...]) -> Any:
    key = ".".join(path) or "top level"
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: {key}: expected a mapping, got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    for key_name in unknown:
        if (cls, key_name) in _REMOVED:
            raise SpecError(f"{where}: {'.'.join(path + (key_name,))}: {_REMOVED[cls, key_name]}")
    if unknown:
        full = ".".join(path + (str(unknown[0]),))
        raise SpecError(f"{where}: unknown key '{full}' (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(value, hints[name], where, path + (name,))
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, where: str, path: tuple[str, ...]) -> Any:
    key = ".".join(path)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where, path)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # X | None
        if value is None:
            return None
        return _coerce(value, [a for a in args if a is not type(None)][0], where, path)
    if origin is list:
        if not isinstance(value, list):
            raise SpecError(f"{where}: {key}: expected a list, got {_show(value)}")
        return [_coerce(v, args[0], where, path + (f"[{i}]",)) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SpecError(f"{where}: {key}: expected a mapping, got {_show(value)}")
        return {str(k): _coerce(v, args[1], where, path + (str(k),)) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise SpecError(f"{where}: {key}: expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{where}: {key}: expected an integer, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{where}: {key}: expected a number, got {_show(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SpecError(f"{where}: {key}: expected a string, got {_show(value)}")
        return value
    raise TypeError(f"unsupported spec type {tp}")


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:80]


def _fail(where: str, key: str, message: str) -> None:
    raise SpecError(f"{where}: {key}: {message}")


def _check_job(job: JobSpec, where: str) -> None:
    from lp_ray.data.registry import DATASETS
    from lp_ray.models import MODELS

    d, m, t, i = job.data, job.model, job.train, job.imp
    if not job.name or any(c in job.name for c in "/\\ "):
        _fail(where, "name", f"must be a non-empty name without '/' or spaces, got {job.name!r}")
    if d.dataset not in DATASETS:
        _fail(where, "data.dataset", f"unknown data set {d.dataset!r} (known: {', '.join(sorted(DATASETS))})")
    if not 0.0 < d.val_fraction < 1.0:
        _fail(where, "data.val_fraction", f"must be in (0, 1), got {d.val_fraction}")
    if d.num_samples < 100:
        _fail(where, "data.num_samples", f"must be at least 100, got {d.num_samples}")
    if (d.train_size is None) != (d.test_size is None):
        _fail(where, "data.train_size", "give both data.train_size and data.test_size, or neither")
    if d.train_size is not None:
        if d.num_samples != DataSpec.num_samples:
            _fail(where, "data.num_samples", "set either data.num_samples or data.train_size and data.test_size")
        if d.train_size < 20 or d.test_size < 10:
            _fail(
                where,
                "data.train_size",
                f"need at least 20 train and 10 test examples, got {d.train_size}, {d.test_size}",
            )
        if (d.train_size + d.test_size) % 10:
            _fail(
                where,
                "data.test_size",
                f"train_size + test_size must be a multiple of 10 (examples per class), got {d.train_size + d.test_size}",
            )
    g = d.generator
    if g.template_len < 1 or g.final_seq_length < 8 or len(g.padding) != 2 or g.max_translation < 0:
        _fail(
            where, "data.generator", "template_len >= 1, final_seq_length >= 8, padding [lo, hi], max_translation >= 0"
        )
    if min(g.scale_coeff, g.corr_noise_scale, g.iid_noise_scale, g.shear_scale) < 0:
        _fail(where, "data.generator", "scales must be >= 0")
    if d.dataset == "synthetic" and (not d.shape or not d.num_classes):
        _fail(where, "data.shape", "the synthetic data set needs data.shape and data.num_classes")
    if m.name not in MODELS:
        _fail(where, "model.name", f"unknown model {m.name!r} (known: {', '.join(sorted(MODELS))})")
    if m.width < 1:
        _fail(where, "model.width", f"must be at least 1, got {m.width}")
    if m.num_classes is not None and m.num_classes < 2:
        _fail(where, "model.num_classes", f"must be at least 2, got {m.num_classes}")
    if t.epochs < 1:
        _fail(where, "train.epochs", f"must be at least 1, got {t.epochs}")
    if t.batch_size < 1:
        _fail(where, "train.batch_size", f"must be at least 1, got {t.batch_size}")
    if t.lr <= 0:
        _fail(where, "train.lr", f"must be positive, got {t.lr}")
    if not 0.0 <= t.momentum < 1.0:
        _fail(where, "train.momentum", f"must be in [0, 1), got {t.momentum}")
    if t.weight_decay < 0:
        _fail(where, "train.weight_decay", f"must be >= 0, got {t.weight_decay}")
    if any(not 0 < e < t.epochs for e in t.lr_drops) or t.lr_drops != sorted(t.lr_drops):
        _fail(where, "train.lr_drops", f"must be increasing epochs inside (0, {t.epochs}), got {t.lr_drops}")
    if not 0 <= t.warmup_epochs < t.epochs:
        _fail(where, "train.warmup_epochs", f"must be in [0, {t.epochs}), got {t.warmup_epochs}")
    if t.select not in ("final", "best_val"):
        _fail(where, "train.select", f"must be 'final' or 'best_val', got {t.select!r}")
    from lp_ray.training import PRECISIONS

    if t.precision not in PRECISIONS:
        _fail(where, "train.precision", f"must be one of {', '.join(PRECISIONS)}, got {t.precision!r}")
    if i.rounds < 1:
        _fail(where, "imp.rounds", f"must be at least 1 (round 0 is the dense network), got {i.rounds}")
    if not 0.0 <= i.rate < 1.0:  # 0: every round retrains the dense network (the stability analysis's copies)
        _fail(where, "imp.rate", f"must be in [0, 1), got {i.rate}")
    from lp_ray.imp.retrain import RETRAIN

    if i.retrain not in RETRAIN:
        _fail(where, "imp.retrain", f"unknown retraining {i.retrain!r} (known: {', '.join(RETRAIN)})")
    if not 0 <= i.rewind_epoch < t.epochs:
        _fail(where, "imp.rewind_epoch", f"must be in [0, train.epochs={t.epochs}), got {i.rewind_epoch}")
    check_pool(job.pool, lambda key, message: _fail(where, f"pool.{key}", message))


def check_pool(p: PoolSpec, fail: typing.Callable[[str, str], None]) -> None:
    """The one set of rules for pool settings, from a spec file or from `lp-ray pool`'s options;
    `fail(field, message)` raises an error that names where the value came from."""
    from lp_ray.pool.methods import METHODS, known

    if p.method not in METHODS:
        fail("method", f"unknown method {p.method!r} (known: {known()})")
    if p.coefficients is not None and (not p.coefficients or any(not 0 < a < 1 for a in p.coefficients)):
        fail("coefficients", f"must be a non-empty list of numbers in (0, 1), got {p.coefficients}")
    if p.search_num is not None and p.search_num < 1:
        fail("search_num", f"must be at least 1, got {p.search_num}")
    if p.bn_samples is not None and p.bn_samples < 1:
        fail("bn_samples", f"must be at least 1, got {p.bn_samples}")
    if not 0.0 < p.ema_decay < 1.0:
        fail("ema_decay", f"must be in (0, 1), got {p.ema_decay}")
    if p.targets is not None and (not p.targets or any(t < 0 for t in p.targets)):
        fail("targets", f"must be a non-empty list of rounds (>= 0), got {p.targets}")


def _check_cluster(c: ClusterSpec, where: str) -> None:
    if c.num_workers < 1:
        _fail(where, "num_workers", f"must be at least 1, got {c.num_workers}")
    if not c.storage_path.strip():
        _fail(where, "storage_path", "must not be empty (a local path, an NFS mount or a URI such as s3://bucket/runs)")
    if c.placement_strategy not in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"):
        _fail(
            where,
            "placement_strategy",
            f"must be PACK, SPREAD, STRICT_PACK or STRICT_SPREAD, got {c.placement_strategy!r}",
        )
    if c.address.startswith("ray://"):
        _fail(where, "address", "ray:// (Ray Client) is not supported for Ray Train; use 'auto' or host:port")
    if c.checkpoint_interval_s < 0:
        _fail(where, "checkpoint_interval_s", f"must be >= 0, got {c.checkpoint_interval_s}")
    if c.max_failures < 0:
        _fail(where, "max_failures", f"must be >= 0, got {c.max_failures}")
    if c.torch_threads < 1:
        _fail(where, "torch_threads", f"must be at least 1, got {c.torch_threads}")
    for k, v in {**c.resources_per_worker, **c.eval_resources}.items():
        if v < 0:
            _fail(where, k, f"resources must be >= 0, got {v}")
