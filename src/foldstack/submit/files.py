"""Validated submission files: a run's test.parquet checked against sample_submission.csv and the folds,
then written as submissions/<comp>/<UTC time>_<name>.csv and recorded in the ledger."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from foldstack import artifacts
from foldstack.config import CompetitionConfig
from foldstack.data.metadata import read_sample_submission
from foldstack.errors import DataError
from foldstack.folds import check_fold_sha
from foldstack.runs import SUBMISSIONS_DIR, Runs, Submissions, run_folder, stamp
from foldstack.submit.ledger import RESUMABLE, ledger_rows, read_ledger, record

SHOWN = 10


def latest_source(cfg: CompetitionConfig) -> Path:
    """The newest stack run's test.parquet (by modification time)."""
    runs = Runs.of(cfg)
    found = runs.stack_tests()
    if not found:
        raise DataError(
            f"no stack run under {runs.stack_root}: run `make stack` or pass FROM=.../test.parquet"
        )
    return found[-1]


def source_metrics(source: Path) -> dict:
    """metrics.json beside a test.parquet: its folds sha and OOF scores (stage-1 or stack layout)."""
    run = run_folder(source.parent)
    if not run.metrics.exists():
        raise DataError(
            f"{run.metrics} is missing: a test.parquet must come from a finished stage-1 or stack run"
        )
    m = run.read_metrics()  # refuses a test.parquet that differs from the one the run wrote
    scores = m.get("stack", m)
    return {
        "folds_sha256": m.get("folds_sha256"),
        "oof_pauc": scores.get("oof_pauc"),
        "oof_auc": scores.get("oof_auc", scores.get("oof_macro_auc")),  # multiclass: the macro OvR AUC
        "run": m.get("run", source.parent.name),
    }


def _ids(values) -> str:
    values = list(values)
    return ", ".join(map(str, values[:SHOWN])) + (
        f" ... ({len(values)} in all)" if len(values) > SHOWN else ""
    )


def validate_predictions(
    cfg: CompetitionConfig, test: pd.DataFrame, sample: pd.DataFrame, source: Path, fold_sha: str | None
) -> None:
    """Refuse anything Kaggle would reject or that breaks the fold contract; messages name the ids."""
    idc, cols = cfg.columns.id, cfg.pred_columns
    if "id" not in test or any(c not in test for c in cols):
        raise DataError(
            f"{source}: expected columns id, {', '.join(cols)} (+ their _fold<k> copies), "
            f"found {list(test.columns)}"
        )
    dup = test.loc[test["id"].duplicated(), "id"].unique()
    if len(dup):
        raise DataError(f"{source}: duplicate ids: {_ids(dup)}")
    missing, extra = set(sample[idc]) - set(test["id"]), set(test["id"]) - set(sample[idc])
    if missing or extra:
        raise DataError(
            f"{source}: ids differ from {cfg.files.sample_submission}: missing {_ids(sorted(missing))}; "
            f"extra {_ids(sorted(extra))}"
        )
    for col in cols:
        pred = test[col].to_numpy(dtype=float)
        bad = ~np.isfinite(pred)
        if bad.any():
            raise DataError(
                f"{source}: NaN or infinite predictions for ids {_ids(test.loc[bad, 'id'])} (column {col})"
            )
        out = (pred < 0) | (pred > 1)
        if out.any():
            rows = [f"{i}={v:g}" for i, v in zip(test.loc[out, "id"], pred[out], strict=True)]
            raise DataError(f"{source}: predictions outside [0, 1]: {_ids(rows)} (column {col})")
        folds = [c for c in test.columns if c.startswith(f"{col}_fold") and c[len(col) + 5 :].isdigit()]
        if folds:
            off = ~np.isclose(test[folds].mean(axis=1).to_numpy(), pred, rtol=0, atol=1e-9)
            if off.any():
                raise DataError(
                    f"{source}: {col} is not the mean of {', '.join(folds)} for ids "
                    f"{_ids(test.loc[off, 'id'])}"
                )
    check_fold_sha(cfg, fold_sha, str(source), "retrain it on the current folds")


def build_submission(cfg: CompetitionConfig, data_dir: Path, source: Path) -> tuple[pd.DataFrame, dict]:
    """The validated submission frame of `source` (a test.parquet) in sample_submission order, and the
    metrics of the run it comes from."""
    meta = source_metrics(source)
    test = pd.read_parquet(source)
    sample = read_sample_submission(cfg, data_dir)
    validate_predictions(cfg, test, sample, source, meta["folds_sha256"])
    idc = cfg.columns.id
    values = test.set_index("id").loc[sample[idc], cfg.pred_columns].to_numpy()
    sub = pd.DataFrame(values, columns=cfg.submission_columns[1:])
    sub.insert(0, idc, sample[idc].to_numpy())
    return sub, meta


def _file_for(subs: Submissions, ledger: Path | None, sha: str, name: str) -> tuple[str, Path, str]:
    """(UTC time, path, name) of a new submission file; those of the same file when an interrupted run
    left its ledger row 'writing' or 'written' (the rerun takes it over)."""
    earlier = ledger_rows(ledger, sha, RESUMABLE)
    if len(earlier):
        last = earlier.iloc[-1]
        return str(last["time_utc"]), Path(str(last["file"])), str(last["name"])
    when = stamp()
    taken = set(read_ledger(ledger)["file"].astype(str)) if ledger is not None else set()
    n = 1
    while subs.csv(when, name, n).exists() or str(subs.csv(when, name, n)) in taken:  # same second
        n += 1
    return when, subs.csv(when, name, n), name


def write_submission(
    cfg: CompetitionConfig,
    data_dir: Path,
    source: Path,
    name: str | None = None,
    out_dir: Path = Path(SUBMISSIONS_DIR),
    ledger: Path | None = None,
) -> tuple[Path, dict]:
    """Validate `source` (a test.parquet) and write submissions/<comp>/<UTC time>_<name>.csv.

    With `ledger`, the row is recorded ('writing') before the file is written and again ('written')
    after, and a row of the same file left 'writing' or 'written' by an interrupted run is taken over
    (same file name and time), so a rerun after a kill leaves what an uninterrupted run leaves.
    """
    subs = Submissions.of(cfg, out_dir)
    artifacts.recover(subs.dir)  # temp files of a killed earlier run
    sub, meta = build_submission(cfg, data_dir, source)
    data = sub.to_csv(index=False).encode()
    sha = artifacts.sha256_bytes(data)
    when, path, name = _file_for(subs, ledger, sha, name or meta["run"])
    row = {
        "time_utc": when,
        "name": name,
        "file": str(path),
        "git_commit": artifacts.git_commit(),
        "source": str(source),
        "oof_pauc": meta["oof_pauc"],
        "oof_auc": meta["oof_auc"],
        "sha256": sha,
        "flow": "code" if cfg.code_competition else "file",
        "kaggle_status": "writing",
        "public_score": None,
        "private_score": None,
        "note": "oof_auc is the macro one-vs-rest AUC" if cfg.multiclass else "",
    }
    if ledger is not None:
        record(ledger, row)
    artifacts.write_atomic(path, lambda p: p.write_bytes(data))
    row["kaggle_status"] = "written"
    if ledger is not None:
        record(ledger, row)
    return path, row
