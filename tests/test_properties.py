"""Property-based tests (hypothesis) of the CSV readers, the folds, the metric and the losses."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from deepauc.data.folds import assign_folds
from deepauc.data.tables import SEXES, SITES_2020, TRAIN_COLUMNS, read_train_csv
from deepauc.losses import AUCMLoss, AUCSLoss, BCELoss, FocalLoss
from deepauc.metrics import roc_auc

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FAST = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# ------------------------------------------------------------------------- CSV readers
row = st.fixed_dictionaries(
    {
        "patient": st.integers(0, 5),
        "sex": st.sampled_from([*SEXES, None]),
        "age": st.one_of(st.none(), st.integers(0, 24).map(lambda a: 5.0 * a)),
        "site": st.sampled_from([*SITES_2020, None]),
        "target": st.integers(0, 1),
        "bm_given": st.booleans(),
    }
)


def _frame(rows):
    return pd.DataFrame(
        {
            "image_name": [f"ISIC_{i:07d}" for i in range(len(rows))],
            "patient_id": [f"IP_{r['patient']:07d}" for r in rows],
            "sex": [r["sex"] for r in rows],
            "age_approx": [r["age"] for r in rows],
            "anatom_site_general_challenge": [r["site"] for r in rows],
            "diagnosis": "unknown",
            "benign_malignant": [
                ("malignant" if r["target"] else "benign") if r["bm_given"] else None for r in rows
            ],
            "target": [r["target"] for r in rows],
        }
    )[TRAIN_COLUMNS]


def _cells(series):
    return [None if pd.isna(v) else v for v in series]


@FAST
@given(rows=st.lists(row, min_size=1, max_size=12))
def test_valid_train_csv_round_trips(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("csv") / "train.csv"
    df = _frame(rows)
    df.to_csv(path, index=False)
    back = read_train_csv(path)
    assert list(back["image_name"]) == list(df["image_name"])
    assert list(back["target"]) == list(df["target"]) and back["target"].dtype.kind == "i"
    np.testing.assert_array_equal(
        back["age_approx"].to_numpy(float), df["age_approx"].to_numpy(float)
    )
    for col in ["sex", "anatom_site_general_challenge", "benign_malignant", "patient_id"]:
        assert _cells(back[col]) == _cells(df[col]), col


BAD_CELLS = [
    ("target", "2"),
    ("target", "yes"),
    ("age_approx", "-5"),
    ("age_approx", "300"),
    ("age_approx", "NA"),
    ("sex", "M"),
    ("anatom_site_general_challenge", "chest"),
    ("patient_id", ""),
    ("benign_malignant", "maybe"),
]


@FAST
@given(rows=st.lists(row, min_size=1, max_size=12), where=st.data(), bad=st.sampled_from(BAD_CELLS))
def test_one_bad_cell_is_reported_at_its_line_and_column(tmp_path_factory, rows, where, bad):
    column, value = bad
    i = where.draw(st.integers(0, len(rows) - 1))
    df = _frame(rows).astype(object)
    df.loc[i, column] = value
    path = tmp_path_factory.mktemp("csv") / "train.csv"
    df.to_csv(path, index=False)
    with pytest.raises(ValueError) as err:
        read_train_csv(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ")
    assert f"line {i + 2} (ISIC_{i:07d})" in msg
    assert column in msg


@FAST
@given(n=st.integers(2, 10), dup=st.data())
def test_duplicated_name_reports_both_lines(tmp_path_factory, n, dup):
    i, j = sorted(dup.draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True)))
    df = _frame(
        [{"patient": 0, "sex": None, "age": None, "site": None, "target": 0, "bm_given": False}] * n
    )
    df.loc[j, "image_name"] = df.loc[i, "image_name"]
    path = tmp_path_factory.mktemp("csv") / "train.csv"
    df.to_csv(path, index=False)
    with pytest.raises(
        ValueError, match=rf"duplicated image_name: ISIC_{i:07d} \(lines {i + 2}, {j + 2}\)"
    ):
        read_train_csv(path)


# ------------------------------------------------------------------------------- folds
@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(1, 6), min_size=2, max_size=30),
    positives=st.data(),
    n_ext=st.integers(0, 8),
    n_folds=st.integers(2, 5),
    include_external=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_folds_keep_patients_whole_and_ids_in_range(
    counts, positives, n_ext, n_folds, include_external, seed
):
    pid = np.repeat(np.arange(len(counts)), counts)
    target = np.array(
        positives.draw(st.lists(st.integers(0, 1), min_size=len(pid), max_size=len(pid)))
    )
    df = pd.DataFrame(
        {"patient_id": [f"P{p}" for p in pid], "target": target, "source": "competition"}
    )
    ext = pd.DataFrame(
        {
            "patient_id": [f"E{i // 2}" for i in range(n_ext)],
            "target": [i % 3 == 0 for i in range(n_ext)],
            "source": "isic2019",
        }
    ).astype({"target": int})
    df = pd.concat([df, ext], ignore_index=True)
    try:
        out = assign_folds(df, n_folds, seed, include_external=include_external)
    except ValueError as err:  # only for too few patients or positives, and said so
        assert "patient" in str(err) or "no malignant" in str(err)
        return
    assert len(out) == len(df) and out["fold"].between(-1, n_folds - 1).all()
    assert (out.groupby("patient_id")["fold"].nunique() == 1).all()
    comp = out["source"] == "competition"
    assert (out.loc[comp, "fold"] >= 0).all()
    if include_external:
        assert (out["fold"] >= 0).all()
    else:
        assert (out.loc[~comp, "fold"] == -1).all()
    assert (
        out[out["fold"] >= 0].groupby("fold")["target"].sum().reindex(range(n_folds), fill_value=0)
        > 0
    ).all()


# ------------------------------------------------------------------------------ metric
labels_scores = st.integers(2, 60).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda y: 0 < sum(y) < len(y)),
        st.lists(st.integers(-4, 4), min_size=n, max_size=n),  # small integers: many ties
    )
)


@settings(max_examples=60, deadline=None)
@given(ys=labels_scores)
def test_roc_auc_equals_sklearn_with_ties(ys):
    y, s = map(np.array, ys)
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert roc_auc(y, -s) == pytest.approx(1 - roc_auc(y, s), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(ys=labels_scores, k=st.floats(0.1, 3.0), c=st.floats(-5, 5))
def test_roc_auc_invariant_to_strictly_increasing_transforms(ys, k, c):
    y, s = np.array(ys[0]), np.array(ys[1], dtype=float)
    base = roc_auc(y, s)
    for transformed in (k * s + c, np.exp(s / 4), s**3 + s, 1 / (1 + np.exp(-s))):
        assert roc_auc(y, transformed) == base


# ------------------------------------------------------------------------------ losses
batch = st.integers(1, 16).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(0, 1), min_size=n, max_size=n),
        st.one_of(
            st.just([0] * n), st.just([1] * n), st.lists(st.integers(0, 1), min_size=n, max_size=n)
        ),
    )
)
params = st.tuples(st.floats(-2, 2), st.floats(-2, 2), st.floats(0, 5))


def eq8(h, y, a, b, alpha, p, m):
    """Paper eq. (8), averaged over the batch, in float64."""
    h, y = np.asarray(h, float), np.asarray(y, float)
    per_row = (
        (1 - p) * (h - a) ** 2 * y
        + p * (h - b) ** 2 * (1 - y)
        + 2 * alpha * (p * (1 - p) * m + p * h * (1 - y) - (1 - p) * h * y)
        - p * (1 - p) * alpha**2
    )
    return per_row.mean()


def _auc_loss(cls, p, abalpha, **kw):
    loss = cls(imratio=p, **kw).double()
    with torch.no_grad():
        for t, v in zip((loss.a, loss.b, loss.alpha), abalpha):
            t.fill_(v)
    return loss


@settings(max_examples=50, deadline=None)
@given(hy=batch, abalpha=params, p=st.floats(0.01, 0.99), m=st.floats(0.05, 2.0))
def test_aucm_equals_eq8_and_is_finite_for_any_batch(hy, abalpha, p, m):
    h, y = hy
    loss = _auc_loss(AUCMLoss, p, abalpha, margin=m)
    scores = torch.tensor(h, dtype=torch.float64, requires_grad=True)
    value = loss(scores, torch.tensor(y, dtype=torch.float64))
    p = loss.p.item()  # the buffer holds imratio as float32
    assert value.item() == pytest.approx(eq8(h, y, *abalpha, p, m), rel=1e-9, abs=1e-12)
    value.backward()
    for g in (scores.grad, loss.a.grad, loss.b.grad, loss.alpha.grad):
        assert torch.isfinite(g).all()


@settings(max_examples=50, deadline=None)
@given(hy=batch, abalpha=params, p=st.floats(0.01, 0.99))
def test_aucs_is_eq8_with_margin_one(hy, abalpha, p):
    h, y = hy
    loss = _auc_loss(AUCSLoss, p, abalpha)
    value = loss(torch.tensor(h, dtype=torch.float64), torch.tensor(y, dtype=torch.float64))
    assert value.item() == pytest.approx(
        eq8(h, y, *abalpha, loss.p.item(), 1.0), rel=1e-9, abs=1e-12
    )


@settings(max_examples=50, deadline=None)
@given(hy=batch, scale=st.floats(1, 60))
def test_running_ratio_and_logit_losses_finite_for_any_batch(hy, scale):
    h, y = hy
    target = torch.tensor(y, dtype=torch.float32)
    scores = torch.tensor(h, dtype=torch.float32)
    logits = (scores - 0.5) * 2 * scale  # up to +-60: saturated sigmoids
    running = AUCMLoss(imratio=None).train()  # p estimated from the batches seen, never 0 or 1
    for loss, x in (
        (running, scores),
        (AUCMLoss(imratio=0.02, batch_score_norm=True), scores),
        (FocalLoss(), logits),
        (BCELoss(), logits),
    ):
        x = x.clone().requires_grad_(True)
        value = loss(x, target)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(x.grad).all(), type(loss).__name__
