"""Blending the stage-2 models: a weighted mean of probabilities (blend.method=prob) or of ranks mapped
back to a probability (rank), with fixed, equal or tuned weights; the same rule for OOF and test.

The rank blend, made a probability by a cross-fitted monotone map. blend.method=rank averages each
model's rank, which orders rows well but is no probability. Here, for the rows of fold f (OOF) and for
fold f's model on the test set:

1. each model's score becomes a rank against a fixed reference: the model's OOF scores on the folds
   other than f (its empirical CDF, mid-ranks at ties, linear between reference values and anchored at
   0 and 1 so that the map is strictly increasing). OOF rows and test rows go through the same map, so
   the same score gets the same rank whatever the size of the set being scored;
2. the ranks are averaged with the blend weights (the rank score, in [0, 1]);
3. the rank score becomes a probability through an isotonic regression (rank score -> target) fitted on
   the OOF rows of the folds other than f only, made strictly increasing (linear between the centres of
   the isotonic steps, plus EPSILON times the rank score), so that within a fold the order of the rows,
   hence AUC and pAUC, is exactly that of the rank score.

What predict needs to redo this on new data is saved in the stack folder without pickle: blend.json
(method, models, weights, epsilon, the isotonic knots per fold) and blend_reference.npz (each model's
OOF scores and the fold of each row, from which the references are rebuilt).

Weights fitted without the hold-out fold (`blend.weights: tune`): each model's inner-CV OOF with its
best parameters (stage2.tune.inner_predictions: the folds other than the hold-out fold, each predicted by
a model fitted on the remaining tuning folds, exactly as its Optuna trials were scored) is blended with
every weight vector of a grid on the simplex (steps of `blend.tune_step`, weights >= 0 summing to 1), in
the space of `blend.method`: ranks of the pooled inner OOF (rank) or probabilities (prob). The grid point
with the best competition metric wins; among equal scores the one nearest equal weights. The hold-out
fold takes no part, so its score of the tuned blend stays untouched. A grid rather than a continuous
optimiser: pAUC and AUC are step functions of the weights, and with 2-4 models a 0.05 grid (21 to 1,771
points) is exhaustive, deterministic and seconds long.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy.stats import rankdata
from sklearn.isotonic import IsotonicRegression

from foldstack import artifacts, metrics
from foldstack import prediction_tables as pt
from foldstack.errors import ConfigError, DataError
from foldstack.runs import BLEND_JSON, BLEND_REFERENCE
from foldstack.stage2.config import StackConfig


def blend(preds: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """Weighted average of probabilities (any shape): blend.method=prob, the same rule for OOF and test.
    The rank blend is RankCalibration (ranks against a fixed reference, mapped to probabilities)."""
    w = np.array([weights.get(n, 1.0) for n in preds], dtype=float)
    w = w / w.sum()
    return np.tensordot(w, np.stack([np.asarray(p, dtype=float) for p in preds.values()]), axes=1)


def blend_oof(
    method: str, oofs: dict, y: np.ndarray, fold: np.ndarray, weights: dict[str, float]
) -> np.ndarray:
    """The OOF blend alone (what `make ablate` scores): the same rule as blend_stack's OOF."""
    if method == "prob":
        return blend(oofs, weights)
    return fit_rank_calibration(oofs, y, fold, weights)[1]


def blend_stack(
    cfg: StackConfig, oofs: dict, tests: dict, y: np.ndarray, fold: np.ndarray, weights: dict[str, float]
) -> tuple[np.ndarray, np.ndarray, RankCalibration | None, np.ndarray | None]:
    """(OOF blend, per-fold test blends (k, n_test[, C]), the rank calibration, the OOF rank score).

    prob: a weighted mean of probabilities. rank (binary): the weighted mean rank, mapped back to a
    probability by a monotone map fitted out of fold (RankCalibration), the same map per fold for OOF
    and test."""
    k = int(fold.max()) + 1
    if cfg.blend.method == "prob":
        test_folds = np.stack([blend({n: t[f] for n, t in tests.items()}, weights) for f in range(k)])
        return blend(oofs, weights), test_folds, None, None
    cal, prob, rank = fit_rank_calibration(oofs, y, fold, weights)
    test_folds = np.stack([cal.probability(f, {n: t[f] for n, t in tests.items()}) for f in range(k)])
    return prob, test_folds, cal, rank


EPSILON = 1e-6  # weight of the rank score in the probability: keeps the map strictly increasing


