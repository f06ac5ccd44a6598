"""make bench-stack: wall time and peak memory of stage-2 features and one 5-fold LightGBM fit, 400k rows."""

from __future__ import annotations

import json

from foldstack import artifacts
from foldstack.cli import base_parser, run_main
from foldstack.stage2.bench import bench_stack
from foldstack.stage2.config import load_stack_config

TARGETS = {
    "feature_seconds": 60,
    "fit_5fold_seconds": 300,
    "fit_5fold_every_row_one_seed_seconds": 300,
    "peak_rss_gb": 6,
}


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--stack", default="lgb_xgb_cb")
    p.add_argument("--rows", type=int, default=400_000)
    args = p.parse_args(argv)
    cfg = load_stack_config(args.comp, args.stack, args.overrides)
    r = bench_stack(cfg, args.rows)
    print(
        f"{r['rows']} rows ({r['positives']} positives, {r['patients']} patients), {r['features']} features"
    )
    fp = r["fit_params"]
    print(
        f"  LightGBM '{r['fit_model']}': {fp['n_estimators']} trees, "
        f"neg_ratio {fp['neg_ratio']}, seeds {fp['seeds']}"
    )
    print(f"  leak check of every feature (s)  {r['leak_check_seconds']:8.1f}")
    for key, label in (
        ("feature_seconds", "feature building (s)"),
        ("fit_5fold_seconds", "5-fold LightGBM fit (s)"),
        ("fit_5fold_every_row_one_seed_seconds", "  same, every row, 1 seed (s)"),
        ("peak_rss_gb", "peak memory (GB)"),
    ):
        ok = "ok" if r[key] <= TARGETS[key] else "OVER TARGET"
        print(f"  {label:<28} {r[key]:8.1f}   target < {TARGETS[key]}  {ok}")
    path = cfg.run_dir / "bench" / f"stack_{cfg.run}_{r['rows']}.json"
    artifacts.write_json(path, r)
    print(f"wrote {path}\n{json.dumps(r)}")
    return 0


if __name__ == "__main__":
    run_main(main)
