"""The experiment report's pairing of two cells seed by seed (`reference_cell:`), on hand-made records:
the per-seed difference of tickets and of pooled networks, McNemar counts only where both were scored on
the same test labels, each cell's training compute, and what analyses measured of every seed's whole run."""

from __future__ import annotations

import numpy as np
import pytest

from lp_ray.report.experiment import SeedResult, cell_pairs, training_verdicts, whole_run_verdicts

LABELS = np.array([0, 1, 2, 3])


def _seed(lt: float, pooled: float, lt_correct, pooled_correct, labels=LABELS) -> SeedResult:
    return SeedResult(lt, None, pooled, 0.8, 0, 0, {}, np.array(pooled_correct), np.array(lt_correct), np.array(labels))


def test_cells_are_paired_seed_by_seed_for_tickets_and_pooled_networks():
    data = {
        ("imp.particles=1", "interpolation"): {
            1: {0: _seed(0.50, 0.75, [1, 1, 0, 0], [1, 1, 1, 0]), 1: _seed(0.25, 0.50, [1, 0, 0, 0], [1, 1, 0, 0])}
        },
        ("imp.particles=3", "interpolation"): {
            1: {0: _seed(0.75, 0.75, [1, 1, 1, 0], [1, 1, 1, 0]), 1: _seed(0.50, 0.75, [1, 1, 0, 0], [1, 1, 1, 0])}
        },
    }
    got = dict(cell_pairs("imp.particles=3", "imp.particles=1", ["interpolation"], data))
    assert list(got) == ["lt_vs_reference_cell", "interpolation_vs_reference_cell"]
    (lt_row,), lt_verdict = got["lt_vs_reference_cell"]
    assert lt_row["kind"] == "cells" and lt_row["quantity"] == "lt" and lt_row["variant"] == "LT"
    assert lt_row["diff_mean"] == pytest.approx(25.0)  # +25 pt at both seeds
    assert (lt_row["reference_only_correct"], lt_row["variant_only_correct"]) == (0, 2)
    assert lt_verdict.text.startswith("LT [imp.particles=3] − [imp.particles=1] (the tickets, paired by seed): ")
    (pooled_row,), _ = got["interpolation_vs_reference_cell"]
    assert pooled_row["diff_mean"] == pytest.approx(12.5)  # 0 and +25 pt
    assert (pooled_row["reference_only_correct"], pooled_row["variant_only_correct"]) == (0, 1)


def test_mcnemar_skips_a_seed_whose_test_labels_differ_and_seeds_must_be_shared():
    mine = {
        1: {0: _seed(0.75, 0.75, [1, 1, 1, 0], [1, 1, 1, 0], labels=[3, 2, 1, 0]), 2: _seed(0.5, 0.5, [1] * 4, [1] * 4)}
    }
    ref = {1: {0: _seed(0.50, 0.50, [1, 1, 0, 0], [1, 1, 0, 0])}}
    data = {("a=1", "interpolation"): ref, ("a=2", "interpolation"): mine}
    (_, ((row,), verdict)), _ = cell_pairs("a=2", "a=1", ["interpolation"], data)
    assert row["seeds"] == 1 and row["diff_mean"] == pytest.approx(25.0)
    assert (row["reference_only_correct"], row["variant_only_correct"]) == (0, 0)
    assert "(one seed: no interval)" in verdict.text


def test_training_compute_is_stated_per_cell():
    (cell, v), (cell2, v2) = training_verdicts({"imp.particles=1": {0: 400, 1: 400}, "imp.particles=3": {0: 1120}})
    assert (cell, cell2) == ("imp.particles=1", "imp.particles=3")
    assert v.text == "training [imp.particles=1]: 400 epochs of IMP per seed (all rounds, all particles), 2 seeds"
    assert v2.metrics == {"imp_epochs_per_seed": 1120.0}


def test_a_whole_run_measure_is_averaged_over_the_seeds_that_ran_it():
    label = "mean error barrier (test, pt) between every pair of tickets"
    whole = {
        "a=2": {("lmc", "barrier_all_pairs_pt"): (label, {0: 1.0, 1: 2.0, 2: 3.0})},
        "a=1": {("lmc", "barrier_all_pairs_pt"): (label, {4: 0.5})},
    }
    (cell1, name, key, one), (cell2, _, _, three) = whole_run_verdicts(whole)
    assert (cell1, cell2, name, key) == ("a=1", "a=2", "lmc", "barrier_all_pairs_pt")
    assert one.text == f"lmc [a=1]: {label}: +0.50 (one seed: no interval)"
    # mean 2, sd 1, t(0.975, 2 df) = 4.303: 2 -/+ 4.303 / sqrt(3)
    assert three.text == f"lmc [a=2]: {label}: +2.00, Student t 95% CI [-0.48, +4.48] over 3 seeds"
    assert three.metrics["mean"] == 2.0 and three.metrics["seeds"] == 3
    assert three.metrics["t_ci_high"] == pytest.approx(2 + 4.302653 / 3**0.5)
