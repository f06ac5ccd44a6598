"""make cache MODEL=name: decode + resize every train and test image once, at the model's input size.

Writes runs/<comp>/cache/<split>_<size>px_<rule>_<hash>.npy (+ .json): a uint8 memory-mapped array that
stage 1 reads instead of decoding the images again every epoch. A cache that is still valid is reused.
"""

from __future__ import annotations

from foldstack.cli import base_parser, run_main
from foldstack.commands import stage1


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--model", required=True, help="model config name (configs/models/): sets the image size")
    p.add_argument("--workers", type=int, default=None, help="build processes (default: all cores)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    return stage1.cache(a.comp, a.model, a.overrides, a.data, progress=not a.no_progress, workers=a.workers)


if __name__ == "__main__":
    run_main(main)
