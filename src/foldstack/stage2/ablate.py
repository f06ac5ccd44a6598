"""`make ablate`: what each feature family and each model adds to a finished stack.

With the stack's tuned parameters fixed (metrics.json best_params; nothing is re-tuned), every model is
refitted on the same folds without one feature family at a time, and blended with the stack's weights
and method; a model family is ablated by blending the stack's other models (their saved OOF, weights
renormalised), which needs no refit. The full stack's row is the stack's own OOF (oof.parquet), checked
to be the blend of its models.

Feature families (disjoint, from the column names the stack was trained on; stage2.members): raw,
engineered, patient_norm, group_norm, ugly_duckling, outlier, age, lesion_count, cnn_cross, and
stage1:<run> (a stage-1 run's probability and its statistics). A model family is `model:<name>`.

Each variant is scored on the pooled OOF and on the hold-out fold (the fold kept out of tuning), with a
patient-bootstrap interval, and its change against the full stack with a paired bootstrap interval (the
same resampled patients score both). The hold-out column is for reading, not for choosing: picking
features on it would spend the one untouched score.

With REPEATS=n (`make ablate REPEATS=5`) one split no longer decides: the full stack and every variant
are refitted (same tuned parameters, same weights) on the n repeated patient-grouped splits of `make
compare` (fold seeds folds.seed+1 .. folds.seed+n), and each family's change is the mean over repeats of
the paired difference variant - full, with its 95% t-interval, a paired t-test and a Wilcoxon test
(stage2.compare.paired); the stage-1 OOF columns stay those of the original folds. Written as the same
set, with ablation_repeats.csv (every split's scores) added.

Written as one set into the stack folder: ablation.csv, ablation.md, ablation.png, ablation.json (the
manifest: what was ablated, from which stack). A new `make stack` replaces the folder, ablation included.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from foldstack import metrics
from foldstack import prediction_tables as pt
from foldstack.config import build_config
from foldstack.errors import ConfigError, DataError
from foldstack.folds import load_folds
from foldstack.progress import say
from foldstack.runs import StackRun, model_pred_columns
from foldstack.stage2.ablate_report import write_one_split, write_repeated
from foldstack.stage2.blend import blend_oof
from foldstack.stage2.compare import metric_key, paired, repeat_folds
from foldstack.stage2.config import StackConfig
from foldstack.stage2.inputs import Matrices, build_matrices
from foldstack.stage2.members import column_families
from foldstack.stage2.models import fit_folds


def stack_config(run: StackRun, runs_dir: str) -> StackConfig:
    """The config the stack was trained with (its config.yaml), pointed at runs_dir."""
    if not run.config.exists():
        raise DataError(f"{run.config} is missing: no finished stack in {run.dir}; run `make stack` first")
    return build_config(StackConfig, [run.config], [f"runs_dir={runs_dir}"])


def choose(asked: list[str] | None, offered: list[str]) -> list[str]:
    """The families to ablate: all offered, or those asked for (each must be offered)."""
    if not asked:
        return offered
    unknown = [a for a in asked if a not in offered]
    if unknown:
        raise ConfigError(
            f"FAMILIES: no family {unknown} in this stack; its families are {', '.join(offered)} "
            f"(e.g. `make ablate FAMILIES={offered[0]}`)"
        )
    return list(dict.fromkeys(asked))


def _model_oofs(cfg: StackConfig, oof: pd.DataFrame, path: Path) -> dict[str, np.ndarray]:
    out = {}
    for spec in cfg.models:
        cols = model_pred_columns(cfg.pred_columns, spec.name)
        missing = [c for c in cols if c not in oof.columns]
        if missing:
            raise DataError(f"{path}: no column(s) {missing} (model {spec.name}'s OOF); re-run `make stack`")
        v = oof[cols].to_numpy(dtype=np.float64)
        out[spec.name] = v[:, 0] if v.shape[1] == 1 else v
    return out


def _scores(cfg: StackConfig, y, p, base, groups, hold, n_boot: int, seed: int) -> dict:
    """Pooled OOF and hold-out: metric with interval, and (base given) the paired change against base."""
    out = {}
    for where, rows in (("oof", slice(None)), ("holdout", hold)):
        ci = metrics.bootstrap_ci(y[rows], p[rows], groups[rows], cfg.metric, n_boot, seed=seed)
        out |= {where: ci["point"], f"{where}_low": ci["low"], f"{where}_high": ci["high"]}
        if base is not None:
            d = metrics.bootstrap_delta_ci(
                y[rows], base[rows], p[rows], groups[rows], cfg.metric, n_boot, seed=seed
            )
            out |= {
                f"{where}_change": d["point"],
                f"{where}_change_low": d["low"],
                f"{where}_change_high": d["high"],
            }
    return out


def _checked_inputs(
    cfg: StackConfig, run: StackRun, data_dir: Path
) -> tuple[Matrices, pd.DataFrame, list[str]]:
    """The stack's matrices rebuilt now and its oof.parquet, refused when either differs from what the
    stack was trained on; and the stage-1 runs it stacked."""
    inputs = run.read_inputs()
    m, _, _ = build_matrices(cfg, data_dir, inputs.stage1_runs)
    if list(m.X.columns) != inputs.columns:
        raise DataError(
            f"{run.inputs}: the features built now differ from those the stack was trained "
            f"on (data, features or stage-1 runs changed since); re-run `make stack` before `make ablate`"
        )
    oof = pd.read_parquet(run.oof)
    if oof["id"].astype(str).tolist() != m.train_ids:
        raise DataError(f"{run.oof}: its ids differ from the current train rows; re-run `make stack`")
    return m, oof, inputs.stage1_runs


def _dropped(fam: str, fams: dict[str, list[str]]) -> str:
    """What a variant leaves out, for the table: a model, or a family's column count."""
    return f"model {fam.split(':', 1)[1]}" if fam.startswith("model:") else f"{len(fams[fam])} column(s)"


