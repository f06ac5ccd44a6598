"""Trained artifacts -> a submission on any data folder in the Kaggle layout: `make predict` here, and the
Kaggle kernel of a code competition (`python -m foldstack.submit.predict`, run by the kernel's predict.py).

Reads only what training wrote under a runs root: each stage-1 run's config.yaml, fold<k>.json and
fold<k>.safetensors (a mean of seed runs: its config.yaml and metrics.json, and each seed run's files), and
the stack's config.yaml, levels.json, inputs.json, native models and, for a rank blend, blend.json +
blend_reference.npz. With --stages every stage's output is saved too (Stages),
so that `make kernel-check` can compare the kernel with `make predict` stage by stage.
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
from foldstack.cli import run_main
from foldstack.config import CompetitionConfig, build_config
from foldstack.data.images import check_ids, open_images
from foldstack.data.metadata import read_metadata, read_sample_submission
from foldstack.errors import DataError
from foldstack.runs import (
    MODELS,
    RUN_FILES,
    STAGE_BLEND,
    STAGE_CNN,
    STAGE_ENGINES,
    STAGE_FEATURES,
    STAGES_JSON,
    Runs,
    StackRun,
    Stage1Run,
    Submissions,
    runs_of,
)
from foldstack.stage1.config import OofConfig
from foldstack.stage1.data import DecodedImages
from foldstack.stage1.inference import fold_models, predict_folds_on
from foldstack.stage1.inputs import input_config
from foldstack.stage1.runtime import make_runtime
from foldstack.stage1.seeds import stage1_members
from foldstack.stage2.blend import RankCalibration, blend, load_calibration, stack_weights
from foldstack.stage2.config import DEFAULT_STACK, StackConfig
from foldstack.stage2.features import build_features, cnn_inputs
from foldstack.stage2.members import member_columns
from foldstack.stage2.models import engine_input, load_boosters, predict_boosters

T = TypeVar("T", OofConfig, StackConfig)


def run_config(cls: type[T], run: Stage1Run | StackRun) -> T:
    """The resolved config saved beside a run, re-pointed at the runs root it lies in (a bundle may live
    anywhere)."""
    if not run.config.exists():
        raise DataError(f"{run.config} is missing: train the run first (or copy the whole run folder)")
    return build_config(cls, [run.config], [f"runs_dir={runs_of(run).root}"])


def fold_records(cfg: OofConfig, run: Stage1Run) -> list[dict]:
    """Every fold's record fold<k>.json, read as the manifest of its set: a missing record or weight file,
    or a weight file that differs from the one the record lists, is refused naming the file."""
    fix = (
        f"rerun `make oof MODEL={cfg.run}` for that run, or copy the whole run folder {run.name}/ "
        f"(every fold<k>.json, fold<k>.safetensors and fold<k>.preds.parquet) into the bundle"
    )
    for f in range(cfg.folds.k):
        for path in (run.fold_record(f), run.fold_weights(f)):
            if not path.exists():
                raise DataError(f"{path} is missing: stage-1 run {cfg.run!r} ({run.dir}) {fix}")
    records = []
    for f in range(cfg.folds.k):
        try:
            records.append(artifacts.read_manifest(run.fold_record(f)))
        except DataError as e:
            raise DataError(f"stage-1 run {cfg.run!r}, fold {f}: {e} (for this run: {fix})") from None
    return records


def cnn_test_predictions(run: Stage1Run, data_dir: Path, progress: bool = True) -> pd.DataFrame:
    """id, the prediction columns and their per-fold copies of one stage-1 run on `data_dir`'s test split
    (same TTA as training). Every image is decoded once (in the loader workers, by the cache's resize
    rule) and every fold model predicts it: one pass over the test set for k models. A mean of seed runs
    (stage1.seeds) runs every seed run's k fold models in that one pass; fold k's columns are the mean of
    the seeds' fold-k models."""
    cfg = run_config(OofConfig, run)
    members = stage1_members(run)  # a mean of seed runs: every seed run's fold models, averaged per fold
    configs = [cfg] if members == [run] else [run_config(OofConfig, m) for m in members]
    records = [fold_records(c, m) for c, m in zip(configs, members, strict=True)]  # before any prediction
    test = read_metadata(cfg, data_dir, "test")
    ids = test[cfg.columns.id].tolist()
    store = open_images(cfg, data_dir, "test")
    check_ids(store, ids)
    size, mean, std = input_config(cfg)
    rt = make_runtime(cfg, progress)
    models = [
        fm for c, m, r in zip(configs, members, records, strict=True) for fm in fold_models(c, m, r, rt)
    ]
    images = DecodedImages(store, ids, size)
    per_fold = predict_folds_on(cfg, models, test, images, rt, mean, std, desc=f"{run.name} x {len(models)}")
    per_fold = per_fold.reshape(len(members), -1, *per_fold.shape[1:]).mean(axis=0)  # seeds x k -> k
    return pt.test_frame(cfg, ids, per_fold)


