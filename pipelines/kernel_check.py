"""make kernel-check [STACK=lgb_xgb_cb] [KERNEL_PYTHON=own]: the kernel `make submit` would upload, run
offline on Kaggle's package versions in a Kaggle-like root; it must write what `make predict` writes.

The venv of Kaggle's versions (configs/kaggle-image/requirements.txt) is created once in .kaggle-venv/
(several GB, several minutes) and reused. KERNEL_PYTHON=own runs the kernel on this project's venv instead
(what CI does); KERNEL_PYTHON=/path/to/python on any interpreter.
"""

from __future__ import annotations

import sys

from foldstack import kaggle_cli
from foldstack.bundle import build_submission_folders, check_stack_source
from foldstack.cli import base_parser, competition_from_args, run_main
from foldstack.errors import DataError
from foldstack.kernel_check import (
    check_kernel,
    estimate_lines,
    report_lines,
    root_dir,
    runtime_estimate,
    staging_dir,
)


def owner_or_placeholder() -> str:
    try:
        return kaggle_cli.check_credentials() or "YOUR-USERNAME"
    except kaggle_cli.KaggleError:
        return "YOUR-USERNAME"


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--stack", default="lgb_xgb_cb", help="stack run under runs/<comp>/stack/")
    p.add_argument(
        "--python", default="", help="'' Kaggle's versions (cached venv), 'own', or an interpreter"
    )
    p.add_argument("--timeout", type=float, default=3600, help="seconds the kernel may run")
    args = p.parse_args(argv)
    cfg, data_dir = competition_from_args(args)
    if not cfg.code_competition:
        raise DataError(
            f"{cfg.name} is a file competition: `make submit` uploads the CSV and no kernel runs on Kaggle, "
            "so there is nothing to check"
        )
    stack_dir = check_stack_source(cfg, cfg.run_dir / "stack" / args.stack / "test.parquet")
    bundle, kernel = build_submission_folders(cfg, stack_dir, owner_or_placeholder(), staging_dir(cfg))
    print(f"bundle: {bundle}  kernel: {kernel}", flush=True)
    print("\n".join(estimate_lines(runtime_estimate(cfg, stack_dir, cfg.run_dir.parent))), flush=True)
    report = check_kernel(
        cfg, data_dir, stack_dir, cfg.run_dir.parent, bundle, kernel, root_dir(cfg), args.python, args.timeout
    )
    print("\n".join(report_lines(report)))
    print(f"report: {root_dir(cfg) / 'report.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