def _without_model(
    cfg: StackConfig, m: Matrices, models: dict, weights: dict, name: str, fold: np.ndarray | None = None
) -> np.ndarray:
    """The blend of the other models (equal weights when the dropped one held all the weight)."""
    rest = {n: p for n, p in models.items() if n != name}
    w = {n: weights[n] for n in rest}
    if sum(w.values()) <= 0:
        w = {n: 1.0 for n in rest}
    return blend_oof(cfg.blend.method, rest, m.y, m.fold if fold is None else fold, w)


def _refit(
    cfg: StackConfig, m: Matrices, result: dict, X: pd.DataFrame, fold: np.ndarray, label: str
) -> dict[str, np.ndarray]:
    """Every model's OOF on `fold`, refitted with its tuned parameters on its member columns of X."""
    out = {}
    for spec in cfg.models:
        sampled = result["models"][spec.name].get("best_params", {})
        out[spec.name], _, _ = fit_folds(
            spec,
            sampled,
            X[[c for c in m.columns_of(spec) if c in X.columns]],
            m.y,
            fold,
            None,
            cfg.tuning.seed,
            n_classes=cfg.n_classes,
            label=f"{label}: {spec.name}",
        )
    return out


def _without_columns(
    cfg: StackConfig,
    m: Matrices,
    result: dict,
    weights: dict,
    fam: str,
    cols: list[str],
    fold: np.ndarray | None = None,
):
    """Every model refitted with its tuned parameters on the features without `cols`, then blended."""
    X = m.X.drop(columns=cols)
    if X.shape[1] == 0:
        raise DataError(f"without family {fam} the stack has no feature left; ablate another family")
    fold = m.fold if fold is None else fold
    variant = _refit(cfg, m, result, X, fold, f"ablate without {fam}")
    return blend_oof(cfg.blend.method, variant, m.y, fold, weights), X.shape[1]


def _setup(cfg: StackConfig, run: StackRun, data_dir: Path, asked: list[str] | None):
    """What both modes start from: the stack's metrics, matrices, model OOFs and weights (checked to
    reproduce its blend), the families by column, the chosen variants."""
    result = run.read_metrics()  # refuses a stack set that was changed
    m, oof, stage1_runs = _checked_inputs(cfg, run, data_dir)
    models = _model_oofs(cfg, oof, run.oof)
    weights = result.get("blend", {}).get("weights") or cfg.blend.fixed() or {n: 1.0 for n in models}
    full = blend_oof(cfg.blend.method, models, m.y, m.fold, weights)
    saved = oof[cfg.pred_columns].to_numpy(dtype=np.float64)
    if not np.allclose(full, saved[:, 0] if saved.shape[1] == 1 else saved, atol=1e-9):
        raise DataError(f"{run.oof}: pred is not the blend of its models' OOF; re-run `make stack`")
    fams = column_families(list(m.X.columns), stage1_runs)
    chosen = choose(asked, list(fams) + ([f"model:{n}" for n in models] if len(models) > 1 else []))
    return result, m, models, weights, full, fams, chosen


