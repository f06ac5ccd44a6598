"""The parts of one fold's training: the per-epoch negative-downsampling sampler and its loader, the
optimizer and scheduler, the model on its device (DDP, torch.compile) and the loss with its class weights."""

from __future__ import annotations

import numpy as np
import torch
from timm.optim import create_optimizer_v2, param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from torch import nn
from torch.utils.data import DataLoader, Sampler

from foldstack.stage1.config import OofConfig, TrainCfg
from foldstack.stage1.data import LesionDataset, epoch_indices, passthrough
from foldstack.stage1.runtime import Runtime


class EpochSampler(Sampler[tuple[int, int]]):
    """This rank's share of the epoch's rows: every positive + this epoch's negatives (see epoch_indices)."""

    def __init__(
        self,
        targets: np.ndarray,
        n_neg: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        sampling: str = "random",
        pos_repeat: int = 1,
    ):
        self.targets, self.n_neg, self.seed, self.rank, self.world = targets, n_neg, seed, rank, world
        self.sampling, self.pos_repeat = sampling, pos_repeat
        self.epoch = 0

    @classmethod
    def of(cls, cfg: OofConfig, targets: np.ndarray, fold: int, rt: Runtime) -> EpochSampler:
        """The sampler of a fold's training rows as train.* asks (multiclass: every row every epoch)."""
        t = cfg.train
        y = np.zeros(len(targets), np.float32) if cfg.multiclass else targets  # all "negatives", all kept
        n_neg = t.negatives(int((y == 1).sum()), int((y == 0).sum()))
        return cls(y, n_neg, t.seed + fold, rt.rank, rt.world, t.neg_sampling, t.pos_oversample)

    def epoch_rows(self, epoch: int) -> np.ndarray:
        return epoch_indices(self.targets, self.n_neg, self.seed, epoch, self.sampling, self.pos_repeat)

    def negatives_seen(self, epochs: int, per_epoch: int | None = None) -> float:
        """Share of the negatives shown at least once in `epochs` epochs (of the first `per_epoch` rows of
        each epoch, when a step cap cuts it short)."""
        neg = self.targets == 0
        seen = np.zeros(len(self.targets), dtype=bool)
        for e in range(epochs):
            seen[self.epoch_rows(e)[:per_epoch]] = True
        return round(float(seen[neg].mean()), 4) if neg.any() else 1.0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> np.ndarray:
        idx = self.epoch_rows(self.epoch)
        n = len(idx) // self.world * self.world  # equal shares, so every rank runs the same steps
        return idx[self.rank : n : self.world]

    def __iter__(self):
        return iter(
            [(self.epoch, i) for i in self.indices().tolist()]
        )  # (epoch, row): seeds the augmentation

    def __len__(self) -> int:
        return len(self.indices())


def make_loader(
    ds: LesionDataset,
    rt: Runtime,
    batch_size: int,
    sampler: Sampler | None = None,
    drop_last: bool = False,
    seed: int | None = None,
) -> DataLoader:
    """A loader; with `seed`, the loader draws its worker base seed from its own generator, so iterating
    it never advances the global torch RNG (which dropout uses): a resumed fold draws the same dropout
    masks as an uninterrupted one, with or without persistent workers."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        drop_last=drop_last,
        num_workers=rt.num_workers,
        pin_memory=rt.device.type == "cuda",
        persistent_workers=rt.num_workers > 0,
        prefetch_factor=4 if rt.num_workers else None,
        generator=gen,
        collate_fn=passthrough,
    )


def build_optimizer(model: nn.Module, t: TrainCfg) -> torch.optim.Optimizer:
    """timm's optimizer factory over the trainable parameters, weight decay off for biases and norm layers;
    the backbone's groups at lr x train.backbone_lr_mult."""

    def groups(m: nn.Module) -> list[dict]:
        backbone = getattr(m, "backbone", None)
        if backbone is None or t.backbone_lr_mult == 1.0:
            return param_groups_weight_decay(m, t.weight_decay)
        rest = nn.ModuleList([c for name, c in m.named_children() if name != "backbone"])
        scaled = param_groups_weight_decay(backbone, t.weight_decay)
        for g in scaled:  # timm's schedulers set lr = schedule x lr_scale; torch's plateau scales lr itself
            g |= (
                {"lr": t.lr * t.backbone_lr_mult}
                if t.scheduler == "plateau"
                else {"lr_scale": t.backbone_lr_mult}
            )
        return [g for g in scaled + param_groups_weight_decay(rest, t.weight_decay) if g["params"]]

    return create_optimizer_v2(
        model, opt=t.optimizer, lr=t.lr, weight_decay=t.weight_decay, param_group_fn=groups
    )


