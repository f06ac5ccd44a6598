"""Stage 2 on the tiny synthetic competition, with a fast tiny stage-1 run as its CNN input."""

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import check_get_params_invariance, check_no_attributes_set_in_init

from foldstack import metrics
from foldstack.config import available
from foldstack.data.metadata import read_metadata
from foldstack.errors import ConfigError, DataError
from foldstack.folds import make_folds
from foldstack.runs import Runs, StackRun
from foldstack.stage1.config import load_oof_config
from foldstack.stage1.run import run_oof
from foldstack.stage2 import blend as calibrate
from foldstack.stage2.config import load_stack_config
from foldstack.stage2.features import build_features, category_levels, check_leaks
from foldstack.stage2.models import GBDTClassifier, load_boosters, predict_boosters
from foldstack.stage2.run import run_stack
from foldstack.stage2.summary import stack_flags
from tests.conftest import TINY

FAST = (  # CatBoost runs in the smoke test of every config and its own tests; here it would add time
    "only_models=[lgbm,xgb] tuning.n_trials=2 tuning.pruning=false "
    "features.engineered=[lesion_size_ratio,hue_contrast,border_complexity,lesion_color_difference]"
)


def stack_config(runs, extra="", name="lgb_xgb_cb"):
    return load_stack_config("isic2024", name, f"{TINY['isic2024']} runs_dir={runs} {FAST} {extra}")


@pytest.fixture(scope="module")
def with_cnn(tiny_isic2024, tmp_path_factory):
    """A runs/ folder holding folds and one finished tiny stage-1 run."""
    _, data = tiny_isic2024
    runs = tmp_path_factory.mktemp("stack") / "runs"
    cfg = load_oof_config(
        "isic2024",
        "tiny",
        f"{TINY['isic2024']} runs_dir={runs} data.img_size=32 train.epochs=1 predict.tta=1",
    )
    make_folds(cfg, read_metadata(cfg, data, "train"), data)
    run_oof(cfg, data, progress=False)
    return runs, data


@pytest.fixture(scope="module")
def stacked(with_cnn, tmp_path_factory):
    runs, data = with_cnn
    cfg = stack_config(runs)
    return cfg, data, run_stack(cfg, data), Runs.of(cfg).dir / "stack" / cfg.run


@pytest.mark.slow
def test_stack_oof_uses_exactly_the_stage1_folds(stacked):
    cfg, _data, _, out = stacked
    oof = pd.read_parquet(out / "oof.parquet")
    folds = pd.read_csv(Runs.of(cfg).dir / "folds.csv", dtype={"id": str})
    assert oof["id"].tolist() == folds["id"].tolist()
    assert (oof["fold"].to_numpy() == folds["fold"].to_numpy()).all()
    assert oof["pred"].between(0, 1).all() and oof["id"].is_unique


def test_stack_outputs_and_metrics(stacked):
    cfg, _data, r, out = stacked
    for f in (
        "test.parquet",
        "metrics.json",
        "feature_importance.csv",
        "feature_importance.png",
        "optuna_history.png",
        "config.yaml",
        "study.journal",
    ):
        assert (out / f).exists(), f
    test = pd.read_parquet(out / "test.parquet")
    cols = [f"pred_fold{f}" for f in range(cfg.folds.k)]
    np.testing.assert_allclose(test["pred"], test[cols].mean(axis=1), atol=1e-12)
    assert set(r["models"]) == {"lgbm", "xgb"} and "tiny" in r["cnn"]  # only_models=[lgbm,xgb]
    assert {"oof_pauc", "oof_auc"} <= set(r["tabular_only"]) and "holdout_pauc" in r["stack"]
    assert "never took part in tuning" in r["how_scored"]
    imp = pd.read_csv(out / "feature_importance.csv")
    assert "cnn_tiny" in set(imp["feature"])
    assert not set(imp["feature"]) & set(cfg.table.train_only)


def test_models_are_saved_natively_and_reload(stacked):
    _cfg, _data, _, out = stacked
    lgb_files = list((out / "models/lgbm/fold0").glob("*.lgb.txt"))
    xgb_files = list((out / "models/xgb/fold0").glob("*.xgb.json"))
    assert lgb_files and xgb_files
    assert not list(out.rglob("*.pkl")) and not list(out.rglob("*.pickle"))
    assert len(load_boosters(out / "models/lgbm/fold0")) == 2
    json.loads(xgb_files[0].read_text())  # real JSON


