"""make predict, make submit, make kernel-check, make lb."""

from __future__ import annotations

import argparse
from pathlib import Path

from foldstack.cli import base_parser, competition
from foldstack.leaderboard import leaderboard
from foldstack.runs import Submissions
from foldstack.stage2.config import DEFAULT_STACK
from foldstack.submit import flows
from foldstack.submit.predict import predict as predict_csv


def predict(comp: str, stack: str, overrides: str = "", data: str | None = None, out: str = "") -> int:
    """The stack run on DATA's test split -> a submission CSV in sample_submission.csv's order."""
    cfg, data_dir = competition(comp, overrides, data)
    path, sub = predict_csv(cfg, data_dir, stack, Path(out) if out else None)
    print(f"wrote {path}: {len(sub)} rows, ids and order of {data_dir / cfg.files.sample_submission}")
    print(sub.head(10).to_string(index=False))
    return 0


def lb(comp: str, overrides: str = "", data: str | None = None, labels: str = "") -> int:
    """The offline leaderboard of every stage-1 run, stack and submission (with LABELS: test scores)."""
    cfg, data_dir = competition(comp, overrides, data)
    path: Path | None = Path(labels) if labels else data_dir / cfg.files.test_labels
    if not labels and not path.is_file():
        path = None  # no labels file: rank on OOF scores only
    table = leaderboard(cfg, path)
    subs = Submissions.of(cfg)
    print(subs.leaderboard_md.read_text())
    names = ", ".join(p.name for p in (subs.leaderboard_md, subs.leaderboard_csv, subs.roc_png))
    print(f"wrote {subs.dir}/{names} ({len(table)} entries)")
    return 0


def submit_parser(doc: str | None = None) -> argparse.ArgumentParser:
    """make submit's arguments (FROM, MESSAGE, DRY_RUN, FORCE, SKIP_KERNEL_CHECK, KERNEL_PYTHON, waits)."""
    p = base_parser(doc or submit.__doc__ or "")
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
    w = flows.Waits
    p.add_argument("--dataset-timeout", type=float, default=w.dataset_s, help="s to wait for the bundle")
    p.add_argument("--kernel-timeout", type=float, default=w.kernel_s, help="s to wait for the kernel")
    p.add_argument("--score-timeout", type=float, default=w.score_s, help="s to wait for the score")
    p.add_argument("--poll", type=float, default=w.poll_s, help="s between two status checks")
    return p


def submit(a: argparse.Namespace) -> int:
    """Validate, write and record the submission file, then send it (file or code competition)."""
    cfg, data_dir = competition(a.comp, a.overrides, a.data)
    waits = flows.Waits(a.dataset_timeout, a.kernel_timeout, a.score_timeout, a.poll)
    source = Path(a.source) if a.source else None
    req = flows.Request(source, a.message, a.dry_run, a.force, waits, a.kernel_python, a.skip_kernel_check)
    flows.submit(cfg, data_dir, req)
    return 0


def kernel_check(
    comp: str,
    stack: str = DEFAULT_STACK,
    overrides: str = "",
    data: str | None = None,
    python: str = "",
    timeout: float = 3600,
) -> int:
    """The kernel `make submit` would upload, run offline on Kaggle's versions, checked stage by stage."""
    cfg, data_dir = competition(comp, overrides, data)
    flows.kernel_check(cfg, data_dir, stack, python, timeout)
    return 0
