"""The offline leaderboard: every stage-1 run, stack and submission scored by the competition's metric."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from foldstack import artifacts, metrics
from foldstack import prediction_tables as pt
from foldstack.config import CompetitionConfig
from foldstack.data.metadata import read_csv_exact, target_codes
from foldstack.errors import DataError
from foldstack.folds import load_folds
from foldstack.report import draw_roc, roc_axes, save_figure
from foldstack.runs import OOF, SUBMISSIONS_DIR, RunFolder, Runs, Submissions
from foldstack.submit.ledger import read_ledger


@dataclass
class Entry:
    name: str
    kind: str  # stage1 | stack | submission
    oof: pd.DataFrame | None  # id, fold, target, pred
    submission: Path | None = None
    status: str = ""
    meta: dict = field(default_factory=dict)  # the run's metrics.json ({} when there is none)


def _metrics_json(run: RunFolder) -> dict:
    if not run.metrics.exists():
        return {}
    # refuses a run whose files (oof/test parquet, models...) differ from its metrics.json manifest
    return run.read_metrics()


def collect(cfg: CompetitionConfig, out_dir: Path = Path(SUBMISSIONS_DIR)) -> list[Entry]:
    entries = []
    runs = Runs.of(cfg)
    for kind, found in (("stage1", runs.stage1_runs()), ("stack", runs.stack_runs())):
        for run in found:
            entries.append(Entry(run.name, kind, pd.read_parquet(run.oof), meta=_metrics_json(run)))
    for _, row in read_ledger(Submissions.of(cfg, out_dir).ledger).iterrows():
        folder = RunFolder(Path(str(row["source"])).parent)
        oof = pd.read_parquet(folder.oof) if folder.oof.exists() else None
        entries.append(
            Entry(
                Path(str(row["file"])).stem,
                "submission",
                oof,
                Path(str(row["file"])),
                str(row["kaggle_status"]),
                _metrics_json(folder),
            )
        )
    return entries


def flags(cfg: CompetitionConfig, e: Entry, row: dict) -> dict:
    """For stacks the untouched hold-out fold's score (metrics.json stack.holdout_<key>); for every entry
    the optimism flag (metrics.json score_is_optimistic) and the suspicious-score flag (a stack's
    metrics.json suspicious_score, or any score of the row at or near the metric's maximum)."""
    key = _key(cfg.metric)
    out: dict = {}
    if e.kind == "stack":
        v = e.meta.get("stack", {}).get(f"holdout_{key}")
        out[f"holdout_{key}"] = float(v) if isinstance(v, (int, float)) else np.nan
    optimistic = bool(e.meta.get("score_is_optimistic", False))
    inputs = e.meta.get("optimistic_inputs") or []
    out["optimistic"] = ("yes" + (f" (inputs {', '.join(inputs)})" if inputs else "")) if optimistic else ""
    reasons = [str(e.meta["suspicious_score"])] if e.meta.get("suspicious_score") else []
    reasons += [r for r in pt.near_max(row | out, ("oof", "holdout", "test")) if r not in reasons]
    out["suspicious"] = "; ".join(reasons)
    return out


def _key(metric: str) -> str:
    return {"pauc80": "pauc"}.get(metric, metric)


KIND_ORDER = ("stack", "stage1", "submission")


def rank(cfg: CompetitionConfig, table: pd.DataFrame) -> pd.DataFrame:
    """Stacks first, ranked by the untouched hold-out fold's score (their pooled OOF mixes in the folds
    that chose their parameters); then stage-1 runs and submissions, ranked by the pooled OOF score.
    rank_by names the column each row is ranked by, rank its place within its kind."""
    key = _key(cfg.metric)
    table = table.copy()
    table["rank_by"] = [f"holdout_{key}" if k == "stack" else f"oof_{key}" for k in table["kind"]]
    table["rank_score"] = [
        r.get(c, np.nan) if isinstance(r.get(c, np.nan), float) else np.nan
        for r, c in zip(table.to_dict("records"), table["rank_by"], strict=True)
    ]
    table["kind_order"] = [KIND_ORDER.index(k) for k in table["kind"]]
    table = table.sort_values(
        ["kind_order", "rank_score"], ascending=[True, False], na_position="last", kind="stable"
    )
    table["rank"] = table.groupby("kind").cumcount() + 1
    return table.drop(columns=["kind_order", "rank_score"]).reset_index(drop=True)


def read_labels(cfg: CompetitionConfig, path: Path) -> pd.DataFrame:
    """The test labels CSV (id, group, target columns of the competition config), or a DataError that
    says what is wrong with it."""
    idc, gc, tc = cfg.columns.id, cfg.columns.group, cfg.columns.target
    if not path.is_file():
        raise DataError(
            f"labels file {path} does not exist or is not a file: pass LABELS=<a CSV with columns "
            f"{idc},{gc},{tc}>, or LABELS= (empty) to rank without test scores"
        )
    try:
        labels = read_csv_exact(path, dtype={idc: str, gc: str})
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(
            f"labels file {path} is not a readable CSV ({e}); expected columns {idc},{gc},{tc}"
        ) from e
    missing = [c for c in (idc, gc, tc) if c not in labels.columns]
    if missing:
        raise DataError(
            f"labels file {path} lacks column(s) {missing} (has {list(labels.columns)}); test labels need "
            f"{idc},{gc},{tc}. Without labels run `make lb LABELS=` (empty) to rank on OOF scores only"
        )
    if labels.empty:
        raise DataError(f"labels file {path} has no rows")
    dup = labels[idc][labels[idc].duplicated()]
    if len(dup):
        raise DataError(f"labels file {path}: {len(dup)} duplicated {idc}(s), e.g. {dup.iloc[0]}")
    empty = labels[labels[tc].isna()]
    if len(empty):
        raise DataError(
            f"labels file {path}: {len(empty)} row(s) without a {tc}, e.g. {idc} {empty[idc].iloc[0]}"
        )
    return labels


def oof_scores(cfg: CompetitionConfig, oof: pd.DataFrame, groups: pd.Series) -> dict:
    """Pooled OOF scores with a group-bootstrap 95% interval and the per-fold mean and spread: pAUC and
    AUC (binary) or macro OvR AUC, plus balanced accuracy without an interval (multiclass)."""
    y, p = oof["target"].to_numpy(), pt.read(cfg, oof, OOF)
    g = groups.loc[oof["id"]].to_numpy()
    by_fold = pt.score_folds(cfg, y, p, oof["fold"].to_numpy())
    lb = cfg.leaderboard
    out = {}
    for name in ("macro_auc",) if cfg.multiclass else ("pauc80", "auc"):
        ci = metrics.bootstrap_ci(y, p, g, metric=name, n_boot=lb.n_boot, seed=lb.seed)
        key = _key(name)
        out |= {
            f"oof_{key}": ci["point"],
            f"oof_{key}_lo": ci["low"],
            f"oof_{key}_hi": ci["high"],
            f"fold_{key}_mean": by_fold[f"fold_{key}_mean"],
            f"fold_{key}_std": float(np.std([r[key] for r in by_fold["per_fold"]])),
        }
    if cfg.multiclass:
        r = metrics.multiclass_report(y, p, cfg.classes)
        out |= {
            "oof_balanced_accuracy": r["balanced_accuracy"],
            "oof_macro_f1": r["macro_f1"],
            **{f"auc_{c}": v["auc"] for c, v in r["per_class"].items()},
        }
    return out


class OtherTestSet(DataError):
    """A submission's ids are not those of the labels file."""


def test_scores(
    cfg: CompetitionConfig, submission: Path, labels: pd.DataFrame, labels_path: Path | str = "labels"
) -> dict:
    """Test scores against the labels, and public/private scores (the competition metric) over random
    splits of the test groups."""
    idc, gc, tc = cfg.columns.id, cfg.columns.group, cfg.columns.target
    sub = read_csv_exact(submission, dtype={idc: str})
    if idc not in sub.columns or sub[idc].duplicated().any():
        raise DataError(f"{submission}: no {idc} column or duplicated ids; it is not a valid submission")
    sub = sub.rename(columns=dict(zip(cfg.submission_columns[1:], cfg.pred_columns, strict=True)))
    merged = labels.merge(sub, on=idc, validate="one_to_one")
    if len(merged) != len(labels):
        raise OtherTestSet(
            f"{submission}: {len(labels) - len(merged)} of the {len(labels)} ids in {labels_path} have no "
            f"prediction: are the labels of this competition's test set?"
        )
    y = target_codes(cfg, merged[tc])
    if len(np.unique(y)) < 2:
        raise DataError(
            f"{labels_path}: the labels of the submitted ids hold a single class (got "
            f"{sorted(map(str, np.unique(merged[tc])))}): no test score can be computed"
        )
    p, g = pt.read(cfg, merged, str(submission)), merged[gc].to_numpy()
    lb = cfg.leaderboard
    key = _key(cfg.metric)
    groups = np.unique(g)
    rng = np.random.default_rng(lb.seed)
    gaps, first = [], None
    for _ in range(lb.n_splits):
        public = np.isin(
            g, rng.choice(groups, max(1, round(lb.public_fraction * len(groups))), replace=False)
        )
        try:
            pub, priv = (
                metrics.score(cfg.metric, y[public], p[public]),
                metrics.score(cfg.metric, y[~public], p[~public]),
            )
        except DataError:  # a split without both classes has no score
            continue
        first = first or (pub, priv)
        gaps.append(pub - priv)
    out = {
        f"test_{k}": v
        for k, v in pt.headline(cfg, y, p).items()
        if k in ("auc", "pauc", "macro_auc", "balanced_accuracy")
    }
    if first:
        out |= {
            f"public_{key}": first[0],
            f"private_{key}": first[1],
            "public_minus_private_p05": float(np.percentile(gaps, 5)),
            "public_minus_private_p95": float(np.percentile(gaps, 95)),
        }
    return out


def roc_plot(cfg: CompetitionConfig, top: list[tuple[str, pd.DataFrame]], path: Path) -> None:
    """Binary: OOF ROC curves of the top entries with the pAUC region shaded. Multiclass: each top
    entry's one-vs-rest AUC per class, side by side."""
    fig, ax = plt.subplots(figsize=(6.5, 5.5) if not cfg.multiclass else (8, 4.5))
    if not cfg.multiclass:
        for name, oof in top:
            draw_roc(ax, oof["target"], oof["pred"], name)
        roc_axes(ax, f"{cfg.name}: OOF ROC, top entries")
    else:
        x = np.arange(len(cfg.classes))
        width = 0.8 / max(len(top), 1)
        for i, (name, oof) in enumerate(top):
            r = metrics.multiclass_report(oof["target"].to_numpy(), pt.read(cfg, oof, name), cfg.classes)
            aucs = [r["per_class"][c]["auc"] or np.nan for c in cfg.classes]
            ax.bar(
                x + (i - (len(top) - 1) / 2) * width,
                aucs,
                width,
                label=f"{name} (macro {r['macro_auc']:.3f})",
            )
        ax.set_xticks(x)
        ax.set_xticklabels(cfg.classes)
        ax.set(ylim=(0.5, 1.0), ylabel="one-vs-rest OOF AUC", title=f"{cfg.name}: per-class AUC, top entries")
        ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, path)


