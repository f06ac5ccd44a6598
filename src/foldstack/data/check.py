"""Check a data folder against the competition layout: whatever files it holds, read as they are
(check_data, `make check-data`), or that it holds them all, complete (check_complete, `make download`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from foldstack.config import CompetitionConfig
from foldstack.data.image_check import bad_image_problems, inspect_image, scan_images
from foldstack.data.images import ImageStore, JpegDirImages, check_ids, open_images
from foldstack.data.metadata import read_metadata, read_sample_submission
from foldstack.errors import DataError

SPLITS = ("train", "test")
MAX_SHOWN = 5


@dataclass
class CheckReport:
    """What a data check found: `problems` are errors, `lines` the summary."""

    title: str
    problems: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        """The human summary: the findings, then the problems, then OK or FAILED."""
        out = [self.title, *(f"  {line}" for line in self.lines)]
        if self.problems:
            out.append(f"{len(self.problems)} problem(s):")
            out += [f"  - {p}" for p in self.problems]
        out.append("OK" if self.ok else "FAILED")
        return "\n".join(out)


def layout(cfg: CompetitionConfig, data_dir: Path) -> dict[str, Path]:
    """Every file (or image folder) of the competition layout, by a readable name.

    A split whose images lie in several folders gets one entry per folder ('train images 1', ...).
    """
    files = {
        "train metadata": data_dir / cfg.files.train,
        "test metadata": data_dir / cfg.files.test,
        "sample submission": data_dir / cfg.files.sample_submission,
    }
    for split in SPLITS:
        paths = cfg.images.paths(split)
        for k, path in enumerate(paths, 1):
            files[f"{split} images" + (f" {k}" if len(paths) > 1 else "")] = data_dir / path
    return files


def image_paths(cfg: CompetitionConfig, data_dir: Path, split: str) -> list[Path]:
    """The image file or folders of a split."""
    return [data_dir / p for p in cfg.images.paths(split)]


def _shown(items: list) -> str:
    text = ", ".join(str(i) for i in items[:MAX_SHOWN])
    return text if len(items) <= MAX_SHOWN else f"{text}, ... ({len(items)} in all)"


def _target_summary(cfg: CompetitionConfig, target: pd.Series) -> str:
    """'12 positives (1.2%)', or the count of each class in config order: 'nv 1340, mel 230, ...'."""
    if cfg.multiclass:
        counts = target.value_counts()
        return ", ".join(f"{c} {int(counts.get(c, 0))}" for c in cfg.classes)
    pos = int(target.sum())
    return f"{pos} positives ({pos / len(target):.3%})"


def _check_metadata(
    cfg: CompetitionConfig, data_dir: Path, split: str, report: CheckReport
) -> pd.DataFrame | None:
    """The metadata of a split if present and valid, else None (a problem when invalid)."""
    path = layout(cfg, data_dir)[f"{split} metadata"]
    if not path.exists():
        report.lines.append(f"{split} metadata: missing ({path})")
        return None
    try:
        df = read_metadata(cfg, data_dir, split)
    except DataError as e:
        report.problems.append(str(e))
        return None
    parts = [f"{len(df)} rows"]
    if split == "train":
        parts.append(_target_summary(cfg, df[cfg.columns.target]))
    group = cfg.columns.group
    word = "patients" if "patient" in group else f"{group} groups"
    parts.append(f"{df[group].nunique()} {word}")
    report.lines.append(f"{split} metadata: {path.name}: {', '.join(parts)}")
    na = df.isna().sum()
    na = na[na > 0]
    if len(na):
        report.lines.append("  missing values: " + ", ".join(f"{c}={n}" for c, n in na.items()))
    return df


def _check_submission(
    cfg: CompetitionConfig, data_dir: Path, test: pd.DataFrame | None, report: CheckReport
) -> None:
    path = layout(cfg, data_dir)["sample submission"]
    if not path.exists():
        report.lines.append(f"sample submission: missing ({path})")
        return
    try:
        sub = read_sample_submission(cfg, data_dir)
    except DataError as e:
        report.problems.append(str(e))
        return
    report.lines.append(f"sample submission: {path.name}: {len(sub)} rows")
    if test is None:
        return
    sub_ids, test_ids = set(sub[cfg.columns.id]), set(test[cfg.columns.id])
    if sub_ids != test_ids:
        report.problems.append(
            f"{path}: the ids differ from the test metadata's: {len(sub_ids - test_ids)} only in the "
            f"submission ({_shown(sorted(sub_ids - test_ids))}), {len(test_ids - sub_ids)} only in "
            f"the test metadata ({_shown(sorted(test_ids - sub_ids))})"
        )


def _image_counts(store: ImageStore, stored: list[str]) -> str:
    """'N images', with the count of each folder when there are several."""
    if not isinstance(store, JpegDirImages) or len(store.folders) == 1:
        return f"{len(stored)} images"
    per = ", ".join(f"{p.name} {len(i)}" for p, i in store.ids_per_folder().items())
    return f"{len(stored)} images ({per})"


def _check_images(
    cfg: CompetitionConfig,
    data_dir: Path,
    split: str,
    meta: pd.DataFrame | None,
    workers: int,
    progress: bool,
    report: CheckReport,
) -> None:
    paths = image_paths(cfg, data_dir, split)
    names = " + ".join(p.name for p in paths)
    absent = [p for p in paths if not p.exists()]
    if len(absent) == len(paths):
        report.lines.append(f"{split} images: missing ({', '.join(map(str, paths))})")
        return
    if absent:
        report.problems.append(
            f"{split} images: {len(absent)} of the {len(paths)} image folders are missing: "
            f"{', '.join(map(str, absent))} (the layout has {names})"
        )
        return
    try:
        store = open_images(cfg, data_dir, split)
        stored = store.ids()
        parts = [_image_counts(store, stored)]
    except DataError as e:
        report.problems.append(str(e))
        return
    if meta is not None:
        stored_set, wanted = set(stored), meta[cfg.columns.id].tolist()
        extra = len(stored_set - set(wanted))
        if extra:
            parts.append(f"{extra} without a metadata row")
        try:
            check_ids(store, [i for i in wanted if i not in stored_set])
        except DataError as e:
            report.problems.append(f"{split} metadata ids without an image: {e}")
    if stored:  # every image in the store, whether or not it has a metadata row
        scan = scan_images(store, stored, workers=workers, label=f"{split} images", progress=progress)
        parts.append(scan.summary())
        report.problems += bad_image_problems(scan, split, MAX_SHOWN)
    report.lines.append(f"{split} images: {names}: {', '.join(parts)}")


def check_data(
    cfg: CompetitionConfig, data_dir: Path, workers: int = 0, progress: bool = True
) -> CheckReport:
    """Check every file of the layout that `data_dir` holds; missing files are reported, not errors.

    Every image is read and checked (see image_check.inspect_image) on `workers` processes (0: every
    core this process may use); `progress` shows a bar (or 10% lines in a log).
    """
    data_dir = Path(data_dir)
    report = CheckReport(f"data check of {data_dir} for {cfg.name}")
    files = layout(cfg, data_dir)
    if not data_dir.is_dir():
        report.problems.append(f"the data folder {data_dir} does not exist")
        return report
    if not any(p.exists() for p in files.values()):
        names = ", ".join(p.name for p in files.values())
        report.problems.append(f"{data_dir} holds none of the {cfg.name} files (expected: {names})")
        return report
    meta = {split: _check_metadata(cfg, data_dir, split, report) for split in SPLITS}
    _check_submission(cfg, data_dir, meta["test"], report)
    for split in SPLITS:
        _check_images(cfg, data_dir, split, meta[split], workers, progress, report)
    return report


# --- a complete folder (make download) -----------------------------------------------------


def _holds(folder: Path) -> list[str]:
    """The names at the top of a folder, folders with a trailing /."""
    if not folder.is_dir():
        return []
    return sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())


def _first_image(cfg: CompetitionConfig, folder: Path, split: str, ids: list[str]) -> None:
    """Every metadata id has an image, and the first one is a readable JPEG/PNG."""
    store = open_images(cfg, folder, split)
    try:
        check_ids(store, ids)
        _, problem, _ = inspect_image(store.read_bytes(ids[0]))
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()
    if problem:
        raise DataError(f"{store.where}: the image of {ids[0]} is {problem}")


def _published_rows(cfg: CompetitionConfig, folder: Path, rows: dict[str, int]) -> None:
    for split in SPLITS:
        expected = getattr(cfg.published, f"{split}_rows")
        if expected and rows[split] != expected:
            name = cfg.files.train if split == "train" else cfg.files.test
            raise DataError(
                f"{folder / name}: {rows[split]:,} rows, but Kaggle publishes {expected:,} "
                f"(published.{split}_rows in configs/competitions/{cfg.name}.yaml)"
            )


def check_complete(cfg: CompetitionConfig, folder: str | Path) -> dict:
    """Check that a folder holds every file of the competition complete, as `make download` installs it;
    {train_rows, test_rows, positives (None for multiclass)}.

    Raises DataError naming the missing file or column, the ids that differ, or a row count other than
    the config's `published` one. Reads the metadata and lists the image stores, but reads only the first
    image of each (`make check-data` reads them all).
    """
    folder = Path(folder)
    missing = [
        f"{name} ({p.relative_to(folder)})" for name, p in layout(cfg, folder).items() if not p.exists()
    ]
    if missing:
        raise DataError(
            f"{folder} lacks {len(missing)} file(s) of the {cfg.name} layout: {_shown(missing)}; "
            f"it holds: {_shown(_holds(folder)) or 'nothing'}"
        )
    meta = {split: read_metadata(cfg, folder, split) for split in SPLITS}
    id_col = cfg.columns.id
    sub_ids, test_ids = set(read_sample_submission(cfg, folder)[id_col]), set(meta["test"][id_col])
    if sub_ids != test_ids:
        only_sub, only_test = sorted(sub_ids - test_ids), sorted(test_ids - sub_ids)
        raise DataError(
            f"{folder / cfg.files.sample_submission}: the ids differ from {cfg.files.test}'s: "
            f"{len(only_sub)} only in the submission ({_shown(only_sub)}), {len(only_test)} only in the "
            f"test metadata ({_shown(only_test)})"
        )
    rows = {split: len(meta[split]) for split in SPLITS}
    _published_rows(cfg, folder, rows)
    for split in SPLITS:
        _first_image(cfg, folder, split, meta[split][id_col].astype(str).tolist())
    target = meta["train"][cfg.columns.target]
    positives = None if cfg.multiclass else int(target.sum())
    return {"train_rows": rows["train"], "test_rows": rows["test"], "positives": positives}
