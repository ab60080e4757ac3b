"""The pool search with the serial executor on a hand-built run directory (no Ray, no training):
exact densities, output files, resume from a partial trace without re-evaluating anything."""

import pytest
import torch
import yaml

from lp_ray.data.loading import materialize_data
from lp_ray.errors import LpRayError
from lp_ray.models import build_model
from lp_ray.opened_run import open_run
from lp_ray.pool.executors import SerialExecutor, build_evaluator
from lp_ray.pool.search import PoolSearch, QuietListener
from lp_ray.sparsity import dense_mask, prunable_names, prune_fraction, survivors
from lp_ray.spec import PoolSpec, job_to_dict
from lp_ray.spec_loading import job_from_dict
from lp_ray.store import RunDir, TicketMeta, decode_weights, write_ticket

JOB = {
    "name": "fake",
    "data": {"dataset": "synthetic", "shape": [40], "num_classes": 4, "num_train": 300, "num_test": 100},
    "model": {"name": "conv1d", "width": 8},
    "train": {"epochs": 4, "lr_drops": [2], "batch_size": 50},
    "imp": {"rounds": 4, "rewind_epoch": 1},
}


def make_run(path) -> str:
    """Four tickets of one random network pruned 20% at a time, with slightly perturbed weights."""
    job = job_from_dict(JOB)
    run = RunDir(str(path))
    run.write_bytes("job.yaml", yaml.safe_dump(job_to_dict(job)).encode())
    data = materialize_data(job, run)
    torch.manual_seed(0)
    model = build_model(job.model, data.num_classes, data.input_shape)
    names = prunable_names(model)
    state = model.state_dict()
    mask = dense_mask(state, names)
    for r in range(4):
        if r:
            mask = prune_fraction(state, mask, 0.2)
        w = {k: (v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v.clone()) for k, v in state.items()}
        w = {k: (v * mask[k] if k in mask else v) for k, v in w.items()}
        write_ticket(
            run,
            r,
            w,
            mask,
            TicketMeta(
                round=r, density=survivors(mask) / sum(m.numel() for m in mask.values()), val_acc=0.3, test_acc=0.3
            ),
        )
    return run.uri


class Recorder(QuietListener):
    """Writes down which events the search sent, by name."""

    def __init__(self, events: list):
        self.events = events

    def on_evaluation(self, target):
        self.events.append("evaluation")

    def on_target_done(self, result, skipped):
        self.events.append("target_done")


def pool(uri, settings, events=None):
    pr = open_run(uri)
    ex = SerialExecutor(build_evaluator(job_to_dict(pr.job), uri, 1, settings))
    search = PoolSearch(pr, settings, ex, Recorder(events) if events is not None else None)
    return search, search.run()


def test_pooled_tickets_have_exactly_target_density(tmp_path):
    uri = make_run(tmp_path / "run")
    driver, results = pool(uri, PoolSpec(coefficients=[0.3, 0.7]))
    pr = open_run(uri)
    assert sorted(results) == [0, 1, 2, 3]
    for t in results:
        state, mask = decode_weights(RunDir(uri).read_bytes(f"pool/interpolation/target_{t:02d}.safetensors"), "x")
        target_survivors = survivors(pr.masks[t])
        nonzero = sum(int((state[n] != 0).sum()) for n in pr.prunable)
        assert nonzero == target_survivors == survivors(mask)
    # every evaluated step of a sparse target sat at exactly the target density
    trace = RunDir(uri).read_table("pool/interpolation/trace.parquet").to_pylist()
    for row in trace:
        if row["target"] > 0:
            assert row["density"] == pytest.approx(pr.metas[row["target"]].density, abs=0)
    assert len(trace) == 4 * (1 + 3 * 2)
    assert RunDir(uri).exists("pool/interpolation/summary.parquet")


def test_resume_from_partial_trace_reevaluates_nothing(tmp_path):
    uri = make_run(tmp_path / "run")
    settings = PoolSpec(coefficients=[0.2, 0.5, 0.8])
    full, results = pool(uri, settings)
    run = RunDir(uri)
    trace = run.read_table("pool/interpolation/trace.parquet").to_pylist()

    # Simulate a crash: targets 2 and 3 unfinished, their trace cut after two decided steps.
    from lp_ray.pool.records import trace_table

    kept = [r for r in trace if r["target"] in (0, 1) or r["step"] < 2]
    run.write_table("pool/interpolation/trace.parquet", trace_table(kept))
    for t in (2, 3):
        run.delete(f"pool/interpolation/target_{t:02d}.json")
    events = []
    again, results2 = pool(uri, settings, events)
    assert again.evaluations_replayed == 2 * (1 + 3)
    fresh_rows = len(trace) - len(kept)
    finals = sum(1 for t in (2, 3) if results[t].accepted)
    assert again.evaluations_done == fresh_rows + finals + 2  # + each unfinished target's LT+BN control
    for t in results:
        assert results2[t] == results[t]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "node")} for r in rows]  # noqa: E731
    key = lambda r: (r["target"], r["step"], r["alpha"])  # noqa: E731
    assert sorted(strip(run.read_table("pool/interpolation/trace.parquet").to_pylist()), key=key) == sorted(
        strip(trace), key=key
    )


def test_changed_settings_refused(tmp_path):
    uri = make_run(tmp_path / "run")
    pool(uri, PoolSpec(coefficients=[0.5], targets=[1]))
    with pytest.raises(LpRayError, match=r"holds a search with different settings \(coefficients\); pass --overwrite"):
        pool(uri, PoolSpec(coefficients=[0.4], targets=[1]))
    with pytest.raises(LpRayError, match=r"--targets: round\(s\) \[7\] have no finished ticket"):
        pool(uri, PoolSpec(coefficients=[0.5], targets=[7]))


