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


def save_figure(fig, path: Path) -> None:
    """PNG written atomically, figure closed."""
    artifacts.write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def threshold_sweep(y: np.ndarray, p: np.ndarray, n: int = 101) -> pd.DataFrame:
    """Precision, recall, F1, specificity and counts at evenly spaced thresholds in [0, 1]."""
    rows = [metrics.threshold_metrics(y, p, t) for t in np.linspace(0, 1, n)]
    return pd.DataFrame(rows)


def draw_roc(ax, y: np.ndarray, p: np.ndarray, label: str, color: str | None = None) -> None:
    """One ROC curve with the area that pAUC above 80% TPR scores shaded under it."""
    fpr, tpr, _ = roc_curve(y, p)
    (line,) = ax.plot(
        fpr,
        tpr,
        lw=1.6,
        color=color,
        label=f"{label} (AUC {metrics.auc(y, p):.4f}, pAUC {metrics.pauc(y, p):.4f})",
    )
    ax.fill_between(fpr, 0.8, np.maximum(tpr, 0.8), color=line.get_color(), alpha=0.15)


def roc_axes(ax, title: str) -> None:
    """The TPR = 0.8 line, the chance diagonal, labels and legend of a ROC panel."""
    ax.axhline(0.8, ls="--", lw=1, color="black", label="TPR = 0.8; shaded: the area pAUC scores")
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
    draw_roc(ax, y, p, "OOF", color="#3b75af")
    roc_axes(ax, f"{title}: OOF ROC")
    save_figure(fig, out / "roc.png")

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
    save_figure(fig, out / "pr.png")

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
    save_figure(fig, out / "scores.png")

    sweep = threshold_sweep(y, p)
    artifacts.write_csv(out / "thresholds.csv", sweep)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for col in ("precision", "recall", "f1"):
        ax.plot(sweep["threshold"], sweep[col], label=col)
    ax.set(
        xlabel="threshold", ylabel="value", title=f"{title}: precision / recall vs threshold", ylim=(0, 1.01)
    )
    ax.legend(fontsize=8)
    save_figure(fig, out / "thresholds.png")

    at_recall = metrics.threshold_for_recall(y, p, 0.8)
    result = {
        "auc": metrics.auc(y, p),
        "pauc": metrics.pauc(y, p),
        "at_threshold": metrics.threshold_metrics(y, p, threshold),
        "at_recall_0.8": metrics.threshold_metrics(y, p, at_recall),
    }
    artifacts.write_json(out / "report.json", result)
    return result
