"""Training recipes (recipes.py, schedules.py) and the small vision transformer, without Ray: schedules,
what weight decay skips, AdamW's state through a checkpoint bit for bit, the rewound optimizer state, a
job's bad recipe values, and pool evaluations that skip recalibration on a network without BatchNorm."""

import math

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from lp_ray.data.base import TensorSource
from lp_ray.imp.retrain import lr_for
from lp_ray.models import build_model, prunable_tensors
from lp_ray.recipes import load_optimizer_state, make_optimizer, optimizer_state, param_groups
from lp_ray.schedules import lr_at
from lp_ray.sparsity import dense_mask, prune_fraction
from lp_ray.spec import ModelSpec, TrainSpec, default_job, run_hash
from lp_ray.spec_loading import SpecError, load_job
from lp_ray.training import epoch_seed, masked_train_epoch

CPU = torch.device("cpu")
VIT = ModelSpec(name="vit", width=16, depth=2, heads=2, patch_size=4)
ADAMW = dict(
    optimizer="adamw", lr=1e-3, schedule="cosine", warmup_epochs=1, weight_decay=0.05, weight_decay_on="weights"
)


def test_the_step_schedule_is_the_paper_s_every_step_of_an_epoch():
    t = TrainSpec()  # lr 0.1, drops at 20 and 30
    assert [lr_at(t, e) for e in (0, 19, 20, 29, 30, 39)] == [
        0.1,
        0.1,
        0.1 * 0.1,
        0.1 * 0.1,
        0.1 * 0.1**2,
        0.1 * 0.1**2,
    ]
    assert {lr_at(t, 25, s, 57) for s in range(57)} == {lr_at(t, 25)}  # no change inside an epoch
    w = TrainSpec(warmup_epochs=4)
    assert [lr_at(w, e) for e in range(5)] == [0.1 * 1 / 4, 0.1 * 2 / 4, 0.1 * 3 / 4, 0.1, 0.1]


def test_cosine_warms_up_linearly_per_step_then_decays_to_zero():
    t = TrainSpec(schedule="cosine", lr=1.0, epochs=10, warmup_epochs=2)
    steps = 5
    lrs = [lr_at(t, e, s, steps) for e in range(10) for s in range(steps)]
    assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])  # warm-up: 10 steps up to lr
    assert lrs[10] == 1.0 and all(a > b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 39 / 40))) and lrs[-1] > 0
    assert lrs[30] == pytest.approx(0.5 * (1 + math.cos(math.pi * 20 / 40)))  # halfway through the decay
    # a rewound round restarts the schedule at the rewind epoch's first step; finetune runs at the last one
    assert lr_for("rewind", t, 3, 4, 0, steps) == lr_at(t, 4, 0, steps)
    assert {lr_for("finetune", t, 3, e, s, steps) for e in (4, 9) for s in (0, 4)} == {lrs[-1]}
    assert lr_at(TrainSpec(schedule="cosine", lr=1.0, epochs=10), 0, 0, steps) == 1.0  # no warm-up


def test_weight_decay_on_weights_skips_norms_biases_and_embeddings():
    model = build_model(VIT, 10, (40,))
    decayed, rest = param_groups(model, TrainSpec(weight_decay_on="weights"))
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decayed["params"]) == sorted(
        [f"blocks.{b}.{layer}.weight" for b in range(2) for layer in ("attn.qkv", "attn.proj", "fc1", "fc2")]
        + ["embed.weight", "head.weight"]
    )
    skipped = {names[id(p)] for p in rest["params"]}
    assert rest["weight_decay"] == 0.0 and {"cls_token", "pos_embed", "norm.weight", "blocks.0.norm1.bias"} <= skipped
    assert len(decayed["params"]) + len(rest["params"]) == len(list(model.parameters()))
    # the default decays every parameter in one group, the optimizer every pinned run was trained with
    (only,) = param_groups(model, TrainSpec())
    assert only["params"] == list(model.parameters())
    assert type(make_optimizer(model, TrainSpec())) is torch.optim.SGD
    opt = make_optimizer(model, TrainSpec(**ADAMW, adam_betas=[0.8, 0.99]))
    assert type(opt) is torch.optim.AdamW and opt.param_groups[0]["betas"] == (0.8, 0.99)


