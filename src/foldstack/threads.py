"""CPU thread policy of stage 2: how many threads a GBDT may use, and OpenMP threads that sleep when idle.

LightGBM and XGBoost run their trees on OpenMP (libgomp). By default they start one thread per core
of the machine and, between parallel regions, keep those threads spinning on the CPU. Beside another
busy process (a stage-1 training run, another tuning worker) that spinning steals the cores the other
process needs and slows both down. So stage 2 asks for the cores this process may use (its CPU
affinity, e.g. a `taskset` or a container's cpuset), shared between tuning workers, and sets the OpenMP
wait policy to PASSIVE (idle threads sleep). The wait policy is read once, when the OpenMP runtime
loads, so `passive_openmp()` must run before lightgbm/xgboost/torch are imported; processes spawned
afterwards inherit it through the environment. Values already set in the environment win.
"""

from __future__ import annotations

import os

# libgomp (GCC, used by the LightGBM/XGBoost/torch wheels): OMP_WAIT_POLICY=PASSIVE sets its spin
# count to 0, GOMP_SPINCOUNT says so explicitly; KMP_BLOCKTIME is the same knob for LLVM/Intel OpenMP.
PASSIVE_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0", "KMP_BLOCKTIME": "0"}


def passive_openmp() -> None:
    """Make OpenMP threads sleep, not spin, when idle (for this process if called before the OpenMP
    runtime loads, and for every process started afterwards). Variables already set are kept."""
    for key, value in PASSIVE_ENV.items():
        os.environ.setdefault(key, value)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def gbdt_threads(workers: int = 1) -> int:
    """Threads for one GBDT fit when `workers` processes share this process's cores (at least 1)."""
    return max(1, usable_cores() // max(1, workers))
