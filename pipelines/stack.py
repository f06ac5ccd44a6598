"""make stack [STACK=lgb_xgb_cb]: stage 2, GBDTs on features + stage-1 OOF, tuned by Optuna, blended."""

from __future__ import annotations

import json

from foldstack import threads

threads.passive_openmp()  # idle OpenMP threads sleep: must precede lightgbm/xgboost/torch loading OpenMP

from foldstack.cli import base_parser, data_dir, run_main  # noqa: E402
from foldstack.stage2.config import load_stack_config  # noqa: E402
from foldstack.stage2.run import run_stack  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--stack", default="lgb_xgb_cb", help="stack config name (configs/stack/)")
    p.add_argument("--models", default="", help="comma-separated stage-1 runs (default: all finished ones)")
    p.add_argument(
        "--n-trials",
        type=int,
        default=None,
        help="COMPLETE trials each model's study should hold; a rerun adds only the missing ones "
        "(default tuning.n_trials)",
    )
    p.add_argument("--timeout", type=float, default=None, help="seconds per model study")
    p.add_argument(
        "--workers", type=int, default=1, help="tuning processes sharing one study (and this machine's cores)"
    )
    args = p.parse_args(argv)
    extra = f" tuning.timeout={args.timeout}" if args.timeout else ""
    cfg = load_stack_config(args.comp, args.stack, args.overrides + extra)
    data = data_dir(args, cfg)
    models = [m for m in args.models.split(",") if m] or None
    r = run_stack(cfg, data, models, workers=args.workers, n_trials=args.n_trials)
    names = ("macro_auc", "balanced_accuracy") if cfg.multiclass else ("pauc", "auc")
    rows = [(f"stack ({cfg.blend.method} blend)", r["stack"])]
    rows += [(f"  {n}", v) for n, v in r["models"].items()]
    rows += [("tabular only", r["tabular_only"])] + [(f"CNN {n}", v) for n, v in r["cnn"].items()]
    width = max(len(label) for label, _ in rows) + 1
    print(
        f"{'':{width}} "
        + " ".join(f"{'OOF ' + n:>22}" for n in names)
        + (f" {'F1@0.5':>7}" if not cfg.multiclass else "")
    )
    for label, v in rows:
        f1 = f" {v['f1_at_0.5']:7.4f}" if "f1_at_0.5" in v else ""
        print(f"{label:{width}} " + " ".join(f"{v.get('oof_' + n, float('nan')):22.4f}" for n in names) + f1)
    s = r["stack"]
    print(
        f"untouched hold-out fold {s['holdout_fold']}: "
        + ", ".join(f"{n} {s['holdout_' + n]:.4f}" for n in names)
    )
    print(
        json.dumps(
            {n: {"tuned_cv": v["tuned_cv"], "trials": v["trials_in_study"]} for n, v in r["models"].items()}
        )
    )
    b = r["blend"]
    print(
        f"blend weights ({b['weights_from']}): "
        + ", ".join(f"{n} {w:.2f}" for n, w in b["weights"].items())
        + (
            f"; equal weights would score hold-out {names[0]} "
            f"{b['equal_weights_for_comparison']['holdout_' + names[0]]:.4f}"
            if "equal_weights_for_comparison" in b
            else ""
        )
    )
    if r.get("stage1_shift", {}).get("warning"):
        print(f"WARNING: stage-1 feature shift: {r['stage1_shift']['warning']}")
    if r.get("score_is_optimistic"):
        print(
            f"WARNING: optimistic score: stage-1 input(s) {r['optimistic_inputs']} picked their epoch on "
            f"the scored fold (features.allow_optimistic=true); metrics.json says score_is_optimistic"
        )
    if r.get("suspicious_score"):
        print(f"WARNING: suspicious score: {r['suspicious_score']}")
    print(f"wrote {cfg.run_dir / 'stack' / cfg.run}/")
    return 0


if __name__ == "__main__":
    run_main(main)
