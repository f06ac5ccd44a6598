import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from foldstack.errors import DataError
from foldstack.folds import assign_folds, check_fold_sha, folds_paths, load_folds, make_folds
from foldstack.runs import Runs
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


@pytest.mark.slow
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


# ----------------------------------------------------------------------------- data hash, sets, images
def _copy_data(data, tmp_path):
    """A writable copy of the tiny (session-wide, read-only) data folder."""
    import shutil

    return shutil.copytree(data, tmp_path / "data")


def _train(cfg, data):
    from foldstack.data.metadata import read_metadata

    return read_metadata(cfg, data, "train")


@pytest.mark.parametrize("resave", ["crlf", "bom", "crlf+bom"])
def test_crlf_or_bom_resave_reuses_the_folds(tiny_isic2024, tmp_path, resave):
    cfg0, data0 = tiny_isic2024
    data = _copy_data(data0, tmp_path)
    cfg = tiny_config("isic2024", tmp_path / "runs")
    first = make_folds(cfg, _train(cfg, data), data)
    path = data / cfg.files.train
    raw = path.read_bytes()
    assert b"\r" not in raw and not raw.startswith(b"\xef\xbb\xbf")
    if "crlf" in resave:
        raw = raw.replace(b"\n", b"\r\n")
    if "bom" in resave:
        raw = b"\xef\xbb\xbf" + raw
    path.write_bytes(raw)
    train = _train(cfg, data)
    assert train.equals(_train(cfg0, data0))  # read_metadata reads the re-saved table identically
    again = make_folds(cfg, train, data)
    assert again["reused"] and again["sha256"] == first["sha256"]
    assert again["data_sha256"] == first["data_sha256"]


@pytest.mark.parametrize("change", ["target", "group", "id"])
def test_changed_table_is_detected(tiny_isic2024, tmp_path, change):
    _, data0 = tiny_isic2024
    data = _copy_data(data0, tmp_path)
    cfg = tiny_config("isic2024", tmp_path / "runs")
    train = _train(cfg, data)
    first = make_folds(cfg, train, data)
    c = cfg.columns
    row = int(np.flatnonzero(train[c.target].to_numpy() == 0)[0])
    changed = train.copy()
    if change == "target":
        changed.loc[row, c.target] = 1
    elif change == "group":
        changed.loc[row, c.group] = changed[c.group].iloc[-1]
        assert changed[c.group].iloc[row] != train[c.group].iloc[row]
    else:  # a row (and so its id) removed
        changed = changed.drop(index=row)
    with pytest.raises(DataError, match="FORCE=1") as e:
        make_folds(cfg, changed, data)
    assert first["data_sha256"][:12] in str(e.value)
    assert make_folds(cfg, train, data)["reused"]


def _make_folds_in_child(runs, data, seed, fault):
    code = (
        "import sys; from pathlib import Path; from foldstack.config import load_competition; "
        "from foldstack.data.metadata import read_metadata; from foldstack.folds import make_folds; "
        "cfg = load_competition('isic2024', sys.argv[1]); d = Path(sys.argv[2]); "
        "make_folds(cfg, read_metadata(cfg, d, 'train'), d, force=True)"
    )
    from tests.conftest import TINY

    overrides = f"{TINY['isic2024']} runs_dir={runs} folds.seed={seed}"
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO / "src"), "FOLDSTACK_FAULT": fault}
    return subprocess.run(
        [sys.executable, "-c", code, overrides, str(data)], capture_output=True, text=True, env=env
    )


