"""make ablate [STACK=lgb_xgb_cb] [FAMILIES=raw,model:xgb] [REPEATS=5]: what each family and model adds."""

from __future__ import annotations

from foldstack import threads

threads.passive_openmp()  # idle OpenMP threads sleep: must precede lightgbm/xgboost loading OpenMP

from foldstack.cli import base_parser, run_main  # noqa: E402
from foldstack.commands import stage2  # noqa: E402
from foldstack.stage2.config import DEFAULT_STACK  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--stack", default=DEFAULT_STACK, help="the finished stack (runs/<comp>/stack/<name>/)")
    p.add_argument(
        "--families",
        default="",
        help="comma-separated families to ablate (default all): raw, engineered, patient_norm, "
        "lesion_count, stage1:<run>, model:<name>",
    )
    p.add_argument(
        "--n-boot", type=int, default=None, help="bootstrap resamples (default leaderboard.n_boot)"
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="refit on this many repeated splits and test each change (default: the stack's own folds)",
    )
    a = p.parse_args(argv)
    return stage2.ablate(a.comp, a.stack, a.overrides, a.data, a.families, a.n_boot, a.repeats)


if __name__ == "__main__":
    run_main(main)
