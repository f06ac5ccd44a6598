"""read_metadata / feature_columns / read_sample_submission on the real fixture and tiny edited copies."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from foldstack.config import load_competition
from foldstack.data.metadata import feature_columns, read_metadata, read_sample_submission
from foldstack.errors import DataError

FIXTURE = Path("/work/shared/fixtures/isic2024-public-test")
if not FIXTURE.is_dir():  # the fixtures live beside the checkout
    FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "isic2024-public-test"
CFG = load_competition("isic2024")

TRAIN_ONLY_VALUES = {
    "lesion_id": "",
    "iddx_full": "Benign",
    "iddx_1": "Benign",
    "iddx_2": "",
    "iddx_3": "",
    "iddx_4": "",
    "iddx_5": "",
    "mel_mitotic_index": "",
    "mel_thick_mm": "",
    "tbp_lv_dnn_lesion_confidence": "97.5",
}


def fixture_test() -> pd.DataFrame:
    """The real test-metadata.csv as raw text (every value exactly as in the file)."""
    return pd.read_csv(FIXTURE / "test-metadata.csv", dtype=str, keep_default_na=False)


def train_frame(n: int = 8, positives: tuple[int, ...] = (1,)) -> pd.DataFrame:
    """An ISIC 2024 style train table (55 columns) made from the fixture's test rows."""
    rows = fixture_test().iloc[[i % 3 for i in range(n)]].reset_index(drop=True)
    rows["isic_id"] = [f"ISIC_{9000000 + i}" for i in range(n)]
    rows["patient_id"] = [f"IP_{i // 2:07d}" for i in range(n)]
    rows["target"] = ["1" if i in positives else "0" for i in range(n)]
    for col, value in TRAIN_ONLY_VALUES.items():
        rows[col] = value
    return rows[CFG.table.train_columns]


