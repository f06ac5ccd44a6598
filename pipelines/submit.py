"""make submit [FROM=runs/.../test.parquet] [DRY_RUN=1]: validate, write the CSV, record it, submit it."""

from __future__ import annotations

import sys
from pathlib import Path

from foldstack import kaggle_cli
from foldstack.artifacts import fault_point
from foldstack.bundle import build_submission_folders, check_stack_source, names
from foldstack.cli import base_parser, competition_from_args, run_main
from foldstack.config import CompetitionConfig
from foldstack.errors import DataError
from foldstack.submission import latest_source, ledger_path, ledger_rows, record, write_submission


def _owner(dry_run: bool) -> str:
    try:
        return kaggle_cli.check_credentials()
    except kaggle_cli.KaggleError:
        if not dry_run:
            raise
        print("(dry run: no Kaggle credentials found; the commands below use YOUR-USERNAME)", file=sys.stderr)
        return "YOUR-USERNAME"


def submit_code(cfg: CompetitionConfig, source: Path, message: str, dry_run: bool) -> dict:
    """Bundle -> dataset version, kernel -> push, then a code submission of that kernel version."""
    stack_dir = check_stack_source(cfg, source)
    owner = _owner(dry_run)
    staging = Path("submissions") / cfg.name / "kaggle"
    bundle, kernel = build_submission_folders(cfg, stack_dir, owner, staging)
    print(f"bundle: {bundle}  kernel: {kernel}")
    kaggle_cli.push_dataset(bundle, message, dry_run=dry_run)
    version = kaggle_cli.push_kernel(kernel, dry_run=dry_run)
    _, kernel_slug = names(cfg)
    kaggle_cli.submit_code(
        cfg.slug,
        f"{owner}/{kernel_slug}",
        version,
        "submission.csv",
        message,
        dry_run=dry_run,
    )
    return {"kaggle_status": "dry-run" if dry_run else "submitted (kernel running)"}


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
    p.add_argument("--force", action="store_true", help="send again a file an interrupted run was sending")
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
    flow = submit_code if cfg.code_competition else submit_file
    if not args.dry_run:
        sending = ledger_rows(ledger, row["sha256"], ("sending",))
        if len(sending) and not args.force:
            raise DataError(
                f"{ledger}: this same file ({sending.iloc[-1]['file']}) was being sent to Kaggle when an "
                f"earlier `make submit` stopped, so it may already be submitted. Check with `kaggle "
                f"competitions submissions -c {cfg.slug}`; to send it again anyway, rerun with FORCE=1"
            )
        record(ledger, row | {"kaggle_status": "sending"})
        fault_point("submit.sending")
    try:
        result = flow(cfg, source if cfg.code_competition else path, message, args.dry_run)
    except Exception as e:  # the file and a 'failed' ledger row stay, with the reason
        record(ledger, row | {"kaggle_status": "failed", "note": kaggle_cli.redact(str(e))[:500]})
        raise
    record(ledger, row | result)
    print(f"kaggle status: {result['kaggle_status']}")
    return 0


if __name__ == "__main__":
    run_main(main)
