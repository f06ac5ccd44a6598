"""Write a whole synthetic competition (metadata, images, sample submission, test labels)."""

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
from foldstack.synth import isic2020, isic2024
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


def generate(cfg: CompetitionConfig, out_dir: str | Path, workers: int | None = None) -> dict:
    """Write the synthetic competition for `cfg` into `out_dir`; return a summary."""
    if cfg.name not in LAYOUTS:
        raise ConfigError(f"no synthetic generator for competition {cfg.name!r}; have: {', '.join(LAYOUTS)}")
    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or min(4, os.cpu_count() or 1)
    s = cfg.synthetic
    rng = np.random.default_rng(s.seed)
    taken: set[str] = set()
    idc, gc, tc = cfg.columns.id, cfg.columns.group, cfg.columns.target
    summary: dict = {"competition": cfg.name}
    for split, n_pat in (("train", s.n_train_patients), ("test", s.n_test_patients)):
        meta, blobs = _split(cfg, rng, n_pat, taken, split, workers)
        ids = meta[idc].tolist()
        if cfg.images.kind == "hdf5":
            write_hdf5(out / getattr(cfg.images, split), ids, blobs)
        else:
            write_jpeg_dir(out / getattr(cfg.images, split), ids, blobs, cfg.images.suffix)
        if split == "train":
            artifacts.write_csv(out / cfg.files.train, meta)
        else:
            artifacts.write_csv(out / cfg.files.test, meta[cfg.table.test_columns])
            artifacts.write_csv(out / cfg.files.test_labels, meta[[idc, gc, tc]])
            sample = pd.DataFrame({idc: ids, tc: 0.3 if cfg.name == "isic2024" else 0.0})
            artifacts.write_csv(out / cfg.files.sample_submission, sample)
        summary[split] = {
            "rows": len(meta),
            "positives": int(meta[tc].sum()),
            "patients": int(meta[gc].nunique()),
        }
    summary["seconds"] = round(time.time() - t0, 1)
    summary["git_commit"] = artifacts.git_commit()
    artifacts.write_json(out / "synthetic.json", summary)
    artifacts.write_text(out / "synthetic-config.yaml", to_yaml(cfg))
    return summary
