"""Read and validate the competition's metadata CSVs exactly as Kaggle publishes them.

Column roles and types come from the competition config. Problems raise `DataError` with a
message that names the file, the column and the offending ids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from foldstack.config import CompetitionConfig
from foldstack.errors import ConfigError, DataError

SPLITS = ("train", "test")
TEXT_TYPES = ("id", "str", "cat")
NUMERIC_TYPES = ("int", "float")
FEATURE_TYPES = ("cat", "int", "float")
MAX_SHOWN = 5


def _required(cfg: CompetitionConfig, split: str) -> list[str]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return cfg.table.train_columns if split == "train" else cfg.table.test_columns


def _shown(items: list, limit: int = MAX_SHOWN) -> str:
    """'a, b, c' or 'a, b, c, ... (12 in all)' when there are more than `limit`."""
    text = ", ".join(str(i) for i in items[:limit])
    return text if len(items) <= limit else f"{text}, ... ({len(items)} in all)"


def _read_header(path: Path) -> list[str]:
    try:
        return list(pd.read_csv(path, nrows=0).columns)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty (expected a CSV header and rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable CSV file: {e}") from None


# pandas before 3.0 parses some 17-digit floats one ulp off (its default parser is not correctly
# rounded); round_trip is, and is what pandas 3 does by default (where the option is deprecated).
EXACT_FLOATS = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}


def read_csv_exact(path: Path, **kwargs) -> pd.DataFrame:
    """pd.read_csv with every float parsed to the nearest double, the same bits on any pandas version."""
    return pd.read_csv(path, **EXACT_FLOATS, **kwargs)


def _read_csv(path: Path, cfg: CompetitionConfig) -> pd.DataFrame:
    """The file with id/str/cat columns read as text (so '0001' keeps its zeros)."""
    header = _read_header(path)
    types = cfg.table.columns
    dtype = {c: "str" for c in header if types.get(c) in TEXT_TYPES}
    try:
        df = read_csv_exact(path, dtype=dtype)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path}: not a readable CSV file: {e}") from None
    if df.empty:
        raise DataError(f"{path}: the file has a header but no rows (expected one row per image)")
    return df


def _check_columns(df: pd.DataFrame, required: list[str], path: Path, split: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(
            f"{path}: missing {len(missing)} required {split} column(s): {', '.join(missing)} "
            f"(expected the {len(required)} columns of the competition config's table.columns)"
        )


def _to_numeric(df: pd.DataFrame, col: str, kind: str, id_col: str, path: Path) -> pd.Series:
    """The column as float64 (int64 for an 'int' column of whole numbers without gaps)."""
    values = pd.to_numeric(df[col], errors="coerce") if df[col].dtype.kind not in "biuf" else df[col]
    bad = values.isna() & df[col].notna()
    if bad.any():
        rows = [f"{i}={v!r}" for i, v in zip(df.loc[bad, id_col], df.loc[bad, col], strict=True)]
        raise DataError(
            f"{path}: column {col!r} must be numeric ({kind}) but {int(bad.sum())} row(s) are not: "
            f"{_shown(rows)}"
        )
    values = values.astype("float64")
    whole = values.notna().all() and (values == values.round()).all()
    return values.astype("int64") if kind == "int" and whole else values


def _check_ids(df: pd.DataFrame, id_col: str, path: Path) -> None:
    if df[id_col].isna().any():
        rows = [str(n + 1) for n in range(len(df)) if pd.isna(df[id_col].iloc[n])]
        raise DataError(
            f"{path}: the id column {id_col!r} is empty on data row(s) {_shown(rows)} (every row needs an id)"
        )
    dup = df[id_col][df[id_col].duplicated()].unique().tolist()
    if dup:
        raise DataError(f"{path}: the id column {id_col!r} must be unique; repeated ids: {_shown(dup)}")


def _check_roles(df: pd.DataFrame, cfg: CompetitionConfig, split: str, path: Path) -> None:
    id_col, group, target = cfg.columns.id, cfg.columns.group, cfg.columns.target
    no_group = df.loc[df[group].isna(), id_col].tolist()
    if no_group:
        raise DataError(
            f"{path}: the group column {group!r} is missing for {len(no_group)} row(s), ids: "
            f"{_shown(no_group)} (every row needs a {group} so folds can group by it)"
        )
    if split == "train":
        allowed = list(cfg.classes) if cfg.multiclass else [0, 1]
        bad = ~df[target].isin(allowed)
        if bad.any():
            rows = [f"{i}={v}" for i, v in zip(df.loc[bad, id_col], df.loc[bad, target], strict=True)]
            expected = f"one of {', '.join(cfg.classes)}" if cfg.multiclass else "0 or 1"
            raise DataError(
                f"{path}: the target column {target!r} must be {expected} on every row; "
                f"{int(bad.sum())} row(s) are not: {_shown(rows)}"
            )


def target_codes(cfg: CompetitionConfig, values: pd.Series) -> np.ndarray:
    """The target as integers: 0/1, or a multiclass label's index in cfg.classes."""
    if not cfg.multiclass:
        return values.astype(np.int64).to_numpy()
    codes = pd.Categorical(values, categories=list(cfg.classes)).codes.astype(np.int64)
    if (codes < 0).any():
        raise DataError(f"target labels outside {list(cfg.classes)}: {sorted(set(values[codes < 0]))[:5]}")
    return codes


def read_metadata(cfg: CompetitionConfig, data_dir: Path, split: str) -> pd.DataFrame:
    """The train or test metadata CSV, checked against the config and typed.

    Unknown extra columns are kept (in file order) but never type-checked; they are not features.
    """
    required = _required(cfg, split)
    path = Path(data_dir) / (cfg.files.train if split == "train" else cfg.files.test)
    if not path.is_file():
        raise DataError(f"{path}: the {split} metadata file does not exist")
    df = _read_csv(path, cfg)
    _check_columns(df, required, path, split)
    id_col = cfg.columns.id
    _check_ids(df, id_col, path)
    for col in required:
        kind = cfg.table.columns[col]
        if kind in NUMERIC_TYPES:
            df[col] = _to_numeric(df, col, kind, id_col, path)
    _check_roles(df, cfg, split, path)
    return df


def feature_columns(cfg: CompetitionConfig) -> list[str]:
    """The test-side cat/int/float columns other than the id and group: the tabular features."""
    roles = {cfg.columns.id, cfg.columns.group, cfg.columns.target}
    cols = [c for c in cfg.table.of_type(*FEATURE_TYPES, split="test") if c not in roles]
    leaked = set(cols) & set(cfg.table.train_only)
    if leaked:
        raise ConfigError(
            f"{cfg.name} config: columns {sorted(leaked)} are listed both as train-only and as test-side "
            f"features; train-only columns describe the diagnosis and must never be features"
        )
    return cols


def read_sample_submission(cfg: CompetitionConfig, data_dir: Path) -> pd.DataFrame:
    """sample_submission.csv, checked to have exactly the header [id, target] (or [id, *classes])."""
    path = Path(data_dir) / cfg.files.sample_submission
    if not path.is_file():
        raise DataError(f"{path}: the sample submission file does not exist")
    header = _read_header(path)
    expected = cfg.submission_columns
    if header != expected:
        raise DataError(f"{path}: expected the header {','.join(expected)}, found {','.join(header)}")
    df = pd.read_csv(path, dtype={cfg.columns.id: "str"})
    _check_ids(df, cfg.columns.id, path)
    return df
