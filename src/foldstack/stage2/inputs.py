"""Stage 2's inputs: the stage-1 runs (refused unless made out of fold on these folds) and the train and
test feature matrices built from them and the metadata."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from foldstack import artifacts
from foldstack import prediction_tables as pt
from foldstack.data.metadata import read_metadata
from foldstack.errors import DataError
from foldstack.folds import check_fold_sha, load_folds
from foldstack.runs import Runs, Stage1Run
from foldstack.stage1.seeds import stacked_by_default
from foldstack.stage2.cnn_features import check_cnn_config
from foldstack.stage2.config import ModelSpec, StackConfig
from foldstack.stage2.features import (
    CNN_PREFIX,
    build_features,
    category_levels,
    check_leaks,
    check_same_columns,
    cnn_inputs,
    with_derived,
)
from foldstack.stage2.members import check_members, member_columns
from foldstack.stage2.sampling import check_sampling


@dataclass
class StageOne:
    name: str
    oof: np.ndarray  # aligned with the train rows: (n,) or (n, n_classes)
    test: np.ndarray  # aligned with the test rows
    score: dict
    optimistic: bool = False  # metrics.json score_is_optimistic (checkpoint picked on the scored fold)


def partial_run(run: Stage1Run, k: int) -> str | None:
    """For a stage-1 run folder that has some fold sets but no assembled outputs: which folds it lacks."""
    if not run.dir.is_dir():
        return None
    d = run.dir
    have = run.folds_with_record(k)
    if not have:
        return None
    lack = [f for f in range(k) if f not in have]
    if not lack:
        return f"{d.name} has every fold but is not assembled: rerun `make oof MODEL={d.name}` to assemble it"
    return (
        f"{d.name} has fold(s) {', '.join(map(str, have))} of {k}; missing {', '.join(map(str, lack))}: "
        f"`make oof MODEL={d.name} FOLDS={','.join(map(str, lack))}`"
    )


def check_stage1_run(
    cfg: StackConfig, run: Stage1Run, m: dict, oof: pd.DataFrame, folds_meta: dict, folds: pd.DataFrame
) -> None:
    """A stage-1 run's OOF probabilities are a fair feature only if made out of fold on these folds:
    its folds sha256 must be the current one and every OOF row's fold its fold in folds.csv."""
    check_fold_sha(
        cfg,
        m.get("folds_sha256"),
        f"stage-1 run {run.name} ({run.metrics})",
        f"its OOF predictions would leak the other folds' labels; rerun `make oof MODEL={run.name}` on the "
        f"current folds",
        folds_meta,
    )
    if "fold" not in oof.columns:
        raise DataError(f"{run.oof}: no fold column (expected id, fold, target, pred)")
    theirs = oof.loc[folds["id"], "fold"].to_numpy()
    wrong = theirs != folds["fold"].to_numpy()
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        raise DataError(
            f"{run.oof}: {int(wrong.sum())} row(s) have another fold than in folds.csv (e.g. "
            f"id {folds['id'].iloc[i]}: fold {theirs[i]} there, {folds['fold'].iloc[i]} in folds.csv): "
            f"its predictions are not out of fold on these folds; rerun `make oof MODEL={run.name}`"
        )


def check_optimism(cfg: StackConfig, runs: list[StageOne]) -> list[str]:
    """The names of stage-1 runs whose score is optimistic (their epoch was picked on the scored fold);
    refused unless features.allow_optimistic=true, in which case the stack carries the flag."""
    flagged = [s.name for s in runs if s.optimistic]
    if flagged and not cfg.features.allow_optimistic:
        files = ", ".join(str(Runs.of(cfg).stage1(n).metrics) for n in flagged)
        raise DataError(
            f"stage-1 run(s) {flagged} have score_is_optimistic: true ({files}): their checkpoint "
            f"(train.checkpoint=best_optimistic) was picked on the fold they predict, so their OOF "
            f"predictions are optimistic features. Retrain them with another train.checkpoint (e.g. "
            f'best_inner or last), or accept that with SET="features.allow_optimistic=true" (the stack '
            f"is then flagged score_is_optimistic)"
        )
    return flagged


def load_stage1(
    cfg: StackConfig,
    names: list[str],
    train_ids: pd.Series,
    test_ids: pd.Series,
    folds_meta: dict,
    folds: pd.DataFrame,
) -> list[StageOne]:
    """Each stage-1 run's OOF and test predictions, refused if made on other folds."""
    out = []
    for name in names:
        run = Runs.of(cfg).stage1(name)
        d = run.dir
        m = run.read_metrics()  # refuses oof/test files that differ from it
        oof = pd.read_parquet(run.oof).set_index("id")
        test = pd.read_parquet(run.test).set_index("id")
        if set(oof.index) != set(train_ids) or set(test.index) != set(test_ids):
            raise DataError(f"{d}: its ids differ from the train/test metadata")
        check_stage1_run(cfg, run, m, oof, folds_meta, folds)
        out.append(
            StageOne(
                name,
                pt.read(cfg, oof.loc[train_ids], str(run.oof)),
                pt.read(cfg, test.loc[test_ids], str(run.test)),
                {k: v for k, v in m.items() if k.startswith("oof_") and isinstance(v, float)},
                bool(m.get("score_is_optimistic", False)),
            )
        )
    return out


