"""kill -9 anywhere: `make oof`, `make stack` and `make submit` killed at named fault points (mid-checkpoint,
mid-write, mid-commit, mid-trial) and at random moments, then rerun, leave exactly what an uninterrupted
run leaves: bit-identical predictions, the same Optuna trials, the same submission and ledger.

Each command runs as its own process (pipelines/*.py, as the Makefile runs them). A fault point
(artifacts.fault_point, FOLDSTACK_FAULT="<point>:<n>") makes the process SIGKILL itself the n-th time it
passes the point; a random kill sends SIGKILL after a seeded random delay.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO, TINY

pytestmark = pytest.mark.slow

OOF_SET = "data.img_size=32 train.epochs=2 predict.tta=2 model.drop_rate=0.2 model.head_input_dropout=0.2"
STACK_SET = (  # CatBoost (the default config's third model) has its own tests: here it would only add time
    "only_models=[lgbm,xgb] tuning.n_trials=3 tuning.pruning=false "
    "features.engineered=[lesion_size_ratio,hue_contrast,border_complexity,lesion_color_difference]"
)
RNG = random.Random(20261126)
KILLED = -signal.SIGKILL


def command(kind: str, data: Path, runs: Path) -> list[str]:
    base = ["--comp", "isic2024", "--data", str(data)]
    overrides = f"{TINY['isic2024']} runs_dir={runs}"
    if kind == "oof":
        return [
            sys.executable,
            str(REPO / "pipelines/oof.py"),
            *base,
            "--model",
            "tiny",
            "--no-progress",
            "--set",
            f"{overrides} {OOF_SET}",
        ]
    if kind == "stack":
        return [sys.executable, str(REPO / "pipelines/stack.py"), *base, "--stack", "lgb_xgb_cb", "--set",
                f"{overrides} {STACK_SET}"]  # fmt: skip
    submit = [str(REPO / "pipelines/submit.py"), *base, "--dry-run", "--skip-kernel-check"]
    return [sys.executable, *submit, "--set", overrides]


def env(cwd: Path, fault: str | None) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("FOLDSTACK_FAULT", "KAGGLE_"))}
    e["KAGGLE_CONFIG_DIR"] = str(cwd / "no-kaggle")  # no credentials: the dry run prints commands
    e["PYTHONUNBUFFERED"] = "1"
    if fault:
        e["FOLDSTACK_FAULT"] = fault
    return e


def run(kind: str, data: Path, cwd: Path, fault: str | None = None, kill_after: float | None = None) -> int:
    """Run one command in `cwd` (its runs/ and submissions/ live there); return its exit code."""
    proc = subprocess.Popen(
        command(kind, data, cwd / "runs"),
        cwd=cwd,
        env=env(cwd, fault),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if kill_after is not None:
        try:
            out, _ = proc.communicate(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            out, _ = proc.communicate()
    else:
        out, _ = proc.communicate(timeout=900)
    if proc.returncode not in (0, KILLED):
        what = f"{kind} (fault {fault}, kill after {kill_after})"
        raise AssertionError(f"{what} exited {proc.returncode}:\n{out}")
    return proc.returncode


def timed(kind: str, data: Path, cwd: Path) -> float:
    t0 = time.perf_counter()
    assert run(kind, data, cwd) == 0
    return time.perf_counter() - t0


def killed_then_rerun(kind, data, cwd, fault=None, duration=None) -> None:
    """Kill the command at `fault` (or at a random moment within its usual duration), then rerun it."""
    if fault is not None:
        assert run(kind, data, cwd, fault=fault) == KILLED, f"{kind} never reached the fault point {fault}"
    else:
        delay = RNG.uniform(0.15, 0.85) * duration
        for _ in range(4):  # a run that beat the timer proves nothing: try earlier
            if run(kind, data, cwd, kill_after=delay) == KILLED:
                break
            delay /= 2
        else:
            raise AssertionError(f"{kind} finished before every random kill")
    assert run(kind, data, cwd) == 0


def same_frame(a: Path, b: Path) -> None:
    fa, fb = pd.read_parquet(a), pd.read_parquet(b)
    assert list(fa.columns) == list(fb.columns), a
    for c in fa.columns:
        if fa[c].dtype.kind == "f":
            assert np.array_equal(fa[c].to_numpy(), fb[c].to_numpy()), f"{a}: column {c} differs"
        else:
            assert fa[c].tolist() == fb[c].tolist(), f"{a}: column {c} differs"


def no_leftovers(folder: Path) -> None:
    """No staged set member, commit record or temp file is left behind after a successful rerun."""
    left = [p for p in folder.rglob(".*") if ".set-" in p.name or p.name.endswith(".tmp")]
    assert not left, left


@pytest.fixture(scope="module")
def baseline(tiny_isic2024, tmp_path_factory):
    """Uninterrupted oof, stack and submit in one folder, with their wall times."""
    _, data = tiny_isic2024
    root = tmp_path_factory.mktemp("baseline")
    times = {kind: timed(kind, data, root) for kind in ("oof", "stack", "submit")}
    return data, root, times


def fresh(tmp_path: Path, baseline_root: Path, upto: str) -> Path:
    """A working folder holding the baseline's inputs of a stage: folds (oof), + the stage-1 run
    (stack), + the stack run (submit)."""
    runs = tmp_path / "runs" / "isic2024"
    runs.mkdir(parents=True)
    src = baseline_root / "runs" / "isic2024"
    for f in ("folds.csv", "folds.json"):
        shutil.copy2(src / f, runs / f)
    if upto in ("stack", "submit"):
        shutil.copytree(src / "oof", runs / "oof")
    if upto == "submit":
        shutil.copytree(src / "stack", runs / "stack")
    return tmp_path


OOF_FAULTS = [
    "stage1.checkpoint:2",  # mid-checkpoint: the temp file is written, not yet renamed
    "stage1.epoch_end:3",  # after a checkpoint, in the middle of fold 1
    "atomic.before_rename:4",  # mid-write of some file
    "set.commit.move:2",  # mid-commit of fold 0's set (weights moved, record not yet)
    None,  # random moment
    None,
]


@pytest.mark.parametrize("fault", OOF_FAULTS, ids=[f or f"random{i}" for i, f in enumerate(OOF_FAULTS)])
def test_oof_killed_anywhere_reruns_to_identical_predictions(baseline, tmp_path, fault):
    data, root, times = baseline
    cwd = fresh(tmp_path, root, "oof")
    killed_then_rerun("oof", data, cwd, fault, times["oof"])
    run_dir, want = cwd / "runs/isic2024/oof/tiny", root / "runs/isic2024/oof/tiny"
    for f in ("oof.parquet", "test.parquet"):
        same_frame(run_dir / f, want / f)
    for k in range(3):
        assert (run_dir / f"fold{k}.safetensors").read_bytes() == (want / f"fold{k}.safetensors").read_bytes()
        assert not (run_dir / f"fold{k}.ckpt.safetensors").exists()
    no_leftovers(run_dir)


STACK_FAULTS = [
    "stack.trial.fold:3",  # mid-trial: the interrupted trial is run again with its parameters
    "stack.fit_fold:2",  # fitting the final fold models
    "set.commit.recorded:1",  # the run's set is recorded as committed, nothing moved yet
    None,
]


def trials(run_dir: Path) -> list[tuple]:
    import optuna

    from foldstack.stage2.config import TuningCfg
    from foldstack.stage2.tune import storage_for

    storage = storage_for(TuningCfg(), run_dir / "study.journal")
    out = []
    for s in sorted(optuna.get_all_study_summaries(storage), key=lambda s: s.study_name):
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        out.append((s.study_name, [(t.params, t.value) for t in done]))
    return out


@pytest.mark.parametrize("fault", STACK_FAULTS, ids=[f or "random" for f in STACK_FAULTS])
def test_stack_killed_anywhere_reruns_to_the_same_trials_and_predictions(baseline, tmp_path, fault):
    data, root, times = baseline
    cwd = fresh(tmp_path, root, "stack")
    killed_then_rerun("stack", data, cwd, fault, times["stack"])
    run_dir, want = cwd / "runs/isic2024/stack/lgb_xgb_cb", root / "runs/isic2024/stack/lgb_xgb_cb"
    for f in ("oof.parquet", "test.parquet"):
        same_frame(run_dir / f, want / f)
    got, expected = trials(run_dir), trials(want)
    assert [len(t) for _, t in got] == [3] * len(got)  # N_TRIALS complete trials per model, no more
    assert got == expected
    no_leftovers(run_dir)


SUBMIT_FAULTS = [
    "atomic.before_rename:1",  # the ledger's 'writing' row, mid-write
    "atomic.before_rename:2",  # the submission CSV, mid-write
    "submit.bundle:1",  # bundle and kernel staged, not committed
    None,
]


@pytest.mark.parametrize("fault", SUBMIT_FAULTS, ids=[f or "random" for f in SUBMIT_FAULTS])
def test_submit_killed_anywhere_reruns_to_one_identical_submission(baseline, tmp_path, fault):
    data, root, times = baseline
    cwd = fresh(tmp_path, root, "submit")
    killed_then_rerun("submit", data, cwd, fault, times["submit"])
    subs, want = cwd / "submissions/isic2024", root / "submissions/isic2024"
    got_csv, want_csv = sorted(subs.glob("*.csv")), sorted(want.glob("*.csv"))
    got_csv = [p for p in got_csv if p.name != "ledger.csv"]
    want_csv = [p for p in want_csv if p.name != "ledger.csv"]
    assert len(got_csv) == len(want_csv) == 1, got_csv
    assert got_csv[0].read_bytes() == want_csv[0].read_bytes()
    ledger, want_ledger = pd.read_csv(subs / "ledger.csv"), pd.read_csv(want / "ledger.csv")
    assert len(ledger) == 1
    cols = ["name", "sha256", "flow", "kaggle_status"]
    assert ledger[cols].to_dict("records") == want_ledger[cols].to_dict("records")
    for part in ("bundle/runs", "kernel"):
        got_files = sorted(p.relative_to(subs) for p in (subs / "kaggle" / part).rglob("*") if p.is_file())
        want_files = sorted(p.relative_to(want) for p in (want / "kaggle" / part).rglob("*") if p.is_file())
        assert got_files == want_files
        for rel in got_files:
            assert (subs / rel).read_bytes() == (want / rel).read_bytes(), rel
    no_leftovers(subs)
