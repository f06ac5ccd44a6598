"""Stage-2 features, computed by the same code for train and test.

- the raw numeric and categorical metadata columns (never the train-only ones);
- engineered ISIC 2024 lesion features from the `tbp_lv_*` columns (size, shape, border, colour
  contrast and uniformity ratios, 3-D position), chosen by name in the config;
- every numeric feature z-scored within its patient, and the lesion count per patient;
- from each stage-1 model: its probability, its rank within the patient and its ratio to the
  patient mean.
Features are exact where the arithmetic is (stage2.groups): a value constant within its patient has
z = 0, rank 0.5 and ratio 1 exactly, a difference that cancels is 0, and every computed value lies on
the float32 grid, so no tree can split on rounding noise. Rows are sorted by id before any group
statistic, so row order never changes a feature: the matrix is the same bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from foldstack.config import CompetitionConfig
from foldstack.data.metadata import feature_columns
from foldstack.errors import ConfigError, DataError
from foldstack.stage2.cnn_features import cnn_frames
from foldstack.stage2.context import context_features, group_groupings
from foldstack.stage2.groups import EPS, Grouping, grid32, snapped_difference

CNN_PREFIX = "cnn_"  # the stage-1 feature columns
LEAK_MIN_ROWS = 20  # a sparse column is scored on its filled rows when there are this many
LEAK_MIN_CLASS = 5  # ... with at least this many rows of each class
Frame = pd.DataFrame


def _c(df: Frame, name: str) -> np.ndarray:
    return df[name].to_numpy(dtype=np.float64)


def _ratio_of_product_to_sum(d: Frame, a: str, b: str) -> np.ndarray:
    """a*b / (a+b): greysky's "consistency" features (NaN where a + b is 0)."""
    x, y = _c(d, a), _c(d, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return x * y / (x + y)


# name -> function of the metadata frame; each needs only test-side columns
ENGINEERED: dict[str, Callable[[Frame], np.ndarray]] = {
    "lesion_size_ratio": lambda d: _c(d, "tbp_lv_minorAxisMM") / (_c(d, "clin_size_long_diam_mm") + EPS),
    "lesion_shape_index": lambda d: _c(d, "tbp_lv_areaMM2") / (_c(d, "tbp_lv_perimeterMM") ** 2 + EPS),
    "hue_contrast": lambda d: np.abs(snapped_difference(_c(d, "tbp_lv_H"), _c(d, "tbp_lv_Hext"))),
    "luminance_contrast": lambda d: np.abs(snapped_difference(_c(d, "tbp_lv_L"), _c(d, "tbp_lv_Lext"))),
    "lesion_color_difference": lambda d: np.sqrt(
        _c(d, "tbp_lv_deltaA") ** 2 + _c(d, "tbp_lv_deltaB") ** 2 + _c(d, "tbp_lv_deltaL") ** 2
    ),
    "border_complexity": lambda d: _c(d, "tbp_lv_norm_border") + _c(d, "tbp_lv_symm_2axis"),
    "color_uniformity": lambda d: (
        _c(d, "tbp_lv_color_std_mean") / (_c(d, "tbp_lv_radial_color_std_max") + EPS)
    ),
    "position_distance_3d": lambda d: np.sqrt(
        _c(d, "tbp_lv_x") ** 2 + _c(d, "tbp_lv_y") ** 2 + _c(d, "tbp_lv_z") ** 2
    ),
    "perimeter_to_area_ratio": lambda d: _c(d, "tbp_lv_perimeterMM") / (_c(d, "tbp_lv_areaMM2") + EPS),
    "lesion_visibility_score": lambda d: _c(d, "tbp_lv_deltaLBnorm") + _c(d, "tbp_lv_norm_color"),
    "symmetry_border_consistency": lambda d: _c(d, "tbp_lv_symm_2axis") * _c(d, "tbp_lv_norm_border"),
    "color_consistency": lambda d: _c(d, "tbp_lv_stdL") / (_c(d, "tbp_lv_Lext") + EPS),
    "size_age_interaction": lambda d: _c(d, "clin_size_long_diam_mm") * _c(d, "age_approx"),
    "hue_color_std_interaction": lambda d: _c(d, "tbp_lv_H") * _c(d, "tbp_lv_color_std_mean"),
    "lesion_severity_index": lambda d: (
        (_c(d, "tbp_lv_norm_border") + _c(d, "tbp_lv_norm_color") + _c(d, "tbp_lv_eccentricity")) / 3
    ),
    "normalized_lesion_size": lambda d: _c(d, "clin_size_long_diam_mm") / (_c(d, "age_approx") + EPS),
    "color_contrast_index": lambda d: (
        _c(d, "tbp_lv_deltaA") + _c(d, "tbp_lv_deltaB") + _c(d, "tbp_lv_deltaL") + _c(d, "tbp_lv_deltaLBnorm")
    ),
    "log_lesion_area": lambda d: np.log1p(_c(d, "tbp_lv_areaMM2")),
    "orientation_3d": lambda d: np.arctan2(_c(d, "tbp_lv_y"), _c(d, "tbp_lv_x")),
    "border_color_interaction": lambda d: _c(d, "tbp_lv_norm_border") * _c(d, "tbp_lv_norm_color"),
    "color_shape_composite_index": lambda d: (
        (_c(d, "tbp_lv_color_std_mean") + _c(d, "tbp_lv_area_perim_ratio") + _c(d, "tbp_lv_symm_2axis")) / 3
    ),
    # the rest of greysky's public "ISIC 2024 | Only Tabular Data" set (features.engineered: greysky)
    "area_to_perimeter_ratio": lambda d: _c(d, "tbp_lv_areaMM2") / (_c(d, "tbp_lv_perimeterMM") + EPS),
    "consistency_symmetry_border": lambda d: _ratio_of_product_to_sum(
        d, "tbp_lv_symm_2axis", "tbp_lv_norm_border"
    ),
    "consistency_color": lambda d: _ratio_of_product_to_sum(d, "tbp_lv_stdL", "tbp_lv_Lext"),
    "shape_complexity_index": lambda d: (
        _c(d, "tbp_lv_norm_border")
        + _c(d, "tbp_lv_symm_2axis")
        + _c(d, "tbp_lv_areaMM2") / (_c(d, "tbp_lv_perimeterMM") ** 2 + EPS)
    ),
    "mean_hue_difference": lambda d: (_c(d, "tbp_lv_H") + _c(d, "tbp_lv_Hext")) / 2,
    "std_dev_contrast": lambda d: np.sqrt(
        (_c(d, "tbp_lv_deltaA") ** 2 + _c(d, "tbp_lv_deltaB") ** 2 + _c(d, "tbp_lv_deltaL") ** 2) / 3
    ),
    "overall_color_difference": lambda d: (
        (_c(d, "tbp_lv_deltaA") + _c(d, "tbp_lv_deltaB") + _c(d, "tbp_lv_deltaL")) / 3
    ),
    "symmetry_perimeter_interaction": lambda d: _c(d, "tbp_lv_symm_2axis") * _c(d, "tbp_lv_perimeterMM"),
    "comprehensive_lesion_index": lambda d: (
        (
            _c(d, "tbp_lv_area_perim_ratio")
            + _c(d, "tbp_lv_eccentricity")
            + _c(d, "tbp_lv_norm_color")
            + _c(d, "tbp_lv_symm_2axis")
        )
        / 4
    ),
    "color_variance_ratio": lambda d: _c(d, "tbp_lv_color_std_mean") / (_c(d, "tbp_lv_stdLExt") + EPS),
    "border_color_interaction_2": lambda d: _ratio_of_product_to_sum(
        d, "tbp_lv_norm_border", "tbp_lv_norm_color"
    ),
    "size_color_contrast_ratio": lambda d: (
        _c(d, "clin_size_long_diam_mm") / (_c(d, "tbp_lv_deltaLBnorm") + EPS)
    ),
    "age_normalized_nevi_confidence": lambda d: _c(d, "tbp_lv_nevi_confidence") / (_c(d, "age_approx") + EPS),
    "age_normalized_nevi_confidence_2": lambda d: np.sqrt(
        _c(d, "clin_size_long_diam_mm") ** 2 + _c(d, "age_approx") ** 2
    ),
    "color_asymmetry_index": lambda d: _c(d, "tbp_lv_radial_color_std_max") * _c(d, "tbp_lv_symm_2axis"),
    "volume_approximation_3d": lambda d: (
        _c(d, "tbp_lv_areaMM2")
        * np.sqrt(_c(d, "tbp_lv_x") ** 2 + _c(d, "tbp_lv_y") ** 2 + _c(d, "tbp_lv_z") ** 2)
    ),
    "color_range": lambda d: (
        np.abs(snapped_difference(_c(d, "tbp_lv_L"), _c(d, "tbp_lv_Lext")))
        + np.abs(snapped_difference(_c(d, "tbp_lv_A"), _c(d, "tbp_lv_Aext")))
        + np.abs(snapped_difference(_c(d, "tbp_lv_B"), _c(d, "tbp_lv_Bext")))
    ),
    "shape_color_consistency": lambda d: _c(d, "tbp_lv_eccentricity") * _c(d, "tbp_lv_color_std_mean"),
    "border_length_ratio": lambda d: (
        _c(d, "tbp_lv_perimeterMM") / (2 * np.pi * np.sqrt(_c(d, "tbp_lv_areaMM2") / np.pi) + EPS)
    ),
    "age_size_symmetry_index": lambda d: (
        _c(d, "age_approx") * _c(d, "clin_size_long_diam_mm") * _c(d, "tbp_lv_symm_2axis")
    ),
    "index_age_size_symmetry": lambda d: (
        _c(d, "age_approx") * _c(d, "tbp_lv_areaMM2") * _c(d, "tbp_lv_symm_2axis")
    ),
}


def _combined_site(d: Frame) -> pd.Series:
    """greysky's combined_anatomical_site: anatom_site_general + "_" + tbp_lv_location (missing where
    either is)."""
    a, b = d["anatom_site_general"], d["tbp_lv_location"]
    out = a.astype(str) + "_" + b.astype(str)
    return out.where(a.notna() & b.notna(), None).astype(object)


# engineered categorical features: name -> function of the metadata frame (the category levels are
# taken over train and test, as for the raw categoricals)
CATEGORICAL: dict[str, Callable[[Frame], pd.Series]] = {"combined_anatomical_site": _combined_site}

# features.engineered: "base" (alias "all", the default: foldstack's first 21) or "greysky" (all 43 of
# greysky's public notebook: the base 21 + the 21 after "the rest of greysky's ..." above + the
# combined site)
BASE_SET = tuple(list(ENGINEERED)[: list(ENGINEERED).index("area_to_perimeter_ratio")])
NAMED_SETS = {"base": BASE_SET, "all": BASE_SET, "greysky": (*ENGINEERED, *CATEGORICAL)}


def engineered_names(names: tuple[str, ...] | str, available_cols: set[str]) -> list[str]:
    """The engineered features to build: a named set ('base' = 'all', 'greysky'; those whose inputs
    exist) or an explicit list."""
    if isinstance(names, str):
        probe = pd.DataFrame({c: [1.0] for c in available_cols})
        out = []
        for n in NAMED_SETS[names]:
            fn = ENGINEERED.get(n) or CATEGORICAL[n]
            try:
                fn(probe)
            except KeyError:
                continue
            out.append(n)
        return out
    unknown = [n for n in names if n not in ENGINEERED and n not in CATEGORICAL]
    if unknown:
        raise ConfigError(
            f"features.engineered: unknown {unknown}; valid names: {', '.join([*ENGINEERED, *CATEGORICAL])}"
        )
    return list(names)


def with_derived(fc, d: Frame) -> tuple[Frame, list[str]]:
    """`d` with the engineered categorical columns the config asks for, and their names."""
    names = [n for n in engineered_names(fc.engineered, set(d.columns)) if n in CATEGORICAL]
    if not names:
        return d, []
    return d.assign(**{n: CATEGORICAL[n](d) for n in names}), names


def category_levels(frames: list[Frame], cols: list[str]) -> dict[str, list[str]]:
    """The categories of each categorical column over train and test (a vocabulary, no labels)."""
    return {c: sorted(set().union(*(f[c].dropna().astype(str).unique() for f in frames))) for c in cols}


def build_features(
    cfg: CompetitionConfig,
    fc,
    df: Frame,
    cnn: dict[str, np.ndarray],
    levels: dict[str, list[str]],
    runs: list[str] | None = None,
) -> Frame:
    """The feature matrix of `df` (rows in df's order); `cnn` maps feature name -> probability per row
    (the stage-1 run `runs`: the names themselves unless given)."""
    ids = df[cfg.columns.id].astype(str).to_numpy()
    order = np.argsort(ids, kind="stable")
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    d, derived = with_derived(fc, df.iloc[order].reset_index(drop=True))
    groups = d[cfg.columns.group].astype(str)
    base = [c for c in feature_columns(cfg) if c not in fc.drop]
    num_cols = [c for c in base if cfg.table.columns[c] in ("int", "float")]
    cat_cols = [c for c in base if cfg.table.columns[c] == "cat"] + derived
    numeric = d[num_cols].astype(np.float64)
    eng = [n for n in engineered_names(fc.engineered, set(d.columns)) if n in ENGINEERED]
    if eng:
        made = pd.DataFrame({n: grid32(ENGINEERED[n](d)) for n in eng})
        numeric = pd.concat([numeric, made], axis=1)
    numeric = numeric.replace([np.inf, -np.inf], np.nan)
    parts = [numeric]
    patient = Grouping.of(pd.DataFrame({"g": groups}))
    needs_z = fc.patient_norm or fc.ugly_duckling or bool(fc.outlier)
    z = patient.zscore(numeric.to_numpy()) if needs_z else None
    if fc.patient_norm:
        parts.append(pd.DataFrame(z, columns=[f"{c}_pz" for c in numeric.columns]))
    groups = group_groupings(cfg, fc, d)  # once: the numeric features and the stage-1 columns share them
    parts += context_features(fc, d, numeric, patient, z, groups)
    if fc.lesion_count:
        parts.append(pd.DataFrame({"patient_lesion_count": patient.size()}))
    sorted_cnn = {n: np.asarray(p, dtype=np.float64)[order] for n, p in cnn.items()}
    parts += cnn_frames(fc, sorted_cnn, list(runs if runs is not None else cnn), patient, groups)
    unknown = [c for c in cat_cols if c not in levels]
    if unknown:
        raise DataError(
            f"categorical feature(s) {unknown} have no category levels (levels.json of a stack trained "
            f"without them?): rerun `make stack` with this config"
        )
    cats = pd.DataFrame(
        {
            # a value the training data never had (at predict time) becomes missing
            c: pd.Categorical(d[c].astype(object).where(d[c].isin(levels[c]), None), categories=levels[c])
            for c in cat_cols
        }
    )
    X = pd.concat([*parts, cats], axis=1)
    return X.iloc[inverse].reset_index(drop=True)


def cnn_inputs(cfg: CompetitionConfig, runs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Stage-1 probabilities by feature name: the run's name (binary), or <run>_<class> per class."""
    if not cfg.multiclass:
        return runs
    return {f"{name}_{c}": p[:, i] for name, p in runs.items() for i, c in enumerate(cfg.classes)}


def check_same_columns(train: Frame, test: Frame) -> None:
    """A test matrix must have exactly the train matrix's columns, in the same order."""
    extra, missing = [c for c in test if c not in train], [c for c in train if c not in test]
    if extra or missing or list(train.columns) != list(test.columns):
        raise DataError(
            f"train and test feature matrices differ: test has extra {extra}, lacks {missing}"
            f"{'' if extra or missing else ' (same names, different order)'}"
        )


def _auc(t: np.ndarray, v: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(t, v))


def _how_to_drop(col: str) -> str:
    """The SET override that removes a feature column (and its patient-normalised copy)."""
    base = col.removesuffix("_pz")
    if base == "patient_lesion_count":
        return "features.lesion_count=false"
    if base in ENGINEERED:
        return f"features.engineered=[...] without {base}"
    return f"features.drop=[{base}]"


def _leak_message(col: str, label, what: str, auc: float, n: int) -> str:
    target = "the target" if label is None else f"class {label} from the rest"
    return (
        f"feature {col!r}: its {what} alone separates {target} on train (AUC {auc:.4f} on {n} rows): "
        f'that is a leak (e.g. a label-derived column); drop it with SET="{_how_to_drop(col)}"'
    )


def check_leaks(
    X: Frame,
    y: np.ndarray,
    train_only: tuple[str, ...],
    limit: float = 0.995,
    min_rows: int = LEAK_MIN_ROWS,
    min_class: int = LEAK_MIN_CLASS,
) -> None:
    """Refuse train-only columns and any single feature that separates the target (or, multiclass, one
    class from the rest) almost perfectly: every raw and engineered column, numeric or categorical.

    A numeric column is scored on its non-missing rows when there are at least `min_rows` of them with
    at least `min_class` rows of each class (a sparse column that holds the label where it is filled is
    a leak too); the missingness of every column is scored as a feature of its own (a column filled only
    for one class is a leak). The stage-1 probability columns (cnn_*) are not checked here: a strong CNN
    is no leak, and their own check is that they were made out of fold on the same folds
    (stage2.run.load_stage1)."""
    bad = [c for c in X.columns if c in train_only]
    if bad:
        raise DataError(
            f"train-only columns {bad} are features: they describe the diagnosis and leak the label"
        )
    labels = np.unique(y)
    targets = [(None, y)] if len(labels) <= 2 else [(c, (y == c).astype(int)) for c in labels]
    numeric = set(X.select_dtypes(include="number").columns)
    for col in X.columns:
        if str(col).startswith(CNN_PREFIX):
            continue
        missing = X[col].isna().to_numpy()
        v = X[col].to_numpy(dtype=np.float64) if col in numeric else None
        ok = ~missing & np.isfinite(v) if v is not None else ~missing
        for label, t in targets:
            if missing.any() and not missing.all() and len(np.unique(t)) == 2:
                auc = _auc(t, missing.astype(float))
                if max(auc, 1 - auc) >= limit:
                    raise DataError(_leak_message(col, label, "missingness (empty or not)", auc, len(t)))
            if v is None or ok.sum() < min_rows:
                continue
            counts = np.unique(t[ok], return_counts=True)[1]
            if len(counts) < 2 or counts.min() < min_class:
                continue
            auc = _auc(t[ok], v[ok])
            if max(auc, 1 - auc) >= limit:
                raise DataError(_leak_message(col, label, "value", auc, int(ok.sum())))
