"""A synthetic competition of ISIC 2024's real size and imbalance, for benchmarks.

`write_isic2024_scale` writes a folder in the exact ISIC 2024 Kaggle layout: train-metadata.csv (the
config's 55 columns), test-metadata.csv (the 44 test columns), train-image.hdf5 / test-image.hdf5 (one
root-level scalar |S<n> JPEG dataset per isic_id) and sample_submission.csv, plus test-labels.csv
(not a Kaggle file: the test targets, as the embedded synthetic competition writes them for scoring).

By default: 401,059 train rows, 393 positives, 1,042 patients as in the real train set. Patients'
crop counts are heavy-tailed (lognormal, sigma 1.2: median ~190, the largest several thousand), and
positives are drawn with the lesion model's malignancy odds, so they spread over a few hundred
patients and patient-grouped stratified folds are possible. The real public test-metadata.csv has 3
rows; `n_test` defaults to 1,000 so that test prediction takes a measurable time.

Images are cheap: `distinct` crops are encoded once and their bytes reused under many ids. One eighth
of them are "malignant-looking" (a larger, darker, blue-grey blob); a row gets one of those when its
lesion has the image cue (75% of positives, 1.5% of negatives, as in foldstack.synth.lesions), so a
CNN has something to learn. Columns come from the same lesion model as `make data` (isic2024.py).

A complete folder is recorded in synthetic.json (the parameters, file sizes and a summary), written
last and removed first; a second call with the same parameters finds it and returns at once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd

from foldstack import artifacts
from foldstack.config import CompetitionConfig, load_competition
from foldstack.errors import ConfigError, DataError
from foldstack.synth.isic2024 import metadata_frame
from foldstack.synth.lesions import _calibrate, _ids, lesion_latents, lesion_logit, make_patients

N_TRAIN = 401_059
POSITIVES = 393
PATIENTS = 1_042
N_TEST = 1_000
DISTINCT = 400
PATIENT_SIGMA = 1.2  # lognormal spread of crops per patient
MALIGNANT_SHARE = 8  # one crop in this many is malignant-looking
FORMAT = 1  # bump when the output for the same parameters changes: older folders are then rewritten
RECORD = "synthetic.json"
DEFAULT_ROOT = Path("data/bench-isic2024")


def synthetic_crop(rng: np.random.Generator, malignant: bool = False) -> bytes:
    """One JPEG like an ISIC 2024 tile: skin tone, texture, a darker blob; 100-200 px, mostly 3-8 KB.

    `malignant`: the blob is 1.5x larger, darker and blue-grey (a cue a CNN can learn). The benign
    crop draws exactly the random numbers it always did, so a seed gives the same bytes as before.
    """
    h = int(rng.integers(100, 201))
    w = int(np.clip(h + rng.integers(-10, 11), 100, 200))
    skin = np.array([rng.uniform(120, 200), rng.uniform(130, 190), rng.uniform(170, 235)])  # BGR
    texture = cv2.GaussianBlur(rng.normal(0, 1, (h, w, 3)).astype(np.float32), (0, 0), 1.6) * 40
    yy, xx = np.mgrid[:h, :w]
    cy, cx = h / 2 + rng.normal(0, h / 10), w / 2 + rng.normal(0, w / 10)
    r = rng.uniform(0.12, 0.3) * min(h, w) * (1.5 if malignant else 1.0)
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
    img = skin + texture + rng.normal(0, 3, (h, w, 3)) - blob * rng.uniform(60, 120)
    if malignant:  # darker, and a blue-grey veil: red and green fall more than blue
        img = img - blob * (rng.uniform(30, 50) + np.array([0.0, 25.0, 45.0]))
    quality = int(rng.integers(83, 94))
    ok, enc = cv2.imencode(".jpg", np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode a synthetic crop")
    return enc.tobytes()


def write_crops_hdf5(path: Path, ids: list[str], which: np.ndarray, crops: list[bytes]) -> None:
    """Write one root-level scalar |S<n> dataset per id holding crops[which[i]] (low-level h5py: about
    4x faster than create_dataset), in the order given. Written to a temp name, renamed when complete."""
    if len(ids) != len(which):
        raise ValueError(f"{len(ids)} ids but {len(which)} crop indices")
    space = h5py.h5s.create(h5py.h5s.SCALAR)
    typed = []
    for b in crops:
        arr = np.array(b, dtype=f"S{len(b)}")
        typed.append((h5py.h5t.py_create(arr.dtype), arr))  # NULLPAD, as h5py writes np.bytes_
    with artifacts.atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for name, k in zip(ids, np.asarray(which).tolist(), strict=True):
            tid, arr = typed[k]
            dset = h5py.h5d.create(f.id, name.encode(), tid, space)
            dset.write(h5py.h5s.ALL, h5py.h5s.ALL, arr)


def _byte_percentiles(crops: list[bytes]) -> list[int]:
    sizes = np.array([len(b) for b in crops])
    return np.percentile(sizes, [10, 50, 90]).round().astype(int).tolist()


def build_hdf5(path: Path, n: int, distinct: int) -> dict:
    """Write n scalar |S datasets ISIC_0000000... cycling over `distinct` encoded crops (seed 0)."""
    rng = np.random.default_rng(0)
    crops = [synthetic_crop(rng) for _ in range(distinct)]
    write_crops_hdf5(path, [f"ISIC_{i:07d}" for i in range(n)], np.arange(n) % distinct, crops)
    return {"n": n, "distinct": distinct, "crop_bytes_p10_p50_p90": _byte_percentiles(crops)}


def patient_sizes(
    rng: np.random.Generator, patients: int, n: int, sigma: float = PATIENT_SIGMA
) -> np.ndarray:
    """Rows per patient: heavy-tailed (lognormal shares), at least 1 each, summing exactly to n."""
    share = rng.lognormal(0.0, sigma, patients)
    share /= share.sum()
    extra = share * (n - patients)
    sizes = 1 + np.floor(extra).astype(np.int64)
    short = n - int(sizes.sum())  # 0 <= short < patients: one more row for the largest remainders
    sizes[np.argsort(np.floor(extra) - extra, kind="stable")[:short]] += 1
    return sizes


def _exact_targets(rng: np.random.Generator, logit: np.ndarray, positives: int) -> np.ndarray:
    """0/1 with exactly `positives` ones, drawn without replacement with the calibrated malignancy
    probabilities as weights (Gumbel top-k), so risky patients and sites get more of them."""
    n = len(logit)
    target = np.zeros(n, dtype=np.int64)
    if positives:
        prob = 1 / (1 + np.exp(-(logit + _calibrate(logit, positives / n))))
        keys = np.log(prob) - np.log(-np.log(rng.random(n)))
        target[np.argpartition(-keys, positives - 1)[:positives]] = 1
    return target


def _split(
    cfg: CompetitionConfig, rng: np.random.Generator, n: int, positives: int, patients: int, taken: set[str]
) -> tuple[pd.DataFrame, np.ndarray]:
    """The metadata frame (sorted by isic_id) and each row's image cue (True: malignant-looking crop)."""
    people = make_patients(cfg.synthetic, rng, patients, taken)
    people["n_lesions"] = patient_sizes(rng, patients, n)
    p = people.loc[people.index.repeat(people["n_lesions"])].reset_index(drop=True)
    loc, logit = lesion_logit(rng, p)
    les = lesion_latents(rng, p, loc, _exact_targets(rng, logit, positives))
    meta = metadata_frame(cfg, les, _ids(rng, n, "ISIC", taken), rng, taken)
    order = np.argsort(meta[cfg.columns.id].to_numpy(), kind="stable")
    return meta.iloc[order].reset_index(drop=True), les["cue_image"].to_numpy()[order]


