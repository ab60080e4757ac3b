import pytest

from lp_ray.spec import ClusterSpec, JobSpec, SpecError, default_job, run_hash, run_name
from lp_ray.spec_loading import job_from_dict, load_cluster, load_job


def write(tmp_path, text, name="job.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "text, message",
    [
        ("train: {epochs: 10, lr_drops: [5]}\nimp: {rate: 1.5}\n", "imp.rate: must be in [0, 1), got 1.5"),
        ("imp: {retrain: rewound}\n", "imp.retrain: unknown retraining 'rewound' (known: rewind, lr_rewind, finetune)"),
        (
            "train: {epochs: 10, lr_drops: [5]}\nimp: {rewind_epoch: 10}\n",
            "imp.rewind_epoch: must be in [0, train.epochs=10), got 10",
        ),
        ("train: {epochs: ten}\n", "train.epochs: expected an integer, got str 'ten'"),
        ("train: {epochz: 3}\n", "unknown key 'train.epochz'"),
        ("bogus: 1\n", "unknown key 'bogus'"),
        ("data: {dataset: mnist2d}\n", "data.dataset: unknown data set 'mnist2d'"),
        ("train: {lr_drops: [30, 20]}\n", "train.lr_drops: must be increasing"),
        ("train: [1, 2]\n", "train: expected a mapping, got list"),
        ("imp: {rounds: 0}\n", "imp.rounds: must be at least 1"),
        ("pool: {coefficients: [0.5, 1.5]}\n", "pool.coefficients: must be a non-empty list of numbers in (0, 1)"),
        ("pool: {method: magic}\n", "pool.method: unknown method 'magic'"),
        ("train: {augment: yes please}\n", "unknown key 'train.augment'"),
        ("data: {augment: 3}\n", "data.augment: expected true or false, got int 3"),
        ("model: {name: resnet9000}\n", "model.name: unknown model 'resnet9000' (known: cifar_resnet18"),
        ("model: {width: 0}\n", "model.width: must be at least 1, got 0"),
        ("pool: {targets: []}\n", "pool.targets: must be a non-empty list of rounds"),
        ("imp: {particles: 0}\n", "imp.particles: must be in [1, 64] (1: plain IMP), got 0"),
        ("imp: {particles: three}\n", "imp.particles: expected an integer, got str 'three'"),
        ("imp: {soup: best}\n", "imp.soup: unknown soup 'best' (known: uniform, greedy)"),
        ("imp: {soup_bn_fraction: 0}\n", "imp.soup_bn_fraction: must be in (0, 1], got 0.0"),
    ],
)
def test_job_errors_name_file_and_key(tmp_path, text, message):
    p = write(tmp_path, text)
    with pytest.raises(SpecError) as e:
        load_job(p)
    assert str(e.value).startswith(f"{p}: ")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_malformed_yaml_reports_line(tmp_path):
    p = write(tmp_path, "train:\n  epochs: [1, 2\nimp: {}\n")
    with pytest.raises(SpecError, match=r"malformed YAML \(line \d+, column \d+\)"):
        load_job(p)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        load_job(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="expected a mapping at the top level, got list"):
        load_job(write(tmp_path, "- 1\n- 2\n"))


def test_cluster_errors(tmp_path):
    with pytest.raises(SpecError, match="num_workers: must be at least 1"):
        load_cluster(write(tmp_path, "num_workers: 0\n", "c.yaml"))
    with pytest.raises(SpecError, match="ray://"):
        load_cluster(write(tmp_path, "address: ray://head:10001\n", "c.yaml"))
    with pytest.raises(SpecError, match="unknown key 'workers'"):
        load_cluster(write(tmp_path, "workers: 2\n", "c.yaml"))
    with pytest.raises(SpecError, match="c.yaml: checkpoint_interval_s: must be >= 0, got -1.0"):
        load_cluster(write(tmp_path, "checkpoint_interval_s: -1\n", "c.yaml"))
    # A key that is gone says why, whatever its value.
    for value in ("false", "null", "sometimes"):
        with pytest.raises(SpecError, match="c.yaml: overlap_rounds: removed: IMP now runs as one Ray Train run"):
            load_cluster(write(tmp_path, f"overlap_rounds: {value}\n", "c.yaml"))


def test_shipped_specs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    for p in sorted((root / "jobs").glob("*.yaml")):
        load_job(p)
    for p in sorted((root / "cluster").glob("*.yaml")):
        if p.name != "aws-gpu.yaml":  # a Ray cluster-launcher file, not a cluster spec
            load_cluster(p)
    # jobs/default.yaml is the embedded default job, field for field.
    assert load_job(root / "jobs/default.yaml") == default_job()
    assert load_cluster(root / "cluster/local.yaml") == ClusterSpec()


def test_run_hash_pinned():
    # These values must never change: a changed hash orphans every existing run directory.
    assert run_hash(JobSpec()) == "44136fa355"  # the all-defaults baseline
    # particles: 1 (and the soup settings, unused without particles) are plain IMP: the same run
    plain = job_from_dict({"imp": {"particles": 1, "soup": "uniform", "soup_bn_fraction": 0.2}})
    assert run_hash(plain) == "44136fa355"
    assert run_hash(job_from_dict({"imp": {"particles": 3}})) != "44136fa355"
    # The default job changed on purpose (issue 14: 4,000 train / 8,000 test, a job with headroom), so
    # its runs got a new name instead of reusing the old job's tickets: was default-44136fa355.
    assert run_name(default_job()) == "default-53b16eb2ce"
    tiny = job_from_dict(
        {
            "name": "tiny",
            "data": {"dataset": "mnist1d", "num_samples": 2000},
            "model": {"name": "conv1d", "width": 16},
            "train": {"epochs": 3, "lr_drops": [2]},
            "imp": {"rounds": 3, "rewind_epoch": 1},
        }
    )
    assert run_hash(tiny) == "391a12c376"


