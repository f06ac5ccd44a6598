"""The run folders: the one home of the artifact contract between the stages (DESIGN.md, "Artifacts").

    runs/<comp>/                         Runs
      folds.csv, folds.json              the folds pair (one set, folds.json its manifest)
      cache/                             decoded, resized images (data.cache)
      bench/                             the benchmarks' JSON records
      oof/<run>/                         Stage1Run: config.yaml, fold<k>.json + fold<k>.safetensors +
                                         fold<k>.preds.parquet (a fold's set), oof.parquet, test.parquet,
                                         metrics.json (the run's manifest), log.csv, report/
      compare/<A>_vs_<B>/                make compare: compare.csv, logo.csv, compare.md/.png/.json
      stack/<run>/                       StackRun: config.yaml, levels.json, inputs.json, blend.json,
                                         blend_reference.npz, models/<model>/fold<k>/, study.journal,
                                         oof.parquet, test.parquet, metrics.json (manifest),
                                         feature_importance.csv/.png, optuna_history.png, report/,
                                         ablation.csv/.md/.png + ablation.json (manifest)
    submissions/<comp>/                  Submissions: <UTC time>_<name>.csv, ledger.csv, predict/,
                                         kaggle/ (bundle + kernel), kernel-check/, leaderboard.md/.csv,
                                         roc.png

A bundle for a code competition holds the same tree under bundle/runs/ (Runs(bundle / "runs", comp)).
No other module spells one of these names or builds one of these paths (tests/test_layout.py reads the
source to make sure).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from foldstack import artifacts
from foldstack.errors import DataError


class Competition(Protocol):
    """What the run folders need of a config (any CompetitionConfig): its name and runs root."""

    name: str
    runs_dir: str


RUNS_DIR = "runs"  # the default runs root (config key runs_dir)
STAGE1_ROOT, STACK_ROOT = "oof", "stack"  # runs/<comp>/oof/<run>, runs/<comp>/stack/<run>
SUBMISSIONS_DIR = "submissions"
DATA_DIR = "data"  # where `make data` writes a competition, and the default DATA

# the members of run folders
CONFIG = "config.yaml"
METRICS = "metrics.json"  # a run's manifest: the other members are checked against it
OOF = "oof.parquet"
TEST = "test.parquet"
LOG = "log.csv"
LOCK = "run.lock"  # fold jobs writing one stage-1 run folder take it (log.csv, assembling the run)
REPORT = "report"
FOLDS_CSV, FOLDS_JSON = "folds.csv", "folds.json"
LEVELS = "levels.json"
INPUTS = "inputs.json"
BLEND_JSON = "blend.json"
BLEND_REFERENCE = "blend_reference.npz"
MODELS = "models"
STUDY = "study.journal"  # Optuna's journal (and its lock files): it outlives a stack run's outputs
IMPORTANCE_CSV, IMPORTANCE_PNG = "feature_importance.csv", "feature_importance.png"
OPTUNA_PNG = "optuna_history.png"
SHIFT_PNG = "stage1_shift.png"  # inside report/
ABLATION_CSV, ABLATION_MD = "ablation.csv", "ablation.md"
ABLATION_PNG, ABLATION_JSON = "ablation.png", "ablation.json"
ABLATION_REPEATS_CSV = "ablation_repeats.csv"  # make ablate REPEATS=n: every split's scores
ESTIMATOR_JSON = "estimator.json"  # models/<model>/fold<k>/: its kind, parameters and native model files
CHECKPOINT_SUFFIX = ".ckpt.safetensors"  # fold<k>.ckpt.safetensors: a fold's resumable training state
# report/ of a run (foldstack.report)
ROC_PNG, PR_PNG, SCORES_PNG, CONFUSION_PNG = "roc.png", "pr.png", "scores.png", "confusion.png"
THRESHOLDS_CSV, THRESHOLDS_PNG = "thresholds.csv", "thresholds.png"
PER_CLASS_CSV, PER_CLASS_PNG = "per_class.csv", "per_class.png"
REPORT_JSON = "report.json"  # also the kernel check's report in its root
# the stages the kernel and `make predict` save for the kernel check (submit.predict.Stages)
STAGE_CNN, STAGE_FEATURES, STAGE_ENGINES = "cnn_{}.parquet", "features.parquet", "engines.npz"
STAGE_BLEND, STAGES_JSON = "blend.npz", "stages.json"
COMPARE_ROOT = "compare"  # runs/<comp>/compare/<A>_vs_<B>/: make compare
COMPARE_CSV, LOGO_CSV, COMPARE_JSON = "compare.csv", "logo.csv", "compare.json"
COMPARE_MD, COMPARE_PNG = "compare.md", "compare.png"
# what inference reads of a stack run besides its models (a bundle copies these)
RUN_FILES = (CONFIG, METRICS, LEVELS, INPUTS, BLEND_JSON, BLEND_REFERENCE)
LEDGER = "ledger.csv"
SUBMISSION_CSV = "submission.csv"  # what a Kaggle kernel writes in its working folder


# ---------------------------------------------------------------------------------------------- columns
def pred_columns(classes: tuple[str, ...] | list[str]) -> list[str]:
    """The probability columns of every prediction file: ['pred'], or one 'pred_<label>' per class."""
    return [f"pred_{c}" for c in classes] if classes else ["pred"]


def fold_columns(columns: list[str], fold: int) -> list[str]:
    """The test-prediction columns of one fold model: pred_fold<k>, or pred_<label>_fold<k> per class."""
    return [f"{c}_fold{fold}" for c in columns]


def model_pred_columns(columns: list[str], model: str) -> list[str]:
    """A stage-2 model's own OOF columns in its stack's oof.parquet: pred_<model>[_<class>]."""
    return [c.replace("pred", f"pred_{model}", 1) for c in columns]


def stamp() -> str:
    """The UTC time that names a submission file: 20261203T083332Z."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


