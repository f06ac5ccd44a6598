"""Drive the real `kaggle` CLI (2.x) for file and code competitions.

Every command is printed as `$ kaggle ...` before it runs; with dry_run nothing runs. Credentials are the
CLI's own (see `credentials_status`); the key never appears in what this module prints or raises.

Quirks of kaggle 2.2.4 handled here (see `_FAILURE_MARKERS`): several failures exit 0 and only print a
message, e.g. a failed upload of a submission file prints "Could not submit to competition", a dataset
file that failed to upload is left out of the new version ("Upload unsuccessful: ..."), and an error from
SaveKernel prints "Kernel push error: ...".

The waits (`wait_dataset_ready`, `wait_kernel`, `wait_score`) poll a status command, print its `$ kaggle ...`
once and then one progress line when the status changes (or every PROGRESS_EVERY_S); a poll that fails is
retried up to POLL_ERRORS times in a row, so a network blip does not end a nine-hour wait.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from foldstack.errors import FoldstackError

TIMEOUT_S = 600
DATASET_METADATA = "dataset-metadata.json"
KERNEL_METADATA = "kernel-metadata.json"
PROGRESS_EVERY_S = 60  # a wait prints a line when the status changes, else at most this often
POLL_ERRORS = 3  # failed status polls in a row that end a wait
LOG_LINES = 40

# Output by which the CLI reports a failure although it exits 0 (kaggle 2.2.4), per command.
_FAILURE_MARKERS: dict[tuple[str, str], tuple[str, ...]] = {
    ("competitions", "submit"): (
        "Could not submit to competition",  # upload of the submission file failed; nothing was submitted
        "Could not find competition",  # 404 on submit (unreachable in 2.2.4, kept for other versions)
    ),
    ("datasets", "version"): (
        "Dataset version creation error",
        "Upload unsuccessful:",  # a file was not uploaded, yet the version is created without it
    ),
    ("datasets", "create"): ("Dataset creation error", "Upload unsuccessful:"),
    ("kernels", "push"): (
        "Kernel push error",
        "not valid dataset sources",  # the kernel was saved but would run without these inputs
        "not valid competition sources",
        "not valid kernel sources",
    ),
}
_NOT_FOUND = re.compile(r"\b404\b|not found|does not exist", re.IGNORECASE)
_KERNEL_VERSION = re.compile(r"Kernel version (\d+) successfully pushed")
_KERNEL_STATUS = re.compile(r'has status "(?:KernelWorkerStatus\.)?(\w+)"')
_KERNEL_FAILURE = re.compile(r'^Failure message: "(.*)"\s*$', re.MULTILINE | re.DOTALL)
_REF = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


class KaggleError(FoldstackError):
    """The kaggle CLI is missing, has no credentials, or a command failed."""


def kaggle_bin() -> str:
    """The `kaggle` executable beside the running Python (its venv), else the one on PATH."""
    beside = Path(sys.executable).parent / ("kaggle.exe" if os.name == "nt" else "kaggle")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("kaggle")
    if found:
        return found
    raise KaggleError(
        f"the kaggle CLI is not installed: no {beside} and no `kaggle` on PATH; "
        f"install it with `{sys.executable} -m pip install kaggle`"
    )


# --- credentials ------------------------------------------------------------------------------


def _home(env: Mapping[str, str]) -> Path:
    return Path(env["HOME"]) if env.get("HOME") else Path.home()


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where the CLI reads kaggle.json: $KAGGLE_CONFIG_DIR, ~/.kaggle, or (Linux) $XDG_CONFIG_HOME/kaggle."""
    env = os.environ if env is None else env
    if env.get("KAGGLE_CONFIG_DIR"):
        return Path(env["KAGGLE_CONFIG_DIR"])
    legacy = _home(env) / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        return Path(env.get("XDG_CONFIG_HOME") or _home(env) / ".config") / "kaggle"
    return legacy


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _access_token(env: Mapping[str, str]) -> tuple[str, str]:
    """(token, where) as the CLI finds it: $KAGGLE_API_TOKEN (value or file), ~/.kaggle/access_token[.txt]."""
    value = env.get("KAGGLE_API_TOKEN", "")
    if value:
        from_file = _read_text(Path(value))
        if from_file:
            return from_file, f"file named by KAGGLE_API_TOKEN ({value})"
        return value, "KAGGLE_API_TOKEN"
    for name in ("access_token", "access_token.txt"):
        path = _home(env) / ".kaggle" / name
        if _read_text(path):
            return _read_text(path), str(path)
    return "", ""


