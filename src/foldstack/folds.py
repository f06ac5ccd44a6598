"""Patient-grouped, target-stratified folds, made once per (data, k, seed) and shared by every stage."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from foldstack import artifacts
from foldstack.config import CompetitionConfig
from foldstack.data.images import MAX_LISTED, open_images
from foldstack.data.metadata import target_codes
from foldstack.errors import DataError
from foldstack.runs import Runs

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


DATA_HASH = "table-v1"  # data_sha256 = table_sha256(...): the parsed id, group, target-code table


def table_sha256(ids: pd.Series, groups: pd.Series, target: pd.Series | np.ndarray) -> str:
    """Hash of the table the folds are made from: id, group and integer target code, sorted by id.

    It hashes the parsed values, not the file bytes, so the same table saved with CRLF line endings,
    a UTF-8 BOM or other column order hashes the same, while any changed id, group or target does not.
    """
    table = pd.DataFrame(
        {
            "id": ids.astype(str).to_numpy(),
            "group": groups.astype(str).to_numpy(),
            "target": np.asarray(target).astype(np.int64),
        }
    ).sort_values("id", kind="stable")
    buf = io.StringIO()
    table.to_csv(buf, index=False, lineterminator="\n")
    return artifacts.sha256_bytes(f"foldstack {DATA_HASH}\n{buf.getvalue()}".encode())


def folds_paths(cfg: CompetitionConfig) -> tuple[Path, Path]:
    """(folds.csv, folds.json) of the competition's runs folder."""
    r = Runs.of(cfg)
    return r.folds_csv, r.folds_json


def _check_images(cfg: CompetitionConfig, train: pd.DataFrame, data_dir: Path) -> None:
    """Refuse train ids without an image (one listing of the image store, fast for 400,000 ids)."""
    train_csv = Path(data_dir) / cfg.files.train
    try:
        store = open_images(cfg, Path(data_dir), "train")
        missing = store.missing_ids(train[cfg.columns.id].astype(str))
    except DataError as e:
        raise DataError(f"{e}: folds are made only for train rows that have an image") from None
    if missing:
        shown = ", ".join(missing[:MAX_LISTED]) + (", ..." if len(missing) > MAX_LISTED else "")
        raise DataError(
            f"{len(missing)} of the {len(train)} train ids in {train_csv} have no image in {store.where}: "
            f"{shown}. Add their images, or remove their rows from {train_csv.name}, then rerun "
            f"`make folds` (`make check-data` checks the whole folder)"
        )


def make_folds(cfg: CompetitionConfig, train: pd.DataFrame, data_dir: Path, force: bool = False) -> dict:
    """Write runs/<comp>/folds.csv + folds.json as one set, or reuse them when made for the same
    (data, k, seed); the data is the parsed id/group/target table (table_sha256), not the CSV bytes.

    Existing folds made for other data, k or seed are never silently replaced (stages downstream
    are tied to them): that needs force=True. Train ids without an image are refused.
    """
    json_path = folds_paths(cfg)[1]
    c = cfg.columns
    _check_images(cfg, train, data_dir)
    target = target_codes(cfg, train[c.target])
    data_sha = table_sha256(train[c.id], train[c.group], target)
    wanted = {"k": cfg.folds.k, "seed": cfg.folds.seed, "data_sha256": data_sha}
    if json_path.exists() and not force:
        old_folds, meta = load_folds(cfg)
        legacy = meta.get("data_hash") != DATA_HASH
        if legacy:
            upgraded = _upgrade_legacy(cfg, old_folds, meta, wanted, data_dir)
            if upgraded is not None:
                return upgraded
        elif {key: meta.get(key) for key in wanted} == wanted:
            return meta | {"reused": True}
        how = " (hashed as file bytes by an older foldstack)" if legacy else ""
        raise DataError(
            f"{json_path} holds folds for k={meta.get('k')}, seed={meta.get('seed')} on data "
            f"{str(meta.get('data_sha256'))[:12]}{how}, not k={cfg.folds.k}, seed={cfg.folds.seed} on "
            f"{data_sha[:12]} ({data_dir / cfg.files.train}). Every stage's outputs are tied to the folds: "
            f"rerun with FORCE=1 to replace them (older runs will then be refused), or set runs_dir."
        )
    word = "patients" if "patient" in c.group else f"{c.group} groups"
    folds = assign_folds(train[c.id], train[c.group], target, cfg.folds.k, cfg.folds.seed, cfg.classes, word)
    meta = _write_pair(cfg, folds, wanted | _describe(cfg, folds) | {"data_dir": str(data_dir)})
    return meta | {"reused": False}


