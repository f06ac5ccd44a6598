"""A loopback stub of the Kaggle API, good enough for the real `kaggle` CLI (2.x, kagglesdk).

With KAGGLE_API_ENVIRONMENT=LOCALHOST the CLI POSTs JSON to http://localhost/api/v1/<service>/<Method>
(port 80) and PUTs file bytes to the `createUrl` that the Start*Upload methods return. The stub listens on
127.0.0.1:80 when it can bind it; otherwise on a free port, and the CLI is pointed at it as an HTTP proxy
(HTTP_PROXY), so its requests still name http://localhost. (KAGGLE_API_ENVIRONMENT=TEST is no fallback:
kaggle 2.2.4 only honours LOCALHOST and sends everything else to https://api.kaggle.com.)

Every request is recorded; a method the stub does not know gets a 404 and lands in `stub.unknown`.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

import pytest

USERNAME = "stub-user"
# Distinctive, so a test can assert it never shows up in printed output or error messages.
KEY = "SECRETKEY-5f3c9a0e7b1d4c2a"
API_PREFIX = "/api/v1/"
UPLOAD_PREFIX = "/upload/"


@dataclass
class Recorded:
    """One request as the stub saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any = None
    status: int = 0
    unknown: bool = False  # no route in the stub: a request the flows were not expected to make

    @property
    def rpc(self) -> str:
        """`Service/Method` for API calls, else ''."""
        return self.path[len(API_PREFIX) :] if self.path.startswith(API_PREFIX) else ""


@dataclass
class StubState:
    """What the stub answers; tests may change it before running the CLI."""

    public_score: str = "0.8765"
    private_score: str = ""
    datasets: set[str] = field(default_factory=set)  # OWNER/SLUG refs that "exist"
    fail: dict[str, int] = field(default_factory=dict)  # Method name -> HTTP status to answer with
    upload_status: int = 200  # status of the PUT of file bytes
    kernel_error: str = ""  # SaveKernel answers {"error": ...} with HTTP 200 when set
    first_kernel_version: int = 7
    submissions: list[dict[str, Any]] = field(default_factory=list)
    # Statuses answered in turn (the last one repeated): DatabundleVersionStatus names for GetDatasetStatus
    # after a dataset version is created (READY before), KernelWorkerStatus names for GetKernelSessionStatus
    # after each SaveKernel, SubmissionStatus names of the newest submission for each ListSubmissions.
    dataset_statuses: list[str] = field(default_factory=lambda: ["READY"])
    kernel_statuses: list[str] = field(default_factory=lambda: ["COMPLETE"])
    kernel_failure: str = ""  # failureMessage of a kernel run that ends ERROR or cancelled
    kernel_log: str = ""  # the `log` of ListKernelSessionOutput (none when empty)
    submission_statuses: list[str] = field(default_factory=lambda: ["COMPLETE"])


