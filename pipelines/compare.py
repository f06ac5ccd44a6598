"""make compare A=<stack config> B=<stack config> [REPEATS=5] [BY=attribution]: decide between two stacks on
repeated patient-grouped splits (paired differences, interval, tests) and leave-one-group-out."""

from __future__ import annotations

from foldstack import threads

threads.passive_openmp()  # idle OpenMP threads sleep: must precede lightgbm/xgboost loading OpenMP

from foldstack.cli import base_parser, run_main  # noqa: E402
from foldstack.commands import stage2  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--a", required=True, help="stack config A (configs/stack/)")
    p.add_argument("--b", required=True, help="stack config B")
    p.add_argument(
        "--a-set", default="", help="overrides for A only, e.g. 'run=lgbm_only only_models=[lgbm]'"
    )
    p.add_argument("--b-set", default="", help="overrides for B only")
    p.add_argument("--repeats", type=int, default=5, help="repeated splits (fold seeds folds.seed+1..)")
    p.add_argument("--by", default="", help="a train column for leave-one-group-out, e.g. attribution")
    p.add_argument("--models", default="", help="comma-separated stage-1 runs (default: all finished ones)")
    p.add_argument("--a-params", default="", help="a finished stack run whose tuned parameters A uses")
    p.add_argument("--b-params", default="", help="a finished stack run whose tuned parameters B uses")
    a = p.parse_args(argv)
    params = (a.a_params, a.b_params)
    return stage2.compare(
        a.comp, a.a, a.b, a.overrides, a.data, a.a_set, a.b_set, a.repeats, a.by, a.models, params
    )


if __name__ == "__main__":
    run_main(main)
