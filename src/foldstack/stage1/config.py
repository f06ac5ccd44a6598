"""Stage-1 config: the competition config plus model, data, train, augment and predict sections."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from foldstack.config import CompetitionConfig, Frozen, build_config, config_path, read_yaml
from foldstack.errors import ConfigError


class ModelCfg(Frozen):
    backbone: str = Field(description="exact timm model name, e.g. tf_efficientnetv2_b1.in1k")
    pretrained: Literal["auto", True, False] = Field(
        "auto", description="auto: local weights when found, else random init (recorded in metrics.json)"
    )
    pretrained_file: str | None = None
    drop_rate: float = Field(0.2, ge=0, lt=1)
    head: tuple[int, ...] = Field((), description="hidden sizes of an MLP head; () = one linear layer")
    head_dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the head's last layer")
    head_input_dropout: float = Field(
        0.0, ge=0, lt=1, description="dropout on the features entering the head"
    )
    meta: bool = Field(False, description="fuse an encoded metadata vector with the image features")
    meta_columns: tuple[str, ...] = ("age_approx", "sex", "anatom_site_general", "clin_size_long_diam_mm")
    meta_hidden: tuple[int, ...] = (64,)
    freeze_backbone: bool = False
    aux_targets: tuple[str, ...] = Field(
        (),
        description="train-only diagnosis columns (e.g. iddx_2, iddx_3) learnt by an auxiliary multi-label "
        "head on the same features (binary competitions); the OOF and test pred stay the target's",
    )


class ExtraCfg(Frozen):
    """A folder of train-only rows in some competition's layout (e.g. an older ISIC archive)."""

    dir: str = Field(description="the folder, in the Kaggle layout of `layout`")
    layout: str | None = Field(None, description="competition config of its layout; None: this competition's")
    columns: dict[str, str] = Field(
        default_factory=dict, description="its column -> this competition's (the id and target at least)"
    )


class DataCfg(Frozen):
    img_size: int | None = Field(None, ge=16, description="None: the model's own input size")
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    num_workers: int | Literal["auto"] = "auto"
    cache: bool = Field(
        True,
        description="decode + resize every image once into a uint8 memory-mapped cache (runs/<comp>/cache) "
        "shared by every run and fold; false decodes every epoch",
    )
    extra: tuple[ExtraCfg, ...] = Field(
        (),
        description="train-only rows added to every fold's training set: never OOF, scored or used for "
        "early stopping; ids must not collide with train or test",
    )


