"""features.group_norm: every numeric feature normalised within groups beyond the patient (patient x site,
x location, x tile type...), exact like the patient's, and test rows grouped among test rows only."""

import shutil

import numpy as np
import pandas as pd
import pytest

from foldstack.data.metadata import read_metadata
from foldstack.errors import ConfigError
from foldstack.folds import make_folds
from foldstack.stage2.config import load_stack_config
from foldstack.stage2.features import build_features, category_levels
from foldstack.stage2.groups import Grouping
from foldstack.stage2.inputs import build_matrices
from foldstack.stage2.members import column_families
from tests.conftest import TINY

SITE = "[[patient_id,anatom_site_general]]"


def cfg(runs, extra=""):
    base = "features.cnn=false features.engineered=[lesion_size_ratio]"
    return load_stack_config("isic2024", "lgb_xgb_cb", f"{TINY['isic2024']} runs_dir={runs} {base} {extra}")


@pytest.mark.slow
def test_each_statistic_within_patient_and_site_is_the_grouping_s(tiny_isic2024, tmp_path):
    _, data = tiny_isic2024
    c = cfg(tmp_path, f"features.group_norm={SITE} features.group_stats=[z,ratio,rank]")
    train = read_metadata(c, data, "train")
    levels = category_levels([train], c.table.of_type("cat", split="test"))
    X = build_features(c, c.features, train, {}, levels)
    col = "clin_size_long_diam_mm"
    g = Grouping.of(train[["patient_id", "anatom_site_general"]].astype(object))
    v = train[col].to_numpy(dtype=np.float64)
    tag = "_by_patient_id_anatom_site_general"
    np.testing.assert_array_equal(X[f"{col}__z{tag}"], g.zscore(v).astype(np.float32))
    np.testing.assert_array_equal(X[f"{col}__ratio{tag}"], g.ratio(v).astype(np.float32))
    np.testing.assert_array_equal(X[f"{col}__rank{tag}"], g.rank(v).astype(np.float32))
    alone = g.size() == 1  # a lesion alone at its site: z 0, rank 0.5, ratio 1, never NaN or inf
    assert alone.any()
    assert (X.loc[alone, f"{col}__z{tag}"] == 0).all() and (X.loc[alone, f"{col}__rank{tag}"] == 0.5).all()
    assert (X.loc[alone, f"{col}__ratio{tag}"] == 1).all()
    fams = column_families(list(X.columns), [])
    assert f"{col}__z{tag}" in fams["group_norm"] and f"{col}_pz" in fams["patient_norm"]


@pytest.mark.slow
def test_test_rows_are_grouped_among_test_rows_only(tiny_isic2024, tmp_path):
    """Train rows moved into a test patient's groups, with other values, leave the test matrix bit for
    bit the same (as on Kaggle, where the hidden test patients are new and only test rows are grouped
    together), while the train matrix changes."""
    _, data = tiny_isic2024
    other = tmp_path / "data"
    shutil.copytree(data, other)
    train = pd.read_csv(other / "train-metadata.csv", low_memory=False)
    test = pd.read_csv(other / "test-metadata.csv", low_memory=False)
    host = test.iloc[0]
    moved = train.index[:40]
    train.loc[moved, ["patient_id", "anatom_site_general"]] = [
        host["patient_id"],
        host["anatom_site_general"],
    ]
    train["clin_size_long_diam_mm"] = train["clin_size_long_diam_mm"] ** 2 + 1
    train.to_csv(other / "train-metadata.csv", index=False)
    c = cfg(tmp_path / "runs", f"features.group_norm={SITE} features.group_stats=[z,rank]")
    make_folds(c, read_metadata(c, data, "train"), data)
    m1, _, _ = build_matrices(c, data, [])
    m2, _, _ = build_matrices(c, other, [])
    pd.testing.assert_frame_equal(m1.X_test, m2.X_test)
    col = "clin_size_long_diam_mm__z_by_patient_id_anatom_site_general"
    assert not np.array_equal(m1.X[col].to_numpy(), m2.X[col].to_numpy(), equal_nan=True)


def test_a_group_key_that_is_not_a_test_column_is_refused_naming_the_valid_ones(tiny_isic2024, tmp_path):
    _, data = tiny_isic2024
    c = cfg(tmp_path / "runs", "features.group_norm=[[patient_id,hospital]]")
    make_folds(c, read_metadata(c, data, "train"), data)
    with pytest.raises(
        ConfigError, match=r"features.group_norm: \['hospital'\] is not a test-side column; valid"
    ):
        build_matrices(c, data, [])
    with pytest.raises(ConfigError, match=r"\['iddx_1'\] is not a test-side column"):  # train-only: a leak
        build_matrices(cfg(tmp_path / "runs", "features.group_norm=[[iddx_1]]"), data, [])
    with pytest.raises(Exception, match="group_stats"):
        cfg(tmp_path, "features.group_stats=[mean]")


def test_ugly_duckling_counts_the_features_where_a_lesion_stands_out_in_its_patient():
    from foldstack.stage2.context import ugly_duckling

    z = np.array([[0.5, -2.5, 3.0], [0.0, 0.0, 0.0], [np.nan, 2.0, -1.9]])
    u = ugly_duckling(z, 2.0)
    assert u["patient_outlier_count"].tolist() == [2.0, 0.0, 1.0]
    np.testing.assert_allclose(u["patient_max_abs_z"], [3.0, 0.0, 2.0])


def test_ugly_duckling_features_in_the_matrix_and_their_ablation_family(tiny_isic2024, tmp_path):
    _, data = tiny_isic2024
    c = cfg(tmp_path, "features.ugly_duckling=true features.ugly_z=1.5 features.patient_norm=false")
    train = read_metadata(c, data, "train")
    levels = category_levels([train], c.table.of_type("cat", split="test"))
    X = build_features(c, c.features, train, {}, levels)
    assert not any(col.endswith("_pz") for col in X.columns)  # computed without adding the z columns
    g = Grouping.of(train[["patient_id"]].astype(object))
    alone = g.size() == 1
    assert (X["patient_outlier_count"] >= 0).all() and X["patient_outlier_count"].max() > 0
    if alone.any():
        assert (X.loc[alone, "patient_outlier_count"] == 0).all()
    fams = column_families(list(X.columns), [])
    assert fams["ugly_duckling"] == ["patient_outlier_count", "patient_max_abs_z"]
    with pytest.raises(Exception, match="ugly_z"):
        cfg(tmp_path, "features.ugly_z=0")
