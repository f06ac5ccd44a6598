"""make submit [FROM=runs/.../test.parquet] [DRY_RUN=1]: validate, write the CSV, record it, submit it."""

from __future__ import annotations

from foldstack.cli import run_main
from foldstack.commands.submit import submit, submit_parser


def main(argv: list[str] | None = None) -> int:
    return submit(submit_parser(__doc__).parse_args(argv))


if __name__ == "__main__":
    run_main(main)
