"""make lb [LABELS=file]: the offline leaderboard of every stage-1 run, stack and submission."""

from __future__ import annotations

from foldstack.cli import base_parser, run_main
from foldstack.commands import submit


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument(
        "--labels", default="", help="test labels CSV (default: DATA/<files.test_labels> if present)"
    )
    a = p.parse_args(argv)
    return submit.lb(a.comp, a.overrides, a.data, a.labels)


if __name__ == "__main__":
    run_main(main)
