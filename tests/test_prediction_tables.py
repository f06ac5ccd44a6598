"""The shared homes of the prediction frame, the per-fold scores and the folds-sha check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from foldstack import metrics
from foldstack import prediction_tables as pt
from foldstack.errors import DataError
from foldstack.folds import check_fold_sha, folds_paths
from tests.conftest import tiny_config


def test_test_frame_is_id_mean_then_each_fold(tmp_path):
    cfg = tiny_config("isic2024", tmp_path / "runs")
    rng = np.random.default_rng(0)
    per_fold = rng.random((3, 5))
    ids = [f"ISIC_{i}" for i in range(5)]
    frame = pt.test_frame(cfg, ids, per_fold)
    assert list(frame.columns) == ["id", "pred", "pred_fold0", "pred_fold1", "pred_fold2"]
    assert frame["id"].tolist() == ids
    np.testing.assert_array_equal(frame["pred"], per_fold.mean(axis=0))
    np.testing.assert_array_equal(frame["pred_fold1"], per_fold[1])
    pd.testing.assert_frame_equal(pt.test_frame(cfg, ids, list(per_fold)), frame)


def test_test_frame_multiclass_and_a_fold_of_another_length(tmp_path):
    cfg = tiny_config("ham10000", tmp_path / "runs")
    c = len(cfg.classes)
    per_fold = np.random.default_rng(1).random((2, 4, c))
    frame = pt.test_frame(cfg, ["a", "b", "c", "d"], per_fold)
    assert list(frame.columns) == ["id", *cfg.pred_columns, *(f"{p}_fold0" for p in cfg.pred_columns)] + [
        f"{p}_fold1" for p in cfg.pred_columns
    ]
    np.testing.assert_array_equal(frame[cfg.pred_columns].to_numpy(), per_fold.mean(axis=0))
    with pytest.raises(DataError, match=r"fold\(s\) \[1\] predict 3 test rows, not one per test id \(4\)"):
        pt.test_frame(cfg, ["a", "b", "c", "d"], [per_fold[0], per_fold[1][:3]])


def test_score_folds_pools_averages_and_lists_each_fold(tmp_path):
    cfg = tiny_config("isic2024", tmp_path / "runs")
    rng = np.random.default_rng(2)
    fold = np.repeat([2, 0, 1], 40)  # rows need not be sorted by fold
    y = (rng.random(120) < 0.3).astype(int)
    p = np.clip(0.3 * y + rng.random(120), 0, 1)
    s = pt.score_folds(cfg, y, p, fold)
    assert list(s) == ["oof_auc", "oof_pauc", "fold_auc_mean", "fold_pauc_mean", "per_fold"]
    assert s["oof_pauc"] == metrics.pauc(y, p) and s["oof_auc"] == metrics.auc(y, p)
    assert [r["fold"] for r in s["per_fold"]] == [0, 1, 2]
    for r in s["per_fold"]:
        m = fold == r["fold"]
        assert r == {
            "fold": r["fold"],
            "rows": 40,
            "positives": int(y[m].sum()),
            "auc": metrics.auc(y[m], p[m]),
            "pauc": metrics.pauc(y[m], p[m]),
        }
    assert s["fold_pauc_mean"] == float(np.mean([metrics.pauc(y[fold == f], p[fold == f]) for f in range(3)]))
    assert set(pt.score_folds(cfg, y, p, fold, prefix="holdout")) >= {"holdout_auc", "holdout_pauc"}


def test_score_folds_multiclass_counts_the_classes_present(tmp_path):
    cfg = tiny_config("ham10000", tmp_path / "runs")
    c = len(cfg.classes)
    rng = np.random.default_rng(3)
    y = np.tile(np.arange(c), 12)
    fold = np.arange(len(y)) % 2
    p = rng.dirichlet(np.ones(c), len(y))
    s = pt.score_folds(cfg, y, p, fold)
    assert s["oof_macro_auc"] == metrics.macro_auc(y, p)
    assert {"fold_macro_auc_mean", "fold_balanced_accuracy_mean", "fold_log_loss_mean"} <= set(s)
    assert [r["classes_present"] for r in s["per_fold"]] == [len(np.unique(y[fold == f])) for f in (0, 1)]
    assert all("positives" not in r for r in s["per_fold"])


def test_check_fold_sha_names_the_artifact_both_shas_folds_json_and_what_to_do(tmp_path):
    cfg = tiny_config("isic2024", tmp_path / "runs")
    meta = {"sha256": "a" * 64}
    check_fold_sha(cfg, "a" * 64, "runs/x/oof.parquet", meta=meta)
    with pytest.raises(DataError) as e:
        check_fold_sha(cfg, "b" * 64, "stage-1 run x", "rerun `make oof MODEL=x`", meta)
    assert str(e.value) == (
        f"stage-1 run x was made on folds {'b' * 12}, but the current folds are {'a' * 12} "
        f"({folds_paths(cfg)[1]}): rerun `make oof MODEL=x`"
    )
    with pytest.raises(DataError, match=r"made on folds None, .*: rerun it on the current folds$"):
        check_fold_sha(cfg, None, "an old run", meta=meta)
