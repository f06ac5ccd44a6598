"""Trained artifacts -> submission on any data folder in the Kaggle layout (locally or in a Kaggle kernel).

Reads only what training wrote under a runs root: each stage-1 run's config.yaml, fold<k>.json and
fold<k>.safetensors, and the stack's config.yaml, levels.json, inputs.json, native GBDT models and,
for a rank blend, blend.json + blend_reference.npz.
Usage in a kernel: python -m foldstack.kernel --runs BUNDLE/runs --comp isic2024 --stack lgbm
--data /kaggle/input/isic-2024-challenge --out submission.csv
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import torch

from foldstack import artifacts
from foldstack import prediction_tables as pt
from foldstack.bundle import RUN_FILES
from foldstack.cli import run_main
from foldstack.config import build_config
from foldstack.data.images import check_ids, open_images
from foldstack.data.metadata import read_metadata, read_sample_submission
from foldstack.errors import DataError
from foldstack.stage1.config import OofConfig
from foldstack.stage1.data import DecodedImages
from foldstack.stage1.inference import fold_models, predict_folds_on
from foldstack.stage1.run import input_config
from foldstack.stage1.runtime import make_runtime
from foldstack.stage2 import calibrate
from foldstack.stage2.config import StackConfig
from foldstack.stage2.features import build_features, cnn_inputs
from foldstack.stage2.models import engine_input, load_boosters, predict_boosters
from foldstack.stage2.run import blend

T = TypeVar("T", OofConfig, StackConfig)


def _runs_root_config(cls: type[T], path: Path, runs_root: Path) -> T:
    """A resolved config saved beside a run, re-pointed at `runs_root` (a bundle may live elsewhere)."""
    if not path.exists():
        raise DataError(f"{path} is missing: train the run first (or copy the whole run folder)")
    return build_config(cls, [path], [f"runs_dir={runs_root}"])


def _fold_records(cfg: OofConfig, run_dir: Path) -> list[dict]:
    """Every fold's record fold<k>.json, read as the manifest of its set: a missing record or weight file,
    or a weight file that differs from the one the record lists, is refused naming the file."""
    fix = (
        f"rerun `make oof MODEL={cfg.run}` for that run, or copy the whole run folder {run_dir.name}/ "
        f"(every fold<k>.json, fold<k>.safetensors and fold<k>.preds.parquet) into the bundle"
    )
    for f in range(cfg.folds.k):
        for name in (f"fold{f}.json", f"fold{f}.safetensors"):
            if not (run_dir / name).exists():
                raise DataError(f"{run_dir / name} is missing: stage-1 run {cfg.run!r} ({run_dir}) {fix}")
    records = []
    for f in range(cfg.folds.k):
        try:
            records.append(artifacts.read_manifest(run_dir / f"fold{f}.json"))
        except DataError as e:
            raise DataError(f"stage-1 run {cfg.run!r}, fold {f}: {e} (for this run: {fix})") from None
    return records


def cnn_test_predictions(
    run_dir: Path, runs_root: Path, data_dir: Path, progress: bool = True
) -> pd.DataFrame:
    """id, the prediction columns and their per-fold copies of one stage-1 run on `data_dir`'s test split
    (same TTA as training). Every image is decoded once (in the loader workers, by the cache's resize
    rule) and every fold model predicts it: one pass over the test set for k models."""
    cfg: OofConfig = _runs_root_config(OofConfig, run_dir / "config.yaml", runs_root)
    records = _fold_records(cfg, run_dir)  # every fold's files, before any prediction work
    test = read_metadata(cfg, data_dir, "test")
    ids = test[cfg.columns.id].tolist()
    store = open_images(cfg, data_dir, "test")
    check_ids(store, ids)
    size, mean, std = input_config(cfg)
    rt = make_runtime(cfg, progress)
    models = fold_models(cfg, run_dir, records, rt)
    per_fold = predict_folds_on(
        cfg,
        models,
        test,
        DecodedImages(store, ids, size),
        rt,
        mean,
        std,
        desc=f"{run_dir.name} x {len(models)}",
    )
    return pt.test_frame(cfg, ids, per_fold)


def blend_weights(cfg: StackConfig, result: dict, stack_dir: Path) -> dict[str, float]:
    """The weights the stack blended with: its metrics.json's (`result`: tuned or resolved), else the
    config's."""
    written = result.get("blend", {}).get("weights")
    if written is None and cfg.blend.weights == "tune":
        raise DataError(
            f"{stack_dir / 'metrics.json'} has no blend.weights though the stack tuned them; "
            f"re-run `make stack`"
        )
    return written if written is not None else cfg.blend.fixed()