def write(df: pd.DataFrame, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    df.to_csv(folder / name, index=False)
    return folder


# ----------------------------------------------------------------------------- the real fixture
def test_fixture_test_split_reads_as_it_is() -> None:
    df = read_metadata(CFG, FIXTURE, "test")
    assert df.shape == (3, 44)
    assert list(df.columns) == CFG.table.test_columns == list(fixture_test().columns)
    assert df["isic_id"].tolist() == ["ISIC_0015657", "ISIC_0015729", "ISIC_0015740"]
    assert pd.api.types.is_string_dtype(df["isic_id"])
    assert pd.api.types.is_string_dtype(df["sex"]) and pd.api.types.is_string_dtype(df["patient_id"])
    assert df["age_approx"].dtype == "float64"
    assert df["tbp_lv_symm_2axis_angle"].dtype == "int64"
    for col in CFG.table.of_type("float", split="test"):
        assert df[col].dtype == "float64", col


def test_fixture_sample_submission() -> None:
    sub = read_sample_submission(CFG, FIXTURE)
    assert list(sub.columns) == ["isic_id", "target"]
    assert len(sub) == 3


def test_train_split_reads(tmp_path: Path) -> None:
    df = read_metadata(CFG, write(train_frame(), tmp_path, CFG.files.train), "train")
    assert df.shape == (8, 55)
    assert list(df.columns) == CFG.table.train_columns
    assert df["target"].dtype == "int64" and df["target"].sum() == 1
    assert df["mel_thick_mm"].dtype == "float64" and df["mel_thick_mm"].isna().all()
    assert pd.api.types.is_string_dtype(df["iddx_full"])


def test_ids_keep_leading_zeros(tmp_path: Path) -> None:
    df = fixture_test()
    df["isic_id"] = ["0001", "0002", "0010"]
    out = read_metadata(CFG, write(df, tmp_path, CFG.files.test), "test")
    assert out["isic_id"].tolist() == ["0001", "0002", "0010"]


# ----------------------------------------------------------------------------- columns
def test_missing_column_is_named(tmp_path: Path) -> None:
    df = fixture_test().drop(columns=["tbp_lv_areaMM2", "sex"])
    with pytest.raises(DataError, match=r"test-metadata\.csv.*sex, tbp_lv_areaMM2"):
        read_metadata(CFG, write(df, tmp_path, CFG.files.test), "test")


def test_train_file_without_train_only_columns_fails(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="target"):
        read_metadata(CFG, write(fixture_test(), tmp_path, CFG.files.train), "train")


def test_unknown_extra_column_is_kept_and_ignored(tmp_path: Path) -> None:
    df = fixture_test()
    df.insert(3, "my_notes", ["a", "not a number", ""])
    out = read_metadata(CFG, write(df, tmp_path, CFG.files.test), "test")
    assert list(out.columns) == list(df.columns)
    assert "my_notes" not in feature_columns(CFG)


def test_train_only_column_in_test_is_ignored(tmp_path: Path) -> None:
    df = fixture_test()
    df["iddx_full"] = "Benign"
    df["mel_thick_mm"] = "thin"  # not checked: a train-only column is not read for test
    out = read_metadata(CFG, write(df, tmp_path, CFG.files.test), "test")
    assert len(out) == 3


# ----------------------------------------------------------------------------- values
def test_non_numeric_age_names_column_id_and_value(tmp_path: Path) -> None:
    df = fixture_test()
    df.loc[1, "age_approx"] = "forty"
    with pytest.raises(DataError, match=r"'age_approx'.*ISIC_0015729='forty'"):
        read_metadata(CFG, write(df, tmp_path, CFG.files.test), "test")


def test_int_column_with_missing_values_becomes_float(tmp_path: Path) -> None:
    df = fixture_test()
    df.loc[0, "tbp_lv_symm_2axis_angle"] = ""
    out = read_metadata(CFG, write(df, tmp_path, CFG.files.test), "test")
    assert out["tbp_lv_symm_2axis_angle"].dtype == "float64"
    assert out["tbp_lv_symm_2axis_angle"].isna().sum() == 1


def test_duplicate_ids_are_named(tmp_path: Path) -> None:
    df = fixture_test()
    df.loc[2, "isic_id"] = "ISIC_0015657"
    with pytest.raises(DataError, match="repeated ids: ISIC_0015657"):
        read_metadata(CFG, write(df, tmp_path, CFG.files.test), "test")


def test_missing_id_fails(tmp_path: Path) -> None:
    df = fixture_test()
    df.loc[1, "isic_id"] = ""
    with pytest.raises(DataError, match="'isic_id' is empty on data row"):
        read_metadata(CFG, write(df, tmp_path, CFG.files.test), "test")


def test_missing_group_names_the_row_id(tmp_path: Path) -> None:
    df = fixture_test()
    df.loc[2, "patient_id"] = ""
    with pytest.raises(DataError, match=r"'patient_id' is missing .* ISIC_0015740"):
        read_metadata(CFG, write(df, tmp_path, CFG.files.test), "test")


@pytest.mark.parametrize("bad", ["2", "", "0.5"])
def test_target_must_be_0_or_1(tmp_path: Path, bad: str) -> None:
    df = train_frame()
    df.loc[3, "target"] = bad
    with pytest.raises(DataError, match=r"'target' must be 0 or 1.*ISIC_9000003"):
        read_metadata(CFG, write(df, tmp_path, CFG.files.train), "train")


# ----------------------------------------------------------------------------- files
def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"train-metadata\.csv.*does not exist"):
        read_metadata(CFG, tmp_path, "train")


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / CFG.files.test).write_bytes(b"")
    with pytest.raises(DataError, match=r"test-metadata\.csv: the file is empty"):
        read_metadata(CFG, tmp_path, "test")


def test_header_only_file(tmp_path: Path) -> None:
    write(fixture_test().iloc[:0], tmp_path, CFG.files.test)
    with pytest.raises(DataError, match=r"test-metadata\.csv: the file has a header but no rows"):
        read_metadata(CFG, tmp_path, "test")


def test_sample_submission_wrong_header(tmp_path: Path) -> None:
    (tmp_path / CFG.files.sample_submission).write_text("id,prob\nISIC_1,0.5\n")
    with pytest.raises(DataError, match="expected the header isic_id,target, found id,prob"):
        read_sample_submission(CFG, tmp_path)


# ----------------------------------------------------------------------------- features
def test_feature_columns_never_leak() -> None:
    cols = feature_columns(CFG)
    assert not set(cols) & set(CFG.table.train_only)
    assert not {"isic_id", "patient_id", "target"} & set(cols)
    assert set(cols) <= set(CFG.table.test_columns)
    assert len(cols) == 42 and "age_approx" in cols and "sex" in cols
    assert feature_columns(load_competition("isic2020")) == [
        "sex",
        "age_approx",
        "anatom_site_general_challenge",
    ]
