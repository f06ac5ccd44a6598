"""make data: write the embedded synthetic competition in the real Kaggle layout."""

from __future__ import annotations

import json

from foldstack.cli import base_parser, competition_from_args, run_main
from foldstack.synth.generate import generate


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--workers", type=int, default=None, help="image rendering processes")
    args = p.parse_args(argv)
    cfg, data_dir = competition_from_args(args)
    summary = generate(cfg, data_dir, workers=args.workers)
    print(f"wrote synthetic {cfg.name} to {data_dir}/")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    run_main(main)
