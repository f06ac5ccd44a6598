"""make bench-oof's throughput record: training and test prediction, each end to end against the model
alone, on the tiny competition (the figures themselves are measured by the bench, not asserted here)."""

from foldstack.data.metadata import read_metadata
from foldstack.folds import make_folds
from foldstack.stage1.bench import bench_throughput, throughput_line
from tests.test_oof import tiny_oof_config


def test_throughput_record_prints_training_and_test_prediction_ratios(tiny_isic2024, tmp_path):
    _, data = tiny_isic2024
    cfg = tiny_oof_config(tmp_path / "runs")
    make_folds(cfg, read_metadata(cfg, data, "train"), data)
    r = bench_throughput(cfg, data, steps=2, warmup=1, rounds=2)
    for key in (
        "train_images_per_s_end_to_end",
        "test_prediction_images_per_s",
        "inference_images_per_s_model_only",
        "test_prediction_first_pass_images_per_s",
    ):
        assert r[key] > 0, key
    ratio = r["test_prediction_images_per_s"] / r["inference_images_per_s_model_only"]
    assert abs(r["inference_ratio"] - ratio) < 0.01
    line = throughput_line(r)
    assert r["inference_rounds"] == 2 and "best of 2 alternating rounds" in line
    assert "test prediction (batch" in line and f"ratio {r['inference_ratio']:.3f}" in line
