"""Decoding images for the cache: one JPEG/PNG decoded (reduced in libjpeg when it can) and resized by the
cache's rule, page-cache hints on a cached array, and the process pool that decodes or hashes every image
of a split in chunks (data.cache builds on it)."""

from __future__ import annotations

import hashlib
import math
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from foldstack.data.image_check import JPEG_MAGIC, _jpeg_header_size
from foldstack.data.images import ImageStore, JpegDirImages
from foldstack.errors import DataError

CHUNK = 2000  # ids per pool task (at most)
REDUCED = {8: cv2.IMREAD_REDUCED_COLOR_8, 4: cv2.IMREAD_REDUCED_COLOR_4, 2: cv2.IMREAD_REDUCED_COLOR_2}


# ---------------------------------------------------------------------------------------------- decoding
def reduce_factor(height: int, width: int, size: int) -> int:
    """The largest JPEG decode reduction r in (8, 4, 2) with min(height, width) / r >= size, else 1."""
    for r in sorted(REDUCED, reverse=True):
        if min(height, width) / r >= size:
            return r
    return 1


def decode_resized(data: bytes, image_id: str, source: str | Path, size: int) -> np.ndarray:
    """Encoded image bytes -> size x size x 3 uint8 RGB (squashed, INTER_AREA; rule RULE).

    A JPEG is decoded at the largest reduction (1/8, 1/4, 1/2) that keeps its short side at least
    `size` (read from the header, no decode); anything else is decoded in full. Undecodable bytes
    raise DataError naming the id and the source.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    flag = cv2.IMREAD_COLOR
    if data[:3] == JPEG_MAGIC:
        hw = _jpeg_header_size(data)
        if hw is not None:
            flag = REDUCED.get(reduce_factor(hw[0], hw[1], size), cv2.IMREAD_COLOR)
    img = cv2.imdecode(buf, flag) if buf.size else None
    if img is None:
        raise DataError(
            f"the image for id {image_id} in {source} cannot be decoded "
            f"({len(data)} bytes, expected JPEG bytes)"
        )
    if img.shape[:2] != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _fadvise(array: np.ndarray, advice: int, rows: np.ndarray | None = None) -> bool:
    """posix_fadvise(advice) on the file behind a whole-file memory map: on each run of consecutive
    `rows`, or on the whole file (rows None). False, and nothing done, for anything else (an array in
    memory, a DecodedImages, a slice of the map: offsets unknown) or where the OS has no posix_fadvise."""
    path = getattr(array, "filename", None)
    if path is None or not hasattr(os, "posix_fadvise") or not array.flags.c_contiguous:
        return False
    if rows is not None and len(rows) == 0:
        return True
    fd = os.open(path, os.O_RDONLY)
    try:
        if os.fstat(fd).st_size != array.offset + array.nbytes:
            return False
        if rows is None:
            os.posix_fadvise(fd, 0, 0, advice)
            return True
        row = array.nbytes // max(len(array), 1)
        starts = np.unique(np.asarray(rows, np.int64))
        breaks = np.flatnonzero(np.diff(starts) != 1) + 1  # runs of consecutive rows: one call each
        for run in np.split(starts, breaks):
            os.posix_fadvise(fd, array.offset + int(run[0]) * row, len(run) * row, advice)
        return True
    finally:
        os.close(fd)


def will_need(array: np.ndarray, rows: np.ndarray) -> None:
    """Ask the OS to read these rows of a cache's memory map now, all at once (posix_fadvise WILLNEED),
    before they are copied out. Page faults fetch a cold row at a time, each waiting on the disk: on this
    project's 2-core machine 960 random rows of the ISIC 2024-size 128 px cache took 5.8-8.4 s that way,
    against 0.05 s hinted and then 0.03 s copied. A hint only (see _fadvise for what is left alone)."""
    _fadvise(array, os.POSIX_FADV_WILLNEED, rows)


def drop_page_cache(array: np.ndarray) -> bool:
    """Evict a cache file's pages from the OS page cache (DONTNEED; no root needed for clean pages), so
    the next reads wait on the disk as a fold's do at ISIC 2024 scale. Pages some process has mapped
    stay. False when `array` is no whole-file memory map."""
    return _fadvise(array, os.POSIX_FADV_DONTNEED)


def _read(store: ImageStore, image_id: str) -> tuple[bytes, str | Path]:
    """(bytes, the file they came from) of one id; DataError when it has no image."""
    if isinstance(store, JpegDirImages):
        path = store.file_of(image_id)
        return path.read_bytes(), path
    return store.read_bytes(image_id), store.where


# ---------------------------------------------------------------------------------------------- config
# ---------------------------------------------------------------------------------------------- the pool
Digests = tuple[int, list[bytes]]  # (first row of a chunk, the sha256 of each of its images' bytes)


def build_chunk(store: ImageStore, tmp: str, start: int, ids: list[str], size: int) -> Digests:
    """Decode + resize `ids` into rows start.. of the temp .npy; the sha256 of each image's bytes."""
    arr = np.lib.format.open_memmap(tmp, mode="r+")
    digests = []
    for k, image_id in enumerate(ids):
        data, source = _read(store, image_id)
        digests.append(hashlib.sha256(data).digest())
        arr[start + k] = decode_resized(data, image_id, source, size)
    arr.flush()
    del arr
    return start, digests


