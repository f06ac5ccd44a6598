"""Blend weights fitted without the hold-out fold (`blend.weights: tune`).

Each model's inner-CV OOF with its best parameters (stage2.tune.inner_predictions: the folds other
than the hold-out fold, each predicted by a model fitted on the remaining tuning folds, exactly as its
Optuna trials were scored) is blended with every weight vector of a grid on the simplex (steps of
`blend.tune_step`, weights >= 0 summing to 1), in the space of `blend.method`: ranks of the pooled inner
OOF (rank) or probabilities (prob). The grid point with the best competition metric wins; among
equal scores the one nearest equal weights. The hold-out fold takes no part, so its score of the tuned
blend stays untouched.

A grid rather than a continuous optimiser: pAUC and AUC are step functions of the weights, and with
2-4 models a 0.05 grid (21 to 1,771 points) is exhaustive, deterministic and seconds long.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
from scipy.stats import rankdata

from foldstack import metrics
from foldstack.errors import ConfigError

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
            f"(at most {MAX_GRID:,}): set a coarser step, e.g. SET=\"blend.tune_step=0.1\""
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
