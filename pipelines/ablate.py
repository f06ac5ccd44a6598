"""make ablate [STACK=lgb_xgb_cb] [FAMILIES=raw,model:xgb]: what each feature family and model adds."""

from __future__ import annotations

from foldstack import threads

threads.passive_openmp()  # idle OpenMP threads sleep: must precede lightgbm/xgboost loading OpenMP

from foldstack.cli import base_parser, competition_from_args, run_main  # noqa: E402
from foldstack.stage2.ablate import run_ablation, stack_config  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--stack", default="lgb_xgb_cb", help="the finished stack (runs/<comp>/stack/<name>/)")
    p.add_argument(
        "--families",
        default="",
        help="comma-separated families to ablate (default all): raw, engineered, patient_norm, "
        "lesion_count, stage1:<run>, model:<name>",
    )
    p.add_argument(
        "--n-boot", type=int, default=None, help="bootstrap resamples (default leaderboard.n_boot)"
    )
    args = p.parse_args(argv)
    comp, data_dir = competition_from_args(args)
    stack_dir = comp.run_dir / "stack" / args.stack
    cfg = stack_config(stack_dir, comp.runs_dir)
    asked = [f.strip() for f in args.families.split(",") if f.strip()] or None
    table = run_ablation(cfg, stack_dir, data_dir, asked, args.n_boot)
    print((stack_dir / "ablation.md").read_text())
    print(f"wrote {stack_dir}/ablation.csv, ablation.md, ablation.png ({len(table) - 1} variant(s))")
    return 0


if __name__ == "__main__":
    run_main(main)
