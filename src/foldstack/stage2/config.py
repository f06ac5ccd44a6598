"""Stage-2 config: features, the GBDT models with their Optuna search spaces, tuning and the blend."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from foldstack.config import CompetitionConfig, Frozen, build_config, config_path, read_yaml
from foldstack.errors import ConfigError
from foldstack.stage2.context import WINNERS_GROUPS

DEFAULT_STACK = "lgb_xgb_cb"  # LightGBM + XGBoost + CatBoost: what `make stack` runs
RENAMED = {"lgbm": DEFAULT_STACK}  # old config names that still work, with a one-line notice


CnnStat = Literal["prob", "logit", "rank", "ratio", "z"]
# features.age_norm's default: size, shape, colour and the nevus confidence (the features whose meaning
# changes with age)
AGE_NORM = (
    "clin_size_long_diam_mm",
    "tbp_lv_areaMM2",
    "tbp_lv_perimeterMM",
    "tbp_lv_deltaLBnorm",
    "tbp_lv_norm_color",
    "tbp_lv_norm_border",
    "tbp_lv_nevi_confidence",
)


class FeatureCfg(Frozen):
    engineered: Literal["all", "base", "greysky"] | tuple[str, ...] = Field(
        "all",
        description="engineered lesion features: base (= all: foldstack's 21), greysky (greysky's 42), "
        "or a list of names",
    )
    patient_norm: bool = True
    ugly_duckling: bool = Field(
        False,
        description="per lesion, in how many numeric features it is an outlier among its patient's lesions "
        "(|patient z| >= ugly_z) and its largest |patient z|",
    )
    ugly_z: float = Field(2.0, gt=0, description="ugly_duckling: the |z| from which a feature counts")
    group_norm: tuple[tuple[str, ...], ...] = Field(
        (),
        description="more groups to normalise every numeric feature in, each a list of test-side columns, "
        "e.g. [[patient_id, anatom_site_general], [patient_id, tbp_lv_location]] (the patient alone is "
        "patient_norm), or winners: patient x site, x location, x location_simple, x tile type",
    )
    group_stats: tuple[Literal["z", "ratio", "rank"], ...] = Field(
        ("z",),
        description="what group_norm adds per group: z-score, ratio to the group mean, percentile rank",
    )
    outlier: tuple[str, ...] = Field(
        (),
        description="numeric features of a per-patient outlier score: the RMS of the lesion's patient "
        "z-scores over them, and its rank within the patient (empty: off)",
    )
    age: bool = Field(
        False, description="the age decade, and features.age_norm z-scored within age decade x sex"
    )
    age_norm: tuple[str, ...] = Field(
        AGE_NORM,
        description="features.age: the numeric features z-scored among lesions of the same age and sex",
    )
    lesion_count: bool = True
    drop: tuple[str, ...] = ()
    cnn: bool = Field(True, description="use stage-1 outputs (false: tabular only)")
    cnn_stats: tuple[CnnStat, ...] | dict[str, tuple[CnnStat, ...]] = Field(
        ("prob", "rank", "ratio"),
        description="per stage-1 run, any of prob, logit, rank (within patient), ratio (to the patient "
        "mean), "
        "z (logit z-score within the patient and every group_norm group); a list for every run or "
        "run -> list (a run left out: prob, rank, ratio)",
    )
    cnn_cross: bool = Field(
        False, description="mean, min, max and std of the probability over the stage-1 runs"
    )
    cnn_noise: float = Field(
        0.0,
        ge=0,
        description="Gaussian noise on the stage-1 columns while a model fits (never at predict time), "
        "sigma in units of each column's standard deviation; a model's own cnn_noise overrides it",
    )

    @field_validator("group_norm", mode="before")
    @classmethod
    def _named_groups(cls, v: Any) -> Any:
        return WINNERS_GROUPS if v == "winners" else v

    allow_optimistic: bool = Field(
        False,
        description="accept stage-1 runs whose score is optimistic (train.checkpoint=best_optimistic); "
        "the stack is then flagged score_is_optimistic",
    )


class SearchDim(Frozen):
    """One Optuna dimension: float/int between low and high (log scale optional) or a categorical choice."""

    type: Literal["float", "int", "categorical"] = "float"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()


NEW_SPEC_DEFAULTS = {
    "neg_rate": None,
    "pos_rate": None,
    "bags": 1,
    "cnn_noise": None,
    "drop": [],
    "stage1": None,
}


class ModelSpec(Frozen):
    """One stage-2 model: its engine, fixed parameters and the search space tuned by Optuna."""

    name: str
    kind: str = Field(description="the engine (stage2.engines): lightgbm, xgboost, catboost or knn")
    params: dict[str, Any] = Field(default_factory=dict)
    search: dict[str, SearchDim] = Field(default_factory=dict)
    n_estimators: int = Field(300, ge=1)
    neg_ratio: float | None = Field(None, gt=0, description="undersample negatives to this many per positive")
    neg_rate: float | None = Field(
        None,
        gt=0,
        le=1,
        description="undersample negatives until positives / negatives = neg_rate (imblearn's "
        "sampling_strategy; after pos_rate), in (0, 1]",
    )
    pos_rate: float | None = Field(
        None,
        gt=0,
        le=1,
        description="oversample positives (drawn with replacement) until positives / negatives = "
        "pos_rate, in (0, 1]",
    )
    bags: int = Field(
        1,
        ge=1,
        description="boosters per seed, each on its own disjoint share of the negatives (together all "
        "of them "
        "when no rate is set)",
    )
    cnn_noise: float | None = Field(None, ge=0, description="this model's features.cnn_noise")
    drop: tuple[str, ...] = Field(
        (),
        description="feature families (raw, engineered, patient_norm, group_norm, ugly_duckling, outlier, "
        "age, lesion_count, cnn_cross, stage1:<run>) or columns this member does without",
    )
    stage1: tuple[str, ...] | None = Field(
        None, description="the stage-1 runs this member sees (default all)"
    )
    seeds: tuple[int, ...] = (0,)

    @model_validator(mode="after")
    def _one_negative_rule(self) -> ModelSpec:
        if self.neg_ratio and self.neg_rate:
            raise ValueError(
                f"model {self.name}: neg_ratio ({self.neg_ratio:g} negatives per positive) and neg_rate "
                f"({self.neg_rate:g} positives per negative) both set the negatives; keep one"
            )
        return self

    def identity(self) -> dict:
        """What names its Optuna study: every field, those added since studies were named left out while
        at their defaults (so an existing study keeps its name)."""
        out = self.model_dump(mode="json")
        for key, default in NEW_SPEC_DEFAULTS.items():
            if out.get(key) == default:
                out.pop(key, None)
        return out

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        from foldstack.stage2.engines import ENGINES

        if kind not in ENGINES:
            raise ValueError(f"kind {kind!r} is not a stage-2 engine; valid kinds: {', '.join(ENGINES)}")
        return kind


class TuningCfg(Frozen):
    n_trials: int = Field(
        20,
        ge=0,
        description="COMPLETE trials each model's study should hold: a run adds only the missing ones "
        "(0: use the study's best or defaults)",
    )
    timeout: float | None = Field(None, gt=0, description="seconds per model study and run")
    holdout_fold: int = Field(-1, description="fold kept out of tuning (-1: the last fold)")
    storage: str | None = Field(
        None,
        description="database URL of the Optuna storage (e.g. postgresql://user:pw@host/db, shared by "
        "workers on several machines); default a JournalStorage file under runs/",
    )
    heartbeat_interval: int = Field(
        10, ge=1, description="seconds between a trial's heartbeats in a database storage"
    )
    grace_period: int = Field(
        30, ge=1, description="a database trial without a heartbeat for this long is failed and retried"
    )
    startup_trials: int = Field(10, ge=0, description="random trials before TPE models the study")
    pruning: bool = True
    seed: int = 0

    @model_validator(mode="after")
    def _check_heartbeat(self) -> TuningCfg:
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError(
                f"tuning.grace_period ({self.grace_period} s) must exceed tuning.heartbeat_interval "
                f"({self.heartbeat_interval} s), or live trials would be failed as stale"
            )
        return self


class BlendCfg(Frozen):
    method: Literal["rank", "prob"] = "rank"
    weights: dict[str, float] | Literal["tune"] = Field(
        default_factory=dict,
        description="model name -> weight (default equal), or tune: fitted on the inner-CV OOF of the "
        "tuning folds (never the hold-out fold), reported in metrics.json",
    )
    tune_step: float = Field(
        0.05, gt=0, le=0.5, description="blend.weights=tune: grid step of the weights on the simplex"
    )

    @model_validator(mode="after")
    def _check_step(self) -> BlendCfg:
        n = 1 / self.tune_step
        if abs(n - round(n)) > 1e-9:
            raise ValueError(f"blend.tune_step={self.tune_step:g} must divide 1 (e.g. 0.05, 0.1, 0.25)")
        return self

    def fixed(self) -> dict[str, float]:
        """The configured weights ({} = equal); for weights=tune the tuned ones are in metrics.json."""
        return {} if self.weights == "tune" else dict(self.weights)


class StackConfig(CompetitionConfig):
    run: str
    models_in: tuple[str, ...] | Literal["all"] = Field(
        "all", description="stage-1 runs to stack (MODELS=a,b)"
    )
    features: FeatureCfg = FeatureCfg()
    models: tuple[ModelSpec, ...]
    only_models: tuple[str, ...] = Field(
        (),
        description='run only these of the config\'s models, e.g. SET="only_models=[lgbm,xgb]" (default all)',
    )
    tuning: TuningCfg = TuningCfg()
    blend: BlendCfg = BlendCfg()

    @model_validator(mode="before")
    @classmethod
    def _noise_to_models(cls, data: Any) -> Any:
        """features.cnn_noise is every model's cnn_noise unless the model sets its own."""
        feats = data.get("features") if isinstance(data, dict) else None
        noise = feats.get("cnn_noise") if isinstance(feats, dict) else None
        if not noise or not isinstance(data.get("models"), list):
            return data
        models = [
            m if not isinstance(m, dict) or "cnn_noise" in m else m | {"cnn_noise": noise}
            for m in data["models"]
        ]
        return dict(data) | {"models": models}

    @model_validator(mode="before")
    @classmethod
    def _keep_only(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("only_models"):
            return data
        keep, models = list(data["only_models"]), list(data.get("models") or [])
        names = [m.get("name") if isinstance(m, dict) else getattr(m, "name", None) for m in models]
        unknown = [n for n in keep if n not in names]
        if unknown:
            raise ValueError(f"only_models names {unknown}, which are not models of this config: {names}")
        return dict(data) | {"models": [m for m, n in zip(models, names, strict=True) if n in keep]}

    @model_validator(mode="after")
    def _check_names(self) -> StackConfig:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"models: names must be unique, got {names}")
        w = self.blend.fixed()
        unknown = set(w) - set(names)
        if unknown:
            raise ValueError(f"blend.weights names unknown models {sorted(unknown)}; models are {names}")
        if w and (set(w) != set(names) or min(w.values()) < 0 or abs(sum(w.values()) - 1) > 1e-6):
            raise ValueError(
                f"blend.weights {w} must give every model {names} a weight >= 0, summing to 1 "
                f"(they sum to {sum(w.values()):g}); leave blend.weights out for equal weights, or set "
                f"blend.weights=tune to fit them on the tuning folds"
            )
        if self.multiclass:
            sampled = [
                m.name
                for m in self.models
                if m.neg_ratio or m.neg_rate or m.pos_rate or m.bags > 1 or "neg_ratio" in m.search
            ]
            if sampled:
                raise ValueError(
                    f"{self.name} is multiclass: models {sampled} set neg_ratio/neg_rate/pos_rate/bags "
                    f"(resampling is for a binary target); use a multiclass stack config, e.g. "
                    f"STACK=multiclass"
                )
            if self.blend.method != "prob":
                raise ValueError(
                    f"{self.name} is multiclass: set blend.method=prob (ranks are per class), "
                    f"e.g. STACK=multiclass"
                )
        return self


