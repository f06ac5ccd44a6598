"""Draw a synthetic dermoscopy-like lesion crop and encode it as JPEG bytes."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

FIELD_MM = 10.0  # mm of skin across the crop: lesions fill a bit more of it than in the real tiles


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-ish low-frequency noise field of shape (size, size)."""
    small = rng.normal(0, 1, (cells, cells)).astype(np.float32)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIE Lab (L 0-100, a/b around 0) float image -> RGB uint8."""
    rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_Lab2RGB)
    return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)


def render_lesion(row: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    """An RGB uint8 image (size x size) of the lesion described by a latent row (see lesions.py)."""
    px_per_mm = size / FIELD_MM
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = size / 2 + rng.normal(0, size * 0.03, 2)
    theta = np.deg2rad(row["angle"])
    dx, dy = xx - cx, yy - cy
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    ecc = row["eccentricity"]
    ratio = np.sqrt(1 - ecc**2)
    a = np.sqrt(row["area_mm2"] / (np.pi * ratio)) * px_per_mm  # semi-major axis in px
    phi = np.arctan2(v, u)
    wobble = np.zeros_like(phi)
    for k in range(2, 7):  # border irregularity: random harmonics scaled by the border score
        wobble += rng.normal(0, 0.018 * row["border"] / k**0.5) * np.cos(k * phi + rng.uniform(0, 6.3))
    wobble += row["asym"] * 0.25 * np.cos(phi + rng.uniform(0, 6.3))
    r = np.sqrt(u**2 + (v / ratio) ** 2) / (a * (1 + wobble))
    mask = 1 / (1 + np.exp((r - 1) * 12))  # soft edge

    skin = np.stack([row["skin_L"], row["skin_A"], row["skin_B"]]).astype(np.float32)
    lesion = skin + np.array([row["dL"], row["dA"], row["dB"]], np.float32)
    lab = np.empty((size, size, 3), np.float32)
    lab[:] = skin
    lab[..., 0] += _smooth_noise(rng, size, 6) * 1.5 + rng.normal(0, 0.6, (size, size))
    var = _smooth_noise(rng, size, 5) * (0.8 + 2.5 * row["color_var"])
    les = lesion + np.stack([var * 1.6, var * 0.5, var * 0.4], axis=-1)
    les[..., 0] -= 3.0 * (1 - np.clip(r, 0, 1))  # darker centre
    if row["cue_image"]:
        _draw_veil_and_dots(les, r, u, v, a, rng)
    lab = lab * (1 - mask[..., None]) + les * mask[..., None]
    if row["hair"]:
        _draw_hairs(lab, rng, size)
    lab[..., 0] = np.clip(lab[..., 0], 0, 100)
    return lab_to_rgb(lab)


def _draw_veil_and_dots(
    les: np.ndarray, r: np.ndarray, u: np.ndarray, v: np.ndarray, a: float, rng: np.random.Generator
) -> None:
    """The image-only malignancy cue: an off-centre blue-grey veil and dark peripheral dots."""
    ang = rng.uniform(0, 2 * np.pi)
    cu, cv_ = 0.35 * a * np.cos(ang), 0.35 * a * np.sin(ang)
    veil = np.exp(-(((u - cu) ** 2 + (v - cv_) ** 2) / (2 * (0.55 * a) ** 2)))
    veil *= rng.uniform(0.7, 1.0)
    les[..., 0] += veil * -10
    les[..., 1] += veil * -8
    les[..., 2] += veil * -26
    for _ in range(rng.integers(5, 10)):
        t, rad = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 0.95)
        du, dv = u - rad * a * np.cos(t), v - rad * a * np.sin(t)
        dot = np.exp(-(du**2 + dv**2) / (2 * max(0.09 * a, 1.5) ** 2))
        les[..., 0] -= 22 * dot


def _draw_hairs(lab: np.ndarray, rng: np.random.Generator, size: int) -> None:
    layer = np.zeros((size, size), np.float32)
    for _ in range(rng.integers(1, 4)):
        p1 = tuple(int(x) for x in rng.integers(0, size, 2))
        p2 = tuple(int(x) for x in rng.integers(0, size, 2))
        cv2.line(layer, p1, p2, 1.0, thickness=1, lineType=cv2.LINE_AA)
    lab[..., 0] -= 35 * layer


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def render_jpeg(row: dict, size: int, seed: tuple[int, ...], quality: int) -> bytes:
    """Deterministic for a given seed tuple, whatever process renders it."""
    rng = np.random.default_rng(list(seed))
    return encode_jpeg(render_lesion(row, size, rng), quality)


def _run_chunk(args: tuple[Callable[..., bytes], list[tuple]]) -> list[bytes]:
    fn, jobs = args
    return [fn(*job) for job in jobs]


def render_jobs(
    fn: Callable[..., bytes], jobs: list[tuple], workers: int, desc: str = "render", chunk: int = 256
) -> list[bytes]:
    """fn(*job) for every job, in order, on `workers` processes with a progress bar (fn: a top-level
    function, so it pickles; each job carries its own seeds, so the output never depends on workers)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm

    chunks = [(fn, jobs[i : i + chunk]) for i in range(0, len(jobs), chunk)]
    out: list[bytes] = []
    # spawned, not forked: a child forked after OpenCV's thread pool ran in this process can deadlock
    spawn = mp.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=spawn) if workers > 1 else None
    try:
        results = pool.map(_run_chunk, chunks) if pool else map(_run_chunk, chunks)
        with tqdm(total=len(jobs), desc=desc, unit="img", leave=False, disable=None) as bar:
            for res in results:
                out += res
                bar.update(len(res))
    finally:
        if pool:
            pool.shutdown()
    return out


def render_many(
    rows: list[dict],
    sizes: list[int],
    seeds: list[tuple[int, ...]],
    quality: int,
    workers: int,
    desc: str = "render",
) -> list[bytes]:
    """JPEG bytes of every ISIC lesion row, in order, rendered on `workers` processes."""
    jobs = [(r, s, sd, quality) for r, s, sd in zip(rows, sizes, seeds, strict=True)]
    return render_jobs(render_jpeg, jobs, workers, desc)
