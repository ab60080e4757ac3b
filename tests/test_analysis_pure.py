"""The analyses' pure parts against values computed by hand: barriers, disagreement, ensembles,
corruptions (no Ray, no MLflow, no training)."""

import numpy as np
import pytest
import torch

from lp_ray.analysis.compute import corruptions, disagreement, ensemble, lmc


def test_barrier_is_the_highest_rise_above_the_line_between_the_endpoints():
    alphas = [0.0, 0.5, 1.0]
    assert lmc.barrier(alphas, [0.1, 0.1, 0.1]) == 0.0  # a ticket with itself: flat
    assert lmc.barrier(alphas, [0.10, 0.30, 0.20]) == pytest.approx(0.30 - 0.15)  # equal to Frankle's at the middle
    assert lmc.barrier(alphas, [0.20, 0.15, 0.10]) == pytest.approx(0.0)  # falls from the worse to the better: none
    assert lmc.barrier(alphas, [0.2, 0.1, 0.2]) == pytest.approx(0.0)  # a valley
    assert lmc.barrier([0.0, 0.25, 1.0], [0.0, 0.5, 1.0]) == pytest.approx(0.5 - 0.25)  # the line at 0.25 is 0.25


def test_paths_pairs_and_the_midpoint_matrix():
    with pytest.raises(ValueError, match="rise strictly from 0 to 1"):
        lmc.check_alphas([0.0, 0.5])
    assert lmc.check_alphas([0, 0.5, 1]) == (0.0, 0.5, 1.0)
    assert lmc.pairs([0, 1, 2]) == [(0, 1), (0, 2), (1, 2)]
    scores = {("ticket", 0): (0.9, 0.8), ("ticket", 1): (0.7, 0.6), (0, 1, 0.5): (0.5, 0.4)}
    rows = lmc.path_rows([0, 1], (0.0, 0.5, 1.0), scores)
    assert [r["test_acc"] for r in rows] == [0.8, 0.4, 0.6]  # endpoints are the tickets' own scores
    (pair,) = lmc.pair_rows(rows)
    assert pair["barrier_test"] == pytest.approx(0.6 - (0.2 + 0.4) / 2)  # the midpoint of the line
    assert pair["barrier_val"] == pytest.approx(0.5 - (0.1 + 0.3) / 2)
    m = lmc.midpoint_matrix([0, 1], [pair], {0: 0.8, 1: 0.6})
    assert m.tolist() == [[0.8, 0.4], [0.4, 0.6]]


def test_mean_barriers_per_group_of_pairs_in_points():
    pairs = [
        {"a": a, "b": b, "barrier_test": x} for (a, b), x in zip(lmc.pairs([0, 1, 2]), (0.04, 0.02, 0.01), strict=True)
    ]
    got = {key: value for key, _, value in lmc.mean_barriers(pairs)}
    assert got == pytest.approx(
        {"all_pairs": 7 / 3, "with_first": 3.0, "pruned_pairs": 1.0, "adjacent": 2.5}  # (0,1)+(1,2) adjacent
    )
    only_dense = lmc.mean_barriers([{"a": 0, "b": 1, "barrier_test": 0.05}])  # no pair of pruned tickets
    assert [key for key, _, _ in only_dense] == ["all_pairs", "with_first", "adjacent"]


def test_disagreement_matrix_and_chain_steps():
    preds = {0: np.array([0, 1, 2, 3]), 1: np.array([0, 1, 2, 0]), 2: np.array([1, 0, 2, 0])}
    m = disagreement.matrix([0, 1, 2], preds)
    assert m.tolist() == [[0, 0.25, 0.75], [0.25, 0, 0.5], [0.75, 0.5, 0]]
    trace = [  # target 0: step 0 scores 0.5, candidate 1 reaches 0.6 (accepted), candidate 2 only 0.55
        {"target": 0, "step": 0, "candidate": 0, "alpha": 0.0, "val_acc": 0.5, "accepted": False},
        {"target": 0, "step": 1, "candidate": 1, "alpha": 0.5, "val_acc": 0.6, "accepted": True},
        {"target": 0, "step": 2, "candidate": 2, "alpha": 0.5, "val_acc": 0.55, "accepted": False},
    ]
    steps = disagreement.step_rows(trace, preds, "average")
    assert [(s["candidate"], s["disagreement"], round(s["val_gain"], 6), s["accepted"]) for s in steps] == [
        (1, 0.25, 0.1, True),
        (2, 0.75, -0.05, False),  # measured against the best after the accepted step
    ]
    s = disagreement.summary(steps)
    assert (s["accepted"], s["mean_disagreement_accepted"], s["mean_disagreement_rejected"]) == (1, 0.25, 0.75)
    assert s["spearman_disagreement_val_gain"] == pytest.approx(-1.0)


def test_an_ensemble_of_one_ticket_is_the_ticket():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=200)
    labels = rng.integers(0, 5, size=200)
    assert ensemble.ensemble_accuracy([probs], labels) == np.mean(probs.argmax(1) == labels)
    # two members: the mean of their probabilities decides, worked by hand on two examples
    a = np.array([[0.6, 0.4], [0.2, 0.8]])
    b = np.array([[0.1, 0.9], [0.45, 0.55]])
    assert ensemble.ensemble_accuracy([a, b], np.array([1, 1])) == 1.0  # means [.35 .65], [.325 .675]
    assert ensemble.best_val_round({0: 0.9, 1: 0.95, 2: 0.95}) == 1


def test_corruptions_severity_zero_is_clean_and_others_are_seeded():
    x = torch.randn(50, 40)
    for family in corruptions.MNIST1D_FAMILIES:
        assert torch.equal(corruptions.corrupt_mnist1d(x, family, 0, seed=0), x)
        a = corruptions.corrupt_mnist1d(x, family, 3, seed=0)
        assert a.shape == x.shape and not torch.equal(a, x)
        assert torch.equal(a, corruptions.corrupt_mnist1d(x, family, 3, seed=0))  # same seed, same set
    # stronger is further from clean
    dist = [float((corruptions.corrupt_mnist1d(x, "gaussian_noise", s, 0) - x).norm()) for s in (1, 5)]
    assert dist[0] < dist[1]
    shifted = corruptions.corrupt_mnist1d(x, "shift", 2, seed=0)
    row = shifted[0]
    assert torch.equal(row[:-2], x[0, 2:]) or torch.equal(row[2:], x[0, :-2])


def test_cifar_c_reader_on_a_tiny_archive(tmp_path):
    n = 4
    labels = np.tile(np.arange(n), 5)
    np.save(tmp_path / "labels.npy", labels)
    imgs = np.arange(5 * n * 32 * 32 * 3, dtype=np.int64).reshape(5 * n, 32, 32, 3).astype(np.uint8)
    np.save(tmp_path / "fog.npy", imgs)
    names, y, read = corruptions.read_cifar_c(corruptions.cifar_c_folder(str(tmp_path), "cifar10"), n)
    assert names == ["fog"] and y.tolist() == [0, 1, 2, 3]
    sev2 = read("fog", 2)
    assert sev2.shape == (n, 3, 32, 32) and np.array_equal(sev2, imgs[n : 2 * n].transpose(0, 3, 1, 2))
    np.save(tmp_path / "bad.npy", np.array([{"a": 1}], dtype=object))  # a pickle inside .npy: refused
    with pytest.raises(Exception, match="unreadable .npy"):
        read("bad", 1)
    with pytest.raises(Exception, match="CIFAR-10-C.tar from https://zenodo.org"):
        corruptions.cifar_c_folder(str(tmp_path / "missing"), "cifar10")
