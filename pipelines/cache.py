"""make cache MODEL=name: decode + resize every train and test image once, at the model's input size.

Writes runs/<comp>/cache/<split>_<size>px_<rule>_<hash>.npy (+ .json): a uint8 memory-mapped array that
stage 1 reads instead of decoding the images again every epoch. A cache that is still valid is reused.
"""

from __future__ import annotations

from foldstack.cli import base_parser, data_dir, run_main
from foldstack.data.cache import image_size, open_cache, split_ids
from foldstack.stage1.config import load_oof_config


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--model", required=True, help="model config name (configs/models/): sets the image size")
    p.add_argument("--workers", type=int, default=None, help="build processes (default: all cores)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    cfg = load_oof_config(args.comp, args.model, args.overrides)
    data = data_dir(args, cfg)
    size = image_size(cfg)
    for split in ("train", "test"):
        cache = open_cache(
            cfg, data, split, split_ids(cfg, data, split), size, not args.no_progress, args.workers
        )
        state = "built" if cache.built else "up to date"
        print(f"{split}: {len(cache):,} images at {size}x{size} px, {state}: {cache.path}")
    return 0


if __name__ == "__main__":
    run_main(main)
