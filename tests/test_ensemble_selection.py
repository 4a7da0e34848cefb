"""Ensemble selection arithmetic: greedy forward selection with replacement, its nested
estimate, Spearman matrices, drop-one and per-fold-rank AUCs, against scikit-learn, scipy and
hand-worked cases."""

import numpy as np
import pytest
from scipy.stats import rankdata, spearmanr
from sklearn.metrics import roc_auc_score

from deepauc.pipeline.selection import (
    drop_one_aucs,
    fold_rank_auc,
    greedy_select,
    nested_greedy,
    spearman_matrix,
    weighted_mean,
)


def test_greedy_adds_the_best_then_stops_by_hand():
    y = np.array([0, 0, 1, 1])
    a = np.array([0.1, 0.4, 0.35, 0.8])  # AUC 3/4
    b = np.array([0.5, 0.1, 0.6, 0.05])  # AUC 2/4
    # a + b = [0.6, 0.5, 0.95, 0.85]: both positives above both negatives, AUC 1
    assert roc_auc_score(y, a) == 0.75 and roc_auc_score(y, b) == 0.5
    assert roc_auc_score(y, a + b) == 1.0
    counts, path = greedy_select(y, [a, b], max_steps=10)
    assert counts.tolist() == [1, 1]
    assert path == [(0, 0.75), (1, 1.0)]
    # one step: the best single candidate only
    counts, path = greedy_select(y, [b, a], max_steps=1)
    assert counts.tolist() == [0, 1] and path == [(1, 0.75)]


def test_greedy_selects_with_replacement_by_hand():
    y = np.array([0, 0, 0, 1, 1, 1])
    a = np.array([0.4, 0.6, 0.1, 0.9, 0.8, 0.0])  # AUC 6/9
    b = np.array([0.1, 0.0, 0.8, 0.5, 0.6, 0.9])  # AUC 7/9
    # b first; b + a ranks 8.5 of 9 pairs right; 2b + a all 9; b + 2a only 6.5
    assert roc_auc_score(y, a) == pytest.approx(6 / 9)
    assert roc_auc_score(y, b) == pytest.approx(7 / 9)
    assert roc_auc_score(y, a + b) == pytest.approx(8.5 / 9)
    assert roc_auc_score(y, a + 2 * b) == 1.0
    counts, path = greedy_select(y, [a, b], max_steps=10)
    assert counts.tolist() == [1, 2]  # weights 1/3 and 2/3
    assert [i for i, _ in path] == [1, 0, 1]
    np.testing.assert_allclose([auc for _, auc in path], [7 / 9, 8.5 / 9, 1.0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_properties_against_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(80) < 0.3).astype(int)
    signal = y + rng.normal(0, 1.0, 80)
    cols = np.stack([signal + rng.normal(0, s, 80) for s in (0.5, 1.0, 1.5, 3.0)])
    counts, path = greedy_select(y, cols, max_steps=15)
    singles = [roc_auc_score(y, c) for c in cols]
    assert path[0][0] == int(np.argmax(singles))
    aucs = [auc for _, auc in path]
    assert all(later > earlier for earlier, later in zip(aucs, aucs[1:]))
    assert counts.sum() == len(path) <= 15
    final = roc_auc_score(y, weighted_mean(cols, counts))
    assert final == pytest.approx(aucs[-1])
    if len(path) < 15:  # it stopped: no candidate raises the AUC any more
        total = counts @ cols
        assert all(roc_auc_score(y, total + c) <= final + 1e-12 for c in cols)


def test_greedy_refuses_one_class():
    with pytest.raises(ValueError, match="one class"):
        greedy_select(np.zeros(4), [[0.1, 0.2, 0.3, 0.4]], 5)


def folds_case(seed=0, n=90):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    folds = np.arange(n) % 3
    cols = np.stack([y + rng.normal(0, s, n) for s in (0.8, 1.0, 2.0)])
    return y, folds, cols


def test_nested_scores_each_fold_with_members_chosen_elsewhere():
    y, folds, cols = folds_case()
    nested = nested_greedy(y, folds, cols, max_steps=10)
    expected = np.empty(len(y))
    for k in range(3):
        out = folds != k
        counts, _ = greedy_select(y[out], cols[:, out], 10)
        np.testing.assert_array_equal(nested["counts"][k], counts)
        expected[folds == k] = (counts / counts.sum()) @ cols[:, folds == k]
        assert nested["fold_auc"][k] == pytest.approx(
            roc_auc_score(y[folds == k], expected[folds == k])
        )
    np.testing.assert_allclose(nested["pred"], expected)
    assert nested["auc"] == pytest.approx(roc_auc_score(y, expected))


def test_nested_choice_of_a_fold_ignores_that_fold():
    y, folds, cols = folds_case(1)
    before = nested_greedy(y, folds, cols, 10)
    moved = cols.copy()
    # make the weakest candidate perfect on fold 0 only: fold 0's own choice must not see it
    moved[2, folds == 0] = y[folds == 0] * 10.0
    after = nested_greedy(y, folds, moved, 10)
    np.testing.assert_array_equal(after["counts"][0], before["counts"][0])
    # the change is one that selection sees: the folds choosing on fold 0's rows move
    assert any(not np.array_equal(after["counts"][k], before["counts"][k]) for k in (1, 2))


def test_nested_refuses_folds_without_both_classes():
    y = np.array([0, 1, 0, 0])
    folds = np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match="other than 0 hold one class"):
        nested_greedy(y, folds, [[0.1, 0.2, 0.3, 0.4]], 3)