class KaggleStub:
    """Threaded HTTP server that answers the Kaggle API methods the foldstack flows use."""

    def __init__(self, port: int = 80) -> None:
        self.state = StubState()
        self.requests: list[Recorded] = []
        self.uploads: dict[str, bytes] = {}  # upload token -> bytes received by PUT
        self.upload_names: dict[str, str] = {}  # upload token -> file name announced by Start*Upload
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._kernel_versions: dict[str, int] = {}
        self._polls: dict[str, int] = {}  # status polls answered since the dataset/kernel/submission changed
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.via_proxy = self.port != 80
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @classmethod
    def start(cls) -> Self:
        """Port 80 if it can be bound (root, CI), else a free port reached through HTTP_PROXY."""
        try:
            stub = cls(80)
        except OSError:
            stub = cls(0)
        stub._thread.start()
        return stub

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    @property
    def public_base(self) -> str:
        """The base URL the CLI uses for this stub (createUrl values point here too)."""
        return "http://localhost"

    def client_env(self, root: Path) -> dict[str, str]:
        """Environment for a CLI subprocess: stub endpoint, fake credentials, isolated HOME/config/tmp."""
        home, config, tmp = root / "home", root / "kaggle-config", root / "tmp"
        for d in (home, config, tmp):
            d.mkdir(parents=True, exist_ok=True)
        env = {
            "KAGGLE_API_ENVIRONMENT": "LOCALHOST",
            "KAGGLE_USERNAME": USERNAME,
            "KAGGLE_KEY": KEY,
            "KAGGLE_CONFIG_DIR": str(config),
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "TMPDIR": str(tmp),  # the CLI keeps resumable-upload state under $TMPDIR/.kaggle/uploads
        }
        if self.via_proxy:
            proxy = f"http://127.0.0.1:{self.port}"
            env.update(HTTP_PROXY=proxy, http_proxy=proxy)
        else:
            env.update(NO_PROXY="localhost,127.0.0.1", no_proxy="localhost,127.0.0.1")
        return env

    # --- inspection helpers -------------------------------------------------------------------
    def calls(self, method: str) -> list[Recorded]:
        """API calls to `Method` (e.g. 'CreateSubmission'), oldest first."""
        return [r for r in self.requests if r.rpc.rsplit("/", 1)[-1] == method]

    def rpcs(self) -> list[str]:
        return [r.rpc or f"{r.method} {r.path}" for r in self.requests]

    @property
    def unknown(self) -> list[Recorded]:
        return [r for r in self.requests if r.unknown]

    # --- request handling ---------------------------------------------------------------------
    def _next(self, what: str, statuses: list[str]) -> str:
        """The status to answer for poll number n of `what` (counted from its last change)."""
        with self._lock:
            n = self._polls.get(what, 0)
            self._polls[what] = n + 1
        return statuses[min(n, len(statuses) - 1)]

    def _changed(self, what: str) -> None:
        with self._lock:
            self._polls[what] = 0

    def handle(self, rec: Recorded) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(rec)
        if rec.method == "PUT" and rec.path.startswith(UPLOAD_PREFIX):
            token = rec.path[len(UPLOAD_PREFIX) :]
            if token not in self.upload_names:
                rec.unknown = True
                return 404, {"code": 404, "message": "unknown upload"}
            if rec.headers.get("Content-Range", "").startswith("bytes */"):
                # Resume probe (GCS protocol): the CLI re-uses upload tokens it saved under $TMPDIR.
                return (200 if token in self.uploads else 308), {}
            if self.state.upload_status in (200, 201):
                with self._lock:
                    self.uploads[token] = rec.body
            return self.state.upload_status, {}
        if rec.method != "POST" or not rec.rpc:
            rec.unknown = True
            return 404, {"code": 404, "message": f"stub: no route for {rec.method} {rec.path}"}
        name = rec.rpc.rsplit("/", 1)[-1]
        if name in self.state.fail:
            code = self.state.fail[name]
            # Echoes the credentials, as a careless server or proxy might: redaction must catch them.
            auth = rec.headers.get("Authorization", "")
            return code, {"code": code, "message": f"stub: {name} failed on purpose (Authorization: {auth})"}
        answer = getattr(self, f"_rpc_{name}", None)
        if answer is None:
            rec.unknown = True
            return 404, {"code": 404, "message": f"stub: unknown method {rec.rpc}"}
        return answer(rec.json or {})

    def _new_upload(self, file_name: str, kind: str) -> tuple[int, Any]:
        token = f"{kind}-token-{next(self._ids)}"
        self.upload_names[token] = file_name
        return 200, {"token": token, "createUrl": f"{self.public_base}{UPLOAD_PREFIX}{token}"}

    def _rpc_StartSubmissionUpload(self, body: dict) -> tuple[int, Any]:
        return self._new_upload(body.get("fileName", ""), "submission")

    def _rpc_StartBlobUpload(self, body: dict) -> tuple[int, Any]:
        return self._new_upload(body.get("name", ""), "blob")

    def _new_submission(self, file_name: str, description: str) -> tuple[int, Any]:
        ref = 1000 + next(self._ids)
        self._changed("submission")
        self.state.submissions.insert(
            0,
            {
                "ref": ref,
                "fileName": file_name,
                "date": "2024-08-01T12:34:56.000Z",
                "description": description,
                "status": "COMPLETE",
                "publicScore": self.state.public_score,
                "privateScore": self.state.private_score,
            },
        )
        return 200, {"message": "Successfully submitted", "ref": ref}

    def _rpc_CreateSubmission(self, body: dict) -> tuple[int, Any]:
        token = body.get("blobFileTokens", "")
        if token not in self.uploads:
            return 400, {"code": 400, "message": "stub: no uploaded file for this token"}
        return self._new_submission(self.upload_names[token], body.get("submissionDescription", ""))

    def _rpc_CreateCodeSubmission(self, body: dict) -> tuple[int, Any]:
        return self._new_submission(body.get("fileName", ""), body.get("submissionDescription", ""))

    def _rpc_GetSubmissionLimits(self, body: dict) -> tuple[int, Any]:
        return 200, {"numToday": 1, "numTotal": 1, "numAllowedNow": 4}

    def _rpc_ListSubmissions(self, body: dict) -> tuple[int, Any]:
        if self.state.submissions:
            newest = self.state.submissions[0]
            newest["status"] = status = self._next("submission", self.state.submission_statuses)
            newest["publicScore"] = self.state.public_score if status == "COMPLETE" else ""
            newest["privateScore"] = self.state.private_score if status == "COMPLETE" else ""
        return 200, {"submissions": self.state.submissions}

    def _rpc_GetDatasetStatus(self, body: dict) -> tuple[int, Any]:
        ref = f"{body.get('ownerSlug')}/{body.get('datasetSlug')}"
        if ref not in self.state.datasets:
            return 404, {"code": 404, "message": "Not found"}
        if f"dataset {ref}" not in self._polls:  # no version made here: the existing one is ready
            return 200, {"status": "READY"}
        return 200, {"status": self._next(f"dataset {ref}", self.state.dataset_statuses)}

    def _dataset_answer(self, ref: str) -> tuple[int, Any]:
        self._changed(f"dataset {ref}")
        return 200, {"ref": ref, "url": f"{self.public_base}/datasets/{ref}", "status": "Ok"}

    def _rpc_CreateDatasetVersion(self, body: dict) -> tuple[int, Any]:
        ref = f"{body.get('ownerSlug')}/{body.get('datasetSlug')}"
        if ref not in self.state.datasets:
            return 404, {"code": 404, "message": "Not found"}
        return self._dataset_answer(ref)

    def _rpc_CreateDataset(self, body: dict) -> tuple[int, Any]:
        ref = f"{body.get('ownerSlug')}/{body.get('slug')}"
        self.state.datasets.add(ref)
        return self._dataset_answer(ref)

    def _rpc_SaveKernel(self, body: dict) -> tuple[int, Any]:
        if self.state.kernel_error:
            return 200, {"error": self.state.kernel_error}
        slug = body.get("slug", "")
        version = self._kernel_versions.get(slug, self.state.first_kernel_version - 1) + 1
        self._kernel_versions[slug] = version
        self._changed("kernel")
        return 200, {
            "ref": f"/code/{slug}",
            "url": f"{self.public_base}/code/{slug}",
            "versionNumber": version,
        }

    def _rpc_GetKernelSessionStatus(self, body: dict) -> tuple[int, Any]:
        status = self._next("kernel", self.state.kernel_statuses)
        answer = {"status": status}
        if status in ("ERROR", "CANCEL_REQUESTED", "CANCEL_ACKNOWLEDGED") and self.state.kernel_failure:
            answer["failureMessage"] = self.state.kernel_failure
        return 200, answer

    def _rpc_ListKernelSessionOutput(self, body: dict) -> tuple[int, Any]:
        return 200, {"files": [], **({"log": self.state.kernel_log} if self.state.kernel_log else {})}

    def _rpc_IntrospectToken(self, body: dict) -> tuple[int, Any]:
        return 200, {"active": body.get("token") == KEY, "username": USERNAME}


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                handler.rfile.readline()
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def _make_handler(stub: KaggleStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            body = _read_body(self)
            rec = Recorded(self.command, urlsplit(self.path).path, dict(self.headers.items()), body)
            if "json" in self.headers.get("Content-Type", ""):
                try:
                    rec.json = json.loads(body or b"{}")
                except ValueError:
                    rec.json = None
            status, payload = stub.handle(rec)
            rec.status = status
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
            pass

    return Handler


_CLEARED = ("KAGGLE_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "VERBOSE")


def isolate_kaggle_env(monkeypatch: pytest.MonkeyPatch, root: Path) -> Path:
    """Drop every KAGGLE_*/proxy/VERBOSE variable and point HOME and KAGGLE_CONFIG_DIR at empty folders.

    Returns the config dir (where kaggle.json would go). Nothing under the real home is read or written.
    """
    for name in list(os.environ):
        if name.upper().startswith(_CLEARED):
            monkeypatch.delenv(name)
    home, config = root / "home", root / "kaggle-config"
    home.mkdir(parents=True, exist_ok=True)
    config.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config))
    return config


S = TypeVar("S", bound=KaggleStub)


def running_stub(cls: type[S], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S]:
    """A started `cls` (KaggleStub or a subclass); os.environ (inherited by CLI subprocesses) points the CLI
    at it with fake creds until the test ends, then it stops."""
    root = tmp_path / "kaggle-env"
    isolate_kaggle_env(monkeypatch, root)
    stub = cls.start()
    try:
        for name, value in stub.client_env(root).items():
            monkeypatch.setenv(name, value)
        yield stub
    finally:
        stub.stop()


@pytest.fixture(name="kaggle_stub")
def kaggle_stub_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KaggleStub]:
    """A running stub the kaggle CLI talks to."""
    yield from running_stub(KaggleStub, tmp_path, monkeypatch)
