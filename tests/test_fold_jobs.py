"""Stage 1 as ISIC 2024 needs it: folds as independent jobs, scoring only what is used, one test pass."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from foldstack.data.metadata import read_metadata
from foldstack.errors import ConfigError
from foldstack.folds import make_folds
from foldstack.runs import Runs
from foldstack.stage1 import data as data_mod
from foldstack.stage1.config import load_oof_config
from foldstack.stage1.run import run_oof
from tests.conftest import REPO, TINY

FAST = "data.img_size=32 train.epochs=2 predict.tta=2"

pytestmark = pytest.mark.slow  # every test here trains real folds in several processes


def config(runs, extra=""):
    return load_oof_config("isic2024", "tiny", f"{TINY['isic2024']} runs_dir={runs} {FAST} {extra}")


def prepared(tmp_path, data, extra=""):
    cfg = config(tmp_path / "runs", extra)
    make_folds(cfg, read_metadata(cfg, data, "train"), data)
    return cfg


def job(data, runs, folds, extra=""):
    """`make oof MODEL=tiny FOLDS=...` as its own process (no terminal: stdout is a pipe)."""
    cmd = [sys.executable, str(REPO / "pipelines/oof.py"), "--model", "tiny", "--data", str(data)]
    cmd += ["--set", f"{TINY['isic2024']} runs_dir={runs} {FAST} {extra}", "--no-progress", "--folds", folds]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ)


@pytest.fixture(scope="module")
def whole(tiny_isic2024, tmp_path_factory):
    """The outputs of one ordinary run over every fold."""
    _, data = tiny_isic2024
    tmp = tmp_path_factory.mktemp("whole")
    cfg = prepared(tmp, data)
    result = run_oof(cfg, data, progress=False)
    out = Runs.of(cfg).dir / "oof" / cfg.run
    return cfg, result, {n: pd.read_parquet(out / n) for n in ("oof.parquet", "test.parquet")}


def test_concurrent_fold_jobs_assemble_the_same_run_once(whole, tiny_isic2024, tmp_path):
    _, result0, files0 = whole
    _, data = tiny_isic2024
    cfg = prepared(tmp_path, data)
    runs = tmp_path / "runs"
    # three jobs at once on one run folder: folds 0, 1 and 2 (k=3)
    procs = [job(data, runs, f) for f in ("0", "1", "2")]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    out = Runs.of(cfg).dir / "oof" / cfg.run
    for name, frame in files0.items():  # the same predictions as one run over every fold, bit for bit
        pd.testing.assert_frame_equal(pd.read_parquet(out / name), frame, check_exact=True)
    m = json.loads((out / "metrics.json").read_text())
    assert m["oof_pauc"] == result0["oof_pauc"]
    # assembled exactly once; the jobs that landed earlier said which folds were missing
    assert sum(f"run {cfg.run}: assembled from folds 0-2" in log for log in logs) == 1
    assert sum("missing" in log for log in logs) >= 1
    log = pd.read_csv(out / "log.csv")
    assert sorted(zip(log["fold"], log["epoch"], strict=True)) == [(f, e) for f in range(3) for e in (1, 2)]
    # one line per epoch without a terminal
    joined = "\n".join(logs)
    for f in range(3):
        for e in (1, 2):
            assert f"fold {f} epoch {e}/2: loss " in joined
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_missing_folds_are_named_and_bad_folds_listed(tiny_isic2024, tmp_path, capsys):
    _, data = tiny_isic2024
    cfg = prepared(tmp_path, data)
    result = run_oof(cfg, data, progress=False, folds="0,2")
    assert result == {"missing_folds": [1]}
    printed = capsys.readouterr().out
    assert "fold(s) 0, 2 done, 1 missing" in printed and "FOLDS=1" in printed
    out = Runs.of(cfg).dir / "oof" / cfg.run
    assert not (out / "metrics.json").exists() and not (out / "oof.parquet").exists()
    for bad in ("3", "0,x", "-1"):
        with pytest.raises(ConfigError, match=r"the folds are 0, 1, 2 \(folds.k=3"):
            run_oof(cfg, data, progress=False, folds=bad)
    result = run_oof(cfg, data, progress=False, folds="1")  # the last fold lands: the run is assembled
    assert "oof_pauc" in result and (out / "metrics.json").exists()
    again = run_oof(cfg, data, progress=False)  # nothing to train, nothing to assemble again
    assert again["fold_records_sha256"] == result["fold_records_sha256"]
    assert "already assembled" in capsys.readouterr().out


def count_reads(monkeypatch):
    """Counts (dataset length, batch) of every batch read through LesionDataset.__getitems__."""
    reads = []
    original = data_mod.LesionDataset.__getitems__

    def counted(self, keys):
        reads.append((len(self), len(keys)))
        return original(self, keys)

    monkeypatch.setattr(data_mod.LesionDataset, "__getitems__", counted)
    return reads


def test_default_scores_the_held_out_fold_once_and_reads_test_once(tiny_isic2024, tmp_path, monkeypatch):
    _, data = tiny_isic2024
    cfg = prepared(tmp_path, data)
    reads = count_reads(monkeypatch)
    run_oof(cfg, data, progress=False)
    out = Runs.of(cfg).dir / "oof" / cfg.run
    n_test = len(read_metadata(cfg, data, "test"))
    bs = cfg.predict.batch_size
    # the test set: one pass of ceil(n / batch) reads for all k fold models, not k passes
    assert sum(1 for n, _ in reads if n == n_test) == -(-n_test // bs)
    for f in range(cfg.folds.k):
        info = json.loads((out / f"fold{f}.json").read_text())
        assert info["images"]["held_out_scoring"] == 0 and info["images"]["inner_scoring"] == 0
        assert info["images"]["oof_prediction"] == info["n_valid_rows"] * cfg.predict.tta
        assert "valid_pauc" not in info["log"][0] and "valid_pauc" in info["log"][-1]  # from the OOF itself
        assert set(info["seconds_split"]) == {
            "training",
            "held_out_scoring",
            "inner_scoring",
            "oof_prediction",
        }
    m = json.loads((out / "metrics.json").read_text())
    assert m["test_prediction_seconds"] >= 0 and m["test_images_per_s"] > 0


def test_eval_every_and_inner_split_are_scored_only_when_asked(tiny_isic2024, tmp_path):
    _, data = tiny_isic2024
    # eval_every=1 over 3 epochs scores epochs 1 and 2 (the last one is the OOF's); an inner split that
    # nothing reads is not scored
    cfg = prepared(tmp_path, data, "train.epochs=3 train.eval_every=1 train.inner_val_fraction=0.25")
    run_oof(cfg, data, progress=False, folds="0")
    info = json.loads((Runs.of(cfg).dir / "oof" / cfg.run / "fold0.json").read_text())
    assert [("valid_pauc" in r or "valid_auc" in r) for r in info["log"]] == [True, True, True]
    assert info["images"]["held_out_scoring"] == 2 * info["n_valid_rows"]
    assert info["images"]["inner_scoring"] == 0 and not any("inner_loss" in r for r in info["log"])
    # early stopping reads the inner split: scored every epoch
    cfg = prepared(tmp_path / "es", data, "train.inner_val_fraction=0.25 train.early_stopping_patience=5")
    run_oof(cfg, data, progress=False, folds="0")
    info = json.loads((Runs.of(cfg).dir / "oof" / cfg.run / "fold0.json").read_text())
    assert all("inner_loss" in r for r in info["log"])
    assert info["images"]["inner_scoring"] == info["n_inner_rows"] * len(info["log"])


def test_eval_every_does_not_change_the_fold_weights(tiny_isic2024, tmp_path):
    """Changing only what the log shows keeps the folds (same config hash): nothing is retrained."""
    _, data = tiny_isic2024
    cfg = prepared(tmp_path, data)
    run_oof(cfg, data, progress=False, folds="0")
    before = (Runs.of(cfg).dir / "oof" / cfg.run / "fold0.safetensors").stat().st_mtime_ns
    cfg2 = config(tmp_path / "runs", "train.eval_every=1")
    run_oof(cfg2, data, progress=False, folds="0")
    assert (Runs.of(cfg).dir / "oof" / cfg.run / "fold0.safetensors").stat().st_mtime_ns == before


def test_uint8_batches_are_normalised_on_the_device_like_albumentations():
    import albumentations as A
    import torch

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    prep = data_mod.DeviceNormalize(mean, std, torch.device("cpu"), channels_last=False)
    x = prep(torch.from_numpy(img))
    ref = np.stack([A.Normalize(mean=mean, std=std)(image=i)["image"] for i in img]).transpose(0, 3, 1, 2)
    assert x.dtype == torch.float32 and x.shape == (2, 3, 16, 16)
    np.testing.assert_allclose(x.numpy(), ref, atol=1e-5)
