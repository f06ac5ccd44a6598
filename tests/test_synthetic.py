import json

import h5py
import numpy as np
import pandas as pd
import pytest

from foldstack.config import load_competition
from foldstack.data.check import check_data
from foldstack.data.images import open_images
from foldstack.data.metadata import feature_columns
from foldstack.metrics import pauc
from foldstack.synth import ham10000
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


# ----------------------------------------------------------------------------- HAM10000
HAM_TINY = (
    "synthetic.n_train_patients=30 synthetic.n_test_patients=10 synthetic.img_min=48 synthetic.img_max=64"
)
SITES = {
    "back", "lower extremity", "trunk", "upper extremity", "abdomen", "face", "chest", "foot", "unknown",
    "neck", "scalp", "hand", "ear", "genital", "acral",
}  # fmt: skip


@pytest.fixture(scope="module")
def small_ham10000(tmp_path_factory):
    """(config, data dir) of a tiny synthetic HAM10000; treat the files as read-only."""
    cfg = load_competition("ham10000", HAM_TINY)
    data = tmp_path_factory.mktemp("ham10000") / "data"
    generate(cfg, data, workers=1)
    return cfg, data


def test_ham10000_files_have_the_published_layout(small_ham10000):
    cfg, data = small_ham10000
    train = pd.read_csv(data / "HAM10000_metadata.csv")
    test = pd.read_csv(data / "HAM10000_test_metadata.csv")
    labels = pd.read_csv(data / "test-labels.csv")
    sub = pd.read_csv(data / "sample_submission.csv")
    assert list(train.columns) == ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
    assert list(test.columns) == ["lesion_id", "image_id", "age", "sex", "localization"]
    assert list(labels.columns) == ["image_id", "lesion_id", "dx"]
    assert list(sub.columns) == ["image_id", "nv", "mel", "bkl", "bcc", "akiec", "vasc", "df"]
    assert sub["image_id"].tolist() == test["image_id"].tolist() == labels["image_id"].tolist()
    assert np.allclose(sub[list(cfg.classes)].to_numpy(), 1 / 7)
    assert train["lesion_id"].str.fullmatch(r"HAM_\d{7}").all()
    assert pd.concat([train, test])["image_id"].str.fullmatch(r"ISIC_\d{7}").all()
    summary = json.loads((data / "synthetic.json").read_text())
    assert (
        summary["train"]["per_class"] == train["dx"].value_counts().reindex(cfg.classes).fillna(0).to_dict()
    )
    assert summary["train"]["groups"] == train["lesion_id"].nunique() == 30
    assert (data / "synthetic-config.yaml").is_file()


def test_ham10000_values(small_ham10000):
    cfg, data = small_ham10000
    train = pd.read_csv(data / "HAM10000_metadata.csv")
    assert set(train["dx"]) == set(cfg.classes)  # a tiny split still has every class
    assert set(train["dx_type"]) <= {"histo", "follow_up", "consensus", "confocal"}
    assert (train.loc[train["dx"].isin(["mel", "bcc", "akiec"]), "dx_type"] == "histo").all()
    assert set(train["sex"]) <= {"male", "female", "unknown"}
    assert set(train["localization"]) <= SITES
    age = train["age"].dropna()
    assert (age % 5 == 0).all() and age.between(0, 85).all()


def test_ham10000_images_of_a_lesion_share_its_metadata(small_ham10000):
    _, data = small_ham10000
    train = pd.read_csv(data / "HAM10000_metadata.csv")
    per_lesion = train.groupby("lesion_id")[["dx", "dx_type", "age", "sex", "localization"]].nunique(
        dropna=False
    )
    assert (per_lesion == 1).all().all()
    n = train.groupby("lesion_id").size()
    assert n.max() > 1 and n.max() <= 6  # several images of some lesions