@pytest.mark.slow
def test_a_higher_n_trials_runs_only_the_missing_trials(stacked, capsys):
    """n_trials is the study's total of COMPLETE trials (2 here, no pruning): asking for 3 adds one.
    Each step says so in one line: the study's count, the trial, every fold refit."""
    cfg, data, r, _ = stacked
    assert r["models"]["lgbm"]["trials_in_study"] == cfg.tuning.n_trials == 2
    capsys.readouterr()
    again = run_stack(cfg, data, n_trials=3)
    assert again["models"]["lgbm"]["trials_in_study"] == 3
    lines = capsys.readouterr().out.splitlines()
    k = cfg.folds.k
    for name, rec in again["models"].items():
        mine = [line for line in lines if line.startswith(f"tune {name}: ")]
        assert mine[0].startswith(f"tune {name}: study {rec['study']} holds 2/3 COMPLETE trials; running")
        assert len(mine) == 2 and re.fullmatch(
            rf"tune {name}: trial 2 inner-CV pauc80 \d\.\d{{4}} \(best {rec['tuned_cv']:.4f}, trial \d\); "
            r"3/3 complete; \d+\.\d s",
            mine[1],
        ), mine
        refits = [line for line in lines if line.startswith(f"refit {name} (best params): fold ")]
        assert [line.split(" fold ")[1][:7] for line in refits] == [f"{f} ({f + 1}/{k})" for f in range(k)]
    tabular = [line for line in lines if line.startswith("tabular-only lgbm (no CNN input): fold ")]
    assert len(tabular) == k and all(re.search(r"; \d+\.\d s$", line) for line in tabular)


@pytest.mark.slow
def test_two_workers_share_one_study(with_cnn, tmp_path):
    runs, data = with_cnn
    cfg = stack_config(runs, "run=two_workers")
    r = run_stack(cfg, data, workers=2, n_trials=4)
    # each worker stops once 4 trials are COMPLETE, so the other may finish one more
    assert r["models"]["lgbm"]["trials_in_study"] in (4, 5)


def test_cnn_input_made_on_other_folds_is_refused(with_cnn, tmp_path):
    runs, data = with_cnn
    other = tmp_path / "runs"
    shutil.copytree(runs, other)
    cfg = stack_config(other)
    make_folds(cfg, read_metadata(cfg, data, "train"), data)  # same folds: fine
    m = other / "isic2024/oof/tiny/metrics.json"
    meta = json.loads(m.read_text())
    meta["folds_sha256"] = "0" * 64
    m.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="made on folds"):
        run_stack(cfg, data)


def test_planted_leak_is_refused():
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.1).astype(int)
    X = pd.DataFrame({"ok": rng.normal(size=500) + y, "leak": y * 3.0 + 1})
    with pytest.raises(DataError, match="'leak': its value alone separates the target"):
        check_leaks(X, y, ())
    with pytest.raises(DataError, match="train-only"):
        check_leaks(X.rename(columns={"ok": "iddx_1"}).drop(columns="leak"), y, ("iddx_1",))
    check_leaks(X[["ok"]], y, ())


def test_features_do_not_depend_on_row_order(tiny_isic2024):
    _cfg0, data = tiny_isic2024
    cfg = stack_config("/tmp/unused")
    train = read_metadata(cfg, data, "train")
    levels = category_levels([train], [c for c in train.columns if cfg.table.columns.get(c) == "cat"])
    cnn = {"m": np.linspace(0, 1, len(train))}
    X = build_features(cfg, cfg.features, train, cnn, levels)
    first_patient = train["patient_id"].iloc[0]
    moved = np.r_[
        np.flatnonzero(train["patient_id"] != first_patient),
        np.flatnonzero(train["patient_id"] == first_patient),
    ]
    X2 = build_features(
        cfg, cfg.features, train.iloc[moved].reset_index(drop=True), {"m": cnn["m"][moved]}, levels
    )
    pd.testing.assert_frame_equal(X.iloc[moved].reset_index(drop=True), X2)
    assert {"patient_lesion_count", "cnn_m_patient_rank", "cnn_m_patient_ratio", "tbp_lv_areaMM2_pz"} <= set(
        X
    )
    assert not set(X.columns) & set(cfg.table.train_only)


@pytest.mark.slow
def test_tabular_only_stack_runs_without_cnn(with_cnn):
    runs, data = with_cnn
    cfg = stack_config(runs, "features.cnn=false run=tab_only")
    r = run_stack(cfg, data)
    assert r["cnn"] == {} and 0 <= r["stack"]["oof_pauc"] <= 0.2


def test_estimator_follows_the_sklearn_contract():
    est = GBDTClassifier(kind="lightgbm", params={"num_leaves": 7}, n_estimators=5)
    check_no_attributes_set_in_init("GBDTClassifier", est)
    check_get_params_invariance("GBDTClassifier", est)
    c = clone(est).set_params(n_estimators=3)
    assert c.n_estimators == 3 and est.n_estimators == 5
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    y = (X["a"] + rng.normal(size=200) > 1).astype(int).to_numpy()
    for kind in ("lightgbm", "xgboost", "catboost"):
        fitted = GBDTClassifier(kind=kind, n_estimators=20, neg_ratio=2, seeds=(0, 1)).fit(X, y)
        p = fitted.predict_proba(X)
        assert p.shape == (200, 2) and np.allclose(p.sum(1), 1) and len(fitted.boosters_) == 2


