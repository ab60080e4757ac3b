import math

import torch

from lp_ray.sparsity import apply_mask, dense_mask, density, density_report, keep_top_k, prune_fraction, survivors


def test_keep_top_k_is_global_and_exact():
    w = {"a": torch.tensor([0.1, -5.0, 0.3]), "b": torch.tensor([[2.0, -0.2], [0.05, 4.0]])}
    m = keep_top_k(w, ["a", "b"], 3)
    assert m["a"].tolist() == [0.0, 1.0, 0.0]
    assert m["b"].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert survivors(m) == 3


def test_ties_broken_by_position_deterministically():
    w = {"a": torch.ones(4), "b": torch.ones(4)}
    m = keep_top_k(w, ["b", "a"], 5)  # tensors are taken in name order whatever order they are given
    assert m["a"].tolist() == [1, 1, 1, 1] and m["b"].tolist() == [1, 0, 0, 0]
    assert keep_top_k(w, ["a", "b"], 5)["b"].tolist() == m["b"].tolist()


def test_prune_fraction_of_remaining_only_among_survivors():
    gen = torch.Generator().manual_seed(0)
    w = {"x": torch.randn(1000, generator=gen), "y": torch.randn(24, 10, generator=gen)}
    mask = dense_mask(w, ["x", "y"])
    counts = [survivors(mask)]
    for _ in range(5):
        new = prune_fraction(w, mask, 0.2)
        # only surviving weights may survive again
        for k in mask:
            assert torch.all(new[k] <= mask[k])
        mask = new
        counts.append(survivors(mask))
    expected = [1240]
    for _ in range(5):
        expected.append(expected[-1] - math.ceil(0.2 * expected[-1]))
    assert counts == expected
    assert abs(density(mask) - 0.8**5) < 0.002


def test_pruned_weights_are_the_smallest():
    w = {"x": torch.tensor([3.0, -1.0, 0.5, 2.0, -4.0])}
    m = prune_fraction(w, dense_mask(w, ["x"]), 0.4)
    assert m["x"].tolist() == [1, 0, 0, 1, 1]
    assert apply_mask(w, m)["x"].tolist() == [3.0, 0.0, 0.0, 2.0, -4.0]


def test_density_report_rows():
    m = {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([1.0, 1.0, 0.0, 0.0])}
    rows = density_report(m)
    assert rows[0] == {"layer": "a", "size": 2, "survivors": 1, "density": 0.5}
    assert rows[-1]["survivors"] == 3 and rows[-1]["size"] == 6


def test_selection_keeps_exactly_what_a_stable_descending_sort_keeps():
    """keep_top_k selects in O(n) instead of sorting: on many ties, disallowed positions and every k it
    must keep exactly the first k of a stable descending sort (the rule the masks were made with)."""
    g = torch.Generator().manual_seed(0)
    for trial in range(2000):
        n = int(torch.randint(1, 50, (1,), generator=g))
        w = torch.randint(-3, 4, (n,), generator=g).float() * 0.5 if trial % 3 else torch.randn(n, generator=g)
        allowed = (torch.rand(n, generator=g) > 0.3).float()
        k = int(torch.randint(0, n + 1, (1,), generator=g))
        scores = torch.where(allowed > 0, w.abs().double(), torch.tensor(-1.0, dtype=torch.float64))
        expected = torch.zeros(n)
        expected[torch.sort(scores, descending=True, stable=True).indices[:k]] = 1.0
        assert torch.equal(keep_top_k({"w": w}, ["w"], k, allowed={"w": allowed})["w"], expected), (w, allowed, k)
