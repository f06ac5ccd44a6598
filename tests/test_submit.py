"""Submission files, their refusals, the ledger, predict from artifacts, the bundle and the leaderboard."""

import json
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest

from foldstack.artifacts import folder_sha256
from foldstack.config import load_competition
from foldstack.data.metadata import read_metadata
from foldstack.errors import DataError
from foldstack.folds import make_folds
from foldstack.leaderboard import leaderboard
from foldstack.runs import Runs, StackRun
from foldstack.stage1.config import load_oof_config
from foldstack.stage1.run import run_oof
from foldstack.submit import kaggle_cli
from foldstack.submit.bundle import build_bundle
from foldstack.submit.files import write_submission
from foldstack.submit.kernel import build_kernel
from foldstack.submit.ledger import LEDGER_COLUMNS, ledger_path, read_ledger, record
from foldstack.submit.predict import stack_test_predictions, submission_frame
from tests.conftest import TINY


def test_submission_has_the_sample_order_and_header(trained, tmp_path):
    cfg, data, _, stack = trained
    path, row = write_submission(cfg, data, stack / "test.parquet", out_dir=tmp_path)
    sub = pd.read_csv(path)
    sample = pd.read_csv(data / "sample_submission.csv")
    assert list(sub.columns) == list(sample.columns)
    assert sub["isic_id"].tolist() == sample["isic_id"].tolist()
    test = pd.read_parquet(stack / "test.parquet").set_index("id")
    np.testing.assert_allclose(sub["target"], test.loc[sub["isic_id"], "pred"])
    assert path.name.endswith("_lgb_xgb_cb.csv") and row["oof_pauc"] > 0 and len(row["sha256"]) == 64


def _broken(stack, tmp_path, edit):
    """A copy of the stack's test.parquet + metrics.json with `edit` applied to the frame or the metrics."""
    d = tmp_path / "run"
    d.mkdir()
    shutil.copy(stack / "metrics.json", d / "metrics.json")
    test = pd.read_parquet(stack / "test.parquet")
    metrics = json.loads((d / "metrics.json").read_text())
    metrics.pop("set_members")  # a hand-made run: no manifest to hold it to, so the content checks speak
    test = edit(test, metrics)
    (d / "metrics.json").write_text(json.dumps(metrics))
    test.to_parquet(d / "test.parquet", index=False)
    return d / "test.parquet"


def _set_pred(df, i, value):
    df.loc[i, "pred"] = value
    folds = [c for c in df.columns if c.startswith("pred_fold")]
    df.loc[i, folds] = value
    return df


