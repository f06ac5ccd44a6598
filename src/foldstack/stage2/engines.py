"""The stage-2 engines: one class per model kind behind one interface, found by kind in a registry.

An engine fits one booster (one seed) on a frame, builds what its boosters predict from once (XGBoost a
DMatrix, CatBoost the frame with categoricals as strings), predicts probabilities, reports gain
importance, and saves and loads its boosters in their native format (never pickles) under a file name
of its own. Adding an engine is one class here with `@register`: the configs (`kind:`), the estimator,
tuning, `make predict` and the kernel find it by its kind.

The engine libraries are imported when an engine is first used, so that loading a config stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from foldstack import artifacts, threads
from foldstack.errors import DataError

MISSING_LEVEL = "__missing__"  # CatBoost's categorical features take strings, not NaN


class Engine:
    """One model kind. `params` are the config's (model params + sampled values), `seed` the booster's."""

    kind: ClassVar[str]
    suffix: ClassVar[str]  # native file name of booster i: seed<i><suffix>
    thread_param: ClassVar[str | None] = None  # the engine's own thread-count parameter

    def file_name(self, i: int) -> str:
        return f"seed{i}{self.suffix}"

    def thread_params(self, workers: int = 1) -> dict[str, int]:
        """{thread_param: this process's share of the usable cores} ({} for an engine without one)."""
        return {self.thread_param: threads.gbdt_threads(workers)} if self.thread_param else {}

    def search_space(self, spec: Any) -> dict:
        """What Optuna tunes for a model of this kind: its config's `search` (name -> SearchDim)."""
        return dict(spec.search)

    def fit(self, X: pd.DataFrame, y: np.ndarray, params: dict, n_estimators: int, seed: int, n_classes: int):
        raise NotImplementedError

    def data(self, X: pd.DataFrame) -> Any:
        """What this engine's boosters predict from, built once for all of them."""
        return X

    def predict(self, booster: Any, data: Any, n_classes: int) -> np.ndarray:
        """(n,) P(positive) for binary, (n, n_classes) for multiclass."""
        raise NotImplementedError

    def importance(self, booster: Any, names: list[str]) -> pd.Series | None:
        """Total gain per feature (None: the engine has none)."""
        return None

    def save(self, booster: Any, path: Path) -> None:
        raise NotImplementedError

    def load(self, path: Path) -> Any:
        raise NotImplementedError


ENGINES: dict[str, Engine] = {}


def register(cls: type[Engine]) -> type[Engine]:
    ENGINES[cls.kind] = cls()
    return cls


def engine(kind: str) -> Engine:
    """The engine of a model kind; an unknown kind is an error listing the valid ones."""
    found = ENGINES.get(kind)
    if found is None:
        raise DataError(f"unknown stage-2 model kind {kind!r}: valid kinds are {', '.join(ENGINES)}")
    return found


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


def _series(values, index, names: list[str]) -> pd.Series:
    return pd.Series(values, index=index).reindex(names).fillna(0)


@register
class LightGBM(Engine):
    kind, suffix, thread_param = "lightgbm", ".lgb.txt", "n_jobs"
    # deterministic + force_col_wise: the same trees whatever the thread count, and no histogram layout
    # chosen by a timing test at Dataset construction (LightGBM picks row- or col-wise by which ran faster)
    DEFAULTS: ClassVar[dict] = {
        "objective": "binary",
        "verbosity": -1,
        "deterministic": True,
        "force_col_wise": True,
    }

    def fit(self, X, y, params, n_estimators, seed, n_classes):
        import lightgbm as lgb

        task = {"objective": "multiclass", "num_class": n_classes} if n_classes > 2 else {}
        p = self.DEFAULTS | self.thread_params() | {"seed": seed} | params | task
        data = lgb.Dataset(X, y, categorical_feature="auto", free_raw_data=True)
        return lgb.train(p, data, num_boost_round=n_estimators)

    def predict(self, booster, data, n_classes):
        return booster.predict(data)

    def importance(self, booster, names):
        return _series(booster.feature_importance("gain"), booster.feature_name(), names)

    def save(self, booster, path):
        artifacts.write_atomic(path, lambda p: booster.save_model(str(p)))

    def load(self, path):
        import lightgbm as lgb

        return lgb.Booster(model_file=str(path))


@register
class XGBoost(Engine):
    kind, suffix, thread_param = "xgboost", ".xgb.json", "nthread"
    DEFAULTS: ClassVar[dict] = {"objective": "binary:logistic", "tree_method": "hist", "verbosity": 0}

    def fit(self, X, y, params, n_estimators, seed, n_classes):
        import xgboost as xgb

        task = {"objective": "multi:softprob", "num_class": n_classes} if n_classes > 2 else {}
        p = self.DEFAULTS | self.thread_params() | {"seed": seed} | params | task
        return xgb.train(p, xgb.DMatrix(X, y, enable_categorical=True), num_boost_round=n_estimators)

    def data(self, X):
        import xgboost as xgb

        return xgb.DMatrix(X, enable_categorical=True)

    def predict(self, booster, data, n_classes):
        return booster.predict(data)

    def importance(self, booster, names):
        scores = booster.get_score(importance_type="total_gain")
        return _series(list(scores.values()), list(scores), names)

    def save(self, booster, path):
        artifacts.write_atomic(path, lambda p: p.write_bytes(bytes(booster.save_raw(raw_format="json"))))

    def load(self, path):
        import xgboost as xgb

        b = xgb.Booster()
        b.load_model(str(path))
        return b


@register
class CatBoost(Engine):
    """Categorical columns handled by CatBoost itself (as strings, missing values a level of their own)."""

    kind, suffix, thread_param = "catboost", ".cbm", "thread_count"
    DEFAULTS: ClassVar[dict] = {"loss_function": "Logloss", "verbose": False, "allow_writing_files": False}

    def fit(self, X, y, params, n_estimators, seed, n_classes):
        import catboost as cb

        task = {"loss_function": "MultiClass"} if n_classes > 2 else {}
        p = self.DEFAULTS | self.thread_params() | {"random_seed": seed} | params | task
        p = {k: v for k, v in p.items() if v is not None}  # None: CatBoost's own default
        Xc, cats = catboost_frame(X)
        return cb.CatBoostClassifier(iterations=n_estimators, cat_features=cats, **p).fit(Xc, y)

    def data(self, X):
        return catboost_frame(X)[0]

    def predict(self, booster, data, n_classes):
        names = list(booster.feature_names_)
        if list(data.columns) != names:
            raise DataError(
                f"the CatBoost model was fitted on features {names[:5]}... ({len(names)}), but is asked to "
                f"predict {list(data.columns)[:5]}... ({data.shape[1]}): the model folder belongs to another "
                "feature set; rerun `make stack`"
            )
        p = booster.predict_proba(data)
        return p if n_classes > 2 else p[:, 1]

    def importance(self, booster, names):  # PredictionValuesChange: CatBoost's default importance
        return _series(booster.get_feature_importance(), booster.feature_names_, names)

    def save(self, booster, path):
        artifacts.write_atomic(path, lambda p: booster.save_model(str(p), format="cbm"))

    def load(self, path):
        import catboost as cb

        m = cb.CatBoostClassifier()
        try:
            m.load_model(str(path), format="cbm")
        except cb.CatBoostError as e:
            raise DataError(
                f"{path} is not a CatBoost model this version can read ({e}); rerun `make stack`"
            ) from None
        return m


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


@register
class KNN(Engine):
    """The k-NN baseline (params: n_neighbors); no importance, no threads."""

    kind, suffix = "knn", ".knn.npz"

    def fit(self, X, y, params, n_estimators, seed, n_classes):
        return KNNModel.fit(X, y, int(params.get("n_neighbors", 5)))

    def predict(self, booster, data, n_classes):
        return booster.predict(data, n_classes)

    def save(self, booster, path):
        booster.save(path)

    def load(self, path):
        return KNNModel.load(path)
