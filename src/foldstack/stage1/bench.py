"""Stage-1 throughput: end-to-end training vs the model alone on ready tensors, and TTA inference."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from foldstack.stage1.config import OofConfig
from foldstack.stage1.model import LesionNet
from foldstack.stage1.predict import predict
from foldstack.stage1.run import fold_datasets, load_inputs
from foldstack.stage1.runtime import Runtime, make_runtime, seed_everything
from foldstack.stage1.train import FoldTrainer


def _sync(rt: Runtime) -> None:
    if rt.device.type == "cuda":
        torch.cuda.synchronize(rt.device)


def _timed_steps(trainer: FoldTrainer, batches, n: int) -> float:
    """Images per second over n training steps fed by `batches` (an iterator)."""
    _sync(trainer.rt)
    t0, images = time.perf_counter(), 0
    for _ in range(n):
        batch = next(batches)
        trainer._step(batch)
        images += len(batch["target"])
    _sync(trainer.rt)
    return images / (time.perf_counter() - t0)


def _endless(loader):
    epoch = 0
    while True:
        loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def bench_oof(
    cfg: OofConfig, data_dir: Path, steps: int = 30, warmup: int = 5, infer_images: int = 1024
) -> dict:
    """End-to-end and model-only training images/s (same model and batch size), inference images/s."""
    rt = make_runtime(cfg, progress=False)
    inp = load_inputs(cfg, data_dir)
    fd = fold_datasets(cfg, inp, 0)
    train_ds, valid_ds, test_ds, enc = fd.train, fd.valid, fd.test, fd.encoder
    seed_everything(cfg.train.seed)
    model = LesionNet(cfg.model, enc.size if enc else 0, n_outputs=cfg.n_outputs)
    trainer = FoldTrainer(cfg, model, rt, 0, train_ds, valid_ds, Path("/nonexistent/bench"), "bench")
    trainer.model.train()
    batches = _endless(trainer.loader)
    _timed_steps(trainer, batches, warmup)
    e2e = _timed_steps(trainer, batches, steps)
    fixed = next(batches)
    fixed = {k: v.to(rt.device) if torch.is_tensor(v) else v for k, v in fixed.items()}
    _timed_steps(trainer, iter([fixed] * warmup), warmup)
    model_only = _timed_steps(trainer, iter([fixed] * steps), steps)
    sub = torch.utils.data.Subset(test_ds, range(min(infer_images, len(test_ds))))
    t0 = time.perf_counter()
    predict(trainer.raw, sub, rt, tta=cfg.predict.tta, batch_size=cfg.predict.batch_size)
    infer = len(sub) / (time.perf_counter() - t0)
    return {
        "model": cfg.model.backbone,
        "img_size": inp.img_size,
        "batch_size": cfg.train.batch_size,
        "tta": cfg.predict.tta,
        "train_images_per_s_end_to_end": round(e2e, 1),
        "train_images_per_s_model_only": round(model_only, 1),
        "ratio": round(e2e / model_only, 3),
        "inference_images_per_s_with_tta": round(infer, 1),
        "steps": steps,
        **rt.describe(),
    }
