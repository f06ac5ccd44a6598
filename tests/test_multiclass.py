"""HAM10000 seven-class end to end on a tiny synthetic copy: folds by lesion, softmax stage 1, multiclass
stacking, submission with one column per class, and the offline leaderboard."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from foldstack import metrics
from foldstack.data.metadata import read_metadata
from foldstack.errors import ConfigError, DataError
from foldstack.folds import assign_folds, load_folds, make_folds
from foldstack.leaderboard import leaderboard
from foldstack.runs import StackRun
from foldstack.stage1.config import load_oof_config
from foldstack.stage1.run import run_oof
from foldstack.stage2.config import load_stack_config
from foldstack.stage2.models import GBDTClassifier
from foldstack.stage2.run import run_stack
from foldstack.submit.files import write_submission
from foldstack.submit.ledger import ledger_path, read_ledger, record
from foldstack.submit.predict import stack_test_predictions, submission_frame
from tests.conftest import TINY

CLASSES = ["nv", "mel", "bkl", "bcc", "akiec", "vasc", "df"]
PRED = [f"pred_{c}" for c in CLASSES]
STAGE1 = (
    "model.backbone=test_efficientnet model.pretrained=false data.img_size=32 train.epochs=2 predict.tta=2"
)


@pytest.fixture(scope="module")
def ham(tiny_ham10000, tmp_path_factory):
    """A runs/ folder with lesion-grouped folds, one tiny ham10000_cnn run and a multiclass stack."""
    _, data = tiny_ham10000
    runs = tmp_path_factory.mktemp("ham") / "runs"
    cfg = load_oof_config("ham10000", "ham10000_cnn", f"{TINY['ham10000']} runs_dir={runs} {STAGE1}")
    make_folds(cfg, read_metadata(cfg, data, "train"), data)
    result = run_oof(cfg, data, progress=False)
    scfg = load_stack_config(
        "ham10000", "multiclass", f"{TINY['ham10000']} runs_dir={runs} tuning.n_trials=2"
    )
    stack = run_stack(scfg, data)
    return cfg, scfg, data, runs, result, stack


@pytest.mark.slow
def test_folds_group_lesions_and_hold_every_class(ham):
    cfg, _, data, *_ = ham
    folds, meta = load_folds(cfg)
    train = read_metadata(cfg, data, "train")
    assert (folds.groupby("group")["fold"].nunique() == 1).all()  # a lesion's images share one fold
    assert set(folds["group"]) == set(train["lesion_id"])
    for f in range(cfg.folds.k):
        assert set(folds.loc[folds["fold"] == f, "target"]) == set(range(7))
    codes = folds.set_index("id")["target"]
    assert (codes.loc[train["image_id"]].to_numpy() == [CLASSES.index(d) for d in train["dx"]]).all()
    assert meta["classes"] == CLASSES and sum(meta["class_counts"].values()) == len(train)


def test_fold_maker_refuses_a_class_held_by_too_few_groups():
    ids = pd.Series([f"i{n}" for n in range(12)])
    groups = pd.Series([f"L{n // 2}" for n in range(12)])
    target = np.array([0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 0, 0])  # class 2: one lesion only
    with pytest.raises(DataError, match="only 1 lesion_id groups have a 'c' row"):
        assign_folds(ids, groups, target, 2, 0, ("a", "b", "c"), "lesion_id groups")


def test_stage1_writes_one_probability_column_per_class(ham):
    cfg, _, _, runs, result, _ = ham
    out = runs / "ham10000" / "oof" / "ham10000_cnn"
    oof = pd.read_parquet(out / "oof.parquet")
    folds, _ = load_folds(cfg)
    assert oof["id"].tolist() == folds["id"].tolist() and (oof["fold"] == folds["fold"]).all()
    assert np.allclose(oof[PRED].sum(axis=1), 1, atol=1e-5) and "pred" not in oof
    test = pd.read_parquet(out / "test.parquet")
    for c in PRED:
        fold_cols = [f"{c}_fold{f}" for f in range(cfg.folds.k)]
        assert np.allclose(test[fold_cols].mean(axis=1), test[c])
    assert 0 <= result["oof_macro_auc"] <= 1 and 0 <= result["oof_balanced_accuracy"] <= 1
    y = oof["target"].to_numpy()
    assert result["oof_macro_auc"] == pytest.approx(metrics.macro_auc(y, oof[PRED].to_numpy()))
    assert len(result["per_fold"]) == cfg.folds.k and "macro_auc" in result["per_fold"][0]
    info = json.loads((out / "fold0.json").read_text())
    assert len(info["class_weights"]) == 7 and info["pos_weight"] is None


def test_stage1_report_has_the_multiclass_figures_and_confusion(ham):
    _, _, _, runs, _, _ = ham
    report = runs / "ham10000" / "oof" / "ham10000_cnn" / "report"
    for f in ("roc.png", "confusion.png", "per_class.png", "per_class.csv", "report.json"):
        assert (report / f).stat().st_size > 0, f
    r = json.loads((report / "report.json").read_text())
    oof = pd.read_parquet(report.parent / "oof.parquet")
    cm = np.array(r["confusion"])
    assert cm.shape == (7, 7) and cm.sum() == len(oof)
    assert (cm.sum(axis=1) == np.bincount(oof["target"], minlength=7)).all()
    assert set(r["per_class"]) == set(CLASSES) and {"precision", "recall", "f1"} <= set(r["per_class"]["mel"])


def test_multiclass_stack_scores_blends_and_predicts_from_artifacts(ham):
    _, scfg, data, runs, _, stack = ham
    out = runs / "ham10000" / "stack" / "multiclass"
    oof = pd.read_parquet(out / "oof.parquet")
    assert np.allclose(oof[PRED].sum(axis=1), 1, atol=1e-6)
    mean = (
        oof[[f"pred_lgbm_{c}" for c in CLASSES]].to_numpy()
        + oof[[f"pred_xgb_{c}" for c in CLASSES]].to_numpy()
    ) / 2
    assert np.allclose(oof[PRED].to_numpy(), mean)
    s = stack["stack"]
    assert {"oof_macro_auc", "oof_balanced_accuracy", "holdout_macro_auc"} <= set(s)
    assert "oof_macro_auc" in stack["tabular_only"] and "oof_macro_auc" in stack["cnn"]["ham10000_cnn"]
    cols = json.loads((out / "inputs.json").read_text())["columns"]
    assert {f"cnn_ham10000_cnn_{c}" for c in CLASSES} <= set(cols)
    again = stack_test_predictions(StackRun(out), data, progress=False)
    test = pd.read_parquet(out / "test.parquet")
    assert np.allclose(again[PRED].to_numpy(), test[PRED].to_numpy(), atol=1e-6)
    sub = submission_frame(scfg, data, again)
    assert list(sub.columns) == ["image_id", *CLASSES]


@pytest.mark.slow
def test_submission_and_leaderboard_in_multiclass(ham, tmp_path):
    _, scfg, data, runs, _, _ = ham
    source = runs / "ham10000" / "stack" / "multiclass" / "test.parquet"
    path, row = write_submission(scfg, data, source, out_dir=tmp_path)
    sub = pd.read_csv(path)
    sample = pd.read_csv(data / "sample_submission.csv")
    assert (
        list(sub.columns) == list(sample.columns) and sub["image_id"].tolist() == sample["image_id"].tolist()
    )
    assert row["oof_auc"] == pytest.approx(
        json.loads((source.parent / "metrics.json").read_text())["stack"]["oof_macro_auc"]
    )
    record(ledger_path(scfg, tmp_path), row)
    table = leaderboard(scfg, data / "test-labels.csv", out_dir=tmp_path)
    assert set(table["kind"]) == {"stage1", "stack", "submission"}
    s = table[table["kind"] == "submission"].iloc[0]
    assert (
        s["oof_macro_auc_lo"] <= s["oof_macro_auc"] <= s["oof_macro_auc_hi"] and 0 <= s["test_macro_auc"] <= 1
    )
    assert {f"auc_{c}" for c in CLASSES} <= set(table.columns)
    md = (tmp_path / "ham10000" / "leaderboard.md").read_text()
    assert "macro_auc" in md and "| multiclass | stack |" in md
    assert (tmp_path / "ham10000" / "roc.png").exists()


def test_submit_without_a_kaggle_slug_writes_and_records_only(ham, tmp_path, monkeypatch, capsys):
    from foldstack.commands.submit import submit, submit_parser

    _, _, data, runs, _, _ = ham
    monkeypatch.chdir(tmp_path)
    args = ["--comp", "ham10000", "--data", str(data), "--set", f"{TINY['ham10000']} runs_dir={runs}"]
    assert submit(submit_parser().parse_args(args)) == 0
    assert "ham10000 has no Kaggle competition" in capsys.readouterr().out
    ledger = read_ledger(tmp_path / "submissions/ham10000/ledger.csv")
    assert ledger.loc[0, "kaggle_status"] == "local only" and (tmp_path / ledger.loc[0, "file"]).exists()


def test_binary_configs_are_refused_on_a_multiclass_competition():
    with pytest.raises(ConfigError, match="STACK=multiclass"):
        load_stack_config("ham10000", "lgb_xgb_cb")
    with pytest.raises(ConfigError, match=r"train\.neg_ratio=0"):
        load_oof_config("ham10000", "tiny")
    with pytest.raises(ConfigError, match="COMP=ham10000"):
        load_oof_config("isic2024", "ham10000_cnn")
    with pytest.raises(ConfigError, match="class_weight is for multiclass"):
        load_oof_config("isic2024", "tiny", "train.class_weight=balanced")


@pytest.mark.parametrize("kind", ["lightgbm", "xgboost", "catboost", "knn"])
def test_multiclass_estimator_gives_class_probabilities(kind):
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    y = np.digitize(X["a"] + 0.3 * rng.normal(size=300), [-0.5, 0.5])
    est = GBDTClassifier(
        kind=kind, n_estimators=20, n_classes=3, params={"n_neighbors": 9} if kind == "knn" else None
    )
    p = clone(est).fit(X, y).predict_proba(X)
    assert p.shape == (300, 3) and np.allclose(p.sum(axis=1), 1)
    assert metrics.macro_auc(y, p) > 0.8
    with pytest.raises(ValueError, match="neg_ratio"):
        GBDTClassifier(kind=kind, n_classes=3, neg_ratio=2).fit(X, y)


@pytest.mark.slow
def test_oof_and_stack_commands_print_multiclass_scores(ham, tmp_path, monkeypatch, capsys):
    from foldstack.commands import stage1, stage2

    _, _, data, runs, _, _ = ham
    monkeypatch.chdir(tmp_path)
    overrides = f"{TINY['ham10000']} runs_dir={runs} {STAGE1} run=ham_pipeline train.epochs=1"
    assert stage1.oof("ham10000", "ham10000_cnn", overrides, str(data), progress=False) == 0
    assert '"oof_macro_auc"' in capsys.readouterr().out
    sets = f"{TINY['ham10000']} runs_dir={runs} run=mc2"
    assert stage2.stack("ham10000", "multiclass", sets, str(data), n_trials=1) == 0
    out = capsys.readouterr().out
    assert "OOF macro_auc" in out and "CNN ham_pipeline" in out and "untouched hold-out fold" in out
