"""make data: write the embedded synthetic competition in the real Kaggle layout.

`--scale isic2024` (make data SCALE=isic2024) writes instead the ISIC 2024-size synthetic competition
(401,059 train rows, 393 positives, 1,042 patients, 1,000 test rows; foldstack.synth.scale) into
--data, default data/bench-isic2024; a folder already complete for the same parameters is kept.
"""

from __future__ import annotations

from foldstack.cli import base_parser, run_main
from foldstack.commands import data


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--workers", type=int, default=None, help="image rendering processes")
    p.add_argument(
        "--scale", choices=("isic2024",), default=None, help="the competition's real size (benchmarks)"
    )
    a = p.parse_args(argv)
    if a.scale and a.comp != a.scale:
        p.error(f"--scale {a.scale} writes the {a.scale} layout: use --comp {a.scale}")
    return data.data(a.comp, a.overrides, a.data, workers=a.workers, scale=a.scale)


if __name__ == "__main__":
    run_main(main)
