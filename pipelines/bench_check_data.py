"""make bench-check-data: time the full image check on a synthetic train-image.hdf5 like ISIC 2024's.

    python pipelines/bench_check_data.py [--n 401059] [--distinct 400] [--workers 0] [--out data/...]

Builds (once; --regenerate to rebuild) an HDF5 of --n JPEG crops of 100-200 px and ~3-8 KB, as in
ISIC 2024's train-image.hdf5 (a root-level scalar |S<n> dataset per isic_id): --distinct crops are
encoded once and their bytes reused under different ids. Then times what `make folds` does with the
images (one id listing, every train id looked up) and what `make check-data` does (every image read,
checked and decoded on every core this process may use), and prints images/s and wall time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from foldstack.cli import run_main
from foldstack.commands.bench import N_ISIC2024, bench_check_data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=N_ISIC2024, help="images (ISIC 2024 train: 401,059)")
    p.add_argument("--distinct", type=int, default=400, help="distinct crops encoded, reused under ids")
    p.add_argument("--workers", type=int, default=0, help="0: every core this process may use")
    p.add_argument("--out", type=Path, default=Path("data/bench_check_data/train-image.hdf5"))
    p.add_argument("--one-worker", type=int, default=20_000, help="images timed on one worker first")
    p.add_argument("--regenerate", action="store_true", help="rebuild the HDF5 even if it exists")
    a = p.parse_args(argv)
    if a.n < 1 or a.distinct < 1 or a.workers < 0 or a.one_worker < 1:
        p.error("--n, --distinct and --one-worker must be at least 1, --workers at least 0")
    return bench_check_data(a.out, a.n, a.distinct, a.workers, a.one_worker, a.regenerate)


if __name__ == "__main__":
    run_main(main)