def _read_text(path: Path) -> str:
    """The stripped text of a file, '' if it is not a readable file (or the 'path' is really a token)."""
    try:
        return path.read_text().strip() if path.is_file() else ""
    except (OSError, ValueError):
        return ""


def credentials_status(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """How the kaggle CLI would authenticate, without the secret itself.

    Keys: ok, method ('access_token' | 'api_key' | 'oauth' | None), username (None if unknown), source,
    config_file, config_file_exists, config_file_mode (octal string or None), insecure_permissions.
    The CLI tries an access token first, then username+key (kaggle.json overridden by KAGGLE_USERNAME /
    KAGGLE_KEY), then OAuth credentials from `kaggle auth login` (~/.kaggle/credentials.json).
    """
    env = os.environ if env is None else env
    cfg = config_dir(env) / "kaggle.json"
    data = _read_json(cfg) if cfg.is_file() else {}
    mode = stat.S_IMODE(cfg.stat().st_mode) if cfg.is_file() else None
    username = env.get("KAGGLE_USERNAME") or data.get("username")
    has_key = bool(env.get("KAGGLE_KEY") or data.get("key"))
    status: dict[str, Any] = {
        "ok": True, "method": None, "username": username, "source": "",
        "config_file": str(cfg), "config_file_exists": cfg.is_file(),
        "config_file_mode": None if mode is None else oct(mode),
        "insecure_permissions": bool(mode is not None and mode & 0o077),
    }  # fmt: skip
    token, where = _access_token(env)
    oauth = _read_json(_home(env) / ".kaggle" / "credentials.json")
    if token:
        status.update(method="access_token", source=where)
    elif username and has_key:
        from_env = bool(env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY"))
        status.update(method="api_key", source="KAGGLE_USERNAME/KAGGLE_KEY" if from_env else str(cfg))
    elif oauth.get("refresh_token"):
        status.update(method="oauth", username=oauth.get("username"), source="~/.kaggle/credentials.json")
    else:
        status.update(ok=False, username=None)
    return status


def _missing_credentials_message(cfg: str) -> str:
    return (
        "no Kaggle credentials found. Create an API token at https://www.kaggle.com/settings/api, then "
        f"either save the downloaded kaggle.json as {cfg} and run `chmod 600 {cfg}` "
        "(set KAGGLE_CONFIG_DIR to use another folder), or export KAGGLE_USERNAME and KAGGLE_KEY, "
        "or export KAGGLE_API_TOKEN (or save the token to ~/.kaggle/access_token)"
    )


def check_credentials(env: Mapping[str, str] | None = None) -> str:
    """The Kaggle username the CLI will use ('' when only an access token names the user).

    Raises KaggleError saying where to put credentials when there are none; warns when kaggle.json is
    readable by group or others.
    """
    status = credentials_status(env)
    if status["insecure_permissions"]:
        cfg = status["config_file"]
        warnings.warn(
            f"{cfg} is readable by other users (mode {status['config_file_mode']}); run `chmod 600 {cfg}`",
            UserWarning,
            stacklevel=2,
        )
    if not status["ok"]:
        raise KaggleError(_missing_credentials_message(status["config_file"]))
    return status["username"] or ""


def _secrets(env: Mapping[str, str]) -> list[str]:
    cfg = _read_json(config_dir(env) / "kaggle.json")
    oauth = _read_json(_home(env) / ".kaggle" / "credentials.json")
    found = [env.get("KAGGLE_KEY", ""), str(cfg.get("key") or ""), _access_token(env)[0]]
    found += [str(oauth.get("refresh_token") or ""), str(oauth.get("access_token") or "")]
    user = env.get("KAGGLE_USERNAME") or str(cfg.get("username") or "")
    for key in (env.get("KAGGLE_KEY", ""), str(cfg.get("key") or "")):
        if key:  # what a verbose CLI prints in its Authorization: Basic header
            found.append(base64.b64encode(f"{user}:{key}".encode()).decode())
    return sorted({s for s in found if s}, key=len, reverse=True)


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """`text` with every Kaggle secret (key, tokens, Basic-auth value) replaced by '***'."""
    for secret in _secrets(os.environ if env is None else env):
        text = text.replace(secret, "***")
    return text


# --- running the CLI --------------------------------------------------------------------------


_PROGRESS = re.compile(r"\d+%\|")  # tqdm progress bars on stderr


def _tail(text: str, lines: int = 40) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip() and not _PROGRESS.search(line)]
    return "\n".join(kept[-lines:])


def run(
    args: list[str],
    dry_run: bool,
    env: Mapping[str, str] | None = None,
    echo: bool = True,
    show: bool = True,
) -> subprocess.CompletedProcess[str] | None:
    """Print `$ kaggle ARGS` (unless show is False: a repeated poll); unless dry_run, run it and return
    the result with redacted output.

    env is the complete environment of the CLI (default: os.environ). With echo, the CLI's stdout is
    printed (redacted). Raises KaggleError on a non-zero exit, on output by which the CLI reports a
    failure while exiting 0, on a timeout, or when there are no credentials.
    """
    if show:
        print("$ kaggle " + shlex.join(args), flush=True)
    if dry_run:
        return None
    env = dict(os.environ if env is None else env)
    check_credentials(env)
    try:
        proc = subprocess.run(
            [kaggle_bin(), *args], capture_output=True, text=True, timeout=TIMEOUT_S, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        raise KaggleError(f"`kaggle {shlex.join(args[:2])}` timed out after {TIMEOUT_S} s") from None
    except OSError as exc:
        raise KaggleError(f"could not start the kaggle CLI: {exc}") from None
    result = subprocess.CompletedProcess(
        proc.args, proc.returncode, redact(proc.stdout, env), redact(proc.stderr, env)
    )
    _raise_on_failure(args, result)
    if echo and result.stdout.strip():
        print(result.stdout.rstrip(), flush=True)
    return result


def _raise_on_failure(args: list[str], result: subprocess.CompletedProcess[str]) -> None:
    output = f"{result.stdout}\n{result.stderr}"  # the CLI prints its exception last, on stderr
    what = f"`kaggle {shlex.join(args[:2])}`"
    if result.returncode != 0:
        raise KaggleError(f"{what} failed (exit {result.returncode}):\n{_tail(output)}")
    markers = _FAILURE_MARKERS.get((args[0], args[1]) if len(args) > 1 else ("", ""), ())
    marker = next((m for m in markers if m in output), None)
    if marker:
        raise KaggleError(f"{what} reported a failure although it exited 0 ({marker!r}):\n{_tail(output)}")


# --- file competitions ------------------------------------------------------------------------


def submit_file(slug: str, file: str | Path, message: str, dry_run: bool = False) -> None:
    """`kaggle competitions submit -c SLUG -f FILE -m MESSAGE` (uploads the file as it is, no zip)."""
    if not Path(file).is_file():
        raise KaggleError(f"submission file not found: {file}")
    run(["competitions", "submit", "-c", slug, "-f", str(file), "-m", message], dry_run)


def _submission_row(row: dict[str, str]) -> dict[str, Any]:
    status = row.get("status", "")
    return {
        "ref": row.get("ref", ""),
        "file_name": row.get("fileName", ""),
        "date": row.get("date", ""),
        "description": row.get("description", ""),
        "status": status.rsplit(".", 1)[-1].lower(),  # 'SubmissionStatus.COMPLETE' -> 'complete'
        "public_score": row.get("publicScore", ""),
        "private_score": row.get("privateScore", ""),
    }


def latest_submission(slug: str, show: bool = True) -> dict[str, Any] | None:
    """The newest submission (`kaggle competitions submissions -c SLUG --csv`), or None if there is none.

    Keys: ref, file_name, date, description, status ('pending' | 'complete' | 'error'), public_score,
    private_score (scores are strings, '' while pending). show=False does not print the command.
    """
    result = run(["competitions", "submissions", "-c", slug, "--csv"], dry_run=False, echo=False, show=show)
    if result is None:
        raise KaggleError("`kaggle competitions submissions` returned nothing (it ran as a dry run)")
    lines = result.stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("ref,")), None)
    if start is None:
        if "No submissions found" in result.stdout:
            return None
        raise KaggleError(f"unexpected output of `kaggle competitions submissions`:\n{_tail(result.stdout)}")
    rows = list(csv.DictReader(lines[start:]))
    return _submission_row(rows[0]) if rows else None


