"""Stage-2 features from the stage-1 runs, chosen per run (features.cnn_stats):

- prob: the OOF (train) / fold-mean (test) probability, `cnn_<run>`;
- logit: log(p / (1 - p)), p clipped to [1e-7, 1 - 1e-7], `cnn_<run>_logit`;
- rank / ratio: its percentile rank within the patient and its ratio to the patient mean,
  `cnn_<run>_patient_rank` / `cnn_<run>_patient_ratio`;
- z: the logit z-scored within the patient (`cnn_<run>_patient_z`) and within every features.group_norm
  group (`cnn_<run>__z_by_<keys>`): how a lesion's CNN score stands among its patient's lesions.
features.cnn_cross adds the mean, min, max and std of the probability over the stage-1 runs
(`cnn__runs_<stat>`). features.cnn_noise is not a column: it is Gaussian noise added to these columns
while a model fits (stage2.models), never when it predicts. As every group statistic, these use the
frame's own rows only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from foldstack.errors import ConfigError
from foldstack.stage2.groups import Grouping, grid32

DEFAULT_STATS = ("prob", "rank", "ratio")
CROSS_PREFIX = "cnn__runs_"
CLIP = 1e-7


def logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), CLIP, 1 - CLIP)
    return grid32(np.log(q) - np.log1p(-q))


def stats_for(fc, name: str, runs: list[str]) -> tuple[str, ...]:
    """The statistics of feature `name` (a run, or <run>_<class> multiclass): features.cnn_stats, or
    its run's entry when cnn_stats maps runs to statistics (a run left out gets the default)."""
    chosen = fc.cnn_stats
    if not isinstance(chosen, dict):
        return tuple(chosen)
    run = next(
        (r for r in sorted(runs, key=len, reverse=True) if name == r or name.startswith(f"{r}_")), name
    )
    return tuple(chosen.get(run, DEFAULT_STATS))


def check_cnn_config(fc, runs: list[str], multiclass: bool) -> None:
    """Refused before any fitting: a cnn_stats entry for a run that is not stacked, cnn_cross with fewer
    than two runs or on a multiclass target."""
    if isinstance(fc.cnn_stats, dict):
        unknown = [r for r in fc.cnn_stats if r not in runs]
        if unknown:
            raise ConfigError(
                f"features.cnn_stats names stage-1 run(s) {unknown} that this stack does not stack; "
                f"its runs: {', '.join(runs) or 'none'}"
            )
    if fc.cnn_cross and (len(runs) < 2 or multiclass):
        why = "a multiclass target (per-class statistics are not built)" if multiclass else f"runs {runs}"
        raise ConfigError(
            f"features.cnn_cross needs at least two stage-1 runs of a binary target; this stack has {why} "
            f"(set features.cnn_cross=false or stack more runs with MODELS=a,b)"
        )


def cnn_frames(
    fc, cnn: dict[str, np.ndarray], runs: list[str], patient: Grouping, groups: list[tuple[str, Grouping]]
) -> list[pd.DataFrame]:
    """The chosen columns of each stage-1 feature (values in the frame's sorted row order), then the
    cross-run statistics."""
    out = []
    for name, s in cnn.items():
        stats = stats_for(fc, name, runs)
        cols: dict[str, np.ndarray] = {}
        lg = logit(s) if {"logit", "z"} & set(stats) else None
        if "prob" in stats:
            cols[f"cnn_{name}"] = s
        if "rank" in stats:
            cols[f"cnn_{name}_patient_rank"] = patient.rank(s)
        if "ratio" in stats:
            cols[f"cnn_{name}_patient_ratio"] = patient.ratio(s)
        if "logit" in stats:
            cols[f"cnn_{name}_logit"] = lg
        if "z" in stats:
            cols[f"cnn_{name}_patient_z"] = patient.zscore(lg)
            for tag, g in groups:
                cols[f"cnn_{name}__z_by_{tag}"] = g.zscore(lg)
        out.append(pd.DataFrame(cols))
    if fc.cnn_cross and cnn:
        p = np.column_stack(list(cnn.values()))
        lo = p.min(axis=1)
        d = p - lo[:, None]  # exactly 0 where the runs agree: their std is then exactly 0
        mean_d = d.mean(axis=1)
        std = np.sqrt(((d - mean_d[:, None]) ** 2).mean(axis=1))
        out.append(
            pd.DataFrame(
                {
                    f"{CROSS_PREFIX}mean": grid32(lo + mean_d),
                    f"{CROSS_PREFIX}min": lo,
                    f"{CROSS_PREFIX}max": p.max(axis=1),
                    f"{CROSS_PREFIX}std": grid32(std),
                }
            )
        )
    return out
