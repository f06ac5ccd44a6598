"""Stage 1 end to end: every fold's model on the shared folds -> oof.parquet, test.parquet, metrics.json."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import pandas as pd

from foldstack import artifacts
from foldstack import prediction_tables as pt
from foldstack.config import to_yaml
from foldstack.errors import ConfigError, DataError
from foldstack.report import write_report
from foldstack.runs import OOF, Runs, Stage1Run
from foldstack.stage1.checkpoint import checkpoint_name, write_weights
from foldstack.stage1.config import OofConfig
from foldstack.stage1.data import DeviceNormalize
from foldstack.stage1.inference import fold_models, predict, predict_folds_on
from foldstack.stage1.inputs import Inputs, config_sha, fold_datasets, load_inputs
from foldstack.stage1.model import LesionNet, check_pretrained, resolve_weights, without_aux
from foldstack.stage1.runtime import Runtime, barrier, broadcast_object, make_runtime, seed_everything
from foldstack.stage1.train import FoldTrainer


def fold_done(run: Stage1Run, fold: int, sha: str, say: bool = True) -> dict | None:
    """The fold's record if its set (weights + predictions, checked against the record's sizes and
    sha256) is complete for this exact config; None means train it (again). A set that does not match
    its record is never trusted: it is retrained, with one line saying why when `say`."""
    rec = run.fold_record(fold)
    artifacts.recover(run.dir)  # finish a fold commit that a killed process left half done
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
    if not set(run.fold_members(fold)) <= listed:
        if say:
            print(
                f"fold {fold}: retrained: {rec} does not list {' and '.join(run.fold_members(fold))} with "
                f"their sha256 (written by an older foldstack), so they cannot be checked"
            )
        return None
    return info


def write_log(run: Stage1Run, fold: int, rows: list[dict]) -> None:
    """Replace `fold`'s rows of log.csv (one row per epoch) under the run lock: fold jobs share the file."""
    with artifacts.folder_lock(run.lock):
        path = run.log
        old = pd.read_csv(path) if path.exists() and path.stat().st_size else pd.DataFrame({"fold": []})
        new = pd.DataFrame([{"fold": fold} | r for r in rows])
        log = pd.concat([old[old["fold"] != fold], new], ignore_index=True).sort_values(["fold", "epoch"])
        artifacts.write_csv(path, log)


def run_fold(cfg: OofConfig, inp: Inputs, rt: Runtime, run: Stage1Run, fold: int, sha: str) -> dict:
    """Train (or resume) one fold and predict its held-out rows once with the chosen weights; write the
    fold's set (weights, OOF predictions, record). The test set is predicted when the run is assembled."""
    t0 = time.perf_counter()
    fd = fold_datasets(cfg, inp, fold)
    seed_everything(cfg.train.seed + fold)
    weights = resolve_weights(cfg.model)
    n_aux = 0 if fd.train.aux is None else fd.train.aux.shape[1]
    model = LesionNet(cfg.model, fd.encoder.size if fd.encoder else 0, weights, cfg.n_outputs, n_aux)
    prep = DeviceNormalize(inp.mean, inp.std, rt.device, rt.channels_last)
    trainer = FoldTrainer(
        cfg, model, rt, fold, fd.train, fd.valid, run.fold_prefix(fold), sha, fd.inner, prep
    )
    resumed_from = trainer.state.epoch if trainer.resume() else None
    trainer.fit(lambda log: write_log(run, fold, log))
    chosen, rule = trainer.chosen_model()
    t1 = time.perf_counter()
    tta = cfg.predict.tta
    oof = predict(chosen, fd.valid, rt, prep, tta, cfg.predict.batch_size, desc=f"fold {fold} OOF")
    oof_s = time.perf_counter() - t1
    y = fd.valid.targets.astype(np.int64)
    log = trainer.state.log
    last = log[-1] if log else {}
    if cfg.train.checkpoint in ("last", "ema") and rule.startswith(("last", "EMA")):
        # the held-out score after the last epoch is the OOF prediction's own: no second pass
        prefix = "ema_valid_" if cfg.train.checkpoint == "ema" else "valid_"
        last |= trainer.scores(oof, fd.valid.targets, prefix) | {f"{prefix}tta": tta}
    split, images = work_split(log, oof_s, len(fd.valid) * tta)
    info = {
        **pt.headline(cfg, y, oof),
        "fold": fold,
        "config_sha": sha,
        "checkpoint": rule,
        "epochs": trainer.state.epoch,
        "optimistic": cfg.train.checkpoint == "best_optimistic",
        "resumed_from_epoch": resumed_from,
        "pretrained_weights": weights or "none (random init)",
        "pos_weight": trainer.pos_weight,
        "negatives_seen_share": trainer.negatives_seen(),
        "aux_targets": list(inp.aux_names),
        "class_weights": trainer.class_weights,
        "log": [{"fold": fold} | r for r in log],
        "meta_encoder": fd.encoder.state() if fd.encoder else None,
        "seconds": round(time.perf_counter() - t0, 1),
        "seconds_split": split,
        "images": images,
        "inference_images_per_s": round(len(fd.valid) * tta / max(oof_s, 1e-9), 1),
        "n_train_rows": len(fd.train),
        "n_extra_rows": 0 if inp.extra is None else len(inp.extra.table),
        "n_valid_rows": len(fd.valid),
        "n_inner_rows": len(fd.inner) if fd.inner else 0,
        "stopped_early_after_epoch": trainer.state.stopped_early_after,
    }
    if rt.main:
        preds = pd.DataFrame({"id": fd.valid.ids}).join(pt.columns_frame(cfg, oof))
        write_fold_set(run, fold, without_aux(chosen.state_dict()), rule, preds, info)
        write_log(run, fold, log)
    barrier(rt)
    return info