def _describe(cfg: CompetitionConfig, folds: pd.DataFrame) -> dict:
    """folds.json's fields that follow from the assignment: sha256, counts, per-fold rows and groups."""
    counts: dict = {"positives": int(folds["target"].sum())}
    if cfg.multiclass:
        n = np.bincount(folds["target"], minlength=len(cfg.classes))
        counts = {
            "classes": list(cfg.classes),
            "class_counts": dict(zip(cfg.classes, n.tolist(), strict=True)),
        }
    return {
        "data_hash": DATA_HASH,
        "sha256": folds_sha256(folds),
        "rows": len(folds),
        **counts,
        "groups": int(folds["group"].nunique()),
        "per_fold": folds.groupby("fold")
        .agg(
            rows=("id", "size"),
            positives=("target", "sum" if not cfg.multiclass else "nunique"),
            groups=("group", "nunique"),
        )
        .reset_index()
        .to_dict("records"),
    }


def _write_pair(cfg: CompetitionConfig, folds: pd.DataFrame, meta: dict) -> dict:
    """folds.csv + folds.json committed together (folds.json is the set's manifest); the meta written."""
    csv_path, json_path = folds_paths(cfg)
    meta = meta | {"git_commit": artifacts.git_commit()}
    with artifacts.SetWriter(Runs.of(cfg).dir, "folds", manifest=json_path.name) as s:
        s.write_csv(csv_path.name, folds[FOLD_COLUMNS])
        s.write_json(json_path.name, meta)
    return meta


def _upgrade_legacy(
    cfg: CompetitionConfig, folds: pd.DataFrame, meta: dict, wanted: dict, data_dir: Path
) -> dict | None:
    """Folds written before the table hash (data_sha256 was the train CSV's bytes): when that hash is
    still the current file's and k and seed are the same, the folds were made on this very table, so
    folds.json is rewritten with the table hash (the assignment and its sha256 are kept). Else None."""
    train_csv = Path(data_dir) / cfg.files.train
    same_bytes = train_csv.is_file() and meta.get("data_sha256") == artifacts.sha256_file(train_csv)
    if not same_bytes or (meta.get("k"), meta.get("seed")) != (wanted["k"], wanted["seed"]):
        return None
    keep = {key: meta[key] for key in ("data_dir",) if key in meta}
    new = _write_pair(cfg, folds, wanted | _describe(cfg, folds) | keep)
    return new | {"reused": True, "upgraded": True}


REQUIRED_META = ("k", "seed", "sha256", "data_sha256")


def load_folds(cfg: CompetitionConfig) -> tuple[pd.DataFrame, dict]:
    """folds.csv checked against folds.json: the pair is one set (a commit a killed process left half
    done is rolled forward first, a member missing or of another size is refused naming the file),
    then the assignment's sha256 is checked, so an edited fold is refused too."""
    csv_path, json_path = folds_paths(cfg)
    artifacts.recover(Runs.of(cfg).dir)
    if not json_path.exists():
        raise DataError(
            f"no folds at {csv_path} ({json_path.name} is missing): run `make folds COMP={cfg.name}`"
        )
    try:
        meta = artifacts.read_manifest(json_path, deep=False)
    except DataError as e:
        raise DataError(
            f"{e} (folds pair {csv_path.name} + {json_path.name}: `make folds FORCE=1`)"
        ) from None
    if not csv_path.exists():
        raise DataError(f"{csv_path} is missing beside {json_path}: run `make folds COMP={cfg.name} FORCE=1`")
    lacking = [key for key in REQUIRED_META if key not in meta]
    if lacking:
        raise DataError(
            f"{json_path} lacks {', '.join(lacking)} (written by an older foldstack or edited): "
            f"rerun `make folds COMP={cfg.name} FORCE=1`"
        )
    folds = pd.read_csv(csv_path, dtype={"id": str, "group": str})
    if any(col not in folds.columns for col in FOLD_COLUMNS):
        raise DataError(
            f"{csv_path}: expected the columns {', '.join(FOLD_COLUMNS)}, found {list(folds.columns)}"
        )
    sha = folds_sha256(folds)
    if sha != meta["sha256"]:
        legacy = (
            ""
            if artifacts.MANIFEST_KEY in meta
            else (" (or, as this folds.json predates sets, a write of the pair was interrupted)")
        )
        raise DataError(
            f"{csv_path} does not match the sha256 in {json_path} ({sha[:12]} vs "
            f"{meta['sha256'][:12]}): the folds file was edited{legacy}; rerun `make folds FORCE=1`"
        )
    return folds, meta


def check_fold_sha(
    cfg: CompetitionConfig,
    sha: str | None,
    what: str,
    rerun: str = "rerun it on the current folds",
    meta: dict | None = None,
) -> None:
    """Refuse an artifact made on other folds than the current folds.json: the message names `what`
    (the artifact), its folds sha256, the current one, folds.json and then `rerun` (what to do).
    `meta` is folds.json's content when the caller has loaded it already (else it is loaded)."""
    current = (load_folds(cfg)[1] if meta is None else meta)["sha256"]
    if sha != current:
        raise DataError(
            f"{what} was made on folds {str(sha)[:12]}, but the current folds are {current[:12]} "
            f"({folds_paths(cfg)[1]}): {rerun}"
        )
