"""Issue 23's stage-2 recipe: outlier and age context, CNN feature choice (logit, z, cross-run statistics,
training-time noise), positive over- / negative under-sampling with disjoint bags, ensemble members;
each refused with a clear error on bad input, and end to end through `make stack` and predict."""

import json

import numpy as np
import pandas as pd
import pytest

from foldstack.data.metadata import read_metadata
from foldstack.errors import ConfigError, DataError
from foldstack.folds import make_folds
from foldstack.runs import Runs, StackRun
from foldstack.stage1.config import load_oof_config
from foldstack.stage1.run import run_oof
from foldstack.stage2.cnn_features import CROSS_PREFIX, cnn_frames, logit, stats_for
from foldstack.stage2.config import FeatureCfg, ModelSpec, load_stack_config
from foldstack.stage2.context import OUTLIER, outlier_score
from foldstack.stage2.engines import ENGINES
from foldstack.stage2.groups import Grouping
from foldstack.stage2.inputs import build_matrices
from foldstack.stage2.members import column_families, member_columns
from foldstack.stage2.models import GBDTClassifier, load_boosters
from foldstack.stage2.sampling import bag_rows, plan
from tests.conftest import TINY

FAST = "features.engineered=[lesion_size_ratio,hue_contrast] tuning.n_trials=1 tuning.pruning=false"


def stack_cfg(runs, extra=""):
    return load_stack_config("isic2024", "lgb_xgb_cb", f"{TINY['isic2024']} runs_dir={runs} {FAST} {extra}")


def groups_of(labels) -> Grouping:
    return Grouping.of(pd.DataFrame({"g": list(labels)}))


# ---- context features ----------------------------------------------------------------------------


def test_outlier_score_is_the_rms_patient_z_and_a_lone_lesion_scores_zero_with_rank_half():
    z = np.array([[1.0, -2.0], [np.nan, 3.0], [0.0, 0.0], [np.nan, np.nan]])
    g = groups_of(["a", "a", "a", "b"])  # patient b has one lesion
    out = outlier_score(z, g)
    assert list(out.columns) == list(OUTLIER) and (out.dtypes == np.float32).all()
    np.testing.assert_allclose(out[OUTLIER[0]], [np.sqrt(2.5), 3.0, 0.0, 0.0], rtol=1e-6)
    assert (
        out[OUTLIER[1]].tolist() == np.float32([0.5, 5 / 6, 1 / 6, 0.5]).tolist()
    )  # rank within the patient; alone: 0.5
    assert np.isfinite(out.to_numpy()).all()


def test_outlier_age_and_group_features_in_the_matrix_with_their_families(tiny_isic2024, tmp_path):
    _, data = tiny_isic2024
    c = stack_cfg(
        tmp_path,
        "features.cnn=false features.outlier=[clin_size_long_diam_mm,tbp_lv_areaMM2] features.age=true "
        "features.group_norm=winners",
    )
    make_folds(c, read_metadata(c, data, "train"), data)
    m, _, _ = build_matrices(c, data, [])
    fams = column_families(list(m.X.columns), [])
    assert fams["outlier"] == list(OUTLIER)
    assert "age_decade" in fams["age"] and "clin_size_long_diam_mm__age_z" in fams["age"]
    assert len(fams["age"]) == 1 + len(c.features.age_norm)
    assert "tbp_lv_areaMM2__z_by_patient_id_tbp_tile_type" in fams["group_norm"]
    new = fams["outlier"] + fams["age"] + fams["group_norm"]
    assert np.isfinite(m.X[new].to_numpy(dtype=np.float64)[m.X[new].notna().to_numpy()]).all()
    assert (m.X["age_decade"].dropna() % 10 == 0).all()


@pytest.mark.parametrize(
    "extra, match",
    [
        (
            "features.outlier=[tbp_lv_nope]",
            r"features.outlier: \['tbp_lv_nope'\] is not a numeric feature; valid",
        ),
        (
            "features.age=true features.age_norm=[sex]",
            r"features.age_norm: \['sex'\] is not a numeric feature",
        ),
        (
            "features.group_norm=[[patient_id,hospital]]",
            r"features.group_norm: \['hospital'\] is not a test-side",
        ),
    ],
)
def test_a_context_feature_that_is_not_a_column_is_refused_naming_the_valid_ones(
    tiny_isic2024, tmp_path, extra, match
):
    _, data = tiny_isic2024
    c = stack_cfg(tmp_path, f"features.cnn=false {extra}")
    make_folds(c, read_metadata(c, data, "train"), data)
    with pytest.raises(ConfigError, match=match):
        build_matrices(c, data, [])