@dataclass
class Stages:
    """What each stage of a stack's test prediction produced, in test-metadata row order: the kernel
    check compares them stage by stage between the kernel and `make predict`."""

    ids: list[str]
    cnn: dict[str, pd.DataFrame]  # stage-1 run -> id, its prediction columns and their per-fold copies
    features: pd.DataFrame  # the stage-2 feature matrix
    engines: dict[str, np.ndarray]  # stage-2 model -> (k, n) or (k, n, C): each fold's booster mean
    blend: np.ndarray  # (k, n) or (k, n, C): each fold's blend (a probability)

    def save(self, folder: Path) -> None:
        """cnn_<run>.parquet, features.parquet, engines.npz, blend.npz under `folder` (made afresh)."""
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for name, frame in self.cnn.items():
            artifacts.write_parquet(folder / f"cnn_{name}.parquet", frame)
        artifacts.write_parquet(folder / "features.parquet", self.features.assign(**{STAGE_ID: self.ids}))
        for member, arrays in (("engines.npz", self.engines), ("blend.npz", {"blend": self.blend})):
            artifacts.write_atomic(folder / member, lambda p, a=arrays: _savez(p, a))
        artifacts.write_json(folder / "stages.json", {"cnn": list(self.cnn), "engines": list(self.engines)})

    @classmethod
    def load(cls, folder: Path) -> Stages:
        meta_path = folder / "stages.json"
        if not meta_path.exists():
            raise DataError(f"{meta_path} is missing: the kernel wrote no stage outputs to {folder}")
        meta = json.loads(meta_path.read_text())
        features = pd.read_parquet(folder / "features.parquet")
        ids = features.pop(STAGE_ID).astype(str).tolist()
        cnn = {n: pd.read_parquet(folder / f"cnn_{n}.parquet") for n in meta["cnn"]}
        with np.load(folder / "engines.npz", allow_pickle=False) as z:
            engines = {n: z[n] for n in meta["engines"]}
        with np.load(folder / "blend.npz", allow_pickle=False) as z:
            blended = z["blend"]
        return cls(ids, cnn, features, engines, blended)


STAGE_ID = "__id__"  # the id column of a saved feature matrix (no feature is named so)


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