# ---------------------------------------------------------------------------------------------- folders
@dataclass(frozen=True)
class RunFolder:
    """What every run folder holds: its resolved config, its manifest metrics.json, OOF and test
    predictions, the report."""

    dir: Path

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def config(self) -> Path:
        return self.dir / CONFIG

    @property
    def metrics(self) -> Path:
        return self.dir / METRICS

    @property
    def oof(self) -> Path:
        return self.dir / OOF

    @property
    def test(self) -> Path:
        return self.dir / TEST

    @property
    def report(self) -> Path:
        return self.dir / REPORT

    def finished(self) -> bool:
        """Its outputs were assembled (metrics.json and oof.parquet exist; read_metrics checks them)."""
        return self.metrics.exists() and self.oof.exists()

    def read_metrics(self, deep: bool = True, only: tuple[str, ...] | None = None) -> dict:
        """metrics.json, after checking the members it lists (artifacts.read_manifest)."""
        return artifacts.read_manifest(self.metrics, deep=deep, only=only)

    def write_config(self, resolved_yaml: str, folder: Path | None = None) -> Path:
        """The resolved config (config.to_yaml) with the git commit on top (into `folder`, e.g. a set's
        workdir)."""
        path = (folder or self.dir) / CONFIG
        return artifacts.write_text(path, f"# git commit: {artifacts.git_commit()}\n{resolved_yaml}")


@dataclass(frozen=True)
class Stage1Run(RunFolder):
    """runs/<comp>/oof/<run>/: k fold sets, then the assembled run."""

    @property
    def log(self) -> Path:
        return self.dir / LOG

    @property
    def lock(self) -> Path:
        return self.dir / LOCK

    def fold_prefix(self, fold: int) -> Path:
        """fold<k>: the stem of a fold's files (its training checkpoint is <prefix>.ckpt.safetensors)."""
        return self.dir / f"fold{fold}"

    @staticmethod
    def fold_record_name(fold: int) -> str:
        return f"fold{fold}.json"

    @staticmethod
    def fold_members(fold: int) -> tuple[str, str]:
        """The files of a fold's set besides its record fold<k>.json (the manifest)."""
        return f"fold{fold}.safetensors", f"fold{fold}.preds.parquet"

    def fold_record(self, fold: int) -> Path:
        return self.dir / self.fold_record_name(fold)

    def fold_weights(self, fold: int) -> Path:
        return self.dir / self.fold_members(fold)[0]

    def fold_preds(self, fold: int) -> Path:
        return self.dir / self.fold_members(fold)[1]

    def fold_files(self) -> list[Path]:
        """Every fold's record, weights and predictions that exist (what a bundle copies)."""
        found = sorted(self.dir.glob("fold[0-9]*.json")) + sorted(self.dir.glob("fold[0-9]*.safetensors"))
        return found + sorted(self.dir.glob("fold[0-9]*.preds.parquet"))

    def folds_with_record(self, k: int) -> list[int]:
        return [f for f in range(k) if self.fold_record(f).exists()]


