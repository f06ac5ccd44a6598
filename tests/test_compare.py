"""make compare: two stacks on repeated patient-grouped splits, paired differences, leave-one-group-out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from foldstack import artifacts
from foldstack.data.metadata import read_metadata
from foldstack.errors import ConfigError
from foldstack.folds import make_folds
from foldstack.runs import Runs
from foldstack.stage2.compare import compare, paired
from foldstack.stage2.config import load_stack_config
from tests.conftest import TINY

BASE = "features.cnn=false tuning.n_trials=1 features.engineered=[lesion_size_ratio,hue_contrast]"


def cfg(runs, extra):
    return load_stack_config("isic2024", "lgb_xgb_cb", f"{TINY['isic2024']} runs_dir={runs} {BASE} {extra}")


@pytest.fixture(scope="module")
def folds_made(tiny_isic2024, tmp_path_factory):
    _, data = tiny_isic2024
    runs = tmp_path_factory.mktemp("compare") / "runs"
    a = cfg(runs, "run=a only_models=[lgbm]")
    make_folds(a, read_metadata(a, data, "train"), data)
    return runs, data


def test_paired_statistics_match_scipy():
    a, b = np.array([0.10, 0.12, 0.11, 0.13]), np.array([0.11, 0.125, 0.118, 0.131])
    s = paired(a, b)
    d = b - a
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert s["mean_diff"] == pytest.approx(d.mean()) and s["ci95"] == pytest.approx(
        [d.mean() - half, d.mean() + half]
    )
    assert s["p_ttest"] == pytest.approx(stats.ttest_rel(b, a).pvalue)
    same = paired(a, a.copy())
    assert (
        same["mean_diff"] == 0 and same["ci95"] == [0, 0] and same["p_ttest"] == 1 and same["p_wilcoxon"] == 1
    )


@pytest.mark.slow
def test_compare_writes_paired_repeats_and_the_leave_one_out_table(folds_made):
    runs, data = folds_made
    a, b = cfg(runs, "run=a only_models=[lgbm]"), cfg(runs, "run=b only_models=[lgbm,xgb]")
    s = compare(a, b, data, repeats=3, by="attribution")
    out = Runs.of(a).compare("a", "b")
    table = pd.read_csv(out / "compare.csv")
    assert table["fold_seed"].tolist() == [a.folds.seed + 1, a.folds.seed + 2, a.folds.seed + 3]
    np.testing.assert_allclose(table["diff"], table["B"] - table["A"])
    assert s["mean_diff"] == pytest.approx(table["diff"].mean())
    assert s["ci95"][0] <= s["mean_diff"] <= s["ci95"][1]
    assert ((table[["A", "B"]] >= 0) & (table[["A", "B"]] <= 0.2)).all(axis=None)  # pAUC range
    assert len(set(table["A"])) > 1  # the repeats really are different splits
    logo = pd.read_csv(out / "logo.csv")
    train = read_metadata(a, data, "train")
    assert sorted(logo["group"]) == sorted(train["attribution"].astype(str).unique())
    assert logo["rows"].sum() == len(train)
    manifest = artifacts.read_manifest(out / "compare.json")
    assert set(manifest["set_members"]) >= {"compare.csv", "logo.csv", "compare.md", "compare.png"}
    md = (out / "compare.md").read_text()
    assert "B - A: mean" in md and "Leave one attribution out" in md and "original folds" in md
    assert "config's own parameters" in s["A"]["params_from"]


@pytest.mark.slow
def test_the_same_stack_twice_differs_by_exactly_zero(folds_made):
    runs, data = folds_made
    a, b = cfg(runs, "run=same1 only_models=[lgbm]"), cfg(runs, "run=same2 only_models=[lgbm]")
    s = compare(a, b, data, repeats=2)
    assert s["mean_diff"] == 0.0 and s["ci95"] == [0.0, 0.0] and s["p_ttest"] == 1.0
    assert not (Runs.of(a).compare("same1", "same2") / "logo.csv").exists()


def test_bad_requests_are_refused_before_any_fitting(folds_made):
    runs, data = folds_made
    a, b = cfg(runs, "run=a only_models=[lgbm]"), cfg(runs, "run=b only_models=[lgbm]")
    with pytest.raises(ConfigError, match="REPEATS=1: a paired comparison needs at least 2"):
        compare(a, b, data, repeats=1)
    with pytest.raises(
        ConfigError, match=r"BY=hospital: not a column of the train metadata; its columns: .*attribution"
    ):
        compare(a, b, data, repeats=2, by="hospital")
    with pytest.raises(ConfigError, match=r"A and B are both run 'a': name one of them"):
        compare(a, cfg(runs, "run=a only_models=[lgbm,xgb]"), data, repeats=2)
