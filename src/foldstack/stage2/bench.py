"""Stage-2 speed and memory on a full-size synthetic table (real ISIC 2024 schema, no images)."""

from __future__ import annotations

import resource
import time

import numpy as np
import pandas as pd

from foldstack import metrics
from foldstack.folds import assign_folds
from foldstack.stage2.config import StackConfig
from foldstack.stage2.features import build_features, category_levels, check_leaks, with_derived
from foldstack.stage2.models import fit_folds
from foldstack.synth.isic2024 import metadata_frame
from foldstack.synth.lesions import _ids, make_lesions, make_patients


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def synthetic_table(cfg: StackConfig, rows: int, seed: int = 0) -> pd.DataFrame:
    """`rows` lesions of the real train schema, ~385 per patient as in ISIC 2024, 0.1% positives."""
    s = cfg.synthetic.model_copy(
        update={"lesions_per_patient": 1.3 * rows / 1040, "seed": seed, "pos_rate": 0.001}
    )
    rng = np.random.default_rng(seed)
    taken: set[str] = set()
    les = make_lesions(s, rng, make_patients(s, rng, 1040, taken)).iloc[:rows].reset_index(drop=True)
    return metadata_frame(cfg, les, _ids(rng, len(les), "ISIC", taken), rng, taken)


def bench_stack(cfg: StackConfig, rows: int = 400_000) -> dict:
    t0 = time.perf_counter()
    train = synthetic_table(cfg, rows)
    gen_s = time.perf_counter() - t0
    c = cfg.columns
    y = train[c.target].to_numpy()
    # a stand-in CNN probability, so the matrix has the stage-1 columns too
    cnn = {"cnn": np.clip(0.02 + 0.3 * y + np.random.default_rng(1).normal(0, 0.1, len(y)), 0, 1)}
    cats = [k for k in train.columns if cfg.table.columns.get(k) == "cat"]
    t1 = time.perf_counter()
    derived, extra = with_derived(cfg.features, train)
    X = build_features(cfg, cfg.features, train, cnn, category_levels([derived], cats + extra))
    feat_s = time.perf_counter() - t1
    feat_peak = peak_rss_gb()
    t_leak = time.perf_counter()
    check_leaks(X, y, cfg.table.train_only)
    leak_s = time.perf_counter() - t_leak
    folds = assign_folds(train[c.id], train[c.group], train[c.target], cfg.folds.k, cfg.folds.seed)
    spec = next(m for m in cfg.models if m.kind == "lightgbm")
    fold = folds["fold"].to_numpy()
    t2 = time.perf_counter()
    oof, _, _ = fit_folds(spec, {}, X, y, fold, X.iloc[:1000], cfg.tuning.seed)
    fit_s = time.perf_counter() - t2
    every_row = spec.model_copy(update={"neg_ratio": None, "seeds": (0,)})
    t3 = time.perf_counter()
    oof_all, _, _ = fit_folds(every_row, {}, X, y, fold, X.iloc[:1000], cfg.tuning.seed)
    fit_all_s = time.perf_counter() - t3

    return {
        "rows": len(train),
        "positives": int(y.sum()),
        "patients": int(train[c.group].nunique()),
        "features": X.shape[1],
        "table_seconds": round(gen_s, 1),
        "feature_seconds": round(feat_s, 1),
        "leak_check_seconds": round(leak_s, 1),
        "feature_peak_rss_gb": round(feat_peak, 2),
        "fit_model": spec.name,
        "fit_params": {
            "n_estimators": spec.n_estimators,
            "neg_ratio": spec.neg_ratio,
            "seeds": list(spec.seeds),
        },
        "fit_5fold_seconds": round(fit_s, 1),
        "oof_pauc": metrics.pauc(y, oof),
        "fit_5fold_every_row_one_seed_seconds": round(fit_all_s, 1),
        "oof_pauc_every_row": metrics.pauc(y, oof_all),
        "peak_rss_gb": round(peak_rss_gb(), 2),
    }
