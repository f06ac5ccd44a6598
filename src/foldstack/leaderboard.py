"""The offline leaderboard: every stage-1 run, stack and submission scored by the competition's metric."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from foldstack import artifacts, metrics
from foldstack.config import CompetitionConfig
from foldstack.errors import DataError
from foldstack.folds import load_folds
from foldstack.report import draw_roc, roc_axes, save_figure
from foldstack.submission import ledger_path, read_ledger


@dataclass
class Entry:
    name: str
    kind: str  # stage1 | stack | submission
    oof: pd.DataFrame | None  # id, fold, target, pred
    submission: Path | None = None
    status: str = ""


def collect(cfg: CompetitionConfig, out_dir: Path = Path("submissions")) -> list[Entry]:
    entries = []
    for kind, sub in (("stage1", "oof"), ("stack", "stack")):
        for p in sorted((cfg.run_dir / sub).glob("*/oof.parquet")):
            entries.append(Entry(p.parent.name, kind, pd.read_parquet(p)))
    for _, row in read_ledger(ledger_path(cfg, out_dir)).iterrows():
        src = Path(str(row["source"])).parent / "oof.parquet"
        oof = pd.read_parquet(src) if src.exists() else None
        entries.append(
            Entry(
                Path(str(row["file"])).stem,
                "submission",
                oof,
                Path(str(row["file"])),
                str(row["kaggle_status"]),
            )
        )
    return entries


def oof_scores(cfg: CompetitionConfig, oof: pd.DataFrame, groups: pd.Series) -> dict:
    """Pooled OOF pAUC/AUC with a patient-bootstrap 95% interval, and the per-fold mean and spread."""
    y, p = oof["target"].to_numpy(), oof["pred"].to_numpy()
    g = groups.loc[oof["id"]].to_numpy()
    lb = cfg.leaderboard
    out = {}
    for name in ("pauc80", "auc"):
        ci = metrics.bootstrap_ci(y, p, g, metric=name, n_boot=lb.n_boot, seed=lb.seed)
        per = [
            metrics.score(name, y[oof["fold"] == f], p[oof["fold"] == f])
            for f in sorted(oof["fold"].unique())
        ]
        key = "pauc" if name == "pauc80" else "auc"
        out |= {
            f"oof_{key}": ci["point"],
            f"oof_{key}_lo": ci["low"],
            f"oof_{key}_hi": ci["high"],
            f"fold_{key}_mean": float(np.mean(per)),
            f"fold_{key}_std": float(np.std(per)),
        }
    return out


def test_scores(cfg: CompetitionConfig, submission: Path, labels: pd.DataFrame) -> dict:
    """Test pAUC/AUC against the labels, and public/private scores over random patient splits."""
    idc, gc, tc = cfg.columns.id, cfg.columns.group, cfg.columns.target
    sub = pd.read_csv(submission, dtype={idc: str})
    merged = labels.merge(sub, on=idc, suffixes=("_true", ""), validate="one_to_one")
    if len(merged) != len(labels):
        raise DataError(f"{submission}: {len(labels) - len(merged)} labelled ids have no prediction")
    y, p, g = merged[f"{tc}_true"].to_numpy(), merged[tc].to_numpy(), merged[gc].to_numpy()
    lb = cfg.leaderboard
    patients = np.unique(g)
    rng = np.random.default_rng(lb.seed)
    gaps, first = [], None
    for _ in range(lb.n_splits):
        public = np.isin(
            g, rng.choice(patients, max(1, round(lb.public_fraction * len(patients))), replace=False)
        )
        if len(np.unique(y[public])) < 2 or len(np.unique(y[~public])) < 2:
            continue
        pub, priv = metrics.pauc(y[public], p[public]), metrics.pauc(y[~public], p[~public])
        first = first or (pub, priv)
        gaps.append(pub - priv)
    out = {"test_pauc": metrics.pauc(y, p), "test_auc": metrics.auc(y, p)}
    if first:
        out |= {
            "public_pauc": first[0],
            "private_pauc": first[1],
            "public_minus_private_p05": float(np.percentile(gaps, 5)),
            "public_minus_private_p95": float(np.percentile(gaps, 95)),
        }
    return out


def roc_plot(cfg: CompetitionConfig, top: list[tuple[str, pd.DataFrame]], path: Path) -> None:
    """OOF ROC curves of the top entries; the region that pAUC above 80% TPR scores is shaded."""
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for name, oof in top:
        draw_roc(ax, oof["target"], oof["pred"], name)
    roc_axes(ax, f"{cfg.name}: OOF ROC, top entries")
    save_figure(fig, path)


def leaderboard(
    cfg: CompetitionConfig, labels_path: Path | None, out_dir: Path = Path("submissions")
) -> pd.DataFrame:
    """Score every entry; write leaderboard.csv, leaderboard.md and roc.png under submissions/<comp>/."""
    folds, _ = load_folds(cfg)
    groups = folds.set_index("id")["group"]
    labels = None
    if labels_path is not None:
        labels = pd.read_csv(labels_path, dtype={cfg.columns.id: str, cfg.columns.group: str})
    rows, curves = [], []
    for e in collect(cfg, out_dir):
        row = {"entry": e.name, "kind": e.kind, "status": e.status}
        if e.oof is not None:
            row |= oof_scores(cfg, e.oof, groups)
            if e.kind != "submission":
                curves.append((e.name, e.oof, row["oof_pauc"]))
        if e.submission is not None and labels is not None and e.submission.exists():
            row |= test_scores(cfg, e.submission, labels)
        rows.append(row)
    if not rows:
        raise DataError(f"nothing to rank under {cfg.run_dir}: run `make oof` / `make stack` first")
    table = pd.DataFrame(rows).sort_values("oof_pauc", ascending=False, na_position="last")
    folder = out_dir / cfg.name
    artifacts.write_csv(folder / "leaderboard.csv", table)
    artifacts.write_text(folder / "leaderboard.md", to_markdown(cfg, table, labels_path))
    top = sorted(curves, key=lambda c: -c[2])[: cfg.leaderboard.top_roc]
    roc_plot(cfg, [(n, o) for n, o, _ in top], folder / "roc.png")
    return table


def to_markdown(cfg: CompetitionConfig, table: pd.DataFrame, labels: Path | None) -> str:
    cols = [
        c
        for c in (
            "entry",
            "kind",
            "oof_pauc",
            "oof_pauc_lo",
            "oof_pauc_hi",
            "fold_pauc_mean",
            "fold_pauc_std",
            "oof_auc",
            "test_pauc",
            "test_auc",
            "public_pauc",
            "private_pauc",
            "public_minus_private_p05",
            "public_minus_private_p95",
        )
        if c in table
    ]
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    body = "".join("| " + " | ".join(_fmt(r[c]) for c in cols) + " |\n" for _, r in table.iterrows())
    note = (
        f"\nOOF scores pool each run's out-of-fold predictions; [lo, hi] is a patient-bootstrap 95% interval "
        f"({cfg.leaderboard.n_boot} resamples). Test scores use {labels or 'no labels file'}; public/private "
        f"split {cfg.leaderboard.public_fraction:.0%} of test patients, spread over "
        f"{cfg.leaderboard.n_splits} random splits (5th-95th percentile of public - private).\n"
    )
    return f"# Offline leaderboard: {cfg.name} ({cfg.metric})\n\n{head}{body}{note}"


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.4f}"
    return str(v)


def summary_json(table: pd.DataFrame) -> str:
    return json.dumps(table.head(10).to_dict("records"), default=str)
