"""make download: the REAL installed kaggle CLI against a loopback stub of the Kaggle API that serves a zip
of the embedded synthetic competition, then the unzip, the check against the config and the install."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pytest

from foldstack.config import CompetitionConfig, load_competition
from foldstack.data import download as dl
from foldstack.data.check import check_complete
from foldstack.data.download import DownloadError
from foldstack.submit import kaggle_cli
from tests.kaggle_stub import KEY, KaggleStub, Recorded, _read_body, isolate_kaggle_env, running_stub

SLUG = "isic-2024-challenge"
FILES_PREFIX = "/files/"
NOT_KAGGLE = {"synthetic.json", "synthetic-config.yaml", "test-labels.csv"}  # made by `make data` only


class DownloadStub(KaggleStub):
    """The Kaggle stub plus competitions.CompetitionApiService/DownloadDataFiles as kaggle.com answers it:
    a redirect to the zip (GET /files/<slug>.zip here); 403 for a competition whose rules are not accepted,
    404 for an unknown one (plain-text bodies, so the CLI prints the status line as it does for Kaggle)."""

    def __init__(self, port: int = 80) -> None:
        super().__init__(port)
        self.zips: dict[str, bytes] = {}  # competition slug -> the bytes of its zip
        self.rules_not_accepted: set[str] = set()
        self.server.RequestHandlerClass = _download_handler(self, self.server.RequestHandlerClass)

    def _rpc_DownloadDataFiles(self, body: dict) -> tuple[int, object]:
        slug = body.get("competitionName", "")
        if slug in self.rules_not_accepted:
            return 403, b"Forbidden"
        if slug not in self.zips:
            return 404, b"Not Found"
        return 302, f"{self.public_base}{FILES_PREFIX}{slug}.zip"


def _download_handler(stub: DownloadStub, base: type) -> type:
    class Handler(base):
        def _send(self, status: int, data: bytes, ctype: str, location: str = "") -> None:
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _serve(self) -> None:
            path = urlsplit(self.path).path
            if self.command == "GET" and path.startswith(FILES_PREFIX):
                stub.requests.append(Recorded("GET", path, dict(self.headers.items()), b"", status=200))
                slug = path[len(FILES_PREFIX) :].removesuffix(".zip")
                return self._send(200, stub.zips[slug], "application/zip")
            if self.command != "POST" or not path.endswith("/DownloadDataFiles"):
                return super()._serve()
            body = _read_body(self)
            rec = Recorded("POST", path, dict(self.headers.items()), body, json.loads(body or b"{}"))
            rec.status, payload = stub.handle(rec)
            if rec.status == 302:
                return self._send(302, b"", "text/plain", location=str(payload))
            if isinstance(payload, bytes):
                return self._send(rec.status, payload, "text/plain")
            return self._send(rec.status, json.dumps(payload).encode(), "application/json")

        do_GET = do_POST = _serve

    return Handler


@pytest.fixture
def stub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DownloadStub]:
    yield from running_stub(DownloadStub, tmp_path, monkeypatch)


def _config(data: Path, extra: str = "") -> CompetitionConfig:
    """isic2024 with the tiny data's row counts as the published ones."""
    rows = {s: len(pd.read_csv(data / f"{s}-metadata.csv", usecols=[0])) for s in ("train", "test")}
    return load_competition(
        "isic2024", f"published.train_rows={rows['train']} published.test_rows={rows['test']} {extra}"
    )


