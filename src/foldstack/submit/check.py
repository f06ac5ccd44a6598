"""make kernel-check: the generated Kaggle kernel, run offline on Kaggle's package versions, must write what
`make predict` writes.

The bundle and kernel folder are the ones `make submit` uploads. A venv holding the versions of Kaggle's
image (configs/kaggle-image/requirements.txt) is created once and reused while that file is unchanged. The
kernel runs in a Kaggle-like root (<root>/input/<competition>, <root>/input/<bundle>, <root>/working, found
through FOLDSTACK_KAGGLE_ROOT, which defaults to /kaggle on Kaggle) with no package index reachable, and
passes when its submission.csv has sample_submission.csv's ids in order and equals `make predict` to 1e-6.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from foldstack import artifacts
from foldstack import prediction_tables as pt
from foldstack.config import CompetitionConfig
from foldstack.data.metadata import read_metadata, read_sample_submission
from foldstack.errors import DataError
from foldstack.runs import REPORT_JSON, SUBMISSION_CSV, StackRun, runs_of
from foldstack.submit.image import PINS, PYTHON, REPO
from foldstack.submit.kernel import KERNEL_SCRIPT, ROOT_ENV, STAGES_ENV, names
from foldstack.submit.predict import Stages, TrainedStack, submission_frame
from foldstack.submit.stages import TOLERANCE, compare_stages, stage_lines, stage_verdict

VENV = REPO / ".kaggle-venv"
STAMP = "foldstack-pins.sha256"
OWN = "own"  # run the kernel on the project's own venv (CI's fast path) instead of Kaggle's versions


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _base_python() -> str:
    """A Python of the image's version to create the venv from (this one, or pythonX.Y on PATH)."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == PYTHON:
        return getattr(sys, "_base_executable", sys.executable)
    found = shutil.which(f"python{PYTHON}")
    if not found:
        raise DataError(
            f"make kernel-check needs Python {PYTHON} (the Kaggle image's) to build its venv; "
            f"this is Python {sys.version.split()[0]} and there is no python{PYTHON} on PATH"
        )
    return found


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def kaggle_venv(pins: Path = PINS, venv: Path = VENV) -> Path:
    """The Python of a venv holding exactly the versions in `pins`, created once (a few GB: torch is the
    registry's CUDA build, as on Kaggle's GPU image) and reused while `pins` and the Python are unchanged."""
    key = hashlib.sha256(pins.read_bytes() + PYTHON.encode()).hexdigest()
    stamp = venv / STAMP
    if stamp.exists() and stamp.read_text().strip() == key and venv_python(venv).exists():
        return venv_python(venv)
    if venv.exists():
        print(f"kernel-check: {venv} was made for other versions (or half made): rebuilding it", flush=True)
        shutil.rmtree(venv)
    print(
        f"kernel-check: creating {venv} with Kaggle's versions from {pins} (once; several minutes)",
        flush=True,
    )
    t0 = time.perf_counter()
    subprocess.run([_base_python(), "-m", "venv", str(venv)], check=True)
    py = venv_python(venv)
    for cmd in (
        [str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"],
        [str(py), "-m", "pip", "install", "-q", "-r", str(pins)],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            raise DataError(
                f"could not create the Kaggle-versions venv from {pins} (`{' '.join(cmd[2:])}` failed); "
                f"fix the file or the package index and rerun:\n{_tail(proc.stdout + proc.stderr)}"
            )
    stamp.write_text(key + "\n")  # last: a venv without it is half made
    print(f"kernel-check: {venv} ready in {time.perf_counter() - t0:.0f} s", flush=True)
    return py


def lay_out_root(root: Path, cfg: CompetitionConfig, data_dir: Path, bundle: Path) -> Path:
    """A fresh Kaggle-like root: input/<competition> and input/<bundle dataset> (links to the folders),
    and an empty working/."""
    if root.exists():
        shutil.rmtree(root)
    (root / "input").mkdir(parents=True)
    (root / "working").mkdir()
    dataset, _ = names(cfg)
    (root / "input" / cfg.slug).symlink_to(data_dir.resolve(), target_is_directory=True)
    (root / "input" / dataset).symlink_to(bundle.resolve(), target_is_directory=True)
    return root


def offline_env(root: Path) -> dict[str, str]:
    """The kernel's environment: the Kaggle-like root, and no package index or network proxy reachable."""
    keep = ("PATH", "LANG", "LC_ALL", "TMPDIR", "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    dead = "http://127.0.0.1:9"  # the discard port: nothing answers
    env.update(
        {
            ROOT_ENV: str(root.resolve()),  # the kernel runs in <root>/working: no relative paths
            STAGES_ENV: str(root.resolve() / "stages" / "kernel"),
            "HOME": str(root.resolve() / "home"),
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_NO_INDEX": "1",
            "PIP_INDEX_URL": f"{dead}/simple",
            "PIP_FIND_LINKS": "",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "HTTP_PROXY": dead,
            "HTTPS_PROXY": dead,
            "http_proxy": dead,
            "https_proxy": dead,
            "NO_PROXY": "",
            "PYTHONNOUSERSITE": "1",
        }
    )
    return env


def python_versions(python: Path | str) -> dict[str, str]:
    """Versions of Python and the packages the kernel touches, as `python` sees them."""
    code = (
        "import json, sys, importlib.metadata as m\n"
        "out = {'python': sys.version.split()[0]}\n"
        "for n in ('torch', 'timm', 'numpy', 'pandas', 'scikit-learn', 'lightgbm', 'xgboost', 'pydantic'):\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: out[n] = 'missing'\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def run_kernel(python: Path | str, kernel: Path, root: Path, timeout_s: float) -> tuple[float, Path]:
    """Run the kernel's script as Kaggle does (cwd <root>/working); (seconds, its log). A failure raises
    DataError with the log's tail."""
    log = root / "kernel.log"
    (root / "home").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    try:
        with log.open("w") as out:
            proc = subprocess.run(
                [str(python), str((kernel / KERNEL_SCRIPT).resolve())],
                cwd=root / "working",
                env=offline_env(root),
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout_s,
                check=False,
            )
    except subprocess.TimeoutExpired:
        raise DataError(
            f"the kernel ran past {timeout_s:.0f} s in {root}; its log {log} ends:\n{_tail(log.read_text())}"
        ) from None
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise DataError(
            f"the kernel {kernel / KERNEL_SCRIPT} failed (exit {proc.returncode}) in {root}; "
            f"its log {log} ends:\n{_tail(log.read_text())}"
        )
    return seconds, log


def compare(cfg: CompetitionConfig, data_dir: Path, got_path: Path, expected: pd.DataFrame) -> float:
    """The largest absolute difference between the kernel's CSV and `make predict`'s frame; DataError when
    the file is missing, its header or ids differ from sample_submission.csv's, or a value differs by more
    than TOLERANCE."""
    if not got_path.exists():
        raise DataError(f"the kernel finished without writing {got_path}")
    got = pd.read_csv(got_path)
    sample = read_sample_submission(cfg, data_dir)
    idc = cfg.columns.id
    if list(got.columns) != list(sample.columns):
        raise DataError(f"{got_path}: header {list(got.columns)}, expected {list(sample.columns)}")
    if got[idc].astype(str).tolist() != sample[idc].astype(str).tolist():
        raise DataError(f"{got_path}: ids differ from {cfg.files.sample_submission} (or their order does)")
    cols = list(sample.columns[1:])
    diff = np.abs(got[cols].to_numpy(float) - expected[cols].to_numpy(float))
    worst = float(diff.max()) if diff.size else 0.0
    if not np.isfinite(worst) or worst > TOLERANCE:
        row = int(np.unravel_index(np.nanargmax(diff), diff.shape)[0]) if diff.size else 0
        raise DataError(
            f"{got_path} differs from `make predict` by {worst:.3g} (> {TOLERANCE:g}) at id "
            f"{got[idc].iloc[row]}: the kernel on Kaggle's versions would not submit what was checked here"
        )
    return worst


def runtime_estimate(cfg: CompetitionConfig, stack: StackRun) -> dict | None:
    """The kernel's estimated run time on the hidden test set, from each stage-1 run's measured test pass
    (all fold models on each decoded batch): hidden rows x (seconds per test row). None when the competition
    states no hidden-test size."""
    rows = cfg.kernel.hidden_test_rows
    if not rows:
        return None
    runs_tree = runs_of(stack)
    runs = []
    for name in stack.read_inputs().stage1_runs:
        s1 = runs_tree.stage1(name)
        m = s1.read_metrics(deep=False)
        test_rows = len(pd.read_parquet(s1.test, columns=["id"]))
        per_row = float(m["test_prediction_seconds"]) / max(test_rows, 1)
        runs.append(
            {
                "run": name,
                "device": m.get("runtime", {}).get("device", "unknown"),
                "measured_rows": test_rows,
                "seconds_per_row": per_row,
                "seconds": per_row * rows,
            }
        )
    total = sum(r["seconds"] for r in runs)
    limit = cfg.kernel.runtime_limit_h * 3600
    return {
        "hidden_test_rows": rows,
        "seconds": total,
        "limit_seconds": limit or None,
        "over_limit": bool(limit and total > limit),
        "runs": runs,
    }


SMALL = ", a small sample: the fixed costs weigh too much"


def estimate_lines(est: dict | None) -> list[str]:
    if est is None:
        return ["kernel run time: no estimate (the competition config states no kernel.hidden_test_rows)"]
    parts = [
        f"{r['run']} {r['seconds'] / 3600:.2f} h ({r['seconds_per_row'] * 1000:.2f} ms/row measured on "
        f"{r['device']} over {r['measured_rows']:,} rows{SMALL if r['measured_rows'] < 1000 else ''})"
        for r in est["runs"]
    ]
    limit = f" of a {est['limit_seconds'] / 3600:g} h limit" if est["limit_seconds"] else ""
    verdict = " OVER THE LIMIT" if est["over_limit"] else ""
    if any(r["device"] == "cpu" for r in est["runs"]):
        caveat = "measured on a CPU: on Kaggle's GPU most likely an overestimate"
    else:
        caveat = "Kaggle's GPU may be slower than the one measured"
    return [
        f"kernel run time for {est['hidden_test_rows']:,} hidden test rows: about "
        f"{est['seconds'] / 3600:.2f} h{limit}{verdict} (CNN passes; {caveat})",
        *(f"  {p}" for p in parts),
    ]


def check_kernel(
    cfg: CompetitionConfig,
    data_dir: Path,
    stack_run: StackRun,
    bundle: Path,
    kernel: Path,
    root: Path,
    python: str = "",
    timeout_s: float = 3600,
) -> dict:
    """Run the built kernel offline in a Kaggle-like root and compare it with `make predict`, stage by
    stage (compare_stages) and on the submission; a report (also written to <root>/report.json).
    python: '' for Kaggle's versions (the cached venv), OWN for the Python running this, or a path to an
    interpreter."""
    if not python:
        py: Path | str = kaggle_venv()
        versions_of = "Kaggle's image (configs/kaggle-image/requirements.txt)"
    elif python == OWN:
        py, versions_of = sys.executable, "this project's venv (requirements.txt)"
    else:
        py, versions_of = python, python
    lay_out_root(root, cfg, data_dir, bundle)
    print(f"kernel-check: running {kernel / KERNEL_SCRIPT} offline in {root} on {versions_of}", flush=True)
    seconds, log = run_kernel(py, kernel, root, timeout_s)
    t0 = time.perf_counter()
    stack = TrainedStack.load(stack_run)
    local = stack.predict(data_dir, progress=True)
    local.save(root / "stages" / "local")
    expected = submission_frame(cfg, data_dir, pt.test_frame(stack.cfg, local.ids, list(local.blend)))
    predict_s = time.perf_counter() - t0
    theirs = Stages.load(root / "stages" / "kernel")
    stages = compare_stages(stack, read_metadata(stack.cfg, data_dir, "test"), local, theirs)
    try:
        got = root / "working" / SUBMISSION_CSV
        worst, submission_error = compare(cfg, data_dir, got, expected), None
    except DataError as e:
        worst, submission_error = float("nan"), str(e)
    report = {
        "passed": False,
        "stack": str(stack_run.dir),
        "data": str(data_dir),
        "rows": len(expected),
        "max_abs_diff": worst,
        "tolerance": TOLERANCE,
        "stages": stages,
        "kernel_seconds": round(seconds, 1),
        "predict_seconds": round(predict_s, 1),
        "versions_of": versions_of,
        "versions": python_versions(py),
        "bundle_sha256": artifacts.folder_sha256(bundle),
        "log": str(log),
    }
    verdict = stage_verdict(stages, submission_error)
    report["passed"] = verdict is None
    artifacts.write_json(root / REPORT_JSON, report | {"error": verdict})
    if verdict is not None:
        raise DataError(f"{verdict}\n(report: {root / REPORT_JSON})")
    return report


def report_lines(report: dict) -> list[str]:
    v = report["versions"]
    return [
        f"kernel-check passed: {report['rows']:,} rows equal `make predict` (max |diff| "
        f"{report['max_abs_diff']:.2g} <= {report['tolerance']:g}); kernel {report['kernel_seconds']:.1f} s, "
        f"predict {report['predict_seconds']:.1f} s",
        "  stage by stage (kernel vs `make predict`):",
        *stage_lines(report["stages"]),
        f"  on {report['versions_of']}: Python {v['python']}, torch {v['torch']}, timm {v['timm']}, "
        f"pandas {v['pandas']}, scikit-learn {v['scikit-learn']}, lightgbm {v['lightgbm']}, "
        f"xgboost {v['xgboost']}",
    ]
