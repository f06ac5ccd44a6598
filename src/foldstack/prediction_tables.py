"""Prediction columns shared by every stage: one `pred` for a binary target, one `pred_<label>` per class
for a multiclass one, and `<column>_fold<k>` for the fold models' test predictions; the test-prediction
frame (test_frame) and the OOF scores pooled and per fold (score_folds) that every stage writes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from foldstack import metrics
from foldstack.config import CompetitionConfig
from foldstack.errors import DataError


def fold_columns(cfg: CompetitionConfig, fold: int) -> list[str]:
    """The test-prediction columns of one fold model: pred_fold<k>, or pred_<label>_fold<k> per class."""
    return [f"{c}_fold{fold}" for c in cfg.pred_columns]


def as_matrix(values: np.ndarray) -> np.ndarray:
    """(n,) -> (n, 1); (n, C) unchanged."""
    a = np.asarray(values, dtype=np.float64)
    return a[:, None] if a.ndim == 1 else a


def squeeze(values: np.ndarray) -> np.ndarray:
    """(n, 1) -> (n,): the binary shape the metrics and plots take; (n, C) unchanged."""
    a = np.asarray(values, dtype=np.float64)
    return a[:, 0] if a.ndim == 2 and a.shape[1] == 1 else a


def columns_frame(
    cfg: CompetitionConfig, values: np.ndarray, columns: list[str] | None = None
) -> pd.DataFrame:
    """A frame of the prediction columns (or `columns`) from an (n,) or (n, C) array."""
    cols = columns or cfg.pred_columns
    m = as_matrix(values)
    if m.shape[1] != len(cols):
        raise DataError(f"{m.shape[1]} prediction column(s) for {len(cols)} names {cols}")
    return pd.DataFrame(m, columns=cols)


def read(
    cfg: CompetitionConfig, frame: pd.DataFrame, where: str, columns: list[str] | None = None
) -> np.ndarray:
    """The prediction columns of `frame` as (n,) (binary) or (n, C); a missing column names `where`."""
    cols = columns or cfg.pred_columns
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise DataError(
            f"{where}: missing prediction column(s) {missing} (a {cfg.name} prediction file has {cols})"
        )
    return squeeze(frame[cols].to_numpy(dtype=np.float64))


def test_frame(
    cfg: CompetitionConfig, ids: list[str], per_fold: np.ndarray | list[np.ndarray]
) -> pd.DataFrame:
    """A test.parquet frame: id, the mean of the fold models in the prediction columns, then each
    fold's own columns (fold_columns). per_fold holds one (n,) or (n, C) array per fold model, as a
    list or an array of shape (k, n) or (k, n, C)."""
    folds = [np.asarray(p, dtype=np.float64) for p in per_fold]
    if not folds:
        raise DataError("no fold model predictions to put in a test frame")
    short = [f for f, p in enumerate(folds) if len(p) != len(ids)]
    if short:
        raise DataError(
            f"fold(s) {short} predict {len(folds[short[0]])} test rows, not one per test id ({len(ids)})"
        )
    return pd.concat(
        [
            pd.DataFrame({"id": list(ids)}),
            columns_frame(cfg, np.mean(folds, axis=0)),
            *(columns_frame(cfg, p, fold_columns(cfg, f)) for f, p in enumerate(folds)),
        ],
        axis=1,
    )


test_frame.__test__ = False  # a library function, not a test, wherever pytest finds it imported


def headline(cfg: CompetitionConfig, y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """The scores every table shows: AUC and pAUC (binary), or macro OvR AUC, balanced accuracy,
    accuracy, macro F1 and log loss (multiclass)."""
    if cfg.multiclass:
        r = metrics.multiclass_report(y, p, cfg.classes)
        return {k: r[k] for k in ("macro_auc", "balanced_accuracy", "accuracy", "macro_f1", "log_loss")}
    return {"auc": metrics.auc(y, p), "pauc": metrics.pauc(y, p)}


def score_folds(
    cfg: CompetitionConfig, y: np.ndarray, p: np.ndarray, fold: np.ndarray, prefix: str = "oof"
) -> dict:
    """The headline scores pooled over every row (<prefix>_<key>), their means over the folds
    (fold_<key>_mean) and per fold (per_fold: fold, rows, positives, or for a multiclass target
    classes_present, and the headline scores of the fold's rows), the scores metrics.json files hold.
    `fold` holds each row's fold; folds are listed in increasing order."""
    y, p, fold = np.asarray(y), np.asarray(p), np.asarray(fold)
    per_fold = []
    for f in np.unique(fold):
        m = fold == f
        count = (
            {"classes_present": len(np.unique(y[m]))} if cfg.multiclass else {"positives": int(y[m].sum())}
        )
        per_fold.append({"fold": int(f), "rows": int(m.sum()), **count, **headline(cfg, y[m], p[m])})
    pooled = headline(cfg, y, p)
    return {
        **{f"{prefix}_{k}": v for k, v in pooled.items()},
        **{f"fold_{k}_mean": float(np.mean([r[k] for r in per_fold])) for k in pooled},
        "per_fold": per_fold,
    }


def main_key(cfg: CompetitionConfig) -> str:
    """The headline key of the competition metric: pauc, auc or macro_auc."""
    return {"pauc80": "pauc", "auc": "auc", "macro_auc": "macro_auc"}[cfg.metric]


def headline_of(cfg: CompetitionConfig, record: dict) -> dict[str, float]:
    """The two headline scores of a record for a one-line print: pAUC and AUC, or macro AUC and
    balanced accuracy."""
    keys = ("macro_auc", "balanced_accuracy") if cfg.multiclass else ("pauc", "auc")
    return {k: record[k] for k in keys if k in record}


# headline key -> the score at or above which a result is suspicious (the maxima are 0.2, 1 and 1): on
# these tasks such a score almost always means a leak
NEAR_MAX = {"pauc": 0.198, "auc": 0.999, "macro_auc": 0.999}


def near_max(record: dict, prefixes: tuple[str, ...] = ("oof", "holdout")) -> list[str]:
    """'<prefix>_<key> <value> >= <limit>' for each headline score of `record` at or near its maximum."""
    out = []
    for key, limit in NEAR_MAX.items():
        for prefix in prefixes:
            v = record.get(f"{prefix}_{key}")
            if isinstance(v, float) and v >= limit:
                out.append(f"{prefix}_{key} {v:.4f} >= {limit}")
    return out
