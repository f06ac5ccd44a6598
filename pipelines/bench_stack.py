"""make bench-stack: wall time and peak memory of stage-2 features and one 5-fold LightGBM fit, 400k rows."""

from __future__ import annotations

from foldstack.cli import base_parser, run_main
from foldstack.commands import stage2
from foldstack.stage2.config import DEFAULT_STACK


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--stack", default=DEFAULT_STACK)
    p.add_argument("--rows", type=int, default=400_000)
    a = p.parse_args(argv)
    return stage2.bench(a.comp, a.stack, a.overrides, a.rows)


if __name__ == "__main__":
    run_main(main)