def leaderboard(
    cfg: CompetitionConfig, labels_path: Path | None, out_dir: Path = Path(SUBMISSIONS_DIR)
) -> pd.DataFrame:
    """Score every entry; write leaderboard.csv, leaderboard.md and roc.png under submissions/<comp>/."""
    folds, _ = load_folds(cfg)
    groups = folds.set_index("id")["group"]
    labels = read_labels(cfg, labels_path) if labels_path is not None else None
    rows, curves, mismatched = [], [], []
    for e in collect(cfg, out_dir):
        row = {"entry": e.name, "kind": e.kind, "status": e.status}
        if e.oof is not None and not e.oof["id"].astype(str).isin(groups.index).all():
            # e.g. a submission made from a run on other data (DATA=... runs_dir=...): nothing to compare
            row["note"] = f"OOF not scored: its ids are not those of {Runs.of(cfg).folds_csv}"
            e.oof = None
        if e.oof is not None:
            row |= oof_scores(cfg, e.oof, groups)
            if e.kind != "submission":
                curves.append((e.name, e.oof, row[f"oof_{_key(cfg.metric)}"]))
        if e.submission is not None and labels is not None and e.submission.exists():
            try:
                row |= test_scores(cfg, e.submission, labels, labels_path)
            except OtherTestSet as err:  # a file of other data: noted; every file so: the labels are wrong
                row["note"] = "; ".join(filter(None, [row.get("note"), f"test not scored: {err}"]))
                mismatched.append(err)
        rows.append(row | flags(cfg, e, row))
    scored = [r for r in rows if r["kind"] == "submission"]
    if mismatched and len(mismatched) == len(scored):
        raise mismatched[0]
    if not rows:
        raise DataError(f"nothing to rank under {Runs.of(cfg).dir}: run `make oof` / `make stack` first")
    table = rank(cfg, pd.DataFrame(rows))
    subs = Submissions.of(cfg, out_dir)
    artifacts.write_csv(subs.leaderboard_csv, table)
    artifacts.write_text(subs.leaderboard_md, to_markdown(cfg, table, labels_path))
    top = sorted(curves, key=lambda c: -c[2])[: cfg.leaderboard.top_roc]
    roc_plot(cfg, [(n, o) for n, o, _ in top], subs.roc_png)
    return table


