"""Typed, validated, read-only configs loaded from YAML plus `SET="a.b=1 c.d=x"` overrides.

A config is a tree of frozen pydantic models. YAML files are deep-merged in order, then each
override is checked against the model's fields (an unknown key lists the valid ones), then the
whole tree is validated (a wrong type names the key and lists the valid ones).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from foldstack.errors import ConfigError
from foldstack.runs import RUNS_DIR, pred_columns

CONFIG_ROOT = Path(__file__).resolve().parents[2] / "configs"

T = TypeVar("T", bound=BaseModel)


class Frozen(BaseModel):
    """Base for every config section: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------- competition
ColumnType = Literal["id", "str", "cat", "int", "float"]


class Columns(Frozen):
    """Column roles; nothing else in the code names a competition's columns."""

    id: str
    target: str
    group: str


class Files(Frozen):
    """File names inside a data folder in the Kaggle layout."""

    train: str
    test: str
    sample_submission: str
    test_labels: str = Field("test-labels.csv", description="synthetic only; never read by training")


class Images(Frozen):
    """Where the images live: an HDF5 file of JPEG bytes per id, or JPEG files in one folder or
    several (HAM10000 ships its train images in two part folders)."""

    kind: Literal["hdf5", "jpeg_dir"]
    train: str | tuple[str, ...]
    test: str | tuple[str, ...]
    suffix: str = ".jpg"

    def paths(self, split: str) -> tuple[str, ...]:
        """The file or folders of a split ('train' or 'test'), always as a tuple."""
        value = self.train if split == "train" else self.test
        return (value,) if isinstance(value, str) else tuple(value)

    @model_validator(mode="after")
    def _check(self) -> Images:
        for split in ("train", "test"):
            if not self.paths(split):
                raise ValueError(f"images.{split} names no file or folder")
            if self.kind == "hdf5" and len(self.paths(split)) > 1:
                raise ValueError(f"images.{split}: an hdf5 store is one file, got {self.paths(split)}")
        return self


class Table(Frozen):
    """Every column of the train metadata in file order with its type, and the train-only ones."""

    columns: dict[str, ColumnType]
    train_only: tuple[str, ...]

    @model_validator(mode="after")
    def _check(self) -> Table:
        unknown = [c for c in self.train_only if c not in self.columns]
        if unknown:
            raise ValueError(f"train_only names columns not in table.columns: {unknown}")
        return self

    @property
    def train_columns(self) -> list[str]:
        return list(self.columns)

    @property
    def test_columns(self) -> list[str]:
        return [c for c in self.columns if c not in self.train_only]

    def of_type(self, *types: str, split: str = "train") -> list[str]:
        cols = self.train_columns if split == "train" else self.test_columns
        return [c for c in cols if self.columns[c] in types]


class Folds(Frozen):
    k: int = Field(5, ge=2)
    seed: int = 42


class Synthetic(Frozen):
    """Size and difficulty of the embedded synthetic competition."""

    seed: int = 2024
    n_train_patients: int = Field(200, ge=4)
    n_test_patients: int = Field(60, ge=1)
    lesions_per_patient: float = Field(30.0, gt=0, description="mean; the spread is heavy-tailed")
    pos_rate: float = Field(0.015, gt=0, lt=0.5)
    img_min: int = Field(100, ge=16)
    img_max: int = Field(140, ge=16)
    jpeg_quality: int = Field(90, ge=10, le=100)
    skin_noise: float = Field(
        1.0,
        ge=0,
        description="scale of the lesion-to-lesion spread of the skin colour around a lesion "
        "(tbp_lv_*ext) within a patient; 0: constant per patient, as a TBP skin estimate can be",
    )

    @model_validator(mode="after")
    def _check(self) -> Synthetic:
        if self.img_min > self.img_max:
            raise ValueError(f"img_min ({self.img_min}) is larger than img_max ({self.img_max})")
        return self


class Kernel(Frozen):
    """A code competition's scoring run: the hidden test set the kernel predicts and its runtime limit.
    `make submit` estimates the kernel's run time for that size and refuses one over the limit."""

    hidden_test_rows: int = Field(0, ge=0, description="rows of the hidden test set; 0 when unknown")
    runtime_limit_h: float = Field(0, ge=0, description="the kernel's runtime limit in hours; 0 for none")


