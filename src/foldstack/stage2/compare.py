"""make compare A=<stack config> B=<stack config> REPEATS=n [BY=attribution]: decide between two stacks
on repeated splits, not on one.

With ~400 positives a pAUC difference of 0.005 on one split is noise. Both candidates are fitted on the
same `n` repeated patient-grouped, target-stratified splits (StratifiedGroupKFold with fold seeds
folds.seed+1 .. folds.seed+n, k = folds.k), so each repeat gives a paired difference B - A of the pooled
OOF score; the report gives every repeat, the mean difference with its 95% t-interval, a paired t-test
and a Wilcoxon signed-rank test. With BY=<column> (e.g. `attribution`, the hospital in ISIC 2024) each
candidate is also fitted on every group but one and scored on the group left out.

What is fixed: each model's parameters are the tuned ones of the candidate's finished stack run
(runs/<comp>/stack/<run>/metrics.json best_params) when there is one, else the config's own (no
tuning inside the repeats); blend weights likewise (equal when the config tunes them and no run holds
them). The stage-1 OOF columns stay those of the original folds (a stage-1 run is trained once, on
folds.csv): each row's CNN input still comes from a model that never saw it, but the repeats only
re-split stage 2.

Written as one set into runs/<comp>/compare/<A run>_vs_<B run>/: compare.csv (per repeat), logo.csv
(per group), compare.md, compare.png, compare.json (the manifest and the summary).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from scipy.stats import rankdata
from sklearn.base import clone

from foldstack import artifacts
from foldstack import prediction_tables as pt
from foldstack.data.metadata import read_metadata
from foldstack.errors import ConfigError, DataError
from foldstack.folds import assign_folds, load_folds
from foldstack.progress import say
from foldstack.runs import COMPARE_CSV, COMPARE_JSON, COMPARE_MD, COMPARE_PNG, LOGO_CSV, Runs
from foldstack.stage2.blend import blend, blend_oof
from foldstack.stage2.config import StackConfig
from foldstack.stage2.inputs import Matrices, build_matrices
from foldstack.stage2.models import estimator, fit_folds


@dataclass(frozen=True)
class Candidate:
    """One side of the comparison: its config, its matrices, and the parameters it is fitted with."""

    cfg: StackConfig
    m: Matrices
    params: dict[str, dict]  # model name -> sampled parameters (best_params of its stack run)
    weights: dict[str, float]
    params_from: str

    @property
    def name(self) -> str:
        return self.cfg.run


def metric_key(cfg: StackConfig) -> str:
    return {"pauc80": "pauc"}.get(cfg.metric, cfg.metric)


def candidate(
    cfg: StackConfig, data_dir: Path, models_in: list[str] | None, params_run: str = ""
) -> Candidate:
    """The candidate's matrices and its parameters: the tuned ones of its finished stack run (or of the
    run `params_run`, for the models of the same name), else the config's own."""
    m, _, _ = build_matrices(cfg, data_dir, models_in)
    run = Runs.of(cfg).stack(params_run or cfg.run)
    names = [spec.name for spec in cfg.models]
    if params_run and not run.finished():
        raise ConfigError(f"the parameters of stack run {params_run!r}: {run.metrics} does not exist")
    if run.finished():
        meta = run.read_metrics(deep=False)
        params = {n: dict(meta["models"][n].get("best_params", {})) for n in names if n in meta["models"]}
        weights = dict(meta.get("blend", {}).get("weights") or cfg.blend.fixed())
        return Candidate(cfg, m, params, weights, f"the tuned parameters of {run.metrics}")
    how = "the config's own parameters (no finished stack run of this name to take tuned ones from)"
    return Candidate(cfg, m, {}, cfg.blend.fixed(), how)


def check_request(a: StackConfig, b: StackConfig, repeats: int, by: str | None, train: pd.DataFrame) -> None:
    """Refused before any fitting: fewer than 2 repeats, one run name for both, an unknown BY column."""
    if repeats < 2:
        raise ConfigError(f"REPEATS={repeats}: a paired comparison needs at least 2 repeated splits")
    if a.run == b.run:
        raise ConfigError(f'A and B are both run {a.run!r}: name one of them, e.g. B_SET="run={b.run}_b ..."')
    if by and by not in train.columns:
        raise ConfigError(
            f"BY={by}: not a column of the train metadata; its columns: {', '.join(train.columns)}"
        )