# --- code competitions ------------------------------------------------------------------------


def _metadata(folder: str | Path, name: str) -> dict[str, Any]:
    path = Path(folder) / name
    if not path.is_file():
        raise KaggleError(f"{path} not found: the folder must hold {name}")
    data = _read_json(path)
    if not data:
        raise KaggleError(f"{path} is not a JSON object")
    return data


def _check_ref(ref: Any, what: str) -> str:
    if not isinstance(ref, str) or not _REF.match(ref):
        raise KaggleError(f"{what} must look like OWNER/SLUG, got {ref!r}")
    return ref


def _dataset_exists(ref: str) -> bool:
    """`kaggle datasets status REF`: True if found, False on 'not found', KaggleError otherwise."""
    try:
        run(["datasets", "status", ref], dry_run=False, echo=False)
    except KaggleError as exc:
        if _NOT_FOUND.search(str(exc).split("\n", 1)[-1]):
            return False
        raise
    return True


def push_dataset(folder: str | Path, message: str, dry_run: bool = False) -> str:
    """Upload `folder` as a new version of its dataset, creating the (private) dataset if it is new.

    The folder holds dataset-metadata.json with `id` OWNER/SLUG (and, for a new dataset, `title` and
    one `licenses` entry). Subfolders are uploaded as zip archives (`-r zip`). Returns OWNER/SLUG.
    A dry run prints the `version` command (existence is not checked).
    """
    ref = _check_ref(_metadata(folder, DATASET_METADATA).get("id"), f"`id` in {DATASET_METADATA}")
    version = ["datasets", "version", "-p", str(folder), "-m", message, "-r", "zip"]
    if dry_run:
        run(version, dry_run=True)
    elif _dataset_exists(ref):
        run(version, dry_run=False)
    else:
        print(f"dataset {ref} does not exist yet: creating it (private)", flush=True)
        run(["datasets", "create", "-p", str(folder), "-r", "zip"], dry_run=False)
    return ref


