"""LightGBM, XGBoost and CatBoost behind one scikit-learn-style estimator, saved in their native formats."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import catboost as cb
import lightgbm as lgb
import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.base import BaseEstimator, ClassifierMixin

from foldstack import artifacts, threads
from foldstack.errors import DataError

KINDS = ("lightgbm", "xgboost", "catboost", "knn")
# deterministic + force_col_wise: the same trees whatever the thread count, and no histogram layout chosen
# by a timing test at Dataset construction (LightGBM picks row- or col-wise by which ran faster);
# threads.gbdt_params adds the usable cores
LGB_DEFAULTS = {"objective": "binary", "verbosity": -1, "deterministic": True, "force_col_wise": True}
XGB_DEFAULTS = {"objective": "binary:logistic", "tree_method": "hist", "verbosity": 0}
CB_DEFAULTS = {"loss_function": "Logloss", "verbose": False, "allow_writing_files": False}
MISSING_LEVEL = "__missing__"  # CatBoost's categorical features take strings, not NaN


def catboost_frame(X: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """X with its categorical columns as strings (missing -> MISSING_LEVEL) for CatBoost's native
    categorical handling, and those columns' names. Numeric columns are passed as they are."""
    cats = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype) or X[c].dtype == object]
    if not cats:
        return X, []
    X = X.copy()
    for c in cats:
        X[c] = X[c].astype(object).where(X[c].notna(), MISSING_LEVEL).astype(str)
    return X, cats


