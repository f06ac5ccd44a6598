"""Stage 2 end to end: features + stage-1 OOF -> tuned GBDTs on the same folds -> blend -> artifacts."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import clone

from foldstack import artifacts, metrics
from foldstack import prediction_tables as pt
from foldstack.config import to_yaml
from foldstack.data.metadata import read_metadata
from foldstack.errors import DataError
from foldstack.folds import check_fold_sha, load_folds
from foldstack.report import write_report
from foldstack.stage2 import calibrate, plots, skew
from foldstack.stage2.config import ModelSpec, StackConfig
from foldstack.stage2.features import (
    build_features,
    category_levels,
    check_leaks,
    check_same_columns,
    cnn_inputs,
)
from foldstack.stage2.tune import TuneData, best_sampled, estimator, inner_predictions, say, tune
from foldstack.stage2.weights import tune_weights

STUDY_FILES = ("study.journal",)  # Optuna's journal (and its lock files) outlive a run's outputs


@dataclass
class StageOne:
    name: str
    oof: np.ndarray  # aligned with the train rows: (n,) or (n, n_classes)
    test: np.ndarray  # aligned with the test rows
    score: dict
    optimistic: bool = False  # metrics.json score_is_optimistic (checkpoint picked on the scored fold)


def stage1_runs(cfg: StackConfig) -> list[str]:
    root = cfg.run_dir / "oof"
    for p in root.glob("*"):
        artifacts.recover(p)  # finish a stage-1 run set that a killed process left half committed
    done = [
        p.name
        for p in sorted(root.glob("*"))
        if (p / "metrics.json").exists() and (p / "oof.parquet").exists()
    ]
    return done


def partial_run(d: Path, k: int) -> str | None:
    """For a stage-1 run folder that has some fold sets but no assembled outputs: which folds it lacks."""
    if not d.is_dir():
        return None
    have = [f for f in range(k) if (d / f"fold{f}.json").exists()]
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
    cfg: StackConfig, d: Path, m: dict, oof: pd.DataFrame, folds_meta: dict, folds: pd.DataFrame
) -> None:
    """A stage-1 run's OOF probabilities are a fair feature only if made out of fold on these folds:
    its folds sha256 must be the current one and every OOF row's fold its fold in folds.csv."""
    check_fold_sha(
        cfg,
        m.get("folds_sha256"),
        f"stage-1 run {d.name} ({d / 'metrics.json'})",
        f"its OOF predictions would leak the other folds' labels; rerun `make oof MODEL={d.name}` on the "
        f"current folds",
        folds_meta,
    )
    if "fold" not in oof.columns:
        raise DataError(f"{d / 'oof.parquet'}: no fold column (expected id, fold, target, pred)")
    theirs = oof.loc[folds["id"], "fold"].to_numpy()
    wrong = theirs != folds["fold"].to_numpy()
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        raise DataError(
            f"{d / 'oof.parquet'}: {int(wrong.sum())} row(s) have another fold than in folds.csv (e.g. "
            f"id {folds['id'].iloc[i]}: fold {theirs[i]} there, {folds['fold'].iloc[i]} in folds.csv): "
            f"its predictions are not out of fold on these folds; rerun `make oof MODEL={d.name}`"
        )


def check_optimism(cfg: StackConfig, runs: list[StageOne]) -> list[str]:
    """The names of stage-1 runs whose score is optimistic (their epoch was picked on the scored fold);
    refused unless features.allow_optimistic=true, in which case the stack carries the flag."""
    flagged = [s.name for s in runs if s.optimistic]
    if flagged and not cfg.features.allow_optimistic:
        files = ", ".join(str(cfg.run_dir / "oof" / n / "metrics.json") for n in flagged)
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
        d = cfg.run_dir / "oof" / name
        m = artifacts.read_manifest(d / "metrics.json")  # refuses oof/test files that differ from it
        oof = pd.read_parquet(d / "oof.parquet").set_index("id")
        test = pd.read_parquet(d / "test.parquet").set_index("id")
        if set(oof.index) != set(train_ids) or set(test.index) != set(test_ids):
            raise DataError(f"{d}: its ids differ from the train/test metadata")
        check_stage1_run(cfg, d, m, oof, folds_meta, folds)
        out.append(
            StageOne(
                name,
                pt.read(cfg, oof.loc[train_ids], f"{d}/oof.parquet"),
                pt.read(cfg, test.loc[test_ids], f"{d}/test.parquet"),
                {k: v for k, v in m.items() if k.startswith("oof_") and isinstance(v, float)},
                bool(m.get("score_is_optimistic", False)),
            )
        )
    return out