def test_ham10000_images_are_in_their_folders(small_ham10000):
    cfg, data = small_ham10000
    train = pd.read_csv(data / "HAM10000_metadata.csv")
    test = pd.read_csv(data / "HAM10000_test_metadata.csv")
    part_1, part_2 = ({p.stem for p in (data / d).iterdir()} for d in cfg.images.paths("train"))
    assert part_1 and part_2 and not part_1 & part_2
    assert part_1 | part_2 == set(train["image_id"])
    assert max(part_1) < min(part_2)  # split in id order, as in the published folders
    assert {p.stem for p in (data / "HAM10000_test_images").iterdir()} == set(test["image_id"])
    assert not set(train["image_id"]) & set(test["image_id"])
    assert not set(train["lesion_id"]) & set(test["lesion_id"])
    store = open_images(cfg, data, "train")
    for image_id in train["image_id"]:
        img = store.read(image_id)
        assert 48 <= img.shape[0] <= 64 and img.shape[1] == round(img.shape[0] * 4 / 3)


def test_ham10000_check_data_passes(small_ham10000):
    cfg, data = small_ham10000
    report = check_data(cfg, data, workers=1)
    assert report.ok, report.format()
    assert "lesion_id groups" in report.format()
    assert any(" checked (" in line and " JPEG)" in line for line in report.lines)


def test_ham10000_is_deterministic_whatever_the_workers(small_ham10000, tmp_path):
    cfg, data = small_ham10000
    generate(cfg, tmp_path / "b", workers=2)
    files = sorted(p.relative_to(data) for p in data.rglob("*") if p.is_file() and p.name != "synthetic.json")
    assert len(files) > 40
    assert files == sorted(
        p.relative_to(tmp_path / "b")
        for p in (tmp_path / "b").rglob("*")
        if p.is_file() and p.name != "synthetic.json"
    )
    for f in files:
        assert (data / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_ham10000_default_size_is_realistic():
    """The default split without images: class shares, images per lesion, site and age by diagnosis."""
    cfg = load_competition("ham10000")
    rng = np.random.default_rng(cfg.synthetic.seed)
    les = ham10000.make_lesions(cfg, rng, cfg.synthetic.n_train_patients, set())
    img = ham10000.make_images(les, rng, set())
    share = img["dx"].value_counts(normalize=True)
    real = {"nv": 0.67, "mel": 0.11, "bkl": 0.11, "bcc": 0.05, "akiec": 0.033, "vasc": 0.014, "df": 0.012}
    for dx, p in real.items():
        assert p * 0.7 < share[dx] < p * 1.3, (dx, share[dx])
    assert 1.25 < len(img) / len(les) < 1.45 and les["n_images"].between(1, 6).all()
    site = les.groupby("dx")["localization"].agg(lambda s: s.value_counts().index[0])
    assert site["df"] == "lower extremity" and site["akiec"] == "face"
    age = les.groupby("dx")["age"].mean()
    assert age["nv"] + 10 < age[["mel", "bkl", "bcc", "akiec"]].min()
    assert 0 < les["age"].isna().sum() < 0.03 * len(les) and (les["age"] == 0).any()


def test_ham10000_views_of_a_lesion_look_alike():
    """Two views of one lesion are closer in colour than lesions of two different looks."""
    from foldstack.data.images import decode_jpeg

    def mean_colour(look: str, lesion: int, view: int) -> np.ndarray:
        row = {"look": look, "strength": 0.8, "skin_L": 66.0, "skin_A": 14.0, "skin_B": 19.0}
        data = ham10000.render_jpeg(row, 64, (1, 0, lesion), (1, 0, lesion, view), 90)
        return decode_jpeg(data, "x", "memory")[16:48, 24:60].reshape(-1, 3).mean(0)

    same = np.abs(mean_colour("vasc", 1, 0) - mean_colour("vasc", 1, 1)).sum()
    other = np.abs(mean_colour("vasc", 1, 0) - mean_colour("nv", 2, 0)).sum()
    assert same < other / 2, (same, other)