# ---- CNN features ---------------------------------------------------------------------------------


def test_cnn_statistics_a_lone_lesion_and_equal_runs_give_exact_values():
    fc = FeatureCfg(cnn_stats=("prob", "logit", "z"), cnn_cross=True)
    p = np.array([0.1, 0.3, 0.0, 1.0, 0.2])
    cnn = {"a": p, "b": p.copy()}
    patient = groups_of(["x", "x", "x", "x", "y"])  # patient y: one lesion
    site = groups_of(["s", "s", "t", "t", "u"])
    X = pd.concat(cnn_frames(fc, cnn, ["a", "b"], patient, [("site", site)]), axis=1)
    assert list(X.columns[:4]) == ["cnn_a", "cnn_a_logit", "cnn_a_patient_z", "cnn_a__z_by_site"]
    assert np.isfinite(X.to_numpy()).all()  # p = 0 and 1: the logit is clipped, never inf
    np.testing.assert_allclose(X["cnn_a_logit"], logit(p))
    assert X["cnn_a_patient_z"].iloc[4] == 0.0 and X["cnn_a__z_by_site"].iloc[4] == 0.0
    assert (X[f"{CROSS_PREFIX}std"] == 0.0).all()  # the runs agree: exactly 0, no rounding noise
    assert (X[f"{CROSS_PREFIX}mean"] == X["cnn_a"].astype(np.float32)).all()
    rank = pd.concat(cnn_frames(FeatureCfg(), {"a": p}, ["a"], patient, []), axis=1)
    assert rank["cnn_a_patient_rank"].iloc[4] == 0.5 and rank["cnn_a_patient_ratio"].iloc[4] == 1.0


def test_cnn_stats_per_run_and_the_default_for_a_run_left_out():
    fc = FeatureCfg(cnn_stats={"effnet": ("logit",)})
    assert stats_for(fc, "effnet", ["effnet", "eva"]) == ("logit",)
    assert stats_for(fc, "eva", ["effnet", "eva"]) == ("prob", "rank", "ratio")
    assert stats_for(fc, "effnet_MEL", ["effnet"]) == ("logit",)  # multiclass: <run>_<class>


def test_training_noise_moves_only_the_stage1_columns_and_only_while_fitting(monkeypatch):
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=300), "cnn_r": rng.uniform(size=300)})
    y = (X["cnn_r"] + rng.normal(0, 0.3, 300) > 1.0).astype(int).to_numpy()
    eng = ENGINES["lightgbm"]
    seen_fit, seen_predict = [], []
    real_fit, real_predict = eng.fit, eng.predict
    monkeypatch.setattr(eng, "fit", lambda Xb, *a, **k: seen_fit.append(Xb.copy()) or real_fit(Xb, *a, **k))
    monkeypatch.setattr(
        eng, "predict", lambda b, data, *a, **k: seen_predict.append(data) or real_predict(b, data, *a, **k)
    )
    est = GBDTClassifier(params={"num_leaves": 4, "verbose": -1}, n_estimators=5, cnn_noise=0.1, seeds=(0, 1))
    est.fit(X, y)
    a, b = seen_fit
    assert (a["a"] == X["a"]).all() and not (a["cnn_r"] == X["cnn_r"]).any()  # only cnn_* moved
    assert not np.array_equal(a["cnn_r"], b["cnn_r"])  # each seed its own draw
    assert abs(float((a["cnn_r"] - X["cnn_r"]).std()) - 0.1 * X["cnn_r"].std()) < 0.01
    p1, p2 = est.scores(X), est.scores(X)
    np.testing.assert_array_equal(p1, p2)
    assert all(np.array_equal(np.asarray(d)[:, 1], X["cnn_r"].to_numpy()) for d in seen_predict)
    again = GBDTClassifier(
        params={"num_leaves": 4, "verbose": -1}, n_estimators=5, cnn_noise=0.1, seeds=(0, 1)
    )
    np.testing.assert_array_equal(again.fit(X, y).scores(X), p1)  # the noise is seeded: same model


# ---- sampling -------------------------------------------------------------------------------------


