"""Competition metrics: the ISIC 2024 partial AUC, plain AUC, a patient bootstrap and threshold metrics.

`pauc` reproduces the Kaggle ISIC 2024 scoring code: labels flipped, scores negated, ROC curve cut at
FPR = 1 - min_tpr with linear interpolation, trapezoid area. Its range is [0, 1 - min_tpr] (0.2 for the
competition's min_tpr = 0.8): a constant prediction scores 0.5 * 0.2**2 = 0.02, a perfect ranking 0.2.
It is NOT `sklearn.metrics.roc_auc_score(max_fpr=...)`, which is the McClish-standardised partial AUC of
the low-FPR corner. Only the order of the scores matters, so logits and probabilities score the same.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import pandas as pd
import sklearn.metrics as skm
from numpy.typing import ArrayLike

from foldstack.errors import DataError

_CoreMetric = Callable[[np.ndarray, np.ndarray, np.ndarray | None], float]


# ----------------------------------------------------------------------------------------- validation
def _as_labels(y_true: ArrayLike) -> np.ndarray:
    """1-D int64 array of 0/1 labels; bool is accepted; anything else raises DataError."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise DataError(f"y_true must be 1-D, got shape {y.shape}")
    if y.dtype == bool:
        return y.astype(np.int64)
    if y.dtype.kind not in "iuf":
        try:
            y = y.astype(float)
        except (TypeError, ValueError):
            raise DataError(f"y_true must contain only 0/1 labels, got dtype {y.dtype}") from None
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        examples = pd.unique(y[bad])[:5].tolist()
        raise DataError(
            f"y_true must contain only 0/1 labels; {int(bad.sum())} value(s) are not, e.g. {examples}"
        )
    return y.astype(np.int64)


def _as_real(values: ArrayLike, name: str) -> np.ndarray:
    """1-D float64 array with only finite values; otherwise DataError."""
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be numeric") from None
    if x.ndim != 1:
        raise DataError(f"{name} must be 1-D, got shape {x.shape}")
    bad = ~np.isfinite(x)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{name} has {int(bad.sum())} NaN/inf value(s) (first at position {first}: {x[first]})"
        )
    return x


