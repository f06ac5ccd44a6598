"""Stage 1 on a tiny synthetic competition with the tiny timm model (CPU, seconds)."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from foldstack import artifacts
from foldstack.config import available
from foldstack.data.metadata import read_metadata
from foldstack.errors import ConfigError, DataError
from foldstack.folds import make_folds
from foldstack.runs import Runs, Stage1Run
from foldstack.stage1 import train as train_mod
from foldstack.stage1.config import load_oof_config, model_competition
from foldstack.stage1.data import DecodedImages, DeviceNormalize, MetaEncoder, epoch_indices, flip_views
from foldstack.stage1.inference import fold_models, predict_folds_on
from foldstack.stage1.inputs import input_config
from foldstack.stage1.model import LesionNet, resolve_weights
from foldstack.stage1.run import run_oof
from foldstack.stage1.runtime import make_runtime
from foldstack.synth.generate import write_hdf5
from tests.conftest import REPO, TINY

FAST = "data.img_size=32 train.epochs=2 predict.tta=2"


def tiny_oof_config(runs, extra="", model="tiny"):
    return load_oof_config("isic2024", model, f"{TINY['isic2024']} runs_dir={runs} {FAST} {extra}")


def run_tiny(tmp_path, data, extra="", model="tiny"):
    cfg = tiny_oof_config(tmp_path / "runs", extra, model)
    make_folds(cfg, read_metadata(cfg, data, "train"), data)
    return cfg, run_oof(cfg, data, progress=False)


@pytest.fixture(scope="module")
def finished(tiny_isic2024, tmp_path_factory):
    """One complete tiny run shared by the read-only checks below."""
    _, data = tiny_isic2024
    tmp = tmp_path_factory.mktemp("oof")
    cfg, result = run_tiny(tmp, data)
    return cfg, data, Runs.of(cfg).dir / "oof" / cfg.run, result


def test_oof_covers_every_train_id_once_with_its_fold(finished):
    cfg, data, out, _ = finished
    oof = pd.read_parquet(out / "oof.parquet")
    folds = pd.read_csv(Runs.of(cfg).dir / "folds.csv", dtype={"id": str})
    train = read_metadata(cfg, data, "train")
    assert len(oof) == len(train) and oof["id"].is_unique
    assert set(oof["id"]) == set(train[cfg.columns.id])
    merged = oof.merge(folds, on="id", suffixes=("", "_folds"))
    assert (merged["fold"] == merged["fold_folds"]).all()
    assert (merged["target"] == merged["target_folds"]).all()
    assert oof["pred"].between(0, 1).all()
    assert list(oof.columns[:4]) == ["id", "fold", "target", "pred"]


def test_test_mean_equals_mean_of_fold_columns(finished):
    cfg, data, out, _ = finished
    test = pd.read_parquet(out / "test.parquet")
    cols = [f"pred_fold{f}" for f in range(cfg.folds.k)]
    assert list(test.columns) == ["id", "pred", *cols]
    np.testing.assert_allclose(test["pred"], test[cols].mean(axis=1), rtol=0, atol=1e-12)
    assert test["id"].tolist() == read_metadata(cfg, data, "test")[cfg.columns.id].tolist()


def test_metrics_log_and_config_are_written(finished):
    cfg, _, out, _result = finished
    m = json.loads((out / "metrics.json").read_text())
    for key in (
        "oof_auc",
        "oof_pauc",
        "per_fold",
        "how_scored",
        "train_images_per_s",
        "inference_images_per_s",
        "wall_seconds_this_call",
        "folds_sha256",
    ):
        assert key in m, key
    assert len(m["per_fold"]) == cfg.folds.k and 0 <= m["oof_pauc"] <= 0.2
    assert m["score_is_optimistic"] is False and "last epoch" in m["how_scored"]
    log = pd.read_csv(out / "log.csv")
    assert len(log) == cfg.folds.k * cfg.train.epochs
    assert {"fold", "epoch", "train_loss", "valid_auc", "valid_pauc", "train_images_per_s"} <= set(
        log.columns
    )
    assert "backbone: test_efficientnet" in (out / "config.yaml").read_text()
    for f in ("roc.png", "pr.png", "scores.png", "thresholds.png", "thresholds.csv", "report.json"):
        assert (out / "report" / f).exists(), f
    report = json.loads((out / "report/report.json").read_text())
    # the run's outputs and each fold are sets: metrics.json / fold<k>.json list their members' sha256
    assert set(m["set_members"]) == {"oof.parquet", "test.parquet", "report"}
    assert artifacts.read_manifest(out / "metrics.json")["oof_pauc"] == m["oof_pauc"]
    for f in range(cfg.folds.k):
        members = artifacts.read_manifest(out / f"fold{f}.json")["set_members"]
        assert set(members) == {f"fold{f}.safetensors", f"fold{f}.preds.parquet"}
    assert not list(out.glob("*.ckpt.safetensors")) and not list(out.glob(".*"))
    assert report["pauc"] == pytest.approx(m["oof_pauc"]) and report["at_recall_0.8"]["recall"] >= 0.8


def test_saved_weights_reproduce_the_test_predictions(finished):
    """The kernel's path (files decoded on the fly, every fold model in one pass) reproduces the test
    predictions make oof made from the cache."""
    cfg, data, out, _ = finished
    from foldstack.data.images import open_images

    size, mean, std = input_config(cfg)
    test = read_metadata(cfg, data, "test").iloc[:20]
    ids = test[cfg.columns.id].tolist()
    rt = make_runtime(cfg, progress=False)
    records = [json.loads((out / f"fold{f}.json").read_text()) for f in range(cfg.folds.k)]
    models = fold_models(cfg, Stage1Run(out), records, rt)
    images = DecodedImages(open_images(cfg, data, "test"), ids, size)
    p = predict_folds_on(cfg, models, test, images, rt, mean, std)
    assert p.shape == (cfg.folds.k, 20)
    saved = pd.read_parquet(out / "test.parquet")
    for f in range(cfg.folds.k):
        np.testing.assert_allclose(p[f], saved[f"pred_fold{f}"][:20], atol=1e-6)


@pytest.mark.slow
def test_runs_are_reproducible(finished, tmp_path):
    """A second run of the shared tiny run's config, in another folder, predicts the same."""
    _, data, out, a = finished
    _, b = run_tiny(tmp_path / "b", data)
    oof_a = pd.read_parquet(out / "oof.parquet")
    oof_b = pd.read_parquet(tmp_path / "b/runs/isic2024/oof/tiny/oof.parquet")
    np.testing.assert_allclose(oof_a["pred"], oof_b["pred"], rtol=0, atol=1e-6)
    assert a["oof_pauc"] == pytest.approx(b["oof_pauc"], abs=1e-9)