def work_split(log: list[dict], oof_seconds: float, oof_images: int) -> tuple[dict, dict]:
    """A fold's seconds and images by kind of work: training, held-out and inner scoring, OOF prediction."""
    seconds = {
        "training": round(sum(r["train_seconds"] for r in log), 1),
        "held_out_scoring": round(sum(r.get("valid_seconds", 0) for r in log), 1),
        "inner_scoring": round(sum(r.get("inner_seconds", 0) for r in log), 1),
        "oof_prediction": round(oof_seconds, 1),
    }
    images = {
        "trained": int(sum(r["train_images"] for r in log)),
        "held_out_scoring": int(sum(r.get("valid_images_scored", 0) for r in log)),
        "inner_scoring": int(sum(r.get("inner_images_scored", 0) for r in log)),
        "oof_prediction": oof_images,
    }
    return seconds, images


def write_fold_set(
    run: Stage1Run, fold: int, state: dict, rule: str, preds: pd.DataFrame, info: dict
) -> None:
    """One set: the fold's weights + OOF predictions + its record (the manifest); the commit drops the
    fold's training checkpoint."""
    weights_name, preds_name = run.fold_members(fold)
    record = run.fold_record_name(fold)
    prefix = run.fold_prefix(fold)
    with artifacts.SetWriter(run.dir, prefix.name, manifest=record, drop=(checkpoint_name(prefix),)) as s:
        write_weights(s.path(weights_name), state, {"checkpoint": rule})
        s.write_parquet(preds_name, preds)
        s.write_json(record, info)


def assemble_oof(cfg: OofConfig, inp: Inputs, run: Stage1Run, infos: list[dict]) -> pd.DataFrame:
    """oof.parquet: one row per train id, from the one fold model that never saw it."""
    cols = cfg.pred_columns
    preds = [pd.read_parquet(run.fold_preds(f)).assign(fold=f) for f in range(cfg.folds.k)]
    oof = pd.concat(preds)
    oof = inp.folds[["id", "fold", "target"]].merge(
        oof[["id", "fold", *cols]], on="id", how="left", suffixes=("", "_pred"), validate="one_to_one"
    )
    if oof[cols].isna().any(axis=None) or not (oof["fold"] == oof["fold_pred"]).all():
        raise DataError(
            f"{run.dir}: the fold predictions do not cover every train id exactly once from its fold"
        )
    oof["checkpoint"] = [infos[f]["checkpoint"] for f in oof["fold"]]
    return oof.drop(columns="fold_pred")


