"""make submit [FROM=runs/.../test.parquet] [DRY_RUN=1]: validate, write the CSV, record it, submit it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from foldstack import kaggle_cli
from foldstack.artifacts import fault_point, folder_sha256
from foldstack.bundle import build_submission_folders, check_stack_source, names
from foldstack.cli import base_parser, competition_from_args, run_main
from foldstack.config import CompetitionConfig
from foldstack.errors import DataError
from foldstack.kernel_check import check_kernel, estimate_lines, root_dir, runtime_estimate, staging_dir
from foldstack.submission import latest_source, ledger_path, ledger_rows, record, write_submission

# ledger states a killed `make submit` leaves while the file may already be submitted: a rerun needs FORCE
MAYBE_SENT = ("sending", "kernel complete", "submitted")


def _owner(dry_run: bool) -> str:
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


def preflight(cfg: CompetitionConfig, stack_dir: Path, bundle: Path, kernel: Path, checks: Checks) -> dict:
    """The runtime estimate (refused over the limit unless forced), then the kernel check; the ledger
    fields they fill (kernel_check, note). A failed check raises with the kernel's log tail."""
    runs = Path(cfg.runs_dir)
    est = runtime_estimate(cfg, stack_dir, runs)
    lines = estimate_lines(est)
    print("\n".join(lines), flush=True)
    if est and est["over_limit"]:
        if not checks.force:
            raise DataError(
                f"the kernel's estimated run time, {est['seconds'] / 3600:.2f} h for "
                f"{est['hidden_test_rows']:,} hidden test rows, exceeds the "
                f"{est['limit_seconds'] / 3600:g} h limit (kernel.runtime_limit_h in "
                f"configs/competitions/{cfg.name}.yaml): Kaggle would stop the run and score nothing. "
                "Predict faster (fewer TTA passes, fewer or smaller stage-1 runs, a larger "
                "predict.batch_size) or rerun with FORCE=1 to submit anyway"
            )
        print("FORCE=1: submitting although the estimate exceeds the limit", file=sys.stderr)
    fields = {"note": lines[0][:300]}
    if checks.skip_kernel_check:
        print("kernel-check skipped (SKIP_KERNEL_CHECK=1)", file=sys.stderr)
        return fields | {"kernel_check": "skipped (SKIP_KERNEL_CHECK=1)"}
    report = check_kernel(
        cfg, checks.data_dir, stack_dir, runs, bundle, kernel, root_dir(cfg), checks.kernel_python
    )
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


def submit_code(
    cfg: CompetitionConfig,
    source: Path,
    message: str,
    dry_run: bool,
    waits: Waits = Waits(),
    step: Callable[[dict], None] = lambda update: None,
    checks: Checks | None = None,
) -> dict:
    """Bundle -> dataset version, waited for until ready -> kernel push, waited for until its run is
    complete -> code submission of that kernel version -> its score, waited for up to waits.score_s.

    `step` gets the ledger fields after each step (not on a dry run, which prints the commands only).
    Before any upload, `checks` (default: the kernel check on Kaggle's versions with data/<comp>) run.
    """
    stack_dir = check_stack_source(cfg, source)
    owner = _owner(dry_run)
    bundle, kernel = build_submission_folders(cfg, stack_dir, owner, staging_dir(cfg))
    done = {"bundle_sha256": folder_sha256(bundle)}  # the folder `datasets version` uploads, as it is
    print(f"bundle: {bundle} (sha256 {done['bundle_sha256'][:12]})  kernel: {kernel}")
    checks = checks or Checks(Path("data") / cfg.name)
    try:
        done |= preflight(cfg, stack_dir, bundle, kernel, checks)
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

    dataset = kaggle_cli.push_dataset(bundle, message, dry_run=dry_run)
    after("dataset uploaded")
    kaggle_cli.wait_dataset_ready(dataset, waits.dataset_s, waits.poll_s, dry_run=dry_run)
    after("dataset ready")
    version = kaggle_cli.push_kernel(kernel, dry_run=dry_run)
    after(f"kernel pushed v{version}", kernel_version=version)
    kernel_ref = f"{owner}/{names(cfg)[1]}"
    kaggle_cli.wait_kernel(kernel_ref, waits.kernel_s, waits.poll_s, dry_run=dry_run)
    after("kernel complete")  # one of MAYBE_SENT: the submit command runs next
    kaggle_cli.submit_code(cfg.slug, kernel_ref, version, "submission.csv", message, dry_run=dry_run)
    after("submitted")
    last = kaggle_cli.wait_score(cfg.slug, waits.score_s, waits.poll_s, dry_run=dry_run) or {}
    if dry_run:
        return done | {"kaggle_status": "dry-run"}
    scores = {k: last.get(k) for k in ("public_score", "private_score")}
    return done | scores | {"kaggle_status": last.get("status") or "submitted"}


