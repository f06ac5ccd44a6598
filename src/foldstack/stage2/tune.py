"""Optuna tuning of one stage-2 model, kept apart from the score that is reported.

The objective is the competition metric on an inner cross-validation over every fold except the
hold-out fold: the hold-out fold is never seen while tuning, so its score stays untouched. The study
lives in Optuna storage (a JournalStorage file by default), so re-running adds trials to it and
several worker processes can share it.
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from foldstack import metrics
from foldstack.stage2.config import ModelSpec, TuningCfg
from foldstack.stage2.models import GBDTClassifier

ESTIMATOR_KEYS = ("n_estimators", "neg_ratio")


@dataclass
class TuneData:
    X: pd.DataFrame
    y: np.ndarray
    fold: np.ndarray
    holdout: int
    metric: str
    n_classes: int = 2


def storage_for(tuning: TuningCfg, default_path: Path) -> optuna.storages.BaseStorage | str:
    if tuning.storage:
        return tuning.storage
    from optuna.storages.journal import JournalFileBackend

    default_path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(default_path)))


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
    )


def suggest(trial: optuna.Trial, spec: ModelSpec) -> dict:
    out = {}
    for name, dim in spec.search.items():
        if dim.type == "categorical":
            out[name] = trial.suggest_categorical(name, list(dim.choices))
        elif dim.type == "int":
            out[name] = trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)
        else:
            out[name] = trial.suggest_float(name, float(dim.low), float(dim.high), log=dim.log)
    return out


def inner_cv(est: GBDTClassifier, d: TuneData, trial: optuna.Trial | None = None) -> float:
    """Metric of the inner OOF over the folds other than the hold-out one; reports each fold for pruning."""
    inner = [f for f in np.unique(d.fold) if f != d.holdout]
    pred = np.full((len(d.y), d.n_classes) if d.n_classes > 2 else len(d.y), np.nan)
    for step, f in enumerate(inner):
        tr = (d.fold != f) & (d.fold != d.holdout)
        va = d.fold == f
        pred[va] = est.fit(d.X[tr], d.y[tr]).scores(d.X[va])
        if trial is not None:
            trial.report(metrics.score(d.metric, d.y[va], pred[va]), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
    used = d.fold != d.holdout
    return metrics.score(d.metric, d.y[used], pred[used])


def _objective(spec: ModelSpec, d: TuneData, seed: int):
    def objective(trial: optuna.Trial) -> float:
        return inner_cv(estimator(spec, suggest(trial, spec), seed, d.n_classes), d, trial)

    return objective


def _optimize(
    storage, study_name: str, spec: ModelSpec, d: TuneData, t: TuningCfg, n_trials: int, worker: int
) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
        if t.pruning
        else optuna.pruners.NopPruner()
    )
    study = optuna.load_study(
        study_name=study_name,
        storage=storage,
        sampler=optuna.samplers.TPESampler(seed=t.seed + 1000 * worker),
        pruner=pruner,
    )
    study.optimize(_objective(spec, d, t.seed), n_trials=n_trials, timeout=t.timeout, gc_after_trial=False)


def _worker(
    storage_url: str | None,
    journal: str,
    study_name: str,
    spec: ModelSpec,
    d: TuneData,
    t: TuningCfg,
    n_trials: int,
    worker: int,
) -> None:
    storage = storage_url or storage_for(t, Path(journal))
    _optimize(storage, study_name, spec, d, t, n_trials, worker)


def tune(
    spec: ModelSpec,
    d: TuneData,
    t: TuningCfg,
    journal: Path,
    study_name: str,
    workers: int = 1,
    n_trials: int | None = None,
) -> optuna.Study:
    """Add n_trials trials (split over `workers` processes) to the study; return it."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = storage_for(t, journal)
    optuna.create_study(study_name=study_name, storage=storage, direction="maximize", load_if_exists=True)
    n = t.n_trials if n_trials is None else n_trials
    if n > 0 and spec.search:
        if workers <= 1:
            _optimize(storage, study_name, spec, d, t, n, 0)
        else:
            shares = [n // workers + (i < n % workers) for i in range(workers)]
            spec = _share_cores(spec, workers)
            ctx = mp.get_context("spawn")
            procs = [
                ctx.Process(target=_worker, args=(t.storage, str(journal), study_name, spec, d, t, s, i))
                for i, s in enumerate(shares)
                if s > 0
            ]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
            failed = [p.exitcode for p in procs if p.exitcode != 0]
            if failed:
                raise RuntimeError(f"{len(failed)} Optuna worker process(es) failed (exit codes {failed})")
    return optuna.load_study(study_name=study_name, storage=storage)


def _share_cores(spec: ModelSpec, workers: int) -> ModelSpec:
    """Give each tuning process its share of the cores (OpenMP threads oversubscribed crawl)."""
    import os

    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    key = {"lightgbm": "n_jobs", "xgboost": "nthread"}.get(spec.kind)
    return spec.model_copy(update={"params": {**spec.params, key: threads}}) if key else spec


def best_sampled(study: optuna.Study) -> tuple[dict, float | None]:
    """(best sampled values, best inner-CV value), or ({}, None) when the study has no finished trial."""
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        return {}, None
    return dict(study.best_params), float(study.best_value)
