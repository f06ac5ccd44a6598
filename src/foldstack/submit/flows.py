"""`make submit` and `make kernel-check` end to end: validate and write the submission file, then for a
file competition upload it, for a code competition build the bundle and kernel, check the kernel offline
on Kaggle's versions, upload the bundle, push the kernel, submit its output and wait for the score. The
ledger row of the file is updated at every step."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from foldstack.artifacts import fault_point, folder_sha256
from foldstack.config import CompetitionConfig
from foldstack.errors import DataError
from foldstack.runs import SUBMISSION_CSV, Runs, StackRun, Submissions, default_data_dir
from foldstack.submit import kaggle_cli, kaggle_waits
from foldstack.submit.bundle import build_submission_folders, check_stack_source
from foldstack.submit.check import check_kernel, estimate_lines, report_lines, runtime_estimate
from foldstack.submit.files import latest_source, write_submission
from foldstack.submit.kernel import names
from foldstack.submit.ledger import MAYBE_SENT, ledger_rows, record


def owner(dry_run: bool) -> str:
    """The Kaggle user the CLI will act as; on a dry run without credentials, a placeholder."""
    try:
        return kaggle_cli.check_credentials()
    except kaggle_cli.KaggleError:
        if not dry_run:
            raise
        print("(dry run: no Kaggle credentials found; the commands below use YOUR-USERNAME)", file=sys.stderr)
        return "YOUR-USERNAME"


@dataclass(frozen=True)
class Waits:
    """How long the code flow waits for each Kaggle step, and how often it asks (seconds)."""

    dataset_s: float = 1800
    kernel_s: float = 32400
    score_s: float = 600
    poll_s: float = 30


@dataclass(frozen=True)
class Checks:
    """What runs before anything is uploaded: make kernel-check on `data_dir` (Kaggle's versions, or
    kernel_python) unless skipped, and the runtime estimate against the competition's limit."""

    data_dir: Path
    kernel_python: str = ""
    skip_kernel_check: bool = False
    force: bool = False  # submit although the estimated run time exceeds the limit


def _over_limit(cfg: CompetitionConfig, est: dict, force: bool) -> None:
    if not force:
        raise DataError(
            f"the kernel's estimated run time, {est['seconds'] / 3600:.2f} h for "
            f"{est['hidden_test_rows']:,} hidden test rows, exceeds the "
            f"{est['limit_seconds'] / 3600:g} h limit (kernel.runtime_limit_h in "
            f"configs/competitions/{cfg.name}.yaml): Kaggle would stop the run and score nothing. "
            "Predict faster (fewer TTA passes, fewer or smaller stage-1 runs, a larger "
            "predict.batch_size) or rerun with FORCE=1 to submit anyway"
        )
    print("FORCE=1: submitting although the estimate exceeds the limit", file=sys.stderr)


def preflight(cfg: CompetitionConfig, stack: StackRun, bundle: Path, kernel: Path, checks: Checks) -> dict:
    """The runtime estimate (refused over the limit unless forced), then the kernel check; the ledger
    fields they fill (kernel_check, note). A failed check raises with the kernel's log tail."""
    est = runtime_estimate(cfg, stack)
    lines = estimate_lines(est)
    print("\n".join(lines), flush=True)
    if est and est["over_limit"]:
        _over_limit(cfg, est, checks.force)
    fields = {"note": lines[0][:300]}
    if checks.skip_kernel_check:
        print("kernel-check skipped (SKIP_KERNEL_CHECK=1)", file=sys.stderr)
        return fields | {"kernel_check": "skipped (SKIP_KERNEL_CHECK=1)"}
    root = Submissions.of(cfg).kernel_check_root
    report = check_kernel(cfg, checks.data_dir, stack, bundle, kernel, root, checks.kernel_python)
    v = report["versions"]
    print(
        f"kernel-check passed: max |diff| {report['max_abs_diff']:.2g} vs make predict, "
        f"{report['kernel_seconds']:.0f} s, Python {v['python']}, torch {v['torch']}",
        flush=True,
    )
    return fields | {
        "kernel_check": f"passed: max |diff| {report['max_abs_diff']:.2g}, torch {v['torch']}, "
        f"pandas {v['pandas']}, {report['kernel_seconds']:.0f} s"
    }


