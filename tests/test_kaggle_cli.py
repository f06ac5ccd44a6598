"""foldstack.submit.kaggle_cli runs the REAL installed kaggle CLI against a loopback Kaggle API stub."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shlex
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

from foldstack.submit import kaggle_cli as kc
from foldstack.submit import kaggle_waits as kw
from foldstack.submit.kaggle_cli import KaggleError
from tests.kaggle_stub import KEY, USERNAME, KaggleStub, isolate_kaggle_env

# The redundant alias marks a re-export: importing it registers the `kaggle_stub` fixture here.
from tests.kaggle_stub import kaggle_stub_fixture as kaggle_stub_fixture

SLUG = "isic-2024-challenge"
DATASET = f"{USERNAME}/foldstack-models"
KERNEL = f"{USERNAME}/foldstack-infer"


def _uploads_by_name(stub: KaggleStub) -> dict[str, bytes]:
    return {stub.upload_names[token]: data for token, data in stub.uploads.items()}


def _csv(tmp_path: Path) -> Path:
    path = tmp_path / "submission.csv"
    path.write_bytes(b"isic_id,target\nISIC_0000001,0.125\nISIC_0000002,0.875\n")
    return path


def _dataset_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    (folder / "fold0").mkdir(parents=True)
    meta = {"id": DATASET, "title": "foldstack models", "licenses": [{"name": "CC0-1.0"}]}
    (folder / kc.DATASET_METADATA).write_text(json.dumps(meta))
    (folder / "weights.bin").write_bytes(bytes(range(256)) * 3)
    (folder / "stack.json").write_text('{"lr": 0.05}\n')
    (folder / "fold0" / "cnn.pt").write_bytes(b"\x00fold0-weights\xff")
    return folder


def _kernel_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "kernel"
    folder.mkdir()
    (folder / "infer.py").write_text("import foldstack\nprint('predict the test set')\n")
    meta = {
        "id": KERNEL,
        "title": "foldstack infer",
        "code_file": "infer.py",
        "language": "python",
        "kernel_type": "script",
        "is_private": True,
        "enable_gpu": True,
        "enable_internet": False,
        "dataset_sources": [DATASET],
        "competition_sources": [SLUG],
    }
    (folder / kc.KERNEL_METADATA).write_text(json.dumps(meta))
    return folder


def _forbid_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError(f"a command ran: {args}")

    monkeypatch.setattr(subprocess, "run", boom)


# --- file competition -------------------------------------------------------------------------


def test_submit_file_uploads_the_exact_bytes_then_creates_the_submission(kaggle_stub, tmp_path, capsys):
    csv_path = _csv(tmp_path)
    kaggle_stub.state.public_score = "0.1729"
    kc.submit_file(SLUG, csv_path, "fold blend v3")

    out = capsys.readouterr().out
    assert f"$ kaggle competitions submit -c {SLUG} -f {shlex.quote(str(csv_path))} -m 'fold blend v3'" in out
    (start,) = kaggle_stub.calls("StartSubmissionUpload")
    assert start.json["competitionName"] == SLUG
    assert start.json["fileName"] == "submission.csv"
    assert start.json["contentLength"] == csv_path.stat().st_size
    # The CLI PUTs the file itself, not a zip of it.
    assert _uploads_by_name(kaggle_stub) == {"submission.csv": csv_path.read_bytes()}
    (create,) = kaggle_stub.calls("CreateSubmission")
    assert create.json == {
        "competitionName": SLUG,
        "blobFileTokens": next(iter(kaggle_stub.uploads)),
        "submissionDescription": "fold blend v3",
    }
    assert (
        create.headers["Authorization"] == "Basic " + base64.b64encode(f"{USERNAME}:{KEY}".encode()).decode()
    )
    assert kaggle_stub.unknown == []

    latest = kc.latest_submission(SLUG)
    assert latest is not None
    assert latest["status"] == "complete"
    assert latest["public_score"] == "0.1729"
    assert latest["description"] == "fold blend v3"
    assert latest["file_name"] == "submission.csv"
    assert latest["date"].startswith("2024-08-01")
    assert kaggle_stub.calls("ListSubmissions")[0].json["competitionName"] == SLUG
    assert kaggle_stub.unknown == []


def test_latest_submission_is_none_without_submissions(kaggle_stub):
    assert kc.latest_submission(SLUG) is None
    assert len(kaggle_stub.calls("ListSubmissions")) == 1


def test_server_failure_on_create_submission_raises(kaggle_stub, tmp_path):
    kaggle_stub.state.fail["CreateSubmission"] = 500
    with pytest.raises(KaggleError, match="CreateSubmission failed on purpose") as info:
        kc.submit_file(SLUG, _csv(tmp_path), "will fail")
    assert "exit 1" in str(info.value)
    assert len(kaggle_stub.calls("CreateSubmission")) == 1


def test_failed_upload_is_an_error_although_the_cli_exits_0(kaggle_stub, tmp_path):
    kaggle_stub.state.upload_status = 403
    with pytest.raises(KaggleError, match=r"exited 0 \('Could not submit to competition'\)"):
        kc.submit_file(SLUG, _csv(tmp_path), "upload refused")
    assert kaggle_stub.calls("CreateSubmission") == []


# --- code competition -------------------------------------------------------------------------


def _assert_dataset_files(stub: KaggleStub, folder: Path, tokens: list[str]) -> None:
    uploads = {stub.upload_names[t]: stub.uploads[t] for t in tokens}
    assert sorted(uploads) == ["fold0.zip", "stack.json", "weights.bin"]
    assert uploads["weights.bin"] == (folder / "weights.bin").read_bytes()
    assert uploads["stack.json"] == (folder / "stack.json").read_bytes()
    with zipfile.ZipFile(io.BytesIO(uploads["fold0.zip"])) as archive:  # `-r zip` zips subfolders only
        assert archive.namelist() == ["cnn.pt"]
        assert archive.read("cnn.pt") == (folder / "fold0" / "cnn.pt").read_bytes()


def test_push_dataset_creates_a_new_private_dataset(kaggle_stub, tmp_path):
    folder = _dataset_folder(tmp_path)
    assert kc.push_dataset(folder, "first models") == DATASET

    (create,) = kaggle_stub.calls("CreateDataset")
    assert create.json["ownerSlug"] == USERNAME and create.json["slug"] == "foldstack-models"
    assert create.json["title"] == "foldstack models" and create.json["licenseName"] == "CC0-1.0"
    assert create.json["isPrivate"] is True
    tokens = [f["token"] for f in create.json["files"]]
    _assert_dataset_files(kaggle_stub, folder, tokens)
    assert kaggle_stub.calls("CreateDatasetVersion") == []
    assert kaggle_stub.unknown == []


def test_push_dataset_versions_an_existing_dataset(kaggle_stub, tmp_path):
    kaggle_stub.state.datasets.add(DATASET)
    folder = _dataset_folder(tmp_path)
    assert kc.push_dataset(folder, "retrained fold 0") == DATASET

    (status,) = kaggle_stub.calls("GetDatasetStatus")
    assert status.json == {"ownerSlug": USERNAME, "datasetSlug": "foldstack-models"}
    (version,) = kaggle_stub.calls("CreateDatasetVersion")
    assert version.json["ownerSlug"] == USERNAME and version.json["datasetSlug"] == "foldstack-models"
    assert version.json["body"]["versionNotes"] == "retrained fold 0"
    _assert_dataset_files(kaggle_stub, folder, [f["token"] for f in version.json["body"]["files"]])
    assert kaggle_stub.calls("CreateDataset") == []
    assert kaggle_stub.unknown == []


def test_push_dataset_does_not_create_when_the_status_check_fails(kaggle_stub, tmp_path):
    kaggle_stub.state.fail["GetDatasetStatus"] = 500
    with pytest.raises(KaggleError, match="GetDatasetStatus failed on purpose"):
        kc.push_dataset(_dataset_folder(tmp_path), "server down")
    assert kaggle_stub.calls("CreateDataset") == [] and kaggle_stub.uploads == {}


def test_push_kernel_sends_script_sources_and_flags_and_returns_the_version(kaggle_stub, tmp_path):
    folder = _kernel_folder(tmp_path)
    assert kc.push_kernel(folder) == 7
    assert kc.push_kernel(folder) == 8

    body = kaggle_stub.calls("SaveKernel")[0].json
    assert body["slug"] == KERNEL
    assert body["text"] == (folder / "infer.py").read_text()
    assert body["language"] == "python" and body["kernelType"] == "script"
    assert body["datasetDataSources"] == [DATASET]
    assert body["competitionDataSources"] == [SLUG]
    assert body["enableGpu"] is True and body["enableInternet"] is False and body["isPrivate"] is True
    assert kaggle_stub.unknown == []


def test_kernel_push_error_is_an_error_although_the_cli_exits_0(kaggle_stub, tmp_path):
    kaggle_stub.state.kernel_error = "Notebook not found"
    with pytest.raises(KaggleError, match="Kernel push error: Notebook not found"):
        kc.push_kernel(_kernel_folder(tmp_path))


def test_submit_code_names_kernel_version_file_and_message(kaggle_stub, capsys):
    kc.submit_code(SLUG, KERNEL, 7, "submission.csv", "code run v7")

    expected = f"$ kaggle competitions submit -c {SLUG} -k {KERNEL} -v 7 -f submission.csv -m 'code run v7'"
    assert expected in capsys.readouterr().out
    (create,) = kaggle_stub.calls("CreateCodeSubmission")
    assert create.json == {
        "competitionName": SLUG,
        "kernelOwner": USERNAME,
        "kernelSlug": "foldstack-infer",
        "kernelVersion": 7,
        "fileName": "submission.csv",
        "submissionDescription": "code run v7",
    }
    assert kaggle_stub.calls("StartSubmissionUpload") == [] and kaggle_stub.uploads == {}
    assert kaggle_stub.unknown == []


# --- waiting for Kaggle -----------------------------------------------------------------------

POLL = 0.05


def _methods(stub: KaggleStub) -> list[str]:
    return [r.rsplit("/", 1)[-1] for r in stub.rpcs() if "/" in r]


@pytest.mark.slow
def test_wait_dataset_ready_polls_the_new_version_until_ready(kaggle_stub, tmp_path, capsys):
    kaggle_stub.state.dataset_statuses = ["BLOBS_RECEIVED", "BLOBS_RECEIVED", "BLOBS_DECOMPRESSED", "READY"]
    kc.push_dataset(_dataset_folder(tmp_path), "first models")
    kw.wait_dataset_ready(DATASET, timeout_s=60, poll_s=POLL)

    methods = _methods(kaggle_stub)
    assert methods[methods.index("CreateDataset") + 1 :] == ["GetDatasetStatus"] * 4
    out = capsys.readouterr().out.splitlines()
    assert out.count(f"$ kaggle datasets status {DATASET}") == 2  # the existence check, then the wait once
    waiting = [line for line in out if line.startswith("waiting for")]
    assert [line.split(" (")[0] for line in waiting] == [  # a line per change of status, not per poll
        f"waiting for dataset {DATASET}: blobs_received",
        f"waiting for dataset {DATASET}: blobs_decompressed",
    ]
    assert re.fullmatch(r"waiting for .*: blobs_received \(\d+ s of 60 s\)", waiting[0])
    assert re.fullmatch(rf"dataset {DATASET}: ready after \d+ s", out[-1])


@pytest.mark.slow
def test_a_dataset_stuck_in_processing_times_out_naming_it(kaggle_stub, tmp_path, capsys):
    kaggle_stub.state.datasets.add(DATASET)
    kaggle_stub.state.dataset_statuses = ["BLOBS_RECEIVED"]
    kc.push_dataset(_dataset_folder(tmp_path), "stuck")
    with pytest.raises(KaggleError, match=rf"dataset {DATASET} is not ready after \d+ s .*'blobs_received'"):
        kw.wait_dataset_ready(DATASET, timeout_s=1.0, poll_s=0.2)
    assert len(kaggle_stub.calls("GetDatasetStatus")) >= 2  # the existence check, then polls
    assert capsys.readouterr().out.count("waiting for dataset") == 1


@pytest.mark.slow
def test_a_failed_dataset_version_is_an_error_with_the_cli_output(kaggle_stub, tmp_path):
    kaggle_stub.state.dataset_statuses = ["BLOBS_RECEIVED", "FAILED"]
    kc.push_dataset(_dataset_folder(tmp_path), "broken")
    with pytest.raises(KaggleError, match=rf"dataset {DATASET} is failed after \d+ s;.*printed:\nfailed"):
        kw.wait_dataset_ready(DATASET, timeout_s=60, poll_s=POLL)


@pytest.mark.slow
def test_wait_kernel_polls_until_the_run_is_complete(kaggle_stub, capsys):
    kaggle_stub.state.kernel_statuses = ["QUEUED", "RUNNING", "RUNNING", "COMPLETE"]
    kw.wait_kernel(KERNEL, timeout_s=60, poll_s=POLL)

    assert _methods(kaggle_stub) == ["GetKernelSessionStatus"] * 4
    assert kaggle_stub.calls("GetKernelSessionStatus")[0].json == {
        "userName": USERNAME,
        "kernelSlug": "foldstack-infer",
    }
    out = capsys.readouterr().out
    assert out.count("$ kaggle kernels status") == 1
    assert out.count(f"waiting for kernel {KERNEL}: queued (") == 1
    assert out.count(f"waiting for kernel {KERNEL}: running (") == 1
    assert f"kernel {KERNEL}: complete after" in out


def _json_log(lines: list[str]) -> str:
    """A log as Kaggle stores it: a JSON array, one {stream_name, time, data} record a line."""
    records = [
        json.dumps({"stream_name": "stdout", "time": i * 0.5, "data": f"{x}\n"}) for i, x in enumerate(lines)
    ]
    return "[" + "\n,".join(records) + "]\n"


def test_a_kernel_that_fails_raises_its_failure_message_and_log_tail(kaggle_stub):
    kaggle_stub.state.kernel_statuses = ["RUNNING", "ERROR"]
    kaggle_stub.state.kernel_failure = "Your notebook hit an unhandled error"
    lines = [f"epoch {i}" for i in range(100)] + ["Traceback (most recent call last):", f"ValueError: {KEY}"]
    kaggle_stub.state.kernel_log = _json_log(lines)
    with pytest.raises(KaggleError) as info:
        kw.wait_kernel(KERNEL, timeout_s=60, poll_s=POLL)

    message = str(info.value)
    assert f"kernel {KERNEL} ended error after" in message
    assert "Your notebook hit an unhandled error" in message
    tail = message.split("lines of its log:\n", 1)[1].splitlines()
    assert tail == [*lines[-kc.LOG_LINES : -1], "ValueError: ***"]  # plain text, the last 40, redacted
    assert KEY not in message
    assert _methods(kaggle_stub) == [
        "GetKernelSessionStatus",
        "GetKernelSessionStatus",
        "ListKernelSessionOutput",
    ]
    assert kaggle_stub.calls("ListKernelSessionOutput")[0].json["kernelSlug"] == "foldstack-infer"


def test_a_cancelled_kernel_without_log_says_so(kaggle_stub):
    kaggle_stub.state.kernel_statuses = ["CANCEL_ACKNOWLEDGED"]
    with pytest.raises(
        KaggleError, match=r"ended cancel_acknowledged .*no failure message.*\n.*\n\(the run left no log\)"
    ):
        kw.wait_kernel(KERNEL, timeout_s=60, poll_s=POLL)


def test_a_kernel_still_running_at_the_timeout_is_an_error(kaggle_stub):
    kaggle_stub.state.kernel_statuses = ["RUNNING"]
    with pytest.raises(KaggleError, match=rf"kernel {KERNEL} did not finish within 0.5 s .*'running'"):
        kw.wait_kernel(KERNEL, timeout_s=0.5, poll_s=0.2)
    assert kaggle_stub.calls("ListKernelSessionOutput") == []


def test_a_status_poll_that_keeps_failing_ends_the_wait(kaggle_stub, capsys):
    kaggle_stub.state.fail["GetKernelSessionStatus"] = 503
    with pytest.raises(KaggleError, match="GetKernelSessionStatus failed on purpose"):
        kw.wait_kernel(KERNEL, timeout_s=60, poll_s=POLL)
    assert len(kaggle_stub.calls("GetKernelSessionStatus")) == kc.POLL_ERRORS  # retried, then given up
    assert capsys.readouterr().out.count("could not read the status of kernel") == kc.POLL_ERRORS - 1


@pytest.mark.slow
def test_wait_score_returns_the_scored_row_and_a_pending_one_at_the_timeout(kaggle_stub, capsys):
    kaggle_stub.state.submission_statuses = ["PENDING", "PENDING", "COMPLETE"]
    kaggle_stub.state.public_score = "0.1650"
    kc.submit_code(SLUG, KERNEL, 7, "submission.csv", "scored later")
    row = kw.wait_score(SLUG, timeout_s=60, poll_s=POLL)
    assert row is not None and row["status"] == "complete" and row["public_score"] == "0.1650"
    assert _methods(kaggle_stub)[-3:] == ["ListSubmissions"] * 3
    assert "public score 0.1650" in capsys.readouterr().out

    kaggle_stub.state.submission_statuses = ["PENDING"]
    kc.submit_code(SLUG, KERNEL, 8, "submission.csv", "scored much later")
    row = kw.wait_score(SLUG, timeout_s=0.3, poll_s=0.1)  # no error: Kaggle may score for hours
    assert row is not None and row["status"] == "pending" and row["public_score"] == ""
    assert re.search(
        rf"not scored after \d+ s: `kaggle competitions submissions -c {SLUG}`", capsys.readouterr().out
    )


def test_log_text_reads_json_records_and_plain_text():
    records = [
        {"stream_name": "stderr", "time": 1.0, "data": "a\n"},
        {"stream_name": "stdout", "data": "b\n"},
    ]
    assert kw._log_text(json.dumps(records)) == "a\nb\n"  # one JSON array
    assert kw._log_text("[" + "\n,".join(map(json.dumps, records))) == "a\nb\n"  # cut off: no closing ]
    assert kw._log_text("plain\nlog [1]\n") == "plain\nlog [1]\n"


# --- dry run ----------------------------------------------------------------------------------


def test_dry_run_prints_every_command_and_runs_nothing(kaggle_stub, tmp_path, capsys, monkeypatch):
    _forbid_subprocess(monkeypatch)
    csv_path, data, kernel = _csv(tmp_path), _dataset_folder(tmp_path), _kernel_folder(tmp_path)

    kc.submit_file(SLUG, csv_path, "dry", dry_run=True)
    assert kc.push_dataset(data, "dry data", dry_run=True) == DATASET
    assert kc.push_kernel(kernel, dry_run=True) is None
    kw.wait_dataset_ready(DATASET, timeout_s=60, poll_s=POLL, dry_run=True)
    kw.wait_kernel(KERNEL, timeout_s=60, poll_s=POLL, dry_run=True)
    kc.submit_code(SLUG, KERNEL, 3, "submission.csv", "dry code", dry_run=True)
    assert kw.wait_score(SLUG, timeout_s=60, poll_s=POLL, dry_run=True) is None

    assert capsys.readouterr().out.splitlines() == [
        f"$ kaggle competitions submit -c {SLUG} -f {shlex.quote(str(csv_path))} -m dry",
        f"$ kaggle datasets version -p {shlex.quote(str(data))} -m 'dry data' -r zip",
        f"$ kaggle kernels push -p {shlex.quote(str(kernel))}",
        f"$ kaggle datasets status {DATASET}",
        f"$ kaggle kernels status {KERNEL}",
        f"$ kaggle competitions submit -c {SLUG} -k {KERNEL} -v 3 -f submission.csv -m 'dry code'",
        f"$ kaggle competitions submissions -c {SLUG} --csv",
    ]
    assert kaggle_stub.requests == []


# --- credentials ------------------------------------------------------------------------------


def test_missing_credentials_say_where_to_put_kaggle_json(tmp_path, monkeypatch, capsys):
    config = isolate_kaggle_env(monkeypatch, tmp_path)
    assert kc.credentials_status()["ok"] is False
    with pytest.raises(KaggleError) as info:
        kc.check_credentials()
    message = str(info.value)
    assert str(config / "kaggle.json") in message
    assert f"chmod 600 {config / 'kaggle.json'}" in message
    assert "KAGGLE_USERNAME" in message and "KAGGLE_KEY" in message

    _forbid_subprocess(monkeypatch)  # a real run stops at the check, before starting the CLI
    with pytest.raises(KaggleError, match=re.escape(str(config / "kaggle.json"))):
        kc.submit_file(SLUG, _csv(tmp_path), "no creds")


def test_missing_credentials_in_an_explicit_env(tmp_path):
    env = {"HOME": str(tmp_path), "KAGGLE_CONFIG_DIR": str(tmp_path / "cfg")}
    with pytest.raises(KaggleError, match=re.escape(str(tmp_path / "cfg" / "kaggle.json"))):
        kc.check_credentials(env)
    env.update(KAGGLE_USERNAME="someone", KAGGLE_KEY="k" * 32)
    assert kc.check_credentials(env) == "someone"


def test_group_readable_kaggle_json_warns_and_a_private_one_does_not(tmp_path, monkeypatch):
    config = isolate_kaggle_env(monkeypatch, tmp_path)
    path = config / "kaggle.json"
    path.write_text(json.dumps({"username": USERNAME, "key": KEY}))
    path.chmod(0o644)
    with pytest.warns(UserWarning, match=re.escape(f"chmod 600 {path}")):
        assert kc.check_credentials() == USERNAME
    assert kc.credentials_status()["source"] == str(path)

    path.chmod(0o600)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kc.check_credentials() == USERNAME


def test_the_key_never_appears_in_output_or_errors(kaggle_stub, tmp_path, monkeypatch, capsys):
    # Credentials from a 0644 kaggle.json, the CLI in verbose mode (it then prints its request headers,
    # Basic auth included) and a failing server, so the CLI output is surfaced in the error.
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    config = Path(os.environ["KAGGLE_CONFIG_DIR"])
    (config / "kaggle.json").write_text(json.dumps({"username": USERNAME, "key": KEY}))
    (config / "kaggle.json").chmod(0o644)
    monkeypatch.setenv("VERBOSE", "1")
    kaggle_stub.state.fail["CreateSubmission"] = 500
    basic = base64.b64encode(f"{USERNAME}:{KEY}".encode()).decode()

    with pytest.warns(UserWarning, match="chmod 600"), pytest.raises(KaggleError) as info:
        kc.submit_file(SLUG, _csv(tmp_path), "leak check")
    captured = capsys.readouterr()
    # The CLI really authenticated with the tmp kaggle.json, and really printed the header we redacted.
    assert kaggle_stub.calls("CreateSubmission")[0].headers["Authorization"] == f"Basic {basic}"
    assert "(Authorization: Basic ***)" in str(info.value)  # the stub's error echoes the header
    for text in (captured.out, captured.err, str(info.value)):
        assert KEY not in text and basic not in text


def test_redact_replaces_key_and_basic_auth_value():
    env = {"KAGGLE_USERNAME": "u", "KAGGLE_KEY": "0123456789abcdef", "HOME": "/nonexistent"}
    basic = base64.b64encode(b"u:0123456789abcdef").decode()
    text = f"key=0123456789abcdef header=Basic {basic}"
    assert kc.redact(text, env) == "key=*** header=Basic ***"


def test_an_access_token_counts_as_credentials_and_is_redacted(tmp_path):
    token = "KGAT_" + "7e" * 20
    env = {"HOME": str(tmp_path), "KAGGLE_CONFIG_DIR": str(tmp_path / "cfg"), "KAGGLE_API_TOKEN": token}
    status = kc.credentials_status(env)
    assert status["ok"] is True and status["method"] == "access_token"
    assert token not in json.dumps(status)
    assert kc.redact(f"Bearer {token}", env) == "Bearer ***"
    (tmp_path / "token.txt").write_text(token + "\n")
    env["KAGGLE_API_TOKEN"] = str(tmp_path / "token.txt")  # the CLI also accepts a file name
    assert kc.redact(f"Bearer {token}", env) == "Bearer ***"


# --- locating the CLI -------------------------------------------------------------------------


def test_kaggle_bin_prefers_the_one_beside_python_and_fails_clearly(tmp_path, monkeypatch):
    assert kc.kaggle_bin() == str(Path(sys.executable).parent / "kaggle")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KaggleError, match="kaggle CLI is not installed"):
        kc.kaggle_bin()
