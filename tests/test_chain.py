"""The greedy chain (pool/chain.py) and the pool-method registry (pool/methods.py): pure decisions from
scripted accuracies, no weights."""

import pytest

from lp_ray.pool.chain import Chain, candidate_order
from lp_ray.pool.methods import INTERPOLATION_POOL, METHODS


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


def test_registry_says_what_each_method_does():
    assert list(METHODS) == ["interpolation", "average", "swa", "ema", "prune_after"]
    assert [name for name, m in METHODS.items() if not m.reprunes] == ["prune_after"]
    assert METHODS["interpolation"].accepts(0.5, 0.4) and not METHODS["interpolation"].accepts(0.4, 0.4)
    assert METHODS["swa"].accepts(0.1, 0.9) and METHODS["ema"].accepts(0.1, 0.9)  # baselines merge everything
    assert METHODS["average"].coefficients(1, (0.3,), 0.95) == (0.3,)  # the user's pool wins
    assert METHODS["swa"].coefficients(3, (0.3,), 0.95) == (0.25,)  # swa/ema have no pool to override
    for name in METHODS:  # every registered method drives a chain to the end
        chain = run_chain(Chain(1, [0, 2], name), _Flat(0.5))
        assert chain.done and len(chain.decisions) == 3


class _Flat(dict):
    """An oracle that scores every merge the same."""

    def __init__(self, acc):
        super().__init__()
        self.acc = acc

    def __missing__(self, key):
        return self.acc
