"""make oof MODEL=name: stage 1, k-fold CNNs -> runs/<comp>/oof/<run>/ (OOF + per-fold test predictions)."""

from __future__ import annotations

from foldstack.cli import base_parser, run_main
from foldstack.commands import stage1


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--model", required=True, help="model config name (configs/models/)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--folds", default="", help="comma-separated folds to train (default: all), e.g. 0,3")
    p.add_argument("--seeds", default="", help="comma-separated train seeds: one run each + their mean")
    a = p.parse_args(argv)
    return stage1.oof(
        a.comp, a.model, a.overrides, a.data, progress=not a.no_progress, folds=a.folds, seeds=a.seeds
    )


if __name__ == "__main__":
    run_main(main)
