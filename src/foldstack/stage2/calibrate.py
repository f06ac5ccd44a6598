"""The rank blend, made a probability by a cross-fitted monotone map.

blend.method=rank averages each model's rank, which orders rows well but is no probability. Here, for
the rows of fold f (OOF) and for fold f's model on the test set:

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
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.isotonic import IsotonicRegression

from foldstack import artifacts
from foldstack.errors import DataError

EPSILON = 1e-6  # weight of the rank score in the probability: keeps the map strictly increasing
BLEND_JSON = "blend.json"
REFERENCE_NPZ = "blend_reference.npz"


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


def save(cal: RankCalibration, folder: Path) -> None:
    """blend.json + blend_reference.npz (no pickle); JSON floats round-trip exactly."""
    meta = {
        "method": "rank",
        "models": cal.models,
        "weights": cal.weights.tolist(),
        "epsilon": EPSILON,
        "reference": REFERENCE_NPZ,
        "knots": [{"fold": f, "x": x.tolist(), "p": p.tolist()} for f, (x, p) in enumerate(cal.knots)],
    }
    arrays = {"fold": cal.fold.astype(np.int64)} | {f"oof_{i}": cal.oof[m] for i, m in enumerate(cal.models)}

    def write(path: Path) -> None:
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    artifacts.write_atomic(folder / REFERENCE_NPZ, write)
    artifacts.write_json(folder / BLEND_JSON, meta)


def load(folder: Path) -> RankCalibration:
    path = folder / BLEND_JSON
    if not path.exists() or not (folder / REFERENCE_NPZ).exists():
        raise DataError(
            f"{path} or {folder / REFERENCE_NPZ} is missing: a rank-blend stack needs both to turn its "
            f"models' scores into probabilities; re-run `make stack` (or copy the whole stack folder)"
        )
    meta = json.loads(path.read_text())
    if meta.get("epsilon") != EPSILON:
        raise DataError(f"{path}: made with epsilon {meta.get('epsilon')}, this code uses {EPSILON}")
    with np.load(folder / REFERENCE_NPZ, allow_pickle=False) as z:
        oof = {m: z[f"oof_{i}"] for i, m in enumerate(meta["models"])}
        fold = z["fold"]
    knots = [(np.asarray(k["x"], float), np.asarray(k["p"], float)) for k in meta["knots"]]
    return RankCalibration(meta["models"], np.asarray(meta["weights"], float), fold, oof, knots)
