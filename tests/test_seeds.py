"""Several seeds per stage-1 model (`make oof MODEL=tiny SEEDS=0,1`): one run per seed and their per-id
mean as one more stage-1 run, which stage 2, make predict and the kernel read like any other."""

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from foldstack import artifacts
from foldstack import prediction_tables as pt
from foldstack.commands import stage1 as commands
from foldstack.errors import ConfigError, DataError
from foldstack.runs import Runs, bundle_runs
from foldstack.stage1.seeds import check_members_agree, finish_seeds, parse_seeds, seed_members, seed_plan
from tests.conftest import TINY

FAST = "data.img_size=32 train.epochs=1 train.max_train_batches=2 predict.tta=1 folds.k=2"
SEEDS = "1,0"  # given out of order: the runs are tiny_s0 and tiny_s1 all the same


def overrides(runs) -> str:
    return f"{TINY['isic2024']} runs_dir={runs} {FAST}"


def oof(runs, data, seeds=SEEDS, extra=""):
    return commands.oof("isic2024", "tiny", f"{overrides(runs)} {extra}", str(data), False, seeds=seeds)


@pytest.fixture(scope="module")
def seeded(tiny_isic2024, tmp_path_factory):
    """(runs tree, data dir): tiny_s0, tiny_s1 and their mean tiny; read-only (copy it to change it)."""
    _, data = tiny_isic2024
    runs = tmp_path_factory.mktemp("seeds") / "runs"
    oof(runs, data)
    return Runs(runs, "isic2024"), data


def frames(run):
    return pd.read_parquet(run.oof).set_index("id"), pd.read_parquet(run.test).set_index("id")


@pytest.mark.slow
def test_mean_run_is_the_per_id_mean_of_the_seed_runs(seeded):
    tree, _ = seeded
    mean, s0, s1 = tree.stage1("tiny"), tree.stage1("tiny_s0"), tree.stage1("tiny_s1")
    (oof, test), (oof0, test0), (oof1, test1) = frames(mean), frames(s0), frames(s1)
    assert set(oof.index) == set(oof0.index) == set(oof1.index) and oof.index.is_unique
    np.testing.assert_allclose(oof["pred"], (oof0.loc[oof.index, "pred"] + oof1.loc[oof.index, "pred"]) / 2)
    assert (oof["fold"] == oof0.loc[oof.index, "fold"]).all()
    assert (oof["target"] == oof0.loc[oof.index, "target"]).all()
    assert not np.allclose(oof0.loc[oof.index, "pred"], oof1.loc[oof.index, "pred"])  # seeds differ
    for col in ("pred", "pred_fold0", "pred_fold1"):
        np.testing.assert_allclose(test[col], (test0.loc[test.index, col] + test1.loc[test.index, col]) / 2)
    m = mean.read_metrics()  # the set checks out against its manifest
    assert {"oof.parquet", "test.parquet", "config.yaml", "report"} <= set(m["set_members"])
    assert m["seeds"] == [0, 1] and [e["run"] for e in m["seed_runs"]] == ["tiny_s0", "tiny_s1"]
    for entry, member in zip(m["seed_runs"], (s0, s1), strict=True):
        theirs = member.read_metrics()
        assert entry["config_sha"] == theirs["config_sha"]
        assert entry["fold_records_sha256"] == theirs["fold_records_sha256"]
        assert entry["oof_pauc"] == theirs["oof_pauc"]
    y, p = oof["target"].to_numpy(), oof["pred"].to_numpy()
    assert m["oof_pauc"] == pytest.approx(pt.headline(saved_config(mean), y, p)["pauc"])
    assert m["folds_sha256"] == s0.read_metrics()["folds_sha256"]
    assert [saved_config(r).train.seed for r in (s0, s1)] == [0, 1] and saved_config(mean).run == "tiny"
    assert not mean.fold_files()  # the mean holds no weights: prediction runs the seed runs' fold models


def saved_config(run):
    from foldstack.stage1.config import OofConfig
    from foldstack.submit.predict import run_config

    return run_config(OofConfig, run)


