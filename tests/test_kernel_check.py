"""make kernel-check: the generated kernel script (safe literals, Kaggle-like root), its offline run against
make predict, the runtime estimate, and the venv of Kaggle's versions."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from foldstack.data.metadata import read_metadata
from foldstack.errors import DataError
from foldstack.runs import StackRun
from foldstack.submit import check as kc
from foldstack.submit import stages as stages_mod
from foldstack.submit.bundle import build_submission_folders, check_stack_source
from foldstack.submit.kernel import ROOT_ENV, kernel_script
from foldstack.submit.predict import Stages, TrainedStack, stack_test_predictions, submission_frame


def _assignments(script: str) -> dict[str, object]:
    tree = ast.parse(script)
    return {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
        if isinstance(node.value, ast.Constant)
    }


@pytest.mark.slow
def test_kernel_script_embeds_every_name_as_a_literal(trained):
    cfg = trained[0]
    plain = kernel_script(cfg, "lgbm")
    evil = 'x"); import os; os.system("rm -rf /")  #\n__import__("os")'
    hostile = kernel_script(cfg.model_copy(update={"slug": evil}), evil)
    compile(hostile, "predict.py", "exec")
    # the same statements, only the two literals differ: no name can add code
    assert len(ast.parse(hostile).body) == len(ast.parse(plain).body)
    values = _assignments(hostile)
    assert values["COMPETITION"] == evil and values["STACK"] == evil
    assert values["ROOT_ENV"] == ROOT_ENV and _assignments(plain)["COMPETITION"] == "isic-2024-challenge"
    assert 'os.environ.get(ROOT_ENV, "/kaggle")' in plain and "--no-index" in plain


@pytest.fixture(scope="module")
def staged(trained, tmp_path_factory):
    cfg, _, _, stack = trained
    staging = tmp_path_factory.mktemp("staging") / "kaggle"
    bundle, kernel = build_submission_folders(cfg, StackRun(stack), "someone", staging)
    return bundle, kernel


@pytest.mark.slow
def test_kernel_runs_offline_in_a_kaggle_root_and_equals_predict(trained, staged, tmp_path):
    cfg, data, _runs, stack = trained
    bundle, kernel = staged
    root = tmp_path / "kaggle"
    report = kc.check_kernel(cfg, data, StackRun(stack), bundle, kernel, root, python=kc.OWN, timeout_s=600)
    assert report["passed"] and report["max_abs_diff"] <= 1e-6
    assert (root / "input" / "isic-2024-challenge").resolve() == data.resolve()
    assert (root / "input" / "foldstack-isic2024-bundle").resolve() == bundle.resolve()
    got = pd.read_csv(root / "working" / "submission.csv")
    sample = pd.read_csv(data / "sample_submission.csv")
    assert got["isic_id"].tolist() == sample["isic_id"].tolist()
    assert json.loads((root / "report.json").read_text())["rows"] == len(sample)
    assert report["versions"]["torch"] != "missing"
    # stage by stage, kernel and predict agree bit for bit, and say so
    names = [r["stage"] for r in report["stages"]]
    assert names == ["stage 1 tiny", "features", "engine lgbm", "engine xgb", "engine cb", "blend"]
    for r in report["stages"]:
        assert r["max_abs_diff"] == 0.0 and r["rows_differ"] == 0, r
        assert r["stage"] == "stage 1 tiny" or r["own"]["max_abs_diff"] == 0.0
    # the regression of issue 21: skin colour constant within each patient gives exact zeros
    X = Stages.load(root / "stages" / "kernel").features
    for c in ("tbp_lv_Lext_pz", "tbp_lv_Aext_pz", "tbp_lv_Bext_pz", "tbp_lv_Hext_pz", "age_approx_pz"):
        assert (X[c].dropna() == 0.0).all(), c
    assert "stage by stage" in "\n".join(kc.report_lines(report))


@pytest.fixture(scope="module")
def local_stages(trained):
    _cfg, data, _runs, stack_dir = trained
    stack = TrainedStack.load(StackRun(stack_dir))
    return stack, read_metadata(stack.cfg, data, "test"), stack.predict(data, progress=False)


def _copy(stages: Stages, **changes) -> Stages:
    parts = {
        "ids": stages.ids,
        "cnn": {n: f.copy() for n, f in stages.cnn.items()},
        "features": stages.features.copy(),
        "engines": {n: p.copy() for n, p in stages.engines.items()},
        "blend": stages.blend.copy(),
    }
    return Stages(**(parts | changes))


def _pipeline(stack, local: Stages, cnn: dict, X: pd.DataFrame) -> Stages:
    """A kernel that computes like this one from the given stage-1 predictions and matrix onwards."""
    engines = stack.engines(X)
    return Stages(local.ids, cnn, X, engines, stack.blend(engines))


def test_stages_round_trip_through_their_files(local_stages, tmp_path):
    stack, test, local = local_stages
    local.save(tmp_path / "s")
    again = Stages.load(tmp_path / "s")
    records = stages_mod.compare_stages(stack, test, local, again)
    assert all(r["max_abs_diff"] == 0.0 for r in records) and stages_mod.stage_verdict(records, None) is None


def test_the_first_stage_that_computes_differently_is_named_with_its_column_and_size(local_stages):
    stack, test, local = local_stages
    X = local.features.assign(tbp_lv_Hext_pz=local.features["tbp_lv_Hext_pz"] + 2.8e-8)  # as pandas did
    noisy = _pipeline(stack, local, local.cnn, X)
    records = stages_mod.compare_stages(stack, test, local, noisy)
    verdict = stages_mod.stage_verdict(records, None)
    assert verdict and verdict.startswith(
        "the kernel diverges at stage 'features': 2.8e-08 (> 0) (tbp_lv_Hext_pz"
    )
    assert "engine lgbm" in verdict  # the stages after it are listed with their figures
    # the engines, redone here on the kernel's (noisy) matrix, compute the same: only features are to blame
    assert all(r["own"]["max_abs_diff"] == 0.0 for r in records if r["stage"].startswith("engine"))
    off = _copy(local, engines={n: p + (0.01 if n == "xgb" else 0.0) for n, p in local.engines.items()})
    verdict = stages_mod.stage_verdict(stages_mod.compare_stages(stack, test, local, off), None)
    assert verdict.startswith("the kernel diverges at stage 'engine xgb': 0.01 (> 1e-06) (fold0, id ")
    cnn = {n: f.assign(pred_fold0=f["pred_fold0"] + 0.5) for n, f in local.cnn.items()}
    verdict = stages_mod.stage_verdict(
        stages_mod.compare_stages(stack, test, local, _copy(local, cnn=cnn)), None
    )
    assert verdict.startswith("the kernel diverges at stage 'stage 1 tiny': 0.5 (> 1e-06) (pred_fold0, id ")


def test_a_submission_difference_with_every_stage_within_tolerance_names_where_it_began(local_stages):
    stack, test, local = local_stages
    cnn = {n: f.assign(pred=f["pred"] + 1e-9) for n, f in local.cnn.items()}
    nudged = _pipeline(stack, local, cnn, stack.features(test, cnn))
    records = stages_mod.compare_stages(stack, test, local, nudged)
    verdict = stages_mod.stage_verdict(records, "submission.csv differs")
    assert verdict.startswith(
        "submission.csv differs; the first difference is at stage 'stage 1 tiny' (1e-09"
    )


def test_without_a_stack_run_the_check_says_so_and_how_to_make_one(trained, tmp_path):
    cfg = trained[0]
    with pytest.raises(DataError, match=r"no stack run 'lgb_xgb_cb' yet .*Make one with .make stack."):
        check_stack_source(cfg, tmp_path / "runs/isic2024/stack/lgb_xgb_cb/test.parquet")


def test_offline_env_reaches_no_index(tmp_path):
    env = kc.offline_env(tmp_path)
    assert env["PIP_NO_INDEX"] == "1" and env["PIP_CONFIG_FILE"] == "/dev/null"
    assert env["HTTPS_PROXY"].startswith("http://127.0.0.1:") and "PYTHONPATH" not in env
    out = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(tmp_path / "w"), "six==1.17.0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode != 0  # no index: nothing can be fetched


@pytest.mark.slow
def test_a_failing_kernel_shows_its_log_tail(trained, staged, tmp_path):
    cfg, data, _runs, stack = trained
    bundle, kernel = staged
    broken = tmp_path / "bundle"
    shutil.copytree(bundle, broken)
    model = next((broken / "runs/isic2024/stack/lgb_xgb_cb/models/lgbm/fold0").iterdir())
    model.write_text("not a model\n")
    with pytest.raises(
        DataError,
        match=r"(?s)failed \(exit [1-9]\d*\).*kernel\.log ends:.*models does not match .*metrics\.json",
    ):
        kc.check_kernel(cfg, data, StackRun(stack), broken, kernel, tmp_path / "root", python=kc.OWN)


def test_a_bundle_missing_a_fold_model_is_refused_before_upload(trained, tmp_path):
    cfg, _, runs, _ = trained
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    (copy / "isic2024/oof/tiny/fold1.safetensors").unlink()
    with pytest.raises(DataError, match=r"fold1\.safetensors is missing"):
        build_submission_folders(
            cfg, StackRun(copy / "isic2024/stack/lgb_xgb_cb"), "someone", tmp_path / "kaggle"
        )
    assert not (tmp_path / "kaggle" / "bundle").exists()  # nothing half built is left as the set


def test_compare_refuses_a_different_file(trained, tmp_path):
    cfg, data, _, stack = trained
    expected = submission_frame(cfg, data, stack_test_predictions(StackRun(stack), data, progress=False))
    path = tmp_path / "submission.csv"
    expected.to_csv(path, index=False)
    assert kc.compare(cfg, data, path, expected) == 0.0
    off = expected.copy()
    off.loc[1, "target"] += 1e-4
    off.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"differs from `make predict` by 0\.0001 .* at id ISIC_"):
        kc.compare(cfg, data, path, expected)
    expected.iloc[::-1].to_csv(path, index=False)
    with pytest.raises(DataError, match=r"ids differ from sample_submission\.csv"):
        kc.compare(cfg, data, path, expected)
    with pytest.raises(DataError, match="without writing"):
        kc.compare(cfg, data, tmp_path / "none.csv", expected)


def test_runtime_estimate_scales_the_measured_test_pass(trained):
    cfg, _, runs, stack = trained
    m = json.loads((runs / "isic2024/oof/tiny/metrics.json").read_text())
    n = len(pd.read_parquet(runs / "isic2024/oof/tiny/test.parquet"))
    assert cfg.kernel.hidden_test_rows == 500_000 and cfg.kernel.runtime_limit_h == 0  # TINY: no limit
    cfg = cfg.model_copy(update={"kernel": cfg.kernel.model_copy(update={"runtime_limit_h": 12})})
    est = kc.runtime_estimate(cfg, StackRun(stack))
    assert np.isclose(est["seconds"], m["test_prediction_seconds"] / n * 500_000)
    assert est["over_limit"] == (est["seconds"] > 12 * 3600)
    tight = cfg.model_copy(update={"kernel": cfg.kernel.model_copy(update={"runtime_limit_h": 1e-6})})
    assert kc.runtime_estimate(tight, StackRun(stack))["over_limit"]
    assert "OVER THE LIMIT" in kc.estimate_lines(kc.runtime_estimate(tight, StackRun(stack)))[0]
    none = cfg.model_copy(update={"kernel": cfg.kernel.model_copy(update={"hidden_test_rows": 0})})
    assert kc.runtime_estimate(none, StackRun(stack)) is None


@pytest.mark.slow
def test_kaggle_venv_is_made_once_and_rebuilt_when_the_pins_change(tmp_path):
    pins, venv = tmp_path / "requirements.txt", tmp_path / "venv"
    pins.write_text("six==1.17.0\n")
    py = kc.kaggle_venv(pins, venv)
    assert subprocess.run([str(py), "-c", "import six; assert six.__version__ == '1.17.0'"]).returncode == 0
    stamp = (venv / kc.STAMP).stat().st_mtime_ns
    assert kc.kaggle_venv(pins, venv) == py and (venv / kc.STAMP).stat().st_mtime_ns == stamp
    pins.write_text("six==1.16.0\n")
    kc.kaggle_venv(pins, venv)
    assert subprocess.run([str(py), "-c", "import six; assert six.__version__ == '1.16.0'"]).returncode == 0
    pins.write_text("six==0.0.0.404\n")
    with pytest.raises(
        DataError, match=r"could not create the Kaggle-versions venv from .*requirements\.txt"
    ):
        kc.kaggle_venv(pins, venv)
    assert not venv.exists()  # no half-made venv left to be taken for a good one


def test_a_bundled_wheel_that_cannot_install_offline_fails_the_check_with_pip_s_words(
    trained, staged, tmp_path
):
    cfg, data, _runs, stack = trained
    bundle, kernel = staged
    broken = tmp_path / "bundle"
    shutil.copytree(bundle, broken)
    (broken / "wheels").mkdir()
    (broken / "wheels" / "extra-1.0-py3-none-any.whl").write_bytes(b"not a zip archive")
    with pytest.raises(
        DataError, match=r"(?s)failed \(exit 1\).*kernel\.log ends:.*extra-1\.0-py3-none-any\.whl"
    ):
        kc.check_kernel(cfg, data, StackRun(stack), broken, kernel, tmp_path / "root", python=kc.OWN)
