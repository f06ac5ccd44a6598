"""The ledger: one row per submission file (submissions/<comp>/ledger.csv), updated at every step of
`make submit`, so that an interrupted submission is told apart from a finished one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from foldstack import artifacts
from foldstack.config import CompetitionConfig
from foldstack.runs import SUBMISSIONS_DIR, Submissions

LEDGER_COLUMNS = [
    "time_utc",
    "name",
    "file",
    "git_commit",
    "source",
    "oof_pauc",
    "oof_auc",
    "sha256",
    "flow",
    "bundle_sha256",  # code competitions: folder_sha256 of the bundle uploaded as the dataset version
    "kernel_version",  # the kernel version `kaggle kernels push` made and the submission names
    "kernel_check",
    "kaggle_status",
    "public_score",
    "private_score",
    "note",
]
# ledger states of a submission that a killed `make submit` may have left: the rerun takes the row over
RESUMABLE = ("writing", "written")
# ledger states a killed `make submit` leaves while the file may already be submitted: a rerun needs FORCE
MAYBE_SENT = ("sending", "kernel complete", "submitted")


def ledger_path(cfg: CompetitionConfig, out_dir: Path = Path(SUBMISSIONS_DIR)) -> Path:
    return Submissions.of(cfg, out_dir).ledger


def ledger_rows(ledger: Path | None, sha: str, states: tuple[str, ...]) -> pd.DataFrame:
    """Ledger rows of the submission file with this sha256 whose status is one of `states`."""
    if ledger is None:
        return pd.DataFrame(columns=LEDGER_COLUMNS)
    rows = read_ledger(ledger)
    return rows[(rows["sha256"] == sha) & rows["kaggle_status"].isin(states)]


_LEDGER_DTYPES = {
    "time_utc": str,
    "note": str,
    "kaggle_status": str,
    "sha256": str,
    "bundle_sha256": str,
    "kernel_version": "Int64",
    "kernel_check": str,
}


def read_ledger(path: Path) -> pd.DataFrame:
    """The ledger with every LEDGER_COLUMNS column (a ledger written before a column existed gets it
    blank), then any other columns it holds."""
    if not path.exists():
        return pd.DataFrame(columns=LEDGER_COLUMNS)
    ledger = pd.read_csv(path, dtype=_LEDGER_DTYPES)
    return ledger.reindex(columns=[*LEDGER_COLUMNS, *(c for c in ledger.columns if c not in LEDGER_COLUMNS)])


def record(path: Path, row: dict) -> None:
    """Add or update (by file) a ledger row; the ledger is rewritten atomically."""
    ledger = read_ledger(path).astype(object)
    if (ledger["file"] == row["file"]).any():
        for k, v in row.items():
            ledger.loc[ledger["file"] == row["file"], k] = v
    else:
        ledger = pd.concat([ledger, pd.DataFrame([row])], ignore_index=True)
    artifacts.write_csv(path, ledger[LEDGER_COLUMNS])
