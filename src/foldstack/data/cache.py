"""Decode-once image cache: every image of a split decoded and resized once, kept as a uint8 .npy.

    runs/<comp>/cache/<split>_<size>px_<RULE>_<h12>.npy    (N, size, size, 3) uint8 RGB, row i = ids[i]
    runs/<comp>/cache/<split>_<size>px_<RULE>_<h12>.json   the record: the key and how it was built

h12 names the images: the resolved source paths, the split and the ids in order. The record holds
the key (format, RULE, size, split, sources, ids sha256), the content sha256 of the encoded images
(sha256 over the per-image sha256s, in id order: computed in parallel from the bytes read while
building) and a cheap stat signature of the sources. open_cache reuses a cache whose record matches
and whose .npy has exactly the size its header promises; when only the stat signature differs (a
file copied or touched) it re-hashes the encoded bytes (no decode) and keeps the cache if they are
unchanged; anything else rebuilds it, saying why.

A build writes a temp file (artifacts.atomic_path: a killed builder's temp file is removed by
artifacts.recover), renames it into place and writes the record last, so an interrupted build is
never reused. An flock on <name>.lock makes two processes that open the same cache at once build
it once: the second waits, then reuses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from foldstack import artifacts
from foldstack.config import CompetitionConfig
from foldstack.data.decode import build_chunk, hash_chunk, over_chunks
from foldstack.data.image_check import available_cores
from foldstack.data.images import MAX_LISTED, ImageStore, JpegDirImages, check_ids, open_images
from foldstack.errors import DataError
from foldstack.runs import Runs

FORMAT = 1  # bump when the file layout or the record changes: older caches are rebuilt
RULE = "squash-area-v1"  # the resize rule (part of the key): squash to size x size, INTER_AREA, no crop
SMALL = 5000  # fewer images than this are decoded in the calling process by default


def cache_dir(cfg: CompetitionConfig) -> Path:
    """Where the caches of a competition live: runs/<comp>/cache."""
    return Runs.of(cfg).cache


def timm_data_config(backbone: str) -> dict:
    """timm's data config (input_size, mean, std, ...) of a backbone's pretrained weights
    (timm.data.resolve_model_data_config); timm's defaults (224 px, ImageNet mean and std) for a backbone
    timm has no pretrained config for."""
    import timm

    try:
        pc = timm.models.get_pretrained_cfg(backbone)
    except RuntimeError:
        pc = None
    return timm.data.resolve_model_data_config(None, pretrained_cfg=pc.to_dict() if pc else {})


def image_size(cfg: Any) -> int:
    """The input size of a stage-1 config: data.img_size, else the backbone's timm pretrained input size."""
    if cfg.data.img_size:
        return int(cfg.data.img_size)
    return int(timm_data_config(cfg.model.backbone)["input_size"][-1])


def split_ids(cfg: CompetitionConfig, data_dir: Path, split: str) -> list[str]:
    """The ids of a split in the metadata CSV's order: the order `make cache` builds in, so a stage-1
    run that opens the cache with these ids (then picks rows with ImageCache.rows) reuses it."""
    from foldstack.data.metadata import read_metadata

    return read_metadata(cfg, data_dir, split)[cfg.columns.id].astype(str).tolist()


# ---------------------------------------------------------------------------------------------- the cache
@dataclass
class ImageCache:
    """An opened cache: array[i] is the image of ids[i] (read-only memory map)."""

    path: Path
    ids: list[str]
    size: int
    meta: dict
    array: np.ndarray
    built: bool = False  # whether this open_cache call built it
    _row: dict[str, int] | None = field(default=None, repr=False)

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        """The row numbers (int64) of `ids`; DataError listing (up to 10 of) the ids not in the cache."""
        if self._row is None:
            self._row = {i: n for n, i in enumerate(self.ids)}
        row = self._row
        missing = [i for i in ids if i not in row]
        if missing:
            shown = ", ".join(map(str, missing[:MAX_LISTED])) + (", ..." if len(missing) > MAX_LISTED else "")
            raise DataError(
                f"{len(missing)} id(s) are not in the image cache {self.path}: {shown} "
                f"(open the cache with every id the run reads)"
            )
        return np.fromiter((row[i] for i in ids), dtype=np.int64, count=len(ids))

    def __len__(self) -> int:
        return len(self.ids)


