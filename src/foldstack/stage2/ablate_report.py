"""The ablation set's report: tables (markdown) and plots for the one-split and repeated modes, and
the set itself (ablation.csv/.md/.png/.json, ablation_repeats.csv) written whole into the stack folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from foldstack import artifacts
from foldstack.runs import (
    ABLATION_CSV,
    ABLATION_JSON,
    ABLATION_MD,
    ABLATION_PNG,
    ABLATION_REPEATS_CSV,
    StackRun,
)
from foldstack.stage2.compare import metric_key
from foldstack.stage2.config import StackConfig


def markdown_repeated(cfg: StackConfig, table: pd.DataFrame, per_split: pd.DataFrame, weights: dict) -> str:
    key = metric_key(cfg)
    n = per_split["repeat"].nunique()
    seeds = sorted(per_split["fold_seed"].unique().tolist())
    lines = [
        f"# Ablation of stack `{cfg.run}` ({cfg.name}, {cfg.metric}) on {n} repeated splits",
        "",
        f"Tuned parameters and {cfg.blend.method}-blend weights fixed ("
        + ", ".join(f"{n_} {w:.2f}" for n_, w in weights.items())
        + f"); the full stack and each variant refitted on {n} repeated {cfg.folds.k}-fold "
        f"{cfg.columns.group}-grouped splits (fold seeds {seeds[0]}-{seeds[-1]}), scored on the pooled OOF. "
        "change = mean over repeats of (variant - full stack), 95% t-interval, paired t-test and Wilcoxon "
        "p. The stage-1 OOF columns stay those of the original folds: the repeats re-split stage 2 only.",
        "",
        f"| variant | dropped | features | mean {key} | change [95% CI] | t-test p | Wilcoxon p | s |",
        "|---|---|---:|---|---|---|---|---:|",
    ]
    for r in table.to_dict("records"):
        if r["variant"] == "full stack":
            lines.append(f"| full stack | | {r['n_features']} | {r['mean']:.4f} | | | | {r['seconds']:.1f} |")
            continue
        lines.append(
            f"| {r['variant']} | {r['dropped']} | {r['n_features']} | {r['mean']:.4f} | "
            f"{_fmt(r['change'], r['change_low'], r['change_high'], True)} | {r['p_ttest']:.3g} | "
            f"{r['p_wilcoxon']:.3g} | {r['seconds']:.1f} |"
        )
    lines += [
        "",
        "A negative change: the stack loses score without that part (the part earns its place); an "
        "interval that holds 0: no difference these repeats can show.",
    ]
    return "\n".join(lines) + "\n"


def plot_repeated(cfg: StackConfig, table: pd.DataFrame, per_split: pd.DataFrame, path: Path) -> None:
    import matplotlib.pyplot as plt

    from foldstack.report import save_figure

    key = metric_key(cfg)
    t = table[table["variant"] != "full stack"].reset_index(drop=True)
    full = per_split[per_split["variant"] == "full stack"].set_index("repeat")[key]
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(t) + 1.8))
    ypos = np.arange(len(t))
    c = t["change"].to_numpy()
    err = np.stack([c - t["change_low"].to_numpy(), t["change_high"].to_numpy() - c])
    ax.barh(ypos, c, xerr=err, color=np.where(c < 0, "#3b75af", "#d62728"), alpha=0.6, capsize=3)
    for i, v in enumerate(t["variant"]):
        s = per_split[per_split["variant"] == v].set_index("repeat")[key]
        ax.plot((s - full.loc[s.index]).to_numpy(), np.full(len(s), i), "k.", ms=4)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(ypos, t["variant"])
    ax.invert_yaxis()
    ax.set(xlabel=f"change of pooled OOF {key} vs full stack (dots: each repeat)")
    ax.set_title(
        f"{cfg.run}: ablation on {per_split['repeat'].nunique()} repeated splits (full stack mean "
        f"{full.mean():.4f}); bars < 0: the part helps; 95% t-interval",
        fontsize=9,
    )
    save_figure(fig, path)


def write_repeated(cfg, run: StackRun, table, per_split, chosen, weights, wall) -> None:
    with artifacts.SetWriter(run.dir, "ablation", manifest=ABLATION_JSON) as s:
        table.to_csv(s.path(ABLATION_CSV), index=False)
        per_split.to_csv(s.path(ABLATION_REPEATS_CSV), index=False)
        s.path(ABLATION_MD).write_text(markdown_repeated(cfg, table, per_split, weights))
        plot_repeated(cfg, table, per_split, s.path(ABLATION_PNG))
        s.write_json(
            ABLATION_JSON,
            {
                "stack": cfg.run,
                "stack_metrics_sha256": artifacts.sha256_file(run.metrics),
                "mode": "repeated",
                "families": chosen,
                "weights": weights,
                "repeats": int(per_split["repeat"].nunique()),
                "fold_seeds": sorted(per_split["fold_seed"].unique().tolist()),
                "stage1_note": "stage-1 OOF columns come from the original folds; the repeats re-split "
                "stage 2 only",
                "wall_seconds": round(wall, 1),
                "git_commit": artifacts.git_commit(),
            },
        )


def _fmt(v: float, lo: float, hi: float, sign: bool = False) -> str:
    f = "{:+.4f}" if sign else "{:.4f}"
    return f"{f.format(v)} [{f.format(lo)}, {f.format(hi)}]"


def markdown(cfg: StackConfig, table: pd.DataFrame, holdout: int, n_boot: int, weights: dict) -> str:
    key = cfg.metric
    lines = [
        f"# Ablation of stack `{cfg.run}` ({cfg.name}, {key})",
        "",
        f"Tuned parameters fixed; each feature family dropped and every model refitted on the same folds, "
        f"each model family dropped from the {cfg.blend.method} blend (weights "
        + ", ".join(f"{n} {w:.2f}" for n, w in weights.items())
        + f", renormalised). [lo, hi]: 95% {cfg.columns.group}-bootstrap interval ({n_boot} resamples); "
        f"the change is paired (the same resamples score the variant and the full stack). Hold-out = fold "
        f"{holdout}, kept out of tuning: read it, do not choose features on it.",
        "",
        f"| variant | dropped | features | OOF {key} | change | hold-out {key} | change | s |",
        "|---|---|---:|---|---|---|---|---:|",
    ]
    for r in table.to_dict("records"):
        full = r["variant"] == "full stack"
        oof, held = (_fmt(r[w], r[f"{w}_low"], r[f"{w}_high"]) for w in ("oof", "holdout"))
        oc, hc = (
            "" if full else _fmt(r[f"{w}_change"], r[f"{w}_change_low"], r[f"{w}_change_high"], True)
            for w in ("oof", "holdout")
        )
        lines.append(
            f"| {r['variant']} | {r['dropped']} | {r['n_features']} | {oof} | {oc} | {held} | {hc} "
            f"| {r['seconds']:.1f} |"
        )
    lines += [
        "",
        "A negative change: the stack loses score without that part (the part earns its place); an "
        "interval that holds 0: no difference this data can show.",
    ]
    return "\n".join(lines) + "\n"


def plot(cfg: StackConfig, table: pd.DataFrame, path: Path) -> None:
    import matplotlib.pyplot as plt

    from foldstack.report import save_figure

    t = table[table["variant"] != "full stack"].reset_index(drop=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.5 * len(t) + 1.8), sharey=True)
    ypos = np.arange(len(t))
    for ax, where in zip(axes, ("oof", "holdout"), strict=True):
        c = t[f"{where}_change"].to_numpy()
        err = np.stack([c - t[f"{where}_change_low"].to_numpy(), t[f"{where}_change_high"].to_numpy() - c])
        ax.barh(ypos, c, xerr=err, color=np.where(c < 0, "#3b75af", "#d62728"), alpha=0.8, capsize=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set(xlabel=f"change of {'OOF' if where == 'oof' else 'hold-out'} {cfg.metric} vs full stack")
    axes[0].set_yticks(ypos, t["variant"])
    axes[0].invert_yaxis()
    full = table.iloc[0]
    fig.suptitle(
        f"{cfg.run}: ablation (full stack OOF {full['oof']:.4f}, hold-out {full['holdout']:.4f}); "
        f"bars < 0: the part helps; 95% paired bootstrap"
    )
    save_figure(fig, path)


def write_one_split(cfg, run: StackRun, table, chosen, weights, holdout, n_boot, wall) -> None:
    with artifacts.SetWriter(run.dir, "ablation", manifest=ABLATION_JSON) as s:
        table.to_csv(s.path(ABLATION_CSV), index=False)
        s.path(ABLATION_MD).write_text(markdown(cfg, table, holdout, n_boot, weights))
        plot(cfg, table, s.path(ABLATION_PNG))
        s.write_json(
            ABLATION_JSON,
            {
                "stack": cfg.run,
                "stack_metrics_sha256": artifacts.sha256_file(run.metrics),
                "mode": "one split",
                "families": chosen,
                "weights": weights,
                "holdout_fold": holdout,
                "n_boot": n_boot,
                "wall_seconds": round(wall, 1),
                "git_commit": artifacts.git_commit(),
            },
        )
