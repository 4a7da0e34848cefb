"""Paired comparisons against independent oracles: the pairwise definition of DeLong's
structural components, scipy's t tests, rows repeated by hand for weighted AUCs, and Holm's
step-down rule worked by hand."""

import numpy as np
import pytest
from scipy import stats as st

from deepauc.metrics import roc_auc
from deepauc.stats import (
    bootstrap_groups,
    delong,
    holm,
    noninferiority_p,
    paired_t,
    structural_components,
    weighted_auc,
)


def _two_scorers(seed, n=300, gap=0.6):
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.25).astype(int)
    y[:2] = [0, 1]
    common = rng.normal(size=n)
    a = np.round(common + gap * y + 0.8 * rng.normal(size=n), 1)  # ties on purpose
    b = np.round(common + (gap + 0.5) * y + 0.8 * rng.normal(size=n), 1)
    return y, a, b


def _pairwise_components(y, s):
    """V10, V01 from their definition: ψ(x, z) = 1 if x > z, ½ if x = z, else 0."""
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return psi.mean(axis=1), psi.mean(axis=0)


@pytest.mark.parametrize("seed", range(3))
def test_structural_components_match_their_pairwise_definition(seed):
    y, a, _ = _two_scorers(seed)
    v10, v01 = structural_components(y, a)
    ref10, ref01 = _pairwise_components(y, a)
    np.testing.assert_allclose(v10, ref10, atol=1e-12)
    np.testing.assert_allclose(v01, ref01, atol=1e-12)
    assert v10.mean() == pytest.approx(roc_auc(y, a), abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_delong_variance_is_the_pairwise_one(seed):
    y, a, b = _two_scorers(seed)
    a10, a01 = _pairwise_components(y, a)
    b10, b01 = _pairwise_components(y, b)
    cov10, cov01 = np.cov(np.vstack([a10, b10])), np.cov(np.vstack([a01, b01]))
    var = (cov10[0, 0] + cov10[1, 1] - 2 * cov10[0, 1]) / a10.size + (
        cov01[0, 0] + cov01[1, 1] - 2 * cov01[0, 1]
    ) / a01.size
    diff = roc_auc(y, b) - roc_auc(y, a)
    out = delong(y, a, b)
    assert out.difference == pytest.approx(diff, abs=1e-12)
    assert out.p_value == pytest.approx(2 * st.norm.sf(abs(diff) / np.sqrt(var)), rel=1e-9)
    assert out.high - out.low == pytest.approx(2 * 1.959963984540054 * np.sqrt(var), rel=1e-9)


def test_delong_of_a_scorer_with_itself_is_no_difference():
    y, a, _ = _two_scorers(0)
    out = delong(y, a, a)
    assert (out.difference, out.low, out.high, out.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_delong_rejects_under_a_clear_gap_and_not_under_none():
    y, a, b = _two_scorers(1, n=2000, gap=0.3)
    assert delong(y, a, b).p_value < 1e-3 and delong(y, a, b).low > 0
    rng = np.random.default_rng(5)
    null_p = []
    for _ in range(200):  # the same signal, independent noise: the null holds
        yy = (rng.uniform(size=200) < 0.3).astype(int)
        base = rng.normal(size=200) + yy
        null_p.append(delong(yy, base + rng.normal(size=200), base + rng.normal(size=200)).p_value)
    assert 0.02 <= np.mean(np.asarray(null_p) < 0.05) <= 0.10  # about 5% false alarms


def test_weighted_auc_equals_rows_repeated_by_their_weight():
    from deepauc.stats import _sorted_runs

    y, a, _ = _two_scorers(2)
    w = np.random.default_rng(0).integers(0, 4, size=y.size)
    repeated = np.repeat(np.arange(y.size), w)
    got = weighted_auc(y.astype(float), *_sorted_runs(a), w.astype(float))
    assert got == pytest.approx(roc_auc(y[repeated], a[repeated]), abs=1e-12)


def test_bootstrap_over_patients_holds_patients_together():
    y, a, b = _two_scorers(3, n=400, gap=0.4)
    rows = bootstrap_groups(y, a, b, np.arange(y.size), n_boot=400, seed=1)
    assert rows.difference == pytest.approx(roc_auc(y, b) - roc_auc(y, a), abs=1e-12)
    assert rows.low < rows.difference < rows.high and rows.low > 0 and rows.p_value < 0.05
    # the same rows, each appearing 4 times under one patient: 4 copies add no information,
    # so the patient bootstrap's interval is that of the 400 rows, the row bootstrap's half
    y4, a4, b4 = np.repeat(y, 4), np.repeat(a, 4), np.repeat(b, 4)
    patients = bootstrap_groups(y4, a4, b4, np.repeat(np.arange(y.size), 4), n_boot=400, seed=1)
    naive = bootstrap_groups(y4, a4, b4, np.arange(y4.size), n_boot=400, seed=1)
    width = lambda c: c.high - c.low  # noqa: E731
    assert width(patients) == pytest.approx(width(rows), rel=0.25)
    assert width(naive) < 0.7 * width(patients)
    same = bootstrap_groups(y, a, a, np.arange(y.size), n_boot=50)
    assert (same.difference, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_bootstrap_groups_bad_groups_are_refused():
    y, a, b = _two_scorers(0)
    with pytest.raises(ValueError, match="group labels for"):
        bootstrap_groups(y, a, b, ["p1"] * 5)


@pytest.mark.parametrize("seed", range(3))
def test_paired_t_and_noninferiority_equal_scipy(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(0.80, 0.02, size=10)
    b = a + rng.normal(0.004, 0.005, size=10)
    out = paired_t(a, b)
    ref = st.ttest_rel(b, a)
    assert out.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    ci = ref.confidence_interval(0.95)
    assert (out.low, out.high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    margin = 0.005
    ni = st.ttest_1samp(b - a + margin, 0.0, alternative="greater").pvalue
    assert noninferiority_p(a, b, margin) == pytest.approx(ni, rel=1e-9)
    assert noninferiority_p(a, b, margin) < paired_t(a, b).p_value or out.difference < 0


def test_holm_by_hand_and_its_rules():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04 -> running max
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])
    np.testing.assert_allclose(holm([0.02]), [0.02])
    p = np.random.default_rng(0).uniform(size=12)
    adj = holm(p)
    assert (adj >= p).all() and (adj <= 1).all()
    assert (np.diff(adj[np.argsort(p)]) >= 0).all()  # the order of the raw p-values is kept
    with pytest.raises(ValueError, match="p-values in"):
        holm([0.1, 1.5])


BAD_INPUTS = {
    "shapes differ": ([0, 1, 1], [0.1, 0.2]),
    "3-D": (np.zeros((2, 2, 2), int), np.zeros((2, 2, 2))),
    "labels not 0/1": ([0, 2, 1], [0.1, 0.2, 0.3]),
    "no rows": ([], []),
    "a NaN score": ([0, 1, 1], [0.1, np.nan, 0.3]),
    "one class": ([1, 1, 1], [0.1, 0.2, 0.3]),
    "one class in a label column": ([[0, 1], [1, 1]], [[0.1, 0.2], [0.3, 0.4]]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_with_roc_aucs_own_message(case):
    y, s = BAD_INPUTS[case]
    with pytest.raises(ValueError) as oracle:
        roc_auc(y, s)
    good = np.linspace(0.0, 1.0, np.asarray(y).size).reshape(np.shape(y))
    for call in (
        lambda: delong(y, s, good),  # the bad score first
        lambda: delong(y, good, s) if np.shape(s) != np.shape(y) else delong(y, s, s),
        lambda: structural_components(y, s),
    ):
        with pytest.raises(ValueError) as err:
            call()
        assert str(err.value) == str(oracle.value)
