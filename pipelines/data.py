"""make data: write the embedded synthetic competition in the real Kaggle layout.

`--scale isic2024` (make data SCALE=isic2024) writes instead the ISIC 2024-size synthetic competition
(401,059 train rows, 393 positives, 1,042 patients, 1,000 test rows; foldstack.synth.scale) into
--data, default data/bench-isic2024; a folder already complete for the same parameters is kept.
"""

from __future__ import annotations

import json
from pathlib import Path

from foldstack.cli import base_parser, competition_from_args, run_main
from foldstack.synth.generate import generate
from foldstack.synth.scale import DEFAULT_ROOT, write_isic2024_scale

SCALES = ("isic2024",)


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--workers", type=int, default=None, help="image rendering processes")
    p.add_argument("--scale", choices=SCALES, default=None, help="the competition's real size (benchmarks)")
    args = p.parse_args(argv)
    if args.scale:
        if args.comp != args.scale:
            p.error(f"--scale {args.scale} writes the {args.scale} layout: use --comp {args.scale}")
        out = Path(args.data) if args.data else DEFAULT_ROOT
        record = write_isic2024_scale(out)
        how = "kept the complete" if record["skipped"] else "wrote"
        print(f"{how} {args.scale}-size synthetic competition in {out}/")
        print(json.dumps({k: v for k, v in record.items() if k != "file_bytes"}, indent=2))
        return 0
    cfg, data_dir = competition_from_args(args)
    summary = generate(cfg, data_dir, workers=args.workers)
    print(f"wrote synthetic {cfg.name} to {data_dir}/")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    run_main(main)
