"""Wait on Kaggle through the `kaggle` CLI: a dataset version ready, a kernel run ended, a score.

The waits (`wait_dataset_ready`, `wait_kernel`, `wait_score`) poll a status command, print its `$ kaggle ...`
once and then one progress line when the status changes (or every PROGRESS_EVERY_S); a poll that fails is
retried up to POLL_ERRORS times in a row, so a network blip does not end a nine-hour wait.
"""

from __future__ import annotations

import json
import re
import shlex
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from foldstack.submit.kaggle_cli import (
    LOG_LINES,
    POLL_ERRORS,
    PROGRESS_EVERY_S,
    KaggleError,
    check_ref,
    latest_submission,
    redact,
    run,
    tail,
)

_KERNEL_STATUS = re.compile(r'has status "(?:KernelWorkerStatus\.)?(\w+)"')
_KERNEL_FAILURE = re.compile(r'^Failure message: "(.*)"\s*$', re.MULTILINE | re.DOTALL)

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
    args = ["datasets", "status", check_ref(ref, "dataset ref")]
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
            f"{tail(last['output'])}"
        )


def wait_kernel(ref: str, timeout_s: float = 32400, poll_s: float = 30, dry_run: bool = False) -> None:
    """Poll `kaggle kernels status OWNER/SLUG` until the kernel's newest run is complete.

    When it ends in error or is cancelled, raises KaggleError with Kaggle's failure message and the last
    LOG_LINES lines of the run's log (see `kernel_log_tail`); also on timeout. A dry run only prints the
    command.
    """
    args = ["kernels", "status", check_ref(ref, "kernel ref")]
    if dry_run:
        run(args, dry_run=True)
        return
    failure = {"message": ""}

    def read(show: bool) -> str:
        out = _stdout(args, show)
        match = _KERNEL_STATUS.search(out)
        if match is None:
            raise KaggleError(f"unexpected output of `kaggle kernels status {ref}`:\n{tail(out)}")
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
            f"last {LOG_LINES} lines of its log:\n{kernel_logtail(ref)}"
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


def kernel_logtail(ref: str, lines: int = LOG_LINES) -> str:
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
    return redact(tail(_log_text(text), lines)) or "(the log is empty)"


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