def test_run_hash_ignores_what_does_not_change_tickets():
    base = run_hash(JobSpec())
    assert run_hash(job_from_dict({"name": "other"})) == base
    assert run_hash(job_from_dict({"data": {"generator": {"seed": 42}}})) == base  # the package's default
    assert run_hash(job_from_dict({"data": {"generator": {"shear_scale": 1.0}}})) != base
    assert run_hash(job_from_dict({"imp": {"rounds": 20}})) == base  # extending a run reuses it
    assert run_hash(job_from_dict({"pool": {"method": "average"}})) == base
    assert run_hash(job_from_dict({"train": {"epochs": 40}})) == base  # a default written out
    assert run_hash(job_from_dict({"train": {"seed": 1}})) != base
    assert run_hash(job_from_dict({"imp": {"rewind_epoch": 3}})) != base


def test_tracking_uri_precedence_and_absolute_sqlite(tmp_path, monkeypatch):
    from lp_ray.tracking.stores import resolve_tracking_uri

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, None) == f"sqlite:///{tmp_path}/mlflow.db"
    assert resolve_tracking_uri(None, "http://mlflow:5000") == "http://mlflow:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri(None, "http://mlflow:5000") == "http://env:5000"
    assert resolve_tracking_uri("sqlite:////abs/x.db", "http://mlflow:5000") == "sqlite:////abs/x.db"


def test_overrides_go_through_the_loader(tmp_path):
    from lp_ray.spec_loading import apply_overrides

    job = load_job(None, ["train.epochs=10", "train.lr_drops=[5, 8]", "pool.search_num=3", "data.path=./x"])
    assert (job.train.epochs, job.train.lr_drops, job.pool.search_num) == (10, [5, 8], 3)
    assert job.data.path == str(tmp_path.cwd().resolve() / "x")  # resolved like a spec file's path
    assert run_hash(load_job(None, ["train.epochs=40"])) == run_hash(default_job())  # a default, written out
    assert apply_overrides(job, ["pool.search_num=null"], "x").pool.search_num is None
    with pytest.raises(SpecError, match=r"^train.epochs.x=1: unknown key 'train.epochs.x'$"):
        load_job(None, ["train.epochs.x=1"])
    with pytest.raises(SpecError, match=r"pool.coefficients=\[0.5, 2\]: pool.coefficients: must be a non-empty"):
        load_job(None, ["pool.coefficients=[0.5, 2]"])


def test_pool_options_share_the_spec_rules():
    from lp_ray.spec import PoolSpec
    from lp_ray.spec_loading import with_pool_options

    base = PoolSpec(search_num=4)
    got = with_pool_options(base, {"method": "average", "search_num": None, "bn_samples": 100})
    assert (got.method, got.search_num, got.bn_samples) == ("average", 4, 100)
    assert base.method == "interpolation"  # the job's settings are not changed in place
    with pytest.raises(SpecError, match=r"^--bn-samples: must be at least 1, got 0$"):
        with_pool_options(base, {"bn_samples": 0})
    assert got.identity([0, 1]) == {
        "method": "average",
        "coefficients": None,
        "search_num": 4,
        "bn_samples": 100,
        "ema_decay": 0.95,
        "tickets": [0, 1],
    }  # what settings.json has always held


def test_mnist1d_sizes_are_checked():
    with pytest.raises(SpecError, match=r"data.train_size: give both data.train_size and data.test_size"):
        job_from_dict({"data": {"train_size": 4000}})
    with pytest.raises(SpecError, match=r"data.test_size: train_size \+ test_size must be a multiple of 10"):
        job_from_dict({"data": {"train_size": 4000, "test_size": 8005}})
    with pytest.raises(SpecError, match=r"data.num_samples: set either data.num_samples or data.train_size"):
        job_from_dict({"data": {"num_samples": 5000, "train_size": 4000, "test_size": 8000}})
    with pytest.raises(SpecError, match=r"unknown key 'data.generator.noise'"):
        job_from_dict({"data": {"generator": {"noise": 1}}})


def test_mnist1d_generates_the_sizes_asked_for():
    from lp_ray.data.mnist1d import generate

    spec = job_from_dict({"data": {"train_size": 360, "test_size": 640, "generator": {"final_seq_length": 32}}}).data
    t = generate(spec)
    assert tuple(t["x_train"].shape) == (360, 32) and tuple(t["x_test"].shape) == (640, 32)
    assert sorted(t["y_test"].unique().tolist()) == list(range(10))


def test_experiment_hash_pinned_and_blind_to_fields_at_their_default():
    from pathlib import Path

    from lp_ray.experiment.spec import load_experiment
    from lp_ray.spec import job_changes

    # An experiment's identity holds only the base job's changes from the defaults, so a job field added
    # later with a default (imp.retrain was) never renames an experiment directory again.
    assert job_changes(default_job()) == {"data": {"train_size": 4000, "test_size": 8000}}
    root = Path(__file__).resolve().parent.parent
    assert load_experiment(root / "experiments" / "default.yaml").dir_name() == "default-f29f9ab0dd"


def test_checking_a_job_imports_no_torch():
    """Loading and checking a job (every registry consulted) stays light: a bad spec is refused in a
    fraction of a second, before torch (~1-2 s to import) is ever loaded."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys; from lp_ray.spec_loading import load_job, load_cluster; "
        "load_job('jobs/cifar10-vgg16.yaml', ['imp.retrain=finetune', 'pool.method=ema']); load_job(None); "
        "load_cluster('cluster/local.yaml'); print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