def reference(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(knots, cdf) of the mid-rank empirical CDF of `scores`, anchored at (min(0, lo), 0) and
    (max(1, hi), 1): strictly increasing in both."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    if len(s) == 0 or not np.isfinite(s).all():
        raise DataError("the rank reference needs finite OOF scores, got none or NaN/inf")
    u, counts = np.unique(s, return_counts=True)
    below = np.cumsum(counts) - counts
    cdf = (below + counts / 2) / len(s)
    lo, hi = min(0.0, u[0]), max(1.0, u[-1])
    if lo < u[0]:
        u, cdf = np.concatenate([[lo], u]), np.concatenate([[0.0], cdf])
    if hi > u[-1]:
        u, cdf = np.concatenate([u, [hi]]), np.concatenate([cdf, [1.0]])
    return u, cdf


def to_rank(ref: tuple[np.ndarray, np.ndarray], scores: np.ndarray) -> np.ndarray:
    """Scores -> ranks in [0, 1] against a reference (strictly increasing within its range)."""
    return np.interp(np.asarray(scores, dtype=np.float64), ref[0], ref[1])


def fit_map(rank_score: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots (x, p) of a monotone map rank score -> P(y = 1): an isotonic regression whose steps are
    replaced by their centres, joined linearly (flat beyond the first and last centre)."""
    iso = IsotonicRegression(out_of_bounds="clip", increasing=True, y_min=0.0, y_max=1.0)
    x = np.asarray(rank_score, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    fitted = iso.fit(x, np.asarray(y, dtype=np.float64)).predict(xs)  # non-decreasing along xs
    values, first = np.unique(fitted, return_index=True)  # each step is a run of xs, equal x in one run
    last = np.append(first[1:] - 1, len(xs) - 1)
    return (xs[first] + xs[last]) / 2, values


def apply_map(knots: tuple[np.ndarray, np.ndarray], rank_score: np.ndarray) -> np.ndarray:
    """A probability in [0, 1], strictly increasing in the rank score (which lies in [0, 1])."""
    r = np.asarray(rank_score, dtype=np.float64)
    return (1 - EPSILON) * np.interp(r, knots[0], knots[1]) + EPSILON * r


@dataclass
class RankCalibration:
    """Everything needed to turn the models' scores of fold f's rows (or fold f's models on test) into
    the blend's probability."""

    models: list[str]
    weights: np.ndarray  # normalised, in the order of `models`
    fold: np.ndarray  # fold of each OOF row
    oof: dict[str, np.ndarray]  # model -> OOF scores (n,)
    knots: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # per fold

    def rank_score(self, f: int, preds: dict[str, np.ndarray]) -> np.ndarray:
        """The weighted mean rank of `preds` (model -> scores), ranked against folds != f's OOF."""
        missing = [m for m in self.models if m not in preds]
        if missing:
            raise DataError(f"rank blend: no predictions of model(s) {missing}; have {list(preds)}")
        train = self.fold != f
        total = np.zeros(len(np.asarray(preds[self.models[0]])))
        for w, m in zip(self.weights, self.models, strict=True):  # elementwise: same bits for any n
            total = total + w * to_rank(reference(self.oof[m][train]), preds[m])
        return total

    def probability(self, f: int, preds: dict[str, np.ndarray]) -> np.ndarray:
        return apply_map(self.knots[f], self.rank_score(f, preds))


def fit_rank_calibration(
    oofs: dict[str, np.ndarray], y: np.ndarray, fold: np.ndarray, weights: dict[str, float]
) -> tuple[RankCalibration, np.ndarray, np.ndarray]:
    """Fit the per-fold maps; return (calibration, OOF probabilities, OOF rank scores before the map)."""
    models = list(oofs)
    w = np.array([weights.get(n, 1.0) for n in models], dtype=float)
    cal = RankCalibration(
        models, w / w.sum(), np.asarray(fold), {m: np.asarray(oofs[m], float) for m in models}
    )
    k = int(cal.fold.max()) + 1
    prob, rank = np.full(len(y), np.nan), np.full(len(y), np.nan)
    for f in range(k):
        score = cal.rank_score(f, cal.oof)  # every row ranked against folds != f
        train = cal.fold != f
        cal.knots.append(fit_map(score[train], y[train]))
        rank[~train] = score[~train]
        prob[~train] = apply_map(cal.knots[f], score[~train])
    return cal, prob, rank


def save_calibration(cal: RankCalibration, folder: Path) -> None:
    """blend.json + blend_reference.npz (no pickle); JSON floats round-trip exactly."""
    meta = {
        "method": "rank",
        "models": cal.models,
        "weights": cal.weights.tolist(),
        "epsilon": EPSILON,
        "reference": BLEND_REFERENCE,
        "knots": [{"fold": f, "x": x.tolist(), "p": p.tolist()} for f, (x, p) in enumerate(cal.knots)],
    }
    arrays = {"fold": cal.fold.astype(np.int64)} | {f"oof_{i}": cal.oof[m] for i, m in enumerate(cal.models)}

    def write(path: Path) -> None:
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    artifacts.write_atomic(folder / BLEND_REFERENCE, write)
    artifacts.write_json(folder / BLEND_JSON, meta)


def load_calibration(folder: Path) -> RankCalibration:
    path = folder / BLEND_JSON
    if not path.exists() or not (folder / BLEND_REFERENCE).exists():
        raise DataError(
            f"{path} or {folder / BLEND_REFERENCE} is missing: a rank-blend stack needs both to turn its "
            f"models' scores into probabilities; re-run `make stack` (or copy the whole stack folder)"
        )
    meta = json.loads(path.read_text())
    if meta.get("epsilon") != EPSILON:
        raise DataError(f"{path}: made with epsilon {meta.get('epsilon')}, this code uses {EPSILON}")
    with np.load(folder / BLEND_REFERENCE, allow_pickle=False) as z:
        oof = {m: z[f"oof_{i}"] for i, m in enumerate(meta["models"])}
        fold = z["fold"]
    knots = [(np.asarray(k["x"], float), np.asarray(k["p"], float)) for k in meta["knots"]]
    return RankCalibration(meta["models"], np.asarray(meta["weights"], float), fold, oof, knots)


MAX_GRID = 20_000  # weight vectors scored at most; more models need a coarser blend.tune_step


def simplex_grid(m: int, step: float) -> np.ndarray:
    """Every weight vector of m non-negative multiples of `step` that sum to 1, shape (points, m)."""
    n = round(1 / step)
    # stars and bars: choose m-1 bar positions among n+m-1 slots
    rows = []
    for bars in combinations(range(n + m - 1), m - 1):
        edges = (-1, *bars, n + m - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(m)])
    return np.asarray(rows, dtype=np.float64) / n


def grid_size(m: int, step: float) -> int:
    from math import comb

    n = round(1 / step)
    return comb(n + m - 1, m - 1)


def to_space(method: str, pred: np.ndarray) -> np.ndarray:
    """The values the blend averages: pooled ranks in [0, 1] (rank) or the probabilities (prob)."""
    if method == "rank":
        return rankdata(pred, method="average") / len(pred)
    return np.asarray(pred, dtype=np.float64)


def tune_weights(
    inner: dict[str, np.ndarray], y: np.ndarray, method: str, metric: str, step: float
) -> tuple[dict[str, float], dict]:
    """(weights by model, what metrics.json reports) from the models' inner OOF on the tuning rows only
    (`inner` and `y` hold just those rows)."""
    names = list(inner)
    points = grid_size(len(names), step)
    if points > MAX_GRID:
        raise ConfigError(
            f"blend.tune_step={step:g} with {len(names)} models makes {points:,} weight vectors to score "
            f'(at most {MAX_GRID:,}): set a coarser step, e.g. SET="blend.tune_step=0.1"'
        )
    values = np.stack([to_space(method, inner[n]) for n in names])  # (m, n[, C])
    grid = simplex_grid(len(names), step)
    equal = np.full(len(names), 1 / len(names))
    scores = np.array([metrics.score(metric, y, np.tensordot(w, values, axes=1)) for w in grid])
    best = scores.max()
    ties = np.flatnonzero(scores >= best - 1e-12)
    pick = ties[np.argmin(((grid[ties] - equal) ** 2).sum(axis=1))]
    weights = {n: float(w) for n, w in zip(names, grid[pick], strict=True)}
    info = {
        "tuned_on": "inner-CV OOF of the tuning folds (every fold but the hold-out fold), best parameters",
        "space": method,
        "step": step,
        "grid_points": int(points),
        f"inner_{metric}_tuned": float(best),
        f"inner_{metric}_equal": float(metrics.score(metric, y, np.tensordot(equal, values, axes=1))),
        "inner_rows": len(y),
    }
    return weights, info


def resolve_weights(
    cfg: StackConfig, y: np.ndarray, fold: np.ndarray, oofs: dict, inner: dict, holdout: int
) -> tuple[dict[str, float], dict]:
    """(the blend weights, normalised, by model; what metrics.json says of them). blend.weights=tune fits
    them on the inner-CV OOF of the tuning folds and also scores equal weights, for comparison only:
    nothing is chosen on the hold-out fold."""
    names = list(oofs)
    if cfg.blend.weights != "tune":
        given = cfg.blend.fixed()
        w = given or {n: 1.0 for n in names}
        total = sum(w[n] for n in names)
        source = "config (blend.weights)" if given else "equal (blend.weights not set)"
        return {n: w[n] / total for n in names}, {"weights_from": source}
    used = fold != holdout
    weights, info = tune_weights(
        {n: p[used] for n, p in inner.items()}, y[used], cfg.blend.method, cfg.metric, cfg.blend.tune_step
    )
    equal = blend_oof(cfg.blend.method, oofs, y, fold, {n: 1.0 for n in names})
    hold = fold == holdout
    compare = {f"oof_{k}": v for k, v in pt.headline(cfg, y, equal).items()}
    compare |= {f"holdout_{k}": v for k, v in pt.headline(cfg, y[hold], equal[hold]).items()}
    return weights, {"weights_from": "tuned"} | info | {"equal_weights_for_comparison": compare}


def stack_weights(cfg: StackConfig, result: dict, where: Path) -> dict[str, float]:
    """The weights a finished stack blended with: its metrics.json's (`result`: tuned or resolved), else
    the config's."""
    written = result.get("blend", {}).get("weights")
    if written is None and cfg.blend.weights == "tune":
        raise DataError(f"{where} has no blend.weights though the stack tuned them; re-run `make stack`")
    return written if written is not None else cfg.blend.fixed()