def run_metrics(
    cfg: OofConfig, inp: Inputs, rt: Runtime, oof: pd.DataFrame, infos: list[dict], extra: dict
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
        **pt.score_folds(cfg, oof["target"].to_numpy(), pt.read(cfg, oof, OOF), oof["fold"].to_numpy()),
        "score_is_optimistic": optimistic,
        "how_scored": how,
        "train_seconds_all_folds": sum(i["seconds"] for i in infos),
        "train_images_per_s": float(np.mean([r["train_images_per_s"] for r in log])) if log else None,
        "inference_images_per_s": float(np.mean([i["inference_images_per_s"] for i in infos])),
        **extra,
        "img_size": inp.img_size,
        "pretrained_weights": infos[0]["pretrained_weights"],
        "negatives_seen_share": [i.get("negatives_seen_share") for i in infos],
        "folds_sha256": inp.folds_meta["sha256"],
        "config_sha": infos[0]["config_sha"],
        "runtime": rt.describe(),
        "git_commit": artifacts.git_commit(),
    }


def records_sha(run: Stage1Run, k: int) -> str:
    """The sha256 of the k fold records: the run is assembled from exactly these folds."""
    return artifacts.sha256_bytes(b"".join(run.fold_record(f).read_bytes() for f in range(k)))


def assembled(run: Stage1Run, sha: str, key: str = "fold_records_sha256") -> bool:
    """Whether the run's outputs exist, match their manifest and were assembled from the current inputs:
    metrics.json's `key` (the fold records' sha256; a seed mean's is its seed runs') equals `sha`."""
    if not run.metrics.exists():
        return False
    try:
        return run.read_metrics().get(key) == sha
    except DataError:
        return False


def finish_run(cfg: OofConfig, inp: Inputs, rt: Runtime, run: Stage1Run, sha: str, t0: float) -> dict:
    """When every fold is done: predict the test set with all k fold models in one pass and write
    oof.parquet, test.parquet, metrics.json and report/ as one set, under the run lock (fold jobs that
    land together assemble it once). With folds missing: say which, and how to run them."""
    k = cfg.folds.k
    lock = artifacts.folder_lock(run.lock) if rt.main else contextlib.nullcontext()
    with lock:
        decision = broadcast_object(run_state(run, k, sha) if rt.main else ("skip",), rt)
        if decision[0] == "missing":
            missing = decision[1]
            done = [f for f in range(k) if f not in missing]
            if rt.main:
                print(
                    f"run {cfg.run}: fold(s) {', '.join(map(str, done)) or 'none'} done, "
                    f"{', '.join(map(str, missing))} missing: run them (`make oof MODEL={cfg.run} "
                    f"FOLDS={','.join(map(str, missing))}`, one job per fold if you like); oof.parquet, "
                    f"test.parquet and metrics.json are written when the last fold lands"
                )
            return {"missing_folds": missing}
        if decision[0] == "current":
            if rt.main:
                print(f"run {cfg.run}: every fold done and already assembled ({run.metrics})")
                return run.read_metrics(deep=False)
            return {}
        return assemble_run(cfg, inp, rt, run, decision[1], t0)


def run_state(run: Stage1Run, k: int, sha: str) -> tuple:
    """("missing", folds) | ("current",) | ("assemble", the k fold records)."""
    infos = [fold_done(run, f, sha, say=False) for f in range(k)]
    missing = [f for f, i in enumerate(infos) if i is None]
    if missing:
        return ("missing", missing)
    if assembled(run, records_sha(run, k)):
        return ("current",)
    return ("assemble", infos)