@pytest.mark.parametrize("name", available("stack"))
@pytest.mark.slow
def test_every_stack_config_smoke_runs(name, with_cnn):
    runs, data = with_cnn
    cfg = stack_config(runs, f"run=smoke_{name} tuning.n_trials=1 only_models=[]", name=name)  # all models
    assert 0 <= run_stack(cfg, data)["stack"]["oof_pauc"] <= 0.2


def test_train_and_test_matrices_must_have_the_same_columns():
    from foldstack.stage2.features import check_same_columns

    a = pd.DataFrame({"x": [1.0], "y": [2.0]})
    check_same_columns(a, a.copy())
    with pytest.raises(DataError, match=r"test has extra \['z'\], lacks \[\]"):
        check_same_columns(a, a.assign(z=1.0))
    with pytest.raises(DataError, match=r"lacks \['y'\]"):
        check_same_columns(a, a[["x"]])


def test_knn_baseline_saves_without_pickle_and_reloads(tmp_path):
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300), "c": pd.Categorical(["x"] * 300)})
    y = (X["a"] > 1).astype(int).to_numpy()
    est = GBDTClassifier(kind="knn", params={"n_neighbors": 7}).fit(X, y)
    p = est.predict_proba(X)[:, 1]
    assert set(np.round(p * 7).astype(int)) <= set(range(8))  # shares of 7 neighbours
    est.save(tmp_path)
    assert list(tmp_path.glob("*.knn.npz")) and not list(tmp_path.glob("*.pkl"))
    (b,) = load_boosters(tmp_path)
    np.testing.assert_allclose(b.predict(X), p)
    assert (est.feature_importance() == 0).all()


def test_new_stage1_predictions_start_a_fresh_study(stacked):
    from dataclasses import replace

    from foldstack.stage2.inputs import build_matrices, study_name

    cfg, data, _, _ = stacked
    m, _, fmeta = build_matrices(cfg, data, None)
    spec = cfg.models[0]
    assert study_name(cfg, spec, m, fmeta) == study_name(cfg, spec, replace(m, X=m.X.copy()), fmeta)
    cnn = next(c for c in m.X.columns if c.startswith("cnn_"))
    retrained = m.X.assign(**{cnn: m.X[cnn] * 0.5})  # same columns, other stage-1 predictions
    assert study_name(cfg, spec, m, fmeta) != study_name(cfg, spec, replace(m, X=retrained), fmeta)


def test_sparse_and_missingness_leaks_are_refused_but_a_strong_cnn_passes():
    rng = np.random.default_rng(0)
    n = 1000
    y = (rng.random(n) < 0.1).astype(int)
    ok = rng.normal(size=n) + y
    # the target plus noise on 40% of the rows, empty elsewhere: the old rule (>= 50% filled) skipped it
    sparse = np.where(rng.random(n) < 0.4, y + rng.normal(0, 0.01, n), np.nan)
    with pytest.raises(DataError, match="'sparse': its value alone separates the target"):
        check_leaks(pd.DataFrame({"ok": ok, "sparse": sparse}), y, ())
    # filled only for negatives: its missingness is the label
    filled_if_benign = np.where(y == 1, np.nan, rng.normal(size=n))
    with pytest.raises(DataError, match="'lab': its missingness"):
        check_leaks(pd.DataFrame({"ok": ok, "lab": filled_if_benign}), y, ())
    cat = pd.Categorical(np.where(y == 1, None, "x"), categories=["x"])  # categorical columns too
    with pytest.raises(DataError, match="'site': its missingness"):
        check_leaks(pd.DataFrame({"ok": ok, "site": cat}), y, ())
    # a strong CNN (AUC 0.999+) and its patient features are no leak: they have their own fold checks
    cnn = np.where(y == 1, rng.normal(2.5, 1, n), rng.normal(-2.5, 1, n))
    assert metrics.auc(y, cnn) >= 0.999
    check_leaks(pd.DataFrame({"ok": ok, "cnn_strong": cnn, "cnn_strong_patient_rank": cnn}), y, ())
    # too few filled rows to judge, or a class absent there: not scored
    few = np.full(n, np.nan)
    few[:15] = y[:15]
    check_leaks(pd.DataFrame({"ok": ok, "few": few}), y, ())


def test_cnn_input_with_other_fold_column_is_refused(with_cnn, tmp_path):
    runs, data = with_cnn
    other = tmp_path / "runs"
    shutil.copytree(runs, other)
    path = other / "isic2024/oof/tiny/oof.parquet"
    oof = pd.read_parquet(path)
    oof.loc[0, "fold"] = (oof.loc[0, "fold"] + 1) % 3
    oof.to_parquet(path, index=False)
    # the run's manifest catches any edit first, naming the file
    with pytest.raises(DataError, match=r"oof/tiny/oof.parquet does not match .*metrics.json"):
        run_stack(stack_config(other), data)
    # a run without a manifest (made by hand, or by an older foldstack) meets the fold check itself
    metrics = other / "isic2024/oof/tiny/metrics.json"
    m = json.loads(metrics.read_text())
    m.pop("set_members")
    metrics.write_text(json.dumps(m))
    with pytest.raises(DataError, match=r"oof/tiny/oof.parquet: 1 row\(s\) have another fold than in folds"):
        run_stack(stack_config(other), data)


