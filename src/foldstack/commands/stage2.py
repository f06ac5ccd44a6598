"""make stack, make ablate, make bench-stack."""

from __future__ import annotations

import json

from foldstack import artifacts
from foldstack.cli import competition, resolve_data
from foldstack.runs import (
    ABLATION_CSV,
    ABLATION_MD,
    ABLATION_PNG,
    ABLATION_REPEATS_CSV,
    COMPARE_CSV,
    COMPARE_JSON,
    COMPARE_MD,
    COMPARE_PNG,
    Runs,
)
from foldstack.stage2.ablate import run_ablation, run_repeated_ablation, stack_config
from foldstack.stage2.bench import bench_stack
from foldstack.stage2.compare import compare as compare_stacks
from foldstack.stage2.config import StackConfig, load_stack_config
from foldstack.stage2.run import run_stack

BENCH_TARGETS = {
    "feature_seconds": 60,
    "fit_5fold_seconds": 300,
    "fit_5fold_every_row_one_seed_seconds": 300,
    "peak_rss_gb": 6,
}


def stack_lines(cfg: StackConfig, r: dict) -> list[str]:
    """What make stack prints of its result: OOF scores of the stack, each model, tabular only and each
    CNN, the hold-out fold's scores, tuning and blend weights, then any warning."""
    names = ("macro_auc", "balanced_accuracy") if cfg.multiclass else ("pauc", "auc")
    rows = [(f"stack ({cfg.blend.method} blend)", r["stack"])]
    rows += [(f"  {n}", v) for n, v in r["models"].items()]
    rows += [("tabular only", r["tabular_only"])] + [(f"CNN {n}", v) for n, v in r["cnn"].items()]
    width = max(len(label) for label, _ in rows) + 1
    head = " ".join(f"{'OOF ' + n:>22}" for n in names) + (f" {'F1@0.5':>7}" if not cfg.multiclass else "")
    out = [f"{'':{width}} {head}"]
    for label, v in rows:
        f1 = f" {v['f1_at_0.5']:7.4f}" if "f1_at_0.5" in v else ""
        out.append(
            f"{label:{width}} " + " ".join(f"{v.get('oof_' + n, float('nan')):22.4f}" for n in names) + f1
        )
    s = r["stack"]
    hold = ", ".join(f"{n} {s['holdout_' + n]:.4f}" for n in names)
    out.append(f"untouched hold-out fold {s['holdout_fold']}: {hold}")
    tuned = {n: {"tuned_cv": v["tuned_cv"], "trials": v["trials_in_study"]} for n, v in r["models"].items()}
    out.append(json.dumps(tuned))
    b = r["blend"]
    line = f"blend weights ({b['weights_from']}): " + ", ".join(
        f"{n} {w:.2f}" for n, w in b["weights"].items()
    )
    if "equal_weights_for_comparison" in b:
        eq = b["equal_weights_for_comparison"]["holdout_" + names[0]]
        line += f"; equal weights would score hold-out {names[0]} {eq:.4f}"
    out.append(line)
    if r.get("stage1_shift", {}).get("warning"):
        out.append(f"WARNING: stage-1 feature shift: {r['stage1_shift']['warning']}")
    if r.get("score_is_optimistic"):
        out.append(
            f"WARNING: optimistic score: stage-1 input(s) {r['optimistic_inputs']} picked their epoch on "
            f"the scored fold (features.allow_optimistic=true); metrics.json says score_is_optimistic"
        )
    if r.get("suspicious_score"):
        out.append(f"WARNING: suspicious score: {r['suspicious_score']}")
    return out


def stack(
    comp: str,
    name: str,
    overrides: str = "",
    data: str | None = None,
    models: str = "",
    n_trials: int | None = None,
    timeout: float | None = None,
    workers: int = 1,
) -> int:
    """Stage 2 on the finished stage-1 runs (`models`: a comma-separated subset), tuned, blended, written."""
    extra = f" tuning.timeout={timeout}" if timeout else ""
    cfg = load_stack_config(comp, name, overrides + extra)
    data_dir = resolve_data(data, cfg)
    chosen = [m for m in models.split(",") if m] or None
    r = run_stack(cfg, data_dir, chosen, workers=workers, n_trials=n_trials)
    print("\n".join(stack_lines(cfg, r)))
    print(f"wrote {Runs.of(cfg).stack(cfg.run).dir}/")
    return 0


