"""Stage-1 inputs: albumentations pipelines, the lesion dataset, metadata encoding, epoch sampling."""

from __future__ import annotations

from dataclasses import dataclass, field

import albumentations as A
import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from foldstack.config import CompetitionConfig
from foldstack.data.images import ImageStore
from foldstack.errors import ConfigError
from foldstack.stage1.config import AugmentCfg


def build_transform(
    augment: tuple[AugmentCfg, ...], img_size: int, mean: tuple, std: tuple, train: bool
) -> A.Compose:
    """Resize (+ the configured augmentations when training) + normalise, as one albumentations pipeline."""
    steps: list[A.BasicTransform] = [A.Resize(img_size, img_size, interpolation=cv2.INTER_AREA)]
    if train:
        for aug in augment:
            cls = getattr(A, aug.name, None)
            if cls is None or not isinstance(cls, type):
                raise ConfigError(f"augment: unknown albumentations transform {aug.name!r}")
            try:
                steps.append(cls(**aug.params))
            except (TypeError, ValueError) as e:
                raise ConfigError(f"augment: {aug.name}({aug.params}) is invalid: {e}") from None
    steps.append(A.Normalize(mean=mean, std=std, max_pixel_value=255.0))
    return A.Compose(steps)


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


class LesionDataset(Dataset):
    """Item i -> {'image': CHW float tensor, 'meta': vector, 'target': float, 'index': i}.

    A key (epoch, i) re-seeds the augmentations from (aug_seed, epoch, i) first, so the augmented
    image is the same whatever the process, the number of loader workers or a resume in between.
    """

    def __init__(
        self,
        ids: list[str],
        store: ImageStore,
        transform: A.Compose,
        targets: np.ndarray | None = None,
        meta: np.ndarray | None = None,
        aug_seed: int = 0,
    ) -> None:
        self.ids, self.store, self.transform, self.aug_seed = ids, store, transform, aug_seed
        self.targets = np.zeros(len(ids), np.float32) if targets is None else targets.astype(np.float32)
        self.meta = np.zeros((len(ids), 0), np.float32) if meta is None else meta

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        if isinstance(key, tuple):
            epoch, i = key
            seed = np.random.SeedSequence([self.aug_seed, epoch, i]).generate_state(1)[0]
            self.transform.set_random_seed(int(seed))
        else:
            i = key
        img = self.store.read(self.ids[i])  # DataError names the id and the file
        x = self.transform(image=img)["image"]
        return {
            "image": torch.from_numpy(x.transpose(2, 0, 1).copy()),
            "meta": torch.from_numpy(self.meta[i]),
            "target": torch.tensor(self.targets[i]),
            "index": i,
        }


def epoch_indices(targets: np.ndarray, n_neg: int, seed: int, epoch: int) -> np.ndarray:
    """All positives plus n_neg negatives drawn afresh each epoch, shuffled."""
    rng = np.random.default_rng([seed, epoch])
    pos, neg = np.flatnonzero(targets == 1), np.flatnonzero(targets == 0)
    if n_neg < len(neg):
        neg = rng.choice(neg, size=n_neg, replace=False)
    idx = np.concatenate([pos, neg])
    rng.shuffle(idx)
    return idx


def flip_views(x: torch.Tensor, n: int) -> list[torch.Tensor]:
    """The first n of: identity, h-flip, v-flip, both, and their transposes (NCHW)."""
    views = [x, x.flip(3), x.flip(2), x.flip(2, 3)]
    views += [v.transpose(2, 3) for v in views]
    return views[:n]
