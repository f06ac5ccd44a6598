"""Stage 2 end to end: features + stage-1 OOF -> tuned models on the same folds -> blend -> the stack run.

The pieces: stage2.inputs (the stage-1 runs and the feature matrices), stage2.tune (Optuna, never on
the hold-out fold), stage2.models (the estimator over stage2.engines), stage2.blend (weights and the
blend), stage2.summary (metrics.json). This module only puts them in order and writes the run folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from foldstack import artifacts
from foldstack import prediction_tables as pt
from foldstack.config import to_yaml
from foldstack.progress import say
from foldstack.report import write_report
from foldstack.runs import (
    IMPORTANCE_CSV,
    IMPORTANCE_PNG,
    LEVELS,
    METRICS,
    MODELS,
    OOF,
    OPTUNA_PNG,
    REPORT,
    SHIFT_PNG,
    STUDY,
    TEST,
    Runs,
    StackInputs,
    StackRun,
    model_pred_columns,
)
from foldstack.stage2 import plots, skew
from foldstack.stage2.blend import RankCalibration, blend_stack, resolve_weights, save_calibration
from foldstack.stage2.config import ModelSpec, StackConfig
from foldstack.stage2.inputs import Matrices, build_matrices, study_name
from foldstack.stage2.models import estimator, fit_folds
from foldstack.stage2.summary import rank_blend_scores, scores, stack_flags, stack_result
from foldstack.stage2.tune import TuneData, best_sampled, inner_predictions, tune


@dataclass
class Fitted:
    """Every model's outputs, in config order."""

    oofs: dict = field(default_factory=dict)  # name -> OOF (n,) or (n, C)
    tests: dict = field(default_factory=dict)  # name -> per-fold test predictions (k, n_test[, C])
    inner: dict = field(default_factory=dict)  # name -> inner-CV OOF (blend.weights=tune only)
    studies: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)  # name -> what metrics.json says of the model
    importance: pd.Series | None = None  # the first model's gain


def fit_model(
    cfg: StackConfig,
    spec: ModelSpec,
    m: Matrices,
    fmeta: dict,
    run: StackRun,
    models: Path,
    out: Fitted,
    workers: int = 1,
    n_trials: int | None = None,
) -> None:
    """Tune one model (its study brought to n_trials COMPLETE trials), refit every fold with the best
    parameters into `models`, and (blend.weights=tune) predict its inner-CV OOF for the weights."""
    holdout = cfg.tuning.holdout_fold % cfg.folds.k
    X, X_test = m.member(spec)
    d = TuneData(X, m.y, m.fold, holdout, cfg.metric, cfg.n_classes)
    name = study_name(cfg, spec, m, fmeta, X)
    study = tune(spec, d, cfg.tuning, run.study, name, workers, n_trials)
    sampled, tuned_cv = best_sampled(study)
    oof, test, imp = fit_folds(
        spec,
        sampled,
        X,
        m.y,
        m.fold,
        X_test,
        cfg.tuning.seed,
        models,
        cfg.n_classes,
        label=f"refit {spec.name} (best params)",
    )
    out.oofs[spec.name], out.tests[spec.name], out.studies[spec.name] = oof, test, study
    if cfg.blend.weights == "tune":  # the best trial's inner OOF, refitted (no hold-out rows)
        say(f"blend weights: inner-CV OOF of {spec.name} with its best parameters")
        out.inner[spec.name] = inner_predictions(estimator(spec, sampled, cfg.tuning.seed, cfg.n_classes), d)
    out.importance = imp if out.importance is None else out.importance
    out.info[spec.name] = scores(cfg, m.y, oof, m.fold) | {
        "tuned_cv": tuned_cv,
        "trials_in_study": len(study.trials),
        "best_params": sampled,
        "study": study.study_name,
        "n_features": X.shape[1],
        "boosters_per_fold": len(spec.seeds) * spec.bags,
    }


