"""Ensemble members: a stack config's models, each an engine x feature subset x seeds.

A member sees the stack's feature matrix without what its `drop` names (feature families or columns) and,
with `stage1: [runs]`, without the other stage-1 runs' columns (and the cross-run statistics, which
mix every run). The families are read from the column names, so the same rule holds in `make stack`,
`make compare`, `make ablate` and at predict time.

Families (disjoint):
- raw: the competition's metadata columns, numeric and categorical;
- engineered: the engineered lesion features (stage2.features.ENGINEERED, CATEGORICAL);
- patient_norm: every feature z-scored within its patient (`*_pz`);
- group_norm: z / ratio / rank within features.group_norm groups (`*__<stat>_by_<keys>`);
- ugly_duckling, outlier, age (stage2.context), lesion_count;
- cnn_cross: the cross-run statistics (`cnn__runs_*`);
- stage1:<run>: every column made from that stage-1 run.
"""

from __future__ import annotations

from foldstack.errors import ConfigError, DataError
from foldstack.stage2.cnn_features import CROSS_PREFIX
from foldstack.stage2.config import ModelSpec, StackConfig
from foldstack.stage2.context import AGE_DECADE, AGE_TAG, OUTLIER, UGLY_DUCKLING
from foldstack.stage2.features import CATEGORICAL, CNN_PREFIX, ENGINEERED

FEATURE_FAMILIES = (
    "raw",
    "engineered",
    "patient_norm",
    "group_norm",
    "ugly_duckling",
    "outlier",
    "age",
    "lesion_count",
    "cnn_cross",
)


def _family(c: str) -> str:
    if c == "patient_lesion_count":
        return "lesion_count"
    if c in UGLY_DUCKLING:
        return "ugly_duckling"
    if c in OUTLIER:
        return "outlier"
    if c == AGE_DECADE or c.endswith(AGE_TAG):
        return "age"
    if c.endswith("_pz"):
        return "patient_norm"
    if "_by_" in c and c.split("__")[-1].startswith(("z_by_", "ratio_by_", "rank_by_")):
        return "group_norm"
    if c in ENGINEERED or c in CATEGORICAL:
        return "engineered"
    return "raw"


def column_families(columns: list[str], stage1_runs: list[str]) -> dict[str, list[str]]:
    """Family name -> its columns; families without a column are left out."""
    fams: dict[str, list[str]] = {f: [] for f in FEATURE_FAMILIES} | {f"stage1:{r}": [] for r in stage1_runs}
    longest_first = sorted(stage1_runs, key=len, reverse=True)  # run 'a_b' before run 'a'
    for c in columns:
        if c.startswith(CROSS_PREFIX):
            fams["cnn_cross"].append(c)
        elif c.startswith(CNN_PREFIX):
            run = next((r for r in longest_first if c == f"cnn_{r}" or c.startswith(f"cnn_{r}_")), None)
            if run is None:
                raise DataError(f"feature {c!r} belongs to no stage-1 run of the stack ({stage1_runs})")
            fams[f"stage1:{run}"].append(c)
        else:
            fams[_family(c)].append(c)
    return {f: cols for f, cols in fams.items() if cols}


def check_members(cfg: StackConfig, stage1_runs: list[str]) -> None:
    """Refused before any fitting: a member naming a stage-1 run the stack does not stack, or a family
    that does not exist (columns are checked against the matrix by member_columns)."""
    families = [*FEATURE_FAMILIES, *(f"stage1:{r}" for r in stage1_runs)]
    for spec in cfg.models:
        unknown = [r for r in spec.stage1 or () if r not in stage1_runs]
        if unknown:
            raise ConfigError(
                f"model {spec.name}: stage1 names run(s) {unknown} that this stack does not stack; "
                f"its runs: {', '.join(stage1_runs) or 'none'}"
            )
        bad = [d for d in spec.drop if d.startswith("stage1:") and d not in families]
        if bad:
            raise ConfigError(f"model {spec.name}: drop names {bad}; valid families: {', '.join(families)}")


def member_columns(spec: ModelSpec, columns: list[str], stage1_runs: list[str]) -> list[str]:
    """The columns (in matrix order) the member sees; a `drop` entry that is neither a family nor a
    column is refused naming both."""
    fams = column_families(columns, stage1_runs)
    gone: set[str] = set()
    for d in spec.drop:
        if d in fams:
            gone |= set(fams[d])
        elif d in columns:
            gone.add(d)
        elif d not in FEATURE_FAMILIES:  # a family this stack has no column of drops nothing
            raise ConfigError(
                f"model {spec.name}: drop {d!r} is neither a feature family ({', '.join(fams)}) nor a "
                f"column of the feature matrix"
            )
    if spec.stage1 is not None:
        for r in stage1_runs:
            if r not in spec.stage1:
                gone |= set(fams.get(f"stage1:{r}", []))
        gone |= set(fams.get("cnn_cross", []))
    kept = [c for c in columns if c not in gone]
    if not kept:
        raise ConfigError(f"model {spec.name}: its drop/stage1 leave no feature")
    return kept