def fit_folds(
    spec: ModelSpec,
    sampled: dict,
    X: pd.DataFrame,
    y: np.ndarray,
    fold: np.ndarray,
    X_test: pd.DataFrame | None,
    seed: int,
    save_to: Path | None = None,
    n_classes: int = 2,
    label: str | None = None,
) -> tuple[np.ndarray, np.ndarray | None, pd.Series]:
    """Per fold: fit on the other folds, predict the held-out fold and the test set (none when X_test
    is None: nobody reads it); with a `label`, one line per fitted fold (tune.say: written at once,
    terminal or not).

    Returns (OOF predictions (n,) or (n, C), test predictions of shape (k, n_test) or (k, n_test, C)
    or None, mean gain importance).
    """
    base = estimator(spec, sampled, seed, n_classes)
    k = int(fold.max()) + 1
    width = (n_classes,) if n_classes > 2 else ()
    oof, imp = np.full((len(y), *width), np.nan), []
    test = None if X_test is None else np.zeros((k, len(X_test), *width))
    for f in range(k):
        t0 = time.perf_counter()
        est = clone(base).fit(X[fold != f], y[fold != f])
        oof[fold == f] = est.scores(X[fold == f])
        if test is not None:
            test[f] = est.scores(X_test)
        imp.append(est.feature_importance())
        if save_to is not None:
            est.save(save_to / spec.name / f"fold{f}")
        if label is not None:
            say(
                f"{label}: fold {f} ({f + 1}/{k}) fitted on {int((fold != f).sum())} rows, "
                f"{int((fold == f).sum())} held-out rows predicted; {time.perf_counter() - t0:.1f} s"
            )
        artifacts.fault_point("stack.fit_fold")
    return oof, test, pd.concat(imp, axis=1).mean(axis=1).sort_values(ascending=False)


def model_pred_columns(cfg: StackConfig, model: str) -> list[str]:
    """A model's own OOF columns in the stack's oof.parquet: pred_<model> (or pred_<model>_<class>)."""
    return [c.replace("pred", f"pred_{model}", 1) for c in cfg.pred_columns]