@dataclass
class TrainedStack:
    """A trained stack as inference reads it: config, metrics.json body, categories, inputs, blend."""

    dir: Path
    runs_root: Path
    cfg: StackConfig
    result: dict
    levels: dict[str, list[str]]
    stage1_runs: list[str]
    columns: list[str]
    calibration: calibrate.RankCalibration | None
    weights: dict[str, float]

    @classmethod
    def load(cls, stack_dir: Path, runs_root: Path) -> TrainedStack:
        cfg: StackConfig = _runs_root_config(StackConfig, stack_dir / "config.yaml", runs_root)
        # the stack is a set: refuse models or blend files that differ from what its run wrote (a bundle
        # holds only the members inference needs, so only those are checked)
        result = artifacts.read_manifest(stack_dir / "metrics.json", only=(*RUN_FILES, "models"))
        levels = json.loads((stack_dir / "levels.json").read_text())
        inputs = json.loads((stack_dir / "inputs.json").read_text())
        calibration = calibrate.load(stack_dir) if cfg.blend.method == "rank" else None
        weights = blend_weights(cfg, result, stack_dir)
        return cls(
            stack_dir,
            runs_root,
            cfg,
            result,
            levels,
            inputs["stage1_runs"],
            inputs["columns"],
            calibration,
            weights,
        )

    def cnn(self, data_dir: Path, progress: bool = True) -> dict[str, pd.DataFrame]:
        """Stage 1: each stage-1 run's test predictions on data_dir (every fold model, its TTA)."""
        root = self.runs_root / self.cfg.name / "oof"
        return {
            n: cnn_test_predictions(root / n, self.runs_root, data_dir, progress) for n in self.stage1_runs
        }

    def features(self, test: pd.DataFrame, cnn: dict[str, pd.DataFrame]) -> pd.DataFrame:
        """Stage 2's feature matrix of the test rows, checked against the columns the models learned."""
        probs = {n: pt.read(self.cfg, f, f"stage-1 run {n}") for n, f in cnn.items()}
        X = build_features(self.cfg, self.cfg.features, test, cnn_inputs(self.cfg, probs), self.levels)
        if list(X.columns) != self.columns:
            raise DataError(
                f"{self.dir}: the features built now differ from those the models were trained on"
            )
        return X

    def engines(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        """Each stage-2 model's predictions per fold (the mean of its seeds' boosters): (k, n[, C])."""
        cfg = self.cfg
        data = {kind: engine_input(kind, X) for kind in {spec.kind for spec in cfg.models}}  # once each
        out = {}
        for spec in cfg.models:
            out[spec.name] = np.stack(
                [
                    predict_boosters(
                        spec.kind,
                        load_boosters(self.dir / "models" / spec.name / f"fold{f}"),
                        X,
                        cfg.n_classes,
                        data[spec.kind],
                    )
                    for f in range(cfg.folds.k)
                ]
            )
        return out

    def blend(self, engines: dict[str, np.ndarray]) -> np.ndarray:
        """Each fold's blend of its models: the rank blend mapped to a probability, as in training, or
        the weighted mean of probabilities."""
        per_fold = []
        for f in range(self.cfg.folds.k):
            preds = {name: p[f] for name, p in engines.items()}
            if self.calibration is not None:
                per_fold.append(self.calibration.probability(f, preds))
            else:
                per_fold.append(blend(preds, self.weights))
        return np.stack(per_fold)

    def predict(self, data_dir: Path, progress: bool = True) -> Stages:
        """Every stage on data_dir's test split."""
        test = read_metadata(self.cfg, data_dir, "test")
        cnn = self.cnn(data_dir, progress)
        X = self.features(test, cnn)
        engines = self.engines(X)
        return Stages(test[self.cfg.columns.id].astype(str).tolist(), cnn, X, engines, self.blend(engines))


def stack_test_predictions(
    stack_dir: Path, runs_root: Path, data_dir: Path, progress: bool = True, stages: Path | None = None
) -> pd.DataFrame:
    """id, the prediction columns and their per-fold copies of a trained stack on `data_dir`'s test split;
    with `stages`, every stage's output is also saved there (Stages.save)."""
    stack = TrainedStack.load(stack_dir, runs_root)
    out = stack.predict(data_dir, progress)
    if stages is not None:
        out.save(stages)
    return pt.test_frame(stack.cfg, out.ids, list(out.blend))


def check_bundle(runs_root: Path, comp: str, stack: str) -> None:
    """What the kernel reads before it predicts, checked without predicting: the stack's set (models,
    blend files), every stage-1 run it names, each with every fold's record and weights. Raises DataError
    naming the missing or changed file."""
    stack_dir = runs_root / comp / "stack" / stack
    cfg: StackConfig = _runs_root_config(StackConfig, stack_dir / "config.yaml", runs_root)
    artifacts.read_manifest(stack_dir / "metrics.json", only=(*RUN_FILES, "models"))
    for spec in cfg.models:
        for f in range(cfg.folds.k):
            folder = stack_dir / "models" / spec.name / f"fold{f}"
            if not folder.is_dir() or not any(folder.iterdir()):
                raise DataError(
                    f"{folder} is missing: the stack {stack!r} has no {spec.name} model of fold {f}"
                )
    for name in json.loads((stack_dir / "inputs.json").read_text())["stage1_runs"]:
        run_dir = runs_root / comp / "oof" / name
        _fold_records(_runs_root_config(OofConfig, run_dir / "config.yaml", runs_root), run_dir)


def submission_frame(cfg, data_dir: Path, preds: pd.DataFrame) -> pd.DataFrame:
    """preds in the order and header of data_dir's sample_submission.csv (id, target or id, *classes)."""
    sample = read_sample_submission(cfg, data_dir)
    idc = cfg.columns.id
    by_id = preds.set_index("id")[cfg.pred_columns]
    missing = sorted(set(sample[idc]) - set(by_id.index))
    if missing:
        raise DataError(f"no prediction for {len(missing)} sample_submission id(s): {missing[:10]}")
    values = by_id.loc[sample[idc]].to_numpy(dtype=float)
    bad = (~np.isfinite(values) | (values < 0) | (values > 1)).any(axis=1)
    if bad.any():
        raise DataError(
            f"predictions outside [0, 1] or not finite for ids {sample.loc[bad, idc].tolist()[:10]}"
        )
    out = pd.DataFrame(values, columns=cfg.submission_columns[1:])
    out.insert(0, idc, sample[idc].to_numpy())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", required=True, help="runs root holding <comp>/oof and <comp>/stack")
    p.add_argument("--comp", default="isic2024")
    p.add_argument("--stack", default="lgb_xgb_cb")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--stages", default="", help="also save every stage's output in this folder (the check)")
    a = p.parse_args(argv)
    print(
        f"foldstack.kernel: package at {Path(__file__).parent}, Python {sys.version.split()[0]}, "
        f"torch {torch.__version__}, pandas {pd.__version__}",
        flush=True,
    )
    runs = Path(a.runs)
    stack_dir = runs / a.comp / "stack" / a.stack
    stages = Path(a.stages) if a.stages else None
    preds = stack_test_predictions(stack_dir, runs, Path(a.data), not a.no_progress, stages)
    cfg = _runs_root_config(StackConfig, stack_dir / "config.yaml", runs)
    sub = submission_frame(cfg, Path(a.data), preds)
    artifacts.write_csv(Path(a.out), sub)
    print(f"wrote {a.out}: {len(sub)} rows")
    return 0


if __name__ == "__main__":
    run_main(main)