class TrainCfg(Frozen):
    epochs: int = Field(4, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    optimizer: Literal["adamw", "adam"] = "adamw"
    scheduler: Literal["cosine", "plateau", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    plateau_factor: float = Field(0.1, gt=0, lt=1)
    plateau_patience: int = Field(2, ge=0)
    min_lr: float = Field(1e-6, ge=0)
    neg_ratio: float = Field(
        10.0, ge=0, description="negatives per positive drawn afresh each epoch; 0 keeps every negative"
    )
    neg_fraction: float | None = Field(
        None, gt=0, le=1, description="share of the negatives drawn afresh each epoch (overrides neg_ratio)"
    )
    neg_sampling: Literal["random", "partition"] = Field(
        "random",
        description="random: each epoch's negatives drawn afresh; partition: the negatives cut into "
        "disjoint parts of that size, walked in order, so every negative is seen once per cycle",
    )
    pos_oversample: int = Field(1, ge=1, description="times each positive is shown per epoch")
    backbone_lr_mult: float = Field(
        1.0, gt=0, le=1, description="the backbone's learning rate = lr x this (the new head's: lr)"
    )
    freeze_epochs: int = Field(
        0, ge=0, description="epochs at the start with the backbone frozen (BatchNorm statistics too)"
    )
    aux_loss_weight: float = Field(
        0.3, ge=0, description="weight of the auxiliary heads' loss (model.aux_targets) in the total"
    )
    pos_weight: float | Literal["auto"] | None = Field(None, description="BCE pos_weight; auto = neg/pos")
    class_weight: Literal["balanced"] | None = Field(
        None, description="multiclass: cross-entropy class weights, balanced = n / (C * n_class)"
    )
    ema_decay: float | None = Field(None, gt=0, lt=1)
    checkpoint: Literal["last", "ema", "best_inner", "best_optimistic"] = Field(
        "last",
        description="which weights make the OOF: best_inner picks on the inner split of the training "
        "folds; best_optimistic on the scored fold itself",
    )
    inner_val_fraction: float = Field(
        0.0,
        ge=0,
        lt=0.5,
        description="share of the training patients held out inside the fold for "
        "early stopping, the plateau schedule and best_inner (never the scored fold)",
    )
    monitor: Literal["loss", "auc", "pauc"] = Field(
        "loss", description="what the inner split watches (auc: the macro one-vs-rest AUC for multiclass)"
    )
    early_stopping_patience: int | None = Field(None, ge=1, description="epochs without inner improvement")
    eval_every: int | None = Field(
        None,
        ge=1,
        description="score the held-out fold for the log every N epochs (flip-free); None: only the final "
        "OOF prediction scores it (best_optimistic scores every epoch regardless)",
    )
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"

    @field_validator("amp", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML reads a bare `off` as false

    channels_last: bool | Literal["auto"] = "auto"
    compile: bool = False
    grad_clip: float | None = Field(1.0, gt=0)
    seed: int = 42
    max_train_batches: int | None = Field(None, ge=1, description="cap per epoch (smoke tests)")

    def negatives(self, n_pos: int, n_neg: int) -> int:
        """How many negatives one epoch shows (all positives are always shown)."""
        if self.neg_fraction is not None:
            return min(n_neg, max(1, round(self.neg_fraction * n_neg)))
        if self.neg_ratio > 0 and n_pos > 0:
            return min(n_neg, round(self.neg_ratio * n_pos))
        return n_neg

    @model_validator(mode="after")
    def _check(self) -> TrainCfg:
        if self.checkpoint == "ema" and self.ema_decay is None:
            raise ValueError("train.checkpoint=ema needs train.ema_decay (e.g. 0.998)")
        needs_inner = self.checkpoint == "best_inner" or self.early_stopping_patience is not None
        if needs_inner and self.inner_val_fraction == 0:
            raise ValueError(
                "train.checkpoint=best_inner and train.early_stopping_patience need an inner "
                "split: set train.inner_val_fraction (e.g. 0.15)"
            )
        return self


class AugmentCfg(Frozen):
    """One albumentations transform by class name with its keyword arguments."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class PredictCfg(Frozen):
    tta: int = Field(2, ge=1, le=8, description="flip TTA views, the same for OOF and test")
    batch_size: int = Field(128, ge=1)


class OofConfig(CompetitionConfig):
    """Everything `make oof` needs; `run` names runs/<comp>/oof/<run>/."""

    run: str
    model: ModelCfg
    data: DataCfg = DataCfg()
    train: TrainCfg = TrainCfg()
    augment: tuple[AugmentCfg, ...] = ()
    predict: PredictCfg = PredictCfg()

    @property
    def n_outputs(self) -> int:
        """Logits per image: 1 (sigmoid) for a binary target, one per class (softmax) for multiclass."""
        return self.n_classes if self.multiclass else 1

    @model_validator(mode="after")
    def _check_task(self) -> OofConfig:
        t = self.train
        if self.multiclass:
            if t.neg_ratio > 0 or t.neg_fraction is not None:
                raise ValueError(
                    f"{self.name} is multiclass: negative sampling has no meaning there; set "
                    f"train.neg_ratio=0 (and no train.neg_fraction): every row is shown every epoch"
                )
            if t.pos_weight is not None:
                raise ValueError("train.pos_weight is for a binary target; use train.class_weight=balanced")
            if t.monitor == "pauc":
                raise ValueError("train.monitor=pauc is for a binary target; use auc (macro) or loss")
        elif t.class_weight is not None:
            raise ValueError("train.class_weight is for multiclass targets; use train.pos_weight")
        if self.multiclass and (t.neg_sampling != "random" or t.pos_oversample > 1):
            raise ValueError("train.neg_sampling and train.pos_oversample are for a binary target")
        if self.multiclass and self.data.extra:
            raise ValueError("data.extra is for a binary target (its rows map onto 0/1)")
        if self.multiclass and self.model.aux_targets:
            raise ValueError(
                "model.aux_targets is for a binary target: the classes already are the diagnosis"
            )
        leak = [c for c in self.model.aux_targets if c in self.table.test_columns]
        if leak:
            raise ValueError(f"model.aux_targets {leak} are test-side columns; use train-only ones (iddx_*)")
        if t.freeze_epochs >= t.epochs:
            raise ValueError(
                f"train.freeze_epochs={t.freeze_epochs} >= train.epochs={t.epochs}: the backbone would "
                f"never train; use model.freeze_backbone=true for that"
            )
        return self


def model_sources(model: str, seen: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """A model config and, first, the chain of configs it names as `base` (it overrides only what differs).

    The keys `base` and `competition` (the competition a published setup belongs to) are not config
    fields and are removed here.
    """
    if model in seen:
        raise ConfigError(f"configs/models: circular base chain {' -> '.join((*seen, model))}")
    tree = read_yaml(config_path("models", model))
    base = tree.pop("base", None)
    tree.pop("competition", None)
    return ([*model_sources(base, (*seen, model))] if base else []) + [tree]


def model_competition(model: str) -> str | None:
    """The competition a model config is written for (its `competition:` key, or its base's), if any."""
    seen: list[str] = []
    while model not in seen:
        seen.append(model)
        tree = read_yaml(config_path("models", model))
        if "competition" in tree:
            return str(tree["competition"])
        if "base" not in tree:
            return None
        model = tree["base"]
    raise ConfigError(f"configs/models: circular base chain {' -> '.join([*seen, model])}")


def load_oof_config(comp: str, model: str, overrides: str | Iterable[str] | None = None) -> OofConfig:
    """configs/competitions/<comp>.yaml + configs/models/<model>.yaml (+ its bases) + overrides."""
    meant_for = model_competition(model)
    if meant_for is not None and meant_for != comp:
        raise ConfigError(
            f"configs/models/{model}.yaml is a {meant_for} setup (its `competition:` key), not {comp}: "
            f"run it with COMP={meant_for} (e.g. `make oof COMP={meant_for} MODEL={model}`)"
        )
    # the run name defaults to the model config's name; an override `run=...` renames it
    sources = [read_yaml(config_path("competitions", comp)), {"run": model}, *model_sources(model)]
    return build_config(OofConfig, sources, overrides)
