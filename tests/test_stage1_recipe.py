"""The winners' stage-1 recipe options: disjoint negative partitions and positive over-sampling, the
backbone learning-rate multiplier, staged unfreezing, and auxiliary diagnosis heads (tiny model, CPU)."""

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from foldstack.data.metadata import read_metadata
from foldstack.errors import ConfigError, DataError
from foldstack.folds import make_folds
from foldstack.runs import Runs
from foldstack.stage1.config import load_oof_config
from foldstack.stage1.data import epoch_indices
from foldstack.stage1.model import LesionNet
from foldstack.stage1.optim import EpochSampler, build_optimizer, build_scheduler
from foldstack.stage1.run import run_oof
from tests.conftest import TINY
from tests.test_oof import run_tiny, tiny_oof_config


def test_partitions_show_every_negative_once_per_cycle():
    y = np.r_[np.ones(7), np.zeros(95)]
    neg = set(np.flatnonzero(y == 0))
    parts = [epoch_indices(y, 20, seed=3, epoch=e, sampling="partition") for e in range(5)]  # 5 parts
    shown = [set(p) - set(range(7)) for p in parts]
    assert all(set(range(7)) <= set(p) for p in parts)
    assert set().union(*shown) == neg and sum(len(s) for s in shown) == len(neg)  # disjoint, complete
    assert all(len(s) == 19 for s in shown)  # near-equal parts: 95 / 5
    nxt = [
        set(epoch_indices(y, 20, seed=3, epoch=e, sampling="partition")) - set(range(7)) for e in range(5, 10)
    ]
    assert set().union(*nxt) == neg and nxt != shown  # the next cycle: a new permutation, again complete
    # random sampling leaves negatives unseen over the same epochs; the sampler reports the share
    s_rand, s_part = EpochSampler(y, 20, 3), EpochSampler(y, 20, 3, sampling="partition")
    assert s_part.negatives_seen(5) == 1.0 and s_rand.negatives_seen(5) < 1.0
    # positives over-sampled: each shown k times; random sampling unchanged by the new arguments
    over = epoch_indices(y, 20, seed=3, epoch=0, pos_repeat=3)
    assert all((over == i).sum() == 3 for i in range(7)) and len(over) == 41
    assert np.array_equal(epoch_indices(y, 20, 3, 0), epoch_indices(y, 20, 3, 0, "random", 1))


def test_backbone_learning_rate_multiplier_through_timm_param_groups(tmp_path):
    for sched in ("cosine", "plateau"):
        cfg = tiny_oof_config(tmp_path, f"train.backbone_lr_mult=0.01 train.lr=1e-3 train.scheduler={sched}")
        model = LesionNet(cfg.model)
        opt = build_optimizer(model, cfg.train)
        scheduler = build_scheduler(opt, cfg.train, steps_per_epoch=10)
        if sched == "cosine":
            scheduler.step_update(3)
        backbone = {id(p) for p in model.backbone.parameters()}
        for g in opt.param_groups:
            in_backbone = {id(p) in backbone for p in g["params"]}
            assert len(in_backbone) == 1, "a group mixes backbone and head parameters"
        lrs = {next(iter({id(p) in backbone for p in g["params"]})): g["lr"] for g in opt.param_groups}
        assert lrs[True] == pytest.approx(0.01 * lrs[False]), sched
        decays = sorted({g["weight_decay"] for g in opt.param_groups})
        assert decays == [0.0, cfg.train.weight_decay]  # biases and norms still without decay
        n_params = sum(len(g["params"]) for g in opt.param_groups)
        assert n_params == len(list(model.parameters()))


@pytest.fixture(scope="module")
def recipe_run(tiny_isic2024, tmp_path_factory):
    _, data = tiny_isic2024
    extra = (
        "train.freeze_epochs=1 train.epochs=2 train.backbone_lr_mult=0.1 train.neg_sampling=partition "
        "train.pos_oversample=2 model.aux_targets=[iddx_1,iddx_2] train.aux_loss_weight=0.5"
    )
    return (*run_tiny(tmp_path_factory.mktemp("recipe"), data, extra), data)


def test_every_recipe_option_trains_and_predicts_the_target(recipe_run):
    cfg, result, _ = recipe_run
    run = Runs.of(cfg).stage1(cfg.run)
    assert 0 <= result["oof_pauc"] <= 0.2 and 0 <= result["oof_auc"] <= 1
    # every negative of the training folds is seen over the epochs when one part covers them all or
    # two parts are walked; the share is reported per fold
    assert all(0 < s <= 1 for s in result["negatives_seen_share"])
    record = run.read_metrics()
    assert record["negatives_seen_share"] == result["negatives_seen_share"]
    for f in range(cfg.folds.k):
        state = load_file(str(run.fold_weights(f)))
        assert not [k for k in state if k.startswith("aux_head.")]  # the fold's weights: the target's model
    oof = pd.read_parquet(run.oof)
    assert oof["pred"].between(0, 1).all()


