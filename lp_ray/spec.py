"""Job and cluster specs as types: their fields and defaults, and the run hash (docs/architecture.md,
"Specs and identity").

A job spec says *what* to compute (data, model, training, IMP, pool); a cluster spec says *where*
(Ray address, workers, storage, MLflow). Only the job spec feeds the run hash. Reading a spec from
YAML or overrides and checking it against the registries is `spec_loading.py`, one layer up: this
module imports nothing of lp-ray but its error type, and nothing heavy (no torch).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

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
    """Every data set's fields in one flat section (the run hash is taken over it, so its shape never
    changes). Which of them a data set reads, and the checks on them, live in that data set's module
    (`data/<name>.py`: FIELDS and check); the registry says which module a name is."""

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
    # A data set plugin's own fields (lp_ray.plugins), written flat in the job's data section beside these.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelSpec:
    name: str = "conv1d"
    width: int = 64  # conv1d: channels; vit: embedding dimension
    # vit only: blocks, attention heads (dividing width), patch size (samples of a 1-D signal, pixels of a
    # square image patch), MLP hidden size / width, and what the head reads ("cls" token or "mean" of tokens)
    depth: int = 4
    heads: int = 4
    patch_size: int = 4
    mlp_ratio: float = 2.0
    pooling: str = "cls"
    num_classes: int | None = None  # default: the data set's
    # A model plugin's own fields (lp_ray.plugins), written flat in the job's model section beside these.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainSpec:
    epochs: int = 40
    batch_size: int = 64  # global batch, split over DDP workers
    lr: float = 0.1
    # The recipe (recipes.py, schedules.py): optimizer "sgd" or "adamw"; schedule "step" (drops by
    # `lr_drop_factor` at `lr_drops`) or "cosine" (to 0, per step), each after `warmup_epochs` of linear
    # warm-up; weight decay on "all" parameters or on Linear/Conv "weights" only; gradient clipping.
    optimizer: str = "sgd"
    schedule: str = "step"
    lr_drops: list[int] = field(default_factory=lambda: [20, 30])  # step schedule only
    lr_drop_factor: float = 0.1
    warmup_epochs: int = 0
    momentum: float = 0.9  # sgd only
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw only
    adam_eps: float = 1e-8  # adamw only
    weight_decay: float = 5e-4
    weight_decay_on: str = "all"
    grad_clip: float | None = None  # max global gradient norm (None: no clipping)
    seed: int = 0
    # Which epoch's weights become the ticket: "final" (default) or "best_val" (best on validation).
    select: str = "final"
    # Arithmetic of forward passes (training, BN recalibration, evaluation): "fp32" (default) or "bf16"
    # (torch.autocast; in the run hash only when set).
    precision: str = "fp32"


# Pool evaluations in flight at once, for every command that evaluates on Ray (pool, run, the analyses):
# a command option, not a job field (it never changes a result).
DEFAULT_PARALLEL_EVALS = 2

SELECTIONS = ("final", "best_val")  # train.select: the one list of its values
PRECISIONS = ("fp32", "bf16")  # train.precision: the one list of its values
# The recipe's names (what each means: recipes.py, schedules.py), here so that checking a job imports no torch.
OPTIMIZERS = ("sgd", "adamw")  # train.optimizer
SCHEDULES = ("step", "cosine")  # train.schedule
DECAY_ON = ("all", "weights")  # train.weight_decay_on


def unused_train_fields(t: TrainSpec) -> set[str]:
    """The train fields the job's recipe does not read (another optimizer's or schedule's), which MLflow's
    parameters leave out."""
    unused = set()
    if t.optimizer != "sgd":
        unused.add("momentum")
    if t.optimizer != "adamw":
        unused |= {"adam_betas", "adam_eps"}
    if t.schedule != "step":
        unused |= {"lr_drops", "lr_drop_factor"}
    return unused


@dataclass
class ImpSpec:
    # Number of tickets, the dense round 0 included: densities 1, 0.8, 0.64, ... for rate 0.2.
    rounds: int = 11
    rate: float = 0.2
    rewind_epoch: int = 2
    # Whether a rewound round restores the optimizer's state at the rewind point as well as the weights
    # (None: the recipe's default, imp/retrain.py: AdamW's moments yes, SGD's momentum no).
    rewind_optimizer: bool | None = None
    prune_linear: bool = False
    # How round r >= 1 retrains (imp/retrain.py): "rewind" (weights and schedule back to rewind_epoch),
    # "lr_rewind" (trained weights kept, schedule rewound) or "finetune" (weights kept, final learning rate).
    retrain: str = "rewind"
    # Particles (Sparse Model Soups, SWAMP; imp/soup.py): each round r >= 1 trains `particles` copies
    # from the same masked start with different data orders and its ticket is their soup ("uniform":
    # the mean; "greedy": a particle joins only if validation does not drop), BatchNorm recalibrated on
    # `soup_bn_fraction` of the training split. 1: plain IMP (round 0, the dense network, is always one).
    particles: int = 1
    soup: str = "uniform"
    soup_bn_fraction: float = 0.2


@dataclass
class PoolSpec:
    """The pool settings: the job's pool section, with `lp-ray pool`'s options and overrides on top
    (`spec_loading.with_pool_options`). Validated in one place, `spec_loading.check_pool`."""

    method: str = "interpolation"  # a key of pool/methods.py's METHODS
    coefficients: list[float] | None = None  # default: the method's
    search_num: int | None = None  # default: every other ticket
    bn_samples: int | None = None  # default: the whole training split
    ema_decay: float = 0.95
    targets: list[int] | None = None  # default: every round
    # How each step is scored (pool/searches.py): "exact" (the paper's protocol) or "fast" (screened on
    # a seeded `screen_fraction` of the training split, the winner confirmed with the full recalibration).
    search: str = "exact"
    screen_fraction: float = 0.1

    def identity(self, rounds: list[int]) -> dict:
        """Everything that changes a chain's decisions (not which targets run): a search resumed in the
        same folder must match it. The fast search's fields appear only in a fast search's identity, so
        every exact search written before they existed keeps its identity."""
        d = dataclasses.asdict(self)
        d.pop("targets")
        if self.search == "exact":
            d.pop("search")
            d.pop("screen_fraction")
        return {**d, "tickets": rounds}

    def default_name(self) -> str:
        """The search's folder under pool/ when --name does not say: the method, and for a fast search
        `<method>-fast` (an exact search of the same method keeps its folder beside it)."""
        return self.method if self.search == "exact" else f"{self.method}-{self.search}"


@dataclass
class JobSpec:
    name: str = "default"
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    imp: ImpSpec = field(default_factory=ImpSpec)
    pool: PoolSpec = field(default_factory=PoolSpec)
    # Modules of one's own the job imports (`my_nets`: my_nets.py beside the job file), and what code
    # every plugin name the job uses came from (filled in when the job is loaded; lp_ray/plugins/loading.py):
    # {"model resnet20": "my_nets sha256:<hex>"}. The versions are in the run hash, the module list is not.
    plugins: list[str] = field(default_factory=list)
    plugin_versions: dict[str, str] = field(default_factory=dict)


# Fields that never change a ticket: where a file lives, how many rounds to run (extending a run by
# more rounds reuses the old ones), and the pool section (pool results live in their own folder).
_NOT_IN_HASH = {("name",), ("data", "path"), ("imp", "rounds"), ("pool",), ("plugins",)}


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
    # Ray's runtime environment for every process of a command (RUNTIME_ENV_KEYS): e.g. {pip: [my-plugin]}
    # installs a plugin package on every node, {env_vars: {...}} sets variables. lp-ray adds the job's own
    # plugin modules to py_modules.
    runtime_env: dict[str, Any] = field(default_factory=dict)
    # A checkpoint at the end of every epoch, except that one younger than this many seconds is not
    # followed by another (the round's last epoch always is): a crash loses at most this much work. Epochs
    # longer than this (the paper's jobs) are checkpointed every one; the default job's 0.7 s epochs were
    # spending ~10% of their time on checkpoints. 0 = every epoch.
    checkpoint_interval_s: float = 10.0


RUNTIME_ENV_KEYS = ("pip", "uv", "conda", "env_vars", "py_modules", "working_dir", "excludes")


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
# The default job


def default_job() -> JobSpec:
    """The embedded default job, jobs/default.yaml's twin: MNIST-1D small in train (4,000, validation
    included) and large in test (8,000), so that it sits below its ceiling (LT ~97%) and 0.1 pt is 8 test
    examples. It is not JobSpec(): the dataclass defaults are the fixed baseline run hashes are taken
    against, so changing the default job renames its runs instead of reusing old ones."""
    return JobSpec(data=DataSpec(train_size=4000, test_size=8000))


def job_to_dict(job: JobSpec) -> dict:
    """The job as a spec file says it: a plugin's fields flat in their section, and the plugin keys only
    where a job has plugins (so every built-in job's job.yaml reads as it always did)."""
    d = dataclasses.asdict(job)
    for section in ("model", "data"):
        d[section].update(d[section].pop("options"))
    for k in ("plugins", "plugin_versions"):
        if not d[k]:
            del d[k]
    return d