def blend(preds: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """Weighted average of probabilities (any shape): blend.method=prob, the same rule for OOF and test.
    The rank blend is stage2.calibrate (ranks against a fixed reference, mapped to probabilities)."""
    w = np.array([weights.get(n, 1.0) for n in preds], dtype=float)
    w = w / w.sum()
    return np.tensordot(w, np.stack([np.asarray(p, dtype=float) for p in preds.values()]), axes=1)


def blend_oof(
    method: str, oofs: dict, y: np.ndarray, fold: np.ndarray, weights: dict[str, float]
) -> np.ndarray:
    """The OOF blend alone (what `make ablate` scores): the same rule as blend_stack's OOF."""
    if method == "prob":
        return blend(oofs, weights)
    return calibrate.fit_rank_calibration(oofs, y, fold, weights)[1]


def blend_stack(
    cfg: StackConfig, oofs: dict, tests: dict, y: np.ndarray, fold: np.ndarray, weights: dict[str, float]
) -> tuple[np.ndarray, np.ndarray, calibrate.RankCalibration | None, np.ndarray | None]:
    """(OOF blend, per-fold test blends (k, n_test[, C]), the rank calibration, the OOF rank score).

    prob: a weighted mean of probabilities. rank (binary): the weighted mean rank, mapped back to a
    probability by a monotone map fitted out of fold (stage2.calibrate), the same map per fold for OOF
    and test."""
    k = int(fold.max()) + 1
    if cfg.blend.method == "prob":
        test_folds = np.stack([blend({n: t[f] for n, t in tests.items()}, weights) for f in range(k)])
        return blend(oofs, weights), test_folds, None, None
    cal, prob, rank = calibrate.fit_rank_calibration(oofs, y, fold, weights)
    test_folds = np.stack([cal.probability(f, {n: t[f] for n, t in tests.items()}) for f in range(k)])
    return prob, test_folds, cal, rank


def resolve_weights(
    cfg: StackConfig, m: Matrices, oofs: dict, inner: dict, holdout: int
) -> tuple[dict[str, float], dict]:
    """(the blend weights, normalised, by model; what metrics.json says of them). blend.weights=tune fits
    them on the inner-CV OOF of the tuning folds (stage2.weights) and also scores equal weights, for
    comparison only: nothing is chosen on the hold-out fold."""
    names = list(oofs)
    if cfg.blend.weights != "tune":
        given = cfg.blend.fixed()
        w = given or {n: 1.0 for n in names}
        total = sum(w[n] for n in names)
        source = "config (blend.weights)" if given else "equal (blend.weights not set)"
        return {n: w[n] / total for n in names}, {"weights_from": source}
    used = m.fold != holdout
    weights, info = tune_weights(
        {n: p[used] for n, p in inner.items()}, m.y[used], cfg.blend.method, cfg.metric, cfg.blend.tune_step
    )
    equal = blend_oof(cfg.blend.method, oofs, m.y, m.fold, {n: 1.0 for n in names})
    hold = m.fold == holdout
    compare = {f"oof_{k}": v for k, v in pt.headline(cfg, m.y, equal).items()}
    compare |= {f"holdout_{k}": v for k, v in pt.headline(cfg, m.y[hold], equal[hold]).items()}
    return weights, {"weights_from": "tuned"} | info | {"equal_weights_for_comparison": compare}


def rank_blend_scores(cfg: StackConfig, m: Matrices, rank_oof: np.ndarray | None, holdout: int) -> dict:
    """The rank blend's scores before the probability map: per fold (and so on the hold-out fold) they
    equal the calibrated blend's, pooled they differ a little (each fold has its own map)."""
    if rank_oof is None:
        return {}
    hold = m.fold == holdout
    pooled = {f"oof_{k}": v for k, v in pt.headline(cfg, m.y, rank_oof).items()}
    held = {f"holdout_{k}": v for k, v in pt.headline(cfg, m.y[hold], rank_oof[hold]).items()}
    return {"rank_blend_before_calibration": pooled | held}


def suspicious_reasons(cfg: StackConfig, result: dict) -> list[str]:
    """Scores at or near the metric's maximum (pt.NEAR_MAX): the stack's OOF and hold-out
    scores, and each model's OOF score and inner-CV (tuned_cv) score. Too good to be true: a leak."""
    found = [f"stack {r}" for r in pt.near_max(result["stack"])]
    limit = pt.NEAR_MAX[pt.main_key(cfg)]
    for name, rec in result["models"].items():
        found += [f"model {name} {r}" for r in pt.near_max(rec)]
        v = rec.get("tuned_cv")
        if isinstance(v, float) and v >= limit:
            found.append(f"model {name} tuned_cv ({cfg.metric}) {v:.4f} >= {limit}")
    return found


def stack_flags(cfg: StackConfig, s1: list[StageOne], result: dict) -> dict:
    """score_is_optimistic (with the optimistic stage-1 inputs) and suspicious_score, for metrics.json
    and the leaderboard."""
    optimistic = [s.name for s in s1 if s.optimistic]
    out: dict = {"score_is_optimistic": bool(optimistic), "optimistic_inputs": optimistic}
    reasons = suspicious_reasons(cfg, result)
    if reasons:
        out["suspicious_score"] = "score at or near the metric's maximum, check for a leak: " + "; ".join(
            reasons
        )
    return out


def scores(cfg: StackConfig, y: np.ndarray, p: np.ndarray, fold: np.ndarray) -> dict:
    """pt.score_folds (oof_<key>, fold_<key>_mean, per_fold) and for binary F1/precision/recall
    at 0.5."""
    out = pt.score_folds(cfg, y, p, fold)
    per_fold = out.pop("per_fold")
    if not cfg.multiclass:
        at_half = metrics.threshold_metrics(y, p, 0.5)
        out |= {f"{k}_at_0.5": at_half[k] for k in ("f1", "precision", "recall")}
    return out | {"per_fold": per_fold}


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
    finished = stage1_runs(cfg)  # once: each call lists (and recovers) every run folder
    names = (
        models_in if models_in is not None else (finished if cfg.models_in == "all" else list(cfg.models_in))
    )
    missing = [n for n in names if n not in finished]
    if missing:
        partial = [partial_run(cfg.run_dir / "oof" / n, cfg.folds.k) for n in missing]
        said = "; ".join(p for p in partial if p)
        raise DataError(
            f"no finished stage-1 run {missing} under {cfg.run_dir / 'oof'}; have: "
            f"{', '.join(finished) or 'none'} (run `make oof MODEL=...`)" + (f". {said}" if said else "")
        )
    s1 = load_stage1(cfg, names, train[idc], test[idc], fmeta, folds) if cfg.features.cnn else []
    check_optimism(cfg, s1)
    cats = cfg.table.of_type("cat", split="test")  # train-only categories (the label) never count
    levels = category_levels([train, test], cats)
    f = cfg.features
    X = build_features(cfg, f, train, cnn_inputs(cfg, {s.name: s.oof for s in s1}), levels)
    X_test = build_features(cfg, f, test, cnn_inputs(cfg, {s.name: s.test for s in s1}), levels)
    cnn_cols = [c for c in X.columns if c.startswith("cnn_")]  # the tabular-only model drops just these
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
    oofs, tests, model_info, importance, studies, inner = {}, {}, {}, None, {}, {}
    shift = skew.stage1_shift(cfg, m.X, m.X_test)
    # the run folder is one set: every output is staged and swapped in whole when the run ends (the
    # study journal stays: it outlives runs); a killed run leaves the previous outputs untouched
    with artifacts.SetWriter(out, "stack", manifest="metrics.json", replace_all=True, keep=STUDY_FILES) as s:
        work = s.workdir()
        for spec in cfg.models:
            d = TuneData(m.X, m.y, m.fold, holdout, cfg.metric, cfg.n_classes)
            study = tune(
                spec, d, cfg.tuning, out / "study.journal", study_name(cfg, spec, m, fmeta), workers, n_trials
            )
            sampled, tuned_cv = best_sampled(study)
            oof, test, imp = fit_folds(
                spec,
                sampled,
                m.X,
                m.y,
                m.fold,
                m.X_test,
                cfg.tuning.seed,
                work / "models",
                cfg.n_classes,
                label=f"refit {spec.name} (best params)",
            )
            oofs[spec.name], tests[spec.name], studies[spec.name] = oof, test, study
            if cfg.blend.weights == "tune":  # the best trial's inner OOF, refitted (no hold-out rows)
                say(f"blend weights: inner-CV OOF of {spec.name} with its best parameters")
                est = estimator(spec, sampled, cfg.tuning.seed, cfg.n_classes)
                inner[spec.name] = inner_predictions(est, d)
            importance = imp if importance is None else importance
            model_info[spec.name] = scores(cfg, m.y, oof, m.fold) | {
                "tuned_cv": tuned_cv,
                "trials_in_study": len(study.trials),
                "best_params": sampled,
                "study": study.study_name,
            }
        weights, weights_info = resolve_weights(cfg, m, oofs, inner, holdout)
        blended, test_folds, calibration, rank_oof = blend_stack(cfg, oofs, tests, m.y, m.fold, weights)
        first = cfg.models[0]
        tab_oof, _, _ = fit_folds(
            first,
            best_sampled(studies[first.name])[0],
            m.X_tab,
            m.y,
            m.fold,
            None,  # its test predictions are never read
            cfg.tuning.seed,
            n_classes=cfg.n_classes,
            label=f"tabular-only {first.name} (no CNN input)",
        )
        result = _report(cfg, m, s1, fmeta, blended, model_info, tab_oof, holdout, time.time() - t0)
        result["blend"] = {"method": cfg.blend.method, "weights": weights} | weights_info
        result["stage1_shift"] = shift
        result |= rank_blend_scores(cfg, m, rank_oof, holdout) | stack_flags(cfg, s1, result)
        _write(cfg, work, m, blended, oofs, test_folds, importance, studies, result, calibration)
        skew.write_plot(m.X, m.X_test, shift, work / "report" / "stage1_shift.png", cfg.run)
        artifacts.fault_point("stack.before_commit")
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
    held = pt.headline(cfg, m.y[hold], blended[hold])
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
        f"optimistic). {_how_blended(cfg, holdout)}"
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


def _how_blended(cfg: StackConfig, holdout: int) -> str:
    weights = (
        f" The weights (blend.weights) were fitted on the inner-CV OOF of the folds other than {holdout} "
        f"(grid of step {cfg.blend.tune_step:g} on the simplex); the hold-out fold took no part."
        if cfg.blend.weights == "tune"
        else ""
    )
    if cfg.blend.method == "prob":
        return "Blend: weighted mean of the models' probabilities, same rule for OOF and test." + weights
    return weights.strip() + (
        " Blend: weighted mean rank, then a probability. For fold f's rows (OOF) and fold f's models (test) "
        "each model's score is ranked against that model's OOF scores on the other folds (the same map "
        "for OOF and test rows), and the mean rank goes through an isotonic regression (rank -> target) "
        "fitted on the other folds' OOF rows only, made strictly increasing, so that within each fold "
        f"(hence on the hold-out fold {holdout}) AUC and pAUC are exactly the rank blend's; pooled they "
        "differ slightly (rank_blend_before_calibration). pred, F1/precision/recall at 0.5 and the "
        "report's thresholds are on these probabilities; test pred is the mean of the folds' probabilities."
    )


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
    calibration: calibrate.RankCalibration | None = None,
) -> None:
    frame = pt.columns_frame
    parts = [pd.DataFrame({"id": m.train_ids, "fold": m.fold, "target": m.y}), frame(cfg, blended)]
    for name, p in oofs.items():  # each model's own OOF: pred_<model> (or pred_<model>_<class>)
        parts.append(frame(cfg, p, model_pred_columns(cfg, name)))
    oof = pd.concat(parts, axis=1)
    test = pt.test_frame(cfg, m.test_ids, test_folds)
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
    if calibration is not None:  # what predict needs to map the rank blend to probabilities
        calibrate.save(calibration, out)
    artifacts.write_json(out / "metrics.json", result)
    write_report(cfg, out, m.y, blended, f"stack {cfg.run}")