CASES = {
    "missing id": (lambda t, m: t.iloc[1:], r"missing ISIC_"),
    "extra id": (lambda t, m: pd.concat([t, t.iloc[[0]].assign(id="ISIC_9999999")]), r"extra ISIC_9999999"),
    "duplicate id": (lambda t, m: pd.concat([t, t.iloc[[0]]]), r"duplicate ids: ISIC_"),
    "NaN": (lambda t, m: _set_pred(t, 2, np.nan), r"NaN or infinite predictions for ids ISIC_"),
    "infinite": (lambda t, m: _set_pred(t, 2, np.inf), r"NaN or infinite"),
    "above 1": (lambda t, m: _set_pred(t, 3, 1.5), r"outside \[0, 1\]: ISIC_\d+=1.5"),
    "folds do not average": (lambda t, m: t.assign(pred=t["pred"] * 0.5), r"not the mean of pred_fold0"),
    "other folds": (lambda t, m: m.update(folds_sha256="f" * 64) or t, r"made on folds ffffffffffff"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_predictions_are_refused_naming_what_is_wrong(case, trained, tmp_path):
    cfg, data, _, stack = trained
    edit, message = CASES[case]
    source = _broken(stack, tmp_path, edit)
    with pytest.raises(DataError, match=message):
        write_submission(cfg, data, source, out_dir=tmp_path / "subs")
    assert not (tmp_path / "subs").exists()  # nothing written


def test_a_test_parquet_changed_after_its_run_is_refused_naming_it(trained, tmp_path):
    cfg, data, _, stack = trained
    d = tmp_path / "run"
    shutil.copytree(stack, d)
    test = pd.read_parquet(d / "test.parquet")
    test.loc[0, "pred"] = 0.5
    test.to_parquet(d / "test.parquet", index=False)
    with pytest.raises(DataError, match=r"test\.parquet does not match .*metrics\.json"):
        write_submission(cfg, data, d / "test.parquet", out_dir=tmp_path / "subs")


def test_an_interrupted_submission_is_taken_over_by_the_rerun(trained, tmp_path):
    cfg, data, _, stack = trained
    ledger = ledger_path(cfg, tmp_path)
    path, row = write_submission(cfg, data, stack / "test.parquet", out_dir=tmp_path, ledger=ledger)
    record(ledger, row | {"kaggle_status": "writing"})  # as a kill between the two ledger writes leaves it
    path.unlink()
    again, row2 = write_submission(cfg, data, stack / "test.parquet", out_dir=tmp_path, ledger=ledger)
    assert again == path and path.exists() and row2["sha256"] == row["sha256"]
    rows = read_ledger(ledger)
    assert len(rows) == 1 and rows.loc[0, "kaggle_status"] == "written"
    record(ledger, row2 | {"kaggle_status": "dry-run"})  # a finished submission is not taken over
    third, _ = write_submission(cfg, data, stack / "test.parquet", out_dir=tmp_path, ledger=ledger)
    assert len(read_ledger(ledger)) == 2 and third.read_bytes() == path.read_bytes()


def test_ledger_adds_and_updates_rows(trained, tmp_path):
    cfg, data, _, stack = trained
    path, row = write_submission(cfg, data, stack / "test.parquet", out_dir=tmp_path)
    ledger = ledger_path(cfg, tmp_path)
    record(ledger, row)
    record(ledger, row | {"kaggle_status": "failed", "note": "network unreachable"})
    table = read_ledger(ledger)
    assert len(table) == 1 and table.loc[0, "kaggle_status"] == "failed"
    assert table.loc[0, "note"] == "network unreachable" and path.exists()


def test_predict_from_artifacts_reproduces_the_stack(trained):
    _cfg, data, _runs, stack = trained
    preds = stack_test_predictions(StackRun(stack), data, progress=False)
    test = pd.read_parquet(stack / "test.parquet")
    assert preds["id"].tolist() == test["id"].tolist()
    np.testing.assert_allclose(preds["pred"], test["pred"], atol=1e-12)
    assert preds["pred"].between(0, 1).all()


def test_predict_on_the_real_fixtures_gives_a_valid_3_row_file(trained, fixture_dir):
    cfg, _, _runs, stack = trained
    preds = stack_test_predictions(StackRun(stack), fixture_dir, progress=False)
    sub = submission_frame(cfg, fixture_dir, preds)
    sample = pd.read_csv(fixture_dir / "sample_submission.csv")
    assert sub["isic_id"].tolist() == sample["isic_id"].tolist() and len(sub) == 3
    assert sub["target"].between(0, 1).all()


def test_bundle_and_kernel_hold_what_the_kernel_needs(trained, tmp_path):
    cfg, _, _, stack = trained
    bundle = build_bundle(cfg, StackRun(stack), "someone", tmp_path / "bundle")
    assert (bundle / "runs/isic2024/oof/tiny/fold0.safetensors").exists()
    assert (bundle / "runs/isic2024/stack/lgb_xgb_cb/models/lgbm/fold0/seed0.lgb.txt").exists()
    assert (bundle / "runs/isic2024/stack/lgb_xgb_cb/levels.json").exists()
    assert (bundle / "runs/isic2024/stack/lgb_xgb_cb/blend.json").exists()  # the rank blend's probability map
    assert (bundle / "runs/isic2024/stack/lgb_xgb_cb/blend_reference.npz").exists()
    wheel = next(bundle.glob("foldstack-*.whl"))
    assert "foldstack/submit/predict.py" in zipfile.ZipFile(wheel).namelist()
    assert (
        json.loads((bundle / "dataset-metadata.json").read_text())["id"]
        == "someone/foldstack-isic2024-bundle"
    )
    kernel = build_kernel(cfg, "lgbm", "someone", tmp_path / "kernel")
    meta = json.loads((kernel / "kernel-metadata.json").read_text())
    assert meta["enable_internet"] is False and meta["enable_gpu"] is True
    assert meta["competition_sources"] == ["isic-2024-challenge"]
    assert meta["dataset_sources"] == ["someone/foldstack-isic2024-bundle"]
    script = (kernel / "predict.py").read_text()
    assert "--no-index" in script and "COMPETITION = 'isic-2024-challenge'" in script
    assert 'ROOT = os.environ.get(ROOT_ENV, "/kaggle")' in script
    compile(script, "predict.py", "exec")


def test_leaderboard_ranks_runs_and_scores_submissions_on_labels(trained, tmp_path):
    cfg, data, _, stack = trained
    _path, row = write_submission(cfg, data, stack / "test.parquet", out_dir=tmp_path)
    record(ledger_path(cfg, tmp_path), row)
    table = leaderboard(cfg, data / "test-labels.csv", out_dir=tmp_path)
    assert set(table["kind"]) == {"stage1", "stack", "submission"}
    sub = table[table["kind"] == "submission"].iloc[0]
    assert 0 <= sub["test_pauc"] <= 0.2 and sub["oof_pauc_lo"] <= sub["oof_pauc"] <= sub["oof_pauc_hi"]
    for f in ("leaderboard.md", "leaderboard.csv", "roc.png"):
        assert (tmp_path / "isic2024" / f).exists()
    assert "| lgb_xgb_cb | stack |" in (tmp_path / "isic2024/leaderboard.md").read_text()


def test_leaderboard_leaves_unscored_a_submission_whose_run_is_of_other_data(trained, tmp_path):
    """A ledger row made from a run on other data (make submit DATA=... SET=runs_dir=...) is listed with a
    note instead of breaking make lb (the demo's lb once failed so, with a KeyError of ids)."""
    cfg, data, _, stack = trained
    _path, row = write_submission(cfg, data, stack / "test.parquet", out_dir=tmp_path)
    other = tmp_path / "other" / "isic2024" / "stack" / "lgb_xgb_cb"
    other.mkdir(parents=True)
    oof = pd.read_parquet(stack / "oof.parquet")
    oof.assign(id="OTHER_" + oof["id"].astype(str)).to_parquet(other / "oof.parquet")
    record(ledger_path(cfg, tmp_path), row | {"source": str(other / "test.parquet")})
    table = leaderboard(cfg, data / "test-labels.csv", out_dir=tmp_path)
    sub = table[table["kind"] == "submission"].iloc[0]
    assert "OOF not scored: its ids are not those of" in sub["note"] and pd.isna(sub.get("oof_pauc"))
    assert 0 <= sub["test_pauc"] <= 0.2  # its file is still scored on the labels
    assert "OOF not scored" in (tmp_path / "isic2024/leaderboard.md").read_text()
    # a submission file of other test ids is noted too, while another file still matches the labels
    foreign = tmp_path / "foreign.csv"
    sub_csv = pd.read_csv(_path)
    sub_csv.assign(isic_id="OTHER_" + sub_csv["isic_id"]).to_csv(foreign, index=False)
    record(ledger_path(cfg, tmp_path), row | {"file": str(foreign), "time_utc": "20990101T000000Z"})
    table = leaderboard(cfg, data / "test-labels.csv", out_dir=tmp_path)
    notes = table.loc[table["entry"] == "foreign", "note"].iloc[0]
    assert "test not scored" in notes and "have no prediction" in notes
    # when no file matches the labels, the labels are what is wrong: an error
    ledger = ledger_path(cfg, tmp_path)
    rows = pd.read_csv(ledger)
    rows[rows["file"] == str(foreign)].to_csv(ledger, index=False)
    with pytest.raises(DataError, match="have no prediction: are the labels of this competition"):
        leaderboard(cfg, data / "test-labels.csv", out_dir=tmp_path)


def test_network_failure_keeps_file_and_records_failed_row(trained, tmp_path, monkeypatch):
    _cfg, data, runs, stack = trained
    monkeypatch.chdir(tmp_path)

    def boom(*a, **k):
        raise kaggle_cli.KaggleError("could not reach kaggle.com: connection refused")

    monkeypatch.setattr(kaggle_cli, "check_credentials", lambda *a, **k: "someone")
    monkeypatch.setattr(kaggle_cli, "push_dataset", boom)
    with pytest.raises(kaggle_cli.KaggleError):
        _submit(
            [
                "--comp",
                "isic2024",
                "--data",
                str(data),
                "--set",
                f"{TINY['isic2024']} runs_dir={runs}",
                "--from",
                str(stack / "test.parquet"),
                "--skip-kernel-check",
            ],
            monkeypatch,
            tmp_path,
        )
    ledger = read_ledger(tmp_path / "submissions/isic2024/ledger.csv")
    assert ledger.loc[0, "kaggle_status"] == "failed" and "connection refused" in ledger.loc[0, "note"]
    assert ledger.loc[0, "kernel_check"] == "skipped (SKIP_KERNEL_CHECK=1)"
    assert (tmp_path / ledger.loc[0, "file"]).exists()


# --------------------------------------------------------------- make submit against the loopback Kaggle stub
from tests.kaggle_stub import kaggle_stub_fixture as kaggle_stub_fixture  # noqa: E402  (registers the fixture)


def _submit(args, monkeypatch, tmp_path):
    """make submit with these arguments, run in tmp_path."""
    from foldstack.commands.submit import submit, submit_parser

    monkeypatch.chdir(tmp_path)
    return submit(submit_parser().parse_args(args))


def _code_args(data, runs, *extra, check=("--skip-kernel-check",), limit=""):
    """make submit for the tiny code competition; the kernel check is skipped unless `check` says how to
    run it (its own test runs it), and `limit` sets kernel.runtime_limit_h (TINY: none)."""
    overrides = f"{TINY['isic2024']} runs_dir={runs}" + (f" kernel.runtime_limit_h={limit}" if limit else "")
    return ["--comp", "isic2024", "--data", str(data), "--set", overrides, *check, *extra]


# the calls by which the code flow uploads, waits and submits (uploads of file bytes left out)
FLOW_CALLS = {
    "GetDatasetStatus",
    "CreateDataset",
    "CreateDatasetVersion",
    "SaveKernel",
    "GetKernelSessionStatus",
    "ListKernelSessionOutput",
    "CreateCodeSubmission",
    "ListSubmissions",
}


def _flow_calls(stub):
    return [m for m in (r.rsplit("/", 1)[-1] for r in stub.rpcs()) if m in FLOW_CALLS]


def _ledger_statuses(monkeypatch):
    """The kaggle_status of every ledger write `make submit` makes from now on."""
    from foldstack.submit import flows

    seen = []

    def spy(path, row):
        seen.append(row["kaggle_status"])
        record(path, row)

    monkeypatch.setattr(flows, "record", spy)
    return seen


@pytest.mark.slow
def test_code_competition_flow_waits_for_each_step_and_records_it(
    trained, kaggle_stub, tmp_path, monkeypatch, capsys
):
    _cfg, data, runs, _stack = trained
    state = kaggle_stub.state
    state.dataset_statuses = ["BLOBS_RECEIVED", "READY"]
    state.kernel_statuses = ["QUEUED", "RUNNING", "COMPLETE"]
    state.submission_statuses = ["PENDING", "COMPLETE"]
    state.public_score = "0.1612"
    statuses = _ledger_statuses(monkeypatch)
    own = ("--kernel-python", "own")  # the kernel check runs first, on this venv
    _submit(
        _code_args(data, runs, "--message", "e2e code", "--poll", "0.05", check=own), monkeypatch, tmp_path
    )

    # the dataset is ready before the kernel is pushed, the kernel's run complete before it is submitted
    assert _flow_calls(kaggle_stub) == [
        "GetDatasetStatus",  # does the dataset exist? (no: it is created)
        "GetDatasetStatus",  # `kaggle datasets create` asks again itself
        "CreateDataset",
        *["GetDatasetStatus"] * 2,
        "SaveKernel",
        *["GetKernelSessionStatus"] * 3,
        "CreateCodeSubmission",
        *["ListSubmissions"] * 2,
    ]
    kernel = kaggle_stub.calls("SaveKernel")[0].json
    assert kernel["competitionDataSources"] == ["isic-2024-challenge"] and kernel["enableInternet"] is False
    assert "foldstack.submit.predict" in kernel["text"]
    code = kaggle_stub.calls("CreateCodeSubmission")[0].json
    assert code["kernelSlug"] == "foldstack-isic2024-predict" and code["submissionDescription"] == "e2e code"
    assert code["fileName"] == "submission.csv" and code["kernelVersion"] == 7
    assert not kaggle_stub.unknown
    assert statuses == [
        "sending",
        "checked",  # the runtime estimate and the kernel check passed, nothing uploaded yet
        "dataset uploaded",
        "dataset ready",
        "kernel pushed v7",
        "kernel complete",
        "submitted",
        "complete",
    ]
    ledger = read_ledger(tmp_path / "submissions/isic2024/ledger.csv")
    row = ledger.iloc[0]
    assert len(ledger) == 1 and row["flow"] == "code" and row["kaggle_status"] == "complete"
    assert float(row["public_score"]) == pytest.approx(0.1612)
    assert row["bundle_sha256"] == folder_sha256(tmp_path / "submissions/isic2024/kaggle/bundle")
    assert row["kernel_version"] == 7 and row["kernel_check"].startswith("passed: max |diff|")
    assert (tmp_path / "submissions/isic2024/kernel-check/working/submission.csv").exists()
    out = capsys.readouterr().out
    assert "waiting for kernel stub-user/foldstack-isic2024-predict: queued (" in out
    assert "kaggle status: complete" in out


@pytest.mark.slow
def test_a_kernel_run_that_fails_stops_the_flow_before_submitting(
    trained, kaggle_stub, tmp_path, monkeypatch
):
    _cfg, data, runs, _stack = trained
    kaggle_stub.state.kernel_statuses = ["RUNNING", "ERROR"]
    kaggle_stub.state.kernel_failure = "Your notebook tried to allocate more memory than is available."
    kaggle_stub.state.kernel_log = (
        "Loading fold 0\nTraceback (most recent call last):\nMemoryError: stack.npy\n"
    )
    with pytest.raises(kaggle_cli.KaggleError) as info:
        _submit(_code_args(data, runs, "--poll", "0.05"), monkeypatch, tmp_path)

    message = str(info.value)
    assert "foldstack-isic2024-predict ended error after" in message
    assert "tried to allocate more memory" in message and message.endswith("MemoryError: stack.npy")
    assert kaggle_stub.calls("CreateCodeSubmission") == [] and kaggle_stub.calls("ListKernelSessionOutput")
    row = read_ledger(tmp_path / "submissions/isic2024/ledger.csv").iloc[0]
    assert row["kaggle_status"] == "failed" and "tried to allocate more memory" in row["note"]
    assert row["kernel_version"] == 7 and len(row["bundle_sha256"]) == 64  # kept from the steps that ran
    assert (tmp_path / row["file"]).exists()


@pytest.mark.slow
def test_a_bundle_that_never_gets_ready_stops_the_flow_naming_it(trained, kaggle_stub, tmp_path, monkeypatch):
    _cfg, data, runs, _stack = trained
    kaggle_stub.state.dataset_statuses = ["BLOBS_RECEIVED"]
    args = _code_args(data, runs, "--poll", "0.1", "--dataset-timeout", "0.5")
    with pytest.raises(
        kaggle_cli.KaggleError, match="stub-user/foldstack-isic2024-bundle is not ready after"
    ):
        _submit(args, monkeypatch, tmp_path)
    assert kaggle_stub.calls("SaveKernel") == []
    row = read_ledger(tmp_path / "submissions/isic2024/ledger.csv").iloc[0]
    assert row["kaggle_status"] == "failed" and "blobs_received" in row["note"]
    assert (tmp_path / row["file"]).exists()


@pytest.mark.parametrize("state", ["kernel complete", "submitted"])
def test_a_code_submission_stopped_after_its_kernel_ran_is_not_sent_twice(
    state, trained, kaggle_stub, tmp_path, monkeypatch
):
    cfg, data, runs, stack = trained
    ledger = tmp_path / "submissions" / "isic2024" / "ledger.csv"
    _, row = write_submission(
        cfg, data, stack / "test.parquet", out_dir=tmp_path / "submissions", ledger=ledger
    )
    record(ledger, row | {"kaggle_status": state})  # a kill while submitting or waiting for the score
    with pytest.raises(DataError, match=r"was being sent to Kaggle .* FORCE=1"):
        _submit(_code_args(data, runs), monkeypatch, tmp_path)
    assert not kaggle_stub.rpcs()


def test_an_older_ledger_without_the_code_flow_columns_reads_and_grows(trained, tmp_path):
    cfg, data, _, stack = trained
    ledger = ledger_path(cfg, tmp_path)
    ledger.parent.mkdir(parents=True)
    old = [c for c in LEDGER_COLUMNS if c not in ("bundle_sha256", "kernel_version", "kernel_check")]
    old_row = {c: "" for c in old} | {"time_utc": "20240801T000000Z", "file": "old.csv", "sha256": "a" * 64}
    pd.DataFrame([old_row | {"kaggle_status": "complete", "public_score": 0.15}], columns=old).to_csv(
        ledger, index=False
    )
    table = read_ledger(ledger)
    assert list(table.columns) == LEDGER_COLUMNS and table["bundle_sha256"].isna().all()

    _, row = write_submission(cfg, data, stack / "test.parquet", out_dir=tmp_path, ledger=ledger)
    record(ledger, row | {"kaggle_status": "complete", "bundle_sha256": "b" * 64, "kernel_version": 3})
    table = read_ledger(ledger)
    assert table["file"].tolist() == ["old.csv", row["file"]]
    assert table.loc[0, "kaggle_status"] == "complete" and table.loc[0, "public_score"] == 0.15
    assert pd.isna(table.loc[0, "kernel_version"]) and table.loc[1, "kernel_version"] == 3
    assert table.loc[1, "bundle_sha256"] == "b" * 64
    assert pd.read_csv(ledger).columns.tolist() == LEDGER_COLUMNS


@pytest.fixture(scope="module")
def trained_2020(tiny_isic2020, tmp_path_factory):
    _, data = tiny_isic2020
    runs = tmp_path_factory.mktemp("submit2020") / "runs"
    cfg = load_oof_config(
        "isic2020",
        "tiny",
        f"{TINY['isic2020']} runs_dir={runs} data.img_size=32 train.epochs=1 predict.tta=1",
    )
    make_folds(cfg, read_metadata(cfg, data, "train"), data)
    run_oof(cfg, data, progress=False)
    return data, runs, Runs.of(cfg).dir / "oof" / "tiny" / "test.parquet"


@pytest.mark.slow
def test_file_competition_flow_end_to_end(trained_2020, kaggle_stub, tmp_path, monkeypatch):
    data, runs, source = trained_2020
    kaggle_stub.state.public_score = "0.8123"
    _submit(
        [
            "--comp",
            "isic2020",
            "--data",
            str(data),
            "--set",
            f"{TINY['isic2020']} runs_dir={runs}",
            "--from",
            str(source),
        ],
        monkeypatch,
        tmp_path,
    )
    ledger = read_ledger(tmp_path / "submissions/isic2020/ledger.csv")
    written = (tmp_path / ledger.loc[0, "file"]).read_bytes()
    create = kaggle_stub.calls("CreateSubmission")[0].json
    assert create["competitionName"] == "siim-isic-melanoma-classification"
    assert list(kaggle_stub.uploads.values()) == [written]  # the exact bytes of the written file
    assert ledger.loc[0, "flow"] == "file" and float(ledger.loc[0, "public_score"]) == pytest.approx(0.8123)


def test_dry_run_sends_nothing(trained_2020, kaggle_stub, tmp_path, monkeypatch, capsys):
    data, runs, source = trained_2020
    _submit(
        [
            "--comp",
            "isic2020",
            "--data",
            str(data),
            "--set",
            f"{TINY['isic2020']} runs_dir={runs}",
            "--from",
            str(source),
            "--dry-run",
        ],
        monkeypatch,
        tmp_path,
    )
    out = capsys.readouterr().out
    assert "$ kaggle competitions submit -c siim-isic-melanoma-classification -f submissions/isic2020/" in out
    assert kaggle_stub.rpcs() == []
    assert read_ledger(tmp_path / "submissions/isic2020/ledger.csv").loc[0, "kaggle_status"] == "dry-run"


def test_code_flow_dry_run_without_credentials_prints_the_commands(trained, tmp_path, monkeypatch, capsys):
    from tests.kaggle_stub import isolate_kaggle_env

    _, data, runs, _ = trained
    isolate_kaggle_env(monkeypatch, tmp_path / "env")  # no credentials anywhere
    _submit(
        [
            "--comp",
            "isic2024",
            "--data",
            str(data),
            "--set",
            f"{TINY['isic2024']} runs_dir={runs}",
            "--dry-run",
            "--skip-kernel-check",
        ],
        monkeypatch,
        tmp_path,
    )
    commands = [line for line in capsys.readouterr().out.splitlines() if line.startswith("$ kaggle")]
    assert commands == [
        "$ kaggle datasets version -p submissions/isic2024/kaggle/bundle -m "
        + commands[0].split(" -m ", 1)[1],
        "$ kaggle datasets status YOUR-USERNAME/foldstack-isic2024-bundle",  # what it would wait for
        "$ kaggle kernels push -p submissions/isic2024/kaggle/kernel",
        "$ kaggle kernels status YOUR-USERNAME/foldstack-isic2024-predict",
        "$ kaggle competitions submit -c isic-2024-challenge -k YOUR-USERNAME/foldstack-isic2024-predict "
        "-v VERSION -f submission.csv -m " + commands[4].split(" -m ", 1)[1],
        "$ kaggle competitions submissions -c isic-2024-challenge --csv",
    ]
    assert read_ledger(tmp_path / "submissions/isic2024/ledger.csv").loc[0, "kaggle_status"] == "dry-run"


def test_leaderboard_ranks_stacks_by_holdout_and_shows_flags(trained, tmp_path):
    cfg, _data, runs, _stack = trained
    other = tmp_path / "runs"
    shutil.copytree(runs, other)
    cfg = load_competition("isic2024", f"{TINY['isic2024']} runs_dir={other}")
    root = other / "isic2024/stack"
    shutil.copytree(root / "lgb_xgb_cb", root / "better")
    m = json.loads((root / "better/metrics.json").read_text())
    m["stack"]["holdout_pauc"] = 0.199  # same OOF as lgbm, a better (and suspicious) hold-out score
    m |= {"score_is_optimistic": True, "optimistic_inputs": ["tiny"]}
    (root / "better/metrics.json").write_text(json.dumps(m))
    table = leaderboard(cfg, None, out_dir=tmp_path / "subs")
    stacks = table[table["kind"] == "stack"]
    assert stacks["entry"].tolist() == ["better", "lgb_xgb_cb"] and stacks["rank"].tolist() == [1, 2]
    assert set(stacks["rank_by"]) == {"holdout_pauc"}
    assert set(table.loc[table["kind"] == "stage1", "rank_by"]) == {"oof_pauc"}
    better = stacks.iloc[0]
    assert better["holdout_pauc"] == 0.199 and better["optimistic"] == "yes (inputs tiny)"
    assert "holdout_pauc 0.1990 >= 0.198" in better["suspicious"]
    assert stacks.iloc[1]["optimistic"] == "" and stacks.iloc[1]["suspicious"] == ""
    md = (tmp_path / "subs/isic2024/leaderboard.md").read_text()
    assert "| 1 | better | stack | holdout_pauc | 0.1990 | yes (inputs tiny) |" in md
    assert "stacks come first, ranked by holdout_pauc" in md


@pytest.mark.slow
def test_lb_without_or_with_bad_labels_gives_clear_errors(trained, tmp_path, monkeypatch):
    from foldstack.commands.submit import lb

    _cfg, data, runs, _stack = trained
    monkeypatch.chdir(tmp_path)
    sets = f"{TINY['isic2024']} runs_dir={runs}"
    nolabels = tmp_path / "nolabels"
    nolabels.mkdir()
    for f in ("train-metadata.csv", "test-metadata.csv", "sample_submission.csv"):
        shutil.copy(data / f, nolabels / f)
    _path, row = write_submission(_cfg, data, _stack / "test.parquet", out_dir=tmp_path / "submissions")
    record(ledger_path(_cfg, tmp_path / "submissions"), row)
    # LABELS= and no labels file: OOF scores only
    assert lb("isic2024", sets, str(nolabels), labels="") == 0
    labels = pd.read_csv(data / "test-labels.csv")
    cases = {
        "missing.csv": (None, "does not exist or is not a file"),
        "no_target.csv": (labels.drop(columns="target"), r"lacks column\(s\) \['target'\]"),
        "empty.csv": ("", "is not a readable CSV"),
        "one_class.csv": (labels[labels["target"] == 0], "hold a single class"),
    }
    for name, (content, match) in cases.items():
        path = tmp_path / name
        if isinstance(content, pd.DataFrame):
            content.to_csv(path, index=False)
        elif content is not None:
            path.write_text(content)
        with pytest.raises(DataError, match=match):
            lb("isic2024", sets, str(data), labels=str(path))
    with pytest.raises(DataError, match=r"no folds at .*make folds"):
        lb("isic2024", f"{TINY['isic2024']} runs_dir={tmp_path / 'none'}", str(data))


def test_code_competition_refuses_a_stage1_source_naming_the_stack_to_run(trained, tmp_path, monkeypatch):
    _cfg, data, runs, _stack = trained
    source = runs / "isic2024/oof/tiny/test.parquet"
    args = ["--comp", "isic2024", "--data", str(data), "--set", f"{TINY['isic2024']} runs_dir={runs}"]
    with pytest.raises(DataError, match=r"not a stack run's test.parquet.*make stack MODELS=tiny"):
        _submit([*args, "--from", str(source), "--dry-run"], monkeypatch, tmp_path)


@pytest.mark.slow
def test_a_file_left_sending_is_not_sent_twice_without_force(trained, kaggle_stub, tmp_path, monkeypatch):
    cfg, data, runs, stack = trained
    ledger = tmp_path / "submissions" / "isic2024" / "ledger.csv"
    subs = tmp_path / "submissions"
    _, row = write_submission(cfg, data, stack / "test.parquet", out_dir=subs, ledger=ledger)
    record(ledger, row | {"kaggle_status": "sending"})  # a kill while the kaggle command ran
    args = _code_args(data, runs)
    with pytest.raises(DataError, match=r"was being sent to Kaggle .* FORCE=1"):
        _submit(args, monkeypatch, tmp_path)
    assert not kaggle_stub.rpcs()  # nothing was sent
    _submit([*args, "--force"], monkeypatch, tmp_path)
    assert "CreateCodeSubmission" in [r.rsplit("/", 1)[-1] for r in kaggle_stub.rpcs()]


@pytest.mark.slow
def test_a_kernel_estimated_over_the_limit_is_refused_unless_forced(
    trained, kaggle_stub, tmp_path, monkeypatch
):
    _cfg, data, runs, _stack = trained
    args = _code_args(data, runs, "--poll", "0.05", limit="1e-9")
    with pytest.raises(DataError, match=r"estimated run time, .* exceeds the 1e-09 h limit .*FORCE=1"):
        _submit(args, monkeypatch, tmp_path)
    assert not kaggle_stub.rpcs()  # nothing uploaded
    row = read_ledger(tmp_path / "submissions/isic2024/ledger.csv").iloc[0]
    assert row["kaggle_status"] == "failed" and "exceeds" in row["note"]
    _submit([*args, "--force"], monkeypatch, tmp_path)
    assert "CreateCodeSubmission" in [r.rsplit("/", 1)[-1] for r in kaggle_stub.rpcs()]
    row = read_ledger(tmp_path / "submissions/isic2024/ledger.csv").iloc[-1]
    assert "OVER THE LIMIT" in row["note"] and row["kernel_check"].startswith("skipped")


def test_a_failing_kernel_check_uploads_nothing(trained, kaggle_stub, tmp_path, monkeypatch):
    _cfg, data, runs, _stack = trained
    args = _code_args(data, runs, check=("--kernel-python", shutil.which("false")))
    with pytest.raises(DataError, match=r"predict\.py failed \(exit 1\)"):
        _submit(args, monkeypatch, tmp_path)
    assert not kaggle_stub.rpcs()
    row = read_ledger(tmp_path / "submissions/isic2024/ledger.csv").iloc[0]
    assert row["kaggle_status"] == "failed" and row["kernel_check"] == "failed"
    assert (tmp_path / row["file"]).exists()