def test_disjoint_bags_cover_every_negative_and_oversampled_positives_repeat():
    y = np.r_[np.ones(10, int), np.zeros(1000, int)]
    rng = np.random.default_rng(0)
    bags = bag_rows(y, rng, "m", None, None, None, 4)
    negs = [set(b[y[b] == 0]) for b in bags]
    assert sum(len(n) for n in negs) == 1000 and len(set().union(*negs)) == 1000  # disjoint, all
    assert all((y[b] == 1).sum() == 10 for b in bags)
    over = bag_rows(y, np.random.default_rng(0), "m", None, 0.1, 0.03, 2)
    for b in over:
        assert (y[b] == 1).sum() == 30 and (y[b] == 0).sum() == 300  # 30 positives / 0.1
        assert set(b[y[b] == 1]) == set(range(10))  # every positive, some drawn again
    assert not set(over[0][y[over[0]] == 0]) & set(over[1][y[over[1]] == 0])
    p = plan("m", 10, 1000, None, 0.01, None, 1)
    assert (p.n_neg, p.covers_all) == (1000, True)  # the rate would keep more than there are: all


def test_bags_that_cannot_be_disjoint_are_refused():
    with pytest.raises(ConfigError, match=r"model m: bags=3 disjoint bags of 500 negatives each need 1500"):
        plan("m", 10, 1000, 50, None, None, 3)