def _zip(data: Path, skip: tuple[str, ...] = (), edit: Callable[[str, bytes], bytes] | None = None) -> bytes:
    """The data folder as Kaggle's zip would hold it (less `make data`'s own files and `skip`)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(data.rglob("*")):
            name = p.relative_to(data).as_posix()
            if p.is_file() and name not in NOT_KAGGLE and name not in skip:
                zf.writestr(name, edit(name, p.read_bytes()) if edit else p.read_bytes())
    return buf.getvalue()


def _drop_column(column: str) -> Callable[[str, bytes], bytes]:
    def edit(name: str, data: bytes) -> bytes:
        if name != "train-metadata.csv":
            return data
        df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
        return df.drop(columns=[column]).to_csv(index=False).encode()

    return edit


def _leftovers(target: Path) -> list[str]:
    """What a download left beside its target: the target itself, partial or swapped-out folders."""
    return sorted(p.name for p in target.parent.glob(f"{target.name}*"))


def _copy_as_kaggle(src: Path, dst: Path) -> None:
    with zipfile.ZipFile(io.BytesIO(_zip(src))) as zf:
        zf.extractall(dst)


# --- a good download ----------------------------------------------------------------------------


def test_a_good_download_lands_checked_with_its_record(stub, tiny_isic2024, tmp_path, capsys):
    _, data = tiny_isic2024
    cfg = _config(data)
    stub.zips[SLUG] = _zip(data)
    target = tmp_path / "data" / "isic2024"

    result = dl.download(cfg, target)

    out = capsys.readouterr().out
    assert f"$ kaggle competitions download -c {SLUG} -p {target.parent / 'isic2024.partial-'}" in out
    assert result["status"] == "downloaded"
    assert _leftovers(target) == ["isic2024"]  # no partial folder beside it
    for name in ("train-metadata.csv", "test-metadata.csv", "sample_submission.csv", "train-image.hdf5"):
        assert (target / name).read_bytes() == (data / name).read_bytes()
    assert not (target / "synthetic.json").exists()
    record = json.loads((target / dl.RECORD).read_text())
    assert record["slug"] == SLUG and record["competition"] == "isic2024"
    assert record["train_rows"] == cfg.published.train_rows and record["test_rows"] == cfg.published.test_rows
    assert check_complete(cfg, target)["train_rows"] == cfg.published.train_rows
    (call,) = stub.calls("DownloadDataFiles")
    assert call.json == {"competitionName": SLUG}
    assert [r.path for r in stub.requests if r.method == "GET"] == [f"{FILES_PREFIX}{SLUG}.zip"]
    assert stub.unknown == []
    assert KEY not in out


def test_a_complete_folder_is_kept_and_force_downloads_again(stub, tiny_isic2024, tmp_path, capsys):
    _, data = tiny_isic2024
    cfg = _config(data)
    target = tmp_path / "isic2024"
    _copy_as_kaggle(data, target)  # unzipped by hand: complete, no record
    stub.zips[SLUG] = _zip(data)

    assert dl.download(cfg, target)["status"] == "kept"
    assert "already holds the complete isic2024 download" in capsys.readouterr().out
    assert stub.requests == []  # the CLI never ran
    assert not (target / dl.RECORD).exists()

    assert dl.download(cfg, target, force=True)["status"] == "downloaded"
    assert (target / dl.RECORD).is_file()
    assert _leftovers(target) == ["isic2024"]  # the old copy was swapped out and removed


def test_force_never_replaces_a_good_folder_with_a_bad_download(stub, tiny_isic2024, tmp_path):
    _, data = tiny_isic2024
    cfg = _config(data)
    target = tmp_path / "isic2024"
    _copy_as_kaggle(data, target)
    before = sorted(p.relative_to(target).as_posix() for p in target.rglob("*"))
    stub.zips[SLUG] = _zip(data, skip=("test-image.hdf5",))

    with pytest.raises(DownloadError, match=r"test-image\.hdf5"):
        dl.download(cfg, target, force=True)

    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == before
    assert check_complete(cfg, target)["test_rows"] == cfg.published.test_rows
    assert _leftovers(target) == ["isic2024"]


# --- bad downloads leave nothing -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("skip", "column", "named"),
    [
        (("train-image.hdf5",), "", ["train-image.hdf5", SLUG, "configs/competitions/isic2024.yaml"]),
        (("sample_submission.csv",), "", ["sample_submission.csv"]),
        ((), "tbp_lv_areaMM2", ["train-metadata.csv", "tbp_lv_areaMM2", SLUG]),
    ],
    ids=["no-train-images", "no-sample-submission", "no-column"],
)
def test_a_download_missing_a_file_or_column_fails_naming_it_and_leaves_nothing(
    stub, tiny_isic2024, tmp_path, skip, column, named
):
    _, data = tiny_isic2024
    stub.zips[SLUG] = _zip(data, skip=skip, edit=_drop_column(column) if column else None)
    target = tmp_path / "data" / "isic2024"

    with pytest.raises(DownloadError) as err:
        dl.download(_config(data), target)

    for text in named:
        assert text in str(err.value)
    assert _leftovers(target) == []
    assert len(stub.calls("DownloadDataFiles")) == 1


def test_other_row_counts_than_the_published_ones_fail(stub, tiny_isic2024, tmp_path):
    _, data = tiny_isic2024
    stub.zips[SLUG] = _zip(data)
    target = tmp_path / "isic2024"
    cfg = load_competition("isic2024")  # the real counts: 401,059 train rows

    with pytest.raises(DownloadError, match=r"but Kaggle publishes 401,059 \(published.train_rows"):
        dl.download(cfg, target)
    assert _leftovers(target) == []


@pytest.mark.parametrize("damage", ["cut", "crc"])
def test_a_damaged_zip_fails_and_leaves_nothing(stub, tiny_isic2024, tmp_path, damage):
    _, data = tiny_isic2024
    good = _zip(data)
    if damage == "cut":  # the end (with the zip's directory) missing
        stub.zips[SLUG] = good[: len(good) // 2]
    else:  # one byte of a member's data flipped: its CRC no longer matches
        with zipfile.ZipFile(io.BytesIO(good)) as zf:
            info = zf.getinfo("train-metadata.csv")
        at = info.header_offset + 30 + len(info.filename) + len(info.extra) + 10
        stub.zips[SLUG] = good[:at] + bytes([good[at] ^ 0xFF]) + good[at + 1 :]
    target = tmp_path / "isic2024"

    with pytest.raises(DownloadError, match=r"is damaged \(an interrupted download\?\)"):
        dl.download(_config(data), target)
    assert _leftovers(target) == []


def test_an_interrupted_unzip_leaves_nothing(stub, tiny_isic2024, tmp_path, monkeypatch):
    _, data = tiny_isic2024
    stub.zips[SLUG] = _zip(data)
    target = tmp_path / "isic2024"
    real = zipfile.ZipFile.extract

    def extract(self, member, path=None, pwd=None):
        if str(getattr(member, "filename", member)).endswith(".hdf5"):
            raise KeyboardInterrupt
        return real(self, member, path, pwd)

    monkeypatch.setattr(zipfile.ZipFile, "extract", extract)
    with pytest.raises(KeyboardInterrupt):
        dl.download(_config(data), target)
    assert _leftovers(target) == []


@pytest.mark.parametrize(
    ("case", "hint"),
    [
        ("401", "put your key in ~/.kaggle/kaggle.json (chmod 600; a new one from https://www.kaggle.com"),
        ("403", f"accept the rules at https://www.kaggle.com/competitions/{SLUG}/rules"),
        ("404", "Kaggle has no competition 'no-such-competition' (404): check `slug:`"),
    ],
)
def test_kaggle_refusals_say_what_to_do_and_never_show_the_key(
    stub, tiny_isic2024, tmp_path, capsys, case, hint
):
    _, data = tiny_isic2024
    stub.zips[SLUG] = _zip(data)
    cfg = _config(data, "slug=no-such-competition" if case == "404" else "")
    if case == "401":
        stub.state.fail["DownloadDataFiles"] = 401  # its message echoes the Authorization header
    elif case == "403":
        stub.rules_not_accepted.add(SLUG)
    target = tmp_path / "isic2024"

    with pytest.raises(DownloadError) as err:
        dl.download(cfg, target)

    message = str(err.value)
    assert hint in message and f"downloading {cfg.slug} failed" in message
    if case == "401":
        assert "KAGGLE_USERNAME/KAGGLE_KEY" in message
    assert KEY not in message + capsys.readouterr().out
    assert _leftovers(target) == []


def test_no_credentials_is_an_error_before_anything_is_created(tiny_isic2024, tmp_path, monkeypatch):
    isolate_kaggle_env(monkeypatch, tmp_path / "empty-env")
    _, data = tiny_isic2024
    target = tmp_path / "isic2024"
    with pytest.raises(DownloadError) as err:
        dl.download(_config(data), target)
    assert str(err.value).startswith(f"cannot download {SLUG}: no Kaggle credentials found")
    assert "kaggle.json" in str(err.value) and "KAGGLE_USERNAME and KAGGLE_KEY" in str(err.value)
    assert _leftovers(target) == []


def test_a_cancelled_cli_that_exits_0_is_a_failure(tiny_isic2024, tmp_path, monkeypatch):
    """kaggle 2.2.4 answers Ctrl-C with 'User cancelled operation' and exit 0, leaving a partial zip."""
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    fake = tmp_path / "kaggle"
    fake.write_text(
        f"#!{sys.executable}\nimport pathlib, sys\n"
        "out = pathlib.Path(sys.argv[sys.argv.index('-p') + 1])\n"
        "(out / 'isic-2024-challenge.zip').write_bytes(b'PK\\x03\\x04 partial')\n"
        "print('User cancelled operation')\n"
    )
    fake.chmod(0o755)
    monkeypatch.setattr(kaggle_cli, "kaggle_bin", lambda: str(fake))
    _, data = tiny_isic2024
    target = tmp_path / "isic2024"
    with pytest.raises(DownloadError, match="User cancelled operation"):
        dl.download(_config(data), target)
    assert _leftovers(target) == []


# --- the existing folder, dry runs, stale folders, unsafe zips --------------------------------------


def test_a_synthetic_or_incomplete_folder_is_refused_without_force(stub, tiny_isic2024, tmp_path):
    _, data = tiny_isic2024
    synthetic = tmp_path / "isic2024"
    with zipfile.ZipFile(io.BytesIO(_zip(data, skip=()))) as zf:
        zf.extractall(synthetic)
    (synthetic / "synthetic.json").write_text("{}")
    with pytest.raises(
        DownloadError, match=r"synthetic isic2024 competition written by `make data`.*FORCE=1"
    ):
        dl.download(_config(data), synthetic)

    incomplete = tmp_path / "other"
    incomplete.mkdir()
    (incomplete / "train-metadata.csv").write_text("isic_id\n")
    with pytest.raises(DownloadError, match=r"lacks .*test-metadata.csv.*FORCE=1"):
        dl.download(_config(data), incomplete)
    assert stub.requests == []
    assert (synthetic / "synthetic.json").exists() and (incomplete / "train-metadata.csv").exists()


def test_dry_run_prints_the_command_and_touches_nothing(stub, tmp_path, capsys):
    target = tmp_path / "data" / "isic2024"
    assert dl.download(load_competition("isic2024"), target, dry_run=True)["status"] == "dry run"
    out = capsys.readouterr().out
    assert f"$ kaggle competitions download -c {SLUG} -p {target}.partial-{os.getpid()}/zip" in out
    assert stub.requests == [] and not target.parent.exists()


def test_no_slug_is_an_error_naming_the_config():
    with pytest.raises(DownloadError, match=r"ham10000 is not a Kaggle competition .*ham10000.yaml"):
        dl.download(load_competition("ham10000"), "unused", dry_run=True)


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


def test_folders_of_killed_runs_are_cleaned_and_a_half_swap_rolled_back(tmp_path, capsys):
    target = tmp_path / "isic2024"
    pid = _dead_pid()
    (tmp_path / f"isic2024.partial-{pid}" / "zip").mkdir(parents=True)
    (tmp_path / f"isic2024.old-{pid}").mkdir()
    (tmp_path / f"isic2024.old-{pid}" / "train-metadata.csv").write_text("kept\n")
    (tmp_path / f"isic2024.partial-{os.getpid()}").mkdir()  # a live run's: left alone

    dl.clean_stale(target)

    assert (target / "train-metadata.csv").read_text() == "kept\n"
    assert _leftovers(target) == ["isic2024", f"isic2024.partial-{os.getpid()}"]
    assert "restored" in capsys.readouterr().out


def test_a_zip_member_outside_the_folder_is_refused(tmp_path):
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("../escaped.csv", "x\n")
    with pytest.raises(DownloadError, match=r"'../escaped.csv' would land outside the data folder"):
        dl.unzip(path, tmp_path / "out")
    assert not (tmp_path / "escaped.csv").exists()


def test_make_download_dry_run_goes_through_the_door(tmp_path):
    from tests.conftest import REPO

    target = tmp_path / "real" / "isic2024"
    res = subprocess.run(
        ["make", "-s", "download", "DRY_RUN=1", f"DATA={target}", "TIMEOUT=60"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert f"$ kaggle competitions download -c {SLUG} -p {target}.partial-" in res.stdout
    assert not target.parent.exists()
