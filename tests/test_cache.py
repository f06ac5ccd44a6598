"""The decode-once image cache: built once and reused, rebuilt when stale, never reused half built."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import albumentations as A
import cv2
import h5py
import numpy as np
import pytest

from foldstack.config import load_competition
from foldstack.data import cache as cache_mod
from foldstack.data import decode as decode_mod
from foldstack.data.cache import RULE, cache_dir, image_size, open_cache, split_ids
from foldstack.data.decode import decode_resized, reduce_factor
from foldstack.data.images import decode_jpeg, open_images
from foldstack.errors import DataError
from foldstack.stage1.config import load_oof_config
from tests.conftest import REPO, tiny_config

SIZE = 40  # the tiny crops are 48-64 px: decoded in full (r = 1) at 40 px


def jpeg(h: int, w: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 3)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


def copy_comp(comp: str, fixture: tuple, tmp_path: Path):
    """A private copy of a tiny competition (its data may be changed) with its own runs folder."""
    _, data = fixture
    shutil.copytree(data, tmp_path / "data")
    return tiny_config(comp, tmp_path / "runs"), tmp_path / "data"


@pytest.fixture
def isic24(tiny_isic2024, tmp_path):
    return copy_comp("isic2024", tiny_isic2024, tmp_path)


@pytest.fixture
def isic20(tiny_isic2020, tmp_path):
    return copy_comp("isic2020", tiny_isic2020, tmp_path)


def old_pipeline(data: bytes, size: int) -> np.ndarray:
    """What stage 1 does today: cv2 decode -> BGR2RGB -> A.Resize(size, size, INTER_AREA)."""
    img = decode_jpeg(data, "x", "here")
    return A.Resize(size, size, interpolation=cv2.INTER_AREA)(image=img)["image"]


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


# ---------------------------------------------------------------------------------------------- decoding
def test_reduce_factor_picks_the_largest_that_keeps_the_short_side():
    assert reduce_factor(130, 134, 128) == 1
    assert reduce_factor(2000, 3000, 128) == 8  # 2000 / 8 = 250
    assert reduce_factor(1000, 700, 128) == 4  # 700 / 8 = 87.5 < 128 <= 700 / 4
    assert reduce_factor(512, 600, 256) == 2
    assert reduce_factor(511, 600, 256) == 1


def test_large_jpeg_is_decoded_reduced_and_resized(monkeypatch):
    data = jpeg(1000, 700, seed=1)
    flags = []
    real = cv2.imdecode
    monkeypatch.setattr(decode_mod.cv2, "imdecode", lambda buf, flag: flags.append(flag) or real(buf, flag))
    out = decode_resized(data, "big", "here", 128)
    assert flags == [cv2.IMREAD_REDUCED_COLOR_4]
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    full = old_pipeline(data, 128)
    assert np.abs(out.astype(int) - full.astype(int)).mean() < 3  # the same picture, decoded cheaper


def test_small_crops_equal_the_old_pipeline(fixture_dir, tiny_isic2024):
    store = open_images(load_competition("isic2024"), fixture_dir, "test")  # real ~130 px ISIC 2024 crops
    cfg, data = tiny_isic2024
    tiny = open_images(cfg, data, "train")
    crops = [store.read_bytes(i) for i in store.ids()]
    for k, raw in enumerate(crops):  # 120-140 px at 128: decoded in full (r = 1), then the same resize
        assert np.array_equal(decode_resized(raw, str(k), "here", 128), old_pipeline(raw, 128)), k
        # at 48 px a 1/2-scale decode (>= 60 px) is resized instead: close, not equal
        diff = decode_resized(raw, str(k), "here", 48).astype(int) - old_pipeline(raw, 48).astype(int)
        assert 0 < np.abs(diff).mean() < 3, k
    for image_id in tiny.ids()[:5]:  # 48-64 px synthetic crops at 40 and 64 px
        raw = tiny.read_bytes(image_id)
        for size in (40, 64):
            assert np.array_equal(decode_resized(raw, image_id, "here", size), old_pipeline(raw, size))


def test_undecodable_bytes_name_id_and_source():
    with pytest.raises(DataError, match=r"id ISIC_1 in /x/train-image\.hdf5 cannot be decoded"):
        decode_resized(b"\xff\xd8\xff not really", "ISIC_1", "/x/train-image.hdf5", 32)


def test_image_size_from_config_else_timm():
    assert image_size(load_oof_config("isic2024", "effnetv2_b1")) == 128
    # tf_efficientnetv2_b1.in1k's pretrained input size
    assert image_size(load_oof_config("isic2024", "effnetv2_b1", "data.img_size=null")) == 192


# ---------------------------------------------------------------------------------------------- reuse
def test_built_once_then_reused(isic24, capsys):
    cfg, data = isic24
    ids = split_ids(cfg, data, "train")
    c1 = open_cache(cfg, data, "train", ids, SIZE, workers=0)
    assert c1.built and len(c1) == len(ids) and c1.ids == ids
    assert c1.path.parent == cache_dir(cfg) and c1.path.name.startswith(f"train_{SIZE}px_{RULE}_")
    assert c1.array.shape == (len(ids), SIZE, SIZE, 3) and c1.array.dtype == np.uint8
    assert not c1.array.flags.writeable
    store = open_images(cfg, data, "train")
    for i in (0, 7, len(ids) - 1):
        assert np.array_equal(c1.array[i], old_pipeline(store.read_bytes(ids[i]), SIZE))
    assert np.array_equal(np.load(c1.path, mmap_mode="r"), c1.array)
    assert c1.meta["content_sha256"] and c1.meta["size"] == SIZE and c1.meta["rule"] == RULE
    mtime = c1.path.stat().st_mtime_ns
    capsys.readouterr()
    c2 = open_cache(cfg, data, "train", ids, SIZE, workers=0)
    assert not c2.built and c2.path == c1.path and c2.path.stat().st_mtime_ns == mtime
    assert capsys.readouterr().err == ""  # nothing to say when it is reused
    # the same images in another order are another cache (rows follow the order asked for)
    back = open_cache(cfg, data, "train", ids[::-1], SIZE, workers=0)
    assert back.path != c1.path and np.array_equal(back.array[::-1], c1.array)


def test_parallel_build_equals_in_process(isic24, tmp_path):
    cfg, data = isic24
    ids = split_ids(cfg, data, "train")
    one = open_cache(cfg, data, "train", ids, SIZE, workers=0, progress=False)
    other = tiny_config("isic2024", tmp_path / "runs2")
    two = open_cache(other, data, "train", ids, SIZE, workers=2, progress=False)
    assert two.built and np.array_equal(one.array, two.array)
    assert one.meta["content_sha256"] == two.meta["content_sha256"]


def test_other_size_is_another_cache(isic24, capsys):
    cfg, data = isic24
    ids = split_ids(cfg, data, "test")
    small = open_cache(cfg, data, "test", ids, SIZE, workers=0)
    capsys.readouterr()
    big = open_cache(cfg, data, "test", ids, 48, workers=0)
    assert big.built and big.path != small.path and big.array.shape[1:] == (48, 48, 3)
    assert "other size" in capsys.readouterr().err
    assert not open_cache(cfg, data, "test", ids, SIZE, workers=0).built  # both kept


def rewrite_hdf5_image(path: Path, image_id: str, data: bytes) -> None:
    with h5py.File(path, "a") as f:
        del f[image_id]
        f.create_dataset(image_id, data=np.bytes_(data))


def test_changed_hdf5_image_rebuilds_touched_file_does_not(isic24, capsys):
    cfg, data = isic24
    ids = split_ids(cfg, data, "train")
    h5 = data / cfg.images.train
    first = open_cache(cfg, data, "train", ids, SIZE, workers=0)
    old_row = np.array(first.array[3])
    os.utime(h5, ns=(h5.stat().st_atime_ns, h5.stat().st_mtime_ns + 10**9))  # same bytes, new mtime
    capsys.readouterr()
    again = open_cache(cfg, data, "train", ids, SIZE, workers=0)
    assert not again.built and "images unchanged" in capsys.readouterr().err
    assert not open_cache(cfg, data, "train", ids, SIZE, workers=0).built  # the record's stat was updated
    new = jpeg(60, 50, seed=9)
    rewrite_hdf5_image(h5, ids[3], new)
    rebuilt = open_cache(cfg, data, "train", ids, SIZE, workers=0)
    assert rebuilt.built and "changed images" in capsys.readouterr().err
    assert np.array_equal(rebuilt.array[3], old_pipeline(new, SIZE))
    assert not np.array_equal(rebuilt.array[3], old_row)
    assert rebuilt.meta["content_sha256"] != first.meta["content_sha256"]


def test_changed_jpeg_in_folder_rebuilds_touched_file_does_not(isic20, capsys):
    cfg, data = isic20
    ids = split_ids(cfg, data, "train")
    first = open_cache(cfg, data, "train", ids, SIZE, workers=0)
    f = data / "jpeg" / "train" / f"{ids[5]}.jpg"
    f.write_bytes(f.read_bytes())  # rewritten with the same bytes: new mtime
    capsys.readouterr()
    assert not open_cache(cfg, data, "train", ids, SIZE, workers=0).built
    assert "images unchanged" in capsys.readouterr().err
    new = jpeg(70, 64, seed=5)
    f.write_bytes(new)
    rebuilt = open_cache(cfg, data, "train", ids, SIZE, workers=0)
    assert rebuilt.built and "changed images" in capsys.readouterr().err
    assert np.array_equal(rebuilt.array[5], old_pipeline(new, SIZE))
    assert np.array_equal(rebuilt.array[4], first.array[4])


def test_truncated_npy_is_rebuilt(isic24, capsys):
    cfg, data = isic24
    ids = split_ids(cfg, data, "test")
    first = open_cache(cfg, data, "test", ids, SIZE, workers=0)
    good = np.array(first.array)
    del first
    path = open_cache(cfg, data, "test", ids, SIZE, workers=0).path
    os.truncate(path, path.stat().st_size - 100)
    capsys.readouterr()
    again = open_cache(cfg, data, "test", ids, SIZE, workers=0)
    assert again.built and "truncated file" in capsys.readouterr().err
    assert np.array_equal(again.array, good)


def test_deleted_record_is_rebuilt(isic24, capsys):
    cfg, data = isic24
    ids = split_ids(cfg, data, "test")
    first = open_cache(cfg, data, "test", ids, SIZE, workers=0)
    first.path.with_suffix(".json").unlink()
    capsys.readouterr()
    again = open_cache(cfg, data, "test", ids, SIZE, workers=0)
    assert again.built and "record is missing" in capsys.readouterr().err


def test_older_format_is_rebuilt(isic24, capsys, monkeypatch):
    cfg, data = isic24
    ids = split_ids(cfg, data, "test")
    open_cache(cfg, data, "test", ids, SIZE, workers=0)
    monkeypatch.setattr(cache_mod, "FORMAT", cache_mod.FORMAT + 1)
    capsys.readouterr()
    assert open_cache(cfg, data, "test", ids, SIZE, workers=0).built
    assert "older format" in capsys.readouterr().err


KILLED = """
import sys
from foldstack.data.cache import open_cache, split_ids
from tests.conftest import tiny_config
from pathlib import Path
cfg, data = tiny_config("isic2024", Path(sys.argv[1])), Path(sys.argv[2])
open_cache(cfg, data, "test", split_ids(cfg, data, "test"), int(sys.argv[3]), workers=0, progress=False)
"""


@pytest.mark.parametrize("fault", ["atomic.before_rename", "cache.before_record"])
@pytest.mark.slow
def test_killed_build_is_never_reused(isic24, fault):
    cfg, data = isic24
    env = {**os.environ, "FOLDSTACK_FAULT": f"{fault}:1", "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    cmd = [sys.executable, "-c", KILLED, str(cfg.runs_dir), str(data), str(SIZE)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert run.returncode == -9, run.stderr
    left = files(cache_dir(cfg))
    if fault == "atomic.before_rename":  # the full array, never renamed: a temp file of a dead pid
        assert len(left) == 1 and left[0].startswith(f".test_{SIZE}px_") and ".pid" in left[0], left
    else:  # renamed, but no record
        assert len(left) == 1 and left[0].endswith(".npy"), left
    ids = split_ids(cfg, data, "test")
    c = open_cache(cfg, data, "test", ids, SIZE, workers=0)
    assert c.built
    assert files(cache_dir(cfg)) == sorted([c.path.name, c.path.with_suffix(".json").name])  # temp removed


# ---------------------------------------------------------------------------------------------- errors
def test_missing_id_names_the_id_and_leaves_nothing(isic24):
    cfg, data = isic24
    ids = [*split_ids(cfg, data, "train"), "ISIC_9999999"]
    with pytest.raises(DataError, match=r"ISIC_9999999") as e:
        open_cache(cfg, data, "train", ids, SIZE, workers=0)
    assert str(data / cfg.images.train) in str(e.value)
    assert not [p for p in cache_dir(cfg).glob("*") if p.suffix in (".npy", ".json", ".tmp")]


@pytest.mark.parametrize("workers", [0, 2])
def test_undecodable_image_names_id_and_file_and_keeps_the_old_cache(isic20, workers):
    cfg, data = isic20
    ids = split_ids(cfg, data, "train")
    good = open_cache(cfg, data, "train", ids, SIZE, workers=0)
    bad = data / "jpeg" / "train" / f"{ids[2]}.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 broken")
    with pytest.raises(DataError, match=rf"id {ids[2]} in {bad} cannot be decoded"):
        open_cache(cfg, data, "train", ids, SIZE, workers=workers, progress=False)
    assert files(cache_dir(cfg)) == sorted([good.path.name, good.path.with_suffix(".json").name])


def test_rows_and_unknown_ids(isic24):
    cfg, data = isic24
    ids = split_ids(cfg, data, "test")
    c = open_cache(cfg, data, "test", ids, SIZE, workers=0)
    rows = c.rows([ids[4], ids[0], ids[4]])
    assert rows.dtype == np.int64 and rows.tolist() == [4, 0, 4]
    unknown = [f"ISIC_X{k:02d}" for k in range(12)]
    want = r"12 id\(s\) are not in the image cache .*ISIC_X00, .*ISIC_X09, \.\.\."
    with pytest.raises(DataError, match=want):
        c.rows([ids[1], *unknown])


def _open_in_child(runs: str, data: str, barrier, out) -> None:
    cfg = tiny_config("isic2024", Path(runs))
    ids = split_ids(cfg, Path(data), "train")
    barrier.wait()
    c = open_cache(cfg, Path(data), "train", ids, SIZE, workers=0, progress=False)
    out.put((c.built, c.meta["content_sha256"]))


@pytest.mark.slow
def test_two_processes_at_once_build_once(isic24):
    cfg, data = isic24
    ctx = mp.get_context("spawn")  # a forked child of a process that ran OpenCV threads may deadlock
    barrier, out = ctx.Barrier(2), ctx.Queue()
    args = (str(cfg.runs_dir), str(data), barrier, out)
    procs = [ctx.Process(target=_open_in_child, args=args) for _ in "ab"]
    for p in procs:
        p.start()
    got = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(b for b, _ in got) == [False, True]
    assert got[0][1] == got[1][1]


def test_make_cache_builds_train_and_test(isic24, capsys):
    from foldstack.commands.stage1 import cache

    cfg, data = isic24

    sets = f"runs_dir={cfg.runs_dir} data.img_size={SIZE}"
    assert cache("isic2024", "effnetv2_b1", sets, str(data), workers=0) == 0
    out = capsys.readouterr().out
    assert "train:" in out and "test:" in out and out.count(", built:") == 2
    assert len(list(cache_dir(cfg).glob(f"*_{SIZE}px_*.npy"))) == 2
    assert cache("isic2024", "effnetv2_b1", sets, str(data), workers=0) == 0
    assert capsys.readouterr().out.count("up to date") == 2


def test_will_need_hints_each_run_of_rows_at_its_file_offset(tmp_path, monkeypatch):
    path = tmp_path / "cache.npy"
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(10, 4, 4, 3))
    arr[:] = np.arange(10, dtype=np.uint8)[:, None, None, None]
    arr.flush()
    images = np.load(path, mmap_mode="r")
    calls = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, off, n, advice: calls.append((off, n, advice)))
    row = 4 * 4 * 3
    decode_mod.will_need(images, np.array([7, 2, 3, 9, 2]))  # runs 2-3, 7, 9 (duplicates once)
    assert calls == [
        (images.offset + r0 * row, k * row, os.POSIX_FADV_WILLNEED) for r0, k in [(2, 2), (7, 1), (9, 1)]
    ]
    # the hinted bytes are the rows' own: header offset + row * row size holds row r's pixels
    with path.open("rb") as f:
        f.seek(images.offset + 7 * row)
        assert f.read(row) == bytes([7]) * row
    calls.clear()
    assert decode_mod.drop_page_cache(images) and calls == [(0, 0, os.POSIX_FADV_DONTNEED)]
    calls.clear()
    decode_mod.will_need(images[2:], np.array([0, 1]))  # a slice: offsets unknown, nothing hinted
    assert not decode_mod.drop_page_cache(images[2:])
    decode_mod.will_need(np.zeros((3, 4, 4, 3), np.uint8), np.array([0]))  # not a file
    assert calls == []
