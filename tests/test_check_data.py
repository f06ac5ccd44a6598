"""check_data and pipelines/check_data.py on the real fixture folder and tiny complete folders."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest

from foldstack.config import load_competition
from foldstack.data.check import check_data

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path("/work/shared/fixtures/isic2024-public-test")
if not FIXTURE.is_dir():
    FIXTURE = ROOT.parent / "shared" / "fixtures" / "isic2024-public-test"
CFG = load_competition("isic2024")
CFG20 = load_competition("isic2020")


def jpeg(h: int, w: int, seed: int = 0) -> bytes:
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


def write_hdf5(path: Path, ids: list[str], bad: tuple[str, ...] = ()) -> None:
    """Like the real file: a root-level scalar |S<n> dataset of JPEG bytes per id."""
    with h5py.File(path, "w") as f:
        for i, image_id in enumerate(ids):
            data = b"garbage" if image_id in bad else jpeg(20 + i, 30 - i, seed=i)
            f.create_dataset(image_id, data=np.bytes_(data))


def isic2024_folder(folder: Path, n_train: int = 10) -> Path:
    """A complete tiny ISIC 2024 folder built from the fixture's real test rows."""
    folder.mkdir(parents=True, exist_ok=True)
    test = pd.read_csv(FIXTURE / "test-metadata.csv", dtype=str, keep_default_na=False)
    train = test.iloc[[i % 3 for i in range(n_train)]].reset_index(drop=True)
    train["isic_id"] = [f"ISIC_{9000000 + i}" for i in range(n_train)]
    train["patient_id"] = [f"IP_{i // 3:07d}" for i in range(n_train)]
    train["target"] = ["1" if i == 4 else "0" for i in range(n_train)]
    for col in CFG.table.train_only[1:]:
        train[col] = {"iddx_full": "Benign", "iddx_1": "Benign", "tbp_lv_dnn_lesion_confidence": "97.5"}.get(
            col, ""
        )
    train[CFG.table.train_columns].to_csv(folder / CFG.files.train, index=False)
    test.to_csv(folder / CFG.files.test, index=False)
    (folder / CFG.files.sample_submission).write_text(
        "isic_id,target\n" + "".join(f"{i},0.3\n" for i in test["isic_id"])
    )
    write_hdf5(folder / CFG.images.train, train["isic_id"].tolist())
    write_hdf5(folder / CFG.images.test, test["isic_id"].tolist())
    return folder


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "pipelines" / "check_data.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


# ----------------------------------------------------------------------------- the real fixture
def test_fixture_folder_is_ok_and_train_side_missing() -> None:
    report = check_data(CFG, FIXTURE)
    text = report.format()
    assert report.ok, text
    assert "train metadata: missing" in text and "train images: missing" in text
    assert "test metadata: test-metadata.csv: 3 rows, 3 patients" in text
    assert "test images: test-image.hdf5: 3 images, 3 checked (3 JPEG): H 119-141 px" in text
    assert text.rstrip().endswith("OK")


# ----------------------------------------------------------------------------- tiny folders
def test_complete_folder(tmp_path: Path) -> None:
    report = check_data(CFG, isic2024_folder(tmp_path))
    text = report.format()
    assert report.ok, text
    assert "train metadata: train-metadata.csv: 10 rows, 1 positives (10.000%), 4 patients" in text
    assert "missing values: lesion_id=10, iddx_2=10," in text
    assert "train images: train-image.hdf5: 10 images, 10 checked (10 JPEG): H 20-29 px" in text
    assert "missing" not in text.replace("missing values", "")


def test_id_without_image_is_a_problem(tmp_path: Path) -> None:
    folder = isic2024_folder(tmp_path)
    write_hdf5(folder / CFG.images.train, [f"ISIC_{9000000 + i}" for i in range(9)])
    report = check_data(CFG, folder)
    assert not report.ok
    assert any("ISIC_9000009" in p and "1 id(s) have no image" in p for p in report.problems)


