"""The offline inference bundle and the kernel folder of a code competition (ISIC 2024 is one)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from foldstack import artifacts
from foldstack.config import CompetitionConfig
from foldstack.errors import DataError

REPO = Path(__file__).resolve().parents[2]
RUN_FILES = ("config.yaml", "metrics.json", "levels.json", "inputs.json")


def names(cfg: CompetitionConfig) -> tuple[str, str]:
    """(dataset slug, kernel slug) on Kaggle."""
    return f"foldstack-{cfg.name}-bundle", f"foldstack-{cfg.name}-predict"


def _copy_stage1(src: Path, dst: Path) -> None:
    files = [src / f for f in RUN_FILES if (src / f).exists()]
    files += sorted(src.glob("fold[0-9]*.json")) + sorted(src.glob("fold[0-9]*.safetensors"))
    files += sorted(src.glob("fold[0-9]*.preds.parquet"))  # fold<k>.json checks its whole set
    if not any(f.suffix == ".safetensors" for f in files):
        raise DataError(f"{src}: no fold weights to bundle; run `make oof` first")
    dst.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy2(f, dst / f.name)


def build_wheel(out: Path) -> Path:
    """The package as a wheel (installed offline in the kernel with pip --no-index)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    return next(out.glob("foldstack-*.whl"))


def build_bundle(cfg: CompetitionConfig, stack_dir: Path, owner: str, out: Path) -> Path:
    """out/: runs/<comp>/{stack/<name>, oof/<run>...} with weights and native models, the wheel, metadata."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    runs = tmp / "runs" / cfg.name
    inputs = json.loads((stack_dir / "inputs.json").read_text())
    dst = runs / "stack" / stack_dir.name
    for f in RUN_FILES:
        if (stack_dir / f).exists():
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy2(stack_dir / f, dst / f)
    shutil.copytree(stack_dir / "models", dst / "models")
    for name in inputs["stage1_runs"]:
        _copy_stage1(stack_dir.parents[1] / "oof" / name, runs / "oof" / name)
    build_wheel(tmp)
    dataset, _ = names(cfg)
    artifacts.write_json(
        tmp / "dataset-metadata.json",
        {
            "title": f"foldstack {cfg.name} inference bundle",
            "id": f"{owner}/{dataset}",
            "licenses": [{"name": "CC0-1.0"}],
        },
    )
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


KERNEL_SCRIPT = '''"""foldstack offline inference for {slug}: install the wheel, write submission.csv."""
import glob
import subprocess
import sys

BUNDLE = "/kaggle/input/{dataset}"
wheel = sorted(glob.glob(BUNDLE + "/foldstack-*.whl"))[-1]
subprocess.check_call([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "-q", wheel])
subprocess.check_call([sys.executable, "-m", "foldstack.predict", "--runs", BUNDLE + "/runs",
                       "--comp", "{comp}", "--stack", "{stack}", "--data", "/kaggle/input/{slug}",
                       "--out", "/kaggle/working/submission.csv", "--no-progress"])
'''


def build_kernel(cfg: CompetitionConfig, stack_name: str, owner: str, out: Path) -> Path:
    """out/: kernel-metadata.json (competition + bundle as sources, internet off, GPU on) and predict.py."""
    dataset, kernel = names(cfg)
    out.mkdir(parents=True, exist_ok=True)
    artifacts.write_text(
        out / "predict.py",
        KERNEL_SCRIPT.format(slug=cfg.slug, dataset=dataset, comp=cfg.name, stack=stack_name),
    )
    artifacts.write_json(
        out / "kernel-metadata.json",
        {
            "id": f"{owner}/{kernel}",
            "title": kernel,
            "code_file": "predict.py",
            "language": "python",
            "kernel_type": "script",
            "is_private": True,
            "enable_gpu": True,
            "enable_internet": False,
            "dataset_sources": [f"{owner}/{dataset}"],
            "competition_sources": [cfg.slug],
            "kernel_sources": [],
        },
    )
    return out
