"""What a stack run says of itself in metrics.json: its scores pooled, per fold and on the hold-out fold,
how they were obtained, each model's scores and study, and the flags (optimistic inputs, a score too
good to be true)."""

from __future__ import annotations

import numpy as np

from foldstack import artifacts, metrics
from foldstack import prediction_tables as pt
from foldstack.stage2.config import StackConfig
from foldstack.stage2.inputs import Matrices, StageOne


def scores(cfg: StackConfig, y: np.ndarray, p: np.ndarray, fold: np.ndarray) -> dict:
    """pt.score_folds (oof_<key>, fold_<key>_mean, per_fold) and for binary F1/precision/recall
    at 0.5."""
    out = pt.score_folds(cfg, y, p, fold)
    per_fold = out.pop("per_fold")
    if not cfg.multiclass:
        at_half = metrics.threshold_metrics(y, p, 0.5)
        out |= {f"{k}_at_0.5": at_half[k] for k in ("f1", "precision", "recall")}
    return out | {"per_fold": per_fold}


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


def stack_result(
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
        f"optimistic). {how_blended(cfg, holdout)}"
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


def how_blended(cfg: StackConfig, holdout: int) -> str:
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
