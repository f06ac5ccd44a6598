"""Optuna tuning of one stage-2 model, kept apart from the score that is reported.

The objective is the competition metric on an inner cross-validation over every fold except the
hold-out fold: the hold-out fold is never seen while tuning, so its score stays untouched. The study
lives in Optuna storage: a JournalStorage file under the run folder by default, or a database
(`tuning.storage=postgresql://user:pw@host/db`) that workers on several machines share; the study
name is derived from the model and its exact features, so every machine joins the same study.

Study rules, chosen so that a study killed at any point (kill -9, a lost machine) ends as if it had run
uninterrupted:
- `tuning.n_trials` is the number of COMPLETE trials the study should hold, not a number added per run.
  A run adds only the missing ones: re-running a finished study adds none, a study killed after 3 of 5
  complete trials runs 2 more. Pruned and failed trials do not count. With several workers each one
  stops after its current trial once the count is reached, so a study may end with up to WORKERS-1
  extra COMPLETE trials.
- A trial interrupted by a dead process is failed and run again with its parameters (a WAITING copy
  whose system_attrs `failed_trial`/`retry_history` name the original, as Optuna's
  RetryHeartbeatStaleTrialCallback writes them; at most MAX_RETRY times). Which RUNNING trials are
  dead: a database storage has heartbeats (every `tuning.heartbeat_interval` s; a trial silent for
  `tuning.grace_period` s is failed and retried by the next worker that starts a trial). Optuna 5's
  JournalStorage has no heartbeat, so the default journal file, which lives in this run's folder, is
  owned by one `make stack` at a time: every trial still RUNNING when tune() starts, before this run
  starts its own workers, was left by a killed run and is retried. Do not run two `make stack` on one
  run folder at once; use a database storage for that.
- Sampling is seeded per trial (TrialSeededTPE): from tuning.seed and the trial's position among the
  trials that did not fail, which is the same whether or not an interrupted trial was failed and
  retried on the way. With one worker, a killed-and-rerun study holds the same trials, in the same
  order with the same values, as an uninterrupted one; with several workers the order in which they
  finish is a race, so only the count rule holds.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from foldstack import artifacts, metrics, threads
from foldstack.errors import ConfigError
from foldstack.progress import say
from foldstack.stage2.config import ModelSpec, TuningCfg
from foldstack.stage2.engines import engine
from foldstack.stage2.models import GBDTClassifier, estimator

MAX_RETRY = 3  # an interrupted trial is run again at most this many times
LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


@dataclass
class TuneData:
    X: pd.DataFrame
    y: np.ndarray
    fold: np.ndarray
    holdout: int
    metric: str
    n_classes: int = 2


def _redact(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy can parse: show its scheme only
        return url.split("://", 1)[0] + "://..."


def database_url(url: str) -> str:
    """SQLAlchemy 2.1 reads a bare postgresql:// with psycopg 3; the pinned driver is psycopg2-binary."""
    return "postgresql+psycopg2://" + url[len("postgresql://") :] if url.startswith("postgresql://") else url


def _database(tuning: TuningCfg) -> optuna.storages.RDBStorage:
    """RDBStorage with heartbeats; workers starting together on a new database race to create its
    tables (the loser gets a duplicate-key/-table error), so that error is retried a few times."""
    import sqlalchemy.exc

    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(
                database_url(tuning.storage),
                heartbeat_interval=tuning.heartbeat_interval,
                grace_period=tuning.grace_period,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=MAX_RETRY
                ),
            )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def storage_for(tuning: TuningCfg, default_path: Path) -> optuna.storages.BaseStorage:
    """The database of tuning.storage (with heartbeats and retry of dead workers' trials), else a
    JournalStorage file at default_path."""
    if tuning.storage:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                return _database(tuning)
            except Exception as e:  # bad URL, server down, driver missing: all say the same to the user
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                raise ConfigError(
                    f"tuning.storage={_redact(tuning.storage)}: cannot open this Optuna database "
                    f"({type(e).__name__}: {first}). Check the URL, that the server is running and "
                    f"reachable, and that its driver is installed (psycopg2-binary for postgresql://)"
                ) from e
    from optuna.storages.journal import JournalFileBackend

    default_path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(default_path)))


