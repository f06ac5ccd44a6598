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

from foldstack import kernel_check as kc
from foldstack.bundle import ROOT_ENV, build_submission_folders, kernel_script
from foldstack.errors import DataError
from foldstack.kernel import stack_test_predictions, submission_frame


def _assignments(script: str) -> dict[str, object]:
    tree = ast.parse(script)
    return {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
        if isinstance(node.value, ast.Constant)
    }


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
    bundle, kernel = build_submission_folders(cfg, stack, "someone", staging)
    return bundle, kernel


def test_kernel_runs_offline_in_a_kaggle_root_and_equals_predict(trained, staged, tmp_path):
    cfg, data, runs, stack = trained
    bundle, kernel = staged
    root = tmp_path / "kaggle"
    report = kc.check_kernel(cfg, data, stack, runs, bundle, kernel, root, python=kc.OWN, timeout_s=600)
    assert report["passed"] and report["max_abs_diff"] <= 1e-6
    assert (root / "input" / "isic-2024-challenge").resolve() == data.resolve()
    assert (root / "input" / "foldstack-isic2024-bundle").resolve() == bundle.resolve()
    got = pd.read_csv(root / "working" / "submission.csv")
    sample = pd.read_csv(data / "sample_submission.csv")
    assert got["isic_id"].tolist() == sample["isic_id"].tolist()
    assert json.loads((root / "report.json").read_text())["rows"] == len(sample)
    assert report["versions"]["torch"] != "missing"


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


def test_a_failing_kernel_shows_its_log_tail(trained, staged, tmp_path):
    cfg, data, runs, stack = trained
    bundle, kernel = staged
    broken = tmp_path / "bundle"
    shutil.copytree(bundle, broken)
    model = next((broken / "runs/isic2024/stack/lgbm/models/lgbm/fold0").iterdir())
    model.write_text("not a model\n")
    with pytest.raises(
        DataError,
        match=r"(?s)failed \(exit [1-9]\d*\).*kernel\.log ends:.*models does not match .*metrics\.json",
    ):
        kc.check_kernel(cfg, data, stack, runs, broken, kernel, tmp_path / "root", python=kc.OWN)


def test_a_bundle_missing_a_fold_model_is_refused_before_upload(trained, tmp_path):
    cfg, _, runs, _ = trained
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    (copy / "isic2024/oof/tiny/fold1.safetensors").unlink()
    with pytest.raises(DataError, match=r"fold1\.safetensors is missing"):
        build_submission_folders(cfg, copy / "isic2024/stack/lgbm", "someone", tmp_path / "kaggle")
    assert not (tmp_path / "kaggle" / "bundle").exists()  # nothing half built is left as the set


def test_compare_refuses_a_different_file(trained, tmp_path):
    cfg, data, _, stack = trained
    expected = submission_frame(cfg, data, stack_test_predictions(stack, trained[2], data, progress=False))
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
    est = kc.runtime_estimate(cfg, stack, runs)
    assert np.isclose(est["seconds"], m["test_prediction_seconds"] / n * 500_000)
    assert est["over_limit"] == (est["seconds"] > 12 * 3600)
    tight = cfg.model_copy(update={"kernel": cfg.kernel.model_copy(update={"runtime_limit_h": 1e-6})})
    assert kc.runtime_estimate(tight, stack, runs)["over_limit"]
    assert "OVER THE LIMIT" in kc.estimate_lines(kc.runtime_estimate(tight, stack, runs))[0]
    none = cfg.model_copy(update={"kernel": cfg.kernel.model_copy(update={"hidden_test_rows": 0})})
    assert kc.runtime_estimate(none, stack, runs) is None


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
    cfg, data, runs, stack = trained
    bundle, kernel = staged
    broken = tmp_path / "bundle"
    shutil.copytree(bundle, broken)
    (broken / "wheels").mkdir()
    (broken / "wheels" / "extra-1.0-py3-none-any.whl").write_bytes(b"not a zip archive")
    with pytest.raises(
        DataError, match=r"(?s)failed \(exit 1\).*kernel\.log ends:.*extra-1\.0-py3-none-any\.whl"
    ):
        kc.check_kernel(cfg, data, stack, runs, broken, kernel, tmp_path / "root", python=kc.OWN)
