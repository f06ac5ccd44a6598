import h5py
import numpy as np
import pandas as pd
import pytest

from foldstack.config import load_competition
from foldstack.data.metadata import feature_columns
from foldstack.metrics import pauc
from foldstack.synth.generate import generate
from foldstack.synth.isic2024 import metadata_frame
from foldstack.synth.lesions import make_lesions, make_patients
from tests.conftest import tiny_config


def test_isic2024_files_have_the_real_schema(tiny_isic2024, fixture_dir):
    cfg, data = tiny_isic2024
    train = pd.read_csv(data / "train-metadata.csv")
    test = pd.read_csv(data / "test-metadata.csv")
    real_test = pd.read_csv(fixture_dir / "test-metadata.csv")
    assert list(train.columns) == cfg.table.train_columns and train.shape[1] == 55
    assert list(test.columns) == list(real_test.columns) and test.shape[1] == 44
    for col in real_test.columns:  # same dtypes as pandas reads from the real file
        assert test[col].dtype == real_test[col].dtype, col
    assert set(train["target"].unique()) == {0, 1}
    sub = pd.read_csv(data / "sample_submission.csv")
    assert list(sub.columns) == ["isic_id", "target"] and sub["isic_id"].tolist() == test["isic_id"].tolist()
    labels = pd.read_csv(data / "test-labels.csv")
    assert set(labels["isic_id"]) == set(test["isic_id"]) and "target" not in test.columns


def test_hdf5_images_are_stored_like_the_real_file(tiny_isic2024, fixture_dir):
    _, data = tiny_isic2024
    with h5py.File(fixture_dir / "test-image.hdf5") as real, h5py.File(data / "train-image.hdf5") as ours:
        real_ds = real[next(iter(real.keys()))]
        ds = ours[next(iter(ours.keys()))]
        assert ds.shape == real_ds.shape == ()
        assert ds.dtype.kind == real_ds.dtype.kind == "S"
        assert bytes(ds[()])[:3] == b"\xff\xd8\xff"  # JPEG
        ids = set(pd.read_csv(data / "train-metadata.csv")["isic_id"])
        assert set(ours.keys()) == ids


def test_patients_and_ids_are_disjoint_between_train_and_test(tiny_isic2024):
    _, data = tiny_isic2024
    train, test = pd.read_csv(data / "train-metadata.csv"), pd.read_csv(data / "test-metadata.csv")
    assert not set(train["patient_id"]) & set(test["patient_id"])
    assert not set(train["isic_id"]) & set(test["isic_id"])
    assert train["isic_id"].is_unique and test["isic_id"].is_unique


def test_generation_is_deterministic(tmp_path):
    cfg = tiny_config(
        "isic2024", tmp_path / "runs", "synthetic.n_train_patients=6 synthetic.n_test_patients=2"
    )
    generate(cfg, tmp_path / "a", workers=1)
    generate(cfg, tmp_path / "b", workers=2)  # same bytes whatever the number of processes
    for name in ("train-metadata.csv", "test-metadata.csv", "test-labels.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    with h5py.File(tmp_path / "a/train-image.hdf5") as a, h5py.File(tmp_path / "b/train-image.hdf5") as b:
        assert all(a[k][()] == b[k][()] for k in a)
    other = tiny_config(
        "isic2024",
        tmp_path / "runs",
        "synthetic.n_train_patients=6 synthetic.n_test_patients=2 synthetic.seed=1",
    )
    generate(other, tmp_path / "c", workers=1)
    assert (tmp_path / "a/train-metadata.csv").read_bytes() != (
        tmp_path / "c/train-metadata.csv"
    ).read_bytes()


@pytest.fixture(scope="module")
def default_tables():
    """Metadata of the default-size synthetic competition (no images: fast)."""
    cfg = load_competition("isic2024")
    rng = np.random.default_rng(cfg.synthetic.seed)
    les = make_lesions(
        cfg.synthetic, rng, make_patients(cfg.synthetic, rng, cfg.synthetic.n_train_patients, set())
    )
    ids = [f"ISIC_{i:07d}" for i in range(len(les))]
    return cfg, les, metadata_frame(cfg, les, ids, rng, set())


def test_default_size_is_realistic(default_tables):
    _cfg, _les, meta = default_tables
    assert 0.01 <= meta["target"].mean() <= 0.02
    counts = meta["patient_id"].value_counts()
    assert counts.max() >= 80 and counts.median() >= 10  # patients with many lesions
    missing = meta.isna().mean()
    for col in ("age_approx", "sex", "anatom_site_general"):
        assert 0 < missing[col] < 0.1, col
    assert missing["lesion_id"] > 0.8 and meta.loc[meta["target"] == 1, "lesion_id"].notna().all()
    assert (meta.loc[meta["target"] == 1, "iddx_1"] == "Malignant").all()


def _lr_pauc(X: pd.DataFrame, y: np.ndarray, groups: pd.Series) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    X = X.fillna(X.median())
    X = (X - X.mean()) / (X.std() + 1e-9)
    oof = np.zeros(len(y))
    for tr, va in GroupKFold(4).split(X, y, groups):
        oof[va] = (
            LogisticRegression(C=0.1, max_iter=2000).fit(X.iloc[tr], y[tr]).decision_function(X.iloc[va])
        )
    return pauc(y, oof)


def test_tabular_and_patient_relative_cues_are_learnable(default_tables):
    """The table predicts malignancy, and normalising within the patient adds signal on top."""
    cfg, _les, meta = default_tables
    num = [c for c in feature_columns(cfg) if cfg.table.columns[c] in ("int", "float")]
    y, groups = meta["target"].to_numpy(), meta["patient_id"]
    raw = _lr_pauc(meta[num], y, groups)
    z = meta.groupby("patient_id")[num].transform(lambda s: (s - s.mean()) / (s.std() + 1e-6))
    both = _lr_pauc(pd.concat([meta[num], z.add_suffix("_pz")], axis=1), y, groups)
    assert raw > 0.06, raw  # well above the 0.02 of a constant prediction
    assert both > raw + 0.01, (raw, both)


def test_image_only_cue_is_not_in_the_table(default_tables):
    cfg, les, meta = default_tables
    num = [c for c in feature_columns(cfg) if cfg.table.columns[c] in ("int", "float")]
    corr = meta[num].corrwith(les["cue_image"].astype(float)).abs()
    pos = les["target"] == 1
    corr_target = meta[num].corrwith(pos.astype(float)).abs()
    # the image cue is drawn independently of the table given the label
    within_pos = meta.loc[pos, num].corrwith(les.loc[pos, "cue_image"].astype(float)).abs()
    assert corr.max() < corr_target.max()
    assert within_pos.max() < 0.35


def test_isic2020_layout(tiny_isic2020):
    _cfg, data = tiny_isic2020
    train, test = pd.read_csv(data / "train.csv"), pd.read_csv(data / "test.csv")
    assert list(train.columns) == [
        "image_name",
        "patient_id",
        "sex",
        "age_approx",
        "anatom_site_general_challenge",
        "diagnosis",
        "benign_malignant",
        "target",
    ]
    assert list(test.columns) == [
        "image_name",
        "patient_id",
        "sex",
        "age_approx",
        "anatom_site_general_challenge",
    ]
    assert all((data / "jpeg/train" / f"{i}.jpg").is_file() for i in train["image_name"])
    assert all((data / "jpeg/test" / f"{i}.jpg").is_file() for i in test["image_name"])
    assert (train["benign_malignant"] == np.where(train["target"] == 1, "malignant", "benign")).all()
