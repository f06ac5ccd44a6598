"""make bench-load: wall time of a small `make stack` alone, then beside a running stage-1 training.

The data is the embedded synthetic ISIC 2024 at a small size (~3,500 train rows, written once under
runs/bench_load/). The stack is STACK=lgb_xgb_cb (LightGBM + XGBoost + CatBoost; SET="only_models=[lgbm,xgb]"
for the two models of the README's figures) tabular only, N_TRIALS=5 per model, each timing on a fresh
study. The load is `pipelines/oof.py` (EfficientNetV2-B1, small CPU profile, torch on
all cores) on the same data, started first and killed after the loaded timing. Target: loaded / alone
at most 2.5. --repo times another checkout's stack pipeline (e.g. an older commit, for a before/after).
"""

from __future__ import annotations

from pathlib import Path

from foldstack.cli import base_parser, run_main
from foldstack.commands.bench import REPO, LoadBench, bench_load
from foldstack.runs import own_runs_root
from foldstack.stage2.config import DEFAULT_STACK


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--stack", default=DEFAULT_STACK)
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--repo", type=Path, default=REPO, help="checkout whose pipelines/stack.py is timed")
    p.add_argument("--work", type=Path, default=own_runs_root("bench_load"))
    p.add_argument("--warmup", type=float, default=25, help="seconds the load runs before the timing")
    a = p.parse_args(argv)
    return bench_load(LoadBench(a.comp, a.stack, a.trials, a.repo, a.work.resolve(), a.overrides), a.warmup)


if __name__ == "__main__":
    run_main(main)