STAGE_ID = "__id__"  # the id column of a saved feature matrix (no feature is named so)


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


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
        """Every stage's output under `folder` (made afresh)."""
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for name, frame in self.cnn.items():
            artifacts.write_parquet(folder / STAGE_CNN.format(name), frame)
        artifacts.write_parquet(folder / STAGE_FEATURES, self.features.assign(**{STAGE_ID: self.ids}))
        for member, arrays in ((STAGE_ENGINES, self.engines), (STAGE_BLEND, {"blend": self.blend})):
            artifacts.write_atomic(folder / member, lambda p, a=arrays: _savez(p, a))
        artifacts.write_json(folder / STAGES_JSON, {"cnn": list(self.cnn), "engines": list(self.engines)})

    @classmethod
    def load(cls, folder: Path) -> Stages:
        meta_path = folder / STAGES_JSON
        if not meta_path.exists():
            raise DataError(f"{meta_path} is missing: the kernel wrote no stage outputs to {folder}")
        meta = json.loads(meta_path.read_text())
        features = pd.read_parquet(folder / STAGE_FEATURES)
        ids = features.pop(STAGE_ID).astype(str).tolist()
        cnn = {n: pd.read_parquet(folder / STAGE_CNN.format(n)) for n in meta["cnn"]}
        with np.load(folder / STAGE_ENGINES, allow_pickle=False) as z:
            engines = {n: z[n] for n in meta["engines"]}
        with np.load(folder / STAGE_BLEND, allow_pickle=False) as z:
            blended = z["blend"]
        return cls(ids, cnn, features, engines, blended)


