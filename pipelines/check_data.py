"""Check a data folder against the competition layout and print what it holds.

    python pipelines/check_data.py --comp isic2024 --data data/isic2024 [--set ...] [--sample 16]

Exit code 0 when the files present are valid, 1 when there are problems.
"""

from __future__ import annotations

from foldstack.cli import base_parser, competition_from_args, run_main
from foldstack.data.check import check_data


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("Check a data folder in the Kaggle layout of a competition.")
    parser.add_argument("--sample", type=int, default=16, help="how many images to decode (seeded sample)")
    args = parser.parse_args(argv)
    cfg, data_dir = competition_from_args(args)
    report = check_data(cfg, data_dir, sample=args.sample)
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    run_main(main)