def _train(model, opt, spec, mask, source, epochs, grad_clip=1.0):
    idx = torch.arange(len(source))
    steps = -(-len(idx) // 16)
    for e in epochs:
        gen = torch.Generator().manual_seed(epoch_seed(0, 1, e))
        masked_train_epoch(
            model,
            opt,
            source,
            idx,
            16,
            mask,
            gen,
            CPU,
            lr_of_step=lambda s, e=e: lr_at(spec, e, s, steps),
            grad_clip=grad_clip,
        )


def test_adamw_resumes_bit_for_bit_from_its_checkpointed_state():
    """Two epochs in one go, or one, a checkpoint (optimizer_state as safetensors bytes), a fresh model and
    optimizer from it, and the second: the same bits (AdamW's moments and step count are in the state)."""
    spec = TrainSpec(**ADAMW, epochs=2)
    source = TensorSource(torch.randn(64, 40), torch.randint(0, 10, (64,)), 10)
    torch.manual_seed(0)
    a = build_model(VIT, 10, (40,))
    mask = prune_fraction(a.state_dict(), dense_mask(a.state_dict(), prunable_tensors(VIT, a, False)), 0.5)
    b = build_model(VIT, 10, (40,))
    b.load_state_dict(a.state_dict())
    opt_a = make_optimizer(a, spec)
    _train(a, opt_a, spec, mask, source, [0, 1])

    opt_b = make_optimizer(b, spec)
    _train(b, opt_b, spec, mask, source, [0])
    saved_weights, saved_opt = st_save(b.state_dict()), st_save(optimizer_state(opt_b, b))
    assert any(k.startswith("exp_avg_sq/") for k in st_load(saved_opt)) and "step/embed.weight" in st_load(saved_opt)
    assert st_load(saved_opt)["step/embed.weight"].dim() == 0
    c = build_model(VIT, 10, (40,))
    c.load_state_dict(st_load(saved_weights))
    opt_c = make_optimizer(c, spec)
    load_optimizer_state(opt_c, c, st_load(saved_opt))
    assert opt_c.state[c.embed.weight]["step"].device.type == "cpu"  # where torch keeps it (not capturable)
    _train(c, opt_c, spec, mask, source, [1])
    for name, value in a.state_dict().items():
        assert torch.equal(value, c.state_dict()[name]), name
    assert all(torch.all(a.state_dict()[n][m == 0] == 0) for n, m in mask.items())  # pruned stays zero


def test_sgd_momentum_keeps_its_checkpoint_names_and_a_rewound_state_zeroes_pruned_moments():
    model = build_model(ModelSpec(width=4), 10, (40,))
    opt = make_optimizer(model, TrainSpec())
    source = TensorSource(torch.randn(32, 40), torch.randint(0, 10, (32,)), 10)
    mask = dense_mask(model.state_dict(), prunable_tensors(ModelSpec(width=4), model, False))
    _train(model, opt, TrainSpec(), mask, source, [0], grad_clip=None)
    state = optimizer_state(opt, model)
    assert set(state) == {n for n, _ in model.named_parameters()}  # momentum under the parameter's name
    vit = build_model(VIT, 10, (40,))
    opt = make_optimizer(vit, TrainSpec(**ADAMW))
    _train(vit, opt, TrainSpec(**ADAMW), dense_mask(vit.state_dict(), prunable_tensors(VIT, vit, False)), source, [0])
    names = prunable_tensors(VIT, vit, False)
    half = prune_fraction(vit.state_dict(), dense_mask(vit.state_dict(), names), 0.5)
    fresh = make_optimizer(vit, TrainSpec(**ADAMW))
    load_optimizer_state(fresh, vit, optimizer_state(opt, vit), half)
    p = dict(vit.named_parameters())[names[0]]
    assert torch.all(fresh.state[p]["exp_avg"][half[names[0]] == 0] == 0)
    assert torch.any(fresh.state[p]["exp_avg_sq"][half[names[0]] == 1] != 0)
    from lp_ray.imp.retrain import restores_optimizer, saves_optimizer

    def job(*overrides):
        return load_job(None, list(overrides))

    assert saves_optimizer(job("train.optimizer=adamw")) and not saves_optimizer(job())
    assert saves_optimizer(job("imp.rewind_optimizer=true")) and not saves_optimizer(
        job("train.optimizer=adamw", "imp.rewind_optimizer=false")
    )
    assert restores_optimizer(job("train.optimizer=adamw"))
    assert not restores_optimizer(job("train.optimizer=adamw", "imp.retrain=lr_rewind"))  # trained weights: fresh state


def test_the_defaults_keep_every_run_hash_and_a_recipe_changes_it():
    default = run_hash(default_job())
    assert default == "53b16eb2ce"  # the default job's run, pinned since before recipes existed
    same = load_job(None, ["train.weight_decay_on=all", "imp.rewind_optimizer=null", "model.depth=4"])
    assert run_hash(same) == default
    changed = {run_hash(load_job(None, [o])) for o in ("train.optimizer=adamw", "train.schedule=cosine")}
    assert len({default, *changed}) == 3


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.optimizer=adam", "train.optimizer: unknown optimizer 'adam' (known: sgd, adamw)"),
        ("train.schedule=linear", "train.schedule: unknown schedule 'linear' (known: step, cosine)"),
        ("train.adam_betas=[0.9]", "train.adam_betas: must be two numbers in [0, 1), got [0.9]"),
        ("train.adam_eps=0", "train.adam_eps: must be positive, got 0.0"),
        ("train.weight_decay_on=norms", "train.weight_decay_on: must be one of all, weights, got 'norms'"),
        ("train.grad_clip=0", "train.grad_clip: must be positive (or null: no clipping), got 0.0"),
        ("train.grad_clip=big", "train.grad_clip: expected a number, got str 'big'"),
        ("imp.rewind_optimizer=maybe", "imp.rewind_optimizer: expected true or false, got str 'maybe'"),
        ("model.heads=5", "model.heads: must divide width=64, got 5"),
        ("model.pooling=max", "model.pooling: must be 'cls' or 'mean', got 'max'"),
        ("imp.prune_linear=true", "imp.prune_linear: vit says which of its layers are pruned"),
    ],
)
def test_a_bad_recipe_or_vit_value_is_one_error_naming_it(override, message):
    base = [] if override.startswith("train") else ["model.name=vit"]
    with pytest.raises(SpecError) as e:
        load_job(None, [*base, override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_cosine_needs_no_lr_drops_inside_its_epochs():
    job = load_job(None, ["train.schedule=cosine", "train.epochs=10"])  # the default drops (20, 30) are ignored
    assert job.train.lr_drops == [20, 30]
    with pytest.raises(SpecError, match="train.lr_drops"):
        load_job(None, ["train.epochs=10"])


@pytest.mark.parametrize("shape, tokens", [((40,), 10), ((3, 32, 32), 64)])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_the_vit_reads_1d_signals_and_images_and_prunes_its_blocks(shape, tokens, pooling):
    spec = ModelSpec(name="vit", width=16, depth=2, heads=2, patch_size=4, pooling=pooling)
    torch.manual_seed(0)
    model = build_model(spec, 10, shape)
    assert model(torch.randn(3, *shape)).shape == (3, 10)
    assert model.pos_embed.shape[1] == tokens + (pooling == "cls")
    names = prunable_tensors(spec, model, False)
    assert names == sorted(f"blocks.{b}.{n}.weight" for b in range(2) for n in ("attn.qkv", "attn.proj", "fc1", "fc2"))
    # no BatchNorm anywhere: nothing for a pool evaluation to recalibrate
    assert not any("running_mean" in k for k in model.state_dict())
    # patches are taken in order: moving one patch's values moves only that token's embedding
    x = torch.zeros(1, *shape)
    y = x.clone()
    y.view(-1)[0] = 1.0  # the first value belongs to the first patch
    a, b = model.embed(model.patches(x)), model.embed(model.patches(y))
    assert torch.equal(a[0, 1:], b[0, 1:]) and not torch.equal(a[0, 0], b[0, 0])


def test_a_patch_size_that_does_not_divide_the_input_is_one_error():
    from lp_ray.errors import LpRayError

    with pytest.raises(LpRayError, match=r"model.patch_size: 3 does not divide the input's size \(40,\)"):
        build_model(ModelSpec(name="vit", width=16, heads=2, patch_size=3), 10, (40,))


@pytest.mark.parametrize("model, recalibrated", [(VIT, False), (ModelSpec(width=4), True)])
def test_a_pool_evaluation_recalibrates_only_a_network_with_batchnorm(model, recalibrated):
    """Without BatchNorm an evaluation is the merge and one pass over validation (bn_examples 0, the
    trace's record of it); with it, the recalibration examples are counted and the statistics change."""
    from lp_ray.data.base import DataBundle
    from lp_ray.pool.core import Evaluator
    from lp_ray.training import accuracy

    x, y = torch.randn(96, 40), torch.randint(0, 10, (96,))
    data = DataBundle(
        TensorSource(x, y, 10), TensorSource(x[:16], y[:16], 10), torch.arange(64), torch.arange(64, 96), 10, (40,)
    )
    torch.manual_seed(0)
    a, b = build_model(model, 10, (40,)), build_model(model, 10, (40,))
    names = prunable_tensors(model, a, False)
    evaluator = Evaluator(build_model(model, 10, (40,)), data, names, torch.arange(64), 16)
    e = evaluator.evaluate(a.state_dict(), b.state_dict(), 0.5, None)
    assert e.bn_examples == (64 if recalibrated else 0)
    merged = {k: 0.5 * v + 0.5 * b.state_dict()[k] if v.is_floating_point() else v for k, v in a.state_dict().items()}
    plain = build_model(model, 10, (40,))
    plain.load_state_dict(merged)  # the merge as it is, statistics and all
    same = accuracy(plain, data.train, data.val_idx) == e.val_acc and all(
        torch.equal(v, evaluator.model.state_dict()[k]) for k, v in merged.items()
    )
    assert same != recalibrated


def test_mlflow_parameters_hold_the_recipe_the_job_reads():
    from lp_ray.tracking.logged import job_params

    sgd = job_params(default_job())
    assert sgd["train.optimizer"] == "sgd" and sgd["train.momentum"] == 0.9 and sgd["train.lr_drops"] == [20, 30]
    assert not any(k.startswith("train.adam") for k in sgd) and "model.depth" not in sgd
    vit = job_params(load_job("jobs/mnist1d-vit.yaml"))
    assert vit["train.adam_betas"] == [0.9, 0.999] and vit["train.schedule"] == "cosine" and vit["model.depth"] == 4
    assert "train.momentum" not in vit and "train.lr_drops" not in vit and vit["imp.rewind_epoch"] == 2


def test_a_rewind_point_without_the_optimizer_state_the_recipe_rewinds_is_one_error(tmp_path):
    from lp_ray import layout
    from lp_ray.errors import LpRayError
    from lp_ray.imp.command import check_rewind_point
    from lp_ray.store import RunDir

    run = RunDir(str(tmp_path))
    (tmp_path / layout.REWIND).write_bytes(b"weights")
    adamw = load_job("jobs/mnist1d-vit.yaml")
    with pytest.raises(LpRayError, match=r"rewind_optimizer.safetensors is missing: .* \(adamw\) rewinds"):
        check_rewind_point(adamw, run, [1, 2])
    check_rewind_point(adamw, run, [])  # nothing left to rewind
    check_rewind_point(default_job(), run, [1])  # SGD's momentum is not rewound
    check_rewind_point(load_job("jobs/mnist1d-vit.yaml", ["imp.retrain=finetune"]), run, [1])  # fresh state
    (tmp_path / layout.REWIND_OPTIMIZER).write_bytes(b"state")
    check_rewind_point(adamw, run, [1])
