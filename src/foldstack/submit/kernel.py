"""The code competition's kernel: predict.py (every name a Python literal, then a fixed body) and its
kernel-metadata.json. On Kaggle it installs the bundle offline and runs `python -m foldstack.submit.predict`
on the competition's hidden test set."""

from __future__ import annotations

from pathlib import Path

from foldstack import artifacts
from foldstack.config import CompetitionConfig
from foldstack.runs import SUBMISSION_CSV

ROOT_ENV = (
    "FOLDSTACK_KAGGLE_ROOT"  # the kernel's root: /kaggle on Kaggle, a local folder in make kernel-check
)
KERNEL_SCRIPT = "predict.py"  # the kernel's code file
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
out = os.path.join(ROOT, "working", SUBMISSION)
run = ["--runs", os.path.join(bundle, "runs"), "--comp", COMP, "--stack", STACK, "--data", data]
run += ["--out", out, "--no-progress"]
if os.environ.get(STAGES_ENV):  # make kernel-check only: every stage's output, to compare stage by stage
    run += ["--stages", os.environ[STAGES_ENV]]
subprocess.check_call([sys.executable, "-m", "foldstack.submit.predict", *run], env=env)
"""


def names(cfg: CompetitionConfig) -> tuple[str, str]:
    """(dataset slug, kernel slug) on Kaggle."""
    return f"foldstack-{cfg.name}-bundle", f"foldstack-{cfg.name}-predict"


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
        "SUBMISSION": SUBMISSION_CSV,
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
        out / KERNEL_SCRIPT,
        kernel_script(cfg, stack_name),
    )
    artifacts.write_json(
        out / "kernel-metadata.json",
        {
            "id": f"{owner}/{kernel}",
            "title": kernel,
            "code_file": KERNEL_SCRIPT,
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
