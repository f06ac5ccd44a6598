"""Stage 2 end to end: features + stage-1 OOF -> tuned GBDTs on the same folds -> blend -> artifacts."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import clone

from foldstack import artifacts, metrics, predictions
from foldstack.config import to_yaml
from foldstack.data.metadata import read_metadata
from foldstack.errors import DataError
from foldstack.folds import load_folds
from foldstack.report import write_report
from foldstack.stage2 import plots
from foldstack.stage2.config import ModelSpec, StackConfig
from foldstack.stage2.features import (
    build_features,
    category_levels,
    check_leaks,
    check_same_columns,
    cnn_inputs,
)
from foldstack.stage2.tune import TuneData, best_sampled, estimator, tune


@dataclass
class StageOne:
    name: str
    oof: np.ndarray  # aligned with the train rows: (n,) or (n, n_classes)
    test: np.ndarray  # aligned with the test rows
    score: dict


def stage1_runs(cfg: StackConfig) -> list[str]:
    root = cfg.run_dir / "oof"
    done = [
        p.name
        for p in sorted(root.glob("*"))
        if (p / "metrics.json").exists() and (p / "oof.parquet").exists()
    ]
    return done


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
        d = cfg.run_dir / "oof" / name
        m = json.loads((d / "metrics.json").read_text())
        if m.get("folds_sha256") != folds_meta["sha256"]:
            raise DataError(
                f"{d} was made on folds {str(m.get('folds_sha256'))[:12]}, not the current "
                f"{folds_meta['sha256'][:12]}: rerun `make oof MODEL=...` on the current folds"
            )
        oof = pd.read_parquet(d / "oof.parquet").set_index("id")
        test = pd.read_parquet(d / "test.parquet").set_index("id")
        if set(oof.index) != set(train_ids) or set(test.index) != set(test_ids):
            raise DataError(f"{d}: its ids differ from the train/test metadata")
        if not (oof.loc[folds["id"], "fold"].to_numpy() == folds["fold"].to_numpy()).all():
            raise DataError(f"{d}/oof.parquet: its fold column differs from folds.csv")
        out.append(
            StageOne(
                name,
                predictions.read(cfg, oof.loc[train_ids], f"{d}/oof.parquet"),
                predictions.read(cfg, test.loc[test_ids], f"{d}/test.parquet"),
                {k: v for k, v in m.items() if k.startswith("oof_") and isinstance(v, float)},
            )
        )
    return out


def fit_folds(
    spec: ModelSpec,
    sampled: dict,
    X: pd.DataFrame,
    y: np.ndarray,
    fold: np.ndarray,
    X_test: pd.DataFrame,
    seed: int,
    save_to: Path | None = None,
    n_classes: int = 2,
) -> tuple[np.ndarray, np.ndarray, pd.Series]:
    """Per fold: fit on the other folds, predict the held-out fold and the test set.

    Returns (OOF predictions (n,) or (n, C), test predictions of shape (k, n_test) or (k, n_test, C),
    mean gain importance).
    """
    base = estimator(spec, sampled, seed, n_classes)
    k = int(fold.max()) + 1
    width = (n_classes,) if n_classes > 2 else ()
    oof, test, imp = np.full((len(y), *width), np.nan), np.zeros((k, len(X_test), *width)), []
    for f in range(k):
        est = clone(base).fit(X[fold != f], y[fold != f])
        oof[fold == f] = est.scores(X[fold == f])
        test[f] = est.scores(X_test)
        imp.append(est.feature_importance())
        if save_to is not None:
            est.save(save_to / spec.name / f"fold{f}")
    return oof, test, pd.concat(imp, axis=1).mean(axis=1).sort_values(ascending=False)


def blend(preds: dict[str, np.ndarray], method: str, weights: dict[str, float]) -> np.ndarray:
    """Weighted average of probabilities (any shape) or of ranks scaled to [0, 1] (binary, 1-D); the
    same rule for OOF and test."""
    w = np.array([weights.get(n, 1.0) for n in preds], dtype=float)
    w = w / w.sum()
    arrays = []
    for p in preds.values():
        if method == "rank":
            p = (pd.Series(p).rank(method="average").to_numpy() - 1) / max(len(p) - 1, 1)
        arrays.append(np.asarray(p, dtype=float))
    return np.tensordot(w, np.stack(arrays), axes=1)


def scores(cfg: StackConfig, y: np.ndarray, p: np.ndarray, fold: np.ndarray) -> dict:
    """Pooled OOF headline scores (oof_<name>), per fold, and for binary F1/precision/recall at 0.5."""
    per = [{"fold": int(f), **predictions.headline(cfg, y[fold == f], p[fold == f])} for f in np.unique(fold)]
    out = {f"oof_{k}": v for k, v in predictions.headline(cfg, y, p).items()}
    if not cfg.multiclass:
        at_half = metrics.threshold_metrics(y, p, 0.5)
        out |= {f"{k}_at_0.5": at_half[k] for k in ("f1", "precision", "recall")}
    return out | {"per_fold": per}


@dataclass
class Matrices:
    X: pd.DataFrame
    X_test: pd.DataFrame
    X_tab: pd.DataFrame
    X_tab_test: pd.DataFrame
    y: np.ndarray
    fold: np.ndarray
    train_ids: list[str]
    test_ids: list[str]
    levels: dict[str, list[str]]


def build_matrices(
    cfg: StackConfig, data_dir: Path, models_in: list[str] | None
) -> tuple[Matrices, list[StageOne], dict]:
    folds, fmeta = load_folds(cfg)
    train = read_metadata(cfg, data_dir, "train")
    test = read_metadata(cfg, data_dir, "test")
    idc = cfg.columns.id
    if set(train[idc]) != set(folds["id"]):
        raise DataError(f"{cfg.run_dir / 'folds.csv'} was made on other data than {data_dir}")
    train = train.set_index(idc).loc[folds["id"]].reset_index()
    names = (
        models_in
        if models_in is not None
        else (stage1_runs(cfg) if cfg.models_in == "all" else list(cfg.models_in))
    )
    missing = [n for n in names if n not in stage1_runs(cfg)]
    if missing:
        raise DataError(
            f"no finished stage-1 run {missing} under {cfg.run_dir / 'oof'}; have: "
            f"{', '.join(stage1_runs(cfg)) or 'none'} (run `make oof MODEL=...`)"
        )
    s1 = load_stage1(cfg, names, train[idc], test[idc], fmeta, folds) if cfg.features.cnn else []
    cats = cfg.table.of_type("cat", split="test")  # train-only categories (the label) never count
    levels = category_levels([train, test], cats)
    f = cfg.features
    X = build_features(cfg, f, train, cnn_inputs(cfg, {s.name: s.oof for s in s1}), levels)
    X_test = build_features(cfg, f, test, cnn_inputs(cfg, {s.name: s.test for s in s1}), levels)
    cnn_cols = [c for c in X.columns if c.startswith("cnn_")]  # the tabular-only model drops just these
    X_tab, X_tab_test = X.drop(columns=cnn_cols), X_test.drop(columns=cnn_cols)
    check_same_columns(X, X_test)
    y = folds["target"].to_numpy()
    check_leaks(X, y, cfg.table.train_only)
    m = Matrices(
        X,
        X_test,
        X_tab,
        X_tab_test,
        y,
        folds["fold"].to_numpy(),
        train[idc].tolist(),
        test[idc].tolist(),
        levels,
    )
    return m, s1, fmeta


def study_name(cfg: StackConfig, spec: ModelSpec, m: Matrices, fmeta: dict) -> str:
    """The Optuna study of a model on these exact features: a rerun (or a worker on another machine)
    joins it, while a retrained stage-1 run (same name, new predictions) or new data starts a fresh one."""
    values = pd.util.hash_pandas_object(m.X, index=False).to_numpy().tobytes()
    key = {
        "spec": spec.model_dump(mode="json"),
        "features": list(m.X.columns),
        "values": artifacts.sha256_bytes(values + m.y.tobytes()),
        "folds": fmeta["sha256"],
        "holdout": cfg.tuning.holdout_fold,
    }
    return f"{cfg.run}-{spec.name}-{artifacts.sha256_bytes(json.dumps(key, sort_keys=True).encode())[:10]}"


def run_stack(
    cfg: StackConfig,
    data_dir: Path,
    models_in: list[str] | None = None,
    workers: int = 1,
    n_trials: int | None = None,
) -> dict:
    """Tune (bring each model's study to n_trials COMPLETE trials), fit every fold, blend, write the
    stage-2 artifacts."""
    t0 = time.time()
    out = cfg.run_dir / "stack" / cfg.run
    m, s1, fmeta = build_matrices(cfg, data_dir, models_in)
    k = cfg.folds.k
    holdout = cfg.tuning.holdout_fold % k
    oofs, tests, model_info, importance, studies = {}, {}, {}, None, {}
    for spec in cfg.models:
        d = TuneData(m.X, m.y, m.fold, holdout, cfg.metric, cfg.n_classes)
        study = tune(
            spec, d, cfg.tuning, out / "study.journal", study_name(cfg, spec, m, fmeta), workers, n_trials
        )
        sampled, tuned_cv = best_sampled(study)
        oof, test, imp = fit_folds(
            spec, sampled, m.X, m.y, m.fold, m.X_test, cfg.tuning.seed, out / "models", cfg.n_classes
        )
        oofs[spec.name], tests[spec.name], studies[spec.name] = oof, test, study
        importance = imp if importance is None else importance
        model_info[spec.name] = scores(cfg, m.y, oof, m.fold) | {
            "tuned_cv": tuned_cv,
            "trials_in_study": len(study.trials),
            "best_params": sampled,
            "study": study.study_name,
        }
    blended = blend(oofs, cfg.blend.method, cfg.blend.weights)
    test_folds = np.stack(
        [blend({n: t[f] for n, t in tests.items()}, cfg.blend.method, cfg.blend.weights) for f in range(k)]
    )
    first = cfg.models[0]
    tab_oof, _, _ = fit_folds(
        first,
        best_sampled(studies[first.name])[0],
        m.X_tab,
        m.y,
        m.fold,
        m.X_tab_test,
        cfg.tuning.seed,
        n_classes=cfg.n_classes,
    )
    result = _report(cfg, m, s1, fmeta, blended, model_info, tab_oof, holdout, time.time() - t0)
    _write(cfg, out, m, blended, oofs, test_folds, importance, studies, result)
    return result


def _report(
    cfg: StackConfig,
    m: Matrices,
    s1: list[StageOne],
    fmeta: dict,
    blended: np.ndarray,
    model_info: dict,
    tab_oof: np.ndarray,
    holdout: int,
    wall: float,
) -> dict:
    hold = m.fold == holdout
    held = predictions.headline(cfg, m.y[hold], blended[hold])
    stack = (
        scores(cfg, m.y, blended, m.fold)
        | {"holdout_fold": holdout}
        | {f"holdout_{k}": v for k, v in held.items()}
    )
    how = (
        f"Optuna tuned each model on an inner CV over folds != {holdout} (tuned_cv); fold {holdout} never "
        f"took part in tuning, so the holdout_* scores are untouched. With the best parameters "
        f"every fold's model was fitted on the other folds: oof_pauc pools those OOF predictions (the "
        f"folds other than {holdout} were also used to choose the parameters, so it is mildly "
        f"optimistic). Blend: {cfg.blend.method} average, same rule for OOF and test."
    )
    return {
        "run": cfg.run,
        "competition": cfg.name,
        "metric": cfg.metric,
        "how_scored": how,
        "stack": stack,
        "models": model_info,
        "tabular_only": scores(cfg, m.y, tab_oof, m.fold) | {"model": cfg.models[0].name},
        "cnn": {s.name: s.score for s in s1},
        "n_features": int(m.X.shape[1]),
        "rows": len(m.y),
        "folds_sha256": fmeta["sha256"],
        "wall_seconds": round(wall, 1),
        "git_commit": artifacts.git_commit(),
    }


def _write(
    cfg: StackConfig,
    out: Path,
    m: Matrices,
    blended: np.ndarray,
    oofs: dict,
    test_folds: np.ndarray,
    importance: pd.Series,
    studies: dict,
    result: dict,
) -> None:
    k = test_folds.shape[0]
    frame = predictions.columns_frame
    parts = [pd.DataFrame({"id": m.train_ids, "fold": m.fold, "target": m.y}), frame(cfg, blended)]
    for name, p in oofs.items():  # each model's own OOF: pred_<model> (or pred_<model>_<class>)
        parts.append(frame(cfg, p, [c.replace("pred", f"pred_{name}", 1) for c in cfg.pred_columns]))
    oof = pd.concat(parts, axis=1)
    test = pd.concat(
        [
            pd.DataFrame({"id": m.test_ids}),
            frame(cfg, test_folds.mean(axis=0)),
            *(frame(cfg, test_folds[f], predictions.fold_columns(cfg, f)) for f in range(k)),
        ],
        axis=1,
    )
    artifacts.write_parquet(out / "oof.parquet", oof)
    artifacts.write_parquet(out / "test.parquet", test)
    imp = importance.rename("gain").rename_axis("feature").reset_index()
    artifacts.write_csv(out / "feature_importance.csv", imp)
    plots.feature_importance(imp, out / "feature_importance.png", f"{cfg.run}: {cfg.models[0].name} gain")
    plots.optuna_history(studies, out / "optuna_history.png", cfg.metric)
    artifacts.write_text(out / "config.yaml", f"# git commit: {artifacts.git_commit()}\n{to_yaml(cfg)}")
    artifacts.write_json(out / "levels.json", m.levels)  # the categories the models were fitted with
    artifacts.write_json(
        out / "inputs.json", {"stage1_runs": list(result["cnn"]), "columns": list(m.X.columns)}
    )
    artifacts.write_json(out / "metrics.json", result)
    write_report(cfg, out, m.y, blended, f"stack {cfg.run}")
