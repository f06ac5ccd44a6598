"""make bench-oof MODEL=name: stage-1 images/s, end to end vs model only, and inference with TTA."""

from __future__ import annotations

import json

from foldstack import artifacts
from foldstack.cli import base_parser, data_dir, run_main
from foldstack.data.metadata import read_metadata
from foldstack.folds import folds_paths, make_folds
from foldstack.stage1.bench import bench_oof
from foldstack.stage1.config import load_oof_config


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args(argv)
    cfg = load_oof_config(args.comp, args.model, args.overrides)
    data = data_dir(args, cfg)
    if not folds_paths(cfg)[1].exists():
        make_folds(cfg, read_metadata(cfg, data, "train"), data)
    r = bench_oof(cfg, data, steps=args.steps)
    print(
        f"{r['model']} @ {r['img_size']} px, batch {r['batch_size']}, {r['device']}, amp={r['amp']}, "
        f"channels_last={r['channels_last']}, workers={r['num_workers']}, threads={r['torch_threads']}"
    )
    rows = [
        ("training, end to end (HDF5 -> decode -> augment -> step)", r["train_images_per_s_end_to_end"]),
        ("training, model only (same batch, ready tensors)", r["train_images_per_s_model_only"]),
        ("ratio end-to-end / model-only", r["ratio"]),
        (f"inference with TTA x{r['tta']} (images/s)", r["inference_images_per_s_with_tta"]),
    ]
    for label, value in rows:
        print(f"  {label:<60} {value:10.3f}")
    path = cfg.run_dir / "bench" / f"oof_{cfg.run}_{r['img_size']}px.json"
    artifacts.write_json(path, r)
    print(f"wrote {path}")
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    run_main(main)
