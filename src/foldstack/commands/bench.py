"""make bench-load and make bench-check-data (make bench-oof / bench-stack: commands.stage1 / stage2)."""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from foldstack import artifacts
from foldstack.data.image_check import available_cores, scan_images
from foldstack.data.images import HDF5Images
from foldstack.runs import RUNS_DIR, Runs
from foldstack.synth.scale import build_hdf5
from foldstack.threads import PASSIVE_ENV, usable_cores

REPO = Path(__file__).resolve().parents[3]
LOAD_DATA_SET = (
    "synthetic.n_train_patients=120 synthetic.n_test_patients=20 synthetic.lesions_per_patient=30 "
    "synthetic.pos_rate=0.03 synthetic.img_min=48 synthetic.img_max=64"
)
LOAD_SET = "data.img_size=48 train.epochs=200 predict.tta=1 run=bench_load"
LOAD_TARGET = 2.5
N_ISIC2024 = 401_059


# ------------------------------------------------------------------------------------------- bench-load
def _env(src: Path) -> dict:
    """A clean environment for a child: that checkout's code, no inherited OpenMP wait settings."""
    env = {k: v for k, v in os.environ.items() if k not in PASSIVE_ENV}
    path = [str(src), *filter(None, [os.environ.get("PYTHONPATH")])]  # keep what the caller adds
    return env | {"PYTHONPATH": os.pathsep.join(path)}


def _process_cpu_seconds(pid: int) -> float:
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


