"""The ISIC 2024-size synthetic competition (foldstack.synth.scale), written here at a small size."""

import json
import time

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest

from foldstack.config import load_competition
from foldstack.data.check import check_data
from foldstack.data.metadata import read_metadata
from foldstack.errors import ConfigError
from foldstack.folds import make_folds
from foldstack.synth.scale import (
    RECORD,
    build_hdf5,
    ensure_isic2024_scale,
    patient_sizes,
    write_isic2024_scale,
)

SMALL = {"n": 3_000, "positives": 30, "patients": 40, "n_test": 10}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale") / "bench-isic2024"
    record = write_isic2024_scale(out, **SMALL)
    return out, record


def _decode(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise AssertionError("an image does not decode")
    return img


def test_counts_and_columns_are_those_asked_for(small, fixture_dir):
    out, record = small
    cfg = load_competition("isic2024", "")
    train, test = read_metadata(cfg, out, "train"), read_metadata(cfg, out, "test")
    assert len(train) == 3_000 and len(test) == 10 and not record["skipped"]
    assert int(train["target"].sum()) == 30 and train["patient_id"].nunique() == 40
    assert list(pd.read_csv(out / "train-metadata.csv", nrows=0).columns) == cfg.table.train_columns
    real_test = pd.read_csv(fixture_dir / "test-metadata.csv")
    ours = pd.read_csv(out / "test-metadata.csv")
    assert list(ours.columns) == list(real_test.columns) and ours.shape[1] == 44
    for col in real_test.columns:  # the dtypes pandas reads from the real file
        assert ours[col].dtype == real_test[col].dtype, col
    sub = pd.read_csv(out / "sample_submission.csv")
    assert list(sub.columns) == list(pd.read_csv(fixture_dir / "sample_submission.csv").columns)
    assert sub["isic_id"].tolist() == ours["isic_id"].tolist() and (sub["target"] == 0.3).all()
    assert not set(train["patient_id"]) & set(test["patient_id"])
    assert not set(train["isic_id"]) & set(test["isic_id"])
    assert train["isic_id"].is_monotonic_increasing  # sorted by id, patients interleaved
    assert record["train"]["positives"] == 30 and record["train"]["patients"] == 40


def test_every_id_has_a_readable_jpeg_like_the_real_file(small, fixture_dir):
    out, _ = small
    cfg = load_competition("isic2024", "")
    for split in ("train", "test"):
        ids = pd.read_csv(out / f"{split}-metadata.csv")["isic_id"]
        with h5py.File(out / f"{split}-image.hdf5") as f:
            assert sorted(f.keys()) == sorted(ids)
            for i in ids:
                ds = f[i]
                assert ds.shape == () and ds.dtype.kind == "S"
                img = _decode(ds[()])
                assert min(img.shape[:2]) >= 100 and max(img.shape[:2]) <= 200
    with h5py.File(fixture_dir / "test-image.hdf5") as real, h5py.File(out / "test-image.hdf5") as ours:
        real_ds, ds = real[next(iter(real.keys()))], ours[next(iter(ours.keys()))]
        assert ds.shape == real_ds.shape and ds.dtype.kind == real_ds.dtype.kind
    report = check_data(cfg, out, workers=1)
    assert report.ok, report.format()


def test_patient_grouped_five_folds_each_have_positives(small, tmp_path):
    out, _ = small
    cfg = load_competition("isic2024", f"runs_dir={tmp_path} folds.k=5")
    meta = make_folds(cfg, read_metadata(cfg, out, "train"), out)
    folds = pd.read_csv(tmp_path / "isic2024" / "folds.csv")
    per_fold = folds.groupby("fold")["target"].sum()
    assert meta["k"] == 5 and sorted(per_fold.index) == [0, 1, 2, 3, 4]
    assert (per_fold > 0).all() and per_fold.sum() == 30
    assert (folds.groupby("group")["fold"].nunique() == 1).all()


def test_positives_get_darker_crops_more_often(small):
    """The image cue: the malignant-looking crops (larger, darker blob) go mostly to positives."""
    out, _ = small
    train = pd.read_csv(out / "train-metadata.csv")
    with h5py.File(out / "train-image.hdf5") as f:
        centre = []
        for i in train["isic_id"]:
            img = _decode(f[i][()]).astype(np.float32)
            h, w = img.shape[:2]
            centre.append(img[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3].mean())
    centre = np.array(centre)
    pos = train["target"].to_numpy() == 1
    assert centre[pos].mean() < centre[~pos].mean() - 15


def test_a_second_call_skips_and_other_parameters_rewrite(small, tmp_path):
    out, first = small
    t = time.perf_counter()
    again = write_isic2024_scale(out, **SMALL)
    assert time.perf_counter() - t < 1.0
    assert again["skipped"] and again["file_bytes"] == first["file_bytes"]
    assert ensure_isic2024_scale(out, **SMALL) == out

    tiny = {"n": 400, "positives": 8, "patients": 10, "n_test": 5, "distinct": 16}
    folder = tmp_path / "tiny"
    write_isic2024_scale(folder, **tiny)
    record = json.loads((folder / RECORD).read_text())
    assert not write_isic2024_scale(folder, **tiny, seed=1)["skipped"]  # other parameters
    assert json.loads((folder / RECORD).read_text())["params"]["seed"] == 1
    with open(folder / "train-metadata.csv", "a") as fh:  # a file changed since: rewritten
        fh.write("ISIC_9999999\n")
    assert not write_isic2024_scale(folder, **tiny, seed=1)["skipped"]
    (folder / "test-image.hdf5").unlink()  # a file missing: rewritten
    assert not write_isic2024_scale(folder, **tiny, seed=1)["skipped"]
    assert (folder / "test-image.hdf5").is_file() and record["params"]["seed"] == 0


def test_patient_sizes_are_heavy_tailed_and_exact():
    sizes = patient_sizes(np.random.default_rng(0), 1_042, 401_059)
    assert sizes.sum() == 401_059 and sizes.min() >= 1 and len(sizes) == 1_042
    assert np.median(sizes) < 300 and sizes.max() > 3_000  # a few patients with thousands of crops
    tight = patient_sizes(np.random.default_rng(0), 40, 41)
    assert tight.sum() == 41 and tight.min() == 1


def test_impossible_parameters_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="patients"):
        write_isic2024_scale(tmp_path, n=10, positives=2, patients=20, n_test=5)
    with pytest.raises(ConfigError, match="positives"):
        write_isic2024_scale(tmp_path, n=100, positives=0, patients=5, n_test=5)
    assert not any(tmp_path.iterdir())


def test_build_hdf5_cycles_the_distinct_crops_under_sequential_ids(tmp_path):
    info = build_hdf5(tmp_path / "x.hdf5", 25, 4)
    assert info["n"] == 25 and info["distinct"] == 4
    with h5py.File(tmp_path / "x.hdf5") as f:
        assert sorted(f.keys()) == [f"ISIC_{i:07d}" for i in range(25)]
        assert f["ISIC_0000005"][()] == f["ISIC_0000001"][()] != f["ISIC_0000002"][()]
        _decode(f["ISIC_0000024"][()])
