"""make data, make folds, make check-data, make download."""

from __future__ import annotations

import json
from pathlib import Path

from foldstack.cli import competition
from foldstack.data.check import check_data
from foldstack.data.download import DOWNLOAD_TIMEOUT_S
from foldstack.data.download import download as download_files
from foldstack.data.metadata import read_metadata
from foldstack.folds import folds_paths, make_folds
from foldstack.synth.generate import generate
from foldstack.synth.scale import DEFAULT_ROOT, write_isic2024_scale


def data(
    comp: str,
    overrides: str = "",
    data: str | None = None,
    workers: int | None = None,
    scale: str | None = None,
) -> int:
    """The embedded synthetic competition in the Kaggle layout; with `scale`, the competition-size one."""
    if scale:
        out = Path(data) if data else DEFAULT_ROOT
        record = write_isic2024_scale(out)
        how = "kept the complete" if record["skipped"] else "wrote"
        print(f"{how} {scale}-size synthetic competition in {out}/")
        print(json.dumps({k: v for k, v in record.items() if k != "file_bytes"}, indent=2))
        return 0
    cfg, data_dir = competition(comp, overrides, data)
    summary = generate(cfg, data_dir, workers=workers)
    print(f"wrote synthetic {cfg.name} to {data_dir}/")
    print(json.dumps(summary, indent=2))
    return 0


def folds(comp: str, overrides: str = "", data: str | None = None, force: bool = False) -> int:
    """Patient-grouped, target-stratified folds, written once (reused while the data is the same)."""
    cfg, data_dir = competition(comp, overrides, data)
    meta = make_folds(cfg, read_metadata(cfg, data_dir, "train"), data_dir, force=force)
    csv_path, _ = folds_paths(cfg)
    verb = "reused" if meta["reused"] else "wrote"
    if meta.get("upgraded"):
        verb = "reused (folds.json now holds the table hash of the train data)"
    if cfg.multiclass:
        counts = ", ".join(f"{c} {n}" for c, n in meta["class_counts"].items())
        what, per = f"classes: {counts}", "classes present"
    else:
        what, per = f"{meta['positives']} positives", "positives"
    print(
        f"{verb} {csv_path}: k={meta['k']} seed={meta['seed']} sha256={meta['sha256'][:12]} "
        f"({meta['rows']} rows, {what}, {meta['groups']} groups of {cfg.columns.group})"
    )
    for f in meta["per_fold"]:
        print(f"  fold {f['fold']}: {f['rows']} rows, {f['positives']} {per}, {f['groups']} groups")
    return 0


def check(comp: str, overrides: str = "", data: str | None = None, workers: int = 0) -> int:
    """Every file of the data folder against the competition layout: 0 when valid, 1 on problems."""
    cfg, data_dir = competition(comp, overrides, data)
    report = check_data(cfg, data_dir, workers=workers)
    print(report.format())
    return 0 if report.ok else 1


def download(
    comp: str,
    overrides: str = "",
    data: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> int:
    """The competition's files through the kaggle CLI into DATA (default data/<comp>), checked first."""
    cfg, data_dir = competition(comp, overrides, data)
    download_files(cfg, data_dir, force=force, dry_run=dry_run, timeout=timeout)
    return 0