def assemble_run(
    cfg: OofConfig, inp: Inputs, rt: Runtime, run: Stage1Run, infos: list[dict], t0: float
) -> dict:
    """Predict the test set with all k fold models in one pass; write the run's set."""
    k = cfg.folds.k
    t1 = time.perf_counter()
    models = fold_models(cfg, run, infos, rt)
    test_pred = predict_folds_on(
        cfg, models, inp.test, inp.test_images, rt, inp.mean, inp.std, desc=f"test x {k} folds"
    )
    test_s = time.perf_counter() - t1
    if not rt.main:
        return {}
    ids = inp.test[cfg.columns.id].tolist()
    test = pt.test_frame(cfg, ids, test_pred)
    oof = assemble_oof(cfg, inp, run, infos)
    extra = {
        "wall_seconds_this_call": round(time.time() - t0, 1),
        "cache_seconds_this_call": round(inp.cache_seconds, 1),
        "test_prediction_seconds": round(test_s, 1),
        "test_images_per_s": round(len(ids) * cfg.predict.tta * k / max(test_s, 1e-9), 1),
        "fold_records_sha256": records_sha(run, k),
    }
    result = run_metrics(cfg, inp, rt, oof, infos, extra)
    # one set, metrics.json its manifest: readers (stage 2, submit, leaderboard) check the others
    with artifacts.SetWriter(run.dir, "run", manifest=run.metrics.name) as s:
        s.write_parquet(run.oof.name, oof)
        s.write_parquet(run.test.name, test)
        s.write_json(run.metrics.name, result)
        oof_p = pt.read(cfg, oof, run.oof.name)
        write_report(cfg, s.workdir(), oof["target"].to_numpy(), oof_p, cfg.run)  # report/ is a member
    # the epoch log is progress: outside the set; rewritten whole from the k records, so rows of
    # folds trained under an older config disappear
    artifacts.write_csv(run.log, pd.DataFrame([r for i in infos for r in i["log"]]))
    print(
        f"run {cfg.run}: assembled from folds 0-{k - 1}; test set: {len(ids):,} rows x {k} fold models "
        f"in one pass, {test_s:.1f} s"
    )
    return result


def parse_folds(cfg: OofConfig, folds: str | list[int] | None) -> list[int]:
    """FOLDS=0,3 -> [0, 3]; empty -> every fold. A fold that does not exist is an error listing them."""
    every = list(range(cfg.folds.k))
    if folds is None or folds == "" or folds == []:
        return every
    items = [str(x).strip() for x in (folds.split(",") if isinstance(folds, str) else folds)]
    bad = [x for x in items if not x.isdigit() or int(x) not in every]
    if bad or not items:
        raise ConfigError(
            f"FOLDS={','.join(items)}: {', '.join(bad) or 'nothing'} is not a fold of this run; the folds "
            f"are {', '.join(map(str, every))} (folds.k={cfg.folds.k}, {Runs.of(cfg).folds_csv})"
        )
    return sorted({int(x) for x in items})


def run_oof(
    cfg: OofConfig, data_dir: Path, progress: bool = True, folds: str | list[int] | None = None
) -> dict:
    """Train the requested folds (default all) not already done for this config and write their sets;
    the run's oof/test/metrics are assembled when its last fold lands (by whichever job lands it)."""
    t0 = time.time()
    rt = make_runtime(cfg, progress)
    wanted = parse_folds(cfg, folds)
    check_pretrained(cfg.model)
    inp = load_inputs(cfg, data_dir, rt)
    run = Runs.of(cfg).stage1(cfg.run)
    sha = config_sha(cfg, inp)
    if rt.main:
        run.dir.mkdir(parents=True, exist_ok=True)
        run.write_config(to_yaml(cfg))
    for fold in wanted:
        if fold_done(run, fold, sha, say=rt.main) is not None:
            if rt.main:
                print(f"fold {fold}: done for this config, skipped ({run.fold_weights(fold)})")
            continue
        info = run_fold(cfg, inp, rt, run, fold, sha)
        if rt.main:
            scores = " ".join(f"{k} {v:.4f}" for k, v in pt.headline_of(cfg, info).items())
            sp = info["seconds_split"]
            print(
                f"fold {fold}: {info['checkpoint']}; held-out {scores} ({info['seconds']} s: training "
                f"{sp['training']}, scoring {sp['held_out_scoring'] + sp['inner_scoring']}, OOF "
                f"prediction {sp['oof_prediction']})"
            )
    return finish_run(cfg, inp, rt, run, sha, t0)
