"""Tickets and pooled networks as MLflow LoggedModels (docs/architecture.md, "Tracking"): each in the
experiment's Models tab with its metrics and params, linked to the run that made it, loadable with
`mlflow.pytorch.load_model("models:/<id>")` and registrable in the Model Registry.

Which networks are logged is a policy (`LOG_MODELS`, the one list of them); the weights stay in the run
directory either way. A network is saved in torch.export's format ("pt2"): a traced graph, loaded without
lp-ray or the plugin that defines it and without unpickling anything; a network torch.export cannot trace
is saved with pickle instead (its LoggedModel's tag `lp_ray.serialization` says which).

Logging is idempotent: a LoggedModel is found again by its key (its run and what it is: "ticket 03",
"interpolation target 09"), one left PENDING by a killed command is completed, a READY one is left.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import time

from lp_ray.errors import LpRayError

# What --log-models can say, and what each logs (besides runs and metrics, which are always logged).
LOG_MODELS = {
    "best": "per search, its best pooled network (largest validation gain over its ticket)",
    "pooled": "every pooled network",
    "all": "every pooled network and every ticket",
    "none": "no network",
}
DEFAULT_LOG_MODELS = "best"
TAG_KEY = "lp_ray.network_key"
TAG_SHA = "network_sha256"
TAG_URI = "network_uri"


def check_log_models(policy: str) -> str:
    if policy not in LOG_MODELS:
        raise LpRayError(f"--log-models must be one of {', '.join(LOG_MODELS)}, got {policy!r}")
    return policy


def logs_tickets(policy: str) -> bool:
    return policy == "all"


def logs_every_pooled(policy: str) -> bool:
    return policy in ("all", "pooled")


def best_target(results: dict) -> int:
    """The search's best pooled network, decided on validation: the largest gain over its ticket's
    validation accuracy, the sparser of a tie (its test accuracy is never looked at)."""
    return max(results, key=lambda t: (results[t].val_acc - results[t].lt_val_acc, -results[t].density))


def model_name(kind: str, density: float, target: int) -> str:
    """A LoggedModel's name, sparsity first: "13,4pct weights · interpolation · target 09" (MLflow
    refuses '.', '%', '/' and ':' in model names)."""
    weights = f"{100 * density:.1f}".replace(".", ",")
    return f"{weights}pct weights · {kind} · {'round' if kind == 'ticket' else 'target'} {target:02d}"


def log_network(
    tracker,
    run_id: str,
    key: str,
    name: str,
    network,
    example,
    params: dict[str, str],
    tags: dict[str, str],
    metrics: dict[str, float | None],
) -> str:
    """The LoggedModel of one network (`network`: an nn.Module in eval mode, `example`: a numpy batch
    of its inputs), created once under `run_id`; its id. Its `metrics` are logged as `network/<name>`
    (step 0) on the run, attached to the model: MLflow attaches a model's metrics to a run, and the
    run's own per-round and per-target series must not gain a second entry per step. The run shows
    the last logged network's (the callers log the best one last)."""
    full_key = f"{run_id}/{key}"
    found = find(tracker, full_key)
    if found is not None and str(found.status).endswith("READY"):
        return found.model_id
    client = tracker.client
    model = found or client.create_logged_model(
        tracker.experiment_id,
        name=name,
        source_run_id=run_id,
        tags={TAG_KEY: full_key, **tags},
        params={k: str(v)[:6000] for k, v in params.items()},
        model_type="lp-ray network",
    )
    with tempfile.TemporaryDirectory() as d:
        fmt = _save(network, example, f"{d}/model")
        client.log_model_artifacts(model.model_id, f"{d}/model")
    client.set_logged_model_tags(model.model_id, {"lp_ray.serialization": fmt})
    from mlflow.entities import LoggedModelOutput, Metric

    now = int(1000 * time.time())
    values = [Metric(f"network/{k}", v, now, 0, model_id=model.model_id) for k, v in metrics.items() if v is not None]
    if values and not (found is not None and found.metrics):  # (a half-logged one may have them already)
        client.log_batch(run_id, metrics=values)
    # the run's "Logged models" (its page, and the runs table's Models column) lists its outputs
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, 0)])
    client.finalize_logged_model(model.model_id, "READY")  # last: READY means whole
    return model.model_id


def find(tracker, full_key: str):
    models = tracker.client.search_logged_models(
        [tracker.experiment_id], filter_string=f"tags.`{TAG_KEY}` = '{full_key}'", max_results=1
    )
    return models[0] if models else None


def _save(network, example, path: str) -> str:
    """Save in pt2 (torch.export), or pickle where the network cannot be traced; the format used."""
    import mlflow.pytorch
    import torch

    requirements = [f"torch=={torch.__version__.split('+')[0]}"]
    try:
        mlflow.pytorch.save_model(
            network, path, input_example=example, serialization_format="pt2", pip_requirements=requirements
        )
        return "pt2"
    except Exception:  # torch.export cannot trace every network (data-dependent control flow)
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        mlflow.pytorch.save_model(network, path, serialization_format="pickle", pip_requirements=requirements)
        return "pickle"


# --------------------------------------------------------------------------------------------------
# The Model Registry

_NAME = re.compile(r"^[A-Za-z0-9][\w.\- ]{0,255}$")
_ALIAS = re.compile(r"^[A-Za-z][\w\-]{0,254}$")


def check_registration(name: str, alias: str | None) -> None:
    """A registered model's name and alias as the Model Registry accepts them, checked before anything runs."""
    if not _NAME.match(name):
        raise LpRayError(f"{name!r} is not a registered model name (letters, digits, '_', '-', '.', ' ')")
    if alias is not None and (not _ALIAS.match(alias) or alias.lower() == "latest" or re.match(r"^v\d+$", alias)):
        raise LpRayError(
            f"alias {alias!r} is not a Model Registry alias (a letter, then letters, digits, '_' or '-'; not "
            "'latest' or v<number>)"
        )


@contextlib.contextmanager
def _global_tracking_uri(uri: str):
    """MLflow's SQL registry resolves a `models:/` source through the process-global tracking URI, not
    the client's (a TODO in its sqlalchemy_store): for a SQLite store, point it at ours while a version
    is created, then back."""
    import mlflow

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


def register(tracker, model_id: str, name: str, alias: str | None, description: str) -> str:
    """A version of registered model `name` for LoggedModel `model_id` (the existing one if it has one),
    with `alias` pointing at it; its version number."""
    from mlflow.exceptions import MlflowException

    client = tracker.client
    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if "RESOURCE_ALREADY_EXISTS" not in str(e.error_code):
            raise
    model = client.get_logged_model(model_id)
    # (a version's model_id reads back as None from a SQL registry: its source names the model)
    versions = [v for v in client.search_model_versions(f"name = '{name}'") if v.source == f"models:/{model_id}"]
    version = versions[0] if versions else None
    if version is None:
        with _global_tracking_uri(tracker.uri):
            version = client.create_model_version(
                name,
                source=f"models:/{model_id}",
                run_id=model.source_run_id,
                model_id=model_id,
                description=description,
            )
    if alias is not None:
        client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)
