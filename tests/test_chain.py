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


def run_screening(chain, screen, full):
    """Drive a fast (screening) chain: screen[(candidate, alpha)] and full[(candidate, alpha)] are the
    accuracies with the subset and with the full recalibration. Returns the evaluations asked for."""
    asked = []
    while not chain.done:
        step = chain.open_step()
        oracle = full if step.stage == "confirm" else screen
        asked += [(step.stage, step.candidate, a) for a in step.alphas]
        chain.decide([oracle[(step.candidate, a)] for a in step.alphas])
    return asked


def test_fast_chain_screens_then_confirms_what_the_screen_would_accept():
    coeffs = [0.2, 0.5]
    screen = {(2, 0.0): 0.70, (1, 0.2): 0.71, (1, 0.5): 0.73, (3, 0.2): 0.69, (3, 0.5): 0.70, (0, 0.2): 0.74}
    screen[(0, 0.5)] = 0.72
    # The full recalibration disagrees with the screen on candidate 1: its winner is not confirmed.
    full = {(2, 0.0): 0.71, (1, 0.5): 0.705, (0, 0.2): 0.73}
    chain = Chain(2, [1, 3, 0], coefficients=coeffs, screening=True)
    asked = run_screening(chain, screen, full)
    assert asked == [
        ("screen", 2, 0.0),
        ("confirm", 2, 0.0),  # step 0: both bests start from the target itself
        ("screen", 1, 0.2),
        ("screen", 1, 0.5),
        ("confirm", 1, 0.5),  # 0.73 > 0.70 on the screen: confirmed, 0.705 < 0.71: rejected
        ("screen", 3, 0.2),
        ("screen", 3, 0.5),  # 0.70 is not > 0.70: rejected on the screen, never confirmed
        ("screen", 0, 0.2),
        ("screen", 0, 0.5),
        ("confirm", 0, 0.2),  # 0.74 > 0.70 on the screen, 0.73 > 0.71 confirmed: accepted
    ]
    assert [(d.step.candidate, d.step.stage, d.alpha, d.accepted) for d in chain.decisions] == [
        (2, "confirm", 0.0, False),
        (1, "confirm", 0.5, False),
        (3, "screen", 0.5, False),
        (0, "confirm", 0.2, True),
    ]
    assert (chain.best, chain.best_screen) == (0.73, 0.74)


def test_fast_chain_of_a_method_that_merges_everything_is_never_confirmed_after_step_0():
    chain = Chain(1, [0, 2], "swa", screening=True)
    asked = run_screening(chain, _Flat(0.5), _Flat(0.6))
    assert [s for s, _, _ in asked] == ["screen", "confirm", "screen", "screen"]
    assert len(chain.accepted) == 2