def push_kernel(folder: str | Path, dry_run: bool = False) -> int | None:
    """`kaggle kernels push -p FOLDER`; the new kernel version number (None on a dry run).

    The folder holds kernel-metadata.json (id, code_file, language, kernel_type, sources, flags).
    """
    meta = _metadata(folder, KERNEL_METADATA)
    _check_ref(meta.get("id"), f"`id` in {KERNEL_METADATA}")
    result = run(["kernels", "push", "-p", str(folder)], dry_run)
    if result is None:
        return None
    match = _KERNEL_VERSION.search(result.stdout)
    if match is None:
        raise KaggleError(f"`kaggle kernels push` printed no version number:\n{_tail(result.stdout)}")
    return int(match.group(1))


def submit_code(
    slug: str, kernel_ref: str, version: int | None, file_name: str, message: str, dry_run: bool = False
) -> None:
    """Submit output FILE_NAME of kernel OWNER/KERNEL at VERSION to a code competition.

    `kaggle competitions submit -c SLUG -k OWNER/KERNEL -v VERSION -f FILE_NAME -m MESSAGE`.
    On a dry run the version may be None (the push that would number it did not happen).
    """
    _check_ref(kernel_ref, "kernel_ref")
    if version is None and dry_run:
        shown = "VERSION"
    elif version is None or int(version) < 1:
        raise KaggleError(f"kernel version must be a positive integer, got {version!r}")
    else:
        shown = str(int(version))
    args = ["competitions", "submit", "-c", slug, "-k", kernel_ref, "-v", shown]
    run([*args, "-f", file_name, "-m", message], dry_run)


