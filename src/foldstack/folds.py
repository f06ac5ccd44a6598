"""Patient-grouped, target-stratified folds, made once per (data, k, seed) and shared by every stage."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from foldstack import artifacts
from foldstack.config import CompetitionConfig
from foldstack.data.metadata import target_codes
from foldstack.errors import DataError

FOLD_COLUMNS = ["id", "group", "target", "fold"]


def assign_folds(
    ids: pd.Series,
    groups: pd.Series,
    target: pd.Series | np.ndarray,
    k: int,
    seed: int,
    classes: tuple[str, ...] = (),
    group_word: str = "patients",
) -> pd.DataFrame:
    """id, group, target, fold with StratifiedGroupKFold.

    `target` holds integer codes: 0/1, or with `classes` the index of each row's class. Refuses k
    greater than the number of groups, and a fold without positives (binary) or without some class.
    """
    target = pd.Series(np.asarray(target), index=ids.index)
    n_groups = groups.nunique()
    if k > n_groups:
        raise DataError(
            f"cannot make {k} folds from {n_groups} {group_word}: set folds.k to at most {n_groups}"
        )
    labels = list(classes) or ["positive"]
    codes = range(len(classes)) if classes else [1]
    for code, label in zip(codes, labels, strict=True):
        n_with = groups[target == code].nunique()
        if n_with < k:
            what = "a positive lesion" if not classes else f"a {label!r} row"
            raise DataError(
                f"only {n_with} {group_word} have {what}, so some of the {k} folds would have none "
                f"(no AUC can be scored there): set folds.k to at most {max(n_with, 2)}"
            )
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    fold = np.full(len(ids), -1, dtype=np.int64)
    for f, (_, val) in enumerate(splitter.split(np.zeros(len(ids)), target, groups)):
        fold[val] = f
    out = pd.DataFrame(
        {
            "id": ids.astype(str).to_numpy(),
            "group": groups.astype(str).to_numpy(),
            "target": target.astype(np.int64).to_numpy(),
            "fold": fold,
        }
    )
    for code, label in zip(codes, labels, strict=True):
        empty = [f for f in range(k) if not (out.loc[out["fold"] == f, "target"] == code).any()]
        if empty:
            raise DataError(
                f"folds {empty} have no {label} rows with k={k}, seed={seed}: lower folds.k "
                f"or try another folds.seed"
            )
    return out


def folds_sha256(folds: pd.DataFrame) -> str:
    """Hash of the fold assignment itself (id, group, target, fold as CSV), independent of file details."""
    buf = io.StringIO()
    folds[FOLD_COLUMNS].sort_values("id").to_csv(buf, index=False)
    return artifacts.sha256_bytes(buf.getvalue().encode())


def folds_paths(cfg: CompetitionConfig) -> tuple[Path, Path]:
    return cfg.run_dir / "folds.csv", cfg.run_dir / "folds.json"


def make_folds(cfg: CompetitionConfig, train: pd.DataFrame, data_dir: Path, force: bool = False) -> dict:
    """Write runs/<comp>/folds.csv + folds.json, or reuse them when made for the same (data, k, seed).

    Existing folds made for other data, k or seed are never silently replaced (stages downstream
    are tied to them): that needs force=True.
    """
    csv_path, json_path = folds_paths(cfg)
    data_sha = artifacts.sha256_file(data_dir / cfg.files.train)
    wanted = {"k": cfg.folds.k, "seed": cfg.folds.seed, "data_sha256": data_sha}
    if json_path.exists() and not force:
        meta = json.loads(json_path.read_text())
        if {key: meta.get(key) for key in wanted} == wanted and csv_path.exists():
            return meta | {"reused": True}
        raise DataError(
            f"{json_path} holds folds for k={meta.get('k')}, seed={meta.get('seed')} on data "
            f"{str(meta.get('data_sha256'))[:12]}, not k={cfg.folds.k}, seed={cfg.folds.seed} on "
            f"{data_sha[:12]} ({data_dir / cfg.files.train}). Every stage's outputs are tied to the folds: "
            f"rerun with FORCE=1 to replace them (older runs will then be refused), or set runs_dir."
        )
    c = cfg.columns
    target = target_codes(cfg, train[c.target])
    word = "patients" if "patient" in c.group else f"{c.group} groups"
    folds = assign_folds(train[c.id], train[c.group], target, cfg.folds.k, cfg.folds.seed, cfg.classes, word)
    counts = {"positives": int(folds["target"].sum())}
    if cfg.multiclass:
        n = np.bincount(folds["target"], minlength=len(cfg.classes))
        counts = {
            "classes": list(cfg.classes),
            "class_counts": dict(zip(cfg.classes, n.tolist(), strict=True)),
        }
    meta = wanted | {
        "sha256": folds_sha256(folds),
        "rows": len(folds),
        **counts,
        "groups": int(folds["group"].nunique()),
        "data_dir": str(data_dir),
        "per_fold": folds.groupby("fold")
        .agg(
            rows=("id", "size"),
            positives=("target", "sum" if not cfg.multiclass else "nunique"),
            groups=("group", "nunique"),
        )
        .reset_index()
        .to_dict("records"),
        "git_commit": artifacts.git_commit(),
    }
    artifacts.write_csv(csv_path, folds)
    artifacts.write_json(json_path, meta)
    return meta | {"reused": False}


def load_folds(cfg: CompetitionConfig) -> tuple[pd.DataFrame, dict]:
    """folds.csv checked against the sha256 in folds.json."""
    csv_path, json_path = folds_paths(cfg)
    if not csv_path.exists() or not json_path.exists():
        raise DataError(f"no folds at {csv_path}: run `make folds COMP={cfg.name}` first")
    meta = json.loads(json_path.read_text())
    folds = pd.read_csv(csv_path, dtype={"id": str, "group": str})
    sha = folds_sha256(folds)
    if sha != meta["sha256"]:
        raise DataError(
            f"{csv_path} does not match the sha256 in {json_path} ({sha[:12]} vs "
            f"{meta['sha256'][:12]}): the folds file was edited; rerun `make folds FORCE=1`"
        )
    return folds, meta


def check_fold_sha(cfg: CompetitionConfig, sha: str, what: str) -> None:
    """Refuse an artifact made on other folds than the current folds.json."""
    _, meta = load_folds(cfg)
    if sha != meta["sha256"]:
        raise DataError(
            f"{what} was made on folds {sha[:12]}, but the current folds are "
            f"{meta['sha256'][:12]} ({folds_paths(cfg)[1]}): rerun it on the current folds"
        )
