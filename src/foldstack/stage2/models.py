"""The stage-2 estimator: any engine (stage2.engines) behind one scikit-learn-style classifier, with
negative undersampling and several seeds averaged; its boosters saved in their engines' native formats."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone

from foldstack import artifacts
from foldstack.errors import DataError
from foldstack.progress import say
from foldstack.runs import ESTIMATOR_JSON, model_folder
from foldstack.stage2.config import ModelSpec
from foldstack.stage2.engines import ENGINES, engine
from foldstack.stage2.features import CNN_PREFIX
from foldstack.stage2.sampling import bag_rows, resamples

ESTIMATOR_KEYS = ("n_estimators", "neg_ratio")  # sampled values that set the estimator, not params


class GBDTClassifier(ClassifierMixin, BaseEstimator):
    """Gradient-boosted trees (or the k-NN baseline, kind='knn', params n_neighbors) with optional
    negative undersampling and several seeds (averaged). n_classes > 2 fits a multiclass model
    (LightGBM multiclass, XGBoost multi:softprob, CatBoost MultiClass) on integer labels 0..n_classes-1.

    Follows the scikit-learn estimator contract: __init__ only stores hyperparameters, fit returns
    self, fitted state ends in '_', so `sklearn.base.clone` per fold and `set_params` are safe.
    """

    def __init__(
        self,
        kind: str = "lightgbm",
        params: dict | None = None,
        n_estimators: int = 300,
        neg_ratio: float | None = None,
        seeds: tuple[int, ...] = (0,),
        random_state: int = 0,
        n_classes: int = 2,
        neg_rate: float | None = None,
        pos_rate: float | None = None,
        bags: int = 1,
        cnn_noise: float | None = None,
    ) -> None:
        self.n_classes = n_classes
        self.neg_rate = neg_rate
        self.pos_rate = pos_rate
        self.bags = bags
        self.cnn_noise = cnn_noise
        self.kind = kind
        self.params = params
        self.n_estimators = n_estimators
        self.neg_ratio = neg_ratio
        self.seeds = seeds
        self.random_state = random_state

    def _bags(self, y: np.ndarray, seed: int) -> list[np.ndarray]:
        """Row indices of each booster of one seed (stage2.sampling)."""
        rng = np.random.default_rng([self.random_state, seed])
        if resamples(self):
            return bag_rows(y, rng, self.kind, self.neg_ratio, self.neg_rate, self.pos_rate, self.bags)
        return [self._rows(y, rng)]

    def _rows(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Every positive plus neg_ratio x as many negatives (or all rows)."""
        if not self.neg_ratio:
            return np.arange(len(y))
        pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        keep = rng.choice(neg, size=min(len(neg), round(self.neg_ratio * max(len(pos), 1))), replace=False)
        return np.sort(np.concatenate([pos, keep]))

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> GBDTClassifier:
        if self.kind not in ENGINES:
            raise ValueError(f"kind must be one of {tuple(ENGINES)}, got {self.kind!r}")
        y = np.asarray(y).astype(int)
        if self.n_classes > 2 and self.neg_ratio:
            raise ValueError("neg_ratio (negative undersampling) is for a binary target; leave it unset")
        eng = engine(self.kind)
        self.classes_ = np.arange(self.n_classes)
        self.feature_names_in_ = np.array(X.columns, dtype=object)
        self.boosters_ = []
        noisy = [c for c in X.columns if str(c).startswith(CNN_PREFIX)] if self.cnn_noise else []
        spread = {c: float(np.nanstd(X[c].to_numpy(dtype=np.float64))) for c in noisy}
        for seed in self.seeds:
            for b, rows in enumerate(self._bags(y, seed)):
                Xb = X.iloc[rows]
                if noisy:  # training-time noise on the stage-1 columns: never at predict time
                    rng = np.random.default_rng([self.random_state, seed, b, 1])
                    Xb = Xb.assign(
                        **{
                            c: Xb[c].to_numpy() + rng.normal(0.0, self.cnn_noise * spread[c], len(Xb))
                            for c in noisy
                        }
                    )
                self.boosters_.append(
                    eng.fit(
                        Xb,
                        y[rows],
                        dict(self.params or {}),
                        self.n_estimators,
                        self.random_state + seed,
                        self.n_classes,
                    )
                )
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = predict_boosters(self.kind, self.boosters_, X, self.n_classes)
        return p if self.n_classes > 2 else np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    def scores(self, X: pd.DataFrame) -> np.ndarray:
        """P(positive), shape (n,), or the class probabilities, shape (n, n_classes)."""
        p = self.predict_proba(X)
        return p if self.n_classes > 2 else p[:, 1]

    def feature_importance(self) -> pd.Series:
        """Total gain per feature, averaged over seeds (zeros for an engine without importance)."""
        names = list(self.feature_names_in_)
        eng = engine(self.kind)
        total = pd.Series(0.0, index=names)
        for b in self.boosters_:
            imp = eng.importance(b, names)
            if imp is not None:
                total += imp
        return total / len(self.boosters_)

    def save(self, folder: Path) -> list[Path]:
        """The boosters in their engine's native format (never pickles), plus estimator.json, the
        folder's manifest: the booster files in seed order. The folder is written whole: anything already
        there is removed first, so no stale booster of an earlier fit is ever loaded."""
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        eng = engine(self.kind)
        paths = []
        for i, b in enumerate(self.boosters_):
            path = folder / eng.file_name(i)
            eng.save(b, path)
            paths.append(path)
        artifacts.write_json(
            folder / ESTIMATOR_JSON,
            {
                "kind": self.kind,
                **self.get_params(),
                "features": list(self.feature_names_in_),
                "boosters": [p.name for p in paths],
            },
        )
        return paths


