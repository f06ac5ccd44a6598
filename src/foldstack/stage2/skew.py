"""Train/test skew of the stage-1 features.

A stack row's CNN feature comes, on train, from the one fold model that did not see it (OOF), and on
test from the mean of the k fold models: a mean of k models is smoother (less spread, fewer extreme
scores) than one model, so the GBDT's splits, learned on OOF values, may fall differently on test. Per
stage-1 feature column (cnn_*) this compares the two distributions: the two-sample Kolmogorov-Smirnov
statistic (the largest gap between the empirical CDFs, 0 = same, 1 = disjoint) and the spread ratio
(test standard deviation / OOF standard deviation). Effect sizes, not p-values: at ISIC 2024 size any
difference is significant. A genuine train/test difference (other patients, another positive rate)
shows up here too; the check cannot tell the two apart, it says that the inputs differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from foldstack.config import CompetitionConfig
from foldstack.stage2.features import CNN_PREFIX

KS_WARN = 0.1  # warn above this KS statistic
SPREAD_WARN = 1.25  # ... or when test/OOF spread is outside [1/SPREAD_WARN, SPREAD_WARN]
MIN_TEST_ROWS = 100  # fewer test rows say nothing about a distribution


def _finite(x: pd.Series) -> np.ndarray:
    v = x.to_numpy(dtype=np.float64)
    return v[np.isfinite(v)]


def stage1_shift(cfg: CompetitionConfig, X: pd.DataFrame, X_test: pd.DataFrame) -> dict:
    """{rule, checked, columns: {col: {ks, spread_ratio, oof_mean, test_mean, oof_std, test_std, large}},
    warning (when a column is past the limits)}; {} without stage-1 features."""
    cols = [c for c in X.columns if str(c).startswith(CNN_PREFIX)]
    if not cols:
        return {}
    rule = (
        f"per stage-1 feature: KS statistic of OOF vs test values and spread ratio test std / OOF std; "
        f"large when KS > {KS_WARN} or the ratio is outside [{1 / SPREAD_WARN:.2f}, {SPREAD_WARN}]"
    )
    if len(X_test) < MIN_TEST_ROWS:
        return {
            "rule": rule,
            "checked": False,
            "why": f"the test set has {len(X_test)} rows (< {MIN_TEST_ROWS}): too few to compare "
            f"distributions",
        }
    out, large = {}, []
    for c in cols:
        a, b = _finite(X[c]), _finite(X_test[c])
        if len(a) == 0 or len(b) == 0:
            continue
        sa, sb = float(a.std()), float(b.std())
        ratio = sb / sa if sa > 0 else float("nan")
        ks = float(ks_2samp(a, b).statistic)
        big = bool(ks > KS_WARN or not (1 / SPREAD_WARN <= ratio <= SPREAD_WARN))
        out[c] = {
            "ks": round(ks, 4),
            "spread_ratio": round(ratio, 4),
            "oof_mean": float(a.mean()),
            "test_mean": float(b.mean()),
            "oof_std": sa,
            "test_std": sb,
            "large": big,
        }
        if big:
            large.append(f"{c} (KS {ks:.3f}, spread ratio {ratio:.2f})")
    result: dict = {"rule": rule, "checked": True, "columns": out}
    if large:
        result["warning"] = (
            f"the stage-1 features differ between OOF (one fold model per row) and test (mean of the "
            f"{cfg.folds.k} fold models): {'; '.join(large)}. The stack's splits were learned on OOF values, "
            f"so its test predictions may not behave like its OOF score; see report/stage1_shift.png"
        )
    return result


def write_plot(X: pd.DataFrame, X_test: pd.DataFrame, shift: dict, path: Path, title: str) -> None:
    """OOF vs test histograms of each stage-1 feature, KS and spread ratio in each panel title."""
    cols = list(shift.get("columns", {}))
    if not cols:
        return
    import matplotlib.pyplot as plt

    from foldstack.report import save_figure

    n = len(cols)
    ncol = min(3, n)
    nrow = -(-n // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow), squeeze=False)
    for ax, c in zip(axes.ravel(), cols, strict=False):
        a, b = _finite(X[c]), _finite(X_test[c])
        bins = np.linspace(min(a.min(), b.min()), max(a.max(), b.max()) + 1e-12, 41)
        ax.hist(a, bins=bins, density=True, alpha=0.55, color="#3b75af", label=f"OOF (n={len(a)})")
        ax.hist(b, bins=bins, density=True, alpha=0.55, color="#e08a2c", label=f"test (n={len(b)})")
        s = shift["columns"][c]
        flag = " LARGE" if s["large"] else ""
        ax.set_title(f"{c}\nKS {s['ks']:.3f}, spread {s['spread_ratio']:.2f}{flag}", fontsize=8)
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.suptitle(f"{title}: stage-1 features, OOF vs test")
    save_figure(fig, path)
