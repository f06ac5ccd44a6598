"""Tests for foldstack.metrics: the ISIC 2024 pAUC against a re-implementation of the Kaggle scorer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import auc as sk_auc
from sklearn.metrics import roc_auc_score, roc_curve

from foldstack import metrics
from foldstack.errors import DataError
from foldstack.metrics import (
    METRICS,
    bootstrap_ci,
    confusion,
    macro_auc,
    multiclass_report,
    pauc,
    score,
    threshold_for_recall,
    threshold_metrics,
)


def kaggle_pauc(y_true, probs, min_tpr: float = 0.8) -> float:
    """The ISIC 2024 Kaggle scoring code, written out: flip labels, rank by 1 - p, cut at max_fpr."""
    v_gt = np.abs(np.asarray(y_true) - 1)
    v_pred = np.array([1.0 - x for x in probs])
    max_fpr = abs(1 - min_tpr)
    fpr, tpr, _ = roc_curve(v_gt, v_pred, sample_weight=None)
    stop = np.searchsorted(fpr, max_fpr, "right")
    x_interp = [fpr[stop - 1], fpr[stop]]
    y_interp = [tpr[stop - 1], tpr[stop]]
    tpr = np.append(tpr[:stop], np.interp(max_fpr, x_interp, y_interp))
    fpr = np.append(fpr[:stop], max_fpr)
    return sk_auc(fpr, tpr)


def make_data(rng: np.random.Generator, n: int, pos_rate: float, decimals: int | None, shift: float = 1.0):
    """Labels with both classes and probabilities in [0, 1] (rounded to `decimals` to create ties)."""
    y = (rng.random(n) < pos_rate).astype(int)
    y[0], y[1] = 1, 0
    logits = rng.normal(size=n) + shift * y - 1.0
    p = 1.0 / (1.0 + np.exp(-logits))
    if decimals is not None:
        p = np.round(p, decimals)
    return y, p


# ------------------------------------------------------------------------------------------------ pauc
@pytest.mark.parametrize("decimals", [1, 2, None])
@pytest.mark.parametrize("n", [4, 15, 100, 1000, 5000])
@pytest.mark.parametrize("pos_rate", [0.01, 0.1, 0.5, 0.9])
def test_pauc_matches_kaggle_reference(n, pos_rate, decimals):
    rng = np.random.default_rng(1000 * n + int(100 * pos_rate) + (decimals or 9))
    for shift in (0.0, 1.0, 3.0, -1.0):
        y, p = make_data(rng, n, pos_rate, decimals, shift)
        expected = kaggle_pauc(y, p)
        assert pauc(y, p) == pytest.approx(expected, abs=1e-9, rel=0)
        assert 0.0 <= pauc(y, p) <= 0.2 + 1e-12


@pytest.mark.parametrize("min_tpr", [0.0, 0.3, 0.5, 0.9, 0.95])
def test_pauc_matches_kaggle_reference_other_min_tpr(min_tpr):
    rng = np.random.default_rng(7)
    for _ in range(20):
        y, p = make_data(rng, 300, 0.2, 2)
        # the Kaggle code returns the full AUC when max_fpr == 1
        expected = roc_auc_score(y, p) if min_tpr == 0.0 else kaggle_pauc(y, p, min_tpr)
        assert pauc(y, p, min_tpr=min_tpr) == pytest.approx(expected, abs=1e-9, rel=0)


def test_pauc_hand_computed_example():
    # Flipped labels [1, 1, 0, 0] ranked by -s: ROC (0,0) (0,.5) (.5,.5) (.5,1) (1,1).
    # Area below FPR 0.2 = 0.2 * 0.5 = 0.1.
    assert pauc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.1, abs=1e-12)


def test_pauc_constant_perfect_and_wrong():
    y = np.array([0, 1, 0, 0, 1, 0, 1, 0, 0, 0])
    assert pauc(y, np.full(len(y), 0.3)) == pytest.approx(0.02, abs=1e-12)
    assert pauc(y, y * 0.9 + 0.05) == pytest.approx(0.2, abs=1e-12)
    assert pauc(y, 1 - y) == pytest.approx(0.0, abs=1e-12)
    assert pauc(y.astype(bool), y.astype(float)) == pytest.approx(0.2, abs=1e-12)


def test_pauc_logits_equal_probabilities_and_monotone_invariance():
    rng = np.random.default_rng(3)
    y = (rng.random(2000) < 0.05).astype(int)
    logits = np.round(rng.normal(size=2000) * 2 + 1.5 * y, 1)  # ties
    probs = 1.0 / (1.0 + np.exp(-logits))
    base = pauc(y, logits)
    assert 0.02 < base < 0.2
    assert base == pytest.approx(pauc(y, probs), abs=1e-12)
    assert base == pytest.approx(kaggle_pauc(y, probs), abs=1e-12)
    for transform in (lambda x: 10 * x - 3, np.exp, lambda x: x**3 + x, np.arctan):
        assert pauc(y, transform(logits)) == pytest.approx(base, abs=1e-12)
    assert pauc(y, -logits) != pytest.approx(base, abs=1e-3)  # a decreasing transform is not invariant


def test_pauc_is_not_mcclish_partial_auc():
    rng = np.random.default_rng(5)
    y, p = make_data(rng, 500, 0.1, None)
    ours = pauc(y, p)
    mcclish = roc_auc_score(y, p, max_fpr=0.2)
    assert abs(ours - mcclish) > 0.1
    y = np.array([0, 1, 0, 1, 0, 0])
    assert roc_auc_score(y, np.zeros(6), max_fpr=0.2) == pytest.approx(0.5)
    assert pauc(y, np.zeros(6)) == pytest.approx(0.02)


def test_pauc_accepts_pandas():
    rng = np.random.default_rng(9)
    y, p = make_data(rng, 200, 0.2, 2)
    assert pauc(pd.Series(y), pd.Series(p)) == pytest.approx(kaggle_pauc(y, p), abs=1e-12)


# ------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("y", [[0, 0, 0, 0], [1, 1, 1], [True, True]])
def test_single_class_raises_data_error(y):
    with pytest.raises(DataError, match="needs both classes") as err:
        pauc(y, np.linspace(0, 1, len(y)))
    n_pos = int(np.sum(y))
    assert f"{n_pos} positive(s) and {len(y) - n_pos} negative(s)" in str(err.value)
    with pytest.raises(DataError, match="needs both classes"):
        metrics.auc(y, np.linspace(0, 1, len(y)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_score_raises(bad):
    with pytest.raises(DataError, match="NaN/inf"):
        pauc([0, 1, 0, 1], [0.1, bad, 0.3, 0.4])


def test_length_mismatch_and_empty_raise():
    with pytest.raises(DataError, match="length"):
        pauc([0, 1, 0], [0.1, 0.2])
    with pytest.raises(DataError, match="empty"):
        pauc([], [])


@pytest.mark.parametrize(
    "y", [[0, 1, 2, 1], [0, 1, -1, 1], [0, 0.5, 1, 1], [0, 1, np.nan, 1], ["a", "b", "a", "b"]]
)
def test_labels_other_than_0_1_raise(y):
    with pytest.raises(DataError, match="0/1"):
        pauc(y, [0.1, 0.2, 0.3, 0.4])


@pytest.mark.parametrize("min_tpr", [1.0, -0.1, 1.5, float("nan")])
def test_bad_min_tpr_raises_value_error(min_tpr):
    with pytest.raises(ValueError, match="min_tpr"):
        pauc([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], min_tpr=min_tpr)


# ----------------------------------------------------------------------------------------- auc / score
def test_auc_matches_sklearn():
    rng = np.random.default_rng(11)
    for n, rate, dec in [(10, 0.3, 1), (500, 0.05, 2), (3000, 0.5, None)]:
        y, p = make_data(rng, n, rate, dec)
        assert metrics.auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_score_dispatch():
    rng = np.random.default_rng(12)
    y, p = make_data(rng, 400, 0.2, 2)
    assert set(METRICS) == {"pauc80", "auc", "macro_auc"}
    assert score("pauc80", y, p) == pauc(y, p, min_tpr=0.8)
    assert score("auc", y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    with pytest.raises(ValueError, match=r"unknown metric 'pauc'.*auc, macro_auc, pauc80"):
        score("pauc", y, p)


def test_weighted_equals_duplicated_rows():
    rng = np.random.default_rng(13)
    for _ in range(10):
        y, p = make_data(rng, 300, 0.15, 1)
        w = rng.integers(0, 4, size=len(y))
        w[:2] = 1  # keep both classes
        y_dup, p_dup = np.repeat(y, w), np.repeat(p, w)
        assert pauc(y, p, sample_weight=w) == pytest.approx(pauc(y_dup, p_dup), abs=1e-12)
        assert pauc(y, p, sample_weight=w) == pytest.approx(kaggle_pauc(y_dup, p_dup), abs=1e-12)
        assert metrics.auc(y, p, sample_weight=w) == pytest.approx(roc_auc_score(y_dup, p_dup), abs=1e-12)
        assert pauc(y, p, sample_weight=w) != pytest.approx(pauc(y, p), abs=1e-9)


# ------------------------------------------------------------------------------------------- bootstrap
def grouped_data(rng: np.random.Generator, n_groups: int, rows_per_group: int):
    """Strongly clustered data: every row of a group shares its label and (nearly) its score."""
    y_g = (rng.random(n_groups) < 0.3).astype(int)
    y_g[:2] = [0, 1]
    s_g = rng.normal(size=n_groups) + 1.0 * y_g
    y = np.repeat(y_g, rows_per_group)
    s = np.repeat(s_g, rows_per_group) + 0.01 * rng.normal(size=n_groups * rows_per_group)
    groups = np.repeat(np.arange(n_groups), rows_per_group)
    return y, s, groups


def test_bootstrap_interval_contains_point_and_is_deterministic():
    rng = np.random.default_rng(21)
    y, p = make_data(rng, 2000, 0.1, 2)
    groups = rng.integers(0, 200, size=len(y))
    ci = bootstrap_ci(y, p, groups, n_boot=200, seed=1)
    assert set(ci) == {"point", "low", "high", "n_boot"}
    assert ci["point"] == pytest.approx(pauc(y, p), abs=1e-12)
    assert ci["low"] < ci["point"] < ci["high"]
    assert ci["low"] >= 0.0 and ci["high"] <= 0.2
    assert ci["n_boot"] == 200
    assert bootstrap_ci(y, p, groups, n_boot=200, seed=1) == ci
    other = bootstrap_ci(y, p, groups, n_boot=200, seed=2)
    assert (other["low"], other["high"]) != (ci["low"], ci["high"])
    auc_ci = bootstrap_ci(y, p, groups, metric="auc", n_boot=100, seed=1)
    assert auc_ci["point"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert auc_ci["low"] < auc_ci["point"] < auc_ci["high"]


def test_bootstrap_groups_widen_interval_for_clustered_data():
    rng = np.random.default_rng(22)
    y, s, groups = grouped_data(rng, n_groups=40, rows_per_group=25)
    by_group = bootstrap_ci(y, s, groups, n_boot=300, seed=0)
    by_row = bootstrap_ci(y, s, np.arange(len(y)), n_boot=300, seed=0)
    by_none = bootstrap_ci(y, s, None, n_boot=300, seed=0)
    assert by_row == by_none
    assert by_group["point"] == by_row["point"]
    width_group = by_group["high"] - by_group["low"]
    width_row = by_row["high"] - by_row["low"]
    assert width_group > 2.5 * width_row


def test_bootstrap_resample_equals_duplicated_groups(monkeypatch):
    """Replay the bootstrap's group draws and check each statistic against explicitly duplicated rows."""
    rng = np.random.default_rng(23)
    y, p = make_data(rng, 120, 0.2, 1)
    groups = np.array([f"patient_{i}" for i in rng.integers(0, 15, size=len(y))])
    seen: list[float] = []
    real_core = metrics._CORE["pauc80"]

    def recording_core(yy, ss, ww):
        seen.append(real_core(yy, ss, ww))
        return seen[-1]

    monkeypatch.setitem(metrics._CORE, "pauc80", recording_core)
    ci = bootstrap_ci(y, p, groups, n_boot=20, seed=5)
    stats = seen[:-1]  # the last call is the point estimate
    codes, uniques = pd.factorize(groups)
    replay = np.random.default_rng(5)
    expected = []
    for _ in range(20):
        drawn = replay.integers(0, len(uniques), size=len(uniques))
        rows = np.concatenate([np.flatnonzero(codes == g) for g in drawn])
        if 0 < y[rows].sum() < len(rows):
            expected.append(kaggle_pauc(y[rows], p[rows]))
    assert ci["n_boot"] == len(expected) == len(stats)
    np.testing.assert_allclose(stats, expected, atol=1e-12, rtol=0)


