"""Stage-2 features are exact where the arithmetic is, and the same bits whatever the row order."""

import numpy as np
import pandas as pd
import pytest

from foldstack.data.metadata import read_csv_exact, read_metadata
from foldstack.stage2.config import load_stack_config
from foldstack.stage2.features import build_features, category_levels
from foldstack.stage2.groups import Grouping, grid32, snapped_difference
from tests.conftest import TINY

NOT_REPRESENTABLE = 0.1 + 0.2  # 0.30000000000000004: its sums round


def test_a_constant_non_representable_group_has_exact_z_zero_rank_half_ratio_one():
    n = 7  # (x - mean) / (std + eps) gives +-5.6e-11 here with pandas' groupby mean and std
    groups = pd.DataFrame({"g": ["a"] * n + ["b"] * 4})
    x = np.r_[np.full(n, NOT_REPRESENTABLE), [1.0, 2.0, 3.0, 4.0]]
    g = Grouping.of(groups)
    z, ratio, rank = g.zscore(x), g.ratio(x), g.rank(x)
    assert (z[:n] == 0.0).all() and (ratio[:n] == 1.0).all() and (rank[:n] == 0.5).all()
    # the other group keeps its signal: the textbook values, on the float32 grid
    b = x[n:]
    np.testing.assert_array_equal(z[n:], grid32((b - b.mean()) / b.std(ddof=1)))
    np.testing.assert_array_equal(rank[n:], [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(ratio[n:], b / b.mean(), rtol=1e-6)


def test_a_group_of_one_and_missing_values_never_give_nan_or_inf_where_a_value_exists():
    g = Grouping.of(pd.DataFrame({"g": ["solo", "pair", "pair", "pair"]}))
    x = np.array([5.0, 1.0, np.nan, 3.0])
    z, ratio, rank = g.zscore(x), g.ratio(x), g.rank(x)
    assert (z[0], ratio[0], rank[0]) == (0.0, 1.0, 0.5)
    assert np.isnan(z[2]) and np.isnan(ratio[2]) and np.isnan(rank[2])  # missing stays missing
    assert z[1] == -z[3] and rank[1] == 0.25 and rank[3] == 0.75  # the NaN takes no part
    np.testing.assert_array_equal(g.size(), [1, 3, 3, 3])


def test_near_constant_values_snap_but_real_differences_survive():
    g = Grouping.of(pd.DataFrame({"g": ["a"] * 3 + ["b"] * 3}))
    x = np.array([100.0, 100.0 * (1 + 1e-13), 100.0, 100.0, 100.001, 100.0])
    z = g.zscore(x)
    assert (z[:3] == 0.0).all()  # 1e-13 relative: rounding, not signal
    assert z[4] > 1 and z[3] == z[5] < 0
    assert snapped_difference(np.array([NOT_REPRESENTABLE]), np.array([0.3]))[0] == 0.0
    assert snapped_difference(np.array([0.31]), np.array([0.3]))[0] != 0.0


def test_grouping_by_several_keys_and_columns_at_once():
    keys = pd.DataFrame({"p": ["x", "x", "x", "y"], "site": ["arm", "arm", None, "arm"]})
    g = Grouping.of(keys)
    M = np.column_stack([[1.0, 3.0, 9.0, 4.0], [2.0, 2.0, 2.0, 2.0]])
    z = g.zscore(M)
    np.testing.assert_array_equal(z[:, 1], 0.0)
    assert z[2, 0] == 0.0 and z[3, 0] == 0.0 and z[0, 0] == -z[1, 0] != 0  # (x, missing site) alone
    np.testing.assert_array_equal(g.size(), [2, 2, 1, 1])


def test_group_statistics_match_pandas_on_many_columns_with_ties_gaps_and_signed_zeros():
    """The vectorised statistics (several columns per pass, one integer sort per rank) agree with a
    plain pandas groupby: mid-ranks of ties on the float32 grid, -0.0 tied with 0.0, NaN and +-inf
    missing, over more columns than one pass takes."""
    rng = np.random.default_rng(7)
    n, m = 3000, 19
    keys = pd.DataFrame({"p": rng.integers(0, 40, n).astype(str), "s": rng.choice(["a", "b", None], n)})
    M = np.round(rng.normal(size=(n, m)), 1)  # many ties
    M[rng.random((n, m)) < 0.05] = np.nan
    M[rng.random((n, m)) < 0.01] = np.inf
    M[:, 3] = np.where(rng.random(n) < 0.5, -0.0, 0.0)  # ties of signed zeros
    M[:, 4] += 1e-12 * rng.random(n)  # equal on the float32 grid: ties
    g = Grouping.of(keys.astype(object))
    got = g.normalise(M)
    frame = pd.DataFrame(grid32(np.where(np.isfinite(M), M, np.nan)))
    by = frame.groupby(g.codes)
    rank = by.rank(method="average").to_numpy()
    count = by.transform("count").to_numpy()
    np.testing.assert_array_equal(got["rank"], (rank - 0.5) / count)
    valid = np.isfinite(M)
    mean = pd.DataFrame(np.where(valid, M, np.nan)).groupby(g.codes).transform("mean").to_numpy()
    std = pd.DataFrame(np.where(valid, M, np.nan)).groupby(g.codes).transform("std").to_numpy()
    spread = np.nan_to_num(std) > 1e-9
    expect_z = np.where(spread, (M - mean) / np.where(spread, std, 1.0), 0.0)
    np.testing.assert_allclose(got["z"][valid], expect_z[valid], rtol=1e-6, atol=1e-6)
    expect_ratio = 1 + (M - mean) / (mean + np.where(mean < 0, -1e-6, 1e-6))
    posed = valid & (np.abs(mean) > 1e-3)  # a mean of ~0 has no well-defined sign: ill-posed either way
    np.testing.assert_allclose(got["ratio"][posed], expect_ratio[posed], rtol=1e-5, atol=1e-5)
    assert np.isnan(got["z"][~valid]).all() and np.isnan(got["rank"][~valid]).all()
    for stat, one in (("z", g.zscore), ("ratio", g.ratio), ("rank", g.rank)):
        np.testing.assert_array_equal(one(M[:, 5]), got[stat][:, 5])  # a column alone, the same bits


def _train(tiny_isic2024):
    _cfg, data = tiny_isic2024
    cfg = load_stack_config("isic2024", "lgb_xgb_cb", f"{TINY['isic2024']} runs_dir=/tmp/unused")
    train = read_metadata(cfg, data, "train")
    levels = category_levels([train], cfg.table.of_type("cat", split="test"))
    return cfg, train, levels


def test_within_patient_constant_columns_give_exact_zeros_in_the_stage2_matrix(tiny_isic2024):
    cfg, train, levels = _train(tiny_isic2024)
    codes = train["patient_id"].astype("category").cat.codes.to_numpy()
    train = train.assign(tbp_lv_Hext=0.1 * codes + 0.2, tbp_lv_Lext=62.876623131979876)
    cnn = np.where(codes % 2 == 0, NOT_REPRESENTABLE, np.linspace(0.01, 0.9, len(train)))
    X = build_features(cfg, cfg.features, train, {"m": cnn}, levels)
    assert (X["tbp_lv_Hext_pz"] == 0.0).all() and (X["tbp_lv_Lext_pz"] == 0.0).all()
    even = codes % 2 == 0
    assert (X.loc[even, "cnn_m_patient_rank"] == 0.5).all()
    assert (X.loc[even, "cnn_m_patient_ratio"] == 1.0).all()
    assert X.loc[~even, "cnn_m_patient_rank"].nunique() > 5
    # every computed column lies on the float32 grid
    for c in ["hue_contrast", "tbp_lv_areaMM2_pz", "cnn_m_patient_ratio", "log_lesion_area"]:
        v = X[c].dropna().to_numpy()
        np.testing.assert_array_equal(v, grid32(v))


@pytest.mark.parametrize("seed", [0, 1])
def test_the_stage2_matrix_is_bit_identical_under_a_shuffled_row_order(tiny_isic2024, seed):
    cfg, train, levels = _train(tiny_isic2024)
    cnn = np.random.default_rng(5).random(len(train))
    X = build_features(cfg, cfg.features, train, {"m": cnn}, levels)
    perm = np.random.default_rng(seed).permutation(len(train))
    X2 = build_features(cfg, cfg.features, train.iloc[perm].reset_index(drop=True), {"m": cnn[perm]}, levels)
    X1 = X.iloc[perm].reset_index(drop=True)
    assert list(X1.columns) == list(X2.columns)
    for c in X1.columns:
        a, b = X1[c], X2[c]
        if isinstance(a.dtype, pd.CategoricalDtype):
            assert a.equals(b), c
        else:  # the same bits, NaN in the same places
            assert a.to_numpy(np.float64).tobytes() == b.to_numpy(np.float64).tobytes(), c


def test_metadata_floats_are_parsed_to_the_nearest_double(tmp_path):
    """pandas 2.x's default parser reads '28.750332419798116' one ulp off; Kaggle's image has pandas
    2.3.3, this project pandas 3: both must read the same bits."""
    text = ["28.750332419798116", "62.876623131979876", "0.30000000000000004", "1e-300"]
    path = tmp_path / "m.csv"
    path.write_text("v\n" + "\n".join(text) + "\n")
    got = read_csv_exact(path)["v"].to_numpy()
    assert got.tolist() == [float(t) for t in text]
