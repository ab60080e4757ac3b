"""What is checked about a job before anything is started or written (a run directory, an MLflow run,
a Ray worker): its data is there, and a plugin's network and data hold against the contract
(docs/plugins.md)."""

from __future__ import annotations

from lp_ray.spec import JobSpec


def preflight(job: JobSpec) -> None:
    from lp_ray.data.registry import preflight as data_is_there

    data_is_there(job)
    if job.plugin_versions:
        check_job_plugins(job)


def check_job_plugins(job) -> None:
    """Before anything starts: the job's network on a batch of its data's shape gives one score per
    class, and the tensors it prunes exist. Built on the CPU from a fixed seed; writes nothing."""
    import torch

    from lp_ray.data.registry import lookup
    from lp_ray.models import build_model, prunable_tensors
    from lp_ray.plugins import PluginError
    from lp_ray.plugins.checks import call_plugin

    num_classes, input_shape = lookup(job.data.dataset).shape(job.data)
    classes = job.model.num_classes or num_classes
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(job.model, num_classes, input_shape)
    prunable_tensors(job.model, model, job.imp.prune_linear)
    model.eval()
    what = f"model {job.model.name!r}"
    with torch.no_grad():
        out = call_plugin(f"{what} on a batch of shape {(2, *input_shape)}", model, torch.zeros(2, *input_shape))
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PluginError(
            f"{what}: a batch of 2 examples of shape {tuple(input_shape)} gave {got}, expected (2, {classes}) class scores"
        )