def _sha(*parts: str) -> str:
    """sha256 (hex) over NUL-terminated parts."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


def _sources(store: ImageStore) -> list[str]:
    folders = store.folders if isinstance(store, JpegDirImages) else (store.path,)
    return [str(Path(f).resolve()) for f in folders]


def _stat_signature(store: ImageStore, ids: list[str]) -> dict:
    """A cheap signature of the sources: an HDF5 file's size, mtime and inode; for folders, a sha256
    over each id's file name, size and mtime."""
    if isinstance(store, JpegDirImages):
        h = hashlib.sha256()
        for i in ids:
            try:
                p = store.file_of(i)
                st = p.stat()
            except (DataError, OSError):
                h.update(f"{i}\0missing\n".encode())
                continue
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return {"files_sha256": h.hexdigest()}
    try:
        st = Path(store.path).stat()
    except OSError:
        return {"missing": str(store.path)}
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def _npy_data_offset(path: Path) -> tuple[tuple, np.dtype, bool, int] | None:
    """(shape, dtype, fortran_order, offset of the data) from a .npy header, or None when unreadable."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                return None
            return shape, dtype, fortran, f.tell()
    except (OSError, ValueError, EOFError):
        return None


def _human_bytes(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


@dataclass
class _Where:
    """Everything that names one cache."""

    folder: Path
    split: str
    size: int
    ids: list[str]
    sources: list[str]

    def __post_init__(self) -> None:
        joined = "\n".join(self.ids)
        self.ids_sha256 = _sha(joined)
        self.name = f"{self.split}_{self.size}px_{RULE}_{_sha(*self.sources, self.split, joined)[:12]}"
        self.npy = self.folder / f"{self.name}.npy"
        self.record = self.folder / f"{self.name}.json"
        self.lock = self.folder / f"{self.name}.lock"
        self.label = f"cache {self.split} {self.size}px"

    @property
    def key(self) -> dict:
        return {
            "format": FORMAT,
            "rule": RULE,
            "size": self.size,
            "split": self.split,
            "sources": self.sources,
            "n": len(self.ids),
            "ids_sha256": self.ids_sha256,
        }

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.ids), self.size, self.size, 3)


def _read_record(path: Path) -> dict | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


STAT_ONLY = "stat"


def _why_new(w: _Where) -> str:
    """Why there is no cache under this name: another size or other data already cached, or none."""
    others = []
    for p in sorted(w.folder.glob(f"{w.split}_*px_*.json")):
        rec = _read_record(p)
        if rec is not None and p != w.record:
            others.append((p, rec))
    same_images = [
        p for p, r in others if r.get("ids_sha256") == w.ids_sha256 and r.get("sources") == w.sources
    ]
    if same_images:
        sizes = sorted({f"{r.get('size')}px" for p, r in others if p in same_images})
        return f"other size: {', '.join(sizes)} cached for these images, not {w.size}px"
    if others:
        return (
            f"other data: {len(others)} {w.split} cache(s) in {w.folder} hold other images or another "
            f"data folder (delete the ones no run needs)"
        )
    return "not built yet"


def _check(w: _Where, store: ImageStore) -> str | None:
    """None when the cache can be reused as it is; STAT_ONLY when only the sources' stat signature
    differs; else why it must be built."""
    if not w.record.exists() and not w.npy.exists():
        return _why_new(w)
    rec = _read_record(w.record)
    if rec is None:
        return "its record is missing or unreadable (an interrupted build?)"
    if rec.get("format") != FORMAT:
        return f"older format (v{rec.get('format')}, now v{FORMAT})"
    key = w.key
    for name in ("rule", "split", "sources", "n", "ids_sha256"):
        if rec.get(name) != key[name]:
            return f"other data ({name} differs)"
    if rec.get("size") != w.size:
        return f"other size ({rec.get('size')}px, not {w.size}px)"
    layout = _npy_data_offset(w.npy)
    if layout is None:
        return f"its .npy is missing or has no valid header ({w.npy})"
    shape, dtype, fortran, offset = layout
    if tuple(shape) != w.shape or dtype != np.uint8 or fortran:
        return f"its .npy holds {shape} {dtype}, not {w.shape} uint8"
    want, have = offset + math.prod(w.shape), w.npy.stat().st_size
    if have != want:
        return f"truncated file ({have:,} bytes, expected {want:,})"
    if rec.get("stat") != _stat_signature(store, w.ids):
        return STAT_ONLY
    return None


def _build(w: _Where, store: ImageStore, workers: int, progress: bool) -> None:
    check_ids(store, w.ids)
    w.folder.mkdir(parents=True, exist_ok=True)
    artifacts.recover(w.folder)  # a killed builder's temp file
    need = 4096 + math.prod(w.shape)
    free = shutil.disk_usage(w.folder).free
    if free < need:
        raise DataError(
            f"{w.folder}: the {w.split} image cache needs {_human_bytes(need)} of free disk, "
            f"{_human_bytes(free)} is free: free some space or set runs_dir=<a bigger disk>"
        )
    t0 = time.perf_counter()
    with artifacts.atomic_path(w.npy) as tmp:
        np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=w.shape).flush()
        content = over_chunks(
            store,
            w.ids,
            workers,
            progress,
            w.label,
            build_chunk,
            lambda start, ids: (str(tmp), start, ids, w.size),
        )
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        w.record.unlink(missing_ok=True)  # the old record never describes the new array
    artifacts.fault_point("cache.before_record")
    seconds = time.perf_counter() - t0
    n = len(w.ids)
    record = {
        **w.key,
        "shape": list(w.shape),
        "dtype": "uint8",
        "content_sha256": content,
        "stat": _stat_signature(store, w.ids),
        "bytes": w.npy.stat().st_size,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": round(seconds, 3),
        "images_per_s": round(n / max(seconds, 1e-9), 1),
        "workers": workers,
    }
    artifacts.write_json(w.record, record)
    print(
        f"{w.label}: {n:,} images, {_human_bytes(record['bytes'])}, {seconds:.1f} s, "
        f"{record['images_per_s']:,.0f} img/s -> {w.npy}",
        file=sys.stderr,
        flush=True,
    )


def _rehash(w: _Where, store: ImageStore, workers: int, progress: bool) -> bool:
    """Re-hash the encoded bytes after a stat change; True (and the record's stat rewritten) when they
    are unchanged."""
    print(f"{w.label}: the image files changed on disk (size/mtime); re-hashing their bytes", file=sys.stderr)
    rec = _read_record(w.record) or {}
    try:
        content = over_chunks(
            store, w.ids, workers, progress, f"{w.label} re-hash", hash_chunk, lambda start, ids: (start, ids)
        )
    except DataError:
        return False  # an image is gone: the build says which
    if content != rec.get("content_sha256"):
        return False
    artifacts.write_json(w.record, rec | {"stat": _stat_signature(store, w.ids)})
    print(f"{w.label}: images unchanged, cache reused", file=sys.stderr)
    return True


@contextlib.contextmanager
def _locked(w: _Where) -> Iterator[None]:
    """An exclusive flock on <name>.lock (released when the process ends, even by SIGKILL)."""
    w.folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(w.lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            print(f"{w.label}: another process is building {w.npy.name}; waiting", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _open(w: _Where, built: bool) -> ImageCache:
    meta = _read_record(w.record)
    if meta is None:
        raise DataError(f"{w.record}: the image cache record vanished while opening it; run again")
    array = np.load(w.npy, mmap_mode="r")
    if array.shape != w.shape or array.dtype != np.uint8:
        raise DataError(f"{w.npy}: holds {array.shape} {array.dtype}, expected {w.shape} uint8; run again")
    return ImageCache(w.npy, w.ids, w.size, meta, array, built)


def open_cache(
    cfg: CompetitionConfig,
    data_dir: Path,
    split: str,
    ids: Sequence[str],
    size: int,
    progress: bool = True,
    workers: int | None = None,
) -> ImageCache:
    """A valid cache of exactly these ids (in this order) at size x size, built (or rebuilt when
    missing or stale) first. workers: build processes (None: every available core; 0 or 1: this one).
    progress: the bar on a terminal, else a line every ~10%; the line saying why a cache is (re)built
    and the build's summary line are always printed (stderr). Pass the ids in the order of
    split_ids() and pick rows with ImageCache.rows: another order is another cache."""
    ids = [str(i) for i in ids]
    if not ids:
        raise DataError(f"no {split} ids given for the image cache")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = [i for i in ids if i in seen or seen.add(i)]
        raise DataError(f"the {split} ids given to the image cache repeat: {', '.join(dup[:MAX_LISTED])}")
    size = int(size)
    if size < 1:
        raise DataError(f"image cache size must be a positive number of pixels, got {size}")
    store = open_images(cfg, data_dir, split)
    w = _Where(cache_dir(cfg), split, size, ids, _sources(store))
    if workers is None:  # a pool costs ~1 s to start: small caches are built in this process
        workers = available_cores() if len(ids) >= SMALL else 1
    workers = max(int(workers), 1)
    if _check(w, store) is None:
        return _open(w, built=False)
    with _locked(w):
        why = _check(w, store)  # again: another process may have built it while this one waited
        if why == STAT_ONLY:
            why = None if _rehash(w, store, workers, progress) else "changed images"
        if why is None:
            return _open(w, built=False)
        print(f"{w.label}: building {w.npy.name} ({why})", file=sys.stderr, flush=True)
        _build(w, store, workers, progress)
        return _open(w, built=True)
