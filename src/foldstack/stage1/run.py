"""Stage 1 end to end: every fold's model on the shared folds -> oof.parquet, test.parquet, metrics.json."""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import timm

from foldstack import artifacts, predictions
from foldstack.config import CompetitionConfig, to_yaml
from foldstack.data.images import ImageStore, check_ids, open_images
from foldstack.data.metadata import read_metadata
from foldstack.errors import DataError
from foldstack.folds import load_folds
from foldstack.report import write_report
from foldstack.stage1.checkpoint import checkpoint_name, write_weights
from foldstack.stage1.config import OofConfig
from foldstack.stage1.data import LesionDataset, MetaEncoder, build_transform
from foldstack.stage1.model import LesionNet, resolve_weights
from foldstack.stage1.predict import predict
from foldstack.stage1.runtime import Runtime, barrier, make_runtime, seed_everything
from foldstack.stage1.train import FoldTrainer

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass
class Inputs:
    """What every fold reads: metadata, folds, image stores and the preprocessing."""

    train: pd.DataFrame
    test: pd.DataFrame
    folds: pd.DataFrame
    folds_meta: dict
    train_images: ImageStore
    test_images: ImageStore
    img_size: int
    mean: tuple
    std: tuple


def preprocessing(cfg: OofConfig) -> tuple[int, tuple, tuple]:
    """Input size and normalisation: the config's, else the backbone's own pretrained config."""
    try:
        pc = timm.models.get_pretrained_cfg(cfg.model.backbone)
    except RuntimeError:
        pc = None
    size = cfg.data.img_size or (pc.input_size[-1] if pc else 224)
    mean = cfg.data.mean or (tuple(pc.mean) if pc else IMAGENET[0])
    std = cfg.data.std or (tuple(pc.std) if pc else IMAGENET[1])
    return int(size), tuple(mean), tuple(std)


def load_inputs(cfg: OofConfig, data_dir: Path) -> Inputs:
    folds, fmeta = load_folds(cfg)
    train = read_metadata(cfg, data_dir, "train")
    test = read_metadata(cfg, data_dir, "test")
    ids = cfg.columns.id
    if set(folds["id"]) != set(train[ids]):
        raise DataError(
            f"{cfg.run_dir / 'folds.csv'} was made on other data than {data_dir}: rerun "
            f"`make folds FORCE=1 DATA={data_dir}`"
        )
    train = train.set_index(ids).loc[folds["id"]].reset_index()  # rows in folds.csv order
    train[cfg.columns.target] = folds["target"].to_numpy()  # integer codes: 0/1 or the class index
    train_images, test_images = open_images(cfg, data_dir, "train"), open_images(cfg, data_dir, "test")
    check_ids(train_images, train[ids])
    check_ids(test_images, test[ids])
    return Inputs(train, test, folds, fmeta, train_images, test_images, *preprocessing(cfg))


def config_sha(cfg: OofConfig, inputs: Inputs) -> str:
    """What decides a fold's result: the config (less loader workers), the folds and the data."""
    dump = cfg.model_dump(mode="json")
    dump["data"].pop("num_workers", None)
    key = {"config": dump, "folds": inputs.folds_meta["sha256"], "data": inputs.folds_meta["data_sha256"]}
    return artifacts.sha256_bytes(json.dumps(key, sort_keys=True).encode())


