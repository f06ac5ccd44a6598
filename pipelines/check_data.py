"""Check a data folder against the competition layout and print what it holds.

    python pipelines/check_data.py --comp isic2024 --data data/isic2024 [--set ...] [--workers N]

Every image is read and checked (non-empty, JPEG/PNG signature, end marker, decodes) in parallel.

Exit code 0 when the files present are valid, 1 when there are problems.
"""

from __future__ import annotations

from foldstack.cli import base_parser, run_main
from foldstack.commands import data
from foldstack.data.image_check import available_cores


def main(argv: list[str] | None = None) -> int:
    p = base_parser("Check a data folder in the Kaggle layout of a competition.")
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help=f"processes that check the images (default 0: every core this process may use, "
        f"{available_cores()} here)",
    )
    a = p.parse_args(argv)
    if a.workers < 0:
        p.error(f"--workers must be 0 (every core) or more, got {a.workers}")
    return data.check(a.comp, a.overrides, a.data, workers=a.workers)


if __name__ == "__main__":
    run_main(main)
