"""make folds: patient-grouped, target-stratified folds written once to runs/<comp>/folds.csv."""

from __future__ import annotations

from foldstack.cli import base_parser, run_main
from foldstack.commands import data


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--force", action="store_true", help="replace folds made for other data, k or seed")
    a = p.parse_args(argv)
    return data.folds(a.comp, a.overrides, a.data, force=a.force)


if __name__ == "__main__":
    run_main(main)
