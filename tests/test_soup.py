"""Particle soups (imp/soup.py): pure numbers, no Ray."""

import pytest
import torch

from lp_ray.imp.soup import SOUPS, make_soup, mean_state


def _state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(8, 4, 3, generator=g),
        "bn.running_mean": torch.randn(8, generator=g),
        "bn.num_batches_tracked": torch.tensor(100 + seed),
    }


def test_the_soup_of_identical_particles_is_the_particle_bit_for_bit():
    p = _state(0)
    for m in (2, 3, 7):
        soup = mean_state([p] * m)
        assert all(torch.equal(soup[k], p[k]) for k in p)
    # a plain sum divided by m does not promise that in floating point, which is why the soup avoids it
    x = torch.tensor([0.1, 1 / 3, 2.7182817], dtype=torch.float32)
    assert any(not torch.equal(sum([x] * m) / m, x) for m in (3, 5, 6, 7, 9, 11))


def test_uniform_soup_is_the_mean_and_keeps_counters_and_pruned_zeros():
    states = [_state(s) for s in range(3)]
    for s in states:
        s["conv.weight"][:, :, 0] = 0.0  # the round's shared mask
    soup, members, val = make_soup("uniform", states, [0.5, 0.6, 0.7], lambda s: 0.42)
    assert members == [0, 1, 2] and val == 0.42
    expected = sum(s["conv.weight"] for s in states) / 3
    assert torch.allclose(soup["conv.weight"], expected, atol=1e-6)
    assert torch.count_nonzero(soup["conv.weight"][:, :, 0]) == 0
    assert soup["bn.num_batches_tracked"].item() == 100  # a counter, not averaged


def test_greedy_soup_adds_best_first_and_keeps_a_particle_only_if_validation_does_not_drop():
    states = [_state(s) for s in range(4)]
    scores = {}

    def score(state):
        # validation of a soup, decided by which particles are in it (read off the mean's first entry)
        key = round(float(state["conv.weight"].flatten()[0]), 5)
        return scores.get(key, 0.0)

    def key_of(members):
        return round(float(mean_state([states[i] for i in members])["conv.weight"].flatten()[0]), 5)

    # particle 2 is best on its own, then 0; adding 0 keeps 0.80; adding 3 drops; adding 1 raises
    scores[key_of([2])] = 0.80
    scores[key_of([2, 0])] = 0.80  # equal: it joins
    scores[key_of([2, 0, 3])] = 0.70
    scores[key_of([2, 0, 1])] = 0.85
    soup, members, val = make_soup("greedy", states, [0.60, 0.50, 0.70, 0.55], score)
    assert members == [2, 0, 1] and val == 0.85
    assert all(torch.equal(soup[k], mean_state([states[i] for i in (2, 0, 1)])[k]) for k in soup)
    # the particles themselves are untouched
    assert torch.equal(states[0]["conv.weight"], _state(0)["conv.weight"])


def test_unknown_soup_and_empty_soup_are_errors():
    assert set(SOUPS) == {"uniform", "greedy"}
    with pytest.raises(ValueError, match="unknown soup 'best'"):
        make_soup("best", [_state(0)], [0.5], lambda s: 0.0)
    with pytest.raises(ValueError, match="at least one particle"):
        mean_state([])
