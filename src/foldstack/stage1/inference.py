"""Stage-1 inference: every given fold model on each batch (one pass over the images for k models), flip
TTA, sharded across ranks and gathered back in row order (no padding rows)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from foldstack.runs import Stage1Run
from foldstack.stage1.config import OofConfig
from foldstack.stage1.data import DeviceNormalize, LesionDataset, MetaEncoder, flip_views, passthrough
from foldstack.stage1.model import LesionNet
from foldstack.stage1.runtime import Runtime, gather_objects


@dataclass
class FoldModel:
    model: nn.Module
    encoder: MetaEncoder | None  # the metadata encoder fitted on the fold's training rows


def eval_loader(ds: LesionDataset | Subset, rt: Runtime, batch_size: int) -> DataLoader:
    """Batches in row order; the cache is read one batch at a time (one fancy-index read per batch)."""
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=False,
        num_workers=rt.num_workers,
        pin_memory=rt.device.type == "cuda",
        collate_fn=passthrough,
        prefetch_factor=4 if rt.num_workers else None,
        persistent_workers=False,
    )


@torch.no_grad()
def predict_models(
    models: list[nn.Module],
    ds: LesionDataset,
    rt: Runtime,
    prep: DeviceNormalize,
    tta: int,
    batch_size: int,
    desc: str | None = None,
    meta_slices: list[slice] | None = None,
) -> np.ndarray:
    """Probabilities of every model on every row of `ds`, shape (k, n) (binary: mean over `tta` flip views
    of sigmoid(logit)) or (k, n, C) (multiclass: of softmax(logits)). Each batch is read, moved to the
    device and flipped once, and every model predicts it: one pass over the images for k models.
    `meta_slices[j]` picks model j's columns of the dataset's metadata (each fold has its own encoder)."""
    states = [m.training for m in models]
    for m in models:
        m.eval()
    shard = np.arange(rt.rank, len(ds), rt.world)
    loader = eval_loader(Subset(ds, shard.tolist()), rt, batch_size)
    use_amp = rt.amp_dtype is not None
    out: list[list[torch.Tensor]] = [[] for _ in models]
    for batch in tqdm(
        loader, desc=desc, unit="batch", leave=False, disable=None if (rt.progress and desc) else True
    ):
        x = prep(batch["image"])
        meta = batch["meta"].to(rt.device, non_blocking=True)
        metas = [meta[:, sl] for sl in meta_slices] if meta_slices else [meta] * len(models)
        sums: list[torch.Tensor | None] = [None] * len(models)
        with torch.autocast(rt.device.type, dtype=rt.amp_dtype or torch.float32, enabled=use_amp):
            for view in flip_views(x, tta):
                for j, m in enumerate(models):
                    mj = metas[j]
                    logit = m(view, mj if mj.shape[1] else None)["logit"].float()
                    p = torch.softmax(logit, dim=1) if logit.ndim == 2 else torch.sigmoid(logit)
                    sums[j] = p if sums[j] is None else sums[j] + p
        for j, s in enumerate(sums):
            out[j].append((s / tta).cpu())  # type: ignore[operator]
    for m, was in zip(models, states, strict=True):
        m.train(was)
    width = getattr(models[0], "n_outputs", 1) if models else 1
    empty = torch.zeros((0, width) if width > 1 else (0,))
    local = np.stack([torch.cat(o).numpy() if o else empty.numpy() for o in out]) if models else None
    parts = gather_objects((shard, local), rt)
    rows = np.concatenate([r for r, _ in parts])
    if len(rows) != len(ds) or not np.array_equal(np.sort(rows), np.arange(len(ds))):
        raise RuntimeError(
            f"gathered {len(rows)} predictions for {len(ds)} rows: shards overlap or miss rows"
        )
    values = np.concatenate([v for _, v in parts], axis=1)
    preds = np.empty((len(models), len(ds), *values.shape[2:]), np.float64)
    preds[:, rows] = values
    return preds


def predict(
    model: nn.Module,
    ds: LesionDataset,
    rt: Runtime,
    prep: DeviceNormalize,
    tta: int,
    batch_size: int,
    desc: str | None = None,
) -> np.ndarray:
    """One model's probabilities, (n,) or (n, C)."""
    return predict_models([model], ds, rt, prep, tta, batch_size, desc)[0]


def fold_models(cfg: OofConfig, run: Stage1Run, records: list[dict], rt: Runtime) -> list[FoldModel]:
    """Every fold model of a stage-1 run from its fold<k>.safetensors, with its fold's metadata encoder."""
    out = []
    for f, info in enumerate(records):
        f = info.get("fold", f)
        enc = MetaEncoder(**info["meta_encoder"]) if info.get("meta_encoder") else None
        model = LesionNet(cfg.model, enc.size if enc else 0, n_outputs=cfg.n_outputs)
        model.load_state_dict(load_file(str(run.fold_weights(f))))
        mf = torch.channels_last if rt.channels_last else torch.contiguous_format
        out.append(FoldModel(model.to(rt.device, memory_format=mf), enc))
    return out


def predict_folds_on(
    cfg: OofConfig,
    models: list[FoldModel],
    table: pd.DataFrame,
    images: Any,
    rt: Runtime,
    mean: tuple,
    std: tuple,
    desc: str | None = None,
) -> np.ndarray:
    """Every fold model on every row of `table` (row i's image is images[i]) in one pass over the images:
    (k, n) or (k, n, C). Each model gets its own fold's metadata encoding."""
    metas = [
        m.encoder.transform(table) if m.encoder else np.zeros((len(table), 0), np.float32) for m in models
    ]
    bounds = np.cumsum([0, *(a.shape[1] for a in metas)])
    ds = LesionDataset(
        images, np.arange(len(table)), None, None, np.hstack(metas), ids=table[cfg.columns.id].tolist()
    )
    prep = DeviceNormalize(mean, std, rt.device, rt.channels_last)
    slices = [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
    return predict_models(
        [m.model for m in models], ds, rt, prep, cfg.predict.tta, cfg.predict.batch_size, desc, slices
    )
