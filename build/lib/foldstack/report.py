"""A run's report/ folder: ROC (pAUC region shaded), PR, OOF score distributions, threshold sweep."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

from foldstack import artifacts, metrics


def _save(fig, path: Path) -> None:
    artifacts.write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def threshold_sweep(y: np.ndarray, p: np.ndarray, n: int = 101) -> pd.DataFrame:
    """Precision, recall, F1, specificity and counts at evenly spaced thresholds in [0, 1]."""
    rows = [metrics.threshold_metrics(y, p, t) for t in np.linspace(0, 1, n)]
    return pd.DataFrame(rows)


def _roc(ax, y: np.ndarray, p: np.ndarray, title: str) -> None:
    fpr, tpr, _ = roc_curve(y, p)
    ax.plot(fpr, tpr, color="#3b75af", lw=1.6, label=f"AUC {metrics.auc(y, p):.4f}")
    ax.fill_between(
        fpr,
        0.8,
        np.maximum(tpr, 0.8),
        color="#3b75af",
        alpha=0.2,
        label=f"pAUC above 80% TPR {metrics.pauc(y, p):.4f}",
    )
    ax.axhline(0.8, ls="--", lw=1, color="black")
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set(
        xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01)
    )
    ax.legend(loc="lower right", fontsize=8)


def write_report(folder: Path, y: np.ndarray, p: np.ndarray, title: str, threshold: float = 0.5) -> dict:
    """Write folder/report/{roc,pr,scores,thresholds}.png, thresholds.csv and report.json; return the JSON."""
    out = folder / "report"
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    _roc(ax, y, p, f"{title}: OOF ROC")
    _save(fig, out / "roc.png")

    prec, rec, _ = precision_recall_curve(y, p)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot(rec, prec, color="#3b75af")
    ax.axhline(y.mean(), ls=":", color="grey", label=f"positive rate {y.mean():.4f}")
    ax.set(
        xlabel="recall",
        ylabel="precision",
        title=f"{title}: OOF precision-recall",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="upper right", fontsize=8)
    _save(fig, out / "pr.png")

    fig, ax = plt.subplots(figsize=(6.5, 4))
    bins = np.linspace(0, 1, 51)
    for label, color in ((0, "#3b75af"), (1, "#d62728")):
        ax.hist(
            p[y == label],
            bins=bins,
            color=color,
            alpha=0.6,
            density=True,
            label=f"{'malignant' if label else 'benign'} (n={int((y == label).sum())})",
        )
    ax.set(xlabel="OOF prediction", ylabel="density", title=f"{title}: OOF score distributions", yscale="log")
    ax.legend(fontsize=8)
    _save(fig, out / "scores.png")

    sweep = threshold_sweep(y, p)
    artifacts.write_csv(out / "thresholds.csv", sweep)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for col in ("precision", "recall", "f1"):
        ax.plot(sweep["threshold"], sweep[col], label=col)
    ax.set(
        xlabel="threshold", ylabel="value", title=f"{title}: precision / recall vs threshold", ylim=(0, 1.01)
    )
    ax.legend(fontsize=8)
    _save(fig, out / "thresholds.png")

    at_recall = metrics.threshold_for_recall(y, p, 0.8)
    result = {
        "auc": metrics.auc(y, p),
        "pauc": metrics.pauc(y, p),
        "at_threshold": metrics.threshold_metrics(y, p, threshold),
        "at_recall_0.8": metrics.threshold_metrics(y, p, at_recall),
    }
    artifacts.write_json(out / "report.json", result)
    return result
