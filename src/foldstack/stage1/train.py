"""Train one fold: per-epoch negative downsampling, AMP, EMA, schedule, per-epoch held-out scores, resume."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from foldstack import artifacts, metrics
from foldstack.errors import ConfigError, FoldstackError
from foldstack.stage1 import checkpoint as ckpt
from foldstack.stage1.config import OofConfig
from foldstack.stage1.data import DeviceNormalize, LesionDataset
from foldstack.stage1.inference import predict
from foldstack.stage1.optim import (
    EpochSampler,
    build_optimizer,
    build_scheduler,
    is_plateau,
    loss_function,
    make_loader,
    on_device,
)
from foldstack.stage1.runtime import Runtime

LOG_EVERY = 10


class TrainingError(FoldstackError):
    """Training cannot go on (e.g. a NaN loss); earlier checkpoints are kept."""


def epoch_line(fold: int, epochs: int, row: dict) -> str:
    """One log line per epoch, the same on a terminal and in a log file."""
    parts = [
        f"fold {fold} epoch {row['epoch']}/{epochs}:",
        f"loss {row['train_loss']:.4f},",
        f"{row['train_images_per_s']:.0f} img/s,",
        f"{row['train_seconds']:.0f} s,",
        f"lr {row['lr']:.2e}",
    ]
    for key in ("valid_pauc", "valid_auc", "ema_valid_pauc", "inner_loss", "inner_pauc", "inner_auc"):
        if key in row:
            parts.append(f"| {key} {row[key]:.4f}")
    return " ".join(parts)


@dataclass
class FoldState:
    """Everything that changes while a fold trains and is needed to resume it."""

    epoch: int = 0  # epochs completed
    step: int = 0
    log: list[dict] = field(default_factory=list)
    best_score: float = float("-inf")
    best_epoch: int = -1
    stopped_early_after: int | None = None


def aux_loss(logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean BCE of the auxiliary multi-label head over the known targets (NaN: unknown, left out)."""
    known = ~torch.isnan(target)
    if not bool(known.any()):
        return logit.sum() * 0.0
    return nn.functional.binary_cross_entropy_with_logits(logit.float()[known], target[known])