# --- waiting for Kaggle -----------------------------------------------------------------------

_DATASET_FAILED = ("failed", "deleted")
_KERNEL_FAILED = ("error", "cancel_requested", "cancel_acknowledged")
_SCORED = ("complete", "error")


def _last_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[-1] if lines else type(exc).__name__


def _stdout(args: list[str], show: bool) -> str:
    result = run(args, dry_run=False, echo=False, show=show)
    if result is None:
        raise KaggleError(f"`kaggle {shlex.join(args[:2])}` returned nothing (it ran as a dry run)")
    return result.stdout


def _poll(
    what: str, read: Callable[[bool], str], done: Callable[[str], bool], timeout_s: float, poll_s: float
) -> tuple[str, float, bool]:
    """Call read(show_command) every poll_s seconds until done(status) or timeout_s has passed.

    Returns (last status, seconds waited, whether done). Reads at least once. Prints `waiting for WHAT:
    STATUS (N s of T s)` when the status changes, else at most every PROGRESS_EVERY_S; a read that raises
    KaggleError is retried, the POLL_ERRORS-th failure in a row is raised.
    """
    start = time.monotonic()
    status, shown, shown_at, polls, errors = "", None, 0.0, 0, 0
    while True:
        try:
            status, errors = read(polls == 0), 0
        except KaggleError as exc:
            errors += 1
            if errors >= POLL_ERRORS:
                raise
            reason = _last_line(exc)
            print(f"could not read the status of {what} ({errors} of {POLL_ERRORS}): {reason}", flush=True)
        polls += 1
        waited = time.monotonic() - start
        if status and done(status):
            print(f"{what}: {status} after {waited:.0f} s", flush=True)
            return status, waited, True
        if status != shown or waited - shown_at >= PROGRESS_EVERY_S:
            line = f"waiting for {what}: {status or 'unknown'} ({waited:.0f} s of {timeout_s:g} s)"
            print(line, flush=True)
            shown, shown_at = status, waited
        if waited >= timeout_s:
            return status, waited, False
        time.sleep(max(0.0, min(poll_s, timeout_s - waited)))


def wait_dataset_ready(ref: str, timeout_s: float = 1800, poll_s: float = 30, dry_run: bool = False) -> None:
    """Poll `kaggle datasets status OWNER/SLUG` until the dataset's newest version is `ready`.

    Raises KaggleError when it ends `failed` or `deleted` (with the CLI's output), or when it is not ready
    after timeout_s (naming the dataset, its last status and the seconds waited). A dry run only prints
    the command.
    """
    args = ["datasets", "status", _check_ref(ref, "dataset ref")]
    if dry_run:
        run(args, dry_run=True)
        return
    last = {"output": ""}

    def read(show: bool) -> str:
        last["output"] = _stdout(args, show)
        lines = last["output"].strip().splitlines()
        return lines[-1].strip().lower() if lines else ""

    done = ("ready", *_DATASET_FAILED)
    status, waited, ended = _poll(f"dataset {ref}", read, lambda s: s in done, timeout_s, poll_s)
    if not ended:
        raise KaggleError(
            f"dataset {ref} is not ready after {waited:.0f} s (timeout {timeout_s:g} s): its status is "
            f"still {status or 'unknown'!r}; see https://www.kaggle.com/datasets/{ref}"
        )
    if status != "ready":
        raise KaggleError(
            f"dataset {ref} is {status} after {waited:.0f} s; `kaggle datasets status {ref}` printed:\n"
            f"{_tail(last['output'])}"
        )


