"""Optuna study rules: a COMPLETE-trial target, interrupted trials retried with their params, per-trial
seeding (kill -9 and rerun = uninterrupted), a PostgreSQL study shared by workers with heartbeats, and
the thread policy."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from foldstack import threads
from foldstack.errors import ConfigError
from foldstack.stage2.config import TuningCfg
from foldstack.stage2.engines import engine
from foldstack.stage2.tune import (
    estimator,
    inner_cv,
    retry_interrupted,
    storage_for,
    trial_position,
    tune,
)
from tests.tune_job import STUDY, TUNING, complete_trials, spec, tiny_data

REPO = Path(__file__).resolve().parents[1]


def job(*args: str, fault: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """python -m tests.tune_job ... with this checkout's code; FOLDSTACK_FAULT=fault when given."""
    env = os.environ | {"PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    env.pop("FOLDSTACK_FAULT", None)
    if fault:
        env["FOLDSTACK_FAULT"] = fault
    cmd = [sys.executable, "-m", "tests.tune_job", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def journal_study(path: Path) -> optuna.Study:
    t = TuningCfg()
    return optuna.load_study(study_name=STUDY, storage=storage_for(t, path))


@pytest.mark.slow
def test_killed_study_ends_like_an_uninterrupted_one(tmp_path):
    """6 COMPLETE trials straight vs killed (SIGKILL) mid-trial 3 and rerun: same params, same values."""
    t = TuningCfg(**TUNING)
    straight = complete_trials(tune(spec(), tiny_data(), t, tmp_path / "straight.journal", STUDY))
    assert len(straight) == 6

    killed = tmp_path / "killed.journal"
    # 3 inner folds per trial: the 10th fold is the first fold of trial 3
    res = job(str(killed), fault="stack.trial.fold:10")
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    s = journal_study(killed)
    assert [tr.state for tr in s.trials] == [TrialState.COMPLETE] * 3 + [TrialState.RUNNING]

    res = job(str(killed))
    assert res.returncode == 0, res.stderr[-2000:]
    s = journal_study(killed)
    interrupted = s.trials[3]
    assert interrupted.state == TrialState.FAIL
    retried = s.trials[4]
    assert retried.params == interrupted.params and retried.system_attrs["failed_trial"] == 3
    rerun = complete_trials(s)
    assert len(rerun) == 6
    assert [(r["params"], r["value"]) for r in rerun] == [(r["params"], r["value"]) for r in straight]

    # the study is finished: another run adds no trial at all
    res = job(str(killed))
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(journal_study(killed).trials) == len(s.trials)


def test_n_trials_is_the_total_of_complete_trials(tmp_path):
    t = TuningCfg(**TUNING | {"pruning": False})
    d, journal = tiny_data(), tmp_path / "s.journal"
    assert len(complete_trials(tune(spec(), d, t, journal, STUDY, n_trials=3))) == 3
    assert len(tune(spec(), d, t, journal, STUDY, n_trials=3).trials) == 3  # finished: adds none
    assert len(tune(spec(), d, t, journal, STUDY, n_trials=2).trials) == 3  # a smaller target: none
    s = tune(spec(), d, t, journal, STUDY, n_trials=5)
    assert len(complete_trials(s)) == 5 and len(s.trials) == 5


TRIAL_LINE = re.compile(
    r"tune lgbm \[worker (?P<worker>[12])/2\]: trial (?P<number>\d+) "
    r"(?:inner-CV pauc80 (?P<value>\d\.\d{4})|pruned after \d inner fold\(s\)) "
    r"\(best (?P<best>\d\.\d{4}), trial \d+\); (?P<done>\d+)/6 complete; \d+\.\d s"
)


@pytest.mark.slow
def test_every_trial_prints_one_whole_line_into_a_log_file(tmp_path):
    """stdout a plain file (as under nohup), two worker processes: one whole line per finished trial
    with the model, trial number, inner-CV score, best so far, n/target COMPLETE and seconds."""
    # unbuffered: every write is its own system call, the case where a line written in pieces would mix
    env = os.environ | {"PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}", "PYTHONUNBUFFERED": "1"}
    env.pop("FOLDSTACK_FAULT", None)
    journal, log = tmp_path / "s.journal", tmp_path / "log.txt"
    with log.open("w") as out:
        cmd = [sys.executable, "-m", "tests.tune_job", str(journal), "--workers", "2"]
        res = subprocess.run(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.PIPE, text=True, timeout=120
        )
    assert res.returncode == 0, res.stderr[-2000:]
    lines = log.read_text().splitlines()
    assert (
        lines[0] == f"tune lgbm: study {STUDY} holds 0/6 COMPLETE trials; running the rest with 2 worker(s)"
    )
    done = json.loads(lines[-1])
    trial_lines = lines[1:-1]
    matches = [TRIAL_LINE.fullmatch(line) for line in trial_lines]
    assert all(matches), [line for line, m in zip(trial_lines, matches, strict=True) if not m]
    study = journal_study(journal)
    finished = [tr for tr in study.trials if tr.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert sorted(int(m["number"]) for m in matches) == [tr.number for tr in finished]
    by_number = {int(m["number"]): m for m in matches}
    for r in done:  # the printed score is the trial's value
        assert by_number[r["number"]]["value"] == f"{r['value']:.4f}"
    best = max(r["value"] for r in done)
    assert f"{best:.4f}" in {m["best"] for m in matches}
    assert max(int(m["done"]) for m in matches) == len(done)


@pytest.mark.slow
def test_a_trial_line_reaches_the_log_file_while_the_study_runs(tmp_path):
    """Not held in a buffer until the process ends: trial 0's line is in the file before trial 1 ends
    (a buffered stdout would write both, and the study's JSON, at exit)."""
    env = os.environ | {"PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    env.pop("FOLDSTACK_FAULT", None)
    env.pop("PYTHONUNBUFFERED", None)  # Python's default: a file's stdout is block-buffered
    log = tmp_path / "log.txt"
    tuning = json.dumps({"pruning": False})
    cmd = [
        sys.executable,
        "-m",
        "tests.tune_job",
        str(tmp_path / "s.journal"),
        "--n",
        "2",
        "--tuning",
        tuning,
    ]
    with log.open("w") as out:
        # every fit sleeps 1 s: trial 1 (3 inner fits) ends 3 s or more after trial 0
        proc = subprocess.Popen([*cmd, "--fit-sleep", "1"], cwd=REPO, env=env, stdout=out, stderr=out)
        try:
            seen = ""
            while proc.poll() is None and "trial 0 inner-CV" not in seen:
                time.sleep(0.05)
                seen = log.read_text()
        finally:
            proc.wait(timeout=120)
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert "tune lgbm: trial 0 inner-CV pauc80" in seen, seen
    assert "trial 1" not in seen, "trial 0's line was written only with trial 1's, at exit"
    assert "tune lgbm: trial 1 inner-CV pauc80" in log.read_text()


def test_an_interrupted_trial_is_retried_once_with_its_params(tmp_path):
    storage = storage_for(TuningCfg(), tmp_path / "s.journal")
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    study.enqueue_trial({"x": 0.25})
    trial = study.ask()  # a process that started this trial and died: RUNNING forever
    trial.suggest_float("x", 0, 1)
    # an earlier start queued the copy, then was killed before failing the original
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback()(study, study.trials[0])
    assert retry_interrupted(study, owned=True) == [0]
    states = [tr.state for tr in study.trials]
    assert states == [TrialState.FAIL, TrialState.WAITING]  # one copy, not two
    assert study.trials[1].params == {"x": 0.25} and study.trials[1].system_attrs["failed_trial"] == 0
    assert retry_interrupted(study, owned=True) == []
    # the copy takes the failed trial's place in the positions that seed the sampler
    assert trial_position(study, study.trials[1]) == 0


def test_bad_database_url_is_a_config_error_without_the_password():
    t = TuningCfg(storage="postgresql://user:s3cret@127.0.0.1:1/nodb")
    with pytest.raises(ConfigError, match=re.escape("tuning.storage=postgresql://user:***@")) as e:
        storage_for(t, Path("unused.journal"))
    assert "s3cret" not in str(e.value)


def test_grace_period_must_exceed_the_heartbeat_interval():
    with pytest.raises(ValueError, match="grace_period"):
        TuningCfg(heartbeat_interval=10, grace_period=10)


def test_threads_follow_the_affinity_and_sleep_when_idle(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4}, raising=False)
    assert threads.usable_cores() == 5
    assert engine("lightgbm").thread_params() == {"n_jobs": 5}
    assert engine("xgboost").thread_params(workers=2) == {"nthread": 2}
    assert engine("xgboost").thread_params(workers=8) == {"nthread": 1}
    assert engine("catboost").thread_params() == {"thread_count": 5}
    assert engine("knn").thread_params() == {}
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # a user's choice is kept
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    threads.passive_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE" and os.environ["GOMP_SPINCOUNT"] == "0"


@pytest.mark.slow
def test_stack_entry_point_sets_the_wait_policy_before_openmp_loads():
    """pipelines/stack.py must set OMP_WAIT_POLICY before lightgbm is imported (read once, at load)."""
    code = (
        "import runpy, sys, os; sys.argv = ['stack.py', '--help']\n"
        "try:\n    runpy.run_path('pipelines/stack.py', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "import lightgbm\n"
        "print(os.environ.get('OMP_WAIT_POLICY'))"
    )
    env = {k: v for k, v in os.environ.items() if k not in threads.PASSIVE_ENV}
    env["PYTHONPATH"] = str(REPO / "src")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "PASSIVE"
    src = (REPO / "pipelines" / "stack.py").read_text()
    assert src.index("passive_openmp()") < src.index("from foldstack.stage2")


# ------------------------------------------------------------------------------ PostgreSQL storage
def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server on 127.0.0.1 (run as the postgres user when we are root, which the
    server refuses), trust auth, one database; stopped and deleted at the end."""
    bindir = _postgres_bin()
    if bindir is None:
        msg = "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run `make setup-db`"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    root = Path(tempfile.mkdtemp(prefix="foldstack-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    run = lambda *cmd: subprocess.run([*as_user, *map(str, cmd)], capture_output=True, text=True)  # noqa: E731
    res = run(bindir / "initdb", "-D", data, "-A", "trust", "-U", "foldstack", "--no-sync")
    assert res.returncode == 0, res.stderr
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=40"
    res = run(bindir / "pg_ctl", "-D", data, "-l", root / "server.log", "-o", opts, "-w", "start")
    assert res.returncode == 0, res.stderr + (root / "server.log").read_text()
    try:
        res = run(bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "foldstack", "optuna")
        assert res.returncode == 0, res.stderr
        yield f"postgresql://foldstack@127.0.0.1:{port}/optuna"
    finally:
        run(bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_postgres_study_survives_a_killed_worker(postgres_url, tmp_path):
    """Two workers (as on two machines) on one PostgreSQL study; one is SIGKILLed mid-trial. Its trial
    is failed by heartbeat and retried with its params by the other; the study ends with the requested
    COMPLETE trials, and the retried trial's value is what its params give."""
    n, rows, trees = 10, 600, 30
    tuning = json.dumps(
        {"storage": postgres_url, "heartbeat_interval": 1, "grace_period": 2, "pruning": False}
    )
    args = ["unused.journal", "--tuning", tuning, "--n", str(n), "--rows", str(rows), "--trees", str(trees)]
    args += ["--fit-sleep", "0.25"]  # trials of 0.75 s or more: the survivor outlives the grace period
    env = os.environ | {"PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    cmd = [sys.executable, "-m", "tests.tune_job", *args]
    # the victim dies in its second trial after one inner fold, the survivor carries on
    victim = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=env | {"FOLDSTACK_FAULT": "stack.trial.fold:4"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    survivor = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _, verr = victim.communicate(timeout=120)
    sout, serr = survivor.communicate(timeout=120)
    assert victim.returncode == -signal.SIGKILL, verr[-2000:]
    assert survivor.returncode == 0, serr[-2000:]

    t = TuningCfg(storage=postgres_url, heartbeat_interval=1, grace_period=2)
    study = optuna.load_study(study_name=STUDY, storage=storage_for(t, tmp_path / "unused.journal"))
    done = complete_trials(study)
    assert len(done) in (n, n + 1)  # a second worker may finish one trial past the target
    assert json.loads(sout.strip().splitlines()[-1]) == done
    failed = [tr for tr in study.trials if tr.state == TrialState.FAIL]
    assert len(failed) == 1, [(tr.number, tr.state) for tr in study.trials]
    retries = [tr for tr in study.trials if tr.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == failed[0].params
    assert not [tr for tr in study.trials if tr.state in (TrialState.RUNNING, TrialState.WAITING)]
    d = tiny_data(rows)
    again = inner_cv(estimator(spec(trees), retries[0].params, TUNING["seed"], d.n_classes), d)
    assert again == retries[0].value