@pytest.mark.parametrize("fault", ["set.commit.move:1", "set.commit.recorded:1", "set.commit.before:1"])
@pytest.mark.slow
def test_killed_commit_of_the_pair_is_rolled_forward_or_kept_whole(tiny_isic2024, tmp_path, fault):
    _, data = tiny_isic2024
    cfg = tiny_config("isic2024", tmp_path / "runs")
    old = make_folds(cfg, _train(cfg, data), data)
    out = _make_folds_in_child(tmp_path / "runs", data, 99, fault)
    assert out.returncode == -9, out.stderr  # SIGKILL in the middle of the commit
    json_path = folds_paths(cfg)[1]
    if fault == "set.commit.before:1":  # killed before the commit record: the old pair stays whole
        assert json.loads(json_path.read_text())["seed"] == old["seed"]
    else:  # the commit record exists: before the kill, folds.csv was new and folds.json old (or neither)
        assert any(p.name.endswith(".commit.json") for p in Runs.of(cfg).dir.iterdir())
    folds, meta = load_folds(cfg)  # rolls a recorded commit forward; never "the folds file was edited"
    want_seed = old["seed"] if fault == "set.commit.before:1" else 99
    assert meta["seed"] == want_seed and len(folds) == old["rows"]
    assert sorted(p.name for p in Runs.of(cfg).dir.iterdir()) == ["folds.csv", "folds.json"]
    seeded = tiny_config("isic2024", tmp_path / "runs", f"folds.seed={want_seed}")
    assert make_folds(seeded, _train(cfg, data), data)["reused"]


def test_half_pair_is_refused_naming_the_file(tiny_isic2024, tmp_path):
    _, data = tiny_isic2024
    cfg = tiny_config("isic2024", tmp_path / "runs")
    make_folds(cfg, _train(cfg, data), data)
    csv_path = folds_paths(cfg)[0]
    body = csv_path.read_text()
    csv_path.write_text(body[: len(body) // 2])  # e.g. a copy cut short
    with pytest.raises(DataError, match=r"folds\.csv does not match .*folds\.json") as e:
        load_folds(cfg)
    assert "edited" not in str(e.value) and "FORCE=1" in str(e.value)
    csv_path.unlink()
    with pytest.raises(DataError, match=r"folds\.csv is missing, though .*folds\.json lists it"):
        load_folds(cfg)


def test_folds_json_of_an_older_foldstack(tiny_isic2024, tmp_path):
    """Before sets and the table hash: no set_members, data_sha256 = sha256 of the train CSV's bytes."""
    from foldstack import artifacts

    _, data0 = tiny_isic2024
    data = _copy_data(data0, tmp_path)
    cfg = tiny_config("isic2024", tmp_path / "runs")
    made = make_folds(cfg, _train(cfg, data), data)
    json_path = folds_paths(cfg)[1]
    legacy = {k: v for k, v in made.items() if k not in ("set_members", "data_hash", "reused")}
    legacy["data_sha256"] = artifacts.sha256_file(data / cfg.files.train)
    json_path.write_text(json.dumps(legacy))
    again = make_folds(cfg, _train(cfg, data), data)  # same bytes, k, seed: upgraded in place
    assert again["reused"] and again["upgraded"] and again["sha256"] == made["sha256"]
    assert again["data_sha256"] == made["data_sha256"]
    assert load_folds(cfg)[1]["data_hash"] == "table-v1"

    legacy["data_sha256"] = "0" * 64  # made on other bytes: refused, saying why
    json_path.write_text(json.dumps(legacy))
    with pytest.raises(DataError, match=r"hashed as file bytes by an older foldstack.*FORCE=1"):
        make_folds(cfg, _train(cfg, data), data)
    json_path.write_text(json.dumps({k: v for k, v in legacy.items() if k != "sha256"}))
    with pytest.raises(DataError, match=r"folds\.json lacks sha256 .*FORCE=1"):
        load_folds(cfg)
    assert not make_folds(cfg, _train(cfg, data), data, force=True)["reused"]


def test_make_folds_refuses_ids_without_an_image(tiny_isic2024, tmp_path):
    _, data0 = tiny_isic2024
    data = _copy_data(data0, tmp_path)
    cfg = tiny_config("isic2024", tmp_path / "runs")
    path = data / cfg.files.train
    train = pd.read_csv(path, dtype=str, keep_default_na=False)
    extra = train.iloc[[0, 1]].copy()
    extra[cfg.columns.id] = ["ISIC_NOIMG1", "ISIC_NOIMG2"]
    pd.concat([train, extra]).to_csv(path, index=False)
    with pytest.raises(DataError) as e:
        make_folds(cfg, _train(cfg, data), data)
    msg = str(e.value)
    assert f"2 of the {len(train) + 2} train ids" in msg and "ISIC_NOIMG1, ISIC_NOIMG2" in msg
    assert str(data / cfg.images.train) in msg and "Add their images, or remove their rows" in msg
    assert not folds_paths(cfg)[1].exists()