@dataclass
class FoldData:
    train: LesionDataset  # the other folds (less the inner split)
    valid: LesionDataset  # the held-out fold: scored, never steers training
    test: LesionDataset
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
    """A fold's datasets, and the metadata encoder fitted on its training rows only."""
    is_val = (inp.folds["fold"] == fold).to_numpy()
    tr, va = inp.train[~is_val], inp.train[is_val]
    in_inner = inner_split(cfg, tr, fold)
    tr, inner = tr[~in_inner], tr[in_inner]
    enc = MetaEncoder.fit(cfg, cfg.model.meta_columns, tr) if cfg.model.meta else None

    def meta(df: pd.DataFrame) -> np.ndarray | None:
        return enc.transform(df) if enc else None

    aug = build_transform(cfg.augment, inp.img_size, inp.mean, inp.std, train=True)
    plain = build_transform(cfg.augment, inp.img_size, inp.mean, inp.std, train=False)
    ids, tgt = cfg.columns.id, cfg.columns.target

    def plain_ds(df: pd.DataFrame) -> LesionDataset:
        return LesionDataset(df[ids].tolist(), inp.train_images, plain, df[tgt].to_numpy(), meta(df))

    train_ds = LesionDataset(
        tr[ids].tolist(),
        inp.train_images,
        aug,
        tr[tgt].to_numpy(),
        meta(tr),
        aug_seed=cfg.train.seed * 1000 + fold,
    )
    test_ds = LesionDataset(inp.test[ids].tolist(), inp.test_images, plain, None, meta(inp.test))
    return FoldData(train_ds, plain_ds(va), test_ds, plain_ds(inner) if len(inner) else None, enc)


def fold_prefix(out: Path, fold: int) -> Path:
    return out / f"fold{fold}"


def fold_members(fold: int) -> tuple[str, str]:
    """The files of a fold's set besides its record fold<k>.json (the manifest)."""
    return f"fold{fold}.safetensors", f"fold{fold}.preds.parquet"


def fold_done(out: Path, fold: int, sha: str, say: bool = True) -> dict | None:
    """The fold's record if its set (weights + predictions, checked against the record's sizes and
    sha256) is complete for this exact config; None means train it (again). A set that does not match
    its record is never trusted: it is retrained, with one line saying why when `say`."""
    rec = fold_prefix(out, fold).with_suffix(".json")
    artifacts.recover(out)  # finish a fold commit that a killed process left half done
    if not rec.exists():
        return None
    try:
        info = artifacts.read_manifest(rec, deep=True)
    except DataError as e:
        if say:
            print(f"fold {fold}: retrained, its files are not trusted: {e}")
        return None
    if info.get("config_sha") != sha:
        return None
    listed = set(info.get(artifacts.MANIFEST_KEY) or {})
    if not set(fold_members(fold)) <= listed:
        if say:
            print(
                f"fold {fold}: retrained: {rec} does not list {' and '.join(fold_members(fold))} with their "
                f"sha256 (written by an older foldstack), so they cannot be checked"
            )
        return None
    return info


def write_log(out: Path, rows: list[dict]) -> None:
    artifacts.write_csv(out / "log.csv", pd.DataFrame(rows))


