"""lp_ray/stats.py against values computed by hand."""

import pytest

from lp_ray.stats import compare_counts, holm, mcnemar_exact, mcnemar_p, paired_bootstrap_ci, paired_t_ci


def test_mcnemar_exact_on_2x2_tables():
    # n = 6 discordant, split 1:5 -> 2 * (C(6,0) + C(6,1)) / 2^6 = 2 * 7 / 64
    assert mcnemar_p(1, 5) == pytest.approx(14 / 64)
    assert mcnemar_p(5, 1) == pytest.approx(14 / 64)  # two-sided
    assert mcnemar_p(0, 6) == pytest.approx(2 / 64)
    assert mcnemar_p(3, 3) == 1.0 and mcnemar_p(0, 0) == 1.0
    # per-example correctness: both right, both wrong, only A (x2), only B (x1)
    a = [True, False, True, True, False]
    b = [True, False, False, False, True]
    assert mcnemar_exact(a, b) == (2, 1, pytest.approx(1.0))  # 2:1 of 3: 2 * (1 + 3) / 8 = 1
    with pytest.raises(ValueError, match="different examples"):
        mcnemar_exact([True], [True, False])


def test_holm_on_a_fixed_list():
    # sorted 0.01, 0.03, 0.04, 0.5 times 4, 3, 2, 1 = 0.04, 0.09, 0.08 -> 0.09 (monotone), 0.5
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_paired_bootstrap_ci_by_hand():
    # two seeds with differences 0 and 1: resampled means are 0, 0.5, 1 with probability 1/4, 1/2, 1/4,
    # so the 2.5% and 97.5% quantiles are exactly 0 and 1
    ci = paired_bootstrap_ci([0.5, 2.0], [0.5, 1.0], resamples=10_000, seed=3)
    assert (ci.mean, ci.low, ci.high, ci.n) == (0.5, 0.0, 1.0, 2) and not ci.excludes_zero
    constant = paired_bootstrap_ci([1.2, 1.3, 1.4], [1.0, 1.1, 1.2])
    assert constant.low == pytest.approx(0.2) and constant.high == pytest.approx(0.2) and constant.excludes_zero
    one = paired_bootstrap_ci([0.9], [0.7])
    assert (one.low, one.high) == (pytest.approx(0.2), pytest.approx(0.2))
    # seeded: the same inputs give the same interval; another seed, another interval
    sample = ([0.1, 0.4, -0.2, 0.3, 0.0], [0.0] * 5)
    assert paired_bootstrap_ci(*sample, seed=7) == paired_bootstrap_ci(*sample, seed=7)
    assert paired_bootstrap_ci(*sample, seed=7) != paired_bootstrap_ci(*sample, seed=8)
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap_ci([1.0, 2.0], [1.0])


def test_compare_counts():
    assert compare_counts([1, 2, 3, 4], [2, 2, 1, 0]) == (2, 1, 1)


def test_paired_t_ci_by_hand():
    # differences 1, 2, 3: mean 2, sd 1, se 1/sqrt(3); t(0.975, 2 df) = 4.302653 -> 2 -/+ 2.484138
    ci = paired_t_ci([2, 4, 6], [1, 2, 3])
    assert (ci.mean, ci.n) == (2.0, 3)
    assert ci.low == pytest.approx(2 - 2.484138, abs=1e-6) and ci.high == pytest.approx(2 + 2.484138, abs=1e-6)
    one = paired_t_ci([1.0], [0.0])
    assert one.mean == 1.0 and one.low != one.low  # one seed: no interval (nan)
