"""Atomic file writing, hashing and provenance shared by every stage."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.pid{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files; give the usual umask-based mode
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
        fault_point("atomic.before_rename")
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp_path)` and move the result onto `path` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda p: p.write_text(text))


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_csv(path: str | Path, df: pd.DataFrame) -> Path:
    return write_atomic(path, lambda p: df.to_csv(p, index=False))


def write_parquet(path: str | Path, df: pd.DataFrame) -> Path:
    return write_atomic(path, lambda p: df.to_parquet(p, index=False))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def git_commit(cwd: str | Path | None = None) -> str:
    """The current git commit (with a '-dirty' suffix for uncommitted changes), or 'unknown'."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


# ---------------------------------------------------------------------------------------------- fault hook
FAULT_ENV = "FOLDSTACK_FAULT"
_fault_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Fault-injection hook for the kill -9 tests: with FOLDSTACK_FAULT="<name>:<n>" the process kills
    itself with SIGKILL the n-th time (1-based) it passes the point `name`. A no-op otherwise."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    want, _, nth = spec.rpartition(":")
    if want != name:
        return
    _fault_hits[name] = _fault_hits.get(name, 0) + 1
    if _fault_hits[name] == int(nth):
        import signal

        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------------------------------- sets
# A set is several files (or folders) that only make sense together: a fold's weights + predictions +
# record, the folds pair, a stack run. Members are staged under hidden names beside their final names;
# commit() writes a commit record (the commit point), renames every member into place and deletes the
# record. A reader or writer that finds a commit record rolls it forward; staged files whose writer is
# gone (its lock is free) are removed. The manifest member lists every member's size and sha256, and
# check_set refuses a set whose files do not match it.
COMMIT_SUFFIX = ".commit.json"
MANIFEST_KEY = "set_members"


def _folder_digest(path: Path) -> tuple[str, int]:
    h, total = hashlib.sha256(), 0
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        h.update(f"{rel}\0{sha256_file(f)}\n".encode())
        total += f.stat().st_size
    return h.hexdigest(), total


def folder_sha256(path: str | Path) -> str:
    """sha256 of a folder: over every file under it, in sorted order, its relative path and the sha256
    of its bytes. The same content gives the same digest wherever the folder lies."""
    if not Path(path).is_dir():
        raise FileNotFoundError(f"{path} is not a folder")
    return _folder_digest(Path(path))[0]


def _members_digest(path: Path) -> dict:
    """{"bytes", "sha256"} of a file, or of every file under a folder (`folder_sha256`)."""
    if path.is_dir():
        sha, total = _folder_digest(path)
        return {"bytes": total, "sha256": sha, "folder": True}
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