def test_booster_count_is_seeds_times_bags_in_the_manifest_and_checked_on_load(tmp_path):
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"a": rng.normal(size=400)})
    y = (X["a"] + rng.normal(size=400) > 1.5).astype(int).to_numpy()
    est = GBDTClassifier(params={"num_leaves": 4}, n_estimators=5, seeds=(0, 1), bags=3).fit(X, y)
    assert len(est.boosters_) == 6
    est.save(tmp_path / "f")
    meta = json.loads((tmp_path / "f" / "estimator.json").read_text())
    assert meta["bags"] == 3 and len(meta["boosters"]) == 6 and len(load_boosters(tmp_path / "f")) == 6
    meta["bags"] = 2
    (tmp_path / "f" / "estimator.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"2 seed\(s\) \[0, 1\] x 2 bag\(s\): the model folder is stale"):
        load_boosters(tmp_path / "f")


@pytest.mark.parametrize(
    "extra, match",
    [
        ("features.cnn_noise=-0.1", r"cnn_noise"),
        ("models.lgbm.neg_rate=0", r"neg_rate"),
        ("models.lgbm.pos_rate=1.5", r"pos_rate"),
        ("models.lgbm.neg_rate=0.1", r"neg_ratio .* and neg_rate .* both set the negatives; keep one"),
        ("models.lgbm.bags=0", r"bags"),
    ],
)
def test_bad_rates_and_noise_are_refused_naming_the_key(tmp_path, extra, match):
    with pytest.raises(ConfigError, match=match):
        stack_cfg(tmp_path, extra)


def test_features_cnn_noise_is_every_model_s_unless_it_sets_its_own(tmp_path):
    c = stack_cfg(tmp_path, "features.cnn_noise=0.1 models.xgb.cnn_noise=0.0")
    assert [m.cnn_noise for m in c.models] == [0.1, 0.0, 0.1]


# ---- members --------------------------------------------------------------------------------------


def test_member_columns_drop_families_columns_and_other_stage1_runs():
    cols = [
        "age_approx",
        "hue_contrast",
        "hue_contrast_pz",
        "cnn_a",
        "cnn_a_patient_rank",
        "cnn_b",
        "cnn__runs_mean",
    ]
    spec = ModelSpec(name="m", kind="lightgbm", drop=("patient_norm", "age_approx"))
    assert member_columns(spec, cols, ["a", "b"]) == [
        "hue_contrast",
        "cnn_a",
        "cnn_a_patient_rank",
        "cnn_b",
        "cnn__runs_mean",
    ]
    only_a = ModelSpec(name="m", kind="lightgbm", stage1=("a",))
    assert member_columns(only_a, cols, ["a", "b"]) == cols[:5]  # b and the cross-run mean gone
    assert member_columns(ModelSpec(name="m", kind="lightgbm", drop=("outlier",)), cols, ["a", "b"]) == cols
    with pytest.raises(ConfigError, match=r"model m: drop 'nope' is neither a feature family \(raw, "):
        member_columns(ModelSpec(name="m", kind="lightgbm", drop=("nope",)), cols, ["a", "b"])


def test_an_unknown_engine_is_refused_naming_the_valid_kinds(tmp_path):
    with pytest.raises(ConfigError, match=r"kind 'gbm' is not a stage-2 engine; valid kinds: lightgbm"):
        stack_cfg(tmp_path, "models.lgbm.kind=gbm")


@pytest.fixture(scope="module")
def two_runs(tiny_isic2024, tmp_path_factory):
    """A runs/ folder with folds and two finished tiny stage-1 runs (tiny, tiny_b)."""
    _, data = tiny_isic2024
    runs = tmp_path_factory.mktemp("recipe") / "runs"
    base = f"{TINY['isic2024']} runs_dir={runs} data.img_size=32 train.epochs=1 predict.tta=1"
    first = load_oof_config("isic2024", "tiny", base)
    make_folds(first, read_metadata(first, data, "train"), data)
    run_oof(first, data, progress=False)
    run_oof(load_oof_config("isic2024", "tiny", f"{base} run=tiny_b train.seed=1"), data, progress=False)
    return runs, data


@pytest.mark.parametrize(
    "extra, match",
    [
        (
            "models.lgbm.stage1=[effnet]",
            r"model lgbm: stage1 names run\(s\) \['effnet'\] that this stack does not",
        ),
        (
            "models.lgbm.drop=[stage1:effnet]",
            r"model lgbm: drop names \['stage1:effnet'\]; valid families: raw",
        ),
        ("features.cnn_stats={effnet:[z]}", r"features.cnn_stats names stage-1 run\(s\) \['effnet'\]"),
        ("models.lgbm.bags=40", r"model lgbm: bags=40 disjoint bags"),
    ],
)
def test_a_member_naming_an_unknown_run_or_family_or_bags_too_many_are_refused_before_fitting(
    two_runs, extra, match
):
    runs, data = two_runs
    with pytest.raises(ConfigError, match=match):
        build_matrices(stack_cfg(runs, extra), data, None)


def test_cnn_cross_needs_two_runs(two_runs):
    runs, data = two_runs
    with pytest.raises(ConfigError, match=r"features.cnn_cross needs at least two stage-1 runs"):
        build_matrices(stack_cfg(runs, "features.cnn_cross=true models_in=[tiny]"), data, None)


@pytest.mark.slow
def test_the_full_recipe_stacks_and_predicts_what_it_wrote(two_runs):
    """Every new family, CNN statistic, sampling rule and a member on a subset, through run_stack and
    the predict path (what the kernel runs): the same test predictions, every booster counted."""
    from foldstack.stage2.run import run_stack
    from foldstack.submit.predict import stack_test_predictions

    runs, data = two_runs
    recipe = (
        "run=recipe only_models=[lgbm,xgb] features.group_norm=winners features.ugly_duckling=true "
        "features.outlier=[clin_size_long_diam_mm,tbp_lv_areaMM2] features.age=true "
        "features.cnn_stats=[prob,logit,z] features.cnn_cross=true features.cnn_noise=0.1 "
        "models.lgbm.neg_ratio=null models.lgbm.pos_rate=0.05 models.lgbm.neg_rate=0.25 models.lgbm.bags=2 "
        "models.xgb.stage1=[tiny_b] models.xgb.drop=[age,outlier]"
    )
    cfg = stack_cfg(runs, recipe)
    r = run_stack(cfg, data)
    assert r["models"]["lgbm"]["boosters_per_fold"] == 2 * len(cfg.models[0].seeds)
    m, _, _ = build_matrices(cfg, data, None)
    assert r["models"]["xgb"]["n_features"] < r["models"]["lgbm"]["n_features"] == m.X.shape[1]
    assert {"cnn_tiny__z_by_patient_id_tbp_tile_type", "cnn__runs_std"} <= set(m.X.columns)
    tiny_cols = column_families(list(m.X.columns), m.stage1)["stage1:tiny"]
    assert tiny_cols and not set(tiny_cols) & set(m.columns_of(cfg.models[1]))
    out = Runs.of(cfg).stack(cfg.run).dir
    assert len(load_boosters(StackRun(out).model_fold("lgbm", 0))) == 2 * len(cfg.models[0].seeds)
    again = stack_test_predictions(StackRun(out), data, progress=False)
    np.testing.assert_allclose(again["pred"], pd.read_parquet(out / "test.parquet")["pred"], atol=1e-12)
    assert "cnn__runs_std" in r["stage1_shift"].get("columns", {}) or not r["stage1_shift"].get("checked")


def test_an_override_addresses_one_model_by_name_or_every_model_with_a_star(tmp_path):
    c = stack_cfg(tmp_path, "models.*.seeds=[3] models.xgb.bags=2 models.cb.params.depth=3")
    assert [m.seeds for m in c.models] == [(3,), (3,), (3,)] and [m.bags for m in c.models] == [1, 2, 1]
    assert c.models[2].params["depth"] == 3 and c.models[2].params["rsm"] == 0.5  # the rest kept
    with pytest.raises(ConfigError, match=r"override models.gbm.bags=2|no models item named 'gbm'"):
        stack_cfg(tmp_path, "models.gbm.bags=2")
    with pytest.raises(ConfigError, match=r"unknown config key 'models.xgb.bag'"):
        stack_cfg(tmp_path, "models.xgb.bag=2")
