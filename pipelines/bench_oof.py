"""make bench-oof [MODEL=effnetv2_b1] [SCALE=isic2024]: one fold's real stage-1 work with its wall-time split,
and training images/s end to end vs model only.

With SCALE=isic2024 the data is a synthetic competition of ISIC 2024's size and imbalance (401,059 train
rows, 393 positives, 1,042 patients; data/bench-isic2024, made once) and the runs go to
runs/bench-isic2024, apart from the embedded competition's. Prints, for fold 0 of MODEL's config as
written: images trained, scored and predicted, and the seconds of cache, training, held-out scoring, OOF
and test prediction; then end-to-end vs model-only images/s of each --throughput backbone@size.
"""

from __future__ import annotations

import json
from pathlib import Path

from foldstack import artifacts
from foldstack.cli import base_parser, data_dir, run_main
from foldstack.data.metadata import read_metadata
from foldstack.folds import folds_paths, make_folds
from foldstack.stage1.bench import bench_fold, bench_throughput, fold_split_lines
from foldstack.stage1.config import load_oof_config
from foldstack.synth.scale import ensure_isic2024_scale

THROUGHPUT = "tf_efficientnetv2_b1.in1k@128,resnet18.a1_in1k@64"


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--scale", default="", choices=["", "isic2024"])
    p.add_argument("--steps", type=int, default=30, help="timed training steps per throughput figure")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--no-fold", action="store_true", help="only the throughput figures")
    p.add_argument("--throughput", default=THROUGHPUT, help="backbone@size,... ('' for none)")
    args = p.parse_args(argv)
    overrides = args.overrides
    if args.scale:
        if args.comp != "isic2024":
            p.error("SCALE=isic2024 goes with COMP=isic2024")
        args.data = str(ensure_isic2024_scale(Path(args.data or "data/bench-isic2024")))
        overrides = f"runs_dir=runs/bench-isic2024 {overrides}"
    cfg = load_oof_config(args.comp, args.model, overrides)
    data = data_dir(args, cfg)
    if not folds_paths(cfg)[1].exists():
        make_folds(cfg, read_metadata(cfg, data, "train"), data)
    report: dict = {"data": str(data)}
    if not args.no_fold:
        r = bench_fold(cfg, data, args.fold)
        report["fold"] = r
        print("\n".join(fold_split_lines(r)))
    report["throughput"] = []
    for item in filter(None, args.throughput.split(",")):
        backbone, size = item.rsplit("@", 1)
        tcfg = load_oof_config(
            args.comp, args.model, f"{overrides} model.backbone={backbone} data.img_size={size}"
        )
        r = bench_throughput(tcfg, data, steps=args.steps)
        report["throughput"].append(r)
        print(
            f"{r['model']} @ {r['img_size']} px, batch {r['batch_size']}, {r['device']}, amp={r['amp']}, "
            f"channels_last={r['channels_last']}, workers={r['num_workers']}, threads={r['torch_threads']}: "
            f"training end to end {r['train_images_per_s_end_to_end']:.1f} images/s, model only "
            f"{r['train_images_per_s_model_only']:.1f} images/s, ratio {r['ratio']:.3f}"
            + (", end to end on a dropped page cache" if r["cold_page_cache"] else "")
        )
    path = cfg.run_dir / "bench" / f"oof_{cfg.run}{'_' + args.scale if args.scale else ''}.json"
    artifacts.write_json(path, report)
    print(f"wrote {path}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    run_main(main)
