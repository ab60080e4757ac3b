"""The pure numeric core of the pool: interpolation, re-pruning, merging, BatchNorm recalibration."""

import pytest
import torch
import torch.nn as nn
from torch.optim.swa_utils import update_bn

from lp_ray.data.base import TensorSource
from lp_ray.pool.core import bn_subset, interpolate, keep_count, merge, recalibrate_bn, reprune, running_stats_norms
from lp_ray.pool.methods import INTERPOLATION_POOL
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


@pytest.mark.parametrize(
    "norm, recalibrated",
    [
        (nn.BatchNorm1d(8), True),
        (nn.InstanceNorm1d(8, track_running_stats=True), False),  # torch has no cumulative average for it
        (nn.BatchNorm1d(8, track_running_stats=False), False),  # normalises by each batch, even in eval mode
        (nn.LayerNorm(2), False),
        (nn.GroupNorm(2, 8), False),
    ],
)
def test_only_norms_that_keep_running_statistics_are_recalibrated(norm, recalibrated):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Unflatten(1, (8, 2)), norm, nn.Flatten(), nn.Linear(16, 3))
    assert running_stats_norms(net) == ([norm] if recalibrated else [])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(40, 16) * 3 + 1
    recalibrate_bn(net, TensorSource(x, torch.randint(0, 3, (40,)), 3), torch.arange(40), batch_size=16)
    changed = [k for k, v in net.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == (["1.running_mean", "1.running_var", "1.num_batches_tracked"] if recalibrated else [])
    if recalibrated:  # the cumulative average over the three batches, as update_bn computes it
        means = torch.stack([x[i : i + 16].view(-1, 8, 2).mean((0, 2)) for i in range(0, 40, 16)])
        assert torch.allclose(norm.running_mean, means.mean(0), atol=1e-6)


def test_bn_subset_fixed_and_sorted():
    idx = torch.arange(0, 1000, 2)
    s1, s2 = bn_subset(idx, 50, 0), bn_subset(idx, 50, 0)
    assert torch.equal(s1, s2) and len(s1) == 50 and torch.equal(s1, s1.sort().values)
    assert set(s1.tolist()) <= set(idx.tolist())
    assert torch.equal(bn_subset(idx, None, 0), idx)


def test_merge_interpolates_then_reprunes_and_keep_count():
    cur = {"a": torch.tensor([1.0, 0.0, 3.0, 0.0]), "bias": torch.tensor([1.0])}
    cand = {"a": torch.tensor([3.0, 2.0, 1.0, 0.0]), "bias": torch.tensor([3.0])}
    keep = keep_count({"a": (cur["a"] != 0).float()})
    assert keep == 2 and keep_count({"a": torch.ones(4)}) is None  # a dense target is not re-pruned
    state, mask = merge(cur, cand, 0.5, ["a"], keep)
    assert state["a"].tolist() == [2.0, 0.0, 2.0, 0.0] and mask["a"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert state["bias"].tolist() == [2.0]  # interpolated, never pruned
    dense, nonzero = merge(cur, cand, 0.5, ["a"], None)  # no re-pruning: the mask is the nonzero positions
    assert dense["a"].tolist() == [2.0, 1.0, 2.0, 0.0] and nonzero["a"].tolist() == [1.0, 1.0, 1.0, 0.0]
    alone, _ = merge(cur, None, 0.0, ["a"], None)
    assert torch.equal(alone["a"], cur["a"])