@pytest.mark.slow
def test_optimistic_stage1_is_refused_unless_allowed_then_flagged(with_cnn, tmp_path):
    runs, data = with_cnn
    other = tmp_path / "runs"
    shutil.copytree(runs, other)
    m = other / "isic2024/oof/tiny/metrics.json"
    m.write_text(json.dumps(json.loads(m.read_text()) | {"score_is_optimistic": True}))
    with pytest.raises(
        DataError, match=r"\['tiny'\] have score_is_optimistic.*tiny/metrics.json.*allow_optimistic"
    ):
        run_stack(stack_config(other), data)
    r = run_stack(stack_config(other, "features.allow_optimistic=true tuning.n_trials=1"), data)
    assert r["score_is_optimistic"] is True and r["optimistic_inputs"] == ["tiny"]
    saved = json.loads((other / "isic2024/stack/lgb_xgb_cb/metrics.json").read_text())
    assert saved["score_is_optimistic"] is True and saved["optimistic_inputs"] == ["tiny"]


def test_rank_blend_pred_is_a_calibrated_probability_with_the_rank_order(stacked):
    cfg, _data, r, out = stacked
    oof = pd.read_parquet(out / "oof.parquet")
    y, p, fold = oof["target"].to_numpy(), oof["pred"].to_numpy(), oof["fold"].to_numpy()
    assert cfg.blend.method == "rank" and ((p >= 0) & (p <= 1)).all()
    assert y.mean() / 3 <= p.mean() <= 3 * y.mean()  # a probability, not a mean rank (~0.5)
    cal = calibrate.load_calibration(out)
    preds = {n: oof[f"pred_{n}"].to_numpy() for n in r["models"]}
    for f in range(cfg.folds.k):
        rows = fold == f
        rank = cal.rank_score(f, preds)[rows]
        np.testing.assert_array_equal(cal.probability(f, preds)[rows], p[rows])  # saved map == training
        for score in (metrics.auc, metrics.pauc):
            assert abs(score(y[rows], p[rows]) - score(y[rows], rank)) <= 1e-12
    held = r["rank_blend_before_calibration"]
    assert abs(held["holdout_pauc"] - r["stack"]["holdout_pauc"]) <= 1e-12
    assert "isotonic regression" in r["how_scored"]
    test = pd.read_parquet(out / "test.parquet")
    assert test["pred"].between(0, 1).all()


def test_rank_calibration_keeps_the_order_and_matches_the_positive_rate():
    rng = np.random.default_rng(0)
    n, k = 4000, 5
    y = (rng.random(n) < 0.05).astype(int)
    fold = rng.integers(0, k, n)
    a = 1 / (1 + np.exp(-(rng.normal(size=n) + 2 * y - 3)))
    b = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.5 * y - 3)))
    cal, prob, rank = calibrate.fit_rank_calibration({"a": a, "b": b}, y, fold, {"a": 2.0})
    assert prob.min() >= 0 and prob.max() <= 1 and abs(prob.mean() - y.mean()) < 0.3 * y.mean()
    for f in range(k):
        rows = fold == f
        assert abs(metrics.auc(y[rows], prob[rows]) - metrics.auc(y[rows], rank[rows])) <= 1e-12
        assert abs(metrics.pauc(y[rows], prob[rows]) - metrics.pauc(y[rows], rank[rows])) <= 1e-12
        # ranks are against a fixed reference: a test set of any size ranks a score as OOF did
        one = {"a": a[rows][:1], "b": b[rows][:1]}
        assert cal.probability(f, one)[0] == prob[rows][0]
    # pooled, each fold's own map moves AUC only a little
    assert abs(metrics.auc(y, prob) - metrics.auc(y, rank)) < 0.01


def test_near_max_scores_are_flagged():
    cfg = load_stack_config("isic2024", "lgb_xgb_cb", TINY["isic2024"])
    fine = {
        "stack": {"oof_pauc": 0.15, "oof_auc": 0.9, "holdout_pauc": 0.16},
        "models": {"m": {"tuned_cv": 0.17}},
    }
    assert "suspicious_score" not in stack_flags(cfg, [], fine)
    hold = {"stack": fine["stack"] | {"holdout_pauc": 0.199}, "models": fine["models"]}
    assert "stack holdout_pauc 0.1990 >= 0.198" in stack_flags(cfg, [], hold)["suspicious_score"]
    inner = {"stack": fine["stack"], "models": {"m": {"tuned_cv": 0.1985, "oof_auc": 0.9995}}}
    reason = stack_flags(cfg, [], inner)["suspicious_score"]
    assert "model m tuned_cv (pauc80) 0.1985" in reason and "model m oof_auc 0.9995 >= 0.999" in reason


