import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from foldstack.errors import DataError
from foldstack.folds import assign_folds, check_fold_sha, folds_paths, load_folds, make_folds
from tests.conftest import REPO, tiny_config


def _toy(n_groups=40, per_group=5, pos_groups=12, seed=0):
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"P{i}" for i in range(n_groups)], per_group)
    target = np.zeros(len(groups), int)
    for g in range(pos_groups):
        target[g * per_group + rng.integers(per_group)] = 1
    ids = pd.Series([f"ID{i}" for i in range(len(groups))])
    return ids, pd.Series(groups), pd.Series(target)


def test_no_patient_in_two_folds_and_every_row_once():
    ids, groups, target = _toy()
    f = assign_folds(ids, groups, target, k=4, seed=1)
    assert len(f) == len(ids) and f["id"].is_unique
    assert set(f["fold"]) == {0, 1, 2, 3}
    assert (f.groupby("group")["fold"].nunique() == 1).all()
    assert (f.groupby("fold")["target"].sum() >= 2).all()  # stratified: positives spread out


def test_folds_are_deterministic_by_seed():
    ids, groups, target = _toy()
    a = assign_folds(ids, groups, target, 4, 1)
    b = assign_folds(ids, groups, target, 4, 1)
    c = assign_folds(ids, groups, target, 4, 2)
    assert a.equals(b)
    assert not a["fold"].equals(c["fold"])


def test_k_larger_than_groups_is_refused():
    ids, groups, target = _toy(n_groups=3, pos_groups=3)
    with pytest.raises(DataError, match="cannot make 5 folds from 3 patients"):
        assign_folds(ids, groups, target, 5, 0)


def test_fold_without_positives_is_refused():
    ids, groups, target = _toy(pos_groups=2)
    with pytest.raises(DataError, match="only 2 patients have a positive"):
        assign_folds(ids, groups, target, 3, 0)


def test_make_folds_reuses_refuses_and_forces(tiny_isic2024, tmp_path):
    cfg, data = tiny_isic2024
    cfg = tiny_config("isic2024", tmp_path / "runs")
    from foldstack.data.metadata import read_metadata

    train = read_metadata(cfg, data, "train")
    first = make_folds(cfg, train, data)
    assert not first["reused"] and first["k"] == 3
    folds, meta = load_folds(cfg)
    assert len(folds) == len(train) and meta["sha256"] == first["sha256"]
    assert set(folds["id"]) == set(train[cfg.columns.id])
    assert make_folds(cfg, train, data)["reused"]

    other = tiny_config("isic2024", tmp_path / "runs", "folds.seed=99")
    with pytest.raises(DataError, match="FORCE=1"):
        make_folds(other, train, data)
    forced = make_folds(other, train, data, force=True)
    assert forced["sha256"] != first["sha256"]
    with pytest.raises(DataError, match="made on folds"):
        check_fold_sha(other, first["sha256"], "runs/x/oof.parquet")
    check_fold_sha(other, forced["sha256"], "runs/x/oof.parquet")


def test_edited_folds_file_is_detected(tiny_isic2024, tmp_path):
    cfg, data = tiny_isic2024
    cfg = tiny_config("isic2024", tmp_path / "runs")
    from foldstack.data.metadata import read_metadata

    make_folds(cfg, read_metadata(cfg, data, "train"), data)
    csv_path, json_path = folds_paths(cfg)
    df = pd.read_csv(csv_path)
    df.loc[0, "fold"] = (df.loc[0, "fold"] + 1) % 3
    df.to_csv(csv_path, index=False)
    with pytest.raises(DataError, match="was edited"):
        load_folds(cfg)
    assert json.loads(json_path.read_text())["k"] == 3


def test_folds_pipeline_runs(tiny_isic2024, tmp_path):
    _, data = tiny_isic2024
    from tests.conftest import TINY

    cmd = [
        sys.executable,
        str(REPO / "pipelines/folds.py"),
        "--comp",
        "isic2024",
        "--data",
        str(data),
        "--set",
        f"{TINY['isic2024']} runs_dir={tmp_path / 'runs'}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "wrote" in out.stdout and "fold 2:" in out.stdout
    bad = subprocess.run(
        [*cmd[:-1], f"{TINY['isic2024']} runs_dir={tmp_path / 'other'} folds.k=500"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and "cannot make 500 folds" in bad.stderr