def test_corrupt_image_is_a_problem(tmp_path: Path) -> None:
    folder = isic2024_folder(tmp_path)
    test_ids = ["ISIC_0015657", "ISIC_0015729", "ISIC_0015740"]
    write_hdf5(folder / CFG.images.test, test_ids, bad=("ISIC_0015729",))
    report = check_data(CFG, folder)
    assert not report.ok
    assert any("ISIC_0015729" in p and "cannot be decoded" in p for p in report.problems)


def test_submission_ids_must_match_test(tmp_path: Path) -> None:
    folder = isic2024_folder(tmp_path)
    (folder / CFG.files.sample_submission).write_text("isic_id,target\nISIC_0015657,0.3\nISIC_X,0.3\n")
    report = check_data(CFG, folder)
    assert not report.ok
    assert any("ISIC_X" in p and "ISIC_0015729" in p for p in report.problems)


def test_bad_metadata_is_a_problem_and_the_rest_is_still_checked(tmp_path: Path) -> None:
    folder = isic2024_folder(tmp_path)
    train = pd.read_csv(folder / CFG.files.train, dtype=str, keep_default_na=False)
    train.loc[2, "age_approx"] = "forty"
    train.to_csv(folder / CFG.files.train, index=False)
    report = check_data(CFG, folder)
    assert len(report.problems) == 1 and "age_approx" in report.problems[0]
    assert "ISIC_9000002" in report.problems[0]
    assert any(line.startswith("train images: ") for line in report.lines)


def test_missing_or_empty_folder_is_a_problem(tmp_path: Path) -> None:
    assert not check_data(CFG, tmp_path / "nope").ok
    report = check_data(CFG, tmp_path)
    assert not report.ok and "holds none of the isic2024 files" in report.problems[0]


def test_isic2020_jpeg_layout(tmp_path: Path) -> None:
    rows = [
        ["ISIC_0000001", "IP_1", "male", "45.0", "torso", "nevus", "benign", "0"],
        ["ISIC_0000002", "IP_1", "male", "45.0", "head/neck", "melanoma", "malignant", "1"],
        ["ISIC_0000003", "IP_2", "", "", "", "unknown", "benign", "0"],
    ]
    pd.DataFrame(rows, columns=CFG20.table.train_columns).to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "jpeg" / "train").mkdir(parents=True)
    for i, row in enumerate(rows):
        (tmp_path / "jpeg" / "train" / f"{row[0]}.jpg").write_bytes(jpeg(16 + i, 16, seed=i))
    report = check_data(CFG20, tmp_path)
    text = report.format()
    assert report.ok, text
    assert "3 rows, 1 positives (33.333%), 2 patients" in text
    assert "missing values: sex=1, age_approx=1, anatom_site_general_challenge=1" in text
    assert (
        "train images: train: 3 images, 3 checked (3 JPEG): H 16-18 px (median 17), W 16-16 px (median 16)"
        in text
    )