@dataclass(frozen=True)
class StackInputs:
    """inputs.json of a stack run: the stage-1 runs it stacked and its feature columns, in order."""

    stage1_runs: list[str]
    columns: list[str]


@dataclass(frozen=True)
class StackRun(RunFolder):
    """runs/<comp>/stack/<run>/: one set (metrics.json its manifest) beside the Optuna journal."""

    @property
    def levels(self) -> Path:
        return self.dir / LEVELS

    @property
    def inputs(self) -> Path:
        return self.dir / INPUTS

    @property
    def blend_json(self) -> Path:
        return self.dir / BLEND_JSON

    @property
    def blend_reference(self) -> Path:
        return self.dir / BLEND_REFERENCE

    @property
    def models(self) -> Path:
        return self.dir / MODELS

    @property
    def study(self) -> Path:
        return self.dir / STUDY

    def model_fold(self, model: str, fold: int) -> Path:
        """models/<model>/fold<k>/: one fitted stage-2 model."""
        return model_folder(self.models, model, fold)

    def is_run(self) -> bool:
        return self.inputs.exists()

    def read_inputs(self) -> StackInputs:
        if not self.inputs.exists():
            raise DataError(
                f"{self.inputs} is missing: {self.dir} is not a finished stack run; rerun `make stack`"
            )
        body = json.loads(self.inputs.read_text())
        return StackInputs(list(body["stage1_runs"]), list(body["columns"]))

    @staticmethod
    def write_inputs(folder: Path, inputs: StackInputs) -> Path:
        return artifacts.write_json(
            folder / INPUTS, {"stage1_runs": inputs.stage1_runs, "columns": inputs.columns}
        )

    def read_levels(self) -> dict[str, list[str]]:
        return json.loads(self.levels.read_text())

    @property
    def ablation_json(self) -> Path:
        return self.dir / ABLATION_JSON


@dataclass(frozen=True)
class Runs:
    """runs/<comp>/ of one competition: the folds, the cache and every stage-1 and stack run."""

    root: Path  # the runs root, holding <comp>/
    comp: str

    @classmethod
    def of(cls, cfg: Competition) -> Runs:
        return cls(Path(cfg.runs_dir), cfg.name)

    @property
    def dir(self) -> Path:
        return self.root / self.comp

    @property
    def folds_csv(self) -> Path:
        return self.dir / FOLDS_CSV

    @property
    def folds_json(self) -> Path:
        return self.dir / FOLDS_JSON

    @property
    def cache(self) -> Path:
        return self.dir / "cache"

    def bench(self, name: str) -> Path:
        """runs/<comp>/bench/<name>.json: a benchmark's record."""
        return self.dir / "bench" / f"{name}.json"

    @property
    def stage1_root(self) -> Path:
        return self.dir / STAGE1_ROOT

    @property
    def stack_root(self) -> Path:
        return self.dir / STACK_ROOT

    def compare(self, a: str, b: str) -> Path:
        """compare/<a>_vs_<b>/: the repeated-split comparison of two stack runs (make compare)."""
        return self.dir / COMPARE_ROOT / f"{a}_vs_{b}"

    def stage1(self, name: str) -> Stage1Run:
        return Stage1Run(self.stage1_root / name)

    def stack(self, name: str) -> StackRun:
        return StackRun(self.stack_root / name)

    def stage1_runs(self, finished: bool = True) -> list[Stage1Run]:
        """The stage-1 run folders (those with assembled outputs), in name order; a run set that a killed
        process left half committed is finished first."""
        out = []
        for p in sorted(self.stage1_root.glob("*")):
            artifacts.recover(p)
            run = Stage1Run(p)
            if p.is_dir() and (run.finished() or not finished):
                out.append(run)
        return out

    def stack_runs(self) -> list[StackRun]:
        """The stack runs that have an oof.parquet, in name order."""
        return [StackRun(p.parent) for p in sorted(self.stack_root.glob(f"*/{OOF}"))]

    def stack_tests(self) -> list[Path]:
        """Every stack run's test.parquet, oldest first (by modification time)."""
        return sorted(self.stack_root.glob(f"*/{TEST}"), key=lambda p: p.stat().st_mtime)


