"""Train-only extra rows (`data.extra`): folders in some competition's layout (an older ISIC archive) whose
labelled images join every fold's training rows, never the OOF, the scoring, the inner split or early
stopping. Their ids must not collide with the competition's train or test ids; their content (the mapped
id/target table and the images' content sha256) enters the run's config hash."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from foldstack import artifacts
from foldstack.config import load_competition
from foldstack.data.cache import open_cache
from foldstack.data.images import check_ids, open_images
from foldstack.data.metadata import read_metadata
from foldstack.errors import DataError
from foldstack.stage1.config import ExtraCfg, OofConfig
from foldstack.stage1.data import DecodedImages, LesionDataset, MetaEncoder

MAX_LISTED = 10


@dataclass
class ExtraRows:
    """Every extra folder's rows, in order: the table in the competition's column names (id, target and
    whatever else the mapping gives), their decoded images (row i = table row i) and the content hash."""

    table: pd.DataFrame
    images: Any
    sha256: str


class ConcatImages:
    """Several image sources as one: row i of the first, then the rows of the next (int indexing)."""

    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts
        self.starts = np.cumsum([0, *(len(p) for p in parts)])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, row: int) -> np.ndarray:
        part = int(np.searchsorted(self.starts, row, side="right")) - 1
        return np.asarray(self.parts[part][int(row) - int(self.starts[part])])


def _listed(ids: list[str]) -> str:
    return ", ".join(ids[:MAX_LISTED]) + (", ..." if len(ids) > MAX_LISTED else "")


def _one_table(cfg: OofConfig, extra: ExtraCfg) -> tuple[pd.DataFrame, Any, str]:
    """One extra folder: its train metadata read by its own layout's config, renamed by the mapping,
    checked (id and a 0/1 target present), and its images (cache or decoded on the fly)."""
    layout = load_competition(extra.layout or cfg.name, f"runs_dir={cfg.runs_dir}")
    folder = Path(extra.dir).expanduser()
    where = folder / layout.files.train
    raw = read_metadata(layout, folder, "train")
    own_id = raw[layout.columns.id].astype(str).tolist()
    table = raw.rename(columns=dict(extra.columns))
    ids, tgt = cfg.columns.id, cfg.columns.target
    missing = [c for c in (ids, tgt) if c not in table.columns]
    if missing:
        raise DataError(
            f"{where}: data.extra needs the columns {', '.join(missing)} of {cfg.name} after the mapping "
            f"data.extra.columns={dict(extra.columns)} (its columns: {', '.join(map(str, raw.columns[:20]))})"
        )
    y = pd.to_numeric(table[tgt], errors="coerce")
    bad = table.loc[~y.isin([0, 1]), ids].astype(str).tolist()
    if bad:
        raise DataError(f"{where}: column {tgt} must be 0 or 1 for extra rows; not so for ids {_listed(bad)}")
    table = table.assign(**{ids: table[ids].astype(str), tgt: y.astype(np.int64)})
    size = cfg.data.img_size or 0
    if cfg.data.cache:
        cache = open_cache(layout, folder, "train", own_id, size, progress=False)
        return table, cache.array, str(cache.meta.get("content_sha256", ""))
    store = open_images(layout, folder, "train")
    check_ids(store, own_id)
    return table, DecodedImages(store, own_id, size), artifacts.sha256_file(where)


def read_extra(cfg: OofConfig, train: pd.DataFrame, test: pd.DataFrame, size: int) -> ExtraRows | None:
    """Every data.extra folder, checked: no id twice, none that is also a train or test id."""
    if not cfg.data.extra:
        return None
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"img_size": size})})
    tables, images, hashes = [], [], []
    for extra in cfg.data.extra:
        table, imgs, content = _one_table(cfg, extra)
        tables.append(table.assign(_extra_dir=extra.dir))
        images.append(imgs)
        hashes.append(content)
    ids = cfg.columns.id
    table = pd.concat(tables, ignore_index=True)
    dup = table.loc[table[ids].duplicated(), ids].tolist()
    if dup:
        raise DataError(f"data.extra: ids appear twice across the extra folders: {_listed(dup)}")
    for split, other in (("train", train), ("test", test)):
        clash = sorted(set(table[ids]) & set(other[ids].astype(str)))
        if clash:
            dirs = sorted(set(table.loc[table[ids].isin(clash), "_extra_dir"]))
            raise DataError(
                f"data.extra {', '.join(dirs)}: {len(clash)} id(s) are also {cfg.name} {split} ids: "
                f"{_listed(clash)}; extra rows must be other images (drop them from the extra folder)"
            )
    rows = "\n".join(f"{i},{y}" for i, y in zip(table[ids], table[cfg.columns.target], strict=True))
    sha = artifacts.sha256_bytes("\n".join([rows, *hashes]).encode())
    return ExtraRows(table.drop(columns="_extra_dir"), ConcatImages(images), sha)


def with_extra(
    ds: LesionDataset, extra: ExtraRows, cfg: OofConfig, enc: MetaEncoder | None, n_aux: int
) -> LesionDataset:
    """A fold's training dataset plus every extra row (their auxiliary targets unknown)."""
    t = extra.table
    n = len(t)
    if enc is not None:  # a metadata column the extra folder lacks is missing (flagged), not an error
        t = t.assign(**{c: np.nan for c in [*enc.numeric, *enc.categorical] if c not in t.columns})
    meta = enc.transform(t) if enc else None
    aux = None if ds.aux is None else np.vstack([ds.aux, np.full((n, n_aux), np.nan, np.float32)])
    images = ConcatImages([ds.images, extra.images])
    return LesionDataset(
        images,
        np.concatenate([ds.rows, len(ds.images) + np.arange(n)]),
        ds.augment,
        np.concatenate([ds.targets, t[cfg.columns.target].to_numpy(np.float32)]),
        None if meta is None else np.vstack([ds.meta, meta]),
        ds.aug_seed,
        [*ds.ids, *t[cfg.columns.id].tolist()],
        aux,
    )
