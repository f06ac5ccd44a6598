"""Inference with flip TTA, sharded across ranks and gathered back in row order (no padding rows)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from foldstack.stage1.data import LesionDataset, flip_views
from foldstack.stage1.runtime import Runtime, gather_objects


@torch.no_grad()
def predict(
    model: nn.Module, ds: LesionDataset, rt: Runtime, tta: int, batch_size: int, desc: str | None = None
) -> np.ndarray:
    """Probability per row of `ds`: the mean over `tta` flip views of sigmoid(logit), shape (n,), or
    for a multiclass model of softmax(logits), shape (n, n_classes)."""
    was_training = model.training
    model.eval()
    shard = np.arange(rt.rank, len(ds), rt.world)
    loader = DataLoader(
        Subset(ds, shard.tolist()),
        batch_size=batch_size,
        shuffle=False,
        num_workers=rt.num_workers,
        pin_memory=rt.device.type == "cuda",
    )
    mf = torch.channels_last if rt.channels_last else torch.contiguous_format
    out = []
    use_amp = rt.amp_dtype is not None
    for batch in tqdm(
        loader, desc=desc, unit="batch", leave=False, disable=None if (rt.progress and desc) else True
    ):
        x = batch["image"].to(rt.device, non_blocking=True).contiguous(memory_format=mf)
        meta = batch["meta"].to(rt.device, non_blocking=True)
        prob = None
        with torch.autocast(rt.device.type, dtype=rt.amp_dtype or torch.float32, enabled=use_amp):
            for view in flip_views(x, tta):
                logit = model(view, meta if meta.shape[1] else None)["logit"].float()
                p = torch.softmax(logit, dim=1) if logit.ndim == 2 else torch.sigmoid(logit)
                prob = p if prob is None else prob + p
        out.append((prob / tta).cpu().numpy())
    model.train(was_training)
    width = getattr(model, "n_outputs", 1)
    local = np.concatenate(out) if out else np.zeros((0, width) if width > 1 else 0, np.float32)
    parts = gather_objects((shard, local), rt)
    rows = np.concatenate([r for r, _ in parts])
    if len(rows) != len(ds) or not np.array_equal(np.sort(rows), np.arange(len(ds))):
        raise RuntimeError(
            f"gathered {len(rows)} predictions for {len(ds)} rows: shards overlap or miss rows"
        )
    values = np.concatenate([v for _, v in parts])
    preds = np.empty((len(ds), *values.shape[1:]), np.float64)
    preds[rows] = values
    return preds
