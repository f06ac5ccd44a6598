"""Image stores: JPEG bytes per id, from an HDF5 file (ISIC 2024) or folders of files (ISIC 2020, HAM10000).

Stores are lazy and picklable: the HDF5 file is opened on first use in each process, so every
DataLoader worker gets its own handle.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
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

    def id_set(self) -> set[str]:
        """Every id that has an image, as a set: one listing, for checking many ids at once."""
        return set(self.ids())

    def missing_ids(self, ids: Iterable[str]) -> list[str]:
        """The ids (in the given order) that have no image, from one listing of the store."""
        have = self.id_set()
        return [i for i in ids if i not in have]

    def read(self, image_id: str) -> np.ndarray:
        """The decoded image: H x W x 3 uint8 RGB."""
        return decode_jpeg(self.read_bytes(image_id), image_id, self.path)

    @property
    def where(self) -> str:
        """The file or folders the images come from, for messages."""
        return str(self.path)

    def _missing(self, image_id: str) -> DataError:
        return DataError(f"no image for id {image_id} in {self.where}")

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
        fast = self._read_scalar_bytes(image_id)
        if fast is not None:
            return fast
        item = self._file().get(image_id) if isinstance(image_id, str) and image_id else None
        if not isinstance(item, h5py.Dataset):
            raise self._missing(image_id)
        value = item[()]
        if isinstance(value, np.ndarray):  # tolerate a uint8 array instead of a bytes scalar
            return value.tobytes()
        return bytes(value)

    def _read_scalar_bytes(self, image_id: object) -> bytes | None:
        """The bytes of a scalar |S<n> dataset through h5py's low-level API (about 4x faster than
        Dataset[()], which matters for 400,000 images); None for anything else (the caller's
        high-level path then reads it or raises)."""
        if not isinstance(image_id, str) or not image_id:
            return None
        try:
            dset = h5py.h5d.open(self._file().id, image_id.encode())
        except (KeyError, ValueError, TypeError, RuntimeError):
            return None
        dtype = dset.dtype
        if dtype.kind != "S" or dset.shape != ():
            return None
        buf = np.empty((), dtype=dtype)
        dset.read(h5py.h5s.ALL, h5py.h5s.ALL, buf)
        return bytes(buf[()])  # as Dataset[()] gives it: trailing NUL padding dropped

    def ids(self) -> list[str]:
        return list(self._file().keys())

    def id_set(self) -> set[str]:
        """The root-level names in one listing (a name that is a group, not a dataset, counts here;
        reading it still raises DataError)."""
        return set(self._file().keys())

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
    """<id><suffix> files in one folder or several (HAM10000 splits its train images over two).

    An id is looked up in every folder; an id with a file in two folders is an error.
    """

    def __init__(self, folders: str | Path | Sequence[str | Path], suffix: str = ".jpg") -> None:
        paths = [folders] if isinstance(folders, (str, Path)) else list(folders)
        if not paths:
            raise DataError("no image folder given")
        self.folders = tuple(Path(f) for f in paths)
        self.path = self.folders[0]
        self.suffix = suffix
        missing = [str(f) for f in self.folders if not f.is_dir()]
        if missing:
            raise DataError(f"{', '.join(missing)}: the image folder does not exist")

    @property
    def where(self) -> str:
        return ", ".join(str(f) for f in self.folders)

    def _files(self, image_id: object) -> list[Path]:
        """The existing files of an id (more than one when it is in several folders)."""
        if not isinstance(image_id, str) or not image_id or "/" in image_id:
            return []
        return [p for p in (f / f"{image_id}{self.suffix}" for f in self.folders) if p.is_file()]

    def _file(self, image_id: str) -> Path:
        files = self._files(image_id)
        if len(files) > 1:
            raise DataError(
                f"id {image_id} has an image in more than one folder: {', '.join(map(str, files))}"
            )
        if not files:
            expected = " or ".join(str(f / f"{image_id}{self.suffix}") for f in self.folders)
            raise DataError(f"no image for id {image_id} in {self.where} (expected {expected})")
        return files[0]

    def read_bytes(self, image_id: str) -> bytes:
        return self._file(image_id).read_bytes()

    def read(self, image_id: str) -> np.ndarray:
        path = self._file(image_id)
        return decode_jpeg(path.read_bytes(), image_id, path)

    def ids_per_folder(self) -> dict[Path, list[str]]:
        """The sorted ids of each folder."""
        n = len(self.suffix)
        return {
            f: sorted(e.name[:-n] for e in os.scandir(f) if e.name.endswith(self.suffix) and e.is_file())
            for f in self.folders
        }

    def ids(self) -> list[str]:
        """Every id, sorted; an id with a file in two folders raises DataError naming both files."""
        seen: dict[str, Path] = {}
        for folder, ids in self.ids_per_folder().items():
            for i in ids:
                if i in seen:
                    raise DataError(
                        f"id {i} has an image in more than one folder: "
                        f"{seen[i] / f'{i}{self.suffix}'}, {folder / f'{i}{self.suffix}'}"
                    )
                seen[i] = folder
        return sorted(seen)

    def __contains__(self, image_id: object) -> bool:
        return bool(self._files(image_id))

    def id_set(self) -> set[str]:
        """Every id with a file in some folder (an id in two folders is listed once; ids() refuses it)."""
        return {i for ids in self.ids_per_folder().values() for i in ids}

    def file_of(self, image_id: str) -> Path:
        """The file of an id (DataError when it has none, or one in several folders)."""
        return self._file(image_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({[str(f) for f in self.folders]!r})"


def open_images(cfg: CompetitionConfig, data_dir: Path, split: str) -> ImageStore:
    """The image store of a split ('train' or 'test') as the competition config lays it out."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    paths = [Path(data_dir) / p for p in cfg.images.paths(split)]
    if cfg.images.kind == "hdf5":
        return HDF5Images(paths[0])
    return JpegDirImages(paths, cfg.images.suffix)


def check_ids(store: ImageStore, ids: Iterable[str]) -> None:
    """Raise DataError listing (up to 10 of) the ids that have no image in the store.

    Lists the store once (a set), so 400,000 ids cost one HDF5 keys() listing or one folder scan.
    """
    missing = store.missing_ids(ids)
    if missing:
        shown = ", ".join(missing[:MAX_LISTED]) + (", ..." if len(missing) > MAX_LISTED else "")
        raise DataError(f"{len(missing)} id(s) have no image in {store.where}: {shown}")
