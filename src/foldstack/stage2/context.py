"""Stage-2 context features: a lesion against other lesions, never against labels.

- group_norm: every numeric feature's z-score / ratio to the group mean / percentile rank within groups
  beyond the patient alone (patient x site, x location, x location_simple, x tile type: `winners`);
- ugly_duckling: in how many features a lesion is an outlier among its patient's lesions, its largest |z|;
- outlier: a per-patient outlier score over chosen features: the root mean square of the lesion's patient
  z-scores over them (its distance from its patient's mean lesion, each feature in its patient's own
  standard deviations: a diagonal Mahalanobis distance), and that score's rank within the patient;
- age: the age decade, and chosen features z-scored among the lesions of the same age decade and sex
  (every patient's lesions: what a lesion of that size means at that age).
Every statistic is over the frame's own rows: test rows are grouped among test rows only (Kaggle's test
patients are new), so train and test never mix. All are vectorised over groups (stage2.groups), exact
where the arithmetic is, and stored as float32, which holds their float32-grid values exactly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from foldstack.config import CompetitionConfig
from foldstack.errors import ConfigError
from foldstack.stage2.groups import Grouping, grid32

Frame = pd.DataFrame
# features.group_norm: winners -> the groups beyond the patient that the ISIC 2024 winners normalised in
WINNERS_GROUPS = (
    ("patient_id", "anatom_site_general"),
    ("patient_id", "tbp_lv_location"),
    ("patient_id", "tbp_lv_location_simple"),
    ("patient_id", "tbp_tile_type"),
)
UGLY_DUCKLING = ("patient_outlier_count", "patient_max_abs_z")
OUTLIER = ("patient_outlier_score", "patient_outlier_rank")
AGE_DECADE = "age_decade"
AGE_TAG = "__age_z"  # <feature>__age_z: z-score among lesions of the same age decade and sex
AGE_COLUMNS = ("age_approx", "sex")
GROUP_TAG = "__{stat}_by_{keys}"  # <feature>__z_by_patient_id_anatom_site_general: a group_norm column


def _f32(frame: dict | Frame, columns: list[str] | None = None) -> Frame:
    out = pd.DataFrame(frame, columns=columns) if columns is not None else pd.DataFrame(frame)
    return out.astype(np.float32)


def _numeric_subset(key: str, names: tuple[str, ...], numeric: Frame) -> list[int]:
    """Column positions of `names` in the numeric features, refused naming the valid ones."""
    cols = list(numeric.columns)
    bad = [n for n in names if n not in cols]
    if bad:
        raise ConfigError(
            f"features.{key}: {bad} is not a numeric feature; valid features: {', '.join(cols)}"
        )
    return [cols.index(n) for n in names]


def ugly_duckling(z: np.ndarray, threshold: float) -> Frame:
    """The "ugly duckling" of its patient: in how many features a lesion's |patient z| reaches
    `threshold`, and its largest |z| (0 for a lesion alone or a missing value everywhere)."""
    a = np.abs(np.nan_to_num(z, nan=0.0))
    count = (a >= threshold).sum(axis=1).astype(np.float64)
    top = a.max(axis=1) if a.shape[1] else np.zeros(len(a))
    return pd.DataFrame({UGLY_DUCKLING[0]: count, UGLY_DUCKLING[1]: grid32(top)})


def outlier_score(z: np.ndarray, patient: Grouping) -> Frame:
    """RMS of the patient z-scores over the chosen features (missing ones left out; 0 when all are
    missing or the lesion is alone) and its percentile rank within the patient."""
    sq = np.where(np.isfinite(z), z * z, 0.0)
    n = np.isfinite(z).sum(axis=1)
    score = grid32(np.sqrt(sq.sum(axis=1) / np.maximum(n, 1)))
    return _f32({OUTLIER[0]: score, OUTLIER[1]: patient.rank(score)})


def group_groupings(cfg: CompetitionConfig, fc, d: Frame) -> list[tuple[str, Grouping]]:
    """(keys joined by "_", the grouping of the frame's own rows) per features.group_norm group, built
    once for the features and the stage-1 columns alike; a key that is not a test-side column is refused."""
    valid = list(cfg.table.test_columns)
    out = []
    for keys in fc.group_norm:
        bad = [k for k in keys if k not in valid]
        if bad or not keys:
            raise ConfigError(
                f"features.group_norm: {bad or 'an empty group'} is not a test-side column; "
                f"valid columns: {', '.join(valid)}"
            )
        out.append(("_".join(keys), Grouping.of(d[list(keys)].astype(object))))
    return out


def group_norm(fc, numeric: Frame, groups: list[tuple[str, Grouping]]) -> list[Frame]:
    """Every numeric feature normalised within each features.group_norm group (test rows are grouped
    among test rows), one frame per group and statistic."""
    out = []
    values = numeric.to_numpy()
    for keys, g in groups:
        made = g.normalise(values, tuple(fc.group_stats), np.float32)
        for stat in fc.group_stats:
            tag = GROUP_TAG.format(stat=stat, keys=keys)
            out.append(pd.DataFrame(made[stat], columns=[f"{c}{tag}" for c in numeric.columns], copy=False))
    return out


def age_features(fc, d: Frame, numeric: Frame) -> Frame:
    """The age decade and features.age_norm z-scored within age decade x sex (the frame's own rows)."""
    missing = [c for c in AGE_COLUMNS if c not in d.columns]
    if missing:
        raise ConfigError(
            f"features.age: the metadata has no column {missing}; the age features need {list(AGE_COLUMNS)} "
            f"(set features.age=false)"
        )
    idx = _numeric_subset("age_norm", fc.age_norm, numeric)
    age = d["age_approx"].to_numpy(dtype=np.float64)
    decade = np.floor(age / 10) * 10
    g = Grouping.of(pd.DataFrame({"decade": decade, "sex": d["sex"].astype(object)}))
    z = g.zscore(numeric.to_numpy()[:, idx])
    cols = [f"{numeric.columns[i]}{AGE_TAG}" for i in idx]
    return pd.concat([_f32({AGE_DECADE: decade}), _f32(z, cols)], axis=1)


def context_features(
    fc, d: Frame, numeric: Frame, patient: Grouping, z, groups: list[tuple[str, Grouping]]
) -> list[Frame]:
    """The context families the config switches on, in a fixed order; `z` is the patient z-score of
    every numeric feature (None when no family needs it), `groups` group_groupings' output."""
    parts = []
    if fc.ugly_duckling:
        parts.append(ugly_duckling(z, fc.ugly_z))
    if fc.outlier:
        parts.append(outlier_score(z[:, _numeric_subset("outlier", fc.outlier, numeric)], patient))
    parts += group_norm(fc, numeric, groups)
    if fc.age:
        parts.append(age_features(fc, d, numeric))
    return parts
