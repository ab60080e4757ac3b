import pytest
import torch
import torch.nn as nn
from torch.optim.swa_utils import update_bn

from lp_ray.data.base import TensorSource
from lp_ray.pool.chain import INTERPOLATION_POOL, Chain, candidate_order
from lp_ray.pool.core import bn_subset, interpolate, recalibrate_bn, reprune
from lp_ray.sparsity import survivors


def test_interpolate_by_hand():
    cur = {"w": torch.tensor([1.0, 2.0, 0.0]), "n": torch.tensor(7)}
    cand = {"w": torch.tensor([3.0, 0.0, 4.0]), "n": torch.tensor(100)}
    out = interpolate(cur, cand, 0.25)
    assert torch.allclose(out["w"], torch.tensor([1.5, 1.5, 1.0]))
    assert out["n"].item() == 7 and out["n"].dtype == torch.int64  # integer buffers are counters, untouched
    with pytest.raises(ValueError, match="differ"):
        interpolate(cur, {"w": cand["w"]}, 0.5)


def test_reprune_to_exact_count_by_hand():
    state = {"a": torch.tensor([0.5, -3.0, 0.1]), "b": torch.tensor([2.0, -0.2]), "bias": torch.tensor([9.0])}
    out, mask = reprune(state, ["a", "b"], 2)
    assert out["a"].tolist() == [0.0, -3.0, 0.0] and out["b"].tolist() == [2.0, 0.0]
    assert out["bias"].tolist() == [9.0]  # never pruned
    assert survivors(mask) == 2


def test_merge_then_reprune_keeps_target_density():
    gen = torch.Generator().manual_seed(0)
    t = {"a": torch.randn(50, generator=gen) * (torch.rand(50, generator=gen) < 0.4)}
    c = {"a": torch.randn(50, generator=gen) * (torch.rand(50, generator=gen) < 0.6)}
    keep = int((t["a"] != 0).sum())
    for alpha in INTERPOLATION_POOL:
        out, mask = reprune(interpolate(t, c, alpha), ["a"], keep)
        assert int((out["a"] != 0).sum()) == keep == survivors(mask)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x):
        return self.body(x)


def test_bn_recalibration_equals_update_bn():
    torch.manual_seed(0)
    x = torch.randn(100, 6) * 3 + 1
    y = torch.randint(0, 3, (100,))
    a = Net()
    a.body[1].running_mean.fill_(5.0)
    b = Net()
    b.load_state_dict(a.state_dict())
    idx = torch.arange(100)
    recalibrate_bn(a, TensorSource(x, y, 3), idx, batch_size=16)
    loader = [x[i : i + 16] for i in range(0, 100, 16)]
    update_bn(loader, b)
    assert torch.equal(a.body[1].running_mean, b.body[1].running_mean)
    assert torch.equal(a.body[1].running_var, b.body[1].running_var)
    assert a.body[1].momentum == 0.1  # restored


def test_bn_subset_fixed_and_sorted():
    idx = torch.arange(0, 1000, 2)
    s1, s2 = bn_subset(idx, 50, 0), bn_subset(idx, 50, 0)
    assert torch.equal(s1, s2) and len(s1) == 50 and torch.equal(s1, s1.sort().values)
    assert set(s1.tolist()) <= set(idx.tolist())
    assert torch.equal(bn_subset(idx, None, 0), idx)


def test_candidate_order_by_adjacency():
    assert candidate_order(3, list(range(6))) == [2, 4, 1, 5, 0]
    assert candidate_order(0, list(range(4))) == [1, 2, 3]
    assert candidate_order(5, list(range(6))) == [4, 3, 2, 1, 0]
    assert candidate_order(3, list(range(6)), search_num=2) == [2, 4]
    # search_num equal to the number of candidates keeps the last one (the paper's code dropped it)
    assert candidate_order(1, [0, 1, 2], search_num=2) == [0, 2]


def run_chain(chain, oracle):
    """Drive a chain with a scripted accuracy oracle: oracle[(candidate, alpha)] -> val acc."""
    while not chain.done:
        step = chain.open_step()
        chain.decide([oracle[(step.candidate, a)] for a in step.alphas])
    return chain


def test_greedy_rule_strict_improvement_first_alpha_on_ties_and_order():
    coeffs = [0.2, 0.5, 0.8]
    oracle = {
        (2, 0.0): 0.70,
        (1, 0.2): 0.69,
        (1, 0.5): 0.72,
        (1, 0.8): 0.72,  # tie: first alpha (0.5) wins, accepted
        (3, 0.2): 0.72,
        (3, 0.5): 0.71,
        (3, 0.8): 0.60,  # equal to best: NOT accepted (strict >)
        (0, 0.2): 0.75,
        (0, 0.5): 0.74,
        (0, 0.8): 0.76,
    }  # best alpha 0.8, accepted
    chain = run_chain(Chain(2, candidate_order(2, [0, 1, 2, 3]), coefficients=coeffs), oracle)
    assert [d.step.candidate for d in chain.decisions] == [2, 1, 3, 0]
    assert [(d.step.candidate, d.alpha, d.accepted) for d in chain.decisions[1:]] == [
        (1, 0.5, True),
        (3, 0.2, False),
        (0, 0.8, True),
    ]
    assert chain.best == 0.76
    assert [d.step.candidate for d in chain.accepted] == [1, 0]


def test_nothing_better_nothing_accepted():
    oracle = {(0, 0.0): 0.9, **{(1, a): 0.5 for a in INTERPOLATION_POOL}}
    chain = run_chain(Chain(0, [1]), oracle)
    assert chain.accepted == [] and chain.best == 0.9


def test_method_coefficients():
    assert Chain(0, [1]).alphas() == tuple(INTERPOLATION_POOL)
    assert Chain(0, [1], "average").alphas() == (0.5,)
    assert Chain(0, [1], "ema", ema_decay=0.95).alphas() == pytest.approx((0.05,))
    swa = Chain(0, [1, 2, 3], "swa")
    seen = []
    oracle = lambda: 0.1  # noqa: E731 (accuracy does not matter: swa accepts everything)
    while not swa.done:
        step = swa.open_step()
        seen.append(step.alphas)
        swa.decide([oracle() for _ in step.alphas])
    assert seen == [(0.0,), (1 / 2,), (1 / 3,), (1 / 4,)]  # a running mean of 1, 2, 3, 4 tickets
    assert len(swa.accepted) == 3
    with pytest.raises(ValueError, match="unknown pool method"):
        Chain(0, [1], "magic")
