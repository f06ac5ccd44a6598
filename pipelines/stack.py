"""make stack [STACK=lgb_xgb_cb]: stage 2, GBDTs on features + stage-1 OOF, tuned by Optuna, blended."""

from __future__ import annotations

from foldstack import threads

threads.passive_openmp()  # idle OpenMP threads sleep: must precede lightgbm/xgboost/torch loading OpenMP

from foldstack.cli import base_parser, run_main  # noqa: E402
from foldstack.commands import stage2  # noqa: E402
from foldstack.stage2.config import DEFAULT_STACK  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--stack", default=DEFAULT_STACK, help="stack config name (configs/stack/)")
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
    a = p.parse_args(argv)
    return stage2.stack(a.comp, a.stack, a.overrides, a.data, a.models, a.n_trials, a.timeout, a.workers)


if __name__ == "__main__":
    run_main(main)