@pytest.mark.slow
def test_rerun_skips_finished_folds_and_a_config_change_retrains(tiny_isic2024, tmp_path, capsys):
    _, data = tiny_isic2024
    cfg, _ = run_tiny(tmp_path, data)
    out = Runs.of(cfg).dir / "oof" / cfg.run
    stamps = {f: (out / f"fold{f}.safetensors").stat().st_mtime_ns for f in range(cfg.folds.k)}
    capsys.readouterr()
    run_oof(cfg, data, progress=False)
    assert capsys.readouterr().out.count("skipped") == cfg.folds.k
    assert stamps == {f: (out / f"fold{f}.safetensors").stat().st_mtime_ns for f in range(cfg.folds.k)}
    weights = out / "fold1.safetensors"  # same size, other bytes: only the sha256 tells
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    run_oof(cfg, data, progress=False)
    said = capsys.readouterr().out
    assert said.count("skipped") == cfg.folds.k - 1 and "fold 1: retrained" in said
    assert f"{weights} does not match {out / 'fold1.json'}" in said
    artifacts.read_manifest(out / "fold1.json")  # the retrained set matches its record again
    changed = tiny_oof_config(tmp_path / "runs", "train.lr=0.002")
    run_oof(changed, data, progress=False)
    assert "skipped" not in capsys.readouterr().out


# dropout in the backbone and the head, so a resume that did not restore the RNG would draw other masks
# (AMP is off on CPU whatever train.amp says: make_runtime)
RESUME = "train.epochs=3 model.drop_rate=0.3 model.head_input_dropout=0.2"