@contextlib.contextmanager
def folder_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive flock on the file `path` (created if missing, never removed: removing a lock
    file that others wait on would let two holders in). Blocks until it is free; a killed holder's lock
    is released by the kernel."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _claim(lock: Path) -> int | None:
    """Take `lock` without waiting: its fd (closing it releases the lock); -1 when the file is gone (its
    set was finished); None while a live process (the writer, or another recover) holds it."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _roll_forward(folder: Path, record: Path) -> None:
    """Carry out a commit record: every move, in order, skipping those already done; then clean up."""
    info = json.loads(record.read_text())
    for mv in info["moves"]:
        staged, final, old = folder / mv["staged"], folder / mv["final"], folder / mv["old"]
        if mv.get("drop"):
            if final.exists():
                os.replace(final, old)
        elif staged.exists():
            if final.is_dir() and not final.is_symlink():
                _remove(old)
                os.replace(final, old)  # a folder cannot be renamed onto a non-empty folder
            os.replace(staged, final)
        fault_point("set.commit.move")
    for mv in info["moves"]:
        _remove(folder / mv["old"])
    record.unlink(missing_ok=True)


def _tx_of(name: str) -> str | None:
    """The transaction a hidden set file belongs to ('.<set>.set-<pid>-<hex>'), or None."""
    if not name.startswith(".") or ".set-" not in name:
        return None
    for end in ("~", COMMIT_SUFFIX, ".lock"):
        name = name.split(end, 1)[0] if end == "~" else name.removesuffix(end)
    return name


def _stale_temp(name: str) -> bool | None:
    """For an atomic_path temp file ('.<file>.pid<N>.<rand>.tmp'): whether its writer is gone; else None."""
    m = re.fullmatch(r"\..*\.pid(\d+)\.[a-z0-9_]+\.tmp", name)
    if m is None:
        return None
    try:
        os.kill(int(m.group(1)), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive: another user's process
        pass
    return False


def recover(folder: str | Path) -> None:
    """Finish the set commits that killed writers left half done in `folder`; remove their staged files."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    by_tx: dict[str, list[Path]] = {}
    for p in folder.iterdir():
        stale = _stale_temp(p.name)
        if stale is not None:  # never a set's staged file: a live writer's temp file is not ours to touch
            if stale:
                p.unlink(missing_ok=True)
            continue
        tx = _tx_of(p.name)
        if tx is not None:
            by_tx.setdefault(tx, []).append(p)
    for tx, paths in sorted(by_tx.items()):
        lock, record = folder / f"{tx}.lock", folder / f"{tx}{COMMIT_SUFFIX}"
        fd = _claim(lock)  # held while rolling forward: two recovers never move the same set at once
        if fd is None:
            continue
        try:
            if record.exists():
                _roll_forward(folder, record)
            for p in sorted(paths, key=lambda p: p == lock):  # the lock file goes last
                if p.exists() and p != record:
                    _remove(p)
        finally:
            if fd >= 0:
                os.close(fd)


