"""Plugins (lp_ray/plugins, docs/plugins.md): a job's own modules and installed packages' entry points
register models and data sets; their fields are checked like built-in ones; their code identity is in
the run hash and job.yaml; a plugin that is missing, fails or breaks the contract is one error."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from helpers import cli, write_yaml

from lp_ray.errors import LpRayError
from lp_ray.plugins import REGISTERED, loading
from lp_ray.preflight import preflight
from lp_ray.spec import SpecError, job_to_dict, run_hash
from lp_ray.spec_loading import apply_overrides, job_from_dict, load_job

NETS = """
from lp_ray.plugins import Field, Splits, register_dataset, register_model


@register_model("{model}", fields={{"hidden": Field(int, 16, check=lambda h: h >= 2 or "must be at least 2")}},
                prunable=lambda m: ["1.weight", "3.weight"])
def mlp(num_classes, input_shape, hidden):
    import math
    import torch.nn as nn
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.ReLU(),
                         nn.Linear(hidden, {out}))


@register_dataset("{data}", fields={{"n": Field(int, 64)}})
def blobs(n):
    import torch
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long() + {label_shift}
    return Splits((x, y), (x[:8], y[:8]), num_classes=2)
"""


@pytest.fixture
def plugin(tmp_path):
    """Write a plugin module of a unique name beside a job file; forget it (and what it registered) after."""
    made = []

    def write(out="num_classes", label_shift=0, body=None):
        name = f"nets_{len(made)}_{tmp_path.name[-8:].replace('-', '_')}"
        model, data = f"mlp_{name}", f"blobs_{name}"
        text = body if body is not None else NETS.format(model=model, data=data, out=out, label_shift=label_shift)
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
        made.append(name)
        job = {"name": "mine", "plugins": [name], "data": {"dataset": data}, "model": {"name": model}}
        return name, model, data, job

    yield write
    for name in made:
        loading.forget(name)


def test_a_jobs_own_module_registers_a_model_and_a_data_set_with_their_fields(tmp_path, plugin):
    name, model, data, raw = plugin()
    raw["model"]["hidden"] = 8
    job = job_from_dict(raw, "job.yaml", [tmp_path])
    assert job.model.options == {"hidden": 8} and job.data.options == {"n": 64}  # the default filled in
    assert job.plugin_versions[f"model {model}"].startswith(f"{name} sha256:")
    # job.yaml writes the plugin's fields flat, as the user did, and reads back to the same job
    back = job_from_dict(job_to_dict(job), "run/job.yaml", [tmp_path])
    assert job_to_dict(back)["model"]["hidden"] == 8 and run_hash(back) == run_hash(job)
    preflight(job)  # the network's output and the data's shapes hold against the contract

    with pytest.raises(SpecError, match=r"job.yaml: model.hidden: must be at least 2"):
        job_from_dict({**raw, "model": {"name": model, "hidden": 1}}, "job.yaml", [tmp_path])
    with pytest.raises(
        SpecError, match=r"unknown key 'model.depth' \(mlp_\w+'s fields: hidden; lp-ray's: name, num_classes\)"
    ):
        job_from_dict({**raw, "model": {"name": model, "depth": 3}}, "job.yaml", [tmp_path])
    with pytest.raises(SpecError, match=r"model.hidden: expected an integer"):
        job_from_dict({**raw, "model": {"name": model, "hidden": "wide"}}, "job.yaml", [tmp_path])
    assert run_hash(apply_overrides(job, ["model.hidden=9"], "x")) != run_hash(job)


def test_the_plugins_code_is_in_the_run_hash_and_a_changed_plugin_never_reads_an_old_run(tmp_path, plugin):
    name, model, data, raw = plugin()
    before = job_from_dict(raw, "job.yaml", [tmp_path])
    recorded = job_to_dict(before)
    (tmp_path / f"{name}.py").write_text((tmp_path / f"{name}.py").read_text() + "\n# edited\n")
    after = job_from_dict(raw, "job.yaml", [tmp_path])
    assert run_hash(after) != run_hash(before)  # a new run, never mixed with the old tickets
    # A run's job.yaml names the old code: with only the edited file at hand it is refused, naming both.
    with pytest.raises(
        SpecError, match=rf"{model}' was made with plugin module '{name}' sha256:\w+…, which is not here"
    ):
        job_from_dict(recorded, "run/job.yaml", [tmp_path])
    # with the run directory's copy of the old file, the run's job is the same job again
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / f"{name}.py").write_text(
        textwrap.dedent(NETS.format(model=model, data=data, out="num_classes", label_shift=0))
    )
    loading.forget(name)
    assert run_hash(job_from_dict(recorded, "run/job.yaml", [snapshot])) == run_hash(before)


def test_a_built_in_job_is_unchanged_by_the_plugin_fields():
    job = load_job(None)
    d = job_to_dict(job)
    assert "plugins" not in d and "plugin_versions" not in d and "options" not in d["model"]
    assert job.plugin_versions == {}


@pytest.mark.parametrize(
    "body, message",
    [
        (
            "raise RuntimeError('no GPU here')\n",
            r"plugin module '\w+' \(.+\.py\) failed to import: RuntimeError: no GPU here",
        ),
        ("def broken(:\n", r"failed to import: SyntaxError"),
        (
            "from lp_ray.plugins import register_model\n\n@register_model('conv1d')\ndef f(c, s):\n    pass\n",
            r"registers model 'conv1d', a name built into lp-ray; choose another name",
        ),
    ],
)
def test_a_plugin_that_fails_to_import_is_one_error_naming_it(tmp_path, plugin, body, message):
    name, model, data, raw = plugin(body=body)
    with pytest.raises(SpecError, match=message):
        job_from_dict(raw, "job.yaml", [tmp_path])
    assert name not in sys.modules and not [k for k, p in REGISTERED.items() if p.module == name]


def test_a_missing_module_and_an_unknown_name(tmp_path, plugin):
    with pytest.raises(
        SpecError, match=r"plugins: no module 'nope_not_here' \(nope_not_here.py not in .+, nor importable\)"
    ):
        job_from_dict({"plugins": ["nope_not_here"]}, "job.yaml", [tmp_path])
    with pytest.raises(SpecError, match=r"plugins: 'my-nets' is not a module name"):
        job_from_dict({"plugins": ["my-nets"]}, "job.yaml", [tmp_path])
    name, model, data, raw = plugin()
    with pytest.raises(SpecError, match=rf"unknown model 'resnet99' \(known: .*cifar_resnet18.*{model}"):
        job_from_dict({**raw, "model": {"name": "resnet99"}}, "job.yaml", [tmp_path])


def test_two_modules_claiming_one_name_is_an_error_naming_both(tmp_path, plugin):
    first, model, data, raw = plugin()
    job_from_dict(raw, "job.yaml", [tmp_path])
    second, _, _, raw2 = plugin(body=NETS.format(model=model, data=data + "x", out="num_classes", label_shift=0))
    with pytest.raises(SpecError, match=rf"model '{model}' is registered by two modules, {first} and {second}"):
        job_from_dict(raw2, "job.yaml", [tmp_path])


def test_a_network_or_data_set_that_breaks_the_contract_is_refused_before_anything_starts(tmp_path, plugin):
    _, _, _, wrong_out = plugin(out="num_classes + 1")
    with pytest.raises(LpRayError, match=r"a batch of 2 examples of shape \(6,\) gave \(2, 3\), expected \(2, 2\)"):
        preflight(job_from_dict(wrong_out, "job.yaml", [tmp_path]))
    _, _, _, bad_labels = plugin(label_shift=1)
    with pytest.raises(LpRayError, match=r"train labels must be in \[0, 2\), got 1..2"):
        preflight(job_from_dict(bad_labels, "job.yaml", [tmp_path]))


def test_a_data_set_plugin_may_return_a_map_style_dataset(tmp_path, plugin):
    body = """
    from lp_ray.plugins import Splits, register_dataset
    import torch

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return 30

        def __getitem__(self, i):
            return torch.full((4,), float(i)), i % 3

    @register_dataset("pairs_{tag}")
    def pairs():
        return Splits(Pairs(), Pairs(), num_classes=3, augment=lambda x, g: -x)
    """
    name, _, _, raw = plugin(body=body.format(tag="a"))
    from lp_ray.data.registry import lookup

    job = job_from_dict({**raw, "data": {"dataset": "pairs_a"}, "model": {"name": "conv1d"}}, "job.yaml", [tmp_path])
    train, _, classes, shape = lookup("pairs_a").load(job.data, None)
    assert (classes, shape) == (3, (4,))
    x, y = train.batch(torch.tensor([4, 5]), augment=True, gen=torch.Generator())
    assert x.tolist() == [[-4.0] * 4, [-5.0] * 4] and y.tolist() == [1, 2]


def test_an_installed_packages_entry_point_loads_only_when_a_job_names_it(tmp_path, monkeypatch):
    """A package installed into a folder on sys.path (its dist-info declares the entry point)."""
    pkg = tmp_path / "site" / "ep_nets_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(
        "from lp_ray.plugins import register_model\n\n"
        "@register_model('ep_mlp')\n"
        "def ep_mlp(num_classes, input_shape):\n"
        "    import torch.nn as nn\n"
        "    return nn.Sequential(nn.Conv1d(1, 4, 3), nn.Flatten(), nn.LazyLinear(num_classes))\n"
    )
    info = tmp_path / "site" / "ep_nets-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-nets\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[lp_ray.models]\nep_mlp = ep_nets_pkg.models:ep_mlp\n")
    (info / "top_level.txt").write_text("ep_nets_pkg\n")
    (info / "RECORD").write_text("ep_nets_pkg/__init__.py,,\nep_nets_pkg/models.py,,\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    try:
        assert "ep_mlp" in loading.plugin_names("model") and "ep_nets_pkg.models" not in sys.modules
        job = job_from_dict({"model": {"name": "ep_mlp"}}, "job.yaml")
        assert job.plugin_versions == {"model ep_mlp": "ep_nets_pkg.models from ep-nets 1.2.3"}
        # a node with another version of the package refuses the run's job
        with pytest.raises(
            SpecError, match=r"needs ep-nets 9.9 installed on every Ray node; this one has ep-nets 1.2.3"
        ):
            loading.forget("ep_nets_pkg.models")
            job_from_dict(
                {
                    "model": {"name": "ep_mlp"},
                    "plugin_versions": {"model ep_mlp": "ep_nets_pkg.models from ep-nets 9.9"},
                },
                "j",
            )
    finally:
        loading.forget("ep_nets_pkg.models")
        sys.modules.pop("ep_nets_pkg", None)


def test_cluster_runtime_env_keys_are_checked():
    from lp_ray.spec_loading import cluster_from_dict

    assert cluster_from_dict({"runtime_env": {"pip": ["my-plugin"]}}).runtime_env == {"pip": ["my-plugin"]}
    with pytest.raises(SpecError, match=r"c.yaml: runtime_env.conda_env: unknown key"):
        cluster_from_dict({"runtime_env": {"conda_env": "x"}}, "c.yaml")


def test_a_failing_plugin_is_one_error_line_and_writes_nothing(tmp_path):
    """The CLI as a user meets it: the plugin's own message, exit 1, no run directory, no MLflow store."""
    (tmp_path / "bad_nets.py").write_text(
        "from lp_ray.plugins import register_model\n\n"
        "@register_model('bad')\n"
        "def bad(num_classes, input_shape):\n"
        "    raise ValueError('width must divide 7')\n"
    )
    job = write_yaml(tmp_path / "job.yaml", {"name": "bad", "plugins": ["bad_nets"], "model": {"name": "bad"}})
    cluster = write_yaml(tmp_path / "cluster.yaml", {"storage_path": str(tmp_path / "runs")})
    proc = cli("run", "--job", str(job), "--cluster", str(cluster), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["error: model 'bad' (bad_nets) raised ValueError: width must divide 7"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad_nets.py", "cluster.yaml", "job.yaml"]


def test_a_submitted_command_gets_the_cluster_specs_runtime_env_and_this_folder():
    """--submit: the command's driver on the head gets what the cluster spec installs for the workers
    (a plugin package by pip), this folder (a job and its own module), and joins the cluster it runs in."""
    from lp_ray.spec_loading import cluster_from_dict
    from lp_ray.submit import EXCLUDES, submission_runtime_env

    spec = {"pip": ["lp-ray-openlth==0.1.0"], "env_vars": {"A": "1", "LP_RAY_ADDRESS": "x"}, "excludes": ["big/"]}
    env = submission_runtime_env(cluster_from_dict({"runtime_env": spec}))
    assert env == {
        "pip": ["lp-ray-openlth==0.1.0"],
        "env_vars": {"A": "1", "LP_RAY_ADDRESS": "auto"},
        "working_dir": ".",
        "excludes": [*EXCLUDES, "big/"],
    }
    assert submission_runtime_env(cluster_from_dict({}))["env_vars"] == {"LP_RAY_ADDRESS": "auto"}
