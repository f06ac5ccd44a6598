"""make lb [LABELS=file]: the offline leaderboard of every stage-1 run, stack and submission."""

from __future__ import annotations

from pathlib import Path

from foldstack.cli import base_parser, competition_from_args, run_main
from foldstack.leaderboard import leaderboard


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument(
        "--labels", default="", help="test labels CSV (default: DATA/<files.test_labels> if present)"
    )
    args = p.parse_args(argv)
    cfg, data_dir = competition_from_args(args)
    labels: Path | None = Path(args.labels) if args.labels else data_dir / cfg.files.test_labels
    if not args.labels and not labels.is_file():
        labels = None  # no labels file: rank on OOF scores only
    table = leaderboard(cfg, labels)
    folder = Path("submissions") / cfg.name
    print((folder / "leaderboard.md").read_text())
    print(f"wrote {folder}/leaderboard.md, leaderboard.csv, roc.png ({len(table)} entries)")
    return 0


if __name__ == "__main__":
    run_main(main)