@dataclass(frozen=True)
class LoadBench:
    comp: str
    stack: str
    trials: int
    repo: Path  # the checkout whose pipelines/stack.py is timed
    work: Path
    overrides: str = ""

    @property
    def runs(self) -> Path:
        return self.work / RUNS_DIR

    @property
    def load_runs(self) -> Path:
        return self.work / "load_runs"

    def data_args(self) -> list[str]:
        return ["--comp", self.comp, "--data", str(self.work / "data")]

    def timed_stack(self, name: str) -> float:
        """Seconds of one `make stack` on a fresh study (every timing runs all its trials)."""
        shutil.rmtree(Runs(self.runs, self.comp).stack(name).dir, ignore_errors=True)
        sets = f"{LOAD_DATA_SET} runs_dir={self.runs} run={name} features.cnn=false {self.overrides}"
        cmd = [sys.executable, str(self.repo / "pipelines" / "stack.py"), *self.data_args()]
        cmd += ["--set", sets, "--stack", self.stack, "--models", "", "--n-trials", str(self.trials)]
        t0 = time.perf_counter()
        _check(cmd, _env(self.repo / "src"), f"stack {name}")
        return time.perf_counter() - t0

    def prepare(self) -> None:
        """The small data and its folds, written once (the load's runs root gets a copy of the folds)."""
        env, py, sets = _env(REPO / "src"), sys.executable, f"{LOAD_DATA_SET} runs_dir={self.runs}"
        if not (self.work / "data" / "synthetic.json").exists():
            _check([py, "pipelines/data.py", *self.data_args(), "--set", sets], env, "data")
        runs = Runs(self.runs, self.comp)
        if not runs.folds_csv.exists():
            _check([py, "pipelines/folds.py", *self.data_args(), "--set", sets], env, "folds")
            shutil.copytree(runs.dir, Runs(self.load_runs, self.comp).dir, dirs_exist_ok=True)

    def loaded(self, warmup: float) -> tuple[float, float]:
        """Seconds of `make stack` beside a stage-1 training started `warmup` s before, and the cores
        that training used meanwhile."""
        shutil.rmtree(Runs(self.load_runs, self.comp).stage1_root, ignore_errors=True)
        cmd = [
            sys.executable,
            "pipelines/oof.py",
            *self.data_args(),
            "--model",
            "effnetv2_b1",
            "--no-progress",
        ]
        cmd += ["--set", f"{LOAD_DATA_SET} runs_dir={self.load_runs} {LOAD_SET}"]
        load = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=_env(REPO / "src"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            time.sleep(warmup)
            if load.poll() is not None:
                raise RuntimeError(
                    f"the stage-1 load ended early ({load.returncode}): {load.stderr.read()[-3000:]}"
                )
            cpu0, t0 = _process_cpu_seconds(load.pid), time.perf_counter()
            seconds = self.timed_stack("bench_loaded")
            cores = (_process_cpu_seconds(load.pid) - cpu0) / (time.perf_counter() - t0)
            if load.poll() is not None:
                raise RuntimeError("the stage-1 load ended during the loaded timing: raise train.epochs")
        finally:
            if load.poll() is None:
                os.killpg(load.pid, signal.SIGKILL)
            load.wait()
        return seconds, cores


def bench_load(bench: LoadBench, warmup: float = 25) -> int:
    """A small `make stack` alone, then beside a running stage-1 training; target loaded/alone <= 2.5."""
    bench.prepare()
    load_before = os.getloadavg()
    alone = bench.timed_stack("bench_alone")
    loaded, load_cores = bench.loaded(warmup)
    r = {
        "stack": bench.stack,
        "trials": bench.trials,
        "repo": str(bench.repo),
        "git_commit": artifacts.git_commit(),
        "cores": usable_cores(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "alone_seconds": round(alone, 1),
        "loaded_seconds": round(loaded, 1),
        "ratio": round(loaded / alone, 2),
        "load_cores_during_loaded_run": round(load_cores, 2),
        "target_ratio": LOAD_TARGET,
    }
    print(f"make stack STACK={bench.stack} N_TRIALS={bench.trials} on ~3,500 rows, {r['cores']} usable cores")
    print(f"  load average before: {' '.join(map(str, r['loadavg_before']))}")
    print(f"  alone                        {alone:7.1f} s")
    print(f"  beside stage-1 training      {loaded:7.1f} s   (the training used {load_cores:.2f} cores)")
    ok = "ok" if r["ratio"] <= LOAD_TARGET else "OVER TARGET"
    print(f"  ratio                        {r['ratio']:7.2f}     target <= {LOAD_TARGET}  {ok}")
    path = Runs(bench.runs, bench.comp).bench("load")
    artifacts.write_json(path, r)
    print(f"wrote {path}\n{json.dumps(r)}")
    return 0


# ------------------------------------------------------------------------------------- bench-check-data
def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the pool's workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")


def _hdf5(out: Path, n: int, distinct: int, regenerate: bool) -> dict:
    """The synthetic train-image.hdf5, built once (again when asked or when n/distinct changed)."""
    info_path = out.with_suffix(".json")
    info = json.loads(info_path.read_text()) if info_path.exists() and out.exists() else {}
    if regenerate or (info.get("n"), info.get("distinct")) != (n, distinct):
        t = time.perf_counter()
        info = build_hdf5(out, n, distinct)
        info["build_seconds"] = round(time.perf_counter() - t, 1)
        artifacts.write_json(info_path, info)
        print(f"built {out} in {info['build_seconds']} s")
    p10, p50, p90 = info["crop_bytes_p10_p50_p90"]
    print(
        f"{out}: {info['n']} JPEGs ({info['distinct']} distinct crops, 100-200 px, "
        f"{p10}/{p50}/{p90} bytes p10/p50/p90), {out.stat().st_size / 1e6:.0f} MB"
    )
    return info


def bench_check_data(
    out: Path,
    n: int = N_ISIC2024,
    distinct: int = 400,
    workers: int = 0,
    one_worker: int = 20_000,
    regenerate: bool = False,
) -> int:
    """Time what make folds (one id listing) and make check-data (every image decoded) do with the images."""
    info = _hdf5(out, n, distinct, regenerate)
    cores, workers = available_cores(), workers or available_cores()
    load = os.getloadavg()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, {cores} usable; load {load[0]:.2f}")
    store = HDF5Images(out)
    ids = [f"ISIC_{i:07d}" for i in range(info["n"])]
    t = time.perf_counter()
    missing = store.missing_ids(ids)
    listing = time.perf_counter() - t
    print(
        f"folds' image check (one keys() listing, {len(ids)} ids looked up): {listing:.2f} s, "
        f"{len(missing)} missing"
    )
    store.close()
    few = ids[:one_worker]
    t = time.perf_counter()
    scan_images(store, few, workers=1, progress=False)
    one_rate = len(few) / (time.perf_counter() - t)
    print(f"one worker on the first {len(few)} images: {one_rate:,.0f} images/s")
    t, cpu0 = time.perf_counter(), _cpu_seconds()
    scan = scan_images(store, ids, workers=workers, label="check")
    wall, cpu = time.perf_counter() - t, _cpu_seconds() - cpu0
    rate = scan.checked / wall
    print(f"check of every image on {workers} worker(s): {wall:.1f} s wall, {rate:,.0f} images/s")
    print(
        f"  CPU time {cpu:.1f} s ({cpu / scan.checked * 1e6:.0f} us per image; {cpu / wall:.2f} cores busy "
        f"on average, load {os.getloadavg()[0]:.2f} after)"
    )
    print(f"  {scan.summary()}")
    result = {
        "images": scan.checked,
        "bad": len(scan.bad),
        "workers": workers,
        "wall_seconds": round(wall, 2),
        "images_per_second": round(rate),
        "one_worker_images_per_second": round(one_rate),
        "cpu_seconds": round(cpu, 1),
        "folds_listing_seconds": round(listing, 3),
        "cpu": cpu_model(),
        "cores_usable": cores,
        "load_before": round(load[0], 2),
    }
    print(json.dumps(result))
    return 0 if not scan.bad and not missing else 1