def suggest(trial: optuna.Trial, spec: ModelSpec) -> dict:
    out = {}
    for name, dim in engine(spec.kind).search_space(spec).items():
        if dim.type == "categorical":
            out[name] = trial.suggest_categorical(name, list(dim.choices))
        elif dim.type == "int":
            out[name] = trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)
        else:
            out[name] = trial.suggest_float(name, float(dim.low), float(dim.high), log=dim.log)
    return out


def inner_predictions(est: GBDTClassifier, d: TuneData, trial: optuna.Trial | None = None) -> np.ndarray:
    """The inner OOF: each fold other than the hold-out one predicted by a model fitted on the remaining
    tuning folds (the hold-out fold's rows stay NaN); with a trial, each fold's score is reported for
    pruning."""
    inner = [f for f in np.unique(d.fold) if f != d.holdout]
    pred = np.full((len(d.y), d.n_classes) if d.n_classes > 2 else len(d.y), np.nan)
    for step, f in enumerate(inner):
        tr = (d.fold != f) & (d.fold != d.holdout)
        va = d.fold == f
        pred[va] = est.fit(d.X[tr], d.y[tr]).scores(d.X[va])
        if trial is not None:
            trial.report(metrics.score(d.metric, d.y[va], pred[va]), step)
            artifacts.fault_point("stack.trial.fold")  # kill -9 tests: die mid-trial
            # never after the last fold: its work is done, and a complete trial counts towards n_trials
            if step < len(inner) - 1 and trial.should_prune():
                raise optuna.TrialPruned()
    return pred


def inner_cv(est: GBDTClassifier, d: TuneData, trial: optuna.Trial | None = None) -> float:
    """Metric of the inner OOF over the folds other than the hold-out one; reports each fold for pruning."""
    pred = inner_predictions(est, d, trial)
    used = d.fold != d.holdout
    return metrics.score(d.metric, d.y[used], pred[used])