def _split_summary(cfg: CompetitionConfig, meta: pd.DataFrame) -> dict:
    c = cfg.columns
    per_patient = meta.groupby(c.group).size()
    pos = meta[c.target] == 1
    return {
        "rows": len(meta),
        "positives": int(pos.sum()),
        "patients": int(per_patient.size),
        "patients_with_positives": int(meta.loc[pos, c.group].nunique()),
        "rows_per_patient_min_median_max": [
            int(per_patient.min()),
            float(per_patient.median()),
            int(per_patient.max()),
        ],
    }


def _files(cfg: CompetitionConfig) -> list[str]:
    f = cfg.files
    images = [*cfg.images.paths("train"), *cfg.images.paths("test")]
    return [f.train, f.test, f.sample_submission, f.test_labels, *images]


def _complete(out: Path, params: dict) -> dict | None:
    """The record of a complete folder written with `params` (every file there, at its recorded size)."""
    try:
        rec = json.loads((out / RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("params") != params or not rec.get("file_bytes"):
        return None
    for name, size in rec["file_bytes"].items():
        path = out / name
        if not path.is_file() or path.stat().st_size != size:
            return None
    return rec


def _check_params(
    n: int, positives: int, patients: int, n_test: int, test_patients: int, distinct: int
) -> None:
    problems = []
    if patients < 1 or n < patients:
        problems.append(f"n ({n}) must be at least patients ({patients}) and patients at least 1")
    if not 0 < positives < n:
        problems.append(f"positives ({positives}) must be between 1 and n - 1 ({n - 1})")
    if test_patients < 1 or n_test < test_patients:
        problems.append(f"n_test ({n_test}) must be at least test_patients ({test_patients}), at least 1")
    if distinct < MALIGNANT_SHARE:
        problems.append(f"distinct ({distinct}) must be at least {MALIGNANT_SHARE}")
    if problems:
        raise ConfigError("write_isic2024_scale: " + "; ".join(problems))


def _write_images(cfg, out: Path, seed: int, distinct: int, splits) -> tuple[list[bytes], int]:
    """`distinct` crops encoded once (the first 1/MALIGNANT_SHARE malignant-looking), each row given one
    of the kind its cue says, written as each split's HDF5; (the crops, how many look malignant)."""
    crop_rng = np.random.default_rng((seed, 1))
    n_mal = distinct // MALIGNANT_SHARE
    crops = [synthetic_crop(crop_rng, malignant=k < n_mal) for k in range(distinct)]
    c = cfg.columns
    for split, meta, cue in splits:
        mal, ben = crop_rng.integers(0, n_mal, len(meta)), crop_rng.integers(n_mal, distinct, len(meta))
        which = np.where(cue, mal, ben)
        write_crops_hdf5(out / cfg.images.paths(split)[0], meta[c.id].tolist(), which, crops)
    return crops, n_mal


def _write_tables(cfg, out: Path, train: pd.DataFrame, test: pd.DataFrame) -> None:
    """The metadata CSVs, the test labels and the sample submission; every file of the layout must exist."""
    c, f = cfg.columns, cfg.files
    artifacts.write_csv(out / f.train, train)
    artifacts.write_csv(out / f.test, test[cfg.table.test_columns])
    artifacts.write_csv(out / f.test_labels, test[[c.id, c.group, c.target]])
    artifacts.write_csv(out / f.sample_submission, pd.DataFrame({c.id: test[c.id], c.target: 0.3}))
    missing = [name for name in _files(cfg) if not (out / name).is_file()]
    if missing:
        raise DataError(f"{out}: {', '.join(missing)} not written (expected every file of the layout)")


def write_isic2024_scale(
    out_dir: Path,
    n: int = N_TRAIN,
    positives: int = POSITIVES,
    patients: int = PATIENTS,
    n_test: int = N_TEST,
    test_patients: int | None = None,
    distinct: int = DISTINCT,
    seed: int = 0,
) -> dict:
    """Write the ISIC 2024-size synthetic competition into `out_dir`; return its record.

    Skips the work (the record then has "skipped": True) when `out_dir` already holds a complete copy
    written with the same parameters. `test_patients` defaults to n_test / (n / patients), at least 1;
    the test split gets round(n_test * positives / n) positives.
    """
    out = Path(out_dir)
    if test_patients is None:
        test_patients = max(1, round(n_test * patients / n))
    _check_params(n, positives, patients, n_test, test_patients, distinct)
    params = {"format": FORMAT, "n": n, "positives": positives, "patients": patients, "n_test": n_test}
    params |= {"test_patients": test_patients, "distinct": distinct, "seed": seed}
    done = _complete(out, params)
    if done is not None:
        return done | {"skipped": True}
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    (out / RECORD).unlink(missing_ok=True)  # the folder is incomplete until the record is rewritten
    cfg = load_competition("isic2024", "")
    rng = np.random.default_rng(seed)
    taken: set[str] = set()
    train, train_cue = _split(cfg, rng, n, positives, patients, taken)
    test_pos = round(n_test * positives / n)
    test, test_cue = _split(cfg, rng, n_test, test_pos, test_patients, taken)
    t_tables = time.perf_counter()
    splits = (("train", train, train_cue), ("test", test, test_cue))
    crops, n_mal = _write_images(cfg, out, seed, distinct, splits)
    t_images = time.perf_counter()
    _write_tables(cfg, out, train, test)
    t_csv = time.perf_counter()
    record = {
        "params": params,
        "train": _split_summary(cfg, train),
        "test": _split_summary(cfg, test),
        "images": {"distinct": distinct, "malignant_looking": n_mal}
        | {
            "train_malignant_looking_rows": int(train_cue.sum()),
            "crop_bytes_p10_p50_p90": _byte_percentiles(crops),
        },
        "file_bytes": {name: (out / name).stat().st_size for name in _files(cfg)},
        "seconds": {
            "tables": round(t_tables - t0, 1),
            "images": round(t_images - t_tables, 1),
            "csv": round(t_csv - t_images, 1),
            "total": round(time.perf_counter() - t0, 1),
        },
        "git_commit": artifacts.git_commit(),
    }
    artifacts.write_json(out / RECORD, record)
    return record | {"skipped": False}


def ensure_isic2024_scale(root: Path = DEFAULT_ROOT, **kw: int) -> Path:
    """The folder `root` holding the ISIC 2024-size synthetic competition (written unless complete)."""
    write_isic2024_scale(Path(root), **kw)
    return Path(root)