@pytest.mark.slow
def test_stage2_reads_the_mean_run_and_stacks_it_for_its_seed_runs(seeded):
    from foldstack.stage2.config import load_stack_config
    from foldstack.stage2.inputs import build_matrices

    tree, data = seeded
    cfg = load_stack_config("isic2024", "lgb_xgb_cb", f"{TINY['isic2024']} runs_dir={tree.root} folds.k=2")
    m, s1, _ = build_matrices(cfg, data, ["tiny"])
    oof = pd.read_parquet(tree.stage1("tiny").oof).set_index("id")
    assert m.stage1 == ["tiny"] and s1[0].name == "tiny"
    np.testing.assert_allclose(s1[0].oof, oof.loc[m.train_ids, "pred"])
    every, _, _ = build_matrices(cfg, data, None)  # models_in: all - the mean stands for its seed runs
    assert every.stage1 == ["tiny"]
    both, _, _ = build_matrices(cfg, data, ["tiny", "tiny_s1"])  # named, a seed run is stacked too
    assert both.stage1 == ["tiny", "tiny_s1"]


@pytest.mark.slow
def test_rerun_does_nothing(seeded, capsys):
    tree, data = seeded
    mean, s1 = tree.stage1("tiny"), tree.stage1("tiny_s1")
    files = [mean.metrics, mean.oof, mean.test, mean.config, s1.metrics, *s1.fold_files()]
    stamps = {p: p.stat().st_mtime_ns for p in files}
    capsys.readouterr()
    oof(tree.root, data)
    said = capsys.readouterr().out
    assert said.count("done for this config, skipped") == 2 * 2  # 2 seeds x 2 folds
    assert said.count("every fold done and already assembled") == 2
    assert "every seed run done and their mean already assembled" in said and "mean of 2" not in said
    assert stamps == {p: p.stat().st_mtime_ns for p in files}


@pytest.mark.slow
def test_the_mean_is_reassembled_only_when_a_seed_run_changed(seeded, tmp_path, capsys):
    """On a copy of the runs tree (the stage-1 config hash covers runs_dir, so the copy's seed runs are
    judged by their files alone): an unfinished seed run leaves the mean alone; a changed one rewrites it."""
    tree, _ = seeded
    runs = tmp_path / "runs"
    shutil.copytree(tree.root, runs)
    copy = Runs(runs, "isic2024")
    mean, s1 = copy.stage1("tiny"), copy.stage1("tiny_s1")
    plan = seed_plan("isic2024", "tiny", overrides(runs), SEEDS)
    before = mean.metrics.read_bytes()
    finish_seeds(plan)
    assert "already assembled" in capsys.readouterr().out and mean.metrics.read_bytes() == before
    record = s1.fold_record(1).read_bytes()
    s1.fold_record(1).unlink()
    assert finish_seeds(plan) == {"missing_seed_runs": ["tiny_s1"]}
    assert "seed run(s) tiny_s1 not assembled yet" in capsys.readouterr().out
    assert mean.metrics.read_bytes() == before
    s1.fold_record(1).write_bytes(record)
    body = s1.read_metrics()
    artifacts.write_json(s1.metrics, body | {"note": "reassembled"})  # still matches its members
    result = finish_seeds(plan)
    assert "run tiny: mean of 2 seed runs" in capsys.readouterr().out
    assert result["seed_runs_sha256"] != json.loads(before)["seed_runs_sha256"]
    assert mean.read_metrics()["seed_runs_sha256"] == result["seed_runs_sha256"]
    np.testing.assert_allclose(frames(mean)[0]["pred"], frames(tree.stage1("tiny"))[0]["pred"], atol=1e-12)