def tabular_only(cfg: StackConfig, m: Matrices, fitted: Fitted) -> np.ndarray:
    """The first model with its best parameters on the features without the stage-1 columns (OOF only:
    the comparison that says what the CNN adds)."""
    first = cfg.models[0]
    oof, _, _ = fit_folds(
        first,
        best_sampled(fitted.studies[first.name])[0],
        m.X_tab[[c for c in m.columns_of(first) if c in m.X_tab.columns]],
        m.y,
        m.fold,
        None,  # its test predictions are never read
        cfg.tuning.seed,
        n_classes=cfg.n_classes,
        label=f"tabular-only {first.name} (no CNN input)",
    )
    return oof


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
    run = Runs.of(cfg).stack(cfg.run)
    m, s1, fmeta = build_matrices(cfg, data_dir, models_in)
    holdout = cfg.tuning.holdout_fold % cfg.folds.k
    shift = skew.stage1_shift(cfg, m.X, m.X_test)
    fitted = Fitted()
    # the run folder is one set: every output is staged and swapped in whole when the run ends (the
    # study journal stays: it outlives runs); a killed run leaves the previous outputs untouched
    with artifacts.SetWriter(run.dir, "stack", manifest=METRICS, replace_all=True, keep=(STUDY,)) as s:
        work = s.workdir()
        for spec in cfg.models:
            fit_model(cfg, spec, m, fmeta, run, work / MODELS, fitted, workers, n_trials)
        weights, weights_info = resolve_weights(cfg, m.y, m.fold, fitted.oofs, fitted.inner, holdout)
        blended, test_folds, calibration, rank_oof = blend_stack(
            cfg, fitted.oofs, fitted.tests, m.y, m.fold, weights
        )
        tab_oof = tabular_only(cfg, m, fitted)
        result = stack_result(cfg, m, s1, fmeta, blended, fitted.info, tab_oof, holdout, time.time() - t0)
        result["blend"] = {"method": cfg.blend.method, "weights": weights} | weights_info
        result["stage1_shift"] = shift
        result |= rank_blend_scores(cfg, m, rank_oof, holdout) | stack_flags(cfg, s1, result)
        write_stack(cfg, run, work, m, blended, fitted, test_folds, result, calibration)
        skew.write_plot(m.X, m.X_test, shift, work / REPORT / SHIFT_PNG, cfg.run)
        artifacts.fault_point("stack.before_commit")
    return result


def write_stack(
    cfg: StackConfig,
    run: StackRun,
    out: Path,
    m: Matrices,
    blended: np.ndarray,
    fitted: Fitted,
    test_folds: np.ndarray,
    result: dict,
    calibration: RankCalibration | None = None,
) -> None:
    """The stack run's members into `out` (the set's workdir)."""
    frame = pt.columns_frame
    parts = [pd.DataFrame({"id": m.train_ids, "fold": m.fold, "target": m.y}), frame(cfg, blended)]
    for name, p in fitted.oofs.items():  # each model's own OOF: pred_<model> (or pred_<model>_<class>)
        parts.append(frame(cfg, p, model_pred_columns(cfg.pred_columns, name)))
    artifacts.write_parquet(out / OOF, pd.concat(parts, axis=1))
    artifacts.write_parquet(out / TEST, pt.test_frame(cfg, m.test_ids, test_folds))
    imp = fitted.importance.rename("gain").rename_axis("feature").reset_index()
    artifacts.write_csv(out / IMPORTANCE_CSV, imp)
    plots.feature_importance(imp, out / IMPORTANCE_PNG, f"{cfg.run}: {cfg.models[0].name} gain")
    plots.optuna_history(fitted.studies, out / OPTUNA_PNG, cfg.metric)
    run.write_config(to_yaml(cfg), out)
    artifacts.write_json(out / LEVELS, m.levels)  # the categories the models were fitted with
    StackRun.write_inputs(out, StackInputs(list(result["cnn"]), list(m.X.columns)))
    if calibration is not None:  # what predict needs to map the rank blend to probabilities
        save_calibration(calibration, out)
    artifacts.write_json(out / METRICS, result)
    write_report(cfg, out, m.y, blended, f"stack {cfg.run}")