def trial_position(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> int:
    """How many trials that did not fail come before this one. Failing an interrupted trial and
    retrying it under a new number leaves every later trial's position unchanged."""
    return sum(t.number < trial.number for t in study.get_trials(deepcopy=False, states=LIVE))


class TrialSeededTPE(optuna.samplers.TPESampler):
    """TPE whose random state (its own and its random startup sampler's) is reseeded before every trial
    from (seed, trial_position): the values a trial samples depend on the study's finished trials and
    its position only, not on how many processes came and went. TPE and the median pruner only read
    COMPLETE/PRUNED (and, constant liar, RUNNING) trials, so failed trials change nothing either."""

    def __init__(self, seed: int, **kwargs) -> None:
        super().__init__(seed=seed, **kwargs)
        self._trial_seed = seed & 0xFFFFFFFF

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        position = trial_position(study, trial)
        self._rng.rng.seed([self._trial_seed, position, 0])
        self._random_sampler._rng.rng.seed([self._trial_seed, position, 1])
        super().before_trial(study, trial)


def n_complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def retry_interrupted(study: optuna.Study, owned: bool) -> list[int]:
    """Fail the trials that dead processes left RUNNING and queue a copy of each with the same params;
    return the failed trial numbers. owned (the default journal file, before this run starts workers):
    every RUNNING trial is dead. Else (a database): only those whose heartbeat stopped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if not owned:
            before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
            optuna.storages.fail_stale_trials(study)
            failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            return sorted(t.number for t in failed if t.number not in before)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
        stale = study.get_trials(deepcopy=True, states=(TrialState.RUNNING,))
        # a retry already queued by an earlier start that was itself killed before failing the original
        queued = {
            t.system_attrs["retry_history"][-1] for t in study.trials if t.system_attrs.get("retry_history")
        }
        for t in stale:
            if t.number not in queued:
                retry(study, t)  # the copy first: killed between the two steps, the next start only fails
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        return [t.number for t in stale]


class TrialLines:
    """Optuna callback (study.optimize(callbacks=[...])): one line per finished trial, e.g.
    `tune lgbm: trial 7 inner-CV pauc80 0.1523 (best 0.1601, trial 4); 5/20 complete; 3.2 s`. A pruned
    trial says after how many inner folds, a failed one says failed. `worker` names the process
    among several ("worker 2/4")."""

    def __init__(self, model: str, metric: str, target: int, worker: str = "") -> None:
        self.model, self.metric, self.target, self.worker = model, metric, target, worker

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE:
            what = f"inner-CV {self.metric} {trial.value:.4f}"
        elif trial.state == TrialState.PRUNED:
            what = f"pruned after {len(trial.intermediate_values)} inner fold(s)"
        else:
            what = trial.state.name.lower()
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        best = max(done, key=lambda t: t.value, default=None)
        best_text = f"best {best.value:.4f}, trial {best.number}" if best is not None else "no best yet"
        seconds = trial.duration.total_seconds() if trial.duration is not None else float("nan")
        who = f" [{self.worker}]" if self.worker else ""
        say(
            f"tune {self.model}{who}: trial {trial.number} {what} ({best_text}); "
            f"{len(done)}/{self.target} complete; {seconds:.1f} s"
        )


def _objective(spec: ModelSpec, d: TuneData, seed: int):
    def objective(trial: optuna.Trial) -> float:
        return inner_cv(estimator(spec, suggest(trial, spec), seed, d.n_classes), d, trial)

    return objective


def _optimize(
    storage,
    study_name: str,
    spec: ModelSpec,
    d: TuneData,
    t: TuningCfg,
    n: int,
    workers: int,
    worker: str = "",
) -> None:
    """Run trials until the study holds n COMPLETE ones (checked before the first and after each),
    printing one line per finished trial (TrialLines)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
        if t.pruning
        else optuna.pruners.NopPruner()
    )
    study = optuna.load_study(
        study_name=study_name,
        storage=storage,
        sampler=TrialSeededTPE(t.seed, n_startup_trials=t.startup_trials),
        pruner=pruner,
    )
    if n_complete(study) >= n:
        return
    # this process's share of the cores, unless the config sets the engine's thread count itself
    spec = spec.model_copy(update={"params": engine(spec.kind).thread_params(workers) | dict(spec.params)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(
            _objective(spec, d, t.seed),
            n_trials=None,
            timeout=t.timeout,
            callbacks=[
                TrialLines(spec.name, d.metric, n, worker),
                optuna.study.MaxTrialsCallback(n, states=(TrialState.COMPLETE,)),
            ],
            gc_after_trial=False,
        )


def _worker(
    journal: str, study_name: str, spec: ModelSpec, d: TuneData, t: TuningCfg, n: int, workers: int, i: int
) -> None:
    _optimize(storage_for(t, Path(journal)), study_name, spec, d, t, n, workers, f"worker {i + 1}/{workers}")


def tune(
    spec: ModelSpec,
    d: TuneData,
    t: TuningCfg,
    journal: Path,
    study_name: str,
    workers: int = 1,
    n_trials: int | None = None,
) -> optuna.Study:
    """Bring the study to n_trials (default tuning.n_trials) COMPLETE trials with `workers` processes,
    first retrying the trials that killed processes left unfinished (see the module docstring); return it.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = storage_for(t, journal)
    optuna.create_study(study_name=study_name, storage=storage, direction="maximize", load_if_exists=True)
    n = t.n_trials if n_trials is None else n_trials
    if n > 0 and engine(spec.kind).search_space(spec):
        study = optuna.load_study(study_name=study_name, storage=storage)
        retried = retry_interrupted(study, owned=not t.storage)
        have = n_complete(study)
        again = f", retrying interrupted trial(s) {retried}" if retried else ""
        say(
            f"tune {spec.name}: study {study_name} holds {have}/{n} COMPLETE trials"
            + (f"; running the rest with {workers} worker(s){again}" if have < n else ": nothing to run")
        )
        if have < n:
            if workers <= 1:
                _optimize(storage, study_name, spec, d, t, n, 1)
            else:
                threads.passive_openmp()  # the workers inherit it before their OpenMP runtime loads
                ctx = mp.get_context("spawn")
                procs = [
                    ctx.Process(target=_worker, args=(str(journal), study_name, spec, d, t, n, workers, i))
                    for i in range(workers)
                ]
                for p in procs:
                    p.start()
                for p in procs:
                    p.join()
                failed = [p.exitcode for p in procs if p.exitcode != 0]
                if failed:
                    raise RuntimeError(
                        f"{len(failed)} Optuna worker process(es) of study {study_name} failed (exit codes "
                        f"{failed}); run again: interrupted trials are retried and only missing ones run"
                    )
    return optuna.load_study(study_name=study_name, storage=storage)


def best_sampled(study: optuna.Study) -> tuple[dict, float | None]:
    """(best sampled values, best inner-CV value), or ({}, None) when the study has no finished trial."""
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        return {}, None
    return dict(study.best_params), float(study.best_value)