def repeat_folds(cfg: StackConfig, m: Matrices, repeats: int) -> list[tuple[int, np.ndarray]]:
    """(fold seed, each train row's fold) of the repeated splits, on the rows of `m` in their order."""
    folds, _ = load_folds(cfg)
    groups = folds.set_index("id").loc[m.train_ids, "group"].reset_index(drop=True)
    ids = pd.Series(m.train_ids)
    out = []
    for r in range(repeats):
        seed = cfg.folds.seed + 1 + r
        table = assign_folds(ids, groups, m.y, cfg.folds.k, seed, cfg.classes)
        out.append((seed, table["fold"].to_numpy()))
    return out


def split_score(c: Candidate, fold: np.ndarray, label: str) -> float:
    """Every model of the candidate fitted on the split, blended as the stack would, the pooled OOF
    score."""
    cfg, m = c.cfg, c.m
    oofs = {}
    for spec in cfg.models:
        X = m.member(spec)[0]
        p, _, _ = fit_folds(
            spec, c.params.get(spec.name, {}), X, m.y, fold, None, cfg.tuning.seed, n_classes=cfg.n_classes
        )
        oofs[spec.name] = p
    say(f"{label}: {c.name} fitted")
    p = blend_oof(cfg.blend.method, oofs, m.y, fold, c.weights)
    return float(pt.headline(cfg, m.y, p)[metric_key(cfg)])