def _upload_and_run(
    cfg: CompetitionConfig, bundle: Path, kernel: Path, user: str, message: str, dry_run: bool, waits: Waits,
    after: Callable[..., None],
) -> dict:  # fmt: skip
    """Dataset version (waited for until ready), kernel push (waited for until its run is complete), the
    code submission of that kernel version, its score (waited for up to waits.score_s)."""
    dataset = kaggle_cli.push_dataset(bundle, message, dry_run=dry_run)
    after("dataset uploaded")
    kaggle_waits.wait_dataset_ready(dataset, waits.dataset_s, waits.poll_s, dry_run=dry_run)
    after("dataset ready")
    version = kaggle_cli.push_kernel(kernel, dry_run=dry_run)
    after(f"kernel pushed v{version}", kernel_version=version)
    kernel_ref = f"{user}/{names(cfg)[1]}"
    kaggle_waits.wait_kernel(kernel_ref, waits.kernel_s, waits.poll_s, dry_run=dry_run)
    after("kernel complete")  # one of MAYBE_SENT: the submit command runs next
    kaggle_cli.submit_code(cfg.slug, kernel_ref, version, SUBMISSION_CSV, message, dry_run=dry_run)
    after("submitted")
    return kaggle_waits.wait_score(cfg.slug, waits.score_s, waits.poll_s, dry_run=dry_run) or {}


def submit_code(
    cfg: CompetitionConfig,
    source: Path,
    message: str,
    dry_run: bool,
    waits: Waits = Waits(),
    step: Callable[[dict], None] = lambda update: None,
    checks: Checks | None = None,
) -> dict:
    """Bundle -> checks -> dataset version -> kernel -> code submission -> score (_upload_and_run).

    `step` gets the ledger fields after each step (not on a dry run, which prints the commands only).
    Before any upload, `checks` (default: the kernel check on Kaggle's versions with data/<comp>) run.
    """
    stack = check_stack_source(cfg, source)
    user = owner(dry_run)
    bundle, kernel = build_submission_folders(cfg, stack, user, Submissions.of(cfg).staging)
    done = {"bundle_sha256": folder_sha256(bundle)}  # the folder `datasets version` uploads, as it is
    print(f"bundle: {bundle} (sha256 {done['bundle_sha256'][:12]})  kernel: {kernel}")
    checks = checks or Checks(default_data_dir(cfg))
    try:
        done |= preflight(cfg, stack, bundle, kernel, checks)
    except DataError:
        if not dry_run and not checks.skip_kernel_check:
            step(done | {"kernel_check": "failed", "kaggle_status": "kernel check failed"})
        raise
    if not dry_run:
        step(done | {"kaggle_status": "checked"})

    def after(status: str, **fields) -> None:
        done.update(fields, kaggle_status=status)
        if not dry_run:
            step(dict(done))

    last = _upload_and_run(cfg, bundle, kernel, user, message, dry_run, waits, after)
    if dry_run:
        return done | {"kaggle_status": "dry-run"}
    scores = {k: last.get(k) for k in ("public_score", "private_score")}
    return done | scores | {"kaggle_status": last.get("status") or "submitted"}


def submit_file(cfg: CompetitionConfig, path: Path, message: str, dry_run: bool) -> dict:
    owner(dry_run)
    kaggle_cli.submit_file(cfg.slug, path, message, dry_run=dry_run)
    if dry_run:
        return {"kaggle_status": "dry-run"}
    last = kaggle_cli.latest_submission(cfg.slug) or {}
    return {
        "kaggle_status": last.get("status", "submitted"),
        "public_score": last.get("public_score"),
        "private_score": last.get("private_score"),
    }


@dataclass(frozen=True)
class Request:
    """What `make submit` was asked: the source (default the newest stack), message, and the switches."""

    source: Path | None = None
    message: str = ""
    dry_run: bool = False
    force: bool = False  # send again a file an interrupted run was sending; submit over the time limit
    waits: Waits = Waits()
    kernel_python: str = ""
    skip_kernel_check: bool = False