def test_spearman_matrix_matches_scipy_with_ties():
    rng = np.random.default_rng(3)
    cols = np.stack([rng.integers(0, 6, 40) / 5 for _ in range(4)])
    expected = spearmanr(cols.T).statistic
    np.testing.assert_allclose(spearman_matrix(cols), expected, atol=1e-12)


def test_spearman_matrix_constant_column_is_nan():
    m = spearman_matrix([[0.1, 0.5, 0.3], [0.2, 0.2, 0.2], [0.3, 0.1, 0.2]])
    assert np.isnan(m[1]).all() and np.isnan(m[:, 1]).all()
    assert m[0, 0] == 1.0 and m[0, 2] == pytest.approx(-1.0)


def test_drop_one_against_sklearn():
    y, _, cols = folds_case(2)
    w = np.array([0.5, 0.25, 0.25])
    got = drop_one_aucs(y, cols, w)
    for i in range(3):
        rest = np.delete(np.arange(3), i)
        assert got[i] == pytest.approx(roc_auc_score(y, w[rest] @ cols[rest]))
    assert np.isnan(drop_one_aucs(y, cols[:1], [1.0])[0])


def test_fold_rank_auc_by_hand_and_against_scipy():
    # fold 0 scores low, fold 1 high: pooled AUC 3/4, ranked within folds every pair is right
    y, folds = np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1])
    pred = np.array([0.1, 0.2, 0.8, 0.9])
    assert roc_auc_score(y, pred) == 0.75
    assert fold_rank_auc(y, folds, pred) == 1.0
    y, folds, cols = folds_case(4)
    ranked = np.empty(len(y))
    for k in range(3):
        inside = folds == k
        ranked[inside] = (rankdata(cols[0, inside]) - 1) / (inside.sum() - 1)
    assert fold_rank_auc(y, folds, cols[0]) == pytest.approx(roc_auc_score(y, ranked))


def test_weighted_mean_ties_do_not_depend_on_summation_order():
    # averaged ranks tie in exact arithmetic; unrounded, the order of the sum breaks some ties
    rng = np.random.default_rng(0)
    cols = np.stack([(rng.permutation(30)) / 29 for _ in range(3)])
    w = np.array([4, 1, 2])
    unrounded = [(w / 7) @ cols, (w[::-1] / 7) @ cols[::-1]]
    assert (unrounded[0] != unrounded[1]).any()  # the noise this guards against
    np.testing.assert_array_equal(weighted_mean(cols, w), weighted_mean(cols[::-1], w[::-1]))
    np.testing.assert_allclose(weighted_mean(cols, w), unrounded[0], atol=1e-12)