def test_bootstrap_skips_single_class_resamples():
    # one positive group out of 20: about (1 - 1/20) ** 20 = 36% of resamples lack it
    y = np.array([1, 1] + [0] * 38)
    s = np.linspace(1, 0, len(y))
    groups = np.repeat(np.arange(20), 2)
    ci = bootstrap_ci(y, s, groups, n_boot=300, seed=0)
    assert 100 < ci["n_boot"] < 280
    with pytest.raises(DataError, match="needs both"):
        bootstrap_ci(np.zeros(10, dtype=int), s[:10], None, n_boot=10)
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap_ci(y, s, groups, metric="f1")
    with pytest.raises(DataError, match="groups"):
        bootstrap_ci(y, s, groups[:-1])


# ----------------------------------------------------------------------------------- threshold metrics
Y_SMALL = np.array([1, 0, 1, 1, 0, 0, 0, 1])
S_SMALL = np.array([0.95, 0.9, 0.8, 0.6, 0.55, 0.3, 0.2, 0.1])


def test_threshold_metrics_hand_computed():
    # score >= 0.55 -> first five predicted positive: tp=3 (rows 0, 2, 3), fp=2 (rows 1, 4), fn=1, tn=2
    m = threshold_metrics(Y_SMALL, S_SMALL, 0.55)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (3, 2, 2, 1)
    assert all(type(m[k]) is int for k in ("tp", "fp", "tn", "fn"))
    assert m["precision"] == pytest.approx(0.6)
    assert m["recall"] == pytest.approx(0.75)
    assert m["specificity"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["threshold"] == 0.55
    np.testing.assert_array_equal(confusion(Y_SMALL, S_SMALL, 0.55), [[2, 2], [1, 3]])


def test_threshold_metrics_nothing_predicted_positive():
    m = threshold_metrics(Y_SMALL, S_SMALL, 0.99)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (0, 0, 4, 4)
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0
    assert m["specificity"] == 1.0


def test_threshold_for_recall_hand_computed():
    assert threshold_for_recall(Y_SMALL, S_SMALL, 0.75) == 0.6
    assert threshold_for_recall(Y_SMALL, S_SMALL, 0.5) == 0.8
    assert threshold_for_recall(Y_SMALL, S_SMALL, 0.51) == 0.6
    assert threshold_for_recall(Y_SMALL, S_SMALL, 1.0) == 0.1
    with pytest.raises(ValueError, match="target_recall"):
        threshold_for_recall(Y_SMALL, S_SMALL, 0.0)
    with pytest.raises(DataError, match="positive"):
        threshold_for_recall(np.zeros(4, dtype=int), S_SMALL[:4], 0.5)


@pytest.mark.parametrize("target", [0.1, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0])
def test_threshold_for_recall_is_the_largest_reaching_target(target):
    rng = np.random.default_rng(int(target * 100))
    y, p = make_data(rng, 500, 0.1, 2)  # ties among scores
    t = threshold_for_recall(y, p, target)
    assert threshold_metrics(y, p, t)["recall"] >= target
    assert threshold_metrics(y, p, np.nextafter(t, np.inf))["recall"] < target
    assert threshold_metrics(y, p, t + 0.005)["recall"] < target


# ----------------------------------------------------------------------------------------- multiclass
def _multiclass(rng, n=600, c=4, signal=1.5):
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + signal * np.eye(c)[y]
    P = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, P


def test_macro_auc_matches_sklearn_ovr_macro():
    rng = np.random.default_rng(3)
    y, P = _multiclass(rng)
    assert macro_auc(y, P) == pytest.approx(
        roc_auc_score(y, P, multi_class="ovr", average="macro"), abs=1e-12
    )
    assert score("macro_auc", y, P) == macro_auc(y, P)
    # a class absent from y_true is left out of the mean instead of failing
    keep = y != 2
    expected = np.mean([roc_auc_score(y[keep] == c, P[keep, c]) for c in (0, 1, 3)])
    assert macro_auc(y[keep], P[keep]) == pytest.approx(expected, abs=1e-12)


def test_macro_auc_rejects_bad_input():
    rng = np.random.default_rng(4)
    y, P = _multiclass(rng, n=50)
    with pytest.raises(DataError, match=r"class indices 0\.\.3"):
        macro_auc(np.where(y == 0, 7, y), P)
    with pytest.raises(DataError, match=r"\(n, n_classes\) matrix"):
        macro_auc(y, P[:, 0])
    bad = P.copy()
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN/inf"):
        macro_auc(y, bad)


def test_multiclass_report_counts_and_rates():
    y = np.array([0, 0, 1, 1, 2, 2])
    P = np.array(
        [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.5, 0.2, 0.3]]
    )
    r = multiclass_report(y, P, ["a", "b", "c"])
    assert r["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert r["per_class"]["a"]["recall"] == 0.5 and r["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert r["balanced_accuracy"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["macro_auc"] == pytest.approx(roc_auc_score(y, P, multi_class="ovr", average="macro"))
    assert r["log_loss"] == pytest.approx(-np.mean(np.log(P[np.arange(6), y])))


def test_bootstrap_macro_auc_by_group():
    rng = np.random.default_rng(5)
    y, P = _multiclass(rng, n=400, c=3, signal=1.0)
    groups = np.repeat(np.arange(100), 4)
    ci = bootstrap_ci(y, P, groups, metric="macro_auc", n_boot=100, seed=1)
    assert ci["low"] < ci["point"] < ci["high"] and ci["n_boot"] == 100
    assert ci["point"] == pytest.approx(macro_auc(y, P))


def test_paired_bootstrap_of_a_difference():
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.1).astype(int)
    groups = np.repeat(np.arange(200), 10)
    weak = y + rng.normal(0, 1.5, 2000)
    strong = y + rng.normal(0, 0.5, 2000)
    same = metrics.bootstrap_delta_ci(y, weak, weak, groups, "pauc80", n_boot=50)
    assert same["point"] == same["low"] == same["high"] == 0.0 and same["n_boot"] == 50
    d = metrics.bootstrap_delta_ci(y, weak, strong, groups, "pauc80", n_boot=200)
    assert d["point"] == pytest.approx(metrics.pauc(y, strong) - metrics.pauc(y, weak))
    assert 0 < d["low"] < d["point"] < d["high"]
    # paired: the interval of the difference is narrower than the two single intervals put together
    a = metrics.bootstrap_ci(y, weak, groups, "pauc80", n_boot=200)
    b = metrics.bootstrap_ci(y, strong, groups, "pauc80", n_boot=200)
    assert d["high"] - d["low"] < (a["high"] - a["low"]) + (b["high"] - b["low"])
