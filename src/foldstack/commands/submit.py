"""make predict, make lb (make submit, make kernel-check: foldstack.submit.flows.submit, kernel_check)."""

from __future__ import annotations

from pathlib import Path

from foldstack.cli import competition
from foldstack.leaderboard import leaderboard
from foldstack.runs import Submissions
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