def to_markdown(cfg: CompetitionConfig, table: pd.DataFrame, labels: Path | None) -> str:
    main = _key(cfg.metric)
    keys = [main, *(k for k in ("pauc", "auc") if k != main and not cfg.multiclass)]  # the metric first
    wanted = ["rank", "entry", "kind", "rank_by", f"holdout_{main}", "optimistic", "suspicious"]
    for k in keys:
        wanted += [f"oof_{k}", f"oof_{k}_lo", f"oof_{k}_hi", f"fold_{k}_mean", f"fold_{k}_std"]
    wanted += ["oof_balanced_accuracy", "oof_macro_f1"]
    wanted += [f"test_{k}" for k in (*keys, "balanced_accuracy")]
    wanted += [f"public_{main}", f"private_{main}", "public_minus_private_p05", "public_minus_private_p95"]
    wanted += ["note"]
    cols = [c for c in wanted if c in table]
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    body = "".join("| " + " | ".join(_fmt(r[c]) for c in cols) + " |\n" for _, r in table.iterrows())
    note = (
        f"\nRanking: stacks come first, ranked by holdout_{main}, the score on the fold that never took "
        f"part in their tuning (their pooled OOF also covers the folds that chose their parameters, so it "
        f"is mildly optimistic); stage-1 runs and then submissions are ranked by their pooled OOF score "
        f"(oof_{main}); rank_by names the column used, rank is the place within the kind. optimistic: "
        f"the run's metrics.json says score_is_optimistic (a checkpoint picked on the scored fold, or a "
        f"stack built on such runs). suspicious: a score at or near the metric's maximum "
        f"(pAUC >= 0.198, AUC >= 0.999), most likely a leak.\n"
        f"OOF scores pool each run's out-of-fold predictions; [lo, hi] is a {cfg.columns.group}-bootstrap "
        f"95% interval "
        f"({cfg.leaderboard.n_boot} resamples). Test scores use {labels or 'no labels file'}; public/private "
        f"split {cfg.leaderboard.public_fraction:.0%} of test {cfg.columns.group} groups, spread over "
        f"{cfg.leaderboard.n_splits} random splits (5th-95th percentile of public - private).\n"
    )
    return f"# Offline leaderboard: {cfg.name} ({cfg.metric})\n\n{head}{body}{note}"


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.4f}"
    return str(v)


def summary_json(table: pd.DataFrame) -> str:
    return json.dumps(table.head(10).to_dict("records"), default=str)