def test_stack_pipeline_prints_warnings(monkeypatch, capsys, with_cnn):
    from foldstack.commands import stage2 as commands

    runs, data = with_cnn
    rec = {"oof_pauc": 0.1995, "oof_auc": 0.9999, "holdout_pauc": 0.2, "holdout_auc": 1.0, "holdout_fold": 2}
    result = {
        "stack": rec,
        "models": {"lgbm": rec | {"tuned_cv": 0.2, "trials_in_study": 1}},
        "tabular_only": rec,
        "cnn": {},
        "score_is_optimistic": True,
        "optimistic_inputs": ["tiny"],
        "blend": {"weights": {"lgbm": 1.0}, "weights_from": "tuned"}
        | {"equal_weights_for_comparison": {"holdout_pauc": 0.1234}},
        "stage1_shift": {"warning": "the stage-1 features differ between OOF and test: cnn_tiny (KS 0.300"},
    }
    result["suspicious_score"] = "score at or near the metric's maximum: stack holdout_pauc 0.2000 >= 0.198"
    monkeypatch.setattr(commands, "run_stack", lambda *a, **k: result)
    commands.stack("isic2024", "lgb_xgb_cb", f"{TINY['isic2024']} runs_dir={runs}", str(data))
    out = capsys.readouterr().out
    assert "WARNING: suspicious score: score at or near" in out
    assert "WARNING: optimistic score: stage-1 input(s) ['tiny']" in out
    assert "blend weights (tuned): lgbm 1.00; equal weights would score hold-out pauc 0.1234" in out
    assert "WARNING: stage-1 feature shift: the stage-1 features differ between OOF and test: cnn_tiny" in out


def test_a_refit_with_fewer_seeds_leaves_no_stale_booster_and_a_stale_one_is_refused(tmp_path):
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400)})
    y = (X["a"] + rng.normal(size=400) > 1.5).astype(int).to_numpy()
    folder = tmp_path / "fold0"
    kw = {"kind": "lightgbm", "params": {"num_leaves": 4}, "n_estimators": 5}
    GBDTClassifier(**kw, seeds=(0, 1, 2)).fit(X, y).save(folder)
    assert len(load_boosters(folder)) == 3
    GBDTClassifier(**kw, seeds=(0,)).fit(X, y).save(folder)  # the same folder, one seed
    assert len(load_boosters(folder)) == 1
    assert sorted(p.name for p in folder.glob("seed*")) == ["seed0.lgb.txt"]
    (folder / "seed1.lgb.txt").write_text((folder / "seed0.lgb.txt").read_text())  # a stale booster
    with pytest.raises(DataError, match=r"fold0 holds boosters .*seed1.lgb.txt.* lists \['seed0.lgb.txt'\]"):
        load_boosters(folder)
    (folder / "seed1.lgb.txt").unlink()
    (folder / "estimator.json").unlink()
    with pytest.raises(DataError, match=r"estimator.json is missing"):
        load_boosters(folder)


