"""Write a whole synthetic competition (metadata, images, sample submission, test labels).

ISIC 2024 and 2020 share the latent patients of lesions.py; HAM10000 has its own lesions (ham10000.py).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from foldstack import artifacts
from foldstack.config import CompetitionConfig, to_yaml
from foldstack.errors import ConfigError
from foldstack.synth import ham10000, isic2020, isic2024
from foldstack.synth.lesions import _ids, make_lesions, make_patients
from foldstack.synth.render import render_many

LAYOUTS: dict[str, Callable[..., pd.DataFrame]] = {
    "isic2024": isic2024.metadata_frame,
    "isic2020": isic2020.metadata_frame,
}


def write_hdf5(path: Path, ids: list[str], blobs: list[bytes]) -> None:
    """One scalar |S<n> dataset of JPEG bytes per id, as in the real ISIC 2024 files."""

    def _write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            for i, b in zip(ids, blobs, strict=True):
                f.create_dataset(i, data=np.bytes_(b))

    artifacts.write_atomic(path, _write)


def write_jpeg_dir(folder: Path, ids: list[str], blobs: list[bytes], suffix: str) -> None:
    """<folder>/<id><suffix> for every id; the folder is replaced only once all files are written."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i, b in zip(ids, blobs, strict=True):
        (tmp / f"{i}{suffix}").write_bytes(b)
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def _split(
    cfg: CompetitionConfig,
    rng: np.random.Generator,
    n_patients: int,
    taken: set[str],
    split: str,
    workers: int,
) -> tuple[pd.DataFrame, list[bytes]]:
    s = cfg.synthetic
    les = make_lesions(s, rng, make_patients(s, rng, n_patients, taken))
    ids = _ids(rng, len(les), "ISIC", taken)
    meta = LAYOUTS[cfg.name](cfg, les, ids, rng, taken)
    sizes = rng.integers(s.img_min, s.img_max + 1, len(les)).tolist()
    code = 0 if split == "train" else 1
    seeds = [(s.seed, code, i) for i in range(len(les))]
    rows = les.to_dict("records")
    blobs = render_many(rows, sizes, seeds, s.jpeg_quality, workers, desc=f"{split} images")
    return meta, blobs


SPLITS: dict[str, Callable[..., tuple[pd.DataFrame, list[bytes]]]] = {
    "isic2024": _split,
    "isic2020": _split,
    "ham10000": ham10000.make_split,
}


def _write_images(cfg: CompetitionConfig, out: Path, split: str, ids: list[str], blobs: list[bytes]) -> None:
    """The HDF5 file, or the JPEG folder(s): several folders share the ids in sorted order, in parts."""
    paths = cfg.images.paths(split)
    if cfg.images.kind == "hdf5":
        write_hdf5(out / paths[0], ids, blobs)
        return
    order = np.argsort(ids, kind="stable")
    for path, part in zip(paths, np.array_split(order, len(paths)), strict=True):
        write_jpeg_dir(out / path, [ids[i] for i in part], [blobs[i] for i in part], cfg.images.suffix)


def _write_tables(cfg: CompetitionConfig, out: Path, split: str, meta: pd.DataFrame) -> None:
    idc, gc, tc = cfg.columns.id, cfg.columns.group, cfg.columns.target
    if split == "train":
        artifacts.write_csv(out / cfg.files.train, meta)
        return
    artifacts.write_csv(out / cfg.files.test, meta[cfg.table.test_columns])
    artifacts.write_csv(out / cfg.files.test_labels, meta[[idc, gc, tc]])
    if cfg.multiclass:
        sample = pd.DataFrame({idc: meta[idc]} | {c: 1 / len(cfg.classes) for c in cfg.classes})
    else:
        sample = pd.DataFrame({idc: meta[idc], tc: 0.3 if cfg.name == "isic2024" else 0.0})
    artifacts.write_csv(out / cfg.files.sample_submission, sample[cfg.submission_columns])


def _summary(cfg: CompetitionConfig, meta: pd.DataFrame) -> dict:
    gc, tc = cfg.columns.group, cfg.columns.target
    if cfg.multiclass:
        counts = meta[tc].value_counts()
        per_class = {c: int(counts.get(c, 0)) for c in cfg.classes}
        return {"rows": len(meta), "groups": int(meta[gc].nunique()), "per_class": per_class}
    return {"rows": len(meta), "positives": int(meta[tc].sum()), "patients": int(meta[gc].nunique())}


def generate(cfg: CompetitionConfig, out_dir: str | Path, workers: int | None = None) -> dict:
    """Write the synthetic competition for `cfg` into `out_dir`; return a summary."""
    if cfg.name not in SPLITS:
        raise ConfigError(f"no synthetic generator for competition {cfg.name!r}; have: {', '.join(SPLITS)}")
    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or min(4, os.cpu_count() or 1)
    s = cfg.synthetic
    rng = np.random.default_rng(s.seed)
    taken: set[str] = set()
    summary: dict = {"competition": cfg.name}
    for split, n in (("train", s.n_train_patients), ("test", s.n_test_patients)):
        meta, blobs = SPLITS[cfg.name](cfg, rng, n, taken, split, workers)
        _write_images(cfg, out, split, meta[cfg.columns.id].tolist(), blobs)
        _write_tables(cfg, out, split, meta)
        summary[split] = _summary(cfg, meta)
    summary["seconds"] = round(time.time() - t0, 1)
    summary["git_commit"] = artifacts.git_commit()
    artifacts.write_json(out / "synthetic.json", summary)
    artifacts.write_text(out / "synthetic-config.yaml", to_yaml(cfg))
    return summary
