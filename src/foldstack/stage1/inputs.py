"""What stage 1 reads: the metadata in folds order, the decoded images (cache or on the fly), the
preprocessing, each fold's train/inner-validation/held-out datasets, and the config hash that says whether
a fold's saved set was made by this config."""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from foldstack import artifacts
from foldstack.data.cache import image_size, open_cache, timm_data_config
from foldstack.data.images import check_ids, open_images
from foldstack.data.metadata import read_metadata
from foldstack.errors import DataError
from foldstack.folds import load_folds
from foldstack.runs import Runs
from foldstack.stage1.config import OofConfig
from foldstack.stage1.data import DecodedImages, LesionDataset, MetaEncoder, build_augment
from foldstack.stage1.extra import ExtraRows, read_extra, with_extra
from foldstack.stage1.model import resolve_weights
from foldstack.stage1.runtime import Runtime, barrier


@dataclass
class Inputs:
    """What every fold reads: metadata, folds, the decoded images and the preprocessing."""

    train: pd.DataFrame  # in folds.csv order; column image_row: the row of its image in train_images
    test: pd.DataFrame
    folds: pd.DataFrame
    folds_meta: dict
    train_images: Any  # (n, size, size, 3) uint8: the cache's memory map, or DecodedImages
    test_images: Any
    img_size: int
    mean: tuple
    std: tuple
    cache_seconds: float = 0.0
    aux: np.ndarray | None = None  # (n train, n_aux) one-hot auxiliary targets, NaN where unknown
    aux_names: tuple[str, ...] = ()
    extra: ExtraRows | None = None  # data.extra: train-only rows


def aux_targets(
    cfg: OofConfig, train: pd.DataFrame, where: Path
) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """model.aux_targets as one multi-label block: per column, one-hot over its values in the train table
    (the label names, the same for every fold), NaN across the column's block where a row has no value."""
    cols = cfg.model.aux_targets
    if not cols:
        return None, ()
    missing = [c for c in cols if c not in train.columns]
    if missing:
        raise DataError(
            f"{where}: model.aux_targets asks for {', '.join(missing)}, not columns of the train metadata "
            f"(ISIC 2024's train-only iddx_1..iddx_5 describe the diagnosis); drop model.aux_targets"
        )
    blocks, names = [], []
    for c in cols:
        values = train[c].astype(object).where(train[c].notna(), None)
        vocab = sorted({str(v) for v in values if v is not None})
        if len(vocab) < 2:
            raise DataError(
                f"{where}: column {c} has {len(vocab)} distinct value(s); an auxiliary target needs 2+"
            )
        onehot = np.array(
            [[float(str(v) == w) for w in vocab] if v is not None else [np.nan] * len(vocab) for v in values],
            np.float32,
        )
        blocks.append(onehot)
        names += [f"{c}={w}" for w in vocab]
    return np.hstack(blocks), tuple(names)


def input_config(cfg: OofConfig) -> tuple[int, tuple, tuple]:
    """Input size and normalisation: the config's, else timm's data config of the backbone's pretrained
    weights (224 px and ImageNet's mean and std when it has none)."""
    dc = timm_data_config(cfg.model.backbone)
    return image_size(cfg), tuple(cfg.data.mean or dc["mean"]), tuple(cfg.data.std or dc["std"])


def image_source(
    cfg: OofConfig, data_dir: Path, split: str, table: pd.DataFrame, size: int, rt: Runtime
) -> tuple[Any, float]:
    """The decoded images of the split's ids, row i = table row i (the metadata CSV's order, which
    `make cache` builds in), and the seconds spent on the cache: the uint8 cache (built by the main rank
    when missing or stale, then opened by the others), or with data.cache=false the files decoded on
    every read."""
    t0 = time.perf_counter()
    ids = table[cfg.columns.id].astype(str).tolist()
    if not cfg.data.cache:
        store = open_images(cfg, data_dir, split)
        check_ids(store, ids)
        return DecodedImages(store, ids, size), 0.0
    if rt.main:
        cache = open_cache(cfg, data_dir, split, ids, size, progress=rt.progress)
    barrier(rt)
    if not rt.main:
        cache = open_cache(cfg, data_dir, split, ids, size, progress=False)
    return cache.array, time.perf_counter() - t0


