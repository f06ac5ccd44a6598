"""make bench-load: wall time of a small `make stack` alone, then beside a running stage-1 training.

The data is the embedded synthetic ISIC 2024 at a small size (~3,500 train rows, written once under
runs/bench_load/). The stack is STACK=lgb_xgb_cb (LightGBM + XGBoost + CatBoost; SET="only_models=[lgbm,xgb]"
for the two models of the README's figures) tabular only, N_TRIALS=5 per model, each timing on a fresh
study. The load is `pipelines/oof.py` (EfficientNetV2-B1, small CPU profile, torch on
all cores) on the same data, started first and killed after the loaded timing. Target: loaded / alone
at most 2.5. --repo times another checkout's stack pipeline (e.g. an older commit, for a before/after).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from foldstack import artifacts
from foldstack.cli import base_parser, run_main
from foldstack.threads import PASSIVE_ENV, usable_cores

REPO = Path(__file__).resolve().parents[1]
DATA_SET = (
    "synthetic.n_train_patients=120 synthetic.n_test_patients=20 synthetic.lesions_per_patient=30 "
    "synthetic.pos_rate=0.03 synthetic.img_min=48 synthetic.img_max=64"
)
LOAD_SET = "data.img_size=48 train.epochs=200 predict.tta=1 run=bench_load"
TARGET = 2.5


def _env(src: Path) -> dict:
    """A clean environment for a child: that checkout's code, no inherited OpenMP wait settings."""
    env = {k: v for k, v in os.environ.items() if k not in PASSIVE_ENV}
    path = [str(src), *filter(None, [os.environ.get("PYTHONPATH")])]  # keep what the caller adds
    return env | {"PYTHONPATH": os.pathsep.join(path)}


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _check(cmd: list[str], env: dict, what: str) -> None:
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{what} failed ({res.returncode}): {res.stderr[-3000:]}")


def timed_stack(repo: Path, args, work: Path, name: str) -> float:
    out = work / "runs" / args.comp / "stack" / name
    shutil.rmtree(out, ignore_errors=True)  # a fresh study: every timing runs all its trials
    sets = f"{DATA_SET} runs_dir={work / 'runs'} run={name} features.cnn=false {args.overrides}"
    cmd = [
        sys.executable,
        str(repo / "pipelines" / "stack.py"),
        "--comp",
        args.comp,
        "--data",
        str(work / "data"),
    ]
    cmd += ["--set", sets, "--stack", args.stack, "--models", "", "--n-trials", str(args.trials)]
    t0 = time.perf_counter()
    _check(cmd, _env(repo / "src"), f"stack {name}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--stack", default="lgb_xgb_cb")
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--repo", type=Path, default=REPO, help="checkout whose pipelines/stack.py is timed")
    p.add_argument("--work", type=Path, default=Path("runs/bench_load"))
    p.add_argument("--warmup", type=float, default=25, help="seconds the load runs before the timing")
    args = p.parse_args(argv)
    work, env = args.work.resolve(), _env(REPO / "src")
    py = sys.executable
    data_args = ["--comp", args.comp, "--data", str(work / "data")]
    if not (work / "data" / "synthetic.json").exists():
        _check(
            [py, "pipelines/data.py", *data_args, "--set", f"{DATA_SET} runs_dir={work / 'runs'}"],
            env,
            "data",
        )
    if not (work / "runs" / args.comp / "folds.csv").exists():
        _check(
            [py, "pipelines/folds.py", *data_args, "--set", f"{DATA_SET} runs_dir={work / 'runs'}"],
            env,
            "folds",
        )
        shutil.copytree(work / "runs" / args.comp, work / "load_runs" / args.comp, dirs_exist_ok=True)

    load_before = os.getloadavg()
    alone = timed_stack(args.repo, args, work, "bench_alone")

    shutil.rmtree(work / "load_runs" / args.comp / "oof", ignore_errors=True)
    load_cmd = [py, "pipelines/oof.py", *data_args, "--model", "effnetv2_b1", "--no-progress"]
    load_cmd += ["--set", f"{DATA_SET} runs_dir={work / 'load_runs'} {LOAD_SET}"]
    load = subprocess.Popen(
        load_cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        time.sleep(args.warmup)
        if load.poll() is not None:
            raise RuntimeError(
                f"the stage-1 load ended early ({load.returncode}): {load.stderr.read()[-3000:]}"
            )
        cpu0, t0 = _cpu_seconds(load.pid), time.perf_counter()
        loaded = timed_stack(args.repo, args, work, "bench_loaded")
        load_cores = (_cpu_seconds(load.pid) - cpu0) / (time.perf_counter() - t0)
        if load.poll() is not None:
            raise RuntimeError("the stage-1 load ended during the loaded timing: raise train.epochs")
    finally:
        if load.poll() is None:
            os.killpg(load.pid, signal.SIGKILL)
        load.wait()

    r = {
        "stack": args.stack,
        "trials": args.trials,
        "repo": str(args.repo),
        "git_commit": artifacts.git_commit(),
        "cores": usable_cores(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "alone_seconds": round(alone, 1),
        "loaded_seconds": round(loaded, 1),
        "ratio": round(loaded / alone, 2),
        "load_cores_during_loaded_run": round(load_cores, 2),
        "target_ratio": TARGET,
    }
    print(f"make stack STACK={args.stack} N_TRIALS={args.trials} on ~3,500 rows, {r['cores']} usable cores")
    print(f"  load average before: {' '.join(map(str, r['loadavg_before']))}")
    print(f"  alone                        {alone:7.1f} s")
    print(f"  beside stage-1 training      {loaded:7.1f} s   (the training used {load_cores:.2f} cores)")
    ok = "ok" if r["ratio"] <= TARGET else "OVER TARGET"
    print(f"  ratio                        {r['ratio']:7.2f}     target <= {TARGET}  {ok}")
    path = work / "bench_load.json"
    artifacts.write_json(path, r)
    print(f"wrote {path}\n{json.dumps(r)}")
    return 0


if __name__ == "__main__":
    run_main(main)