def _over(base: Any, update: Any) -> Any:
    """`update` on top of `base`: mappings merged key by key (null removes a key the base sets, so that
    it takes its default), a `models` list merged by model name (a new name is appended); anything else
    replaces the base's value."""
    if not isinstance(base, dict) or not isinstance(update, dict):
        return update
    out = dict(base)
    for key, value in update.items():
        if value is None:
            out.pop(key, None)
        elif key == "models" and isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = _merge_models(out[key], value)
        else:
            out[key] = _over(out.get(key), value)
    return out


def _merge_models(base: list, update: list) -> list:
    names = [m.get("name") for m in base if isinstance(m, dict)]
    out = list(base)
    for m in update:
        name = m.get("name") if isinstance(m, dict) else None
        if name in names:
            i = names.index(name)
            out[i] = _over(out[i], m)
        else:
            out.append(m)
    return out


def stack_tree(stack: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """configs/stack/<stack>.yaml on top of the chain of configs it names as `base`."""
    if stack in seen:
        raise ConfigError(f"configs/stack: circular base chain {' -> '.join((*seen, stack))}")
    tree = read_yaml(config_path("stack", stack))
    base = tree.pop("base", None)
    return _over(stack_tree(str(base), (*seen, stack)), tree) if base else tree


def resolve_stack_name(stack: str, notice: bool = True) -> str:
    """The config a stack name means now: a renamed config's new name (one line on stderr saying so)."""
    new = RENAMED.get(stack)
    if new is None:
        return stack
    if notice:
        print(
            f"note: STACK={stack} is the old name of configs/stack/{new}.yaml (the same config); "
            f"it still works and its run keeps the folder name {stack}",
            file=sys.stderr,
        )
    return new


def load_stack_config(comp: str, stack: str, overrides: str | Iterable[str] | None = None) -> StackConfig:
    """configs/competitions/<comp>.yaml + configs/stack/<stack>.yaml (on top of its bases) + overrides.
    The run is named after `stack` (as asked, an old name included) unless `run=...` says otherwise."""
    tree = stack_tree(resolve_stack_name(stack))
    sources = [config_path("competitions", comp), {"run": stack}, tree]
    return build_config(StackConfig, sources, overrides)
