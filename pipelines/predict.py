"""make predict DATA=dir: trained artifacts -> a submission for any folder in the Kaggle layout."""

from __future__ import annotations

from foldstack.cli import base_parser, run_main
from foldstack.commands import submit
from foldstack.stage2.config import DEFAULT_STACK


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--stack", default=DEFAULT_STACK, help="stack run under runs/<comp>/stack/")
    p.add_argument(
        "--out", default="", help="CSV path (default: submissions/<comp>/predict/<UTC>_<stack>.csv)"
    )
    a = p.parse_args(argv)
    return submit.predict(a.comp, a.stack, a.overrides, a.data, a.out)


if __name__ == "__main__":
    run_main(main)