# ----------------------------------------------------------------------------- the entry point
@pytest.mark.slow
def test_cli_ok_on_fixture() -> None:
    result = run_cli("--comp", "isic2024", "--data", str(FIXTURE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout and "train metadata: missing" in result.stdout


@pytest.mark.parametrize("case", ["missing column", "no folder"])
@pytest.mark.slow
def test_cli_fails_readably_on_broken_folder(tmp_path: Path, case: str) -> None:
    folder = tmp_path / "data"
    if case == "missing column":
        folder.mkdir()
        test = pd.read_csv(FIXTURE / "test-metadata.csv", dtype=str).drop(columns=["sex"])
        test.to_csv(folder / CFG.files.test, index=False)
    result = run_cli("--data", str(folder), "--set", "folds.k=3")
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "Traceback" not in out and "FAILED" in result.stdout
    assert ("sex" if case == "missing column" else "does not exist") in result.stdout


@pytest.mark.slow
def test_cli_unknown_override_is_readable() -> None:
    result = run_cli("--data", str(FIXTURE), "--set", "folds.kk=3")
    assert result.returncode == 2
    assert "unknown config key 'folds.kk'" in result.stderr and "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- HAM10000 (multiclass)
HAM = load_competition("ham10000")
HAM_ROWS = [  # lesion_id, image_id, dx, dx_type, age, sex, localization
    ["HAM_0000118", "ISIC_0027419", "bkl", "histo", "80.0", "male", "scalp"],
    ["HAM_0000118", "ISIC_0025030", "bkl", "histo", "80.0", "male", "scalp"],
    ["HAM_0002730", "ISIC_0026769", "nv", "follow_up", "", "female", "back"],
    ["HAM_0001466", "ISIC_0031633", "mel", "histo", "75.0", "male", "ear"],
    ["HAM_0002761", "ISIC_0029068", "nv", "consensus", "60.0", "unknown", "face"],
]


def ham10000_folder(folder: Path) -> Path:
    """A complete tiny HAM10000 folder: 5 train images over the two part folders, 2 test images."""
    pd.DataFrame(HAM_ROWS, columns=HAM.table.train_columns).to_csv(folder / HAM.files.train, index=False)
    test = pd.DataFrame(
        [
            ["HAM_0009999", "ISIC_0034524", "50.0", "female", "trunk"],
            ["HAM_0009998", "ISIC_0034525", "", "", ""],
        ],
        columns=HAM.table.test_columns,
    )
    test.to_csv(folder / HAM.files.test, index=False)
    sample = pd.DataFrame({"image_id": test["image_id"]} | {c: 1 / 7 for c in HAM.classes})
    sample.to_csv(folder / HAM.files.sample_submission, index=False)
    part_1, part_2 = (folder / p for p in HAM.images.paths("train"))
    test_dir = folder / HAM.images.paths("test")[0]
    for d in (part_1, part_2, test_dir):
        d.mkdir(parents=True)
    for i, row in enumerate(HAM_ROWS):
        ((part_1 if i < 3 else part_2) / f"{row[1]}.jpg").write_bytes(jpeg(45, 60, seed=i))
    for i, image_id in enumerate(test["image_id"]):
        (test_dir / f"{image_id}.jpg").write_bytes(jpeg(45, 60, seed=10 + i))
    return folder


def test_ham10000_counts_per_class_and_lists_both_folders(tmp_path: Path) -> None:
    report = check_data(HAM, ham10000_folder(tmp_path))
    text = report.format()
    assert report.ok, text
    assert (
        "train metadata: HAM10000_metadata.csv: 5 rows, nv 2, mel 1, bkl 2, bcc 0, akiec 0, vasc 0, df 0, "
        "4 lesion_id groups" in text
    )
    assert "positives" not in text and "patients" not in text
    assert "test metadata: HAM10000_test_metadata.csv: 2 rows, 2 lesion_id groups" in text
    assert (
        "train images: HAM10000_images_part_1 + HAM10000_images_part_2: 5 images "
        "(HAM10000_images_part_1 3, HAM10000_images_part_2 2), 5 checked (5 JPEG): H 45-45 px" in text
    )
    assert "test images: HAM10000_test_images: 2 images" in text


def test_ham10000_missing_part_folder_is_a_problem(tmp_path: Path) -> None:
    folder = ham10000_folder(tmp_path)
    shutil.rmtree(folder / "HAM10000_images_part_2")
    report = check_data(HAM, folder)
    assert not report.ok
    assert any(
        "1 of the 2 image folders are missing" in p and "HAM10000_images_part_2" in p for p in report.problems
    )
    assert any(line.startswith("test images: HAM10000_test_images: 2 images") for line in report.lines)
    for name in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        shutil.rmtree(folder / name, ignore_errors=True)
    report = check_data(HAM, folder)
    assert report.ok, report.format()
    assert any(
        "train images: missing" in line
        and "HAM10000_images_part_1" in line
        and "HAM10000_images_part_2" in line
        for line in report.lines
    )


def test_ham10000_id_in_both_folders_is_a_problem(tmp_path: Path) -> None:
    folder = ham10000_folder(tmp_path)
    shutil.copy(folder / "HAM10000_images_part_1/ISIC_0027419.jpg", folder / "HAM10000_images_part_2")
    report = check_data(HAM, folder)
    assert not report.ok
    assert any("ISIC_0027419 has an image in more than one folder" in p for p in report.problems)


def test_ham10000_sample_submission_needs_a_column_per_class(tmp_path: Path) -> None:
    folder = ham10000_folder(tmp_path)
    (folder / HAM.files.sample_submission).write_text("image_id,dx\nISIC_0034524,0.5\nISIC_0034525,0.5\n")
    report = check_data(HAM, folder)
    assert not report.ok
    assert any("expected the header image_id,nv,mel,bkl,bcc,akiec,vasc,df" in p for p in report.problems)


# ----------------------------------------------------------------------------- every image is checked
def png(h: int, w: int, seed: int = 0) -> bytes:
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return cv2.imencode(".png", img)[1].tobytes()


def _bad_bytes(kind: str) -> tuple[bytes, str]:
    full = jpeg(64, 64, seed=3)
    return {
        "empty": (b"", "0 bytes"),
        "not jpeg": (
            b"GIF89a" + b"x" * 200,
            "not a JPEG or PNG, cannot be decoded (206 bytes starting 47 49",
        ),
        "truncated": (full[: len(full) // 2], "truncated JPEG: no end-of-image marker FFD9"),
        "truncated png": (png(20, 20)[:-20], "truncated PNG: no IEND chunk"),
        "bad header": (b"\xff\xd8\xff" + bytes(300) + b"\xff\xd9", "JPEG that cannot be decoded (305 bytes)"),
    }[kind]


@pytest.mark.parametrize("kind", ["empty", "not jpeg", "truncated", "truncated png", "bad header"])
def test_bad_image_in_hdf5_is_a_problem_naming_id_and_file(tmp_path: Path, kind: str) -> None:
    folder = isic2024_folder(tmp_path)
    data, what = _bad_bytes(kind)
    test_ids = ["ISIC_0015657", "ISIC_0015729", "ISIC_0015740"]
    with h5py.File(folder / CFG.images.test, "w") as f:
        for i, image_id in enumerate(test_ids):
            f.create_dataset(image_id, data=np.bytes_(data if i == 1 else jpeg(30, 40, seed=i)))
    report = check_data(CFG, folder, workers=1)
    assert len(report.problems) == 1, report.format()
    assert report.problems[0].startswith(f"test image ISIC_0015729 in {folder / CFG.images.test}: {what}")
    line = next(x for x in report.lines if x.startswith("test images: "))
    assert "3 checked" in line and ", 1 bad" in line and "H 30-30 px" in line


@pytest.mark.parametrize("kind", ["empty", "not jpeg", "truncated"])
def test_bad_jpeg_file_is_a_problem_naming_id_and_file(tmp_path: Path, kind: str) -> None:
    rows = [["ISIC_0000001", "IP_1", "male", "45.0", "torso", "nevus", "benign", "0"]]
    rows += [[f"ISIC_000000{i}", "IP_2", "", "", "", "unknown", "benign", "0"] for i in (2, 3)]
    pd.DataFrame(rows, columns=CFG20.table.train_columns).to_csv(tmp_path / "train.csv", index=False)
    folder = tmp_path / "jpeg" / "train"
    folder.mkdir(parents=True)
    for i, row in enumerate(rows):
        (folder / f"{row[0]}.jpg").write_bytes(jpeg(16, 16, seed=i))
    data, what = _bad_bytes(kind)
    (folder / "ISIC_0000002.jpg").write_bytes(data)
    report = check_data(CFG20, tmp_path, workers=1)
    assert len(report.problems) == 1, report.format()
    assert report.problems[0].startswith(f"train image ISIC_0000002 in {folder / 'ISIC_0000002.jpg'}: ")
    assert what in report.problems[0]


def test_png_images_are_accepted(tmp_path: Path) -> None:
    folder = isic2024_folder(tmp_path)
    test_ids = ["ISIC_0015657", "ISIC_0015729", "ISIC_0015740"]
    with h5py.File(folder / CFG.images.test, "w") as f:
        for i, image_id in enumerate(test_ids):
            f.create_dataset(image_id, data=np.bytes_(png(21, 33) if i else jpeg(30, 40)))
    report = check_data(CFG, folder, workers=1)
    assert report.ok, report.format()
    assert "3 checked (1 JPEG, 2 PNG): H 21-30 px (median 21), W 33-40 px (median 33)" in report.format()


def _bad_store(path: Path, n: int) -> Path:
    """An HDF5 of n images ISIC_9000000...: every third one (i % 3 == 1) bad in one of five ways.

    (HDF5 fixed-length strings drop trailing NUL bytes, so no bad kind ends with one.)"""
    kinds = ["empty", "not jpeg", "truncated", "truncated png", "bad header"]
    with h5py.File(path, "w") as f:
        for i in range(n):
            data = _bad_bytes(kinds[i % 5])[0] if i % 3 == 1 else jpeg(20 + i % 7, 30 + i % 5, seed=i)
            f.create_dataset(f"ISIC_{9000000 + i}", data=np.bytes_(data))
    return path


def _many_bad_folder(tmp_path: Path) -> Path:
    """A complete folder whose 25 train images include 8 bad ones."""
    folder = isic2024_folder(tmp_path, n_train=25)
    _bad_store(folder / CFG.images.train, 25)
    return folder


def test_many_bad_images_list_a_handful_and_count(tmp_path: Path) -> None:
    report = check_data(CFG, _many_bad_folder(tmp_path), workers=1)
    assert len(report.problems) == 6, report.format()
    assert report.problems[0].startswith("train image ISIC_9000001 in ")
    assert report.problems[0].endswith(
        ": not a JPEG or PNG, cannot be decoded (206 bytes starting 47 49 46 38 39 61 78 78)"
    )
    more = "ISIC_9000016, ISIC_9000019, ISIC_9000022"
    assert report.problems[5] == f"train images: 3 more bad image(s) (8 in all, of 25 checked): {more}"
    assert any("25 checked (" in line and ", 8 bad" in line for line in report.lines)


def test_parallel_check_gives_the_report_of_one_worker(tmp_path: Path, monkeypatch) -> None:
    from foldstack.data import image_check
    from foldstack.data.images import HDF5Images

    folder = _many_bad_folder(tmp_path)
    one = check_data(CFG, folder, workers=1).format()
    monkeypatch.setattr(image_check, "CHUNK", 3)  # 9 chunks over 2 processes, results in id order
    two = check_data(CFG, folder, workers=2).format()
    assert two == one and "8 bad" in one
    store = HDF5Images(_bad_store(tmp_path / "many.hdf5", 200))
    a = image_check.scan_images(store, store.ids(), workers=1, chunk=7)
    b = image_check.scan_images(store, store.ids(), workers=2, chunk=7)
    assert (a.bad, a.heights, a.widths, a.formats) == (b.bad, b.heights, b.widths, b.formats)
    assert len(a.bad) == 67 and a.checked == b.checked == 200 and len(a.heights) == 133


def test_progress_lines_when_not_a_terminal(tmp_path: Path, capsys) -> None:
    from foldstack.data.image_check import scan_images
    from foldstack.data.images import HDF5Images

    store = HDF5Images(_bad_store(tmp_path / "many.hdf5", 40))
    scan_images(store, store.ids(), workers=1, label="train images", chunk=4)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 10 and err[0] == "train images: checked 4 of 40 (10%)"
    assert err[-1] == "train images: checked 40 of 40 (100%)"
    scan_images(store, store.ids(), workers=1, label="train images", chunk=3)  # 14 chunks: 10 lines
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 10 and err[0] == "train images: checked 6 of 40 (15%)"
    scan_images(store, store.ids(), workers=1, label="train images", chunk=4, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_cli_workers(tmp_path: Path) -> None:
    folder = _many_bad_folder(tmp_path)
    one, two = (run_cli("--data", str(folder), "--workers", w) for w in ("1", "2"))
    assert one.returncode == two.returncode == 1 and one.stdout == two.stdout
    assert "train image ISIC_9000001 in " in one.stdout and "Traceback" not in one.stderr
    bad = run_cli("--data", str(folder), "--workers", "-1")
    assert bad.returncode == 2 and "--workers must be 0" in bad.stderr
