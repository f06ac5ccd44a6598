"""make oof, make cache, make bench-oof."""

from __future__ import annotations

import json
from pathlib import Path

from foldstack import artifacts
from foldstack.cli import resolve_data
from foldstack.data.cache import image_size, open_cache, split_ids
from foldstack.data.metadata import read_metadata
from foldstack.folds import folds_paths, make_folds
from foldstack.runs import Runs, own_runs_root
from foldstack.stage1.bench import bench_fold, bench_throughput, fold_split_lines, throughput_line
from foldstack.stage1.config import OofConfig, load_oof_config
from foldstack.stage1.run import run_oof
from foldstack.stage1.runtime import barrier, make_runtime
from foldstack.stage1.seeds import finish_seeds, seed_plan
from foldstack.synth.scale import DEFAULT_ROOT, ensure_isic2024_scale

THROUGHPUT = "tf_efficientnetv2_b1.in1k@128,resnet18.a1_in1k@64"


def _ensure_folds(cfg: OofConfig, data: Path) -> None:
    if not folds_paths(cfg)[1].exists():
        make_folds(cfg, read_metadata(cfg, data, "train"), data)


def oof(
    comp: str,
    model: str,
    overrides: str = "",
    data: str | None = None,
    progress: bool = True,
    folds: str = "",
    seeds: str = "",
) -> int:
    """Train the run's folds (making the folds first if there are none) and print its scores; with
    `seeds` (SEEDS=0,1,2) the run once per seed, then their per-id mean as one more run (stage1.seeds)."""
    cfg = load_oof_config(comp, model, overrides)
    plan = seed_plan(comp, model, overrides, seeds) if seeds.strip() else None  # refused before any work
    data_dir = resolve_data(data, cfg)
    rt = make_runtime(cfg)
    if rt.main:
        _ensure_folds(cfg, data_dir)
    barrier(rt)
    for c in plan.configs if plan else [cfg]:
        _print_run(c, run_oof(c, data_dir, progress=progress, folds=folds))
    if plan and rt.main:
        _print_mean(plan.base, finish_seeds(plan))
    return 0


def _print_run(cfg: OofConfig, result: dict) -> None:
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
        run = Runs.of(cfg).stage1(cfg.run)
        print(f"wrote {run.dir}/ ({run.oof.name}, {run.test.name}, {run.metrics.name}, {run.log.name})")


def _print_mean(cfg: OofConfig, result: dict) -> None:
    if "missing_seed_runs" in result:
        return
    keys = [
        k for k in result if k.startswith(("oof_", "fold_", "seed_oof_")) and isinstance(result[k], float)
    ]
    print(json.dumps({k: result[k] for k in [*keys, "seeds", "score_is_optimistic"]}, indent=2))
    run = Runs.of(cfg).stage1(cfg.run)
    print(f"wrote {run.dir}/ ({run.oof.name}, {run.test.name}, {run.metrics.name}, {run.config.name})")


def cache(
    comp: str,
    model: str,
    overrides: str = "",
    data: str | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> int:
    """Decode and resize every train and test image once, at the model's input size."""
    cfg = load_oof_config(comp, model, overrides)
    data_dir = resolve_data(data, cfg)
    size = image_size(cfg)
    for split in ("train", "test"):
        c = open_cache(cfg, data_dir, split, split_ids(cfg, data_dir, split), size, progress, workers)
        state = "built" if c.built else "up to date"
        print(f"{split}: {len(c):,} images at {size}x{size} px, {state}: {c.path}")
    return 0


def bench_oof(
    comp: str,
    model: str,
    overrides: str = "",
    data: str | None = None,
    scale: str = "",
    steps: int = 30,
    fold: int = 0,
    no_fold: bool = False,
    throughput: str = THROUGHPUT,
    rounds: int = 5,
) -> int:
    """One fold's real stage-1 work with its wall-time split, then end-to-end vs model-only images/s."""
    if scale:
        data = str(ensure_isic2024_scale(Path(data) if data else DEFAULT_ROOT))
        overrides = f"runs_dir={own_runs_root(DEFAULT_ROOT.name)} {overrides}"
    cfg = load_oof_config(comp, model, overrides)
    data_dir = resolve_data(data, cfg)
    _ensure_folds(cfg, data_dir)
    report: dict = {"data": str(data_dir)}
    if not no_fold:
        report["fold"] = bench_fold(cfg, data_dir, fold)
        print("\n".join(fold_split_lines(report["fold"])))
    report["throughput"] = []
    for item in filter(None, throughput.split(",")):
        backbone, size = item.rsplit("@", 1)
        tcfg = load_oof_config(comp, model, f"{overrides} model.backbone={backbone} data.img_size={size}")
        r = bench_throughput(tcfg, data_dir, steps=steps, rounds=rounds)
        report["throughput"].append(r)
        print(throughput_line(r))
    path = Runs.of(cfg).bench(f"oof_{cfg.run}{'_' + scale if scale else ''}")
    artifacts.write_json(path, report)
    print(f"wrote {path}")
    print(json.dumps(report))
    return 0