@dataclass
class Matrices:
    X: pd.DataFrame
    X_test: pd.DataFrame
    X_tab: pd.DataFrame  # X without the stage-1 columns (the tabular-only comparison; no test twin)
    y: np.ndarray
    fold: np.ndarray
    train_ids: list[str]
    test_ids: list[str]
    levels: dict[str, list[str]]
    stage1: list[str] = field(default_factory=list)  # the stage-1 runs stacked

    def columns_of(self, spec: ModelSpec) -> list[str]:
        """The columns member `spec` sees (stage2.members)."""
        return member_columns(spec, list(self.X.columns), self.stage1)

    def member(self, spec: ModelSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(train, test) matrices of member `spec`: m.X itself when it drops nothing."""
        cols = self.columns_of(spec)
        if cols == list(self.X.columns):
            return self.X, self.X_test
        return self.X[cols], self.X_test[cols]


def build_matrices(
    cfg: StackConfig, data_dir: Path, models_in: list[str] | None
) -> tuple[Matrices, list[StageOne], dict]:
    folds, fmeta = load_folds(cfg)
    train = read_metadata(cfg, data_dir, "train")
    test = read_metadata(cfg, data_dir, "test")
    idc = cfg.columns.id
    if set(train[idc]) != set(folds["id"]):
        raise DataError(f"{Runs.of(cfg).folds_csv} was made on other data than {data_dir}")
    train = train.set_index(idc).loc[folds["id"]].reset_index()
    runs = Runs.of(cfg)
    found = runs.stage1_runs()  # once: each call lists (and recovers) every run
    finished = [r.name for r in found]
    names = (
        models_in
        if models_in is not None
        else (stacked_by_default(found) if cfg.models_in == "all" else list(cfg.models_in))
    )  # models_in: all stacks a mean of seed runs (stage1.seeds) for its seed runs
    missing = [n for n in names if n not in finished]
    if missing:
        partial = [partial_run(runs.stage1(n), cfg.folds.k) for n in missing]
        said = "; ".join(p for p in partial if p)
        raise DataError(
            f"no finished stage-1 run {missing} under {runs.stage1_root}; have: "
            f"{', '.join(finished) or 'none'} (run `make oof MODEL=...`)" + (f". {said}" if said else "")
        )
    s1 = load_stage1(cfg, names, train[idc], test[idc], fmeta, folds) if cfg.features.cnn else []
    check_optimism(cfg, s1)
    cats = cfg.table.of_type("cat", split="test")  # train-only categories (the label) never count
    f = cfg.features
    (tr, derived), (te, _) = with_derived(f, train), with_derived(f, test)
    levels = category_levels([tr, te], cats + derived)
    ran = [s.name for s in s1]
    check_cnn_config(f, ran, cfg.multiclass)
    X = build_features(cfg, f, train, cnn_inputs(cfg, {s.name: s.oof for s in s1}), levels, ran)
    X_test = build_features(cfg, f, test, cnn_inputs(cfg, {s.name: s.test for s in s1}), levels, ran)
    cnn_cols = [c for c in X.columns if c.startswith(CNN_PREFIX)]  # the tabular-only model drops just these
    X_tab = X.drop(columns=cnn_cols)
    check_same_columns(X, X_test)
    y = folds["target"].to_numpy()
    check_leaks(X, y, cfg.table.train_only)
    m = Matrices(
        X,
        X_test,
        X_tab,
        y,
        folds["fold"].to_numpy(),
        train[idc].tolist(),
        test[idc].tolist(),
        levels,
        ran,
    )
    check_members(cfg, ran)
    for spec in cfg.models:  # a drop naming no family or column is refused before any fitting
        m.columns_of(spec)
    check_sampling(cfg, y, m.fold)
    return m, s1, fmeta


def study_name(
    cfg: StackConfig, spec: ModelSpec, m: Matrices, fmeta: dict, X: pd.DataFrame | None = None
) -> str:
    """The Optuna study of a model on these exact features (X: the member's columns of m.X): a rerun (or
    a worker on another machine) joins it, while a retrained stage-1 run (same name, new predictions) or
    new data starts a fresh one."""
    X = m.X if X is None else X
    values = pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes()
    key = {
        "spec": spec.identity(),
        "features": list(X.columns),
        "values": artifacts.sha256_bytes(values + m.y.tobytes()),
        "folds": fmeta["sha256"],
        "holdout": cfg.tuning.holdout_fold,
    }
    return f"{cfg.run}-{spec.name}-{artifacts.sha256_bytes(json.dumps(key, sort_keys=True).encode())[:10]}"
