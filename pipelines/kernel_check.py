"""make kernel-check [STACK=lgb_xgb_cb] [KERNEL_PYTHON=own]: the kernel `make submit` would upload, run
offline on Kaggle's package versions in a Kaggle-like root; it must write what `make predict` writes,
stage by stage.

The venv of Kaggle's versions (configs/kaggle-image/requirements.txt) is created once in .kaggle-venv/
(several GB, several minutes) and reused. KERNEL_PYTHON=own runs the kernel on this project's venv instead
(what CI does); KERNEL_PYTHON=/path/to/python on any interpreter.
"""

from __future__ import annotations

from foldstack.cli import base_parser, competition, run_main
from foldstack.stage2.config import DEFAULT_STACK
from foldstack.submit.flows import kernel_check


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--stack", default=DEFAULT_STACK, help="stack run under runs/<comp>/stack/")
    p.add_argument(
        "--python", default="", help="'' Kaggle's versions (cached venv), 'own', or an interpreter"
    )
    p.add_argument("--timeout", type=float, default=3600, help="seconds the kernel may run")
    args = p.parse_args(argv)
    cfg, data_dir = competition(args.comp, args.overrides, args.data)
    kernel_check(cfg, data_dir, args.stack, args.python, args.timeout)
    return 0


if __name__ == "__main__":
    run_main(main)