def _score_text(cfg: CompetitionConfig, row: dict) -> str:
    if row["oof_pauc"] is not None:
        return f"OOF pAUC {row['oof_pauc']:.4f}"
    return f"OOF {'macro ' if cfg.multiclass else ''}AUC {row['oof_auc']:.4f}"


def _guard_resend(cfg: CompetitionConfig, ledger: Path, row: dict, force: bool) -> None:
    """Refuse to send again a file that an interrupted `make submit` was sending (unless forced)."""
    sending = ledger_rows(ledger, row["sha256"], MAYBE_SENT)
    if len(sending) and not force:
        raise DataError(
            f"{ledger}: this same file ({sending.iloc[-1]['file']}) was being sent to Kaggle when an "
            f"earlier `make submit` stopped, so it may already be submitted. Check with `kaggle "
            f"competitions submissions -c {cfg.slug}`; to send it again anyway, rerun with FORCE=1"
        )


def submit(cfg: CompetitionConfig, data_dir: Path, req: Request) -> dict:
    """`make submit`: write and record the submission file, then send it (file or code flow); the final
    ledger row. A failure leaves the file and a 'failed' ledger row with the reason."""
    source = req.source or latest_source(cfg)
    ledger = Submissions.of(cfg).ledger
    path, row = write_submission(cfg, data_dir, source, ledger=ledger)
    score = _score_text(cfg, row)
    print(f"wrote {path} (sha256 {row['sha256'][:12]}), {score}; ledger {ledger}")
    if not cfg.slug:
        note = f"{cfg.name} is not a Kaggle competition"
        record(ledger, row | {"kaggle_status": "local only", "note": note})
        print(
            f"{cfg.name} has no Kaggle competition (slug is empty): the file is written and validated, "
            "not sent"
        )
        return row | {"kaggle_status": "local only"}
    message = req.message or f"foldstack {row['name']} ({score}, {row['git_commit'][:10]})"
    if not req.dry_run:
        _guard_resend(cfg, ledger, row, req.force)
        record(ledger, row | {"kaggle_status": "sending"})
        fault_point("submit.sending")
    reached: dict = {}  # the ledger fields of the last step reached (bundle_sha256, kernel_check, ...)

    def step(update: dict) -> None:
        reached.update(update)
        record(ledger, row | update)

    try:
        if cfg.code_competition:
            checks = Checks(data_dir, req.kernel_python, req.skip_kernel_check, req.force)
            result = submit_code(cfg, source, message, req.dry_run, req.waits, step, checks)
        else:
            result = submit_file(cfg, path, message, req.dry_run)
    except Exception as e:  # the file and a 'failed' ledger row stay, with the reason
        record(ledger, row | reached | {"kaggle_status": "failed", "note": kaggle_cli.redact(str(e))[:500]})
        raise
    record(ledger, row | result)
    print(f"kaggle status: {result['kaggle_status']}")
    return row | result


def kernel_check(
    cfg: CompetitionConfig, data_dir: Path, stack: str, python: str = "", timeout_s: float = 3600
) -> dict:
    """`make kernel-check`: build the bundle and kernel `make submit` would upload, print the runtime
    estimate, run the kernel offline (check.check_kernel) and print its stage-by-stage report."""
    if not cfg.code_competition:
        raise DataError(
            f"{cfg.name} is a file competition: `make submit` uploads the CSV and no kernel runs on Kaggle, "
            "so there is nothing to check"
        )
    run = check_stack_source(cfg, Runs.of(cfg).stack(stack).test)
    try:
        user = kaggle_cli.check_credentials() or "YOUR-USERNAME"
    except kaggle_cli.KaggleError:
        user = "YOUR-USERNAME"
    subs = Submissions.of(cfg)
    bundle, kernel = build_submission_folders(cfg, run, user, subs.staging)
    print(f"bundle: {bundle}  kernel: {kernel}", flush=True)
    print("\n".join(estimate_lines(runtime_estimate(cfg, run))), flush=True)
    report = check_kernel(cfg, data_dir, run, bundle, kernel, subs.kernel_check_root, python, timeout_s)
    print("\n".join(report_lines(report)))
    print(f"report: {subs.kernel_check_report}", file=sys.stderr)
    return report
