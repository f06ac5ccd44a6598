"""make kernel-check [STACK=lgb_xgb_cb] [KERNEL_PYTHON=own]: the kernel `make submit` would upload, run
offline on Kaggle's package versions in a Kaggle-like root; it must write what `make predict` writes,
stage by stage.

The venv of Kaggle's versions (configs/kaggle-image/requirements.txt) is created once in .kaggle-venv/
(several GB, several minutes) and reused. KERNEL_PYTHON=own runs the kernel on this project's venv instead
(what CI does); KERNEL_PYTHON=/path/to/python on any interpreter.
"""

from __future__ import annotations

from foldstack.cli import base_parser, run_main
from foldstack.commands import submit
from foldstack.stage2.config import DEFAULT_STACK


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--stack", default=DEFAULT_STACK, help="stack run under runs/<comp>/stack/")
    p.add_argument(
        "--python", default="", help="'' Kaggle's versions (cached venv), 'own', or an interpreter"
    )
    p.add_argument("--timeout", type=float, default=3600, help="seconds the kernel may run")
    a = p.parse_args(argv)
    return submit.kernel_check(a.comp, a.stack, a.overrides, a.data, a.python, a.timeout)


if __name__ == "__main__":
    run_main(main)