class Published(Frozen):
    """The metadata files as Kaggle publishes them: `make download` refuses a download whose row counts
    differ (0: unknown, not checked)."""

    train_rows: int = Field(0, ge=0, description="rows of the train metadata file; 0 when unknown")
    test_rows: int = Field(0, ge=0, description="rows of the public test metadata file; 0 when unknown")


class Leaderboard(Frozen):
    """Offline leaderboard: bootstrap size and the simulated public/private split of test patients."""

    public_fraction: float = Field(0.2, gt=0, lt=1, description="share of test patients on the public board")
    n_boot: int = Field(300, ge=10)
    n_splits: int = Field(200, ge=1, description="random public/private splits for the spread")
    seed: int = 0
    top_roc: int = Field(5, ge=1)


class CompetitionConfig(Frozen):
    """One competition: its files, column roles, metric and folds."""

    name: str
    slug: str = Field(description="the Kaggle competition slug; empty for a dataset that is no competition")
    metric: Literal["pauc80", "auc", "macro_auc"]
    classes: tuple[str, ...] = Field(
        (),
        description="multiclass: the target's labels in column order (one probability column each); "
        "empty for a binary 0/1 target",
    )
    code_competition: bool
    columns: Columns
    files: Files
    images: Images
    table: Table
    folds: Folds = Folds()
    synthetic: Synthetic = Synthetic()
    leaderboard: Leaderboard = Leaderboard()
    kernel: Kernel = Kernel()
    published: Published = Published()
    runs_dir: str = Field(RUNS_DIR, description="the runs root: runs/<comp>/ holds every stage's outputs")

    @model_validator(mode="after")
    def _check_roles(self) -> CompetitionConfig:
        for role in ("id", "target", "group"):
            col = getattr(self.columns, role)
            if col not in self.table.columns:
                raise ValueError(f"columns.{role} = {col!r} is not in table.columns")
        if self.columns.target not in self.table.train_only:
            raise ValueError(f"the target column {self.columns.target!r} must be listed in table.train_only")
        if self.classes:
            if len(self.classes) < 3 or len(set(self.classes)) != len(self.classes):
                raise ValueError(f"classes must be 3 or more distinct labels, got {list(self.classes)}")
            if self.metric != "macro_auc":
                raise ValueError(f"a multiclass competition is scored by macro_auc, not {self.metric!r}")
        elif self.metric == "macro_auc":
            raise ValueError("metric macro_auc needs the class labels in `classes`")
        return self

    @property
    def multiclass(self) -> bool:
        return bool(self.classes)

    @property
    def n_classes(self) -> int:
        """2 for a binary target, else the number of classes."""
        return len(self.classes) if self.classes else 2

    @property
    def pred_columns(self) -> list[str]:
        """The probability columns of every prediction file: ['pred'], or one 'pred_<label>' per class."""
        return pred_columns(self.classes)

    @property
    def submission_columns(self) -> list[str]:
        """The sample submission's header: id then target, or id then one column per class."""
        return [self.columns.id, *(self.classes or (self.columns.target,))]


# ----------------------------------------------------------------------------- loading
def available(kind: str) -> list[str]:
    """Names of the YAML files under configs/<kind>/."""
    return sorted(p.stem for p in (CONFIG_ROOT / kind).glob("*.yaml"))


def config_path(kind: str, name: str) -> Path:
    """configs/<kind>/<name>.yaml, or an error that lists the valid names."""
    path = CONFIG_ROOT / kind / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown {kind.rstrip('s')} config {name!r}: no file {path}. "
            f"Valid names: {', '.join(available(kind)) or '(none)'}"
        )
    return path