class KNNModel:
    """k nearest neighbours on standardised numeric features: a baseline. Saved as .npz, never pickled."""

    def __init__(
        self, k: int, columns: list[str], mean: np.ndarray, std: np.ndarray, Z: np.ndarray, y: np.ndarray
    ) -> None:
        self.k, self.columns, self.mean, self.std, self.Z, self.y = k, columns, mean, std, Z, y
        self._nn = None

    @classmethod
    def fit(cls, X: pd.DataFrame, y: np.ndarray, k: int) -> KNNModel:
        num = X.select_dtypes(include="number")
        mean, std = num.mean().to_numpy(), num.std().replace(0, 1).fillna(1).to_numpy()
        return cls(k, list(num.columns), mean, std, cls._standardise(num.to_numpy(float), mean, std), y)

    @staticmethod
    def _standardise(values: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        return np.nan_to_num((values - mean) / std, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)

    def predict(self, X: pd.DataFrame, n_classes: int = 2) -> np.ndarray:
        """The share of positives among the k nearest training rows, or (multiclass, n_classes > 2)
        the share of each class, shape (n, n_classes)."""
        from sklearn.neighbors import NearestNeighbors

        if self._nn is None:
            self._nn = NearestNeighbors(n_neighbors=min(self.k, len(self.Z))).fit(self.Z)
        q = self._standardise(X[self.columns].to_numpy(float), self.mean, self.std)
        _, idx = self._nn.kneighbors(q)
        if n_classes > 2:
            return np.eye(n_classes)[self.y[idx].astype(int)].mean(axis=1)
        return self.y[idx].mean(axis=1)

    def save(self, path: Path) -> None:
        def write(p: Path) -> None:
            with open(p, "wb") as f:
                np.savez(
                    f,
                    k=self.k,
                    columns=np.array(self.columns),
                    mean=self.mean,
                    std=self.std,
                    Z=self.Z,
                    y=self.y,
                )

        artifacts.write_atomic(path, write)

    @classmethod
    def load(cls, path: Path) -> KNNModel:
        d = np.load(path, allow_pickle=False)
        return cls(int(d["k"]), [str(c) for c in d["columns"]], d["mean"], d["std"], d["Z"], d["y"])


class GBDTClassifier(ClassifierMixin, BaseEstimator):
    """Gradient-boosted trees (or the k-NN baseline, kind='knn', params n_neighbors) with optional
    negative undersampling and several seeds (averaged). n_classes > 2 fits a multiclass model
    (LightGBM multiclass, XGBoost multi:softprob) on integer labels 0..n_classes-1.

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
    ) -> None:
        self.n_classes = n_classes
        self.kind = kind
        self.params = params
        self.n_estimators = n_estimators
        self.neg_ratio = neg_ratio
        self.seeds = seeds
        self.random_state = random_state

    def _rows(self, y: np.ndarray, seed: int) -> np.ndarray:
        """Row indices for one seed: every positive plus neg_ratio x as many negatives (or all rows)."""
        if not self.neg_ratio:
            return np.arange(len(y))
        rng = np.random.default_rng([self.random_state, seed])
        pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        keep = rng.choice(neg, size=min(len(neg), round(self.neg_ratio * max(len(pos), 1))), replace=False)
        return np.sort(np.concatenate([pos, keep]))

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> GBDTClassifier:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        y = np.asarray(y).astype(int)
        multi = self.n_classes > 2
        if multi and self.neg_ratio:
            raise ValueError("neg_ratio (negative undersampling) is for a binary target; leave it unset")
        self.classes_ = np.arange(self.n_classes)
        lgb_task = {"objective": "multiclass", "num_class": self.n_classes} if multi else {}
        xgb_task = {"objective": "multi:softprob", "num_class": self.n_classes} if multi else {}
        self.feature_names_in_ = np.array(X.columns, dtype=object)
        self.boosters_ = []
        for seed in self.seeds:
            rows = self._rows(y, seed)
            Xs, ys = X.iloc[rows], y[rows]
            if self.kind == "knn":
                self.boosters_.append(KNNModel.fit(Xs, ys, int((self.params or {}).get("n_neighbors", 5))))
            elif self.kind == "lightgbm":
                params = LGB_DEFAULTS | threads.gbdt_params(self.kind) | {"seed": self.random_state + seed}
                params |= (self.params or {}) | lgb_task
                data = lgb.Dataset(Xs, ys, categorical_feature="auto", free_raw_data=True)
                self.boosters_.append(lgb.train(params, data, num_boost_round=self.n_estimators))
            elif self.kind == "catboost":
                params = (
                    CB_DEFAULTS | threads.gbdt_params(self.kind) | {"random_seed": self.random_state + seed}
                )
                params |= (self.params or {}) | ({"loss_function": "MultiClass"} if multi else {})
                Xc, cats = catboost_frame(Xs)
                model = cb.CatBoostClassifier(iterations=self.n_estimators, cat_features=cats, **params)
                self.boosters_.append(model.fit(Xc, ys))
            else:
                params = XGB_DEFAULTS | threads.gbdt_params(self.kind) | {"seed": self.random_state + seed}
                params |= (self.params or {}) | xgb_task
                dm = xgb.DMatrix(Xs, ys, enable_categorical=True)
                self.boosters_.append(xgb.train(params, dm, num_boost_round=self.n_estimators))
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
        """Total gain per feature, averaged over seeds."""
        names = list(self.feature_names_in_)
        total = pd.Series(0.0, index=names)
        for b in self.boosters_:
            if self.kind == "knn":
                continue  # no importance for neighbours
            if self.kind == "lightgbm":
                total += (
                    pd.Series(b.feature_importance("gain"), index=b.feature_name()).reindex(names).fillna(0)
                )
            elif self.kind == "catboost":  # PredictionValuesChange: CatBoost's default importance
                total += (
                    pd.Series(b.get_feature_importance(), index=b.feature_names_).reindex(names).fillna(0)
                )
            else:
                total += pd.Series(b.get_score(importance_type="total_gain")).reindex(names).fillna(0)
        return total / len(self.boosters_)

    def save(self, folder: Path) -> list[Path]:
        """Native formats only: LightGBM model text, XGBoost JSON, CatBoost .cbm (never pickles), plus
        estimator.json, the folder's manifest: the booster files in seed order. The folder is written
        whole: anything already there is removed first, so no stale booster of an earlier fit is ever
        loaded."""
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        paths = []
        for i, b in enumerate(self.boosters_):
            if self.kind == "knn":
                path = folder / f"seed{i}.knn.npz"
                b.save(path)
            elif self.kind == "lightgbm":
                path = folder / f"seed{i}.lgb.txt"
                artifacts.write_atomic(path, lambda p, b=b: b.save_model(str(p)))
            elif self.kind == "catboost":
                path = folder / f"seed{i}.cbm"
                artifacts.write_atomic(path, lambda p, b=b: b.save_model(str(p), format="cbm"))
            else:
                path = folder / f"seed{i}.xgb.json"
                artifacts.write_atomic(
                    path, lambda p, b=b: p.write_bytes(bytes(b.save_raw(raw_format="json")))
                )
            paths.append(path)
        artifacts.write_json(
            folder / "estimator.json",
            {
                "kind": self.kind,
                **self.get_params(),
                "features": list(self.feature_names_in_),
                "boosters": [p.name for p in paths],
            },
        )
        return paths


def engine_input(kind: str, X: pd.DataFrame) -> Any:
    """What one engine predicts from (XGBoost a DMatrix, CatBoost the frame with categoricals as
    strings, the others X itself): built once for every booster of that kind, seeds and folds alike."""
    if kind == "xgboost":
        return xgb.DMatrix(X, enable_categorical=True)
    if kind == "catboost":
        return catboost_frame(X)[0]
    return X


def predict_booster(kind: str, booster: Any, data: Any, n_classes: int = 2) -> np.ndarray:
    """One fitted booster's probabilities on `data` = engine_input(kind, X): (n,) for binary,
    (n, n_classes) for multiclass."""
    if kind == "knn":
        return booster.predict(data, n_classes)
    if kind == "catboost":
        names = list(booster.feature_names_)
        if list(data.columns) != names:
            raise DataError(
                f"the CatBoost model was fitted on features {names[:5]}... ({len(names)}), but is asked to "
                f"predict {list(data.columns)[:5]}... ({data.shape[1]}): the model folder belongs to another "
                "feature set; rerun `make stack`"
            )
        p = booster.predict_proba(data)
        return p if n_classes > 2 else p[:, 1]
    return booster.predict(data)  # LightGBM on the frame, XGBoost on its DMatrix


def predict_boosters(
    kind: str, boosters: list[Any], X: pd.DataFrame, n_classes: int = 2, data: Any = None
) -> np.ndarray:
    """The mean probabilities of boosters of one kind (a model's seeds); `data` is engine_input(kind, X)
    when the caller already built it (else built here, once)."""
    data = engine_input(kind, X) if data is None else data
    return np.mean([predict_booster(kind, b, data, n_classes) for b in boosters], axis=0)


BOOSTER_GLOB = {
    "knn": "seed*.knn.npz",
    "lightgbm": "seed*.lgb.txt",
    "xgboost": "seed*.xgb.json",
    "catboost": "seed*.cbm",
}


def load_boosters(folder: Path) -> list[Any]:
    """Boosters saved by GBDTClassifier.save, in seed order; refused (naming the file) when the folder
    does not hold exactly the boosters its estimator.json lists, one per seed."""
    meta_path = folder / "estimator.json"
    if not meta_path.exists():
        raise DataError(
            f"{meta_path} is missing: {folder} is not a complete stage-2 model; rerun `make stack`"
        )
    meta = json.loads(meta_path.read_text())
    kind = meta.get("kind")
    if kind not in BOOSTER_GLOB:
        raise DataError(f"{meta_path}: kind {kind!r} is not one of {', '.join(BOOSTER_GLOB)}")
    listed = meta.get("boosters")
    found = sorted(p.name for p in folder.glob(BOOSTER_GLOB[kind]))
    seeds = list(meta.get("seeds") or ())
    if listed is None or found != sorted(listed) or len(listed) != len(seeds):
        raise DataError(
            f"{folder} holds boosters {found}, but {meta_path} lists {listed} for {len(seeds)} seed(s) "
            f"{seeds}: the model folder is stale or incomplete; rerun `make stack`"
        )
    paths = [folder / name for name in listed]
    if kind == "knn":
        return [KNNModel.load(p) for p in paths]
    if kind == "lightgbm":
        return [lgb.Booster(model_file=str(p)) for p in paths]
    if kind == "catboost":
        models = []
        for p in paths:
            m = cb.CatBoostClassifier()
            try:
                m.load_model(str(p), format="cbm")
            except cb.CatBoostError as e:
                raise DataError(
                    f"{p} is not a CatBoost model this version can read ({e}); rerun `make stack`"
                ) from None
            models.append(m)
        return models
    out = []
    for p in paths:
        b = xgb.Booster()
        b.load_model(str(p))
        out.append(b)
    return out