def build_scheduler(opt: torch.optim.Optimizer, t: TrainCfg, steps_per_epoch: int, mode: str = "min"):
    """timm's per-step cosine schedule with linear warm-up (constant: a cosine from lr to lr), or a
    per-epoch ReduceLROnPlateau.

    The plateau schedule is torch's, not timm's PlateauLRScheduler: timm's does not save its best-metric
    and patience state (deprecated for that reason), and a resumed fold must continue bit for bit. It
    watches the inner split of the training folds when there is one, else the training loss; never the
    held-out fold being scored.
    """
    if t.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode=mode, factor=t.plateau_factor, patience=t.plateau_patience, min_lr=t.min_lr
        )
    total = max(1, t.epochs * steps_per_epoch)
    warm = min(int(t.warmup_epochs * steps_per_epoch), total - 1)
    return CosineLRScheduler(
        opt,
        t_initial=total - warm,
        lr_min=t.lr if t.scheduler == "constant" else t.min_lr,
        warmup_t=warm,
        warmup_lr_init=t.lr / max(warm, 1),
        warmup_prefix=True,
        t_in_epochs=False,
    )


def is_plateau(sched: object) -> bool:
    return isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)


def class_weights(t: TrainCfg, targets: np.ndarray, n_classes: int) -> list[float] | None:
    """Cross-entropy class weights: None, or 'balanced' = n / (C * count), a class with no row gets 0."""
    if t.class_weight is None:
        return None
    counts = np.bincount(targets.astype(np.int64), minlength=n_classes).astype(float)
    w = np.where(counts > 0, len(targets) / (n_classes * np.maximum(counts, 1)), 0.0)
    return [round(float(v), 6) for v in w]


def pos_weight(t: TrainCfg, targets: np.ndarray) -> float | None:
    """BCE pos_weight: the config's number, or negatives/positives of what one epoch actually shows."""
    if t.pos_weight != "auto":
        return t.pos_weight
    n_pos = int((targets == 1).sum())
    return t.negatives(n_pos, int((targets == 0).sum())) / max(n_pos * t.pos_oversample, 1)


def on_device(model: nn.Module, rt: Runtime, compile_model: bool) -> tuple[nn.Module, nn.Module]:
    """(the model on rt's device in its memory format, what training calls: DDP over it when there are
    several processes, compiled on CUDA when asked)."""
    mf = torch.channels_last if rt.channels_last else torch.contiguous_format
    raw = model.to(rt.device, memory_format=mf)
    wrapped: nn.Module = raw
    if rt.world > 1:
        ids = [rt.device.index] if rt.device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(raw, device_ids=ids)
    if compile_model and rt.device.type == "cuda":
        wrapped = torch.compile(wrapped)
    return raw, wrapped


def loss_function(
    cfg: OofConfig, targets: np.ndarray, rt: Runtime
) -> tuple[nn.Module, float | None, list[float] | None]:
    """(the loss, its positive weight (binary), its class weights (multiclass))."""
    t = cfg.train
    if cfg.multiclass:
        cw = class_weights(t, targets, cfg.n_outputs)
        weight = None if cw is None else torch.tensor(cw, device=rt.device)
        return nn.CrossEntropyLoss(weight=weight), None, cw
    pw = pos_weight(t, targets)
    return (
        nn.BCEWithLogitsLoss(pos_weight=None if pw is None else torch.tensor(pw, device=rt.device)),
        pw,
        None,
    )
