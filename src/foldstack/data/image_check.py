"""Check every image of a store: present, non-empty, JPEG or PNG, complete, decodable; and its size.

The scan runs over chunks of ids in a process pool (one HDF5 handle per worker: the stores pickle
without their handle and reopen in each process), in id order, so any number of workers gives the
same result as one.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

from foldstack.data.images import ImageStore, JpegDirImages
from foldstack.errors import DataError

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_EOI = b"\xff\xd9"
PNG_IEND = b"IEND"
TAIL = 1024  # the end marker must lie in the last TAIL bytes (a little trailing padding is tolerated)
CHUNK = 2000  # ids per pool task
REDUCED = 8  # decode JPEGs at 1/8 scale: every entropy-coded byte is still decoded, the IDCT is cheap
# SOFn markers (frame headers that carry the height and width); C4, C8 and CC are other markers
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _jpeg_header_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from the first SOF marker, or None when the header cannot be walked."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in SOF_MARKERS:
            if i + 9 > n:
                return None
            return int.from_bytes(data[i + 5 : i + 7], "big"), int.from_bytes(data[i + 7 : i + 9], "big")
        if marker == 0xDA:  # start of scan before any frame header
            return None
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def inspect_image(data: bytes) -> tuple[str | None, str | None, tuple[int, int] | None]:
    """(format, problem, (height, width)) of one encoded image; problem is None when it is fine.

    Checks, in order: not empty; a JPEG or PNG signature; the end marker (JPEG FFD9, PNG IEND) near
    the end, so a file cut short is reported as truncated; then that OpenCV decodes it (JPEG at 1/8
    scale). The size is the decoded image's (EXIF rotation included), read from the header and
    confirmed by the reduced decode, or from a full decode when the two disagree.
    """
    size = len(data)
    if size == 0:
        return None, "0 bytes (an empty image)", None
    if data.startswith(JPEG_MAGIC):
        fmt, end = "JPEG", JPEG_EOI
    elif data.startswith(PNG_MAGIC):
        fmt, end = "PNG", PNG_IEND
    else:
        return (
            None,
            f"not a JPEG or PNG, cannot be decoded ({size} bytes starting {data[:8].hex(' ')})",
            None,
        )
    if end not in data[-TAIL:]:
        what = "end-of-image marker FFD9" if fmt == "JPEG" else "IEND chunk"
        return fmt, f"truncated {fmt}: no {what} at its end ({size} bytes)", None
    buf = np.frombuffer(data, dtype=np.uint8)
    if fmt == "JPEG":
        img = cv2.imdecode(buf, cv2.IMREAD_REDUCED_COLOR_8)
        header = _jpeg_header_size(data)
        if img is not None and header is not None:
            h, w = header
            scaled = (math.ceil(h / REDUCED), math.ceil(w / REDUCED))
            if img.shape[:2] == scaled:
                return fmt, None, (h, w)
            if img.shape[:2] == scaled[::-1]:  # EXIF orientation turned it
                return fmt, None, (w, h)
        if img is None:
            return fmt, f"JPEG that cannot be decoded ({size} bytes)", None
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        return fmt, f"{fmt} that cannot be decoded ({size} bytes)", None
    return fmt, None, (int(img.shape[0]), int(img.shape[1]))


def image_file(store: ImageStore, image_id: str) -> str:
    """The file that holds an id's image, for messages."""
    if isinstance(store, JpegDirImages):
        try:
            return str(store.file_of(image_id))
        except DataError:
            return store.where
    return str(store.path)