def run_fold(
    cfg: OofConfig, inp: Inputs, rt: Runtime, out: Path, fold: int, sha: str, done_log: list[dict]
) -> dict:
    """Train (or resume) one fold, predict its held-out rows and the test set, write its files."""
    t0 = time.perf_counter()
    fd = fold_datasets(cfg, inp, fold)
    train_ds, valid_ds, test_ds, enc = fd.train, fd.valid, fd.test, fd.encoder
    seed_everything(cfg.train.seed + fold)
    weights = resolve_weights(cfg.model)
    model = LesionNet(cfg.model, enc.size if enc else 0, weights, cfg.n_outputs)
    trainer = FoldTrainer(cfg, model, rt, fold, train_ds, valid_ds, fold_prefix(out, fold), sha, fd.inner)
    resumed_from = trainer.state.epoch if trainer.resume() else None
    trainer.fit(lambda log: write_log(out, done_log + [{"fold": fold} | r for r in log]))
    chosen, rule = trainer.chosen_model()
    t1 = time.perf_counter()
    tta, bs = cfg.predict.tta, cfg.predict.batch_size
    oof = predict(chosen, valid_ds, rt, tta, bs, desc=f"fold {fold} OOF")
    test = predict(chosen, test_ds, rt, tta, bs, desc=f"fold {fold} test")
    infer_s = time.perf_counter() - t1
    info = {
        **predictions.headline(cfg, valid_ds.targets.astype(np.int64), oof),
        "fold": fold,
        "config_sha": sha,
        "checkpoint": rule,
        "epochs": trainer.state.epoch,
        "optimistic": cfg.train.checkpoint == "best_optimistic",
        "resumed_from_epoch": resumed_from,
        "pretrained_weights": weights or "none (random init)",
        "pos_weight": trainer.pos_weight,
        "class_weights": trainer.class_weights,
        "log": [{"fold": fold} | r for r in trainer.state.log],
        "meta_encoder": enc.state() if enc else None,
        "seconds": round(time.perf_counter() - t0, 1),
        "inference_images_per_s": round((len(valid_ds) + len(test_ds)) * tta / max(infer_s, 1e-9), 1),
        "n_train_rows": len(train_ds),
        "n_valid_rows": len(valid_ds),
        "n_inner_rows": len(fd.inner) if fd.inner else 0,
        "stopped_early_after_epoch": trainer.state.stopped_early_after,
    }
    if rt.main:
        ids = cfg.columns.id
        preds = pd.concat(
            [
                pd.DataFrame({"id": valid_ds.ids, "split": "oof"}).join(predictions.columns_frame(cfg, oof)),
                pd.DataFrame({"id": inp.test[ids].tolist(), "split": "test"}).join(
                    predictions.columns_frame(cfg, test)
                ),
            ],
            ignore_index=True,
        )
        weights_name, preds_name = fold_members(fold)
        # one set: weights + predictions + the record (its manifest); the commit drops the checkpoint
        with artifacts.SetWriter(
            out,
            f"fold{fold}",
            manifest=f"fold{fold}.json",
            drop=(checkpoint_name(fold_prefix(out, fold)),),
        ) as s:
            write_weights(s.path(weights_name), chosen.state_dict(), {"checkpoint": rule})
            s.write_parquet(preds_name, preds)
            s.write_json(f"fold{fold}.json", info)
    barrier(rt)
    return info


