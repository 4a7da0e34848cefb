import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from deepauc.metrics import average_ranks, roc_auc


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