@pytest.fixture(scope="module")
def uninterrupted(tiny_isic2024, tmp_path_factory):
    """oof.parquet and test.parquet of a 3-epoch run that nothing interrupted."""
    _, data = tiny_isic2024
    cfg, _ = run_tiny(tmp_path_factory.mktemp("whole"), data, RESUME)
    out = Runs.of(cfg).dir / "oof" / cfg.run
    return {n: pd.read_parquet(out / n) for n in ("oof.parquet", "test.parquet")}


def oof_pipeline(data, overrides, env=None):
    cmd = [sys.executable, str(REPO / "pipelines/oof.py"), "--model", "tiny", "--data", str(data)]
    cmd += ["--set", overrides, "--no-progress"]
    return subprocess.run(cmd, capture_output=True, text=True, env=os.environ | (env or {}), timeout=600)


@pytest.mark.parametrize("stop_after", [1, 2])
@pytest.mark.slow
def test_interrupted_fold_resumes_bit_identical(
    stop_after, uninterrupted, tiny_isic2024, tmp_path, monkeypatch
):
    """Fold 1 stops after epoch 1 (an exception in this process) or after epoch 2 (kill -9 of a pipeline
    process at the stage1.epoch_end fault point); the resumed run's predictions equal the uninterrupted
    run's bit for bit."""
    _, data = tiny_isic2024
    cfg = tiny_oof_config(tmp_path / "runs", RESUME)
    make_folds(cfg, read_metadata(cfg, data, "train"), data)
    out = Runs.of(cfg).dir / "oof" / cfg.run
    if stop_after == 1:
        real_save = train_mod.FoldTrainer.save

        def save_then_die(self):
            real_save(self)
            if self.fold == 1 and self.state.epoch == 1:
                raise KeyboardInterrupt

        monkeypatch.setattr(train_mod.FoldTrainer, "save", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            run_oof(cfg, data, progress=False)
        monkeypatch.setattr(train_mod.FoldTrainer, "save", real_save)
    else:  # fold 0's 3 epochs, then fold 1's epochs 1 and 2: the 5th epoch end
        overrides = f"{TINY['isic2024']} runs_dir={tmp_path / 'runs'} {FAST} {RESUME}"
        res = oof_pipeline(data, overrides, {"FOLDSTACK_FAULT": "stage1.epoch_end:5"})
        assert res.returncode == -9, res.stderr[-3000:]
    assert (out / "fold0.json").exists() and (out / "fold1.ckpt.safetensors").exists()
    assert not (out / "fold1.json").exists() and not (out / "oof.parquet").exists()
    run_oof(cfg, data, progress=False)
    info = json.loads((out / "fold1.json").read_text())
    assert info["resumed_from_epoch"] == stop_after
    assert [r["epoch"] for r in info["log"]] == [1, 2, 3]
    assert not (out / "fold1.ckpt.safetensors").exists()
    for name, want in uninterrupted.items():
        got = pd.read_parquet(out / name)
        assert list(got.columns) == list(want.columns) and got["id"].equals(want["id"])
        for col in [c for c in want.columns if c.startswith("pred")]:
            assert np.array_equal(got[col].to_numpy(), want[col].to_numpy()), (name, col)


@pytest.mark.parametrize("fault", ["stage1.checkpoint:2", "set.commit.recorded:1"])
@pytest.mark.slow
def test_kill_while_writing_a_checkpoint_or_a_fold_set(fault, tiny_isic2024, tmp_path, capsys):
    """kill -9 half way through fold 0's epoch-2 checkpoint: the epoch-1 checkpoint is intact and the
    rerun resumes from it. kill -9 once fold 0's set is recorded but not yet moved into place: the rerun
    completes that commit (which also drops the checkpoint) and skips the fold."""
    _, data = tiny_isic2024
    cfg = tiny_oof_config(tmp_path / "runs")
    make_folds(cfg, read_metadata(cfg, data, "train"), data)
    out = Runs.of(cfg).dir / "oof" / cfg.run
    res = oof_pipeline(
        data, f"{TINY['isic2024']} runs_dir={tmp_path / 'runs'} {FAST}", {"FOLDSTACK_FAULT": fault}
    )
    assert res.returncode == -9, res.stderr[-3000:]
    capsys.readouterr()
    if fault.startswith("stage1.checkpoint"):
        assert list(out.glob(".fold0.ckpt.safetensors.*.tmp"))  # the half-written file
        assert json.loads(load_safetensors_metadata(out / "fold0.ckpt.safetensors")["info"])["epoch"] == 1
        assert not (out / "fold0.json").exists()
    else:
        assert list(out.glob(".fold0.set-*.commit.json"))
    run_oof(cfg, data, progress=False)
    info = artifacts.read_manifest(out / "fold0.json")
    if fault.startswith("stage1.checkpoint"):
        assert info["resumed_from_epoch"] == 1
    else:
        assert "fold 0: done for this config, skipped" in capsys.readouterr().out
        assert info["resumed_from_epoch"] is None
    assert not list(out.glob("*.ckpt.safetensors")) and not list(out.glob(".*"))


def test_predict_refuses_missing_or_mismatching_fold_files_up_front(finished, tmp_path, monkeypatch):
    import shutil

    import foldstack.submit.predict as predict_mod

    cfg, data, out, _ = finished
    root = tmp_path / "bundle"
    run_dir = root / cfg.name / "oof" / cfg.run
    shutil.copytree(out, run_dir)

    def no_prediction(*a, **k):
        raise AssertionError("prediction started before every fold's files were checked")

    monkeypatch.setattr(predict_mod, "predict_folds_on", no_prediction)
    (run_dir / "fold2.json").unlink()
    with pytest.raises(DataError, match=r"fold2\.json is missing") as e:
        predict_mod.cnn_test_predictions(Stage1Run(run_dir), data, progress=False)
    assert "stage-1 run 'tiny'" in str(e.value) and "make oof MODEL=tiny" in str(e.value)
    assert "copy the whole run folder" in str(e.value)
    shutil.copy2(out / "fold2.json", run_dir / "fold2.json")
    raw = bytearray((run_dir / "fold2.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (run_dir / "fold2.safetensors").write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"fold2\.safetensors does not match .*fold2\.json"):
        predict_mod.cnn_test_predictions(Stage1Run(run_dir), data, progress=False)
    shutil.copy2(out / "fold2.safetensors", run_dir / "fold2.safetensors")
    monkeypatch.undo()
    got = predict_mod.cnn_test_predictions(Stage1Run(run_dir), data, progress=False)
    want = pd.read_parquet(out / "test.parquet")
    np.testing.assert_allclose(got["pred"], want["pred"], rtol=0, atol=1e-6)


def load_safetensors_metadata(path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()


def test_nan_loss_stops_naming_fold_and_epoch_and_keeps_checkpoint(tiny_isic2024, tmp_path, monkeypatch):
    _, data = tiny_isic2024
    cfg = tiny_oof_config(tmp_path / "runs")
    make_folds(cfg, read_metadata(cfg, data, "train"), data)
    real_step = train_mod.FoldTrainer._step

    def nan_in_second_epoch(self, batch):
        loss = real_step(self, batch)
        return loss * float("nan") if self.state.epoch == 1 else loss

    monkeypatch.setattr(train_mod.FoldTrainer, "_step", nan_in_second_epoch)
    with pytest.raises(train_mod.TrainingError, match=r"fold 0, epoch 2") as e:
        run_oof(cfg, data, progress=False)
    assert "checkpoint of the last completed epoch is kept" in str(e.value)
    assert (Runs.of(cfg).dir / "oof" / cfg.run / "fold0.ckpt.safetensors").exists()


def test_missing_image_fails_naming_the_id(tiny_isic2024, tmp_path):
    _cfg0, data = tiny_isic2024
    import h5py

    broken = tmp_path / "data"
    broken.mkdir()
    for f in data.iterdir():
        if f.suffix != ".hdf5":
            (broken / f.name).symlink_to(f)
    (broken / "test-image.hdf5").symlink_to(data / "test-image.hdf5")
    with h5py.File(data / "train-image.hdf5") as h:
        ids = sorted(h.keys())
        write_hdf5(broken / "train-image.hdf5", ids[1:], [bytes(h[i][()]) for i in ids[1:]])
    with pytest.raises(DataError, match=ids[0]):
        run_tiny(tmp_path, broken)


def test_best_epoch_option_is_reported_as_optimistic(tiny_isic2024, tmp_path):
    _, data = tiny_isic2024
    _cfg, result = run_tiny(tmp_path, data, "train.checkpoint=best_optimistic")
    assert result["score_is_optimistic"] is True and "OPTIMISTIC" in result["how_scored"]


def test_ema_and_meta_fusion_run(tiny_isic2024, tmp_path):
    _, data = tiny_isic2024
    cfg, result = run_tiny(tmp_path, data, "train.ema_decay=0.9 train.checkpoint=ema model.meta=true")
    assert "EMA" in result["how_scored"]
    info = json.loads((Runs.of(cfg).dir / "oof" / cfg.run / "fold0.json").read_text())
    assert info["meta_encoder"]["numeric"] == ["age_approx", "clin_size_long_diam_mm"]
    # the held-out fold is scored once, after the last epoch, by the OOF prediction of the EMA weights
    assert "ema_valid_pauc" in info["log"][-1] and "valid_pauc" not in info["log"][0]
    assert info["images"]["held_out_scoring"] == 0 and info["images"]["oof_prediction"] > 0


def test_meta_encoder_is_fitted_on_training_rows_only():
    cfg = tiny_oof_config("/tmp/unused")
    tr = pd.DataFrame(
        {
            "age_approx": [30.0, 50.0, np.nan],
            "sex": ["male", "female", None],
            "anatom_site_general": ["head/neck", "head/neck", "head/neck"],
            "clin_size_long_diam_mm": [1.0, 2.0, 3.0],
        }
    )
    va = pd.DataFrame(
        {
            "age_approx": [40.0],
            "sex": ["male"],
            "anatom_site_general": ["lower extremity"],
            "clin_size_long_diam_mm": [2.0],
        }
    )
    enc = MetaEncoder.fit(cfg, cfg.model.meta_columns, tr)
    assert enc.means["age_approx"] == 40.0 and enc.vocab["anatom_site_general"] == ["head/neck"]
    row = enc.transform(va)[0]
    assert row.shape == (enc.size,)
    assert row[-1] == 1.0  # an unseen site lands in the 'missing or unseen' slot
    with pytest.raises(ConfigError, match="train-only"):
        MetaEncoder.fit(cfg, ("tbp_lv_dnn_lesion_confidence",), tr)


def test_epoch_indices_keep_every_positive_and_draw_fresh_negatives():
    y = np.array([1] * 5 + [0] * 200)
    cfg = tiny_oof_config("/tmp/unused", "train.neg_ratio=4")
    n_neg = cfg.train.negatives(5, 200)
    a, b = epoch_indices(y, n_neg, seed=0, epoch=0), epoch_indices(y, n_neg, seed=0, epoch=1)
    assert set(range(5)) <= set(a) and len(a) == 25 and len(set(a)) == 25
    assert set(a) != set(b)
    assert np.array_equal(a, epoch_indices(y, n_neg, seed=0, epoch=0))
    assert tiny_oof_config("/tmp/unused", "train.neg_ratio=0").train.negatives(5, 200) == 200
    assert tiny_oof_config("/tmp/unused", "train.neg_fraction=0.01").train.negatives(5, 200) == 2


def test_flip_views_and_normalisation_are_the_defined_tensors():
    x = torch.randn(2, 3, 5, 5)
    every = [x, x.flip(3), x.flip(2), x.flip(2, 3)]
    every += [v.transpose(2, 3) for v in every]
    for n in range(1, 9):
        views = flip_views(x, n)
        assert len(views) == n and all(torch.equal(a, b) for a, b in zip(views, every, strict=False)), n
    img = torch.randint(0, 256, (3, 6, 6, 3), dtype=torch.uint8)
    for channels_last in (False, True):
        prep = DeviceNormalize((0.48, 0.46, 0.41), (0.23, 0.22, 0.23), torch.device("cpu"), channels_last)
        ref = (img.permute(0, 3, 1, 2).float() - prep.shift) * prep.scale
        out = prep(img)
        assert torch.equal(out, ref), channels_last  # bit for bit: the same ops in the same order
        layout = torch.channels_last if channels_last else torch.contiguous_format
        assert out.is_contiguous(memory_format=layout)
        floats = img.float()
        prep(floats)
        assert torch.equal(floats, img.float())  # normalised in place on its own copy, never the input


def test_unknown_model_and_backbone_errors_list_choices():
    with pytest.raises(ConfigError, match="tiny"):
        load_oof_config("isic2024", "no_such_model")
    cfg = tiny_oof_config("/tmp/unused", "model.backbone=efficientnetv9_b1")
    with pytest.raises(ConfigError, match="unknown timm model"):
        LesionNet(cfg.model)


def test_pretrained_true_without_weights_says_how_to_provide_them(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    cfg = tiny_oof_config(tmp_path, "model.pretrained=true")
    with pytest.raises(ConfigError, match="pretrained_file"):
        resolve_weights(cfg.model)
    assert resolve_weights(tiny_oof_config(tmp_path, "model.pretrained=auto").model) is None


def test_pretrained_file_is_loaded(tmp_path):
    cfg = tiny_oof_config(tmp_path)
    donor = LesionNet(cfg.model).backbone.state_dict()
    donor = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in donor.items()}
    save_file(donor, str(tmp_path / "w.safetensors"))
    cfg = tiny_oof_config(
        tmp_path, f"model.pretrained=true model.pretrained_file={tmp_path / 'w.safetensors'}"
    )
    model = LesionNet(cfg.model, weights=resolve_weights(cfg.model))
    assert torch.all(model.backbone.conv_stem.weight == 0.5)


@pytest.mark.parametrize("name", available("models"))
def test_every_model_config_smoke_runs_with_the_tiny_backbone(name, request, tmp_path):
    comp = model_competition(name) or "isic2024"  # a published setup names its competition
    _, data = request.getfixturevalue(f"tiny_{comp}")
    extra = (
        "model.backbone=test_efficientnet model.pretrained=false train.epochs=1 "
        f"train.max_train_batches=2 predict.tta=1 data.img_size=32 runs_dir={tmp_path / 'runs'}"
    )
    cfg = load_oof_config(comp, name, f"{TINY[comp]} {extra}")
    make_folds(cfg, read_metadata(cfg, data, "train"), data)
    result = run_oof(cfg, data, progress=False)
    if cfg.multiclass:
        assert 0 <= result["oof_macro_auc"] <= 1 and 0 <= result["oof_balanced_accuracy"] <= 1
    else:
        assert 0 <= result["oof_pauc"] <= 0.2 and 0 <= result["oof_auc"] <= 1


@pytest.mark.slow
def test_ddp_on_cpu_with_gloo_gathers_each_id_once(tiny_isic2024, tmp_path):
    _, data = tiny_isic2024
    overrides = f"{TINY['isic2024']} runs_dir={tmp_path / 'runs'} {FAST}"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(REPO / "pipelines/oof.py"),
        "--model",
        "tiny",
        "--data",
        str(data),
        "--set",
        overrides,
        "--no-progress",
    ]
    # CPU + gloo even on a GPU machine: this test checks the gather, not NCCL
    env = os.environ | {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    cfg = tiny_oof_config(tmp_path / "runs")
    out = Runs.of(cfg).dir / "oof" / cfg.run
    oof = pd.read_parquet(out / "oof.parquet")
    assert len(oof) == len(read_metadata(cfg, data, "train")) and oof["id"].is_unique
    m = json.loads((out / "metrics.json").read_text())
    assert m["runtime"]["world_size"] == 2


def test_frozen_backbone_keeps_its_weights(tiny_isic2024, tmp_path):
    _, data = tiny_isic2024
    cfg, _ = run_tiny(tmp_path, data, "model.freeze_backbone=true train.epochs=1")
    from safetensors.torch import load_file

    trained = load_file(str(Runs.of(cfg).dir / "oof" / cfg.run / "fold0.safetensors"))
    torch.manual_seed(cfg.train.seed + 0)
    fresh = LesionNet(cfg.model).state_dict()
    conv = "backbone.conv_stem.weight"
    assert torch.equal(trained[conv], fresh[conv])  # same init, never updated
    assert not torch.equal(trained["head.0.weight"], fresh["head.0.weight"])


def test_adam_plateau_and_auto_pos_weight_run(tiny_isic2024, tmp_path):
    _, data = tiny_isic2024
    cfg, result = run_tiny(
        tmp_path, data, "train.optimizer=adam train.scheduler=plateau train.pos_weight=auto"
    )
    info = json.loads((Runs.of(cfg).dir / "oof" / cfg.run / "fold0.json").read_text())
    assert info["pos_weight"] == pytest.approx(
        cfg.train.neg_ratio
    )  # every epoch shows neg_ratio negatives per positive
    assert 0 <= result["oof_pauc"] <= 0.2


def test_inner_split_takes_whole_patients_of_the_training_folds_only(tiny_isic2024, tmp_path):
    from foldstack.stage1.inputs import fold_datasets, load_inputs

    _, data = tiny_isic2024
    cfg = tiny_oof_config(tmp_path / "runs", "train.inner_val_fraction=0.25")
    make_folds(cfg, read_metadata(cfg, data, "train"), data)
    inp = load_inputs(cfg, data, make_runtime(cfg, progress=False))
    fd = fold_datasets(cfg, inp, 1)
    patient = inp.train.set_index(cfg.columns.id)[cfg.columns.group]
    tr, inner, va = set(fd.train.ids), set(fd.inner.ids), set(fd.valid.ids)
    assert inner and not (inner & tr) and not (inner & va)
    assert tr | inner == set(inp.folds.loc[inp.folds["fold"] != 1, "id"])
    assert not set(patient[list(inner)]) & set(patient[list(tr)])  # whole patients


def test_best_inner_with_early_stopping(tiny_isic2024, tmp_path, monkeypatch):
    _, data = tiny_isic2024
    real = train_mod.FoldTrainer.evaluate

    def rising_inner_loss(self, model, prefix, ds=None):
        if prefix == "inner_":  # epoch 1 is the best, later epochs get worse
            return {"inner_loss": 0.1 * (self.state.epoch + 1)}
        return real(self, model, prefix, ds)

    monkeypatch.setattr(train_mod.FoldTrainer, "evaluate", rising_inner_loss)
    cfg, result = run_tiny(
        tmp_path,
        data,
        "train.epochs=5 train.inner_val_fraction=0.25 "
        "train.checkpoint=best_inner train.early_stopping_patience=2",
    )
    info = json.loads((Runs.of(cfg).dir / "oof" / cfg.run / "fold0.json").read_text())
    assert info["stopped_early_after_epoch"] == 3 and len(info["log"]) == 3
    assert info["checkpoint"].startswith("best epoch 1 by inner-split loss") and info["n_inner_rows"] > 0
    assert result["score_is_optimistic"] is False


def test_best_inner_needs_an_inner_split():
    with pytest.raises(ConfigError, match="inner_val_fraction"):
        tiny_oof_config("/tmp/unused", "train.checkpoint=best_inner")


def test_a_model_config_overrides_only_what_differs_from_its_base():
    base = load_oof_config("isic2024", "mobilenetv2_128")
    frozen = load_oof_config("isic2024", "mobilenetv2_128_frozen")
    assert frozen.model.freeze_backbone and not base.model.freeze_backbone
    assert frozen.model.backbone == base.model.backbone and frozen.train == base.train
    assert frozen.run == "mobilenetv2_128_frozen"


def test_circular_base_is_an_error(tmp_path, monkeypatch):
    import foldstack.config as config_mod

    (tmp_path / "models").mkdir()
    (tmp_path / "models/a.yaml").write_text("base: b\n")
    (tmp_path / "models/b.yaml").write_text("base: a\n")
    monkeypatch.setattr(config_mod, "CONFIG_ROOT", tmp_path)
    from foldstack.stage1.config import model_sources

    with pytest.raises(ConfigError, match="circular base chain a -> b -> a"):
        model_sources("a")


def test_head_input_dropout_comes_first():
    cfg = load_oof_config("isic2020", "effnet_b0_frozen", "model.backbone=test_efficientnet")
    head = LesionNet(cfg.model).head
    assert isinstance(head[0], torch.nn.Dropout) and head[0].p == 0.4
    assert [type(m).__name__ for m in head] == ["Dropout", "Linear", "ReLU", "Linear"]