def run_ablation(
    cfg: StackConfig,
    run: StackRun,
    data_dir: Path,
    asked: list[str] | None = None,
    n_boot: int | None = None,
) -> pd.DataFrame:
    """Refit/re-blend each variant, score it, write the ablation set; return the table."""
    t0 = time.time()
    result, m, models, weights, full, fams, chosen = _setup(cfg, run, data_dir, asked)
    groups = load_folds(cfg)[0]["group"].astype(str).to_numpy()
    holdout = int(result["stack"]["holdout_fold"])
    hold, n_boot, seed = m.fold == holdout, n_boot or cfg.leaderboard.n_boot, cfg.leaderboard.seed
    rows = [
        {"variant": "full stack", "dropped": "", "n_features": m.X.shape[1], "seconds": 0.0}
        | _scores(cfg, m.y, full, None, groups, hold, n_boot, seed)
    ]
    for fam in chosen:
        t = time.perf_counter()
        if fam.startswith("model:"):
            name = fam.split(":", 1)[1]
            p, n_feat = _without_model(cfg, m, models, weights, name), m.X.shape[1]
        else:
            p, n_feat = _without_columns(cfg, m, result, weights, fam, fams[fam])
        dropped = _dropped(fam, fams)
        seconds = round(time.perf_counter() - t, 1)
        r = {"variant": f"without {fam}", "dropped": dropped, "n_features": n_feat, "seconds": seconds}
        rows.append(r | _scores(cfg, m.y, p, full, groups, hold, n_boot, seed))
        r = rows[-1]
        say(
            f"ablate without {fam}: OOF {cfg.metric} {r['oof']:.4f} (change {r['oof_change']:+.4f}), "
            f"hold-out {r['holdout']:.4f} ({r['holdout_change']:+.4f}); {seconds:.1f} s"
        )
    table = pd.DataFrame(rows)
    write_one_split(cfg, run, table, chosen, weights, holdout, n_boot, time.time() - t0)
    return table


def run_repeated_ablation(
    cfg: StackConfig, run: StackRun, data_dir: Path, asked: list[str] | None, repeats: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The full stack and each variant refitted on `repeats` repeated splits; (summary per variant,
    every split's scores), written as the ablation set."""
    if repeats < 2:
        raise ConfigError(f"REPEATS={repeats}: a repeated ablation needs at least 2 repeated splits")
    t0 = time.time()
    result, m, _, weights, _, fams, chosen = _setup(cfg, run, data_dir, asked)
    key = metric_key(cfg)
    rows, seconds = [], dict.fromkeys(["full stack", *chosen], 0.0)
    n_features = {"full stack": m.X.shape[1]}
    for r, (seed, fold) in enumerate(repeat_folds(cfg, m, repeats)):
        label = f"repeat {r + 1}/{repeats} (fold seed {seed})"
        t = time.perf_counter()
        models = _refit(cfg, m, result, m.X, fold, f"{label} full stack")
        full = float(pt.headline(cfg, m.y, blend_oof(cfg.blend.method, models, m.y, fold, weights))[key])
        seconds["full stack"] += time.perf_counter() - t
        rows.append({"variant": "full stack", "repeat": r + 1, "fold_seed": seed, key: full})
        for fam in chosen:
            t = time.perf_counter()
            if fam.startswith("model:"):
                p = _without_model(cfg, m, models, weights, fam.split(":", 1)[1], fold)
                n_features[fam] = m.X.shape[1]
            else:
                p, n_features[fam] = _without_columns(cfg, m, result, weights, fam, fams[fam], fold)
            score = float(pt.headline(cfg, m.y, p)[key])
            seconds[fam] += time.perf_counter() - t
            rows.append({"variant": f"without {fam}", "repeat": r + 1, "fold_seed": seed, key: score})
            say(f"{label}: without {fam} {score:.4f} (full stack {full:.4f}, change {score - full:+.4f})")
    per_split = pd.DataFrame(rows)
    table = _repeated_summary(per_split, key, chosen, fams, n_features, seconds)
    write_repeated(cfg, run, table, per_split, chosen, weights, time.time() - t0)
    return table, per_split


def _repeated_summary(
    per_split: pd.DataFrame, key: str, chosen: list[str], fams: dict, n_features: dict, seconds: dict
) -> pd.DataFrame:
    """One row per variant: its mean over repeats and (not the full stack) the paired change against
    the full stack (variant - full) with its 95% t-interval and tests."""
    full_scores = per_split.loc[per_split["variant"] == "full stack", key].to_numpy()
    rows = [
        {
            "variant": "full stack",
            "dropped": "",
            "n_features": n_features["full stack"],
            "mean": float(full_scores.mean()),
            "seconds": round(seconds["full stack"], 1),
        }
    ]
    for fam in chosen:
        v = per_split.loc[per_split["variant"] == f"without {fam}", key].to_numpy()
        d = paired(full_scores, v)
        rows.append(
            {
                "variant": f"without {fam}",
                "dropped": _dropped(fam, fams),
                "n_features": n_features[fam],
                "mean": float(v.mean()),
                "change": d["mean_diff"],
                "change_low": d["ci95"][0],
                "change_high": d["ci95"][1],
                "p_ttest": d["p_ttest"],
                "p_wilcoxon": d["p_wilcoxon"],
                "seconds": round(seconds[fam], 1),
            }
        )
    return pd.DataFrame(rows)