def wait_kernel(ref: str, timeout_s: float = 32400, poll_s: float = 30, dry_run: bool = False) -> None:
    """Poll `kaggle kernels status OWNER/SLUG` until the kernel's newest run is complete.

    When it ends in error or is cancelled, raises KaggleError with Kaggle's failure message and the last
    LOG_LINES lines of the run's log (see `kernel_log_tail`); also on timeout. A dry run only prints the
    command.
    """
    args = ["kernels", "status", _check_ref(ref, "kernel ref")]
    if dry_run:
        run(args, dry_run=True)
        return
    failure = {"message": ""}

    def read(show: bool) -> str:
        out = _stdout(args, show)
        match = _KERNEL_STATUS.search(out)
        if match is None:
            raise KaggleError(f"unexpected output of `kaggle kernels status {ref}`:\n{_tail(out)}")
        message = _KERNEL_FAILURE.search(out)
        failure["message"] = message.group(1).strip() if message else ""
        return match.group(1).lower()

    done = ("complete", *_KERNEL_FAILED)
    status, waited, ended = _poll(f"kernel {ref}", read, lambda s: s in done, timeout_s, poll_s)
    if not ended:
        raise KaggleError(
            f"kernel {ref} did not finish within {timeout_s:g} s (status {status or 'unknown'!r} after "
            f"{waited:.0f} s); it may still be running: `kaggle kernels status {ref}`"
        )
    if status != "complete":
        raise KaggleError(
            f"kernel {ref} ended {status} after {waited:.0f} s: "
            f"{failure['message'] or '(Kaggle gave no failure message)'}\n"
            f"last {LOG_LINES} lines of its log:\n{kernel_log_tail(ref)}"
        )


def _log_text(text: str) -> str:
    """A kernel log as plain text. Kaggle stores it as JSON records {stream_name, time, data} (a JSON array
    with one record a line); lines that are no such record are kept as they are."""
    try:
        records = json.loads(text)
    except ValueError:
        records = None
    if isinstance(records, list) and all(isinstance(r, dict) and "data" in r for r in records):
        return "".join(str(r["data"]) for r in records)
    out = []
    for line in text.splitlines():
        core = line.strip().lstrip("[,").rstrip("],")
        try:
            record = json.loads(core) if core.startswith("{") else None
        except ValueError:
            record = None
        out.append(str(record["data"]) if isinstance(record, dict) and "data" in record else line + "\n")
    return "".join(out)


def kernel_log_tail(ref: str, lines: int = LOG_LINES) -> str:
    """The last `lines` lines of the newest run's log, readable and redacted, or a note saying why there is
    none. Runs `kaggle kernels output REF -p TMPDIR` (output files are skipped: the log is `<slug>.log`)."""
    with tempfile.TemporaryDirectory(prefix="kaggle-log-") as tmp:
        try:
            run(["kernels", "output", ref, "-p", tmp, "--file-pattern", "^$"], dry_run=False, echo=False)
        except KaggleError as exc:
            return f"(the log could not be fetched: {_last_line(exc)})"
        log = Path(tmp) / f"{ref.split('/', 1)[1]}.log"
        if not log.is_file():
            return "(the run left no log)"
        text = log.read_text(errors="replace")
    return redact(_tail(_log_text(text), lines)) or "(the log is empty)"


def wait_score(
    slug: str, timeout_s: float = 600, poll_s: float = 30, dry_run: bool = False
) -> dict[str, Any] | None:
    """Poll the newest submission (`latest_submission`) until it is `complete` or `error`.

    A timeout is no error: Kaggle may take hours to score a code submission, so the row is returned as it
    is (status `pending`). None on a dry run (which only prints the command) or when none is listed.
    """
    if dry_run:
        run(["competitions", "submissions", "-c", slug, "--csv"], dry_run=True)
        return None
    latest: dict[str, Any] = {}

    def read(show: bool) -> str:
        latest["row"] = latest_submission(slug, show=show)
        return latest["row"]["status"] if latest["row"] else ""

    status, waited, ended = _poll(f"the score on {slug}", read, lambda s: s in _SCORED, timeout_s, poll_s)
    if status == "complete":
        row = latest["row"]
        print(f"public score {row['public_score'] or '-'}, private {row['private_score'] or '-'}", flush=True)
    elif not ended:
        print(
            f"not scored after {waited:.0f} s: `kaggle competitions submissions -c {slug}` shows the score "
            "once Kaggle has it",
            flush=True,
        )
    return latest.get("row")