def engine_input(kind: str, X: pd.DataFrame) -> Any:
    """What one engine predicts from, built once for every booster of that kind, seeds and folds alike."""
    return engine(kind).data(X)


def predict_boosters(
    kind: str, boosters: list[Any], X: pd.DataFrame, n_classes: int = 2, data: Any = None
) -> np.ndarray:
    """The mean probabilities of boosters of one kind (a model's seeds); `data` is engine_input(kind, X)
    when the caller already built it (else built here, once)."""
    eng = engine(kind)
    data = eng.data(X) if data is None else data
    return np.mean([eng.predict(b, data, n_classes) for b in boosters], axis=0)


def load_boosters(folder: Path) -> list[Any]:
    """Boosters saved by GBDTClassifier.save, in seed order; refused (naming the file) when the folder
    does not hold exactly the boosters its estimator.json lists, one per seed."""
    meta_path = folder / ESTIMATOR_JSON
    if not meta_path.exists():
        raise DataError(
            f"{meta_path} is missing: {folder} is not a complete stage-2 model; rerun `make stack`"
        )
    meta = json.loads(meta_path.read_text())
    kind = meta.get("kind")
    if kind not in ENGINES:
        raise DataError(f"{meta_path}: kind {kind!r} is not one of {', '.join(ENGINES)}")
    eng = engine(kind)
    listed = meta.get("boosters")
    found = sorted(p.name for p in folder.glob(f"seed*{eng.suffix}"))
    seeds = list(meta.get("seeds") or ())
    bags = int(meta.get("bags") or 1)
    if listed is None or found != sorted(listed) or len(listed) != len(seeds) * bags:
        raise DataError(
            f"{folder} holds boosters {found}, but {meta_path} lists {listed} for {len(seeds)} seed(s) "
            f"{seeds} x {bags} bag(s): the model folder is stale or incomplete; rerun `make stack`"
        )
    return [eng.load(folder / name) for name in listed]


def estimator(spec: ModelSpec, sampled: dict, seed: int, n_classes: int = 2) -> GBDTClassifier:
    """The spec's estimator with sampled values: n_estimators/neg_ratio set it, the rest are params."""
    est_kw = {k: sampled[k] for k in ESTIMATOR_KEYS if k in sampled}
    params = dict(spec.params) | {k: v for k, v in sampled.items() if k not in ESTIMATOR_KEYS}
    return GBDTClassifier(
        kind=spec.kind,
        params=params,
        n_estimators=est_kw.get("n_estimators", spec.n_estimators),
        neg_ratio=est_kw.get("neg_ratio", spec.neg_ratio),
        seeds=spec.seeds,
        random_state=seed,
        n_classes=n_classes,
        neg_rate=spec.neg_rate,
        pos_rate=spec.pos_rate,
        bags=spec.bags,
        cnn_noise=spec.cnn_noise,
    )


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
            est.save(model_folder(save_to, spec.name, f))
        if label is not None:
            say(
                f"{label}: fold {f} ({f + 1}/{k}) fitted on {int((fold != f).sum())} rows, "
                f"{int((fold == f).sum())} held-out rows predicted; {time.perf_counter() - t0:.1f} s"
            )
        artifacts.fault_point("stack.fit_fold")
    return oof, test, pd.concat(imp, axis=1).mean(axis=1).sort_values(ascending=False)