def model_folder(models: Path, model: str, fold: int) -> Path:
    """<models>/<model>/fold<k>/ (models: a stack run's models/ or the same folder being written)."""
    return models / model / f"fold{fold}"


def bundle_runs(bundle: Path, comp: str) -> Runs:
    """The runs tree inside a code competition's bundle: bundle/runs/<comp>/..."""
    return Runs(bundle / RUNS_DIR, comp)


def runs_of(run: RunFolder) -> Runs:
    """The runs tree a stage-1 or stack run folder lies in (runs/<comp>/<oof|stack>/<run>)."""
    return Runs(run.dir.parents[2], run.dir.parents[1].name)


def stack_runs_beside(folder: Path) -> list[str]:
    """The names of the finished stack runs in the folder that holds `folder` (which may not exist)."""
    return sorted(p.name for p in folder.parent.glob("*") if StackRun(p).is_run())


def is_stack_folder(folder: Path) -> bool:
    return folder.parent.name == STACK_ROOT


def run_folder(folder: Path) -> RunFolder:
    """The run folder a path is (a stage-1 or a stack run, by the folder it lies in)."""
    return StackRun(folder) if is_stack_folder(folder) else Stage1Run(folder)


def is_stage1_folder(folder: Path) -> bool:
    return folder.parent.name == STAGE1_ROOT


@dataclass(frozen=True)
class Submissions:
    """submissions/<comp>/: the submission files and their ledger, predictions of `make predict`, the
    Kaggle staging folder, the kernel check's root and the offline leaderboard."""

    dir: Path

    @classmethod
    def of(cls, cfg: Competition, root: Path | str = SUBMISSIONS_DIR) -> Submissions:
        return cls(Path(root) / cfg.name)

    def csv(self, when: str, name: str, n: int = 1) -> Path:
        """<UTC time>_<name>.csv (<UTC time>_<name>-<n>.csv for the n-th file of one second)."""
        return self.dir / (f"{when}_{name}.csv" if n == 1 else f"{when}_{name}-{n}.csv")

    @property
    def ledger(self) -> Path:
        return self.dir / LEDGER

    def predict_csv(self, name: str) -> Path:
        return self.dir / "predict" / f"{stamp()}_{name}.csv"

    @property
    def staging(self) -> Path:
        """kaggle/: the bundle and kernel folders `make submit` uploads, built as one set."""
        return self.dir / "kaggle"

    @property
    def kernel_check_root(self) -> Path:
        """kernel-check/: the Kaggle-like root of `make kernel-check` (made afresh by each check)."""
        return self.dir / "kernel-check"

    @property
    def kernel_check_report(self) -> Path:
        return self.kernel_check_root / REPORT_JSON

    @property
    def leaderboard_md(self) -> Path:
        return self.dir / "leaderboard.md"

    @property
    def leaderboard_csv(self) -> Path:
        return self.dir / "leaderboard.csv"

    @property
    def roc_png(self) -> Path:
        return self.dir / "roc.png"


def own_runs_root(name: str) -> Path:
    """runs/<name>: a runs root of its own, e.g. for a benchmark's data apart from the embedded one's."""
    return Path(RUNS_DIR) / name


def default_data_dir(cfg: Competition) -> Path:
    """data/<comp>: where `make data` writes a competition, and the default DATA."""
    return Path(DATA_DIR) / cfg.name