def _validate(
    y_true: ArrayLike,
    y_score: ArrayLike,
    sample_weight: ArrayLike | None = None,
    need_both: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Check labels, scores and weights; `need_both` names the metric that needs both classes."""
    y = _as_labels(y_true)
    s = _as_real(y_score, "y_score")
    if len(y) != len(s):
        raise DataError(f"y_true and y_score differ in length: {len(y)} vs {len(s)}")
    if len(y) == 0:
        raise DataError("y_true and y_score are empty")
    w = None
    if sample_weight is not None:
        w = _as_real(sample_weight, "sample_weight")
        if len(w) != len(y):
            raise DataError(f"sample_weight has length {len(w)}, y_true has {len(y)}")
        if (w < 0).any():
            raise DataError("sample_weight must be non-negative")
    if need_both is not None:
        weights = np.ones(len(y)) if w is None else w
        n_pos, n_neg = np.count_nonzero((y == 1) & (weights > 0)), np.count_nonzero((y == 0) & (weights > 0))
        if n_pos == 0 or n_neg == 0:
            raise DataError(
                f"{need_both} needs both classes in y_true (positives and negatives); "
                f"got {n_pos} positive(s) and {n_neg} negative(s)"
                + ("" if w is None else " with non-zero weight")
            )
    return y, s, w


# ------------------------------------------------------------------------------------------ core metrics
def _pauc_core(y: np.ndarray, s: np.ndarray, w: np.ndarray | None, max_fpr: float) -> float:
    """Kaggle ISIC 2024 partial AUC on validated arrays (flipped labels, negated scores)."""
    fpr, tpr, _ = skm.roc_curve(1 - y, -s, sample_weight=w)
    if max_fpr >= 1:
        return float(skm.auc(fpr, tpr))
    stop = int(np.searchsorted(fpr, max_fpr, "right"))
    tpr_at_cut = np.interp(max_fpr, [fpr[stop - 1], fpr[stop]], [tpr[stop - 1], tpr[stop]])
    tpr = np.append(tpr[:stop], tpr_at_cut)
    fpr = np.append(fpr[:stop], max_fpr)
    return float(skm.auc(fpr, tpr))


def _auc_core(y: np.ndarray, s: np.ndarray, w: np.ndarray | None) -> float:
    fpr, tpr, _ = skm.roc_curve(y, s, sample_weight=w)
    return float(skm.auc(fpr, tpr))


def _max_fpr(min_tpr: float) -> float:
    if not 0 <= min_tpr < 1:
        raise ValueError(f"min_tpr must be in [0, 1), got {min_tpr!r}")
    return abs(1 - min_tpr)  # as the Kaggle code computes it: 1 - 0.8 = 0.19999999999999996


def pauc(
    y_true: ArrayLike, y_score: ArrayLike, min_tpr: float = 0.8, sample_weight: ArrayLike | None = None
) -> float:
    """ISIC 2024 partial AUC above `min_tpr` TPR, in [0, 1 - min_tpr] (the Kaggle scoring code).

    Any real scores are accepted (probabilities, logits): only their order matters. The Kaggle code
    ranks by 1 - p; this ranks by -p, which is the same order (barring 1 - p rounding distinct tiny
    probabilities to the same float). `sample_weight` (non-negative) acts like duplicating rows.
    Raises DataError on bad data (length, labels, NaN/inf, a single class), ValueError on a bad min_tpr.
    """
    max_fpr = _max_fpr(min_tpr)
    y, s, w = _validate(y_true, y_score, sample_weight, need_both="pAUC")
    return _pauc_core(y, s, w, max_fpr)


def auc(y_true: ArrayLike, y_score: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
    """Plain ROC AUC, with the same validation as `pauc`."""
    y, s, w = _validate(y_true, y_score, sample_weight, need_both="AUC")
    return _auc_core(y, s, w)


# ------------------------------------------------------------------------------------------ multiclass
def _validate_multiclass(
    y_true: ArrayLike, y_prob: ArrayLike, sample_weight: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Integer class labels 0..C-1 and an (n, C) finite score matrix; otherwise DataError."""
    y = np.asarray(y_true)
    P = np.asarray(y_prob, dtype=np.float64)
    if y.ndim != 1:
        raise DataError(f"y_true must be 1-D class indices, got shape {y.shape}")
    if P.ndim != 2 or P.shape[1] < 2:
        raise DataError(f"y_prob must be an (n, n_classes) matrix, got shape {P.shape}")
    if len(y) != len(P):
        raise DataError(f"y_true and y_prob differ in length: {len(y)} vs {len(P)}")
    if len(y) == 0:
        raise DataError("y_true and y_prob are empty")
    if y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= P.shape[1]:
        bad = pd.unique(y[(y < 0) | (y >= P.shape[1])] if y.dtype.kind in "iuf" else y)[:5].tolist()
        raise DataError(f"y_true must hold class indices 0..{P.shape[1] - 1}; got e.g. {bad}")
    if not np.isfinite(P).all():
        raise DataError(f"y_prob has {int((~np.isfinite(P)).sum())} NaN/inf value(s)")
    w = None if sample_weight is None else _as_real(sample_weight, "sample_weight")
    return y.astype(np.int64), P, w


def _macro_auc_core(y: np.ndarray, P: np.ndarray, w: np.ndarray | None) -> float:
    """Mean one-vs-rest AUC over the classes that have rows (with weight) and are not every row."""
    weights = np.ones(len(y)) if w is None else w
    aucs = []
    for c in range(P.shape[1]):
        pos = y == c
        if (weights[pos] > 0).any() and (weights[~pos] > 0).any():
            aucs.append(_auc_core(pos.astype(np.int64), P[:, c], w))
    if not aucs:
        raise DataError("macro AUC needs at least one class with both members and non-members")
    return float(np.mean(aucs))


def macro_auc(y_true: ArrayLike, y_prob: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
    """Macro one-vs-rest ROC AUC of an (n, C) probability matrix against class indices 0..C-1.

    A class with no row in y_true has no AUC and is left out of the mean (as is a class that is
    every row); with every class present this equals roc_auc_score(multi_class='ovr', average='macro').
    """
    y, P, w = _validate_multiclass(y_true, y_prob, sample_weight)
    return _macro_auc_core(y, P, w)


def multiclass_report(y_true: ArrayLike, y_prob: ArrayLike, classes: list[str] | tuple[str, ...]) -> dict:
    """Macro OvR AUC, per-class AUC, balanced accuracy, accuracy, log loss, per-class precision /
    recall / F1 / support and the confusion matrix (rows true, columns predicted = argmax)."""
    y, P, _ = _validate_multiclass(y_true, y_prob)
    if P.shape[1] != len(classes):
        raise DataError(f"y_prob has {P.shape[1]} columns for {len(classes)} classes")
    pred = P.argmax(axis=1)
    labels = list(range(len(classes)))
    prec, rec, f1, support = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    present = np.bincount(y, minlength=len(classes)) > 0
    per_class = {}
    for c, name in enumerate(classes):
        one = (y == c).astype(np.int64)
        per_class[name] = {
            "auc": _auc_core(one, P[:, c], None) if 0 < one.sum() < len(one) else None,
            "precision": float(prec[c]),
            "recall": float(rec[c]),
            "f1": float(f1[c]),
            "support": int(support[c]),
        }
    Pc = np.clip(P / P.sum(axis=1, keepdims=True), 1e-15, 1)
    return {
        "macro_auc": _macro_auc_core(y, P, None),
        "balanced_accuracy": float(np.mean(rec[present])),
        "accuracy": float(np.mean(pred == y)),
        "macro_f1": float(np.mean(f1[present])),
        "log_loss": float(-np.mean(np.log(Pc[np.arange(len(y)), y]))),
        "per_class": per_class,
        "classes": list(classes),
        "confusion": skm.confusion_matrix(y, pred, labels=labels).tolist(),
    }


METRICS: dict[str, Callable[..., float]] = {
    "pauc80": partial(pauc, min_tpr=0.8),
    "auc": auc,
    "macro_auc": macro_auc,
}
_CORE: dict[str, _CoreMetric] = {
    "pauc80": partial(_pauc_core, max_fpr=_max_fpr(0.8)),
    "auc": _auc_core,
    "macro_auc": _macro_auc_core,
}


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid names: {', '.join(sorted(METRICS))}")
    return metric


def score(
    metric: str, y_true: ArrayLike, y_score: ArrayLike, sample_weight: ArrayLike | None = None
) -> float:
    """Score by metric name: 'pauc80' (ISIC 2024 pAUC, min_tpr=0.8), 'auc', or 'macro_auc' (y_score
    an (n, C) matrix, y_true class indices)."""
    return METRICS[_check_metric(metric)](y_true, y_score, sample_weight=sample_weight)


# ------------------------------------------------------------------------------------------- bootstrap
def _group_codes(groups: ArrayLike | None, n: int) -> tuple[np.ndarray, int]:
    """Integer code per row (0..n_groups-1); None means every row is its own group."""
    if groups is None:
        return np.arange(n), n
    g = np.asarray(groups)
    if g.ndim != 1 or len(g) != n:
        raise DataError(f"groups must be 1-D with one entry per row ({n}), got shape {g.shape}")
    codes, uniques = pd.factorize(g)
    if (codes < 0).any():
        raise DataError(f"groups has {int((codes < 0).sum())} missing value(s)")
    return codes, len(uniques)


def bootstrap_ci(
    y_true: ArrayLike,
    y_score: ArrayLike,
    groups: ArrayLike | None,
    metric: str = "pauc80",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, float | int]:
    """Group (patient) bootstrap percentile interval of `metric`.

    Each resample draws as many groups as there are, with replacement; every row of a drawn group comes
    along, once per draw (done as row weights = multiplicity, which equals duplicating the rows).
    Resamples that lose a class of the data are skipped. Returns 'point' (metric on all rows), 'low', 'high'
    (the alpha/2 and 1 - alpha/2 quantiles) and 'n_boot' (the number of usable resamples).
    groups=None bootstraps rows.
    """
    core = _CORE[_check_metric(metric)]
    y, s = _checked(metric, y_true, y_score, n_boot, alpha)
    stats = _over_resamples(metric, y, groups, n_boot, seed, lambda w: core(y, s, w))
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return {"point": core(y, s, None), "low": float(low), "high": float(high), "n_boot": len(stats)}


def bootstrap_delta_ci(
    y_true: ArrayLike,
    y_base: ArrayLike,
    y_other: ArrayLike,
    groups: ArrayLike | None,
    metric: str = "pauc80",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, float | int]:
    """Paired group bootstrap of metric(y_other) - metric(y_base): both scored on the same resamples, so
    the interval is that of the difference (narrower than two separate intervals suggest when the two
    predictions move together). Returns 'point', 'low', 'high', 'n_boot' as bootstrap_ci."""
    core = _CORE[_check_metric(metric)]
    y, a = _checked(metric, y_true, y_base, n_boot, alpha)
    _, b = _checked(metric, y_true, y_other, n_boot, alpha)
    stats = _over_resamples(metric, y, groups, n_boot, seed, lambda w: core(y, b, w) - core(y, a, w))
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    point = core(y, b, None) - core(y, a, None)
    return {"point": point, "low": float(low), "high": float(high), "n_boot": len(stats)}


def _checked(metric: str, y_true, y_score, n_boot: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if metric == "macro_auc":
        y, s, _ = _validate_multiclass(y_true, y_score)
    else:
        y, s, _ = _validate(y_true, y_score, need_both=metric)
    return y, s


def _over_resamples(metric: str, y: np.ndarray, groups, n_boot: int, seed: int, stat) -> list[float]:
    """stat(row weights) over n_boot group resamples (weights = multiplicities, one array at a time),
    skipping resamples that lose a class."""
    if metric == "macro_auc":
        onehot = np.eye(int(y.max()) + 1)[y]  # a resample must keep every class the data has
    else:
        onehot = np.column_stack([y == 0, y == 1]).astype(np.float64)
    codes, n_groups = _group_codes(groups, len(y))
    per_group = np.stack([np.bincount(codes, weights=col, minlength=n_groups) for col in onehot.T], 1)
    present = per_group.sum(axis=0) > 0
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(int(n_boot)):
        counts = np.bincount(rng.integers(0, n_groups, size=n_groups), minlength=n_groups)
        if ((counts @ per_group)[present] == 0).any():
            continue
        out.append(stat(counts[codes].astype(np.float64)))
    if not out:
        raise DataError(f"no bootstrap resample of {n_boot} kept every class; {metric} needs them")
    return out


# ------------------------------------------------------------------------------------ threshold metrics
def _check_threshold(threshold: float) -> float:
    t = float(threshold)
    if np.isnan(t):
        raise ValueError("threshold is NaN")
    return t


def confusion(y_true: ArrayLike, y_score: ArrayLike, threshold: float) -> np.ndarray:
    """2x2 int confusion matrix [[tn, fp], [fn, tp]]; predicted positive when score >= threshold."""
    y, s, _ = _validate(y_true, y_score)
    pred = s >= _check_threshold(threshold)
    pos = y == 1
    tp = np.count_nonzero(pred & pos)
    fp = np.count_nonzero(pred & ~pos)
    fn = np.count_nonzero(~pred & pos)
    tn = np.count_nonzero(~pred & ~pos)
    return np.array([[tn, fp], [fn, tp]], dtype=np.int64)


def threshold_metrics(y_true: ArrayLike, y_score: ArrayLike, threshold: float) -> dict[str, float | int]:
    """Precision, recall, f1, specificity and counts at `threshold` (positive when score >= threshold).

    A ratio whose denominator is 0 is reported as 0.0: precision when nothing is predicted positive,
    recall when there are no positives, specificity when there are no negatives, f1 when tp+fp+fn == 0.
    """
    (tn, fp), (fn, tp) = confusion(y_true, y_score, threshold).tolist()

    def ratio(num: int, den: int) -> float:
        return num / den if den else 0.0

    return {
        "threshold": float(threshold),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "specificity": ratio(tn, tn + fp),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def threshold_for_recall(y_true: ArrayLike, y_score: ArrayLike, target_recall: float) -> float:
    """Largest threshold whose recall (score >= threshold) is >= target_recall, in (0, 1].

    It is the k-th largest positive score, k the fewest positives reaching the target; any higher
    threshold keeps fewer than k positives. Raises DataError when y_true has no positives.
    """
    if not 0 < target_recall <= 1:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall!r}")
    y, s, _ = _validate(y_true, y_score)
    pos_scores = np.sort(s[y == 1])[::-1]
    n_pos = len(pos_scores)
    if n_pos == 0:
        raise DataError("threshold_for_recall needs at least one positive in y_true")
    recalls = np.arange(1, n_pos + 1) / n_pos  # the same float division threshold_metrics does
    k = int(np.argmax(recalls >= target_recall))
    return float(pos_scores[k])
