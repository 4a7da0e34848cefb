import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from deepauc.metrics import average_ranks, partial_auc, pauc_above_tpr, roc_auc, roc_points


@pytest.mark.parametrize("seed", range(5))
def test_binary_with_ties_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = 1000
    y = (rng.uniform(size=n) < 0.1).astype(int)
    y[:2] = [0, 1]
    s = np.round(rng.normal(size=n) + y, 1)  # rounding makes many ties
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_all_tied_scores_give_half():
    assert roc_auc([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3]) == 0.5


def test_perfect_and_reversed():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0


def test_multilabel_is_mean_of_columns():
    rng = np.random.default_rng(1)
    y = (rng.uniform(size=(300, 4)) < 0.3).astype(int)
    s = rng.normal(size=(300, 4)) + y
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s, average="macro"), abs=1e-12)


def test_one_class_label_is_a_clear_error():
    with pytest.raises(ValueError, match="only one class"):
        roc_auc([1, 1, 1], [0.1, 0.2, 0.3])
    y = np.array([[0, 1], [1, 1], [0, 1]])
    with pytest.raises(ValueError, match="label column 1"):
        roc_auc(y, np.random.default_rng(0).uniform(size=(3, 2)))


def test_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        roc_auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="0/1"):
        roc_auc([0, 2], [0.1, 0.2])


def test_average_ranks():
    np.testing.assert_array_equal(
        average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0]
    )


# ---- partial AUCs: scikit-learn's max_fpr and the ISIC 2024 scoring code's construction
def _isic2024_pauc(y, s, min_tpr):
    """The challenge's own route: flip labels and scores, sklearn's standardised pAUC below
    FPR = 1 - min_tpr, then undo McClish's standardisation."""
    max_fpr = 1.0 - min_tpr
    scaled = roc_auc_score(1 - np.asarray(y), -np.asarray(s), max_fpr=max_fpr)
    return 0.5 * max_fpr**2 + (max_fpr - 0.5 * max_fpr**2) / 0.5 * (scaled - 0.5)


def _tied_scores(seed, n=400):
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.2).astype(int)
    y[:2] = [0, 1]
    return y, np.round(rng.normal(size=n) + 1.2 * y, 1)  # rounding makes many ties


@pytest.mark.parametrize("seed", range(4))
def test_roc_points_are_sklearns_curve(seed):
    from sklearn.metrics import roc_curve

    y, s = _tied_scores(seed)
    fpr, tpr = roc_points(y, s)
    ref_fpr, ref_tpr, _ = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, ref_tpr, atol=1e-12)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("max_fpr", [0.05, 0.2, 0.5, 1.0])
def test_partial_auc_equals_sklearn_max_fpr(seed, max_fpr):
    y, s = _tied_scores(seed)
    assert partial_auc(y, s, max_fpr=max_fpr) == pytest.approx(
        roc_auc_score(y, s, max_fpr=max_fpr), abs=1e-12
    )


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("min_tpr", [0.0, 0.5, 0.8, 0.95])
def test_pauc_above_tpr_equals_the_isic2024_scoring_route(seed, min_tpr):
    y, s = _tied_scores(seed)
    assert pauc_above_tpr(y, s, min_tpr=min_tpr) == pytest.approx(
        _isic2024_pauc(y, s, min_tpr), abs=1e-12
    )


def test_pauc_above_tpr_bounds_and_full_area():
    y, s = _tied_scores(0)
    assert pauc_above_tpr(y, s, min_tpr=0.0) == pytest.approx(roc_auc(y, s), abs=1e-12)
    assert pauc_above_tpr([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(0.2)
    assert pauc_above_tpr([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert pauc_above_tpr([0, 1, 0, 1], [0.3] * 4) == pytest.approx(0.02)  # the chance line


def test_partial_aucs_follow_the_undefined_rule():
    for fn, kw in ((partial_auc, {"max_fpr": 0.2}), (pauc_above_tpr, {"min_tpr": 0.8})):
        assert np.isnan(fn([1, 1], [0.2, 0.9], undefined="nan", **kw))
        with pytest.raises(ValueError, match="only one class"):
            fn([1, 1], [0.2, 0.9], **kw)
    with pytest.raises(ValueError, match="max_fpr must be in"):
        partial_auc([0, 1], [0.2, 0.9], max_fpr=0.0)
    with pytest.raises(ValueError, match="min_tpr must be in"):
        pauc_above_tpr([0, 1], [0.2, 0.9], min_tpr=1.0)