@dataclass
class ImageScan:
    """What a scan found: bad images as (id, file, problem) in id order, and the sizes of good ones."""

    checked: int = 0
    bad: list[tuple[str, str, str]] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)
    widths: list[int] = field(default_factory=list)
    formats: Counter = field(default_factory=Counter)

    def add(self, other: ImageScan) -> None:
        self.checked += other.checked
        self.bad += other.bad
        self.heights += other.heights
        self.widths += other.widths
        self.formats.update(other.formats)

    def summary(self) -> str:
        """'N checked (N JPEG): H a-b px (median m), W c-d px (median n)', with the count of bad ones."""
        kinds = ", ".join(f"{n} {f}" for f, n in sorted(self.formats.items()))
        text = f"{self.checked} checked" + (f" ({kinds})" if kinds else "")
        if self.heights:
            h, w = np.asarray(self.heights), np.asarray(self.widths)
            text += (
                f": H {h.min()}-{h.max()} px (median {np.median(h):g}), "
                f"W {w.min()}-{w.max()} px (median {np.median(w):g})"
            )
        if self.bad:
            text += f", {len(self.bad)} bad"
        return text


def scan_chunk(store: ImageStore, ids: list[str]) -> ImageScan:
    """Check the images of `ids` in this process."""
    out = ImageScan(checked=len(ids))
    for image_id in ids:
        try:
            data = store.read_bytes(image_id)
        except DataError as e:
            out.bad.append((image_id, image_file(store, image_id), f"cannot be read: {e}"))
            continue
        fmt, problem, size = inspect_image(data)
        if fmt is not None:
            out.formats[fmt] += 1
        if problem is not None:
            out.bad.append((image_id, image_file(store, image_id), problem))
        elif size is not None:
            out.heights.append(size[0])
            out.widths.append(size[1])
    return out


def _scan_task(args: tuple[ImageStore, list[str]]) -> ImageScan:
    cv2.setNumThreads(1)
    return scan_chunk(*args)


def _results(store: ImageStore, chunks: list[list[str]], workers: int) -> Iterator[ImageScan]:
    if workers <= 1:
        for chunk in chunks:
            yield scan_chunk(store, chunk)
        return
    close = getattr(store, "close", None)
    if close is not None:  # no open HDF5 handle is inherited: each worker opens its own
        close()
    # spawned, not forked: a child forked from a process whose OpenCV thread pool has run can deadlock
    with mp.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_scan_task, [(store, c) for c in chunks])


def scan_images(
    store: ImageStore,
    ids: Iterable[str],
    workers: int = 0,
    label: str = "images",
    progress: bool = True,
    chunk: int | None = None,
) -> ImageScan:
    """Check every image of `ids` on `workers` processes (0: every core this process may use).

    Shows a tqdm bar on a terminal; otherwise, for more than one chunk, prints a line to stderr at
    every 10% so a log file shows progress.
    """
    from tqdm.auto import tqdm

    ids, chunk = list(ids), chunk or CHUNK
    chunks = [ids[i : i + chunk] for i in range(0, len(ids), chunk)]
    workers = min(workers or available_cores(), max(len(chunks), 1))
    tty = sys.stderr.isatty()
    bar = tqdm(total=len(ids), desc=label, unit="img", disable=not (progress and tty), file=sys.stderr)
    lines = progress and not tty and len(chunks) > 1
    scan, tenth = ImageScan(), 0
    with bar:
        for part in _results(store, chunks, workers):
            scan.add(part)
            bar.update(part.checked)
            if lines and scan.checked * 10 >= (tenth + 1) * len(ids):
                tenth = scan.checked * 10 // len(ids)
                print(
                    f"{label}: checked {scan.checked} of {len(ids)} ({100 * scan.checked // len(ids)}%)",
                    file=sys.stderr,
                    flush=True,
                )
    return scan


def bad_image_problems(scan: ImageScan, split: str, shown: int = 5) -> list[str]:
    """One problem per bad image for the first `shown`, then one line with the count of the rest."""
    out = [f"{split} image {i} in {f}: {what}" for i, f, what in scan.bad[:shown]]
    rest = scan.bad[shown:]
    if rest:
        more = ", ".join(i for i, _, _ in rest[:shown]) + (", ..." if len(rest) > shown else "")
        out.append(
            f"{split} images: {len(rest)} more bad image(s) ({len(scan.bad)} in all, of {scan.checked} "
            f"checked): {more}"
        )
    return out
