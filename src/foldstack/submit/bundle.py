"""The offline inference bundle of a code competition (ISIC 2024 is one) and the staging folder that holds
it beside the kernel: what `make submit` uploads and `make kernel-check` runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from foldstack import artifacts
from foldstack.config import CompetitionConfig
from foldstack.errors import DataError
from foldstack.runs import (
    MODELS,
    RUN_FILES,
    Runs,
    StackRun,
    Stage1Run,
    bundle_runs,
    is_stack_folder,
    is_stage1_folder,
    runs_of,
    stack_runs_beside,
)
from foldstack.stage1.seeds import seed_members
from foldstack.submit.image import REPO, bundle_wheels
from foldstack.submit.kernel import build_kernel, names
from foldstack.submit.predict import check_bundle

BUNDLE, KERNEL, STAGING_MANIFEST = "bundle", "kernel", "kaggle.json"  # the members of the staging set


def copy_stage1(src: Stage1Run, inside: Runs) -> None:
    """A stage-1 run's config, metrics and fold sets into the bundle's runs tree; a mean of seed runs
    (stage1.seeds) brings its seed runs along, whose fold models the kernel runs for it."""
    members = seed_members(src)
    files = [src.dir / f for f in RUN_FILES if (src.dir / f).exists()]
    files += src.fold_files()  # fold<k>.json checks its whole set
    if not members and not any(f.suffix == ".safetensors" for f in files):
        raise DataError(f"{src.dir}: no fold weights to bundle; run `make oof` first")
    dst = inside.stage1(src.name).dir
    dst.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy2(f, dst / f.name)
    for member in members:
        copy_stage1(member, inside)


def build_wheel(out: Path) -> Path:
    """The package as a wheel (installed offline in the kernel with pip --no-index)."""
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out)]
    subprocess.run([*cmd, str(REPO)], check=True, capture_output=True)
    return next(out.glob("foldstack-*.whl"))


def check_stack_source(cfg: CompetitionConfig, source: Path) -> StackRun:
    """The stack run of `source` (its test.parquet), refused clearly when it is not one: a code
    competition's kernel reruns a whole stack (stage-1 weights + stage-2 models) on the hidden test set."""
    folder = source.parent
    if is_stack_folder(folder) and not folder.exists():
        have = stack_runs_beside(folder)
        raise DataError(
            f"there is no stack run {folder.name!r} yet ({folder} does not exist; stack runs in "
            f"{folder.parent}: {', '.join(have) or 'none'}). Make one with `make stack` (the default stack "
            f"config, on every finished stage-1 run; `make oof MODEL=...` first if there is none)"
            + (f", or choose one of them with STACK={have[0]}" if have else "")
        )
    run = StackRun(folder)
    if is_stage1_folder(folder) or not run.is_run():
        raise DataError(
            f"{source} is not a stack run's test.parquet ({run.inputs} is missing). "
            f"{cfg.name} is a code competition: Kaggle reruns the kernel on the hidden test set, so it "
            f"needs a stack run; stack this run with `make stack MODELS={folder.name}` and submit "
            f"{Runs.of(cfg).stack('<name>').test} (or leave FROM empty for the newest stack)"
        )
    run.read_metrics()
    return run


def build_bundle(cfg: CompetitionConfig, stack: StackRun, owner: str, out: Path) -> Path:
    """out/: runs/<comp>/{stack/<name>, oof/<run>...} with weights and native models, the wheel, metadata.

    `out` must not exist yet (build_submission_folders stages it inside a set)."""
    inside, here = bundle_runs(out, cfg.name), runs_of(stack)
    dst = inside.stack(stack.name)
    dst.dir.mkdir(parents=True)
    for f in RUN_FILES:
        if (stack.dir / f).exists():
            shutil.copy2(stack.dir / f, dst.dir / f)
    shutil.copytree(stack.dir / MODELS, dst.dir / MODELS)
    for name in stack.read_inputs().stage1_runs:
        copy_stage1(here.stage1(name), inside)
    build_wheel(out)
    bundle_wheels(out / "wheels")  # what Kaggle's image lacks or has too old (usually nothing)
    dataset, _ = names(cfg)
    artifacts.write_json(
        out / "dataset-metadata.json",
        {
            "title": f"foldstack {cfg.name} inference bundle",
            "id": f"{owner}/{dataset}",
            "licenses": [{"name": "CC0-1.0"}],
        },
    )
    return out


def build_submission_folders(
    cfg: CompetitionConfig, stack: StackRun, owner: str, staging: Path
) -> tuple[Path, Path]:
    """staging/bundle and staging/kernel, written as one set: a killed build never leaves a bundle of one
    run beside the kernel of another."""
    with artifacts.SetWriter(staging, staging.name, manifest=STAGING_MANIFEST) as s:
        bundle = build_bundle(cfg, stack, owner, s.path(BUNDLE))
        check_bundle(bundle_runs(bundle, cfg.name), stack.name)
        build_kernel(cfg, stack.name, owner, s.path(KERNEL))
        artifacts.fault_point("submit.bundle")
        s.write_json(STAGING_MANIFEST, {"stack": str(stack.dir), "owner": owner, "wheel": bundle.name})
    return staging / BUNDLE, staging / KERNEL
