"""Stage-2 pictures: feature importance and Optuna history."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import optuna
import pandas as pd

from foldstack.report import save_figure


def feature_importance(imp: pd.DataFrame, path: Path, title: str, top: int = 30) -> None:
    """Horizontal bars of the `top` features by gain."""
    head = imp.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(head) + 1))
    ax.barh(head["feature"], head["gain"], color="#3b75af")
    ax.set_xlabel("total gain (mean over folds)")
    ax.set_title(title)
    save_figure(fig, path)


def optuna_history(studies: dict[str, optuna.Study], path: Path, metric: str) -> None:
    """Each trial's inner-CV score and the best so far, one panel per model."""
    fig, axes = plt.subplots(1, max(len(studies), 1), figsize=(6 * max(len(studies), 1), 3.5), squeeze=False)
    for ax, (name, study) in zip(axes[0], studies.items(), strict=False):
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        xs, ys = [t.number for t in done], [t.value for t in done]
        ax.scatter(xs, ys, s=14, label="trial", color="#3b75af")
        if ys:
            ax.plot(xs, pd.Series(ys).cummax(), color="#d62728", label="best so far")
        pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
        ax.set_title(f"{name}: {len(done)} complete, {pruned} pruned")
        ax.set_xlabel("trial")
        ax.set_ylabel(f"inner-CV {metric}")
        ax.legend(loc="lower right")
    save_figure(fig, path)