class SetWriter:
    """Stage the members of one set in `folder`, then commit them together.

        with SetWriter(folder, "fold3", manifest="fold3.json") as s:
            save_file(..., s.path("fold3.safetensors"))
            s.write_json("fold3.json", info)        # the manifest: set_members is added on commit
        # leaving the block commits; an exception discards every staged member

    Members are names directly inside `folder` (a file or a folder). Members not written keep their
    current files; `drop=[...]` names files or folders the commit removes (e.g. a checkpoint), and
    `replace_all=True` makes the folder hold exactly the new set: every other entry is dropped, except
    hidden ones and those whose name starts with one of `keep` (e.g. a study journal that outlives runs).
    `workdir()` gives a hidden folder to write into with ordinary paths: each of its top-level entries
    becomes a member on commit.
    """

    def __init__(
        self,
        folder: str | Path,
        name: str,
        manifest: str | None = None,
        drop: tuple = (),
        replace_all: bool = False,
        keep: tuple = (),
    ):
        self.folder, self.name, self.manifest, self.drop = Path(folder), name, manifest, tuple(drop)
        self.replace_all, self.keep = replace_all, tuple(keep)
        self._work: Path | None = None
        self.tx = f".{name}.set-{os.getpid()}-{os.urandom(4).hex()}"
        self.staged: dict[str, Path] = {}
        self._lock_fd: int | None = None

    def __enter__(self) -> SetWriter:
        self.folder.mkdir(parents=True, exist_ok=True)
        recover(self.folder)
        with atomic_path(self.folder / f"{self.tx}.lock") as tmp:  # the lock file appears already held:
            self._lock_fd = os.open(tmp, os.O_RDWR)  # another recover() never finds it free while we live
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        return self

    def path(self, member: str) -> Path:
        """Where to write `member` now (a hidden staging path); it becomes folder/member on commit."""
        if "/" in member or member in ("", ".", ".."):
            raise ValueError(f"a set member is a name inside {self.folder}, got {member!r}")
        p = self.folder / f"{self.tx}~{member}"
        self.staged[member] = p
        return p

    def workdir(self) -> Path:
        """A hidden folder in `folder`; what is written in it becomes members (by top-level name)."""
        if self._work is None:
            self._work = self.folder / f"{self.tx}~~work"
            self._work.mkdir()
        return self._work

    def write_json(self, member: str, obj: Any) -> Path:
        p = self.path(member)
        p.write_text(json.dumps(obj, indent=2, default=str) + "\n")
        return p

    def write_parquet(self, member: str, df: pd.DataFrame) -> Path:
        p = self.path(member)
        df.to_parquet(p, index=False)
        return p

    def write_csv(self, member: str, df: pd.DataFrame) -> Path:
        p = self.path(member)
        df.to_csv(p, index=False)
        return p

    def write_text(self, member: str, text: str) -> Path:
        p = self.path(member)
        p.write_text(text)
        return p

    def _finish_manifest(self) -> None:
        if self.manifest is None:
            return
        if self.manifest not in self.staged:
            self.write_json(self.manifest, {})
        mp = self.staged[self.manifest]
        body = json.loads(mp.read_text())
        body[MANIFEST_KEY] = {
            m: _members_digest(p) for m, p in sorted(self.staged.items()) if m != self.manifest
        }
        mp.write_text(json.dumps(body, indent=2, default=str) + "\n")

    def commit(self) -> None:
        if self._work is not None:
            for entry in sorted(self._work.iterdir()):
                os.replace(entry, self.path(entry.name))
            self._work.rmdir()
            self._work = None
        if self.replace_all:
            self.drop += tuple(
                p.name
                for p in sorted(self.folder.iterdir())
                if not p.name.startswith(".")
                and p.name not in self.staged
                and not p.name.startswith(self.keep)
            )
        self._finish_manifest()
        for p in self.staged.values():  # the data is on disk before the commit record says so
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        fault_point("set.commit.before")
        moves = [
            {"staged": p.name, "final": m, "old": f"{self.tx}~old~{m}"}
            for m, p in self.staged.items()
            if m != self.manifest
        ]
        moves += [{"staged": "", "final": d, "old": f"{self.tx}~old~{d}", "drop": True} for d in self.drop]
        if self.manifest is not None:  # last: a reader never sees a new manifest beside old members
            m = self.manifest
            moves.append({"staged": self.staged[m].name, "final": m, "old": f"{self.tx}~old~{m}"})
        record = self.folder / f"{self.tx}{COMMIT_SUFFIX}"
        write_json(record, {"moves": moves})
        fault_point("set.commit.recorded")
        _roll_forward(self.folder, record)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.commit()
            else:
                for p in [*self.staged.values(), *([self._work] if self._work else [])]:
                    _remove(p)
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                (self.folder / f"{self.tx}.lock").unlink(missing_ok=True)


def read_manifest(path: str | Path, deep: bool = True, only: tuple[str, ...] | None = None) -> dict:
    """The manifest JSON at `path`, after checking every member it lists (or those of them named in
    `only`, e.g. what a bundle copies) exists with its size (and, with deep=True, its sha256). A set
    that does not match raises DataError naming the file."""
    from foldstack.errors import DataError

    path = Path(path)
    recover(path.parent)
    if not path.exists():
        raise DataError(f"{path} is missing: the set it describes was never completed")
    try:
        body = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e}); rerun the step that writes it") from None
    for member, want in (body.get(MANIFEST_KEY) or {}).items():
        if only is not None and member not in only:
            continue
        p = path.parent / member
        if not p.exists():
            raise DataError(f"{p} is missing, though {path} lists it: the set is incomplete; rerun its step")
        got = _members_digest(p) if deep or p.is_dir() else {"bytes": p.stat().st_size}
        if got["bytes"] != want["bytes"] or (deep and got["sha256"] != want["sha256"]):
            raise DataError(
                f"{p} does not match {path} (size or sha256 differs): it was changed or replaced "
                f"after the set was written; rerun its step"
            )
    return body