def load_inputs(cfg: OofConfig, data_dir: Path, rt: Runtime) -> Inputs:
    folds, fmeta = load_folds(cfg)
    train = read_metadata(cfg, data_dir, "train")
    test = read_metadata(cfg, data_dir, "test")
    ids = cfg.columns.id
    if set(folds["id"]) != set(train[ids]):
        raise DataError(
            f"{Runs.of(cfg).folds_csv} was made on other data than {data_dir}: rerun "
            f"`make folds FORCE=1 DATA={data_dir}`"
        )
    size, mean, std = input_config(cfg)
    train_images, s1 = image_source(cfg, data_dir, "train", train, size, rt)
    test_images, s2 = image_source(cfg, data_dir, "test", test, size, rt)
    # rows in folds.csv order; image_row: where each row's image is (the CSV's order)
    train = train.assign(image_row=np.arange(len(train))).set_index(ids).loc[folds["id"]].reset_index()
    train[cfg.columns.target] = folds["target"].to_numpy()  # integer codes: 0/1 or the class index
    aux, aux_names = aux_targets(cfg, train, data_dir / cfg.files.train)
    extra = read_extra(cfg, train, test, size)
    return Inputs(
        train, test, folds, fmeta, train_images, test_images, size, mean, std, s1 + s2, aux, aux_names, extra
    )


def config_sha(cfg: OofConfig, inputs: Inputs) -> str:
    """What decides a fold's result: the config (less loader workers), the folds and the data."""
    dump = cfg.model_dump(mode="json")
    for key in ("num_workers", "cache"):  # how images are fed, not what the model sees
        dump["data"].pop(key, None)
    dump["train"].pop("eval_every", None)  # what the log shows, not what the model learns
    dump.pop("kernel", None)  # the Kaggle kernel's limits
    dump.pop("published", None)  # the row counts make download checks a download against
    key = {"config": dump, "folds": inputs.folds_meta["sha256"], "data": inputs.folds_meta["data_sha256"]}
    weights = resolve_weights(cfg.model)
    if weights:  # what the backbone starts from (the file's content, not its name)
        key["weights"] = artifacts.sha256_file(weights)
    if inputs.extra is not None:  # the extra rows' ids, targets and images, not only their folder names
        key["extra"] = inputs.extra.sha256
    return artifacts.sha256_bytes(json.dumps(key, sort_keys=True).encode())


@dataclass
class FoldData:
    train: LesionDataset  # the other folds (less the inner split)
    valid: LesionDataset  # the held-out fold: scored, never steers training
    inner: LesionDataset | None  # patients of the other folds kept for early stopping / best_inner
    encoder: MetaEncoder | None


def inner_split(cfg: OofConfig, tr: pd.DataFrame, fold: int) -> np.ndarray:
    """Boolean mask of the training rows whose patients form the inner validation split."""
    mask = np.zeros(len(tr), dtype=bool)
    frac = cfg.train.inner_val_fraction
    if frac <= 0:
        return mask
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = max(2, round(1 / frac))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=cfg.train.seed + fold)
    with warnings.catch_warnings():  # few positives: the split may hold none, then the inner loss is watched
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        _, inner = next(splitter.split(tr, tr[cfg.columns.target], tr[cfg.columns.group]))
    mask[inner] = True
    return mask


def fold_datasets(cfg: OofConfig, inp: Inputs, fold: int) -> FoldData:
    """A fold's datasets over the decoded images, and the metadata encoder fitted on its training rows."""
    is_val = (inp.folds["fold"] == fold).to_numpy()
    rows = np.arange(len(inp.train))
    tr, va = rows[~is_val], rows[is_val]
    in_inner = inner_split(cfg, inp.train.iloc[tr], fold)
    tr, inner = tr[~in_inner], tr[in_inner]
    enc = MetaEncoder.fit(cfg, cfg.model.meta_columns, inp.train.iloc[tr]) if cfg.model.meta else None
    ids, tgt = cfg.columns.id, cfg.columns.target

    def ds(r: np.ndarray, augment=None, seed: int = 0, aux: bool = False) -> LesionDataset:
        df = inp.train.iloc[r]
        meta = enc.transform(df) if enc else None
        images = df["image_row"].to_numpy()
        aux_rows = inp.aux[r] if aux and inp.aux is not None else None
        return LesionDataset(
            inp.train_images, images, augment, df[tgt].to_numpy(), meta, seed, df[ids].tolist(), aux_rows
        )

    train = ds(tr, build_augment(cfg.augment), cfg.train.seed * 1000 + fold, aux=True)
    if inp.extra is not None:
        train = with_extra(train, inp.extra, cfg, enc, len(inp.aux_names))
    return FoldData(train, ds(va), ds(inner) if len(inner) else None, enc)
