"""Image stores: the real HDF5 fixture, tiny HDF5 files written like it, the ISIC 2020 JPEG folder and
the two HAM10000 train folders."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import re
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from foldstack.config import load_competition
from foldstack.data.images import HDF5Images, JpegDirImages, check_ids, open_images
from foldstack.errors import DataError

FIXTURE = Path("/work/shared/fixtures/isic2024-public-test")
if not FIXTURE.is_dir():
    FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "isic2024-public-test"
FIXTURE_IDS = ["ISIC_0015657", "ISIC_0015729", "ISIC_0015740"]
CFG = load_competition("isic2024")


def jpeg(h: int = 24, w: int = 32, bgr: tuple[int, int, int] | None = None, seed: int = 0) -> bytes:
    """JPEG bytes of a random (or one-colour, given in BGR) image."""
    if bgr is None:
        img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    else:
        img = np.full((h, w, 3), bgr, dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


def write_hdf5(path: Path, images: dict[str, bytes]) -> Path:
    """Written like the real file: one root-level scalar |S<n> dataset of JPEG bytes per id."""
    with h5py.File(path, "w") as f:
        for image_id, data in images.items():
            f.create_dataset(image_id, data=np.bytes_(data))
    return path


def read_shape(store: HDF5Images, image_id: str) -> tuple[int, ...]:
    """Run in a child process."""
    return store.read(image_id).shape


# ----------------------------------------------------------------------------- the real fixture
def test_fixture_images_read_as_rgb() -> None:
    store = open_images(CFG, FIXTURE, "test")
    assert isinstance(store, HDF5Images)
    assert len(store) == 3 and sorted(store.ids()) == FIXTURE_IDS
    assert "ISIC_0015657" in store and "ISIC_0000000" not in store
    for image_id in FIXTURE_IDS:
        img = store.read(image_id)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        assert 119 <= img.shape[0] <= 141 and 119 <= img.shape[1] <= 141
        assert store.read_bytes(image_id)[:2] == b"\xff\xd8"  # JPEG start-of-image marker


def test_written_file_matches_real_format(tmp_path: Path) -> None:
    path = write_hdf5(tmp_path / "x.hdf5", {"ISIC_1": jpeg()})
    with h5py.File(path) as mine, h5py.File(FIXTURE / "test-image.hdf5") as real:
        a, b = mine["ISIC_1"], real[FIXTURE_IDS[0]]
        assert a.shape == b.shape == () and a.dtype.kind == b.dtype.kind == "S"


def test_channels_are_rgb(tmp_path: Path) -> None:
    store = HDF5Images(write_hdf5(tmp_path / "x.hdf5", {"red": jpeg(bgr=(0, 0, 255))}))
    r, g, b = store.read("red")[8, 8].astype(int)
    assert r > 240 and g < 15 and b < 15


# ----------------------------------------------------------------------------- errors
def test_missing_id_names_id_and_file(tmp_path: Path) -> None:
    store = HDF5Images(write_hdf5(tmp_path / "train-image.hdf5", {"ISIC_1": jpeg()}))
    with pytest.raises(DataError, match=r"no image for id ISIC_x in .*train-image\.hdf5"):
        store.read("ISIC_x")


def test_corrupt_bytes_name_id_and_file(tmp_path: Path) -> None:
    store = HDF5Images(write_hdf5(tmp_path / "x.hdf5", {"ISIC_ok": jpeg(), "ISIC_bad": b"not a jpeg"}))
    assert store.read("ISIC_ok").shape == (24, 32, 3)
    with pytest.raises(DataError, match=r"ISIC_bad in .*x\.hdf5 cannot be decoded"):
        store.read("ISIC_bad")


def test_missing_file_names_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.hdf5: the HDF5 image file does not exist"):
        HDF5Images(tmp_path / "nope.hdf5")


def test_not_an_hdf5_file(tmp_path: Path) -> None:
    (tmp_path / "x.hdf5").write_text("hello")
    with pytest.raises(DataError, match=r"x\.hdf5: not a readable HDF5 file"):
        len(HDF5Images(tmp_path / "x.hdf5"))


def test_check_ids_lists_missing_and_counts(tmp_path: Path) -> None:
    store = HDF5Images(write_hdf5(tmp_path / "x.hdf5", {"ISIC_1": jpeg()}))
    check_ids(store, ["ISIC_1"])
    wanted = ["ISIC_1"] + [f"ISIC_m{i:02d}" for i in range(12)]
    with pytest.raises(DataError, match=r"12 id\(s\) have no image in .*x\.hdf5: ISIC_m00, ") as e:
        check_ids(store, wanted)
    assert "ISIC_m09" in str(e.value) and "ISIC_m10" not in str(e.value)


# ----------------------------------------------------------------------------- processes
def test_pickles_without_the_handle(tmp_path: Path) -> None:
    store = HDF5Images(write_hdf5(tmp_path / "x.hdf5", {"ISIC_1": jpeg()}))
    store.read("ISIC_1")  # opens the handle
    copy = pickle.loads(pickle.dumps(store))
    assert copy._h5 is None
    assert copy.read("ISIC_1").shape == (24, 32, 3)
    assert store.read("ISIC_1").shape == (24, 32, 3)


@pytest.mark.parametrize("method", [m for m in ("fork", "spawn") if m in mp.get_all_start_methods()])
def test_reads_in_child_process(tmp_path: Path, method: str) -> None:
    store = HDF5Images(write_hdf5(tmp_path / "x.hdf5", {"ISIC_1": jpeg(), "ISIC_2": jpeg(40, 20)}))
    store.read("ISIC_1")  # the parent holds an open handle; a forked child must open its own
    with mp.get_context(method).Pool(2) as pool:
        shapes = pool.starmap(read_shape, [(store, "ISIC_1"), (store, "ISIC_2")])
    assert shapes == [(24, 32, 3), (40, 20, 3)]
    assert store.read("ISIC_2").shape == (40, 20, 3)


# ----------------------------------------------------------------------------- ISIC 2020 JPEG folder
def test_jpeg_dir_isic2020_layout(tmp_path: Path) -> None:
    cfg = load_competition("isic2020")
    folder = tmp_path / "jpeg" / "train"
    folder.mkdir(parents=True)
    for i, name in enumerate(["ISIC_0000002", "ISIC_0000001"]):
        (folder / f"{name}.jpg").write_bytes(jpeg(30 + i, 20, seed=i))
    (folder / "notes.txt").write_text("not an image")
    store = open_images(cfg, tmp_path, "train")
    assert isinstance(store, JpegDirImages)
    assert store.ids() == ["ISIC_0000001", "ISIC_0000002"] and len(store) == 2
    assert "ISIC_0000001" in store and "notes" not in store
    assert store.read("ISIC_0000002").shape == (30, 20, 3)
    assert pickle.loads(pickle.dumps(store)).read("ISIC_0000001").shape == (31, 20, 3)
    with pytest.raises(DataError, match=r"no image for id ISIC_9 in .*jpeg/train"):
        store.read("ISIC_9")
    with pytest.raises(DataError, match=r"jpeg/test: the image folder does not exist"):
        open_images(cfg, tmp_path, "test")


# ----------------------------------------------------------------------------- several folders (HAM10000)
def two_folders(root: Path, first: list[str], second: list[str]) -> tuple[Path, Path]:
    a, b = root / "part_1", root / "part_2"
    for folder, ids in ((a, first), (b, second)):
        folder.mkdir(parents=True, exist_ok=True)
        for i, image_id in enumerate(ids):
            (folder / f"{image_id}.jpg").write_bytes(jpeg(20 + i, 30, seed=i))
    return a, b


def test_jpeg_dirs_look_up_ids_in_every_folder(tmp_path: Path) -> None:
    a, b = two_folders(tmp_path, ["ISIC_1", "ISIC_3"], ["ISIC_2"])
    store = JpegDirImages([a, b])
    assert store.ids() == ["ISIC_1", "ISIC_2", "ISIC_3"] and len(store) == 3
    assert "ISIC_2" in store and "ISIC_4" not in store
    assert store.read("ISIC_2").shape == (20, 30, 3)  # found in the second folder
    assert store.read_bytes("ISIC_3")[:2] == b"\xff\xd8"
    assert {f.name: ids for f, ids in store.ids_per_folder().items()} == {
        "part_1": ["ISIC_1", "ISIC_3"],
        "part_2": ["ISIC_2"],
    }
    copy = pickle.loads(pickle.dumps(store))
    assert copy.read("ISIC_2").shape == (20, 30, 3) and copy.folders == store.folders


def test_jpeg_dirs_missing_id_names_every_folder(tmp_path: Path) -> None:
    a, b = two_folders(tmp_path, ["ISIC_1"], ["ISIC_2"])
    store = JpegDirImages([a, b])
    with pytest.raises(DataError, match=r"no image for id ISIC_9 in .*part_1, .*part_2 \(expected ") as e:
        store.read("ISIC_9")
    assert str(a / "ISIC_9.jpg") in str(e.value) and str(b / "ISIC_9.jpg") in str(e.value)
    with pytest.raises(DataError, match=r"1 id\(s\) have no image in .*part_1, .*part_2: ISIC_9"):
        check_ids(store, ["ISIC_1", "ISIC_2", "ISIC_9"])


def test_jpeg_dirs_refuse_an_id_in_two_folders(tmp_path: Path) -> None:
    a, b = two_folders(tmp_path, ["ISIC_1", "ISIC_2"], ["ISIC_2"])
    store = JpegDirImages([a, b])
    both = re.escape(f"{a / 'ISIC_2.jpg'}, {b / 'ISIC_2.jpg'}")
    with pytest.raises(DataError, match=rf"id ISIC_2 has an image in more than one folder: {both}"):
        store.read("ISIC_2")
    with pytest.raises(DataError, match=rf"id ISIC_2 has an image in more than one folder: {both}"):
        store.ids()
    assert store.read("ISIC_1").shape == (20, 30, 3)


def test_jpeg_dirs_missing_folder_is_named(tmp_path: Path) -> None:
    a, _ = two_folders(tmp_path, ["ISIC_1"], [])
    with pytest.raises(DataError, match=r"part_3: the image folder does not exist"):
        JpegDirImages([a, tmp_path / "part_3"])


def test_open_images_ham10000_layout(tmp_path: Path) -> None:
    cfg = load_competition("ham10000")
    first, second = cfg.images.paths("train")
    two_folders(tmp_path, ["ISIC_0024306"], ["ISIC_0029306"])
    (tmp_path / "part_1").rename(tmp_path / first)
    (tmp_path / "part_2").rename(tmp_path / second)
    store = open_images(cfg, tmp_path, "train")
    assert isinstance(store, JpegDirImages)
    assert store.folders == (tmp_path / first, tmp_path / second)
    assert store.ids() == ["ISIC_0024306", "ISIC_0029306"]
    with pytest.raises(DataError, match=r"HAM10000_test_images: the image folder does not exist"):
        open_images(cfg, tmp_path, "test")