@pytest.mark.slow
def test_a_killed_stack_leaves_the_previous_run_whole(with_cnn, tmp_path, monkeypatch):
    """A crash in the middle of fitting the final fold models: the earlier run's files stay, all of
    them, and match their manifest; nothing staged is left once the next run starts."""
    from foldstack import artifacts

    runs, data = with_cnn
    other = tmp_path / "runs"
    shutil.copytree(runs, other)
    cfg = stack_config(other)
    run_stack(cfg, data)
    out = Runs.of(cfg).dir / "stack" / cfg.run

    def files():
        kept = [p for p in out.rglob("*") if p.is_file() and "journal" not in p.name]
        return {p.relative_to(out): p.read_bytes() for p in kept}

    before = files()
    calls = {"n": 0}

    def crash(name):
        if name == "stack.fit_fold":
            calls["n"] += 1
            if calls["n"] == 4:
                raise RuntimeError("simulated crash")

    monkeypatch.setattr(artifacts, "fault_point", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_stack(stack_config(other, "tuning.seed=7"), data)
    assert files() == before
    artifacts.read_manifest(out / "metrics.json")


def test_catboost_handles_categoricals_natively_saves_cbm_and_refuses_another_feature_set(tmp_path):
    rng = np.random.default_rng(0)
    site = pd.Categorical(rng.choice(["head", "torso", "leg", None], size=400))
    X = pd.DataFrame({"a": rng.normal(size=400), "site": site})
    y = ((X["a"] > 0.5) | (X["site"] == "leg")).astype(int).to_numpy()
    est = GBDTClassifier(kind="catboost", params={"depth": 3}, n_estimators=50, neg_ratio=2, seeds=(0, 1))
    est.fit(X, y)
    assert est.boosters_[0].get_cat_feature_indices() == [1]  # native categorical, not one-hot by us
    p = est.scores(X)
    assert p[(X["site"] == "leg").to_numpy()].mean() > p[(X["site"] == "head").to_numpy()].mean() + 0.2
    assert est.feature_importance()["site"] > 0
    est.save(tmp_path / "cb")
    assert sorted(f.name for f in (tmp_path / "cb").iterdir()) == ["estimator.json", "seed0.cbm", "seed1.cbm"]
    boosters = load_boosters(tmp_path / "cb")
    again = predict_boosters("catboost", boosters, X)
    np.testing.assert_allclose(again, p, rtol=0, atol=1e-12)
    with pytest.raises(DataError, match="another feature set"):
        predict_boosters("catboost", boosters[:1], X.rename(columns={"a": "b"}))
    (tmp_path / "cb/seed1.cbm").write_bytes(b"not a model")
    with pytest.raises(DataError, match=r"seed1\.cbm is not a CatBoost model"):
        load_boosters(tmp_path / "cb")


def test_blend_weights_must_cover_every_model_and_sum_to_one(tmp_path):
    with pytest.raises(ConfigError, match=r"must give every model \['lgbm', 'xgb', 'cb'\].*sum to 0\.54"):
        stack_config(tmp_path, "only_models=[] blend.weights.lgbm=0.54", name="gbdt3")
    with pytest.raises(ConfigError, match=r"must give every model \['lgbm', 'xgb'\].*sum to 1\b"):
        stack_config(tmp_path, "blend.weights.xgb=-0.5 blend.weights.lgbm=1.5")
    with pytest.raises(ConfigError, match=r"only_models names \['lgb'\], which are not models of this"):
        stack_config(tmp_path, "only_models=[lgb]")
    weights = "blend.weights.lgbm=0.5 blend.weights.xgb=0.25 blend.weights.cb=0.25"
    cfg = stack_config(tmp_path, f"only_models=[] {weights}", name="gbdt3")
    assert cfg.blend.weights == {"lgbm": 0.5, "xgb": 0.25, "cb": 0.25}


def test_simplex_grid_covers_every_weight_vector_once():
    from math import comb

    from foldstack.stage2.blend import grid_size, simplex_grid

    g = simplex_grid(3, 0.25)
    assert g.shape == (comb(6, 2), 3) == (grid_size(3, 0.25), 3)
    np.testing.assert_allclose(g.sum(axis=1), 1.0)
    assert (g >= 0).all() and len({tuple(r) for r in g}) == len(g)
    assert [0.25, 0.5, 0.25] in g.tolist() and [1.0, 0.0, 0.0] in g.tolist()


def test_tuned_weights_favour_the_better_model_and_tie_to_equal():
    from foldstack.stage2.blend import tune_weights

    rng = np.random.default_rng(0)
    y = (rng.random(3000) < 0.1).astype(int)
    good, noise = y + rng.normal(0, 0.6, 3000), rng.normal(size=3000)
    w, info = tune_weights({"good": good, "noise": noise}, y, "rank", "auc", 0.1)
    assert w["good"] > 0.8 and abs(sum(w.values()) - 1) < 1e-12
    assert info["inner_auc_tuned"] >= info["inner_auc_equal"] and info["grid_points"] == 11
    w, _ = tune_weights({"a": good, "b": good.copy()}, y, "prob", "auc", 0.1)  # every point ties
    assert w == {"a": 0.5, "b": 0.5}
    with pytest.raises(ConfigError, match=r"blend\.tune_step=0\.01 with 6 models .* coarser step"):
        tune_weights({str(i): good for i in range(6)}, y, "rank", "auc", 0.01)


@pytest.mark.slow
def test_tuned_blend_weights_see_only_the_tuning_folds_and_predict_uses_them(with_cnn, monkeypatch):
    """blend.weights=tune: the weights are fitted on the inner OOF of folds != hold-out (no NaN, no
    hold-out row), reported in metrics.json, and `make predict` (prob blend) blends with them."""
    from foldstack.stage2 import blend as stack_run
    from foldstack.submit.predict import stack_test_predictions

    runs, data = with_cnn
    seen = {}
    real = stack_run.tune_weights

    def spy(inner, y, method, metric, step):
        seen.update(rows=len(y), nan=any(np.isnan(p).any() for p in inner.values()), method=method)
        return real(inner, y, method, metric, step)

    monkeypatch.setattr(stack_run, "tune_weights", spy)
    cfg = stack_config(runs, "run=tuned_prob blend.weights=tune blend.method=prob blend.tune_step=0.25")
    r = run_stack(cfg, data)
    fold = pd.read_csv(Runs.of(cfg).dir / "folds.csv")["fold"].to_numpy()
    holdout = r["stack"]["holdout_fold"]
    assert seen == {"rows": int((fold != holdout).sum()), "nan": False, "method": "prob"}
    b = r["blend"]
    assert b["weights_from"] == "tuned" and set(b["weights"]) == {"lgbm", "xgb"}
    assert abs(sum(b["weights"].values()) - 1) < 1e-12 and all(w % 0.25 < 1e-9 for w in b["weights"].values())
    assert {"oof_pauc", "holdout_pauc"} <= set(b["equal_weights_for_comparison"])
    assert "fitted on the inner-CV OOF" in r["how_scored"]
    out = Runs.of(cfg).dir / "stack" / cfg.run
    oof = pd.read_parquet(out / "oof.parquet")
    w = b["weights"]
    np.testing.assert_allclose(oof["pred"], sum(w[n] * oof[f"pred_{n}"] for n in w))
    again = stack_test_predictions(StackRun(out), data, progress=False)
    np.testing.assert_allclose(again["pred"], pd.read_parquet(out / "test.parquet")["pred"], atol=1e-12)


def test_blend_weights_tune_needs_a_step_that_divides_one(tmp_path):
    assert stack_config(tmp_path, "blend.weights=tune").blend.weights == "tune"
    with pytest.raises(ConfigError, match=r"blend\.tune_step=0\.3 must divide 1"):
        stack_config(tmp_path, "blend.weights=tune blend.tune_step=0.3")


def test_stage1_shift_is_measured_and_warned():
    from foldstack.stage2.skew import stage1_shift

    cfg = load_stack_config("isic2024", "lgb_xgb_cb")
    rng = np.random.default_rng(0)
    oof = pd.DataFrame({"cnn_a": rng.beta(0.5, 5, 4000), "age": rng.normal(size=4000)})
    same = pd.DataFrame({"cnn_a": rng.beta(0.5, 5, 4000), "age": rng.normal(size=4000)})
    shrunk = same.assign(cnn_a=0.5 * same["cnn_a"] + 0.5 * same["cnn_a"].mean())  # a mean of models
    r = stage1_shift(cfg, oof, same)
    assert set(r["columns"]) == {"cnn_a"} and r["columns"]["cnn_a"]["ks"] < 0.05 and "warning" not in r
    r = stage1_shift(cfg, oof, shrunk)
    assert r["columns"]["cnn_a"]["large"] and 0.45 < r["columns"]["cnn_a"]["spread_ratio"] < 0.55
    assert "cnn_a (KS" in r["warning"]
    assert stage1_shift(cfg, oof, same.iloc[:3])["checked"] is False
    assert stage1_shift(cfg, oof[["age"]], same[["age"]]) == {}


def test_stack_reports_the_stage1_shift(stacked):
    _cfg, _data, r, out = stacked
    shift = r["stage1_shift"]
    assert shift["checked"] and {"cnn_tiny", "cnn_tiny_patient_rank"} <= set(shift["columns"])
    assert (out / "report" / "stage1_shift.png").exists()
    assert r["blend"]["weights_from"] == "equal (blend.weights not set)"
    assert r["blend"]["weights"] == {"lgbm": 0.5, "xgb": 0.5}


def test_column_families_split_the_features_by_name():
    from foldstack.stage2.members import column_families

    cols = ["age_approx", "sex", "hue_contrast", "age_approx_pz", "hue_contrast_pz", "patient_lesion_count"]
    cols += ["cnn_a", "cnn_a_patient_rank", "cnn_a_b", "cnn_a_b_patient_ratio"]
    fams = column_families(cols, ["a", "a_b"])
    assert fams == {
        "raw": ["age_approx", "sex"],
        "engineered": ["hue_contrast"],
        "patient_norm": ["age_approx_pz", "hue_contrast_pz"],
        "lesion_count": ["patient_lesion_count"],
        "stage1:a": ["cnn_a", "cnn_a_patient_rank"],
        "stage1:a_b": ["cnn_a_b", "cnn_a_b_patient_ratio"],
    }
    assert "lesion_count" not in column_families(cols[:5], [])


@pytest.mark.slow
def test_ablation_refits_with_the_tuned_parameters_and_writes_a_set(stacked, capsys):
    """make ablate on the tiny stack: the full row is the stack's own score, a refit with the tuned
    parameters and no column dropped reproduces each model's saved OOF, the table/markdown/chart are
    one set; an unknown family is refused naming the valid ones."""
    from foldstack import artifacts
    from foldstack.commands import stage2 as commands
    from foldstack.stage2.ablate import run_ablation, stack_config
    from foldstack.stage2.inputs import build_matrices
    from foldstack.stage2.models import fit_folds

    cfg0, data, _, out = stacked
    cfg = stack_config(StackRun(out), cfg0.runs_dir)
    r = artifacts.read_manifest(out / "metrics.json")  # other tests rerun this stack: read what is there
    m, _, _ = build_matrices(cfg, data, list(r["cnn"]))
    saved = pd.read_parquet(out / "oof.parquet")
    for spec in cfg.models:
        again, test, _ = fit_folds(spec, r["models"][spec.name]["best_params"], m.X, m.y, m.fold, None, 0)
        assert test is None
        np.testing.assert_allclose(again, saved[f"pred_{spec.name}"], atol=1e-9)
    table = run_ablation(cfg, StackRun(out), data, ["raw", "stage1:tiny", "model:xgb"], n_boot=20)
    variants = ["full stack", "without raw", "without stage1:tiny", "without model:xgb"]
    assert table["variant"].tolist() == variants
    full = table.iloc[0]
    assert full["oof"] == pytest.approx(r["stack"]["oof_pauc"]) and full["holdout"] == pytest.approx(
        r["stack"]["holdout_pauc"]
    )
    t = table.set_index("variant")
    assert t.loc["without stage1:tiny", "n_features"] == m.X.shape[1] - 3
    for where in ("oof", "holdout"):
        assert (t[f"{where}_low"] <= t[where] + 1e-12).all()
        assert (t[where] <= t[f"{where}_high"] + 1e-12).all()
        change = t[where].iloc[1:] - full[where]
        np.testing.assert_allclose(t[f"{where}_change"].iloc[1:], change, atol=1e-12)
    manifest = artifacts.read_manifest(out / "ablation.json")
    assert set(manifest["set_members"]) == {"ablation.csv", "ablation.md", "ablation.png"}
    assert "| without model:xgb | model xgb |" in (out / "ablation.md").read_text()
    with pytest.raises(ConfigError, match=r"FAMILIES: no family \['colour'\] .* raw, engineered"):
        run_ablation(cfg, StackRun(out), data, ["colour"])
    sets = f"{TINY['isic2024']} runs_dir={cfg0.runs_dir}"
    commands.ablate("isic2024", cfg0.run, sets, str(data), families="lesion_count", n_boot=10)
    assert "| without lesion_count | 1 column(s) |" in capsys.readouterr().out
    artifacts.read_manifest(out / "metrics.json")  # the stack's own set is untouched by the ablation set
    artifacts.read_manifest(out / "ablation.json")


@pytest.mark.slow
def test_repeated_ablation_refits_full_and_variants_on_each_split_and_tests_the_change(stacked, capsys):
    """make ablate REPEATS=n: every split scores the full stack and each variant; the change is the mean
    paired difference with its t-interval; a model family needs no refit; the set holds the per-split
    table; fewer than 2 repeats is refused before any fitting."""
    from foldstack import artifacts
    from foldstack.commands import stage2 as commands
    from foldstack.stage2.ablate import run_repeated_ablation, stack_config

    cfg0, data, _, out = stacked
    cfg = stack_config(StackRun(out), cfg0.runs_dir)
    with pytest.raises(ConfigError, match="REPEATS=1: a repeated ablation needs at least 2"):
        run_repeated_ablation(cfg, StackRun(out), data, ["raw"], 1)
    table, per_split = run_repeated_ablation(cfg, StackRun(out), data, ["lesion_count", "model:xgb"], 3)
    assert table["variant"].tolist() == ["full stack", "without lesion_count", "without model:xgb"]
    assert sorted(per_split["fold_seed"].unique()) == [
        cfg.folds.seed + 1,
        cfg.folds.seed + 2,
        cfg.folds.seed + 3,
    ]
    wide = per_split.pivot(index="repeat", columns="variant", values="pauc")
    assert wide.shape == (3, 3) and wide.notna().all().all()
    t = table.set_index("variant")
    for v in ("without lesion_count", "without model:xgb"):
        d = wide[v] - wide["full stack"]
        assert t.loc[v, "change"] == pytest.approx(d.mean(), abs=1e-12)
        assert t.loc[v, "change_low"] <= t.loc[v, "change"] <= t.loc[v, "change_high"]
        assert 0 <= t.loc[v, "p_ttest"] <= 1 and 0 <= t.loc[v, "p_wilcoxon"] <= 1
    assert t.loc["without lesion_count", "n_features"] == t.loc["full stack", "n_features"] - 1
    assert wide["full stack"].nunique() > 1  # the repeats are different splits
    manifest = artifacts.read_manifest(out / "ablation.json")
    assert manifest["mode"] == "repeated" and manifest["repeats"] == 3
    assert set(manifest["set_members"]) == {
        "ablation.csv",
        "ablation_repeats.csv",
        "ablation.md",
        "ablation.png",
    }
    md = (out / "ablation.md").read_text()
    assert "on 3 repeated splits" in md and "| without model:xgb | model xgb |" in md
    sets = f"{TINY['isic2024']} runs_dir={cfg0.runs_dir}"
    commands.ablate("isic2024", cfg0.run, sets, str(data), families="lesion_count", repeats=2)
    assert "ablation_repeats.csv" in capsys.readouterr().out
    artifacts.read_manifest(out / "metrics.json")  # the stack's own set is untouched
