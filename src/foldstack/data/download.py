"""`make download`: a competition's files through the real kaggle CLI, checked, then installed whole.

    kaggle competitions download -c SLUG -p data/<comp>.partial-<pid>/zip
    -> unzip into data/<comp>.partial-<pid>/files (free disk space checked first, every member's CRC
       checked, no member may land outside the folder)
    -> check it against the competition config (data.check.check_complete): every file of the layout,
       the metadata columns (read_metadata), the sample submission's ids, every metadata id in its image
       store and the first image of each split readable, the row counts of the config's `published:`
    -> kaggle-download.json (what was downloaded, when) -> renamed onto data/<comp> (or DATA=dir)

Any failure (no credentials, 401/403/404, an exit-0 failure of the CLI, a damaged zip, a file or column
missing) removes the partial folder and raises DownloadError naming the slug, the file or the column and
what to do; data/<comp> is then as it was. A folder already complete is kept unless force; a complete
folder is swapped out only after its replacement passed the check. A partial folder left by a killed run
is removed by the next run, and a swap killed half way is rolled back.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from foldstack import artifacts
from foldstack.config import CompetitionConfig
from foldstack.data.check import check_complete, layout
from foldstack.errors import DataError, FoldstackError
from foldstack.submit import kaggle_cli
from foldstack.submit.kaggle_cli import KaggleError

PARTIAL, OLD = ".partial-", ".old-"  # data/<comp>.partial-<pid>: a download in progress; .old-<pid>: a swap
RECORD = "kaggle-download.json"
SYNTHETIC_RECORD = "synthetic.json"  # written by `make data`: a synthetic competition, not a download
DOWNLOAD_TIMEOUT_S = 6 * 3600  # the ISIC 2024 zip is several GB
PROGRESS_EVERY_S = 30
DISK_MARGIN = 1.05
RESUME_MARKER = ".kaggle-partial"  # the CLI's mark of a file not fully downloaded (removed when complete)
# what the CLI prints when Kaggle refuses: the key (401, or its auth help), the rules (403), the slug (404)
_AUTH = re.compile(r"authentication required|\b401\b|unauthori[sz]ed", re.IGNORECASE)
_RULES = re.compile(r"\b403\b|forbidden|accept\S*(\s+\S+){0,6}\s+rules", re.IGNORECASE)
_MISSING = re.compile(r"\b404\b|not found|does not exist", re.IGNORECASE)


class DownloadError(FoldstackError):
    """A download failed or does not match the competition config; nothing was installed."""


# --- the existing folder ----------------------------------------------------------------------


def _existing(cfg: CompetitionConfig, target: Path) -> tuple[dict | None, str]:
    """(summary, '') when `target` holds a complete copy; (None, why not) otherwise; (None, '') when
    there is nothing there (absent or an empty folder)."""
    if not target.exists():
        return None, ""
    if not target.is_dir():
        raise DownloadError(f"{target} is a file, not a folder: move it away or choose another DATA=dir")
    if not any(target.iterdir()):
        return None, ""
    if (target / SYNTHETIC_RECORD).exists():
        return (
            None,
            f"it holds the synthetic {cfg.name} competition written by `make data` ({SYNTHETIC_RECORD})",
        )
    try:
        return check_complete(cfg, target), ""
    except DataError as e:
        return None, str(e)


# --- stale folders of killed runs ------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dead_siblings(target: Path, marker: str) -> Iterator[Path]:
    """<target><marker><pid> folders of processes that are gone."""
    if not target.parent.is_dir():
        return
    for p in sorted(target.parent.glob(f"{target.name}{marker}*")):
        pid = p.name[len(target.name) + len(marker) :]
        if pid.isdigit() and not _alive(int(pid)):
            yield p


def clean_stale(target: Path) -> None:
    """Remove the partial folders of killed downloads; roll back a swap killed between its renames."""
    for old in _dead_siblings(target, OLD):
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, target)
            print(f"restored {target} (a replacement was killed half way)", flush=True)
    for partial in _dead_siblings(target, PARTIAL):
        print(f"removing {partial} (left by a download that was killed)", flush=True)
        shutil.rmtree(partial, ignore_errors=True)


# --- download, unzip, install ----------------------------------------------------------------


def _slug(cfg: CompetitionConfig) -> str:
    if not cfg.slug:
        raise DownloadError(
            f"{cfg.name} is not a Kaggle competition (its slug is empty in "
            f"configs/competitions/{cfg.name}.yaml): get its files by hand into data/{cfg.name}/ "
            f"and run `make check-data COMP={cfg.name}`"
        )
    return cfg.slug


def _why(slug: str, output: str, timeout: float) -> str:
    """What to do about a failed `kaggle competitions download`, read from its output."""
    if _AUTH.search(output):
        return (
            "Kaggle refused the credentials (401): put your key in ~/.kaggle/kaggle.json (chmod 600; a new "
            "one from https://www.kaggle.com/settings/api) or set KAGGLE_USERNAME/KAGGLE_KEY"
        )
    if _RULES.search(output):
        return (
            f"Kaggle refused the download (403): accept the rules at "
            f"https://www.kaggle.com/competitions/{slug}/rules with the account of your key, then rerun"
        )
    if _MISSING.search(output):
        return (
            f"Kaggle has no competition {slug!r} (404): check `slug:` in the competition config (the "
            f"last part of https://www.kaggle.com/competitions/<slug>)"
        )
    if "timed out after" in output:
        return f"it took longer than {timeout:g} s: rerun with a longer TIMEOUT=<seconds>"
    return "rerun `make download` once the cause below is fixed"


@contextmanager
def _progress(folder: Path, every: float = PROGRESS_EVERY_S) -> Iterator[None]:
    """A line every `every` s with the bytes downloaded so far (the CLI's own output is captured)."""
    stop = threading.Event()

    def watch() -> None:
        start = time.monotonic()
        while not stop.wait(every):
            size = 0
            for p in folder.rglob("*"):
                with suppress(OSError):
                    size += p.stat().st_size if p.is_file() else 0
            print(f"  {size / 1e9:.2f} GB downloaded after {time.monotonic() - start:.0f} s", flush=True)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fetch(slug: str, zip_dir: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> list[Path]:
    """`kaggle competitions download -c SLUG -p ZIP_DIR`; the files it wrote. DownloadError on failure."""
    zip_dir.mkdir(parents=True, exist_ok=True)
    args = ["competitions", "download", "-c", slug, "-p", str(zip_dir)]
    try:
        with _progress(zip_dir):
            kaggle_cli.run(args, dry_run=False, timeout=timeout)
    except KaggleError as e:
        why = _why(slug, str(e), timeout)
        raise DownloadError(f"downloading {slug} failed: {why}; nothing was kept.\n{e}") from None
    if any(p.name.endswith(RESUME_MARKER) for p in zip_dir.iterdir()):
        raise DownloadError(f"downloading {slug} did not finish (a {RESUME_MARKER} file is left): rerun")
    got = sorted(p for p in zip_dir.iterdir() if p.is_file())
    if not got:
        raise DownloadError(
            f"`kaggle competitions download -c {slug}` exited 0 but wrote nothing into {zip_dir}"
        )
    return got


_DAMAGED = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error)  # cut short, bad CRC or data


def _member_path(zip_path: Path, name: str) -> PurePosixPath:
    rel = PurePosixPath(name.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or (rel.parts and rel.parts[0].endswith(":")):
        raise DownloadError(f"{zip_path}: the member {name!r} would land outside the data folder; refused")
    return rel


def unzip(zip_path: Path, out: Path) -> int:
    """Extract every member of `zip_path` into `out`; the number of files. DownloadError when the zip is
    damaged (cut short, a CRC mismatch), holds an unsafe path, or does not fit on the disk."""
    damaged = f"{zip_path} is damaged (an interrupted download?): rerun `make download`"
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = zf.infolist()
            for info in members:
                _member_path(zip_path, info.filename)
            need = sum(i.file_size for i in members) * DISK_MARGIN
            out.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(out).free
            if need > free:
                raise DownloadError(
                    f"unzipping {zip_path.name} needs {need / 1e9:.1f} GB, {free / 1e9:.1f} GB are free on "
                    f"{out}: free some space or download elsewhere with DATA=<folder on a larger disk>"
                )
            for info in members:
                try:
                    zf.extract(info, out)
                except _DAMAGED as e:
                    raise DownloadError(f"{damaged}; {info.filename}: {e}") from None
                except OSError as e:
                    raise DownloadError(
                        f"unzipping {info.filename} of {zip_path} into {out} failed: {e}"
                    ) from None
    except _DAMAGED as e:
        raise DownloadError(f"{damaged}; {e}") from None
    return sum(1 for i in members if not i.is_dir())


def unpack(files: list[Path], out: Path) -> None:
    """Each downloaded zip extracted into `out`; any other file moved there as it is."""
    for path in files:
        if zipfile.is_zipfile(path) or path.suffix == ".zip":
            n = unzip(path, out)
            print(f"unzipped {path.name}: {n} files", flush=True)
            path.unlink()  # the disk holds the zip and its files only while unzipping
        else:
            out.mkdir(parents=True, exist_ok=True)
            os.replace(path, out / path.name)


def install(staged: Path, target: Path, force: bool) -> bool:
    """Rename `staged` onto `target`; a complete `target` is replaced only with force (renamed aside, then
    removed once the new one is in place). False when `target` appeared meanwhile and is kept."""
    if target.exists() and any(target.iterdir()) and not force:
        return False
    old = target.parent / f"{target.name}{OLD}{os.getpid()}"
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(staged, target)
    except OSError:
        if old.exists():
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return True


def _record(cfg: CompetitionConfig, slug: str, folder: Path, summary: dict, seconds: float) -> dict:
    """kaggle-download.json: what was downloaded, when, and what the check found."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    record = {
        "competition": cfg.name,
        "slug": slug,
        "downloaded_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round(seconds, 1),
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "layout": {name: p.relative_to(folder).as_posix() for name, p in layout(cfg, folder).items()},
        **summary,
    }
    artifacts.write_json(folder / RECORD, record)
    return record


def _refuse_existing(target: Path, why: str) -> DownloadError:
    return DownloadError(
        f"{target} exists but is not a complete download: {why}. `make download FORCE=1` replaces it "
        f"(the new files are checked before anything is replaced), or choose another folder with DATA=dir"
    )


def _fetch_and_check(cfg: CompetitionConfig, slug: str, work: Path, timeout: float) -> tuple[Path, dict]:
    """Download into work/zip, unpack into work/files, check it; (the files folder, its record)."""
    start = time.monotonic()
    staged = work / "files"
    unpack(fetch(slug, work / "zip", timeout), staged)
    try:
        summary = check_complete(cfg, staged)
    except DataError as e:
        why = str(e).replace(f"{staged}{os.sep}", "").replace(str(staged), "the download")  # gone soon
        raise DownloadError(
            f"the download of {slug} does not match configs/competitions/{cfg.name}.yaml, so it was not "
            f"installed: {why}. If Kaggle changed the competition's files, update the config (files, images, "
            f"table.columns, published); if the download was cut short, rerun `make download`"
        ) from None
    return staged, _record(cfg, slug, staged, summary, time.monotonic() - start)


def download(
    cfg: CompetitionConfig,
    target: str | Path,
    force: bool = False,
    dry_run: bool = False,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> dict:
    """Download the competition's files into `target` (see the module docstring); what happened.

    Keys: status ('downloaded' | 'kept' | 'dry run'), target, and the check's summary (rows, positives)
    or the record of the download. force downloads again over a complete folder, and replaces an
    incomplete one (refused without force, as is a folder of the synthetic competition).
    """
    slug, target = _slug(cfg), Path(target)
    work = target.parent / f"{target.name}{PARTIAL}{os.getpid()}"
    if dry_run:
        kaggle_cli.run(["competitions", "download", "-c", slug, "-p", str(work / "zip")], dry_run=True)
        print(
            f"(then unzip into {work / 'files'}, check it against {cfg.name}'s config, rename it to {target})"
        )
        return {"status": "dry run", "target": str(target)}
    clean_stale(target)
    found, why = _existing(cfg, target)
    if found is not None and not force:
        print(
            f"{target} already holds the complete {cfg.name} download ({_summary(found)}): nothing to do "
            f"(FORCE=1 downloads it again)",
            flush=True,
        )
        return {"status": "kept", "target": str(target), **found}
    if why and not force:
        raise _refuse_existing(target, why)
    try:
        kaggle_cli.check_credentials()
    except KaggleError as e:
        raise DownloadError(f"cannot download {slug}: {e}") from None
    try:
        staged, record = _fetch_and_check(cfg, slug, work, timeout)
        if not install(staged, target, force):
            print(f"{target} was completed by another run meanwhile: kept it, dropped this one", flush=True)
            return {"status": "kept", "target": str(target)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"downloaded {slug} into {target}/: {_summary(record)}, {record['files']} files, "
        f"{record['bytes'] / 1e9:.2f} GB (recorded in {RECORD}); `make check-data` reads every image",
        flush=True,
    )
    return {"status": "downloaded", "target": str(target), **record}


def _summary(found: dict) -> str:
    text = f"{found['train_rows']:,} train rows, {found['test_rows']:,} test rows"
    return text if found.get("positives") is None else f"{text}, {found['positives']:,} positives"
