"""Sets written by several processes into one folder at once (fold jobs of one run): each writer's
recover() must leave the other writers' staged files, commit records and locks alone."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

from foldstack import artifacts
from tests.conftest import REPO


def _python(script: str, *args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], cwd=REPO, **kw)


def _dead_pid() -> int:
    p = _python("pass")
    p.wait()
    return p.pid


def test_recover_removes_only_the_temp_files_of_writers_that_are_gone(tmp_path):
    live = tmp_path / f"..fold1.set-1-0a0b0c0d.commit.json.pid{os.getpid()}.k2x_9abc.tmp"
    dead = tmp_path / f"..fold2.set-1-0a0b0c0e.commit.json.pid{_dead_pid()}.k2x_9abd.tmp"
    plain = tmp_path / f".oof.parquet.pid{os.getpid()}.zz11aa00.tmp"
    for p in (live, dead, plain):
        p.write_text("{}")
    artifacts.recover(tmp_path)
    assert live.exists() and plain.exists(), "a live writer's temp file was removed"
    assert not dead.exists(), "a killed writer's temp file was left"


class _FlockThatRecoversFirst:
    """fcntl whose blocking flock first lets recover() run, as another job's could at that moment."""

    def __init__(self, folder):
        self.folder, self.calls = folder, 0

    def __getattr__(self, name):
        import fcntl

        return getattr(fcntl, name)

    def flock(self, fd, op):
        import fcntl

        if op == fcntl.LOCK_EX and self.calls == 0:
            self.calls += 1
            artifacts.recover(self.folder)
        return fcntl.flock(fd, op)


def test_a_set_lock_is_held_from_the_moment_its_name_appears(tmp_path, monkeypatch):
    shim = _FlockThatRecoversFirst(tmp_path)
    monkeypatch.setattr(artifacts, "fcntl", shim)
    with artifacts.SetWriter(tmp_path, "fold0", manifest="fold0.json") as s:
        assert shim.calls == 1
        lock = tmp_path / f"{s.tx}.lock"
        assert lock.exists() and artifacts._claim(lock) is None
        s.write_text("a.txt", "a")
        artifacts.recover(tmp_path)  # another job's recover while this set is staged
        assert s.staged["a.txt"].exists()
    assert (tmp_path / "a.txt").read_text() == "a"
    assert artifacts.read_manifest(tmp_path / "fold0.json")[artifacts.MANIFEST_KEY]["a.txt"]["bytes"] == 1


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from foldstack import artifacts
    folder, job, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    for i in range(n):
        name = f"job{job}_{i}"
        with artifacts.SetWriter(folder, name, manifest=f"{name}.json") as s:
            s.write_text(f"{name}.txt", name * 50)
            s.write_json(f"{name}.json", {"i": i})
    """
)


def test_many_writers_commit_sets_into_one_folder_at_once(tmp_path):
    jobs, n = 4, 40
    procs = [
        _python(WRITER, tmp_path, j, n, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for j in range(jobs)
    ]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    for j in range(jobs):
        for i in range(n):
            name = f"job{j}_{i}"
            assert artifacts.read_manifest(tmp_path / f"{name}.json")["i"] == i
            assert (tmp_path / f"{name}.txt").read_text() == name * 50
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


KILLED_MID_COMMIT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from foldstack import artifacts
    folder, n = Path(sys.argv[1]), int(sys.argv[2])
    with artifacts.SetWriter(folder, "fold0", manifest="fold0.json") as s:
        for i in range(n):
            s.write_text(f"m{i}.txt", f"new {i}")
        (s.workdir() / "model").mkdir()
        (s.workdir() / "model" / "w.bin").write_text("new weights")
        s.write_json("fold0.json", {"version": "new"})
    """
)
RECOVER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from foldstack import artifacts
    folder, go, ready = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    ready.touch()
    while not go.exists():
        time.sleep(0.001)
    artifacts.recover(folder)
    """
)


def test_recovers_racing_over_a_killed_commit_finish_it_once(tmp_path):
    n = 300
    for round_ in range(3):
        folder, go = tmp_path / f"r{round_}", tmp_path / f"go{round_}"
        with artifacts.SetWriter(folder, "fold0", manifest="fold0.json") as s:  # the set before: old content
            for i in range(n):
                s.write_text(f"m{i}.txt", f"old {i}")
            (s.workdir() / "model").mkdir()
            (s.workdir() / "model" / "w.bin").write_text("old weights")
        e = {**os.environ, artifacts.FAULT_ENV: "set.commit.recorded:1"}
        assert _python(KILLED_MID_COMMIT, folder, n, env=e).wait() == -9
        assert any(p.name.endswith(artifacts.COMMIT_SUFFIX) for p in folder.iterdir())
        ready = [tmp_path / f"ready{round_}_{k}" for k in range(4)]
        racers = [_python(RECOVER, folder, go, r) for r in ready]
        while not all(r.exists() for r in ready):  # every racer imported and waiting
            time.sleep(0.01)
        go.touch()
        assert [p.wait(timeout=120) for p in racers] == [0] * 4
        assert artifacts.read_manifest(folder / "fold0.json")["version"] == "new"
        assert all((folder / f"m{i}.txt").read_text() == f"new {i}" for i in range(n))
        assert (folder / "model" / "w.bin").read_text() == "new weights"
        assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]