def submit_file(cfg: CompetitionConfig, path: Path, message: str, dry_run: bool) -> dict:
    _owner(dry_run)
    kaggle_cli.submit_file(cfg.slug, path, message, dry_run=dry_run)
    if dry_run:
        return {"kaggle_status": "dry-run"}
    last = kaggle_cli.latest_submission(cfg.slug) or {}
    return {
        "kaggle_status": last.get("status", "submitted"),
        "public_score": last.get("public_score"),
        "private_score": last.get("private_score"),
    }


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--from", dest="source", default="", help="a test.parquet (default: the latest stack)")
    p.add_argument("--message", default="", help="submission message")
    p.add_argument("--dry-run", action="store_true", help="print every kaggle command, run none")
    p.add_argument(
        "--force",
        action="store_true",
        help="send again a file an interrupted run was sending; submit a kernel estimated over the limit",
    )
    p.add_argument("--skip-kernel-check", action="store_true", help="upload without make kernel-check")
    p.add_argument("--kernel-python", default="", help="kernel check on '' Kaggle's versions, 'own' venv")
    p.add_argument("--dataset-timeout", type=float, default=Waits.dataset_s, help="s to wait for the bundle")
    p.add_argument("--kernel-timeout", type=float, default=Waits.kernel_s, help="s to wait for the kernel")
    p.add_argument("--score-timeout", type=float, default=Waits.score_s, help="s to wait for the score")
    p.add_argument("--poll", type=float, default=Waits.poll_s, help="s between two status checks")
    args = p.parse_args(argv)
    cfg, data_dir = competition_from_args(args)
    source = Path(args.source) if args.source else latest_source(cfg)
    ledger = ledger_path(cfg)
    path, row = write_submission(cfg, data_dir, source, ledger=ledger)
    score = (
        f"OOF pAUC {row['oof_pauc']:.4f}"
        if row["oof_pauc"] is not None
        else f"OOF {'macro ' if cfg.multiclass else ''}AUC {row['oof_auc']:.4f}"
    )
    print(f"wrote {path} (sha256 {row['sha256'][:12]}), {score}; ledger {ledger}")
    if not cfg.slug:
        record(
            ledger, row | {"kaggle_status": "local only", "note": f"{cfg.name} is not a Kaggle competition"}
        )
        print(
            f"{cfg.name} has no Kaggle competition (slug is empty): the file is written and validated, "
            "not sent"
        )
        return 0
    message = args.message or f"foldstack {row['name']} ({score}, {row['git_commit'][:10]})"
    if not args.dry_run:
        sending = ledger_rows(ledger, row["sha256"], MAYBE_SENT)
        if len(sending) and not args.force:
            raise DataError(
                f"{ledger}: this same file ({sending.iloc[-1]['file']}) was being sent to Kaggle when an "
                f"earlier `make submit` stopped, so it may already be submitted. Check with `kaggle "
                f"competitions submissions -c {cfg.slug}`; to send it again anyway, rerun with FORCE=1"
            )
        record(ledger, row | {"kaggle_status": "sending"})
        fault_point("submit.sending")
    reached: dict = {}  # the ledger fields of the last step reached (bundle_sha256, kernel_check, ...)
    try:
        if cfg.code_competition:
            waits = Waits(args.dataset_timeout, args.kernel_timeout, args.score_timeout, args.poll)
            checks = Checks(data_dir, args.kernel_python, args.skip_kernel_check, args.force)

            def step(update: dict) -> None:
                reached.update(update)
                record(ledger, row | update)

            result = submit_code(cfg, source, message, args.dry_run, waits, step, checks)
        else:
            result = submit_file(cfg, path, message, args.dry_run)
    except Exception as e:  # the file and a 'failed' ledger row stay, with the reason
        failed = {"kaggle_status": "failed", "note": kaggle_cli.redact(str(e))[:500]}
        record(ledger, row | reached | failed)
        raise
    record(ledger, row | result)
    print(f"kaggle status: {result['kaggle_status']}")
    return 0


if __name__ == "__main__":
    run_main(main)
