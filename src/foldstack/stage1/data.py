"""Stage-1 inputs: uint8 augmentations, device-side normalisation, the lesion dataset, metadata encoding,
epoch sampling."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import albumentations as A
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from foldstack.config import CompetitionConfig
from foldstack.data.decode import decode_resized, will_need
from foldstack.data.images import ImageStore
from foldstack.errors import ConfigError
from foldstack.stage1.config import AugmentCfg


def build_augment(augment: tuple[AugmentCfg, ...]) -> A.Compose | None:
    """The configured training augmentations as one albumentations pipeline on uint8 images (the cache
    holds them resized already; the float conversion and normalisation happen on the device), or None."""
    steps: list[A.BasicTransform] = []
    for aug in augment:
        cls = getattr(A, aug.name, None)
        if cls is None or not isinstance(cls, type):
            raise ConfigError(f"augment: unknown albumentations transform {aug.name!r}")
        try:
            steps.append(cls(**aug.params))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"augment: {aug.name}({aug.params}) is invalid: {e}") from None
    return A.Compose(steps) if steps else None


class DeviceNormalize:
    """uint8 N x H x W x 3 batch (host) -> float N x 3 x H x W on the device, (x / 255 - mean) / std.

    The transfer carries uint8 (4x less than float32); NHWC permuted to NCHW is already channels_last,
    so a channels_last model gets its layout without a copy.
    """

    def __init__(self, mean: tuple, std: tuple, device: torch.device, channels_last: bool) -> None:
        self.device, self.channels_last = device, channels_last
        self.shift = torch.tensor([255.0 * m for m in mean], device=device).view(1, 3, 1, 1)
        self.scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=device).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        mf = torch.channels_last if self.channels_last else torch.contiguous_format
        # The layout change is made on uint8 (a quarter of the bytes), then one float copy normalised in
        # place: the same values, op for op, as (x.float() - shift) * scale.
        x = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2).contiguous(memory_format=mf)
        return x.to(torch.float32, copy=True).sub_(self.shift).mul_(self.scale)  # never the caller's tensor


@dataclass
class MetaEncoder:
    """Numeric columns standardised (NaN -> 0 plus a missing flag), categorical ones one-hot.

    Fitted on the training rows of a fold only, so nothing of the held-out fold leaks in.
    """

    numeric: list[str]
    categorical: list[str]
    means: dict[str, float] = field(default_factory=dict)
    stds: dict[str, float] = field(default_factory=dict)
    vocab: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def fit(cls, cfg: CompetitionConfig, columns: tuple[str, ...], train: pd.DataFrame) -> MetaEncoder:
        unknown = [c for c in columns if c not in cfg.table.test_columns]
        if unknown:
            raise ConfigError(
                f"model.meta_columns {unknown} are not test-side columns of {cfg.name} "
                f"(train-only columns leak the label and are never features)"
            )
        numeric = [c for c in columns if cfg.table.columns[c] in ("int", "float")]
        categorical = [c for c in columns if c not in numeric]
        enc = cls(numeric, categorical)
        for c in numeric:
            x = train[c].astype(float)
            enc.means[c], enc.stds[c] = float(x.mean()), float(x.std() or 1.0)
        for c in categorical:
            enc.vocab[c] = sorted(train[c].dropna().astype(str).unique().tolist())
        return enc

    @property
    def size(self) -> int:
        return 2 * len(self.numeric) + sum(len(v) + 1 for v in self.vocab.values())

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        parts = []
        for c in self.numeric:
            x = df[c].astype(float).to_numpy()
            missing = np.isnan(x)
            parts += [np.where(missing, 0.0, (x - self.means[c]) / self.stds[c]), missing.astype(float)]
        for c in self.categorical:
            values = df[c].astype(object).where(df[c].notna(), None).to_numpy()
            index = {v: i for i, v in enumerate(self.vocab[c])}
            onehot = np.zeros((len(df), len(self.vocab[c]) + 1))  # last slot: missing or unseen
            onehot[np.arange(len(df)), [index.get(v, len(index)) for v in values]] = 1.0
            parts.append(onehot)
        if not parts:
            return np.zeros((len(df), 0), np.float32)
        return np.column_stack(parts).astype(np.float32)

    def state(self) -> dict:
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "means": self.means,
            "stds": self.stds,
            "vocab": self.vocab,
        }


class DecodedImages:
    """Images decoded (and resized by the cache's rule) on the fly: the source for a one-pass stream
    (the Kaggle kernel's test set), where a cache would cost a second pass over the files."""

    def __init__(self, store: ImageStore, ids: list[str], size: int) -> None:
        self.store, self.ids, self.size = store, ids, size

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, row: int) -> np.ndarray:
        i = self.ids[row]
        return decode_resized(self.store.read_bytes(i), i, self.store.where, self.size)


class LesionDataset(Dataset):
    """Item k -> image `images[rows[k]]` (size x size x 3 uint8), meta vector, target, index k (and the
    auxiliary targets `aux[k]` when given).

    `images` is the uint8 cache (a memory-mapped array) or DecodedImages. Batches are fetched whole
    (__getitems__: one fancy-index read of the cache when nothing is augmented) and come out as a dict
    of stacked tensors; loaders over it use `collate=passthrough`. A key (epoch, k) re-seeds the
    augmentations from (aug_seed, epoch, k) first, so the augmented image is the same whatever the
    process, the number of loader workers or a resume in between.
    """

    def __init__(
        self,
        images: Any,
        rows: np.ndarray,
        augment: A.Compose | None = None,
        targets: np.ndarray | None = None,
        meta: np.ndarray | None = None,
        aug_seed: int = 0,
        ids: list[str] | None = None,
        aux: np.ndarray | None = None,
    ) -> None:
        self.images, self.rows, self.augment, self.aug_seed = (
            images,
            np.asarray(rows, np.int64),
            augment,
            aug_seed,
        )
        n = len(self.rows)
        self.ids = ids if ids is not None else [str(i) for i in range(n)]
        self.targets = np.zeros(n, np.float32) if targets is None else targets.astype(np.float32)
        self.meta = np.zeros((n, 0), np.float32) if meta is None else meta.astype(np.float32)
        self.aux = None if aux is None else aux.astype(np.float32)  # (n, n_aux), NaN: unknown

    def __len__(self) -> int:
        return len(self.rows)

    def _image(self, key: int | tuple[int, int]) -> np.ndarray:
        if isinstance(key, tuple):
            epoch, k = key
        else:
            epoch, k = None, key
        img = np.asarray(self.images[self.rows[k]])
        if self.augment is not None:
            if epoch is not None:
                seed = np.random.SeedSequence([self.aug_seed, epoch, k]).generate_state(1)[0]
                self.augment.set_random_seed(int(seed))
            img = self.augment(image=img)["image"]
        return img

    def __getitems__(self, keys: list) -> dict:
        index = np.array([k[1] if isinstance(k, tuple) else k for k in keys], np.int64)
        will_need(self.images, self.rows[index])  # the batch's cache rows read at once, not fault by fault
        if self.augment is None and isinstance(self.images, np.ndarray):
            rows = self.rows[index]
            order = np.argsort(rows, kind="stable")  # a sorted fancy index reads the memmap in file order
            images = np.empty((len(rows), *self.images.shape[1:]), np.uint8)
            images[order] = self.images[rows[order]]
        else:
            images = np.stack([self._image(k) for k in keys])
        batch = {
            "image": torch.from_numpy(np.ascontiguousarray(images)),
            "meta": torch.from_numpy(self.meta[index]),
            "target": torch.from_numpy(self.targets[index]),
            "index": torch.from_numpy(index),
        }
        if self.aux is not None:
            batch["aux"] = torch.from_numpy(self.aux[index])
        return batch

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        batch = self.__getitems__([key])
        return {k: v[0] for k, v in batch.items()}


def passthrough(batch: dict) -> dict:
    """The collate function of loaders over LesionDataset: __getitems__ already made the batch."""
    return batch


def epoch_indices(
    targets: np.ndarray, n_neg: int, seed: int, epoch: int, sampling: str = "random", pos_repeat: int = 1
) -> np.ndarray:
    """Every positive (pos_repeat times) plus n_neg negatives, shuffled.

    random: the negatives drawn afresh each epoch. partition: a cycle is a seeded permutation of all
    negatives cut into ceil(n_neg_all / n_neg) near-equal disjoint parts; epoch e shows part e mod parts
    of cycle e // parts, so every negative is seen once per cycle.
    """
    rng = np.random.default_rng([seed, epoch])
    pos, neg = np.flatnonzero(targets == 1), np.flatnonzero(targets == 0)
    if n_neg < len(neg):
        if sampling == "partition":
            parts = -(-len(neg) // max(n_neg, 1))
            cycle, part = divmod(epoch, parts)
            neg = np.array_split(np.random.default_rng([seed, 7919, cycle]).permutation(neg), parts)[part]
        else:
            neg = rng.choice(neg, size=n_neg, replace=False)
    idx = np.concatenate([np.tile(pos, pos_repeat), neg])
    rng.shuffle(idx)
    return idx


def flip_views(x: torch.Tensor, n: int) -> list[torch.Tensor]:
    """The first n of: identity, h-flip, v-flip, both, and their transposes (NCHW)."""
    flips = [(), (3,), (2,), (2, 3)][: min(n, 4)]
    views = [x.flip(d) if d else x for d in flips]
    views += [v.transpose(2, 3) for v in views[: max(n - 4, 0)]]
    return views