def assemble(cfg: OofConfig, inp: Inputs, out: Path, infos: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """oof.parquet (one row per train id, from the one model that never saw it) and test.parquet."""
    k, cols = cfg.folds.k, cfg.pred_columns
    preds = [pd.read_parquet(out / f"fold{f}.preds.parquet") for f in range(k)]
    oof = pd.concat([p[p["split"] == "oof"].assign(fold=f) for f, p in enumerate(preds)])
    oof = inp.folds[["id", "fold", "target"]].merge(
        oof[["id", "fold", *cols]], on="id", how="left", suffixes=("", "_pred"), validate="one_to_one"
    )
    if oof[cols].isna().any(axis=None) or not (oof["fold"] == oof["fold_pred"]).all():
        raise DataError(f"{out}: the fold predictions do not cover every train id exactly once from its fold")
    oof["checkpoint"] = [infos[f]["checkpoint"] for f in oof["fold"]]
    oof = oof.drop(columns="fold_pred")
    ids = inp.test[cfg.columns.id].tolist()
    test = pd.DataFrame({"id": ids})
    per_fold = []
    for f, p in enumerate(preds):
        t = p[p["split"] == "test"].set_index("id")[cols]
        if len(t) != len(ids) or set(t.index) != set(ids):
            raise DataError(f"{out}/fold{f}.preds.parquet: test ids differ from {cfg.files.test}")
        per_fold.append(t.loc[ids].to_numpy())
    mean = predictions.columns_frame(cfg, np.mean(per_fold, axis=0))
    folds = [
        predictions.columns_frame(cfg, v, predictions.fold_columns(cfg, f)) for f, v in enumerate(per_fold)
    ]
    return oof, pd.concat([test, mean, *folds], axis=1)


def score_oof(cfg: CompetitionConfig, oof: pd.DataFrame) -> dict:
    """Pooled OOF headline scores (oof_<name>), their per-fold means (fold_<name>_mean) and per fold."""
    y, p = oof["target"].to_numpy(), predictions.read(cfg, oof, "oof.parquet")
    per_fold = []
    for f in sorted(oof["fold"].unique()):
        m = (oof["fold"] == f).to_numpy()
        count = (
            {"classes_present": len(np.unique(y[m]))} if cfg.multiclass else {"positives": int(y[m].sum())}
        )
        per_fold.append(
            {"fold": int(f), "rows": int(m.sum()), **count, **predictions.headline(cfg, y[m], p[m])}
        )
    pooled = predictions.headline(cfg, y, p)
    return {
        **{f"oof_{k}": v for k, v in pooled.items()},
        **{f"fold_{k}_mean": float(np.mean([r[k] for r in per_fold])) for k in pooled},
        "per_fold": per_fold,
    }


def run_metrics(
    cfg: OofConfig, inp: Inputs, rt: Runtime, oof: pd.DataFrame, infos: list[dict], wall: float
) -> dict:
    log = [r for i in infos for r in i["log"]]
    optimistic = any(i["optimistic"] for i in infos)
    how = (
        f"each train row predicted by the one fold model that never saw it ({cfg.folds.k} folds, "
        f"sha {inp.folds_meta['sha256'][:12]}); weights: {infos[0]['checkpoint'].split(' (')[0]}; "
        f"flip TTA x{cfg.predict.tta} for OOF and test alike; test = mean of the fold models"
    )
    if optimistic:
        how += "; OPTIMISTIC: the best epoch was picked on the very fold being scored"
    return {
        "run": cfg.run,
        "competition": cfg.name,
        "metric": cfg.metric,
        **score_oof(cfg, oof),
        "score_is_optimistic": optimistic,
        "how_scored": how,
        "wall_seconds_this_call": round(wall, 1),
        "train_seconds_all_folds": sum(i["seconds"] for i in infos),
        "train_images_per_s": float(np.mean([r["train_images_per_s"] for r in log])) if log else None,
        "inference_images_per_s": float(np.mean([i["inference_images_per_s"] for i in infos])),
        "img_size": inp.img_size,
        "pretrained_weights": infos[0]["pretrained_weights"],
        "folds_sha256": inp.folds_meta["sha256"],
        "config_sha": infos[0]["config_sha"],
        "runtime": rt.describe(),
        "git_commit": artifacts.git_commit(),
    }


def run_oof(cfg: OofConfig, data_dir: Path, progress: bool = True) -> dict:
    """Train every fold not already done for this config; write the stage-1 artifacts."""
    t0 = time.time()
    rt = make_runtime(cfg, progress)
    inp = load_inputs(cfg, data_dir)
    out = cfg.run_dir / "oof" / cfg.run
    sha = config_sha(cfg, inp)
    if rt.main:
        out.mkdir(parents=True, exist_ok=True)
        artifacts.write_text(out / "config.yaml", f"# git commit: {artifacts.git_commit()}\n{to_yaml(cfg)}")
    infos: list[dict] = []
    for fold in range(cfg.folds.k):
        done = fold_done(out, fold, sha, say=rt.main)
        if done is not None:
            if rt.main:
                print(f"fold {fold}: done for this config, skipped ({out}/fold{fold}.safetensors)")
            infos.append(done)
            continue
        infos.append(run_fold(cfg, inp, rt, out, fold, sha, [r for i in infos for r in i["log"]]))
        if rt.main:
            i = infos[-1]
            scores = " ".join(f"{k} {v:.4f}" for k, v in predictions.headline_of(cfg, i).items())
            print(f"fold {fold}: {i['checkpoint']}; held-out {scores} ({i['seconds']} s)")
    if not rt.main:
        return {}
    oof, test = assemble(cfg, inp, out, infos)
    result = run_metrics(cfg, inp, rt, oof, infos, time.time() - t0)
    # one set, metrics.json its manifest: readers (stage 2, submit, leaderboard) check the others against it
    with artifacts.SetWriter(out, "run", manifest="metrics.json") as s:
        s.write_parquet("oof.parquet", oof)
        s.write_parquet("test.parquet", test)
        s.write_json("metrics.json", result)
        oof_p = predictions.read(cfg, oof, "oof.parquet")
        write_report(cfg, s.workdir(), oof["target"].to_numpy(), oof_p, cfg.run)  # report/ is a member
    # the epoch log is progress, rewritten after every epoch: outside the set, so a rerun that is
    # retraining never makes the finished outputs unreadable
    write_log(out, [r for i in infos for r in i["log"]])
    return result
