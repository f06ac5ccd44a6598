"""Drive the real `kaggle` CLI (2.x) for file and code competitions.

Every command is printed as `$ kaggle ...` before it runs; with dry_run nothing runs. Credentials are the
CLI's own (see `credentials_status`); the key never appears in what this module prints or raises.

Quirks of kaggle 2.2.4 handled here (see `_FAILURE_MARKERS`): several failures exit 0 and only print a
message, e.g. a failed upload of a submission file prints "Could not submit to competition", a dataset
file that failed to upload is left out of the new version ("Upload unsuccessful: ..."), and an error from
SaveKernel prints "Kernel push error: ...".

The waits for a dataset, a kernel run and a score are in submit/kaggle_waits.py.
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
import warnings
from collections.abc import Mapping
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
    ("competitions", "download"): (
        "User cancelled operation",  # Ctrl-C during the download: exit 0 with a partial file
        "Skipping, found more recently modified local copy",  # nothing was downloaded
    ),
    ("kernels", "push"): (
        "Kernel push error",
        "not valid dataset sources",  # the kernel was saved but would run without these inputs
        "not valid competition sources",
        "not valid kernel sources",
    ),
}
_NOT_FOUND = re.compile(r"\b404\b|not found|does not exist", re.IGNORECASE)
_KERNEL_VERSION = re.compile(r"Kernel version (\d+) successfully pushed")
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


def tail(text: str, lines: int = 40) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip() and not _PROGRESS.search(line)]
    return "\n".join(kept[-lines:])


def run(
    args: list[str],
    dry_run: bool,
    env: Mapping[str, str] | None = None,
    echo: bool = True,
    show: bool = True,
    timeout: float = TIMEOUT_S,
) -> subprocess.CompletedProcess[str] | None:
    """Print `$ kaggle ARGS` (unless show is False: a repeated poll); unless dry_run, run it and return
    the result with redacted output.

    env is the complete environment of the CLI (default: os.environ). With echo, the CLI's stdout is
    printed (redacted). Raises KaggleError on a non-zero exit, on output by which the CLI reports a
    failure while exiting 0, on a timeout (`timeout` seconds), or when there are no credentials.
    """
    if show:
        print("$ kaggle " + shlex.join(args), flush=True)
    if dry_run:
        return None
    env = dict(os.environ if env is None else env)
    check_credentials(env)
    try:
        proc = subprocess.run(
            [kaggle_bin(), *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        raise KaggleError(f"`kaggle {shlex.join(args[:2])}` timed out after {timeout:g} s") from None
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
        raise KaggleError(f"{what} failed (exit {result.returncode}):\n{tail(output)}")
    markers = _FAILURE_MARKERS.get((args[0], args[1]) if len(args) > 1 else ("", ""), ())
    marker = next((m for m in markers if m in output), None)
    if marker:
        raise KaggleError(f"{what} reported a failure although it exited 0 ({marker!r}):\n{tail(output)}")


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
        raise KaggleError(f"unexpected output of `kaggle competitions submissions`:\n{tail(result.stdout)}")
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


def check_ref(ref: Any, what: str) -> str:
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
    ref = check_ref(_metadata(folder, DATASET_METADATA).get("id"), f"`id` in {DATASET_METADATA}")
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
    check_ref(meta.get("id"), f"`id` in {KERNEL_METADATA}")
    result = run(["kernels", "push", "-p", str(folder)], dry_run)
    if result is None:
        return None
    match = _KERNEL_VERSION.search(result.stdout)
    if match is None:
        raise KaggleError(f"`kaggle kernels push` printed no version number:\n{tail(result.stdout)}")
    return int(match.group(1))


def submit_code(
    slug: str, kernel_ref: str, version: int | None, file_name: str, message: str, dry_run: bool = False
) -> None:
    """Submit output FILE_NAME of kernel OWNER/KERNEL at VERSION to a code competition.

    `kaggle competitions submit -c SLUG -k OWNER/KERNEL -v VERSION -f FILE_NAME -m MESSAGE`.
    On a dry run the version may be None (the push that would number it did not happen).
    """
    check_ref(kernel_ref, "kernel_ref")
    if version is None and dry_run:
        shown = "VERSION"
    elif version is None or int(version) < 1:
        raise KaggleError(f"kernel version must be a positive integer, got {version!r}")
    else:
        shown = str(int(version))
    args = ["competitions", "submit", "-c", slug, "-k", kernel_ref, "-v", shown]
    run([*args, "-f", file_name, "-m", message], dry_run)


# --- waiting for Kaggle -----------------------------------------------------------------------