@pytest.mark.slow
def test_kernel_path_predicts_with_every_seed_runs_fold_models(seeded, tmp_path):
    """The bundle copies the seed runs beside the mean; make predict / the kernel's stage 1 reproduces the
    mean's test predictions from their fold weights; a seed run retrained alone is refused."""
    from foldstack.submit.bundle import copy_stage1
    from foldstack.submit.predict import cnn_test_predictions

    tree, data = seeded
    inside = bundle_runs(tmp_path / "bundle", "isic2024")
    copy_stage1(tree.stage1("tiny"), inside)
    assert sorted(p.name for p in inside.stage1_root.iterdir()) == ["tiny", "tiny_s0", "tiny_s1"]
    assert [m.name for m in seed_members(inside.stage1("tiny"))] == ["tiny_s0", "tiny_s1"]
    got = cnn_test_predictions(inside.stage1("tiny"), data, progress=False)
    want = pd.read_parquet(tree.stage1("tiny").test)
    assert list(got.columns) == list(want.columns) and got["id"].tolist() == want["id"].tolist()
    for col in want.columns[1:]:
        np.testing.assert_allclose(got[col], want[col], rtol=0, atol=1e-6)
    record = inside.stage1("tiny_s1").fold_record(0)
    body = json.loads(record.read_text())
    artifacts.write_json(record, body | {"epochs": body["epochs"] + 1})
    with pytest.raises(DataError, match=r"seed run tiny_s1 .*differ from those the mean run tiny"):
        cnn_test_predictions(inside.stage1("tiny"), data, progress=False)


def test_bad_seeds_are_refused_before_any_work(tmp_path):
    assert parse_seeds("2, 0,1") == [0, 1, 2]
    for bad, said in (
        ("a", "'a' is not a seed"),
        ("0,,1", "'' is not a seed"),
        ("-1", "'-1' is not a seed"),
        ("0,1,1", "seed(s) 1 given twice"),
        ("1,01", "seed(s) 1 given twice"),
    ):
        with pytest.raises(ConfigError, match=re.escape(said)):
            oof(tmp_path / "runs", tmp_path / "no-data", seeds=bad)
    assert not (tmp_path / "runs").exists()


def test_a_single_seed_run_in_the_mean_folder_is_refused(tmp_path):
    mean = Runs(tmp_path / "runs", "isic2024").stage1("tiny")
    mean.dir.mkdir(parents=True)
    mean.fold_record(0).write_text("{}")
    with pytest.raises(ConfigError, match=r"holds the fold sets of a single-seed run .*run=<name>"):
        seed_plan("isic2024", "tiny", overrides(tmp_path / "runs"), "0,1")
    plan = seed_plan("isic2024", "tiny", f"{overrides(tmp_path / 'runs')} run=b1", "0,1")
    assert [c.run for c in plan.configs] == ["b1_s0", "b1_s1"] and plan.base.run == "b1"
    assert [c.train.seed for c in plan.configs] == [0, 1]


def _member(folds_sha="abc", ids=("a", "b", "c"), folds=(0, 1, 0), test_ids=("t1", "t2")):
    target = [{"a": 0, "b": 1}.get(i, 0) for i in ids]
    oof = pd.DataFrame({"id": list(ids), "fold": list(folds), "target": target, "pred": 0.5})
    return {"folds_sha256": folds_sha}, oof, pd.DataFrame({"id": list(test_ids), "pred": 0.5})


def test_seed_runs_on_other_folds_or_ids_are_refused_naming_the_run_and_the_id():
    names = ["tiny_s0", "tiny_s1"]
    check_members_agree(names, [_member(), _member(ids=("c", "a", "b"), folds=(0, 0, 1))])  # order is free
    cases = (
        (_member(folds_sha="other"), r"seed run tiny_s1: made on folds sha256 other, tiny_s0 on abc"),
        (
            _member(ids=("a", "b", "d")),
            r"seed run tiny_s1: its OOF ids differ .* e\.g\. id c, only in tiny_s0",
        ),
        (
            _member(folds=(0, 1, 1)),
            r"seed run tiny_s1: id c has fold 1, target 0 there and fold 0, target 0 in tiny_s0",
        ),
        (_member(ids=("a", "b", "b")), r"seed run tiny_s1: id b appears twice in its OOF file"),
        (_member(test_ids=("t1", "t3")), r"seed run tiny_s1: its test ids differ .* id t2, only in tiny_s0"),
    )
    for other, said in cases:
        with pytest.raises(DataError, match=said):
            check_members_agree(names, [_member(), other])