def read_yaml(path: str | Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(overrides: str | Iterable[str] | None) -> list[tuple[str, Any]]:
    """'a.b=1 c.d=x' (or a list of 'k=v') -> [('a.b', 1), ('c.d', 'x')]; values parsed as YAML."""
    if overrides is None:
        return []
    items = shlex.split(overrides) if isinstance(overrides, str) else list(overrides)
    parsed = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.path=value (e.g. folds.k=3)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        parsed.append((key, value))
    return parsed


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (also inside Optional[...]), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _is_mapping(annotation: Any) -> bool:
    origin = get_origin(annotation)
    return origin in (dict, Mapping) or any(_is_mapping(a) for a in get_args(annotation))


def valid_keys(cls: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted leaf key a config class accepts."""
    keys = []
    for name, field in cls.model_fields.items():
        sub = _model_of(field.annotation)
        if sub is not None:
            keys += valid_keys(
                sub, f"{prefix}{name}.<name>." if _is_named_list(field.annotation) else f"{prefix}{name}."
            )
        elif _is_mapping(field.annotation):
            keys.append(f"{prefix}{name}.<key>")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _is_named_list(annotation: Any) -> bool:
    """A list of models with a `name` (stack `models`): an override addresses one by name."""
    sub = _model_of(annotation)
    origin = get_origin(annotation) or next(
        (get_origin(a) for a in get_args(annotation) if get_origin(a)), None
    )
    return origin in (tuple, list) and sub is not None and "name" in sub.model_fields


def _check_key(cls: type[BaseModel], key: str) -> None:
    model: type[BaseModel] | None = cls
    parts = key.split(".")
    i = 0
    while i < len(parts):
        part = parts[i]
        if model is None:
            raise ConfigError(f"unknown config key {key!r}: {'.'.join(parts[:i])} takes no sub-keys")
        field = model.model_fields.get(part)
        if field is None:
            raise ConfigError(f"unknown config key {key!r}. Valid keys: {', '.join(valid_keys(cls))}")
        if _is_mapping(field.annotation) and _model_of(field.annotation) is None:
            return  # free-form mapping: any sub-key is allowed
        model = _model_of(field.annotation)
        if _is_named_list(field.annotation) and i < len(parts) - 1:
            i += 1  # models.<name>.<key>: the next part names the item (* = every one)
            if i == len(parts) - 1:
                raise ConfigError(f"config key {key!r}: name a field after the model, e.g. {key}.seeds")
        elif model is None and i < len(parts) - 1:
            raise ConfigError(
                f"config key {key!r}: {'.'.join(parts[: i + 1])!r} is a value, not a section. "
                f"Valid keys: {', '.join(valid_keys(cls))}"
            )
        i += 1


def _set(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    *parents, leaf = key.split(".")
    for j, part in enumerate(parents):
        child = node.get(part)
        if isinstance(child, list) and all(isinstance(c, Mapping) for c in child):
            parts = [*parents, leaf]  # models.<name|*>.<rest>: the rest set in each named item
            selector, rest = parts[j + 1], ".".join(parts[j + 2 :])
            names = [c.get("name") for c in child]
            if selector != "*" and selector not in names:
                raise ConfigError(f"override {key}: no {part} item named {selector!r}; names: {names} (or *)")
            node[part] = [dict(c) for c in child]
            for item in node[part]:
                if selector in ("*", item.get("name")):
                    _set(item, rest, value)
            return
        node[part] = dict(child) if isinstance(child, Mapping) else {}
        node = node[part]
    node[leaf] = value


def build_config(
    cls: type[T],
    sources: Sequence[str | Path | Mapping[str, Any]],
    overrides: str | Iterable[str] | None = None,
) -> T:
    """Merge YAML files / dicts in order, apply overrides, validate into `cls`."""
    tree: dict[str, Any] = {}
    for src in sources:
        tree = deep_merge(tree, src if isinstance(src, Mapping) else read_yaml(src))
    for key, value in parse_overrides(overrides):
        _check_key(cls, key)
        _set(tree, key, value)
    try:
        return cls.model_validate(tree)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            got = f" (got {err['input']!r})" if not isinstance(err.get("input"), dict) else ""
            problems.append(f"  {loc}: {err['msg']}{got}")
        raise ConfigError(
            f"invalid {cls.__name__}:\n" + "\n".join(problems) + f"\nValid keys: {', '.join(valid_keys(cls))}"
        ) from None


def load_competition(name: str, overrides: str | Iterable[str] | None = None) -> CompetitionConfig:
    """configs/competitions/<name>.yaml + overrides."""
    return build_config(CompetitionConfig, [config_path("competitions", name)], overrides)


def to_yaml(cfg: BaseModel) -> str:
    """The resolved config as YAML (written beside every run's outputs)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