def test_swa_and_ema_merge_every_candidate(tmp_path):
    uri = make_run(tmp_path / "run")
    _, swa = pool(uri, PoolSpec(method="swa", targets=[0, 2]))
    assert swa[2].accepted == [1, 3, 0] and swa[2].alphas == pytest.approx([1 / 2, 1 / 3, 1 / 4])
    _, ema = pool(uri, PoolSpec(method="ema", targets=[1]))
    assert ema[1].alphas == pytest.approx([0.05, 0.05, 0.05])
    assert swa[0].density == 1.0  # the dense target stays dense


def test_controls_predictions_and_the_no_accept_rule(tmp_path):
    """LT+BN is the ticket recalibrated, nothing merged; a chain that accepts nothing yields exactly that
    network (the one whose validation accuracy the chain decided on), and every stored prediction
    column scores the accuracy its record says."""
    from lp_ray.data.loading import load_data
    from lp_ray.pool.records import read_predictions
    from lp_ray.training import accuracy

    uri = make_run(tmp_path / "run")
    # average (alpha 0.5 only) on these perturbed tickets: some chains accept nothing.
    driver, results = pool(uri, PoolSpec(method="average"))
    run, pr = RunDir(uri), open_run(uri)
    data = load_data(pr.job, run)
    trace = run.read_table("pool/average/trace.parquet").to_pylist()
    model = build_model(pr.job.model, data.num_classes, data.input_shape)
    none_accepted = 0
    for t, r in results.items():
        step0 = next(row for row in trace if row["target"] == t and row["step"] == 0)
        assert r.lt_bn_val_acc == step0["val_acc"]  # the control is step 0's network, scored on test too
        preds = read_predictions(run, "average", r).to_pydict()
        label = preds["label"]

        def score(col, preds=preds, label=label):
            return sum(p == y for p, y in zip(preds[col], label, strict=True)) / len(label)

        assert score("pooled") == r.test_acc and score("lt_bn") == r.lt_bn_test_acc
        model.load_state_dict(pr.tickets[t])  # LT: the ticket as trained, scored directly
        assert score("lt") == accuracy(model, data.test, torch.arange(len(data.test)))
        if not r.accepted:
            none_accepted += 1
            assert (r.val_acc, r.test_acc) == (r.lt_bn_val_acc, r.lt_bn_test_acc)
            assert preds["pooled"] == preds["lt_bn"]
            state, mask = decode_weights(run.read_bytes(f"pool/average/target_{t:02d}.safetensors"), "x")
            assert all(torch.equal(mask[n], pr.masks[t][n]) for n in mask)
    assert none_accepted >= 1, "no chain accepted nothing: the rule was not exercised"


def test_fast_search_screens_on_a_fixed_subset_and_resumes_with_the_same_decisions(tmp_path):
    """pool.search fast on the hand-built run: every evaluation is recorded with its stage and cost
    (the examples BatchNorm saw), the screening subset is a fixed seeded 10% of the training split, the
    pooled networks are fully recalibrated, and a search cut mid-way resumes to the same decisions
    without re-evaluating anything recorded."""
    from lp_ray.pool.core import screen_subset

    uri = make_run(tmp_path / "run")
    settings = PoolSpec(coefficients=[0.2, 0.5, 0.8], search="fast")
    search, results = pool(uri, settings)
    assert search.name == "interpolation-fast"
    run, pr = RunDir(uri), open_run(uri)
    trace = run.read_table("pool/interpolation-fast/trace.parquet").to_pylist()
    n_train = len(pr.data.train_idx)
    subset = screen_subset(pr.data.train_idx, 0.1, pr.job.data.split_seed)
    assert len(subset) == round(0.1 * n_train) and torch.equal(
        subset, screen_subset(pr.data.train_idx, 0.1, pr.job.data.split_seed)
    )
    assert {r["bn_examples"] for r in trace if r["stage"] == "screen"} == {len(subset)}
    assert {r["bn_examples"] for r in trace if r["stage"] == "confirm"} == {n_train}
    for t in results:  # step 0 is screened and confirmed; every other step screened, confirmed when promising
        rows = [r for r in trace if r["target"] == t]
        assert [r["stage"] for r in rows if r["step"] == 0] == ["screen", "confirm"]
        confirms = [r for r in rows if r["stage"] == "confirm" and r["step"] > 0]
        assert all(len([c for c in confirms if c["step"] == s]) == 1 for s in {c["step"] for c in confirms})
        accepted = [r for r in rows if r["accepted"]]
        assert all(r["stage"] == "confirm" for r in accepted)
        assert sorted(r["candidate"] for r in accepted) == sorted(results[t].accepted)
    cut = [r for r in trace if r["target"] in (0, 1) or r["step"] < 2]
    from lp_ray.pool.records import trace_table

    run.write_table("pool/interpolation-fast/trace.parquet", trace_table(cut))
    for t in (2, 3):
        run.delete(f"pool/interpolation-fast/target_{t:02d}.json")
    again, results2 = pool(uri, settings)
    assert again.evaluations_replayed == len([r for r in cut if r["target"] in (2, 3)])
    assert results2 == results
    strip = lambda rows: sorted(  # noqa: E731
        ({k: v for k, v in r.items() if k not in ("seconds", "node")} for r in rows),
        key=lambda r: (r["target"], r["step"], r["stage"], r["alpha"]),
    )
    assert strip(run.read_table("pool/interpolation-fast/trace.parquet").to_pylist()) == strip(trace)