def ablate(
    comp: str,
    name: str,
    overrides: str = "",
    data: str | None = None,
    families: str = "",
    n_boot: int | None = None,
    repeats: int | None = None,
) -> int:
    """What each feature family and model of the finished stack `name` adds (the ablation set): on its
    own folds with bootstrap intervals, or (repeats given) on repeated splits with paired tests."""
    comp_cfg, data_dir = competition(comp, overrides, data)
    run = Runs.of(comp_cfg).stack(name)
    cfg = stack_config(run, comp_cfg.runs_dir)
    asked = [f.strip() for f in families.split(",") if f.strip()] or None
    if repeats is None:
        table = run_ablation(cfg, run, data_dir, asked, n_boot)
        files = f"{ABLATION_CSV}, {ABLATION_MD}, {ABLATION_PNG}"
    else:
        table, _ = run_repeated_ablation(cfg, run, data_dir, asked, repeats)
        files = f"{ABLATION_CSV}, {ABLATION_REPEATS_CSV}, {ABLATION_MD}, {ABLATION_PNG}"
    print((run.dir / ABLATION_MD).read_text())
    print(f"wrote {run.dir}/{files} ({len(table) - 1} variant(s))")
    return 0


def bench(comp: str, name: str, overrides: str = "", rows: int = 400_000) -> int:
    """Wall time and peak memory of stage-2 features and one 5-fold LightGBM fit on `rows` rows."""
    cfg = load_stack_config(comp, name, overrides)
    r = bench_stack(cfg, rows)
    print(
        f"{r['rows']} rows ({r['positives']} positives, {r['patients']} patients), {r['features']} features"
    )
    fp = r["fit_params"]
    print(
        f"  LightGBM '{r['fit_model']}': {fp['n_estimators']} trees, neg_ratio {fp['neg_ratio']}, "
        f"seeds {fp['seeds']}"
    )
    print(f"  leak check of every feature (s)  {r['leak_check_seconds']:8.1f}")
    for key, label in (
        ("feature_seconds", "feature building (s)"),
        ("fit_5fold_seconds", "5-fold LightGBM fit (s)"),
        ("fit_5fold_every_row_one_seed_seconds", "  same, every row, 1 seed (s)"),
        ("peak_rss_gb", "peak memory (GB)"),
    ):
        ok = "ok" if r[key] <= BENCH_TARGETS[key] else "OVER TARGET"
        print(f"  {label:<28} {r[key]:8.1f}   target < {BENCH_TARGETS[key]}  {ok}")
    path = Runs.of(cfg).bench(f"stack_{cfg.run}_{r['rows']}")
    artifacts.write_json(path, r)
    print(f"wrote {path}\n{json.dumps(r)}")
    return 0


def compare(
    comp: str,
    a: str,
    b: str,
    overrides: str = "",
    data: str | None = None,
    a_set: str = "",
    b_set: str = "",
    repeats: int = 5,
    by: str = "",
    models: str = "",
    params: tuple[str, str] = ("", ""),
) -> int:
    """Two stack configs on `repeats` repeated patient-grouped splits (and leave-one-BY-out): the paired
    difference B - A with its interval and tests."""
    a_cfg = load_stack_config(comp, a, f"{overrides} {a_set}")
    b_cfg = load_stack_config(comp, b, f"{overrides} {b_set}")
    data_dir = resolve_data(data, a_cfg)
    chosen = [m for m in models.split(",") if m] or None
    s = compare_stacks(a_cfg, b_cfg, data_dir, repeats, by or None, chosen, params)
    out = Runs.of(a_cfg).compare(a_cfg.run, b_cfg.run)
    print((out / COMPARE_MD).read_text())
    print(f"wrote {out}/ ({COMPARE_CSV}, {COMPARE_MD}, {COMPARE_PNG}, {COMPARE_JSON}); {s['seconds']} s")
    return 0
