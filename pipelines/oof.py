"""make oof MODEL=name: stage 1, k-fold CNNs -> runs/<comp>/oof/<run>/ (OOF + per-fold test predictions)."""

from __future__ import annotations

import json

from foldstack.cli import base_parser, data_dir, run_main
from foldstack.data.metadata import read_metadata
from foldstack.folds import folds_paths, make_folds
from foldstack.stage1.config import load_oof_config
from foldstack.stage1.run import run_oof
from foldstack.stage1.runtime import barrier, make_runtime


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--model", required=True, help="model config name (configs/models/)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--folds", default="", help="comma-separated folds to train (default: all), e.g. 0,3")
    args = p.parse_args(argv)
    cfg = load_oof_config(args.comp, args.model, args.overrides)
    data = data_dir(args, cfg)
    rt = make_runtime(cfg)
    if rt.main and not folds_paths(cfg)[1].exists():
        make_folds(cfg, read_metadata(cfg, data, "train"), data)
    barrier(rt)
    result = run_oof(cfg, data, progress=not args.no_progress, folds=args.folds)
    if result and "missing_folds" not in result:
        scores = [
            k for k in result if k.startswith(("oof_", "fold_")) and k.endswith(("_mean", "auc", "pauc"))
        ]
        keys = (
            *scores,
            "score_is_optimistic",
            "train_images_per_s",
            "inference_images_per_s",
            "wall_seconds_this_call",
        )
        print(json.dumps({k: result[k] for k in keys}, indent=2))
        print(f"wrote {cfg.run_dir / 'oof' / cfg.run}/ (oof.parquet, test.parquet, metrics.json, log.csv)")
    return 0


if __name__ == "__main__":
    run_main(main)