def test_frozen_epochs_leave_the_backbone_and_its_statistics_untouched(tiny_isic2024, tmp_path):
    from foldstack.stage1 import train as train_mod

    _, data = tiny_isic2024
    seen: dict[int, dict] = {}
    real = train_mod.FoldTrainer.train_epoch

    def spy(self, epoch):
        before = {k: v.clone() for k, v in self.raw.backbone.state_dict().items()}
        row = real(self, epoch)
        after = self.raw.backbone.state_dict()
        seen[epoch] = {k: torch.equal(before[k], after[k]) for k in before}
        return row

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_mod.FoldTrainer, "train_epoch", spy)
        run_tiny(tmp_path, data, "train.freeze_epochs=1 train.epochs=2 folds.k=2 train.max_train_batches=3")
    assert all(seen[0].values())  # epoch 1: weights and BatchNorm running statistics unchanged
    assert not all(seen[1].values())  # epoch 2: the backbone trains


def test_aux_targets_need_the_iddx_columns(tiny_isic2020, tmp_path):
    _, data = tiny_isic2020
    cfg = load_oof_config(
        "isic2020",
        "tiny",
        f"{TINY['isic2020']} runs_dir={tmp_path} data.img_size=32 model.aux_targets=[iddx_2]",
    )
    make_folds(cfg, read_metadata(cfg, data, "train"), data)
    with pytest.raises(DataError, match="iddx_2, not columns of the train metadata"):
        run_oof(cfg, data, progress=False)


def test_bad_recipe_settings_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="test-side columns"):
        tiny_oof_config(tmp_path, "model.aux_targets=[age_approx]")
    with pytest.raises(ConfigError, match=r"freeze_epochs=2 >= train\.epochs=2"):
        tiny_oof_config(tmp_path, "train.freeze_epochs=2")
    with pytest.raises(ConfigError, match="backbone_lr_mult"):
        tiny_oof_config(tmp_path, "train.backbone_lr_mult=0")


def test_extra_rows_train_every_fold_and_are_never_scored(tiny_isic2024, tiny_isic2020, tmp_path):
    _, data = tiny_isic2024
    _, extra_dir = tiny_isic2020
    extra = f"'data.extra=[{{dir: {extra_dir}, layout: isic2020, columns: {{image_name: isic_id}}}}]'"
    cfg, _ = run_tiny(tmp_path, data, f"{extra} train.epochs=1 train.max_train_batches=2")
    run = Runs.of(cfg).stage1(cfg.run)
    n_extra = len(read_metadata(load_oof_config("isic2020", "tiny"), extra_dir, "train"))
    train = read_metadata(cfg, data, "train")
    for f in range(cfg.folds.k):
        rec = pd.read_json(run.fold_record(f), typ="series")
        assert rec["n_extra_rows"] == n_extra
        assert rec["n_train_rows"] == (pd.read_csv(Runs.of(cfg).folds_csv)["fold"] != f).sum() + n_extra
    oof = pd.read_parquet(run.oof)
    assert set(oof["id"]) == set(train[cfg.columns.id])  # the OOF: the competition's rows only
    # the extra rows' content is part of the run's identity: without them the folds are not reused
    from foldstack.stage1.inputs import config_sha, load_inputs
    from foldstack.stage1.runtime import make_runtime

    rt = make_runtime(cfg, progress=False)
    plain = tiny_oof_config(tmp_path / "runs", "train.epochs=1 train.max_train_batches=2")
    assert config_sha(cfg, load_inputs(cfg, data, rt)) != config_sha(plain, load_inputs(plain, data, rt))


def test_extra_rows_that_are_train_ids_are_refused(tiny_isic2024, tmp_path):
    _, data = tiny_isic2024
    with pytest.raises(DataError, match=r"data.extra .*id\(s\) are also isic2024 train ids: ISIC_"):
        run_tiny(tmp_path, data, f"'data.extra=[{{dir: {data}}}]' train.epochs=1")
    with pytest.raises(DataError, match="needs the columns isic_id"):
        bad = f"'data.extra=[{{dir: {data}, columns: {{isic_id: other}}}}]'"
        run_tiny(tmp_path, data, f"{bad} train.epochs=1")
