"""Image stores: JPEG bytes per id, from an HDF5 file (ISIC 2024) or a folder of files (ISIC 2020).

Stores are lazy and picklable: the HDF5 file is opened on first use in each process, so every
DataLoader worker gets its own handle.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np

from foldstack.config import CompetitionConfig
from foldstack.errors import DataError

MAX_LISTED = 10


def decode_jpeg(data: bytes, image_id: str, source: str | Path) -> np.ndarray:
    """JPEG (or PNG) bytes -> H x W x 3 uint8 RGB; undecodable bytes raise DataError."""
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if img is None:
        raise DataError(
            f"the image for id {image_id} in {source} cannot be decoded "
            f"({len(data)} bytes, expected JPEG bytes)"
        )
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class ImageStore(ABC):
    """Images by id. Subclasses provide read_bytes, ids and __contains__."""

    path: Path

    @abstractmethod
    def read_bytes(self, image_id: str) -> bytes:
        """The encoded image bytes of one id."""

    @abstractmethod
    def ids(self) -> list[str]:
        """Every id that has an image."""

    @abstractmethod
    def __contains__(self, image_id: object) -> bool: ...

    def __len__(self) -> int:
        return len(self.ids())

    def read(self, image_id: str) -> np.ndarray:
        """The decoded image: H x W x 3 uint8 RGB."""
        return decode_jpeg(self.read_bytes(image_id), image_id, self.path)

    def _missing(self, image_id: str) -> DataError:
        return DataError(f"no image for id {image_id} in {self.path}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


class HDF5Images(ImageStore):
    """One HDF5 file with a root-level scalar |S<n> dataset of JPEG bytes per id."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: the HDF5 image file does not exist")
        self._h5: h5py.File | None = None
        self._pid: int | None = None

    def _file(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():
            try:
                self._h5 = h5py.File(self.path, "r")
            except OSError as e:
                raise DataError(f"{self.path}: not a readable HDF5 file: {e}") from None
            self._pid = os.getpid()
        return self._h5

    def read_bytes(self, image_id: str) -> bytes:
        item = self._file().get(image_id) if isinstance(image_id, str) and image_id else None
        if not isinstance(item, h5py.Dataset):
            raise self._missing(image_id)
        value = item[()]
        if isinstance(value, np.ndarray):  # tolerate a uint8 array instead of a bytes scalar
            return value.tobytes()
        return bytes(value)

    def ids(self) -> list[str]:
        return list(self._file().keys())

    def __contains__(self, image_id: object) -> bool:
        if not isinstance(image_id, str) or not image_id:
            return False
        item = self._file().get(image_id)
        return isinstance(item, h5py.Dataset)

    def __len__(self) -> int:
        return len(self._file())

    def close(self) -> None:
        """Close this process's handle (it reopens on the next read)."""
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5, self._pid = None, None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_h5"], state["_pid"] = None, None
        return state


class JpegDirImages(ImageStore):
    """A folder of <id><suffix> files."""

    def __init__(self, folder: str | Path, suffix: str = ".jpg") -> None:
        self.path = Path(folder)
        self.suffix = suffix
        if not self.path.is_dir():
            raise DataError(f"{self.path}: the image folder does not exist")

    def _file(self, image_id: str) -> Path:
        return self.path / f"{image_id}{self.suffix}"

    def read_bytes(self, image_id: str) -> bytes:
        if image_id not in self:
            raise DataError(f"no image for id {image_id} in {self.path} (expected {self._file(image_id)})")
        return self._file(image_id).read_bytes()

    def ids(self) -> list[str]:
        n = len(self.suffix)
        return sorted(
            e.name[:-n] for e in os.scandir(self.path) if e.name.endswith(self.suffix) and e.is_file()
        )

    def __contains__(self, image_id: object) -> bool:
        if not isinstance(image_id, str) or not image_id or "/" in image_id:
            return False
        return self._file(image_id).is_file()


def open_images(cfg: CompetitionConfig, data_dir: Path, split: str) -> ImageStore:
    """The image store of a split ('train' or 'test') as the competition config lays it out."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    path = Path(data_dir) / (cfg.images.train if split == "train" else cfg.images.test)
    if cfg.images.kind == "hdf5":
        return HDF5Images(path)
    return JpegDirImages(path, cfg.images.suffix)


def check_ids(store: ImageStore, ids: Iterable[str]) -> None:
    """Raise DataError listing (up to 10 of) the ids that have no image in the store."""
    missing = [i for i in ids if i not in store]
    if missing:
        shown = ", ".join(missing[:MAX_LISTED]) + (", ..." if len(missing) > MAX_LISTED else "")
        raise DataError(f"{len(missing)} id(s) have no image in {store.path}: {shown}")