class FoldTrainer:
    """Fits one fold's model; `prefix` (runs/.../fold<k>) locates its checkpoint files."""

    def __init__(
        self,
        cfg: OofConfig,
        model: nn.Module,
        rt: Runtime,
        fold: int,
        train_ds: LesionDataset,
        valid_ds: LesionDataset,
        prefix: Path,
        config_sha: str,
        inner_ds: LesionDataset | None = None,
        prep: DeviceNormalize | None = None,
    ) -> None:
        t = cfg.train
        self.cfg, self.t, self.rt, self.fold, self.prefix, self.config_sha = (
            cfg,
            t,
            rt,
            fold,
            prefix,
            config_sha,
        )
        self.train_ds, self.valid_ds, self.inner_ds = train_ds, valid_ds, inner_ds
        self.prep = prep or DeviceNormalize((0.0,) * 3, (1.0,) * 3, rt.device, rt.channels_last)
        # the inner split is scored only when something reads its score
        self.inner_used = inner_ds is not None and (
            t.checkpoint == "best_inner" or t.early_stopping_patience is not None or t.scheduler == "plateau"
        )
        if t.freeze_epochs and rt.world > 1:
            raise ConfigError(
                "train.freeze_epochs toggles which parameters get gradients, which DDP (GPUS>1) cannot "
                "follow: train on one process, or freeze for the whole run with model.freeze_backbone"
            )
        self.raw, self.model = on_device(model, rt, t.compile)
        self.multiclass = cfg.multiclass
        self.sampler = EpochSampler.of(cfg, train_ds.targets, fold, rt)
        self.loader = make_loader(
            train_ds,
            rt,
            t.batch_size,
            self.sampler,
            drop_last=len(self.sampler) > t.batch_size,
            seed=t.seed + fold,
        )
        self.steps_per_epoch = min(len(self.loader), t.max_train_batches or len(self.loader))
        self.opt = build_optimizer(self.raw, t)
        watch_max = self.inner_used and t.monitor != "loss"
        self.sched = build_scheduler(self.opt, t, self.steps_per_epoch, "max" if watch_max else "min")
        self.ema = None
        if t.ema_decay:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.raw, decay=t.ema_decay)
        self.scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)
        self.loss_fn, self.pos_weight, self.class_weights = loss_function(cfg, train_ds.targets, rt)
        self.state = FoldState()
        self.best: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ resume
    # A resumed fold reproduces the uninterrupted one bit for bit (same device and threads): the
    # checkpoint holds the weights, EMA, best-epoch weights, optimizer, scheduler, GradScaler and
    # FoldState, and every global RNG (torch CPU/CUDA: dropout, drop_path; numpy; python). Nothing else
    # carries state across epochs: the sampler is keyed on (seed, epoch), the augmentations on
    # (seed, epoch, row), and the training loader draws its worker seeds from its own generator.
    def resume(self) -> bool:
        """Load the last epoch checkpoint made with the same config; True if one was loaded."""
        loaded = ckpt.load_training_state(self.prefix)
        if loaded is None:
            return False
        info, tensors = loaded
        if info.get("config_sha") != self.config_sha:
            return False
        self.raw.load_state_dict(ckpt.split_state(tensors, "model"))
        if self.ema is not None:
            self.ema.module.load_state_dict(ckpt.split_state(tensors, "ema"))
        ckpt.restore_optimizer(self.opt, tensors, info["optimizer"])
        self.sched.load_state_dict(info["scheduler"])
        if info.get("grad_scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(info["grad_scaler"])
        self.state = FoldState(**info["state"])
        if self.state.best_epoch >= 0 and (best := ckpt.split_state(tensors, "best")):
            self.best = best
        if "rng" in info:
            ckpt.restore_rng(tensors, info["rng"], self.rt.device)
        return True

    def save(self) -> None:
        if not self.rt.main:
            return
        ema = self.ema.module.state_dict() if self.ema is not None else None
        info = {
            "config_sha": self.config_sha,
            "epoch": self.state.epoch,
            "state": self.state.__dict__,
            "scheduler": self.sched.state_dict(),
            "grad_scaler": self.scaler.state_dict(),  # {} when disabled (CPU, bf16, fp32)
        }
        groups = {"model": self.raw.state_dict(), "ema": ema, "best": self.best}
        ckpt.save_training_state(self.prefix, groups, self.opt, info, ckpt.rng_state(self.rt.device))

    # ------------------------------------------------------------------ training
    def _check_finite(self, loss: torch.Tensor, epoch: int, step: int) -> float:
        value = float(loss.detach())
        if not math.isfinite(value):
            kept = (
                "the checkpoint of the last completed epoch is kept"
                if self.state.epoch
                else "no epoch completed"
            )
            raise TrainingError(
                f"fold {self.fold}, epoch {epoch + 1}, step {step + 1}: the loss is {value} "
                f"({kept}, {self.prefix.name}.ckpt.safetensors). Lower train.lr, keep train.grad_clip on, "
                f"or switch train.amp from fp16 to bf16/off."
            )
        return value

    def _step(self, batch: dict) -> torch.Tensor:
        rt = self.rt
        x = self.prep(batch["image"])
        y = batch["target"].to(rt.device, non_blocking=True)
        meta = batch["meta"].to(rt.device, non_blocking=True)
        with torch.autocast(
            rt.device.type, dtype=rt.amp_dtype or torch.float32, enabled=rt.amp_dtype is not None
        ):
            out = self.model(x, meta if meta.shape[1] else None)
        loss = self.loss_fn(out["logit"].float(), y.long() if self.multiclass else y)
        if "aux" in batch and "aux_logit" in out and self.t.aux_loss_weight > 0:
            loss = loss + self.t.aux_loss_weight * aux_loss(out["aux_logit"], batch["aux"].to(rt.device))
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.t.grad_clip:
            self.scaler.unscale_(self.opt)
            nn.utils.clip_grad_norm_(self.raw.parameters(), self.t.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        if not is_plateau(self.sched):
            self.sched.step_update(self.state.step + 1)
        if self.ema is not None:
            self.ema.update(self.raw, step=self.state.step)
        self.state.step += 1
        return loss

    def train_epoch(self, epoch: int) -> dict:
        if self.t.freeze_epochs:  # from the epoch alone, so a resumed fold freezes the same epochs
            self.raw.set_backbone_frozen(epoch < self.t.freeze_epochs)
        self.model.train()
        self.sampler.set_epoch(epoch)
        total, n_img, t0 = 0.0, 0, time.perf_counter()
        bar = tqdm(
            total=self.steps_per_epoch,
            desc=f"fold {self.fold} epoch {epoch + 1}/{self.t.epochs}",
            unit="batch",
            leave=False,
            disable=None if self.rt.progress else True,  # None: off when not a terminal
        )
        running = torch.zeros((), device=self.rt.device)
        for i, batch in enumerate(self.loader):
            if i >= self.steps_per_epoch:
                break
            loss = self._step(batch)
            running += loss.detach() * len(batch["target"])
            n_img += len(batch["target"])
            if (i + 1) % LOG_EVERY == 0 or i + 1 == self.steps_per_epoch:
                total = self._check_finite(running, epoch, i)
                bar.set_postfix(
                    loss=f"{total / n_img:.4f}",
                    img_s=f"{n_img * self.rt.world / (time.perf_counter() - t0):.0f}",
                )
            bar.update(1)
        bar.close()
        seconds = time.perf_counter() - t0
        mean_loss = total / max(n_img, 1)
        if is_plateau(self.sched) and not self.inner_used:
            self.sched.step(mean_loss)
        return {
            "epoch": epoch + 1,
            "lr": self.opt.param_groups[0]["lr"],
            "train_loss": mean_loss,
            "train_images": n_img * self.rt.world,
            "train_seconds": round(seconds, 2),
            "train_images_per_s": round(n_img * self.rt.world / max(seconds, 1e-9), 1),
        }

    def evaluate(self, model: nn.Module, prefix: str, ds: LesionDataset | None = None) -> dict:
        """Scores on `ds` (default the held-out fold, which is only logged unless best_optimistic)."""
        ds = ds or self.valid_ds
        p = predict(model, ds, self.rt, self.prep, tta=1, batch_size=self.cfg.predict.batch_size)
        return self.scores(p, ds.targets, prefix)

    def scores(self, p: np.ndarray, y: np.ndarray, prefix: str) -> dict:
        """Loss (+ AUC and pAUC, or the macro AUC) of predictions `p` of targets `y`, keys `prefix`..."""
        if self.multiclass:  # loss: cross-entropy; auc: the macro one-vs-rest AUC
            yi = y.astype(np.int64)
            out = {f"{prefix}loss": float(-np.mean(np.log(np.clip(p[np.arange(len(yi)), yi], 1e-7, 1))))}
            if len(np.unique(yi)) > 1:
                out[f"{prefix}auc"] = metrics.macro_auc(yi, p)
            return out
        pc = np.clip(p, 1e-7, 1 - 1e-7)
        out = {f"{prefix}loss": float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc)))}
        if 0 < y.sum() < len(y):
            out |= {f"{prefix}auc": metrics.auc(y, p), f"{prefix}pauc": metrics.pauc(y, p)}
        return out

    def held_out_scored(self, epoch: int) -> bool:
        """Whether the held-out fold is scored after `epoch` (0-based) for the log: every epoch for
        best_optimistic (it picks the checkpoint), every train.eval_every-th epoch, never after the last
        one (the OOF prediction itself scores it then), never by default."""
        if self.t.checkpoint == "best_optimistic":
            return True
        every = self.t.eval_every
        return bool(every) and (epoch + 1) % every == 0 and epoch + 1 < self.t.epochs

    def fit(self, on_epoch: Callable[[list[dict]], None] | None = None) -> None:
        """Train the remaining epochs; after each, checkpoint, print one line and call on_epoch(log rows)."""
        for epoch in range(self.state.epoch, self.t.epochs):
            if self.state.stopped_early_after is not None:
                break
            row = self.train_epoch(epoch)
            t0 = time.perf_counter()
            if self.held_out_scored(epoch):
                row |= self.evaluate(self.raw, "valid_")
                if self.ema is not None:
                    row |= self.evaluate(self.ema.module, "ema_valid_")
                row["valid_images_scored"] = len(self.valid_ds) * (1 + (self.ema is not None))
            row["valid_seconds"] = round(time.perf_counter() - t0, 2)
            t0 = time.perf_counter()
            if self.inner_used:
                row |= self.evaluate(self.raw, "inner_", self.inner_ds)
                row["inner_images_scored"] = len(self.inner_ds)
                if is_plateau(self.sched):
                    self.sched.step(row.get(f"inner_{self.t.monitor}", row["inner_loss"]))
            row["inner_seconds"] = round(time.perf_counter() - t0, 2)
            self.state.epoch = epoch + 1
            self._track_best(row)
            patience = self.t.early_stopping_patience
            if (
                patience
                and self.state.best_epoch > 0
                and self.state.epoch - self.state.best_epoch >= patience
            ):
                self.state.stopped_early_after = self.state.epoch
            self.state.log.append(row)
            self.save()
            artifacts.fault_point("stage1.epoch_end")
            if self.rt.main:
                tqdm.write(epoch_line(self.fold, self.t.epochs, row))
            if on_epoch is not None and self.rt.main:
                on_epoch(self.state.log)

    def _score(self, row: dict) -> float | None:
        """The number best-epoch tracking maximises, or None when nothing is tracked."""
        if self.t.checkpoint == "best_optimistic":
            return row.get("valid_pauc" if self.cfg.metric == "pauc80" else "valid_auc")
        if not self.inner_used:
            return None
        value = row.get(f"inner_{self.t.monitor}")
        if value is None:  # no positive in the inner split: fall back to its loss
            value, sign = row["inner_loss"], -1.0
        else:
            sign = -1.0 if self.t.monitor == "loss" else 1.0
        return sign * value

    def _track_best(self, row: dict) -> None:
        score = self._score(row)
        if score is None or score <= self.state.best_score:
            return
        self.state.best_score, self.state.best_epoch = score, row["epoch"]
        if self.t.checkpoint in ("best_inner", "best_optimistic"):
            self.best = {k: v.detach().cpu().clone() for k, v in self.raw.state_dict().items()}

    def negatives_seen(self) -> float:
        """Share of this fold's training negatives shown at least once over the epochs trained."""
        per_epoch = self.steps_per_epoch * self.t.batch_size * self.rt.world
        return self.sampler.negatives_seen(self.state.epoch, per_epoch)

    def chosen_model(self) -> tuple[nn.Module, str]:
        """The weights that make the OOF and test predictions, and the rule that chose them."""
        if self.t.checkpoint == "ema":
            return self.ema.module, f"EMA weights (decay {self.t.ema_decay}) after epoch {self.state.epoch}"
        if self.t.checkpoint in ("best_inner", "best_optimistic") and self.best is not None:
            model = copy.deepcopy(self.raw)
            model.load_state_dict(self.best)
            if self.t.checkpoint == "best_inner":
                return model, (
                    f"best epoch {self.state.best_epoch} by inner-split {self.t.monitor} "
                    f"({self.cfg.columns.group} groups of the training folds; the scored fold took no part)"
                )
            return model, (
                f"best epoch {self.state.best_epoch} by the held-out fold's own score "
                f"(OPTIMISTIC: the scored rows chose the checkpoint)"
            )
        return self.raw, f"last epoch ({self.state.epoch})"
