"""A run's report/ folder.

Binary: ROC (pAUC region shaded), PR, OOF score distributions, threshold sweep, confusion matrices at
the chosen threshold and at 80% recall. Multiclass: one-vs-rest ROC per class, per-class precision /
recall / F1, the confusion matrix (argmax) counted and row-normalised, and the scores as JSON.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

from foldstack import artifacts, metrics
from foldstack.config import CompetitionConfig
from foldstack.runs import (
    CONFUSION_PNG,
    PER_CLASS_CSV,
    PER_CLASS_PNG,
    PR_PNG,
    REPORT,
    REPORT_JSON,
    ROC_PNG,
    SCORES_PNG,
    THRESHOLDS_CSV,
    THRESHOLDS_PNG,
)


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


def draw_confusion(ax, cm: np.ndarray, labels: list[str], title: str, normalise: bool = False) -> None:
    """A confusion heatmap, rows = true class, columns = predicted; counts (or row shares) written in."""
    cm = np.asarray(cm, dtype=float)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalise else cm
    ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalise else max(shown.max(), 1))
    ticks = range(len(labels))
    ax.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(labels, rotation=45, ha="right")
    ax.set_yticklabels(labels)
    top = shown.max() if shown.size else 1
    for i in ticks:
        for j in ticks:
            text = f"{shown[i, j]:.2f}" if normalise else f"{int(cm[i, j])}"
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=8,
                color="white" if shown[i, j] > 0.6 * top else "black",
            )


def _pr_curve(path: Path, y: np.ndarray, p: np.ndarray, title: str) -> None:
    """The OOF precision-recall curve with the positive rate drawn."""
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
    save_figure(fig, path)


def _score_histograms(path: Path, y: np.ndarray, p: np.ndarray, title: str) -> None:
    """The OOF score distributions of benign and malignant rows (log density)."""
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
    save_figure(fig, path)


def write_report(
    cfg: CompetitionConfig, folder: Path, y: np.ndarray, p: np.ndarray, title: str, threshold: float = 0.5
) -> dict:
    """Write folder/report/ (see the module doc) and report.json; return the JSON."""
    if cfg.multiclass:
        return write_multiclass_report(cfg, folder, y, p, title)
    out = folder / REPORT
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    draw_roc(ax, y, p, "OOF", color="#3b75af")
    roc_axes(ax, f"{title}: OOF ROC")
    save_figure(fig, out / ROC_PNG)

    _pr_curve(out / PR_PNG, y, p, title)
    _score_histograms(out / SCORES_PNG, y, p, title)

    sweep = threshold_sweep(y, p)
    artifacts.write_csv(out / THRESHOLDS_CSV, sweep)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for col in ("precision", "recall", "f1"):
        ax.plot(sweep["threshold"], sweep[col], label=col)
    ax.set(
        xlabel="threshold", ylabel="value", title=f"{title}: precision / recall vs threshold", ylim=(0, 1.01)
    )
    ax.legend(fontsize=8)
    save_figure(fig, out / THRESHOLDS_PNG)

    at_recall = metrics.threshold_for_recall(y, p, 0.8)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
    for ax, t, what in ((axes[0], threshold, "chosen threshold"), (axes[1], at_recall, "80% recall")):
        draw_confusion(ax, metrics.confusion(y, p, t), ["benign", "malignant"], f"{what}: p >= {t:.3g}")
    fig.suptitle(f"{title}: OOF confusion")
    save_figure(fig, out / CONFUSION_PNG)
    result = {
        "auc": metrics.auc(y, p),
        "pauc": metrics.pauc(y, p),
        "at_threshold": metrics.threshold_metrics(y, p, threshold),
        "at_recall_0.8": metrics.threshold_metrics(y, p, at_recall),
    }
    artifacts.write_json(out / REPORT_JSON, result)
    return result


def write_multiclass_report(
    cfg: CompetitionConfig, folder: Path, y: np.ndarray, P: np.ndarray, title: str
) -> dict:
    """report/: roc.png (one-vs-rest per class), per_class.csv/.png, confusion.png, report.json."""
    out = folder / REPORT
    y, P = np.asarray(y).astype(int), np.asarray(P, dtype=float)
    labels = list(cfg.classes)
    result = metrics.multiclass_report(y, P, labels)

    fig, ax = plt.subplots(figsize=(6, 5.5))
    for c, name in enumerate(labels):
        one = (y == c).astype(int)
        if 0 < one.sum() < len(one):
            fpr, tpr, _ = roc_curve(one, P[:, c])
            ax.plot(
                fpr, tpr, lw=1.4, label=f"{name} (AUC {result['per_class'][name]['auc']:.3f}, n={one.sum()})"
            )
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title=f"{title}: one-vs-rest ROC, macro AUC {result['macro_auc']:.4f}",
    )
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, out / ROC_PNG)

    table = pd.DataFrame(result["per_class"]).T.rename_axis("class").reset_index()
    artifacts.write_csv(out / PER_CLASS_CSV, table)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    x = np.arange(len(labels))
    for i, col in enumerate(("precision", "recall", "f1")):
        ax.bar(x + (i - 1) * 0.27, table[col].astype(float), width=0.27, label=col)
    ax.set_xticks(x)
    ax.set_xticklabels(labels)
    ax.set(
        ylim=(0, 1.01),
        ylabel="value",
        title=f"{title}: per class at argmax (balanced accuracy {result['balanced_accuracy']:.3f})",
    )
    ax.legend(fontsize=8)
    save_figure(fig, out / PER_CLASS_PNG)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    draw_confusion(axes[0], np.array(result["confusion"]), labels, "counts")
    draw_confusion(axes[1], np.array(result["confusion"]), labels, "share of each true class", normalise=True)
    fig.suptitle(f"{title}: OOF confusion matrix (predicted = argmax)")
    save_figure(fig, out / CONFUSION_PNG)
    artifacts.write_json(out / REPORT_JSON, result)
    return result
