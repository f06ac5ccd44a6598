"""make submit [FROM=runs/.../test.parquet] [DRY_RUN=1]: validate, write the CSV, record it, submit it."""

from __future__ import annotations

from pathlib import Path

from foldstack.cli import base_parser, competition, run_main
from foldstack.submit.flows import Request, Waits, submit


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--from", dest="source", default="", help="a test.parquet (default: the latest stack)")
    p.add_argument("--message", default="", help="submission message")
    p.add_argument("--dry-run", action="store_true", help="print every kaggle command, run none")
    p.add_argument(
        "--force",
        action="store_true",
        help="send again a file an interrupted run was sending; submit a kernel estimated over the limit",
    )
    p.add_argument("--skip-kernel-check", action="store_true", help="upload without make kernel-check")
    p.add_argument("--kernel-python", default="", help="kernel check on '' Kaggle's versions, 'own' venv")
    p.add_argument("--dataset-timeout", type=float, default=Waits.dataset_s, help="s to wait for the bundle")
    p.add_argument("--kernel-timeout", type=float, default=Waits.kernel_s, help="s to wait for the kernel")
    p.add_argument("--score-timeout", type=float, default=Waits.score_s, help="s to wait for the score")
    p.add_argument("--poll", type=float, default=Waits.poll_s, help="s between two status checks")
    a = p.parse_args(argv)
    cfg, data_dir = competition(a.comp, a.overrides, a.data)
    waits = Waits(a.dataset_timeout, a.kernel_timeout, a.score_timeout, a.poll)
    source = Path(a.source) if a.source else None
    req = Request(source, a.message, a.dry_run, a.force, waits, a.kernel_python, a.skip_kernel_check)
    submit(cfg, data_dir, req)
    return 0


if __name__ == "__main__":
    run_main(main)