@dataclass
class TrainedStack:
    """A trained stack as inference reads it: config, metrics.json body, categories, inputs, blend."""

    run: StackRun
    cfg: StackConfig
    result: dict
    levels: dict[str, list[str]]
    stage1_runs: list[str]
    columns: list[str]
    calibration: RankCalibration | None
    weights: dict[str, float]

    @classmethod
    def load(cls, run: StackRun) -> TrainedStack:
        cfg = run_config(StackConfig, run)
        # the stack is a set: refuse models or blend files that differ from what its run wrote (a bundle
        # holds only the members inference needs, so only those are checked)
        result = run.read_metrics(only=(*RUN_FILES, MODELS))
        inputs = run.read_inputs()
        calibration = load_calibration(run.dir) if cfg.blend.method == "rank" else None
        weights = stack_weights(cfg, result, run.metrics)
        levels = run.read_levels()
        return cls(run, cfg, result, levels, inputs.stage1_runs, inputs.columns, calibration, weights)

    def cnn(self, data_dir: Path, progress: bool = True) -> dict[str, pd.DataFrame]:
        """Stage 1: each stage-1 run's test predictions on data_dir (every fold model, its TTA)."""
        runs = runs_of(self.run)
        return {n: cnn_test_predictions(runs.stage1(n), data_dir, progress) for n in self.stage1_runs}

    def features(self, test: pd.DataFrame, cnn: dict[str, pd.DataFrame]) -> pd.DataFrame:
        """Stage 2's feature matrix of the test rows, checked against the columns the models learned."""
        probs = {n: pt.read(self.cfg, f, f"stage-1 run {n}") for n, f in cnn.items()}
        cfg = self.cfg
        X = build_features(cfg, cfg.features, test, cnn_inputs(cfg, probs), self.levels, self.stage1_runs)
        if list(X.columns) != self.columns:
            raise DataError(f"{self.run.dir}: the features built now differ from those the models learned")
        return X

    def engines(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        """Each stage-2 model's predictions per fold (the mean of its seeds' and bags' boosters) on its
        member's columns: (k, n[, C])."""
        cfg = self.cfg
        data: dict[tuple, object] = {}  # each engine's input, built once per engine and column set
        out = {}
        for spec in cfg.models:
            cols = member_columns(spec, list(X.columns), self.stage1_runs)
            key = (spec.kind, tuple(cols))
            Xm = X if len(cols) == X.shape[1] else X[cols]
            if key not in data:
                data[key] = engine_input(spec.kind, Xm)
            out[spec.name] = np.stack(
                [
                    predict_boosters(
                        spec.kind,
                        load_boosters(self.run.model_fold(spec.name, f)),
                        Xm,
                        cfg.n_classes,
                        data[key],
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
    run: StackRun, data_dir: Path, progress: bool = True, stages: Path | None = None
) -> pd.DataFrame:
    """id, the prediction columns and their per-fold copies of a trained stack on `data_dir`'s test split;
    with `stages`, every stage's output is also saved there (Stages.save)."""
    stack = TrainedStack.load(run)
    out = stack.predict(data_dir, progress)
    if stages is not None:
        out.save(stages)
    return pt.test_frame(stack.cfg, out.ids, list(out.blend))


def check_bundle(runs: Runs, stack: str) -> None:
    """What the kernel reads before it predicts, checked without predicting: the stack's set (models,
    blend files), every stage-1 run it names, each with every fold's record and weights. Raises DataError
    naming the missing or changed file."""
    run = runs.stack(stack)
    cfg = run_config(StackConfig, run)
    run.read_metrics(only=(*RUN_FILES, MODELS))
    for spec in cfg.models:
        for f in range(cfg.folds.k):
            folder = run.model_fold(spec.name, f)
            if not folder.is_dir() or not any(folder.iterdir()):
                raise DataError(
                    f"{folder} is missing: the stack {stack!r} has no {spec.name} model of fold {f}"
                )
    for name in run.read_inputs().stage1_runs:
        for s1 in stage1_members(runs.stage1(name)):
            fold_records(run_config(OofConfig, s1), s1)


def submission_frame(cfg: CompetitionConfig, data_dir: Path, preds: pd.DataFrame) -> pd.DataFrame:
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


def predict(
    cfg: CompetitionConfig, data_dir: Path, stack: str, out: Path | None = None
) -> tuple[Path, pd.DataFrame]:
    """`make predict`: the stack run `stack` on data_dir's test split -> a submission CSV in
    sample_submission.csv's order (default submissions/<comp>/predict/<UTC>_<stack>.csv)."""
    run = Runs.of(cfg).stack(stack)
    sub = submission_frame(cfg, data_dir, stack_test_predictions(run, data_dir))
    path = out or Submissions.of(cfg).predict_csv(stack)
    artifacts.write_csv(path, sub)
    return path, sub


def main(argv: list[str] | None = None) -> int:
    """The kernel's entry point: the bundle's runs tree -> submission.csv on the competition's data."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", required=True, help="runs root holding <comp>/oof and <comp>/stack")
    p.add_argument("--comp", default="isic2024")
    p.add_argument("--stack", default=DEFAULT_STACK)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--stages", default="", help="also save every stage's output in this folder (the check)")
    a = p.parse_args(argv)
    print(
        f"foldstack.submit.predict: package at {Path(__file__).parent}, Python {sys.version.split()[0]}, "
        f"torch {torch.__version__}, pandas {pd.__version__}",
        flush=True,
    )
    run = Runs(Path(a.runs), a.comp).stack(a.stack)
    stages = Path(a.stages) if a.stages else None
    preds = stack_test_predictions(run, Path(a.data), not a.no_progress, stages)
    sub = submission_frame(run_config(StackConfig, run), Path(a.data), preds)
    artifacts.write_csv(Path(a.out), sub)
    print(f"wrote {a.out}: {len(sub)} rows")
    return 0


if __name__ == "__main__":
    run_main(main)