def paired(a: np.ndarray, b: np.ndarray) -> dict:
    """Mean paired difference b - a, its 95% t-interval, the paired t-test and Wilcoxon p-values."""
    d = np.asarray(b, float) - np.asarray(a, float)
    n, mean = len(d), float(d.mean())
    sd = float(d.std(ddof=1))
    if sd == 0.0:  # every repeat gives the same difference: no spread to test against
        lo = hi = mean
        p_t = 1.0 if mean == 0.0 else 0.0
    else:
        half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        lo, hi = mean - half, mean + half
        p_t = float(stats.ttest_rel(b, a).pvalue)
    p_w = float(stats.wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
    return {
        "repeats": n,
        "mean_diff": mean,
        "ci95": [lo, hi],
        "sd_diff": sd,
        "p_ttest": p_t,
        "p_wilcoxon": p_w,
    }


def group_scores(c: Candidate, by: np.ndarray, group: str) -> float:
    """Fitted on every group but `group`, scored on it (NaN when it holds one class only)."""
    cfg, m = c.cfg, c.m
    held = by == group
    y_held = m.y[held]
    if len(np.unique(y_held)) < 2:
        return float("nan")
    preds = {}
    for spec in cfg.models:
        est = clone(estimator(spec, c.params.get(spec.name, {}), cfg.tuning.seed, cfg.n_classes))
        X = m.member(spec)[0]
        p = est.fit(X[~held], m.y[~held]).scores(X[held])
        preds[spec.name] = rankdata(p) / len(p) if cfg.blend.method == "rank" else p
    return float(pt.headline(cfg, y_held, blend(preds, c.weights))[metric_key(cfg)])


def leave_one_group_out(a: Candidate, b: Candidate, by_values: np.ndarray) -> pd.DataFrame:
    rows = []
    for g in sorted(pd.unique(by_values), key=str):
        held = by_values == g
        sa, sb = group_scores(a, by_values, g), group_scores(b, by_values, g)
        rows.append(
            {
                "group": str(g),
                "rows": int(held.sum()),
                "positives": int((a.m.y[held] > 0).sum()),
                "A": sa,
                "B": sb,
            }
        )
        say(f"leave out {g}: {a.name} {sa:.4f}, {b.name} {sb:.4f}")
    table = pd.DataFrame(rows)
    table["diff"] = table["B"] - table["A"]
    return table


def compare(
    a_cfg: StackConfig,
    b_cfg: StackConfig,
    data_dir: Path,
    repeats: int = 5,
    by: str | None = None,
    models_in: list[str] | None = None,
    params_runs: tuple[str, str] = ("", ""),
) -> dict:
    """Fit both candidates on `repeats` repeated splits (and leave-one-BY-out), write the comparison set."""
    t0 = time.time()
    train = read_metadata(a_cfg, data_dir, "train")
    check_request(a_cfg, b_cfg, repeats, by, train)
    a = candidate(a_cfg, data_dir, models_in, params_runs[0])
    b = candidate(b_cfg, data_dir, models_in, params_runs[1])
    if a.m.train_ids != b.m.train_ids:
        raise DataError("A and B read different train rows: compare stacks of one competition and data")
    rows = []
    for r, (seed, fold) in enumerate(repeat_folds(a_cfg, a.m, repeats)):
        label = f"repeat {r + 1}/{repeats} (fold seed {seed})"
        sa, sb = split_score(a, fold, label), split_score(b, fold, label)
        rows.append({"repeat": r + 1, "fold_seed": seed, "A": sa, "B": sb, "diff": sb - sa})
        say(f"{label}: {a.name} {sa:.4f}, {b.name} {sb:.4f}, B - A {sb - sa:+.4f}")
    table = pd.DataFrame(rows)
    logo = None
    if by:
        by_values = train.set_index(a_cfg.columns.id).loc[a.m.train_ids, by].astype(str).to_numpy()
        logo = leave_one_group_out(a, b, by_values)
    summary = {
        "A": {"run": a.name, "params_from": a.params_from},
        "B": {"run": b.name, "params_from": b.params_from},
        "metric": a_cfg.metric,
        "folds_k": a_cfg.folds.k,
        "fold_seeds": table["fold_seed"].tolist(),
        "A_mean": float(table["A"].mean()),
        "B_mean": float(table["B"].mean()),
        **paired(table["A"].to_numpy(), table["B"].to_numpy()),
        "by": by,
        "seconds": round(time.time() - t0, 1),
        "stage1_note": "stage-1 OOF columns come from the original folds; the repeats re-split stage 2 only",
    }
    write_compare(a_cfg, a, b, table, logo, summary)
    return summary


def folder(a_cfg: StackConfig, a: str, b: str) -> Path:
    return Runs.of(a_cfg).compare(a, b)


def markdown(a: Candidate, b: Candidate, table: pd.DataFrame, logo: pd.DataFrame | None, s: dict) -> str:
    key = metric_key(a.cfg)
    lo, hi = s["ci95"]
    lines = [
        f"# Compare: A = {a.name}, B = {b.name} ({s['metric']}, {s['repeats']} repeated {s['folds_k']}-fold "
        "patient-grouped splits)",
        "",
        f"B - A: mean {s['mean_diff']:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}], "
        f"paired t-test p = {s['p_ttest']:.3g}, Wilcoxon p = {s['p_wilcoxon']:.3g}. "
        f"Mean {key}: A {s['A_mean']:.4f}, B {s['B_mean']:.4f}.",
        "",
        f"A's parameters: {a.params_from}. B's: {b.params_from}. {s['stage1_note']}.",
        "",
        f"| repeat | fold seed | A {key} | B {key} | B - A |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.repeat} | {r.fold_seed} | {r.A:.4f} | {r.B:.4f} | {r.diff:+.4f} |" for r in table.itertuples()
    ]
    if logo is not None:
        lines += ["", f"Leave one {s['by']} out (fitted on the others, scored on it):", ""]
        lines += [f"| {s['by']} | rows | positives | A | B | B - A |", "|---|---|---|---|---|---|"]
        lines += [
            f"| {r.group} | {r.rows} | {r.positives} | {r.A:.4f} | {r.B:.4f} | {r.diff:+.4f} |"
            for r in logo.itertuples()
        ]
    return "\n".join(lines) + "\n"


def plot(
    a: Candidate, b: Candidate, table: pd.DataFrame, logo: pd.DataFrame | None, s: dict, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from foldstack.report import save_figure

    panels = 2 if logo is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4), squeeze=False, layout="constrained")
    ax = axes[0][0]
    for r in table.itertuples():
        ax.plot([0, 1], [r.A, r.B], color="#888888", marker="o", lw=1)
    ax.set_xticks([0, 1], [f"A: {a.name}", f"B: {b.name}"])
    lo, hi = s["ci95"]
    ax.set(
        ylabel=f"pooled OOF {metric_key(a.cfg)}",
        title=f"{s['repeats']} repeats: B - A {s['mean_diff']:+.4f} [{lo:+.4f}, {hi:+.4f}]",
    )
    if logo is not None:
        ax2 = axes[0][1]
        y = np.arange(len(logo))
        ax2.barh(y, logo["diff"].fillna(0.0), color="#3b75af")
        ax2.set_yticks(y, [g[:28] for g in logo["group"]], fontsize=7)
        ax2.axvline(0, color="black", lw=0.8)
        ax2.set(xlabel="B - A on the group left out", title=f"leave one {s['by']} out")
    save_figure(fig, path)


def write_compare(a_cfg, a: Candidate, b: Candidate, table, logo, summary: dict) -> None:
    out = folder(a_cfg, a.name, b.name)
    with artifacts.SetWriter(out, "compare", manifest=COMPARE_JSON, replace_all=True) as s:
        table.to_csv(s.path(COMPARE_CSV), index=False)
        if logo is not None:
            logo.to_csv(s.path(LOGO_CSV), index=False)
        s.path(COMPARE_MD).write_text(markdown(a, b, table, logo, summary))
        plot(a, b, table, logo, summary, s.path(COMPARE_PNG))
        s.write_json(COMPARE_JSON, summary)