def hash_chunk(store: ImageStore, start: int, ids: list[str]) -> Digests:
    """The sha256 of each image's bytes (read only, no decode)."""
    return start, [hashlib.sha256(_read(store, i)[0]).digest() for i in ids]


def _task(args: tuple) -> Digests:
    fn, *rest = args
    cv2.setNumThreads(1)
    return fn(*rest)


def _run(store: ImageStore, fn: Callable, jobs: list[tuple], workers: int) -> Iterator[Digests]:
    """fn(store, *job) for every job, in this process (workers <= 1) or a pool; results as they come."""
    if workers <= 1:
        for job in jobs:
            yield fn(store, *job)
        return
    # spawned, not forked: a child forked from a process whose OpenCV thread pool has run (any cv2.resize
    # of a large image) deadlocks in its first cv2 call; the store pickles without its HDF5 handle
    with mp.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap_unordered(_task, [(fn, store, *job) for job in jobs])


def _chunks(ids: list[str], workers: int) -> list[tuple[int, list[str]]]:
    """(start, ids) pieces: at most CHUNK ids, at least 8 pieces per worker when there are enough."""
    n = len(ids)
    step = max(1, min(CHUNK, math.ceil(n / (8 * max(workers, 1)))))
    return [(s, ids[s : s + step]) for s in range(0, n, step)]


class _Progress:
    """tqdm on a terminal; otherwise a line to stderr every ~10% ('cache train 128px: 40,106/401,059
    (10%) 3,210 img/s')."""

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        tty = sys.stderr.isatty()
        self.label, self.total, self.done, self.tenth = label, total, 0, 0
        self.lines = enabled and not tty
        self.bar = tqdm(total=total, desc=label, unit="img", disable=not (enabled and tty), file=sys.stderr)
        self.t0 = time.perf_counter()

    def update(self, n: int) -> None:
        self.done += n
        self.bar.update(n)
        if self.lines and self.total and self.done * 10 >= (self.tenth + 1) * self.total:
            self.tenth = self.done * 10 // self.total
            rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
            print(
                f"{self.label}: {self.done:,}/{self.total:,} ({100 * self.done // self.total}%) "
                f"{rate:,.0f} img/s",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        self.bar.close()


def _content_sha(digests: list[list[bytes] | None]) -> str:
    h = hashlib.sha256()
    for part in digests:
        if part is None:
            raise RuntimeError("a chunk of the image cache was not processed")
        for d in part:
            h.update(d)
    return h.hexdigest()


def over_chunks(
    store: ImageStore, ids: list[str], workers: int, progress: bool, label: str, fn: Callable, extra: Callable
) -> str:
    """Run fn over every chunk of ids; the content sha256 (per-image sha256s in id order)."""
    pieces = _chunks(ids, workers)
    workers = min(workers, len(pieces))
    index = {start: k for k, (start, _) in enumerate(pieces)}
    digests: list[list[bytes] | None] = [None] * len(pieces)
    bar = _Progress(label, len(ids), progress)
    try:
        for start, part in _run(store, fn, [extra(start, ids) for start, ids in pieces], workers):
            digests[index[start]] = part
            bar.update(len(part))
    finally:
        bar.close()
    return _content_sha(digests)
