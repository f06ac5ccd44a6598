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
import json
import os
import platform
import resource
import subprocess
import time
from pathlib import Path

from foldstack import artifacts
from foldstack.cli import run_main
from foldstack.data.image_check import available_cores, scan_images
from foldstack.data.images import HDF5Images
from foldstack.synth.scale import build_hdf5

N_ISIC2024 = 401_059


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the pool's workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=N_ISIC2024, help="images (ISIC 2024 train: 401,059)")
    p.add_argument("--distinct", type=int, default=400, help="distinct crops encoded, reused under ids")
    p.add_argument("--workers", type=int, default=0, help="0: every core this process may use")
    p.add_argument("--out", type=Path, default=Path("data/bench_check_data/train-image.hdf5"))
    p.add_argument("--one-worker", type=int, default=20_000, help="images timed on one worker first")
    p.add_argument("--regenerate", action="store_true", help="rebuild the HDF5 even if it exists")
    args = p.parse_args(argv)
    if args.n < 1 or args.distinct < 1 or args.workers < 0 or args.one_worker < 1:
        p.error("--n, --distinct and --one-worker must be at least 1, --workers at least 0")
    info_path = args.out.with_suffix(".json")
    info = json.loads(info_path.read_text()) if info_path.exists() and args.out.exists() else {}
    if args.regenerate or (info.get("n"), info.get("distinct")) != (args.n, args.distinct):
        t = time.perf_counter()
        info = build_hdf5(args.out, args.n, args.distinct)
        info["build_seconds"] = round(time.perf_counter() - t, 1)
        artifacts.write_json(info_path, info)
        print(f"built {args.out} in {info['build_seconds']} s")
    mb = args.out.stat().st_size / 1e6
    p10, p50, p90 = info["crop_bytes_p10_p50_p90"]
    print(
        f"{args.out}: {info['n']} JPEGs ({info['distinct']} distinct crops, 100-200 px, "
        f"{p10}/{p50}/{p90} bytes p10/p50/p90), {mb:.0f} MB"
    )
    cores, workers = available_cores(), args.workers or available_cores()
    load = os.getloadavg()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, {cores} usable; load {load[0]:.2f}")

    store = HDF5Images(args.out)
    ids = [f"ISIC_{i:07d}" for i in range(info["n"])]
    t = time.perf_counter()
    missing = store.missing_ids(ids)
    listing = time.perf_counter() - t
    print(
        f"folds' image check (one keys() listing, {len(ids)} ids looked up): {listing:.2f} s, "
        f"{len(missing)} missing"
    )
    store.close()

    few = ids[: args.one_worker]
    t = time.perf_counter()
    scan_images(store, few, workers=1, progress=False)
    one_rate = len(few) / (time.perf_counter() - t)
    print(f"one worker on the first {len(few)} images: {one_rate:,.0f} images/s")

    t, cpu0 = time.perf_counter(), _cpu_seconds()
    scan = scan_images(store, ids, workers=workers, label="check")
    wall, cpu = time.perf_counter() - t, _cpu_seconds() - cpu0
    rate = scan.checked / wall
    print(f"check of every image on {workers} worker(s): {wall:.1f} s wall, {rate:,.0f} images/s")
    print(
        f"  CPU time {cpu:.1f} s ({cpu / scan.checked * 1e6:.0f} us per image; {cpu / wall:.2f} cores busy "
        f"on average, load {os.getloadavg()[0]:.2f} after)"
    )
    print(f"  {scan.summary()}")
    result = {
        "images": scan.checked,
        "bad": len(scan.bad),
        "workers": workers,
        "wall_seconds": round(wall, 2),
        "images_per_second": round(rate),
        "one_worker_images_per_second": round(one_rate),
        "cpu_seconds": round(cpu, 1),
        "folds_listing_seconds": round(listing, 3),
        "cpu": cpu_model(),
        "cores_usable": cores,
        "load_before": round(load[0], 2),
    }
    print(json.dumps(result))
    return 0 if not scan.bad and not missing else 1


if __name__ == "__main__":
    run_main(main)
