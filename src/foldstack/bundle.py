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
from foldstack.kaggle_image import bundle_wheels

REPO = Path(__file__).resolve().parents[2]
RUN_FILES = ("config.yaml", "metrics.json", "levels.json", "inputs.json", "blend.json", "blend_reference.npz")


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


def check_stack_source(cfg: CompetitionConfig, source: Path) -> Path:
    """The stack run folder of `source` (its test.parquet), refused clearly when it is not one: a code
    competition's kernel reruns a whole stack (stage-1 weights + stage-2 models) on the hidden test set."""
    folder = source.parent
    if folder.parent.name == "stack" and not folder.exists():
        have = sorted(p.name for p in folder.parent.glob("*") if (p / "inputs.json").exists())
        raise DataError(
            f"there is no stack run {folder.name!r} yet ({folder} does not exist; stack runs in "
            f"{folder.parent}: {', '.join(have) or 'none'}). Make one with `make stack` (the default stack "
            f"config, on every finished stage-1 run; `make oof MODEL=...` first if there is none)"
            + (f", or choose one of them with STACK={have[0]}" if have else "")
        )
    if folder.parent.name == "oof" or not (folder / "inputs.json").exists():
        raise DataError(
            f"{source} is not a stack run's test.parquet ({folder / 'inputs.json'} is missing). "
            f"{cfg.name} is a code competition: Kaggle reruns the kernel on the hidden test set, so it "
            f"needs a stack run; stack this run with `make stack MODELS={folder.name}` and submit "
            f"runs/{cfg.name}/stack/<name>/test.parquet (or leave FROM empty for the newest stack)"
        )
    artifacts.read_manifest(folder / "metrics.json")
    return folder


def build_bundle(cfg: CompetitionConfig, stack_dir: Path, owner: str, out: Path) -> Path:
    """out/: runs/<comp>/{stack/<name>, oof/<run>...} with weights and native models, the wheel, metadata.

    `out` must not exist yet (build_submission_folders stages it inside a set)."""
    runs = out / "runs" / cfg.name
    inputs = json.loads((stack_dir / "inputs.json").read_text())
    dst = runs / "stack" / stack_dir.name
    dst.mkdir(parents=True)
    for f in RUN_FILES:
        if (stack_dir / f).exists():
            shutil.copy2(stack_dir / f, dst / f)
    shutil.copytree(stack_dir / "models", dst / "models")
    for name in inputs["stage1_runs"]:
        _copy_stage1(stack_dir.parents[1] / "oof" / name, runs / "oof" / name)
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
    cfg: CompetitionConfig, stack_dir: Path, owner: str, staging: Path
) -> tuple[Path, Path]:
    """staging/bundle and staging/kernel, written as one set: a killed build never leaves a bundle of one
    run beside the kernel of another."""
    with artifacts.SetWriter(staging, "kaggle", manifest="kaggle.json") as s:
        bundle = build_bundle(cfg, stack_dir, owner, s.path("bundle"))
        from foldstack.kernel import check_bundle  # (the kernel module reads RUN_FILES from here)

        check_bundle(bundle / "runs", cfg.name, stack_dir.name)
        build_kernel(cfg, stack_dir.name, owner, s.path("kernel"))
        artifacts.fault_point("submit.bundle")
        s.write_json("kaggle.json", {"stack": str(stack_dir), "owner": owner, "wheel": bundle.name})
    return staging / "bundle", staging / "kernel"


ROOT_ENV = (
    "FOLDSTACK_KAGGLE_ROOT"  # the kernel's root: /kaggle on Kaggle, a local folder in make kernel-check
)
STAGES_ENV = "FOLDSTACK_KERNEL_STAGES"  # set by make kernel-check only: where the kernel saves its stages

# The kernel script: literals first (each a Python repr, so no name can change the code), then a fixed body.
KERNEL_BODY = """
import glob
import os
import subprocess
import sys
import tempfile

ROOT = os.environ.get(ROOT_ENV, "/kaggle")


def find_input(name, marker):
    \"\"\"ROOT/input/<name>, or else the folder under ROOT/input that holds `marker` (a glob pattern).\"\"\"
    path = os.path.join(ROOT, "input", name)
    if glob.glob(os.path.join(glob.escape(path), marker)):
        return path
    found = sorted(glob.glob(os.path.join(glob.escape(ROOT), "input", "**", marker), recursive=True))
    if not found:
        sys.exit(f"foldstack: no {marker} under {ROOT}/input (expected {path}/): add {name!r} as an input")
    return os.path.dirname(found[0])


bundle = find_input(DATASET, "foldstack-*.whl")
data = find_input(COMPETITION, SAMPLE_SUBMISSION)
site = tempfile.mkdtemp(prefix="foldstack-site-")
wheels = sorted(glob.glob(os.path.join(glob.escape(bundle), "foldstack-*.whl")))[-1:]
extra = os.path.join(bundle, "wheels")  # what the image lacks or has too old (see the bundle's build)
wheels += sorted(glob.glob(os.path.join(glob.escape(extra), "*.whl")))
pip = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile", "-q"]
subprocess.check_call([*pip, "--find-links", extra, "--target", site, *wheels])
env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH")) if p))
env["NO_ALBUMENTATIONS_UPDATE"] = "1"  # internet is off: no update check at import
out = os.path.join(ROOT, "working", "submission.csv")
run = ["--runs", os.path.join(bundle, "runs"), "--comp", COMP, "--stack", STACK, "--data", data]
run += ["--out", out, "--no-progress"]
if os.environ.get(STAGES_ENV):  # make kernel-check only: every stage's output, to compare stage by stage
    run += ["--stages", os.environ[STAGES_ENV]]
subprocess.check_call([sys.executable, "-m", "foldstack.kernel", *run], env=env)
"""


def kernel_script(cfg: CompetitionConfig, stack_name: str) -> str:
    """predict.py of the kernel: every name a Python literal (repr), never spliced into code."""
    dataset, _ = names(cfg)
    literals = {
        "ROOT_ENV": ROOT_ENV,
        "STAGES_ENV": STAGES_ENV,
        "DATASET": dataset,
        "COMPETITION": cfg.slug,
        "SAMPLE_SUBMISSION": cfg.files.sample_submission,
        "COMP": cfg.name,
        "STACK": stack_name,
    }
    head = repr(
        f"foldstack offline inference for {cfg.name}: install the bundle offline, write submission.csv"
    )
    lines = [f"{k} = {v!r}" for k, v in literals.items()]
    return "\n".join([head, *lines]) + "\n" + KERNEL_BODY


def build_kernel(cfg: CompetitionConfig, stack_name: str, owner: str, out: Path) -> Path:
    """out/: kernel-metadata.json (competition + bundle as sources, internet off, GPU on) and predict.py."""
    dataset, kernel = names(cfg)
    out.mkdir(parents=True, exist_ok=True)
    artifacts.write_text(
        out / "predict.py",
        kernel_script(cfg, stack_name),
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
