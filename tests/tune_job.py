"""A tiny stage-2 tuning job for the study tests, run in-process or as a worker process:

    python -m tests.tune_job JOURNAL [--tuning JSON] [--n N] [--workers W] [--rows R] [--trees T]
                                     [--fit-sleep S]

It tunes one small LightGBM on a synthetic table (fixed by --rows) and prints the study's COMPLETE
trials as JSON. Being killed mid-trial is done with FOLDSTACK_FAULT=stack.trial.fold:<n>; --fit-sleep
makes every fit last S seconds longer (slow trials whatever the machine, for the heartbeat test).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from foldstack import threads

threads.passive_openmp()  # as pipelines/stack.py does, before lightgbm loads

from foldstack.stage2.config import ModelSpec, SearchDim, TuningCfg  # noqa: E402
from foldstack.stage2.tune import TuneData, tune  # noqa: E402

STUDY = "tune-job"
TUNING = {"n_trials": 6, "startup_trials": 3, "seed": 7, "pruning": True}


def tiny_data(rows: int = 600, seed: int = 0) -> TuneData:
    """rows x 8 numeric features, ~10% positives, 4 folds stratified by the target (fold 3 held out)."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(rows, 8)), columns=[f"f{i}" for i in range(8)])
    logit = 1.5 * X["f0"] - X["f1"] + 0.5 * X["f2"] * X["f3"] + rng.normal(0, 1, rows)
    y = (logit > np.quantile(logit, 0.9)).to_numpy().astype(int)
    fold = np.empty(rows, dtype=int)
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == cls))
        fold[idx] = np.arange(len(idx)) % 4
    return TuneData(X, y, fold, holdout=3, metric="pauc80")


def spec(trees: int = 30) -> ModelSpec:
    return ModelSpec(
        name="lgbm",
        kind="lightgbm",
        n_estimators=trees,
        params={"min_child_samples": 10},
        search={
            "learning_rate": SearchDim(type="float", low=0.01, high=0.3, log=True),
            "num_leaves": SearchDim(type="int", low=3, high=31),
            "colsample_bytree": SearchDim(type="float", low=0.3, high=1.0),
        },
    )


def complete_trials(study) -> list[dict]:
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [{"number": t.number, "params": t.params, "value": t.value} for t in done]


def slow_fits(seconds: float) -> None:
    import time

    from foldstack.stage2.models import GBDTClassifier

    fit = GBDTClassifier.fit

    def slow_fit(self, X, y):
        time.sleep(seconds)
        return fit(self, X, y)

    GBDTClassifier.fit = slow_fit


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("journal")
    p.add_argument("--tuning", default="{}", help="JSON of TuningCfg fields over TUNING")
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--rows", type=int, default=600)
    p.add_argument("--trees", type=int, default=30)
    p.add_argument("--fit-sleep", type=float, default=0.0)
    args = p.parse_args(argv)
    if args.fit_sleep:
        slow_fits(args.fit_sleep)
    t = TuningCfg(**(TUNING | json.loads(args.tuning)))
    study = tune(spec(args.trees), tiny_data(args.rows), t, Path(args.journal), STUDY, args.workers, args.n)
    print(json.dumps(complete_trials(study)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
