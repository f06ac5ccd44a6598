"""The embedded synthetic HAM10000: seven diagnoses, several images of each lesion.

Rows follow the published HAM10000_metadata.csv (lesion_id, image_id, dx, dx_type, age, sex,
localization) with roughly its class shares, images per lesion and the dependence of dx_type, age,
sex and body site on the diagnosis. Each class has its own dermoscopic look (colour, border, size
and a class-specific pattern), but a share of lesions borrows the look of a confusable class and the
pattern's strength varies, so images alone do not separate the classes; age and site add to them.

Every lesion is drawn once from its own seed; each image of it is a different view (rotation, scale,
shift, lighting, hairs), also from its own seed, so the bytes do not depend on the worker count.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from foldstack.config import CompetitionConfig
from foldstack.errors import ConfigError
from foldstack.synth.lesions import _ids
from foldstack.synth.render import _draw_veil_and_dots, _smooth_noise, encode_jpeg, lab_to_rgb, render_jobs

CLASSES = ("nv", "mel", "bkl", "bcc", "akiec", "vasc", "df")  # nv first: the majority class
# lesions per class and images per lesion in the published data (10015 images of 7470 lesions)
LESIONS = {"nv": 5403, "mel": 614, "bkl": 727, "bcc": 327, "akiec": 228, "vasc": 98, "df": 73}
IMAGES_PER_LESION = {
    "nv": 1.24,
    "mel": 1.81,
    "bkl": 1.51,
    "bcc": 1.57,
    "akiec": 1.43,
    "vasc": 1.45,
    "df": 1.58,
}
MAX_IMAGES = 6
DX_TYPE = {
    "nv": {"follow_up": 0.55, "histo": 0.37, "consensus": 0.07, "confocal": 0.01},
    "mel": {"histo": 1.0},
    "bkl": {"histo": 0.47, "consensus": 0.51, "confocal": 0.02},
    "bcc": {"histo": 1.0},
    "akiec": {"histo": 1.0},
    "vasc": {"consensus": 0.75, "histo": 0.25},
    "df": {"consensus": 0.6, "histo": 0.4},
}
AGE = {  # mean and sd in years
    "nv": (45, 15),
    "mel": (61, 15),
    "bkl": (64, 13),
    "bcc": (66, 12),
    "akiec": (67, 11),
    "vasc": (50, 20),
    "df": (52, 14),
}
MALE = {"nv": 0.51, "mel": 0.60, "bkl": 0.56, "bcc": 0.61, "akiec": 0.66, "vasc": 0.49, "df": 0.45}
SITES = (  # the 15 body sites of the published file
    "back",
    "lower extremity",
    "trunk",
    "upper extremity",
    "abdomen",
    "face",
    "chest",
    "foot",
    "unknown",
    "neck",
    "scalp",
    "hand",
    "ear",
    "genital",
    "acral",
)
SITE_SHARES = {  # % of lesions at each of SITES, by diagnosis
    #         back  lowx  trnk   upx  abdo  face  chst  foot   unk  neck  scal  hand   ear   gen  acrl
    "nv":    (  22,   20,   18,    9,   13,    2,    3,    4,    3,  1.5,  0.8,  0.5,  0.3,  0.6,  0.1),
    "mel":   (  25,   18,    3,   17,    6,   10,    8,    2,    4,    2,    2,    1,    1,  0.5,  0.5),
    "bkl":   (  17,   16,    9,   12,    5,   22,    7,    1,    4,    3,    2,    1,    1,    0,    0),
    "bcc":   (  22,   10,    2,    9,    3,   22,   11,  0.5,    1,    5,    6,    2,    3,  0.5,    0),
    "akiec": (   7,   12,    1,   14,    1,   35,    4,    0,    2,    4,    8,    8,    4,    0,    0),
    "vasc":  (  12,   25,   18,    7,   12,    8,    5,    2,    5,    3,    0,    0,    0,    3,    0),
    "df":    (   3,   65,    4,   18,    2,    0,    2,    3,    2,    0,    0,    1,    0,    0,    0),
}  # fmt: skip
LOCALIZATION = {c: dict(zip(SITES, shares, strict=True)) for c, shares in SITE_SHARES.items()}
# which class's look a lesion of each class shows: mostly its own, sometimes a confusable one's (the
# majority class nv borrows rarely, or the rare classes' looks would be mostly nv)
LOOK_SHARES = {
    "nv": {"nv": 0.85, "mel": 0.08, "bkl": 0.05, "df": 0.02},
    "mel": {"mel": 0.6, "nv": 0.25, "bkl": 0.15},
    "bkl": {"bkl": 0.6, "nv": 0.15, "mel": 0.15, "akiec": 0.1},
    "bcc": {"bcc": 0.6, "nv": 0.15, "akiec": 0.15, "vasc": 0.1},
    "akiec": {"akiec": 0.6, "bkl": 0.15, "bcc": 0.15, "nv": 0.1},
    "vasc": {"vasc": 0.65, "nv": 0.15, "bcc": 0.2},
    "df": {"df": 0.6, "nv": 0.3, "bkl": 0.1},
}
# Lab shift of the lesion from the skin, radius (share of the image height), border irregularity,
# edge sharpness and colour variation of each look
LOOKS = {
    "nv": dict(dL=-22, dA=7, dB=14, radius=0.30, irregular=0.03, edge=10, var=0.8),
    "mel": dict(dL=-30, dA=8, dB=9, radius=0.37, irregular=0.13, edge=8, var=3.0),
    "bkl": dict(dL=-13, dA=4, dB=10, radius=0.35, irregular=0.05, edge=16, var=1.5),
    "bcc": dict(dL=-7, dA=15, dB=2, radius=0.30, irregular=0.06, edge=6, var=1.0),
    "akiec": dict(dL=-8, dA=19, dB=9, radius=0.33, irregular=0.10, edge=3.5, var=1.5),
    "vasc": dict(dL=-22, dA=28, dB=-5, radius=0.24, irregular=0.03, edge=16, var=1.0),
    "df": dict(dL=-14, dA=9, dB=12, radius=0.21, irregular=0.03, edge=6, var=0.6),
}
CANVAS = 176  # px of the canonical lesion drawing; an image of height h shows its central 128 px
FIELD = 128
ASPECT = 4 / 3  # the published images are 600 x 450


def _check_classes(cfg: CompetitionConfig) -> None:
    if set(cfg.classes) != set(CLASSES):
        raise ConfigError(
            f"the synthetic HAM10000 knows the classes {list(CLASSES)}, the config has {cfg.classes}"
        )


def _choice(rng: np.random.Generator, shares: dict[str, float], n: int) -> np.ndarray:
    keys = list(shares)
    p = np.array([shares[k] for k in keys], dtype=float)
    return np.array(keys, dtype=object)[rng.choice(len(keys), size=n, p=p / p.sum())]


def _by_class(rng: np.random.Generator, dx: np.ndarray, shares: dict[str, dict[str, float]]) -> np.ndarray:
    """For each row, a value drawn from the shares of its class."""
    out = np.empty(len(dx), dtype=object)
    for c in CLASSES:
        m = dx == c
        out[m] = _choice(rng, shares[c], int(m.sum()))
    return out


def class_counts(n: int) -> dict[str, int]:
    """Lesions per class among n: the published shares (largest remainders), but a tiny split still
    gets every class when it can (at least 1 and up to 5 lesions each), taken from nv."""
    quota = np.array([LESIONS[c] for c in CLASSES], dtype=float)
    quota *= n / quota.sum()
    counts = np.floor(quota).astype(int)
    counts[np.argsort(counts - quota, kind="stable")[: n - counts.sum()]] += 1
    floor = min(5, max(1, n // 14)) if n >= len(CLASSES) else 0
    counts[1:] = np.maximum(counts[1:], floor)
    counts[0] = n - counts[1:].sum()
    return dict(zip(CLASSES, counts.tolist(), strict=True))


def make_lesions(cfg: CompetitionConfig, rng: np.random.Generator, n: int, taken: set[str]) -> pd.DataFrame:
    """One row per lesion: the metadata shared by its images, its look and its number of images."""
    _check_classes(cfg)
    dx = rng.permutation(np.array([c for c, k in class_counts(n).items() for _ in range(k)], dtype=object))
    real_mean = sum(LESIONS[c] * IMAGES_PER_LESION[c] for c in CLASSES) / sum(LESIONS.values())
    extra = np.array([IMAGES_PER_LESION[d] for d in dx]) * cfg.synthetic.lesions_per_patient / real_mean - 1
    n_images = np.minimum(1 + rng.poisson(np.maximum(extra, 0.0)), MAX_IMAGES)
    les = pd.DataFrame({"lesion_id": _ids(rng, n, "HAM", taken), "dx": dx, "n_images": n_images})
    les["dx_type"] = _by_class(rng, dx, DX_TYPE)
    mean, sd = np.array([AGE[d] for d in dx], dtype=float).T
    age = np.clip(5 * np.round(rng.normal(mean, sd) / 5), 5, 85)
    age[rng.random(n) < 0.004] = 0.0  # as in the published file: a few ages of 0
    age[rng.random(n) < 0.006] = np.nan
    les["age"] = age
    sex = np.where(rng.random(n) < np.array([MALE[d] for d in dx]), "male", "female").astype(object)
    sex[rng.random(n) < 0.006] = "unknown"
    les["sex"] = sex
    les["localization"] = _by_class(rng, dx, LOCALIZATION)
    les["look"] = _by_class(rng, dx, LOOK_SHARES)
    les["strength"] = rng.uniform(0.15, 1.0, n)  # how clearly the look's own pattern shows
    les["skin_L"] = rng.normal(66, 6, n)
    les["skin_A"] = rng.normal(14, 3, n)
    les["skin_B"] = rng.normal(19, 3, n)
    return les


def make_images(les: pd.DataFrame, rng: np.random.Generator, taken: set[str]) -> pd.DataFrame:
    """One row per image: its lesion's row, a unique image id and its view number within the lesion."""
    rows = les.loc[les.index.repeat(les["n_images"])]
    img = rows.reset_index().rename(columns={"index": "lesion_index"})
    img["view"] = img.groupby("lesion_index").cumcount()
    img["image_id"] = _ids(rng, len(img), "ISIC", taken)
    return img


# ----------------------------------------------------------------------------- rendering
def _lesion_field(rng: np.random.Generator, look: dict) -> tuple[np.ndarray, ...]:
    """Soft mask, normalised radius r and rotated coordinates (u, v) of the lesion on the canvas."""
    c = CANVAS / 2
    yy, xx = np.mgrid[0:CANVAS, 0:CANVAS].astype(np.float32)
    dx, dy = xx - c, yy - c
    theta = rng.uniform(0, np.pi)
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    ratio = np.sqrt(1 - min(rng.beta(3, 4), 0.9) ** 2)
    a = look["radius"] * FIELD * np.exp(rng.normal(0, 0.15)) / np.sqrt(ratio)
    phi = np.arctan2(v, u)
    wobble = np.zeros_like(phi)
    for k in range(2, 8):
        wobble += rng.normal(0, look["irregular"] / k**0.5) * np.cos(k * phi + rng.uniform(0, 6.3))
    r = np.sqrt(u**2 + (v / ratio) ** 2) / (a * (1 + wobble))
    mask = 1 / (1 + np.exp((r - 1) * look["edge"]))
    return mask, r, u, v, a


def _blobs(
    shape: tuple[int, int], rng: np.random.Generator, n: int, a: float, rad: tuple, sigma: float
) -> np.ndarray:
    """n Gaussian dots at random places between radii rad[0]*a and rad[1]*a from the centre."""
    out = np.zeros(shape, np.float32)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    c = shape[0] / 2
    for _ in range(n):
        t, d = rng.uniform(0, 2 * np.pi), rng.uniform(*rad) * a
        out += np.exp(-((xx - c - d * np.cos(t)) ** 2 + (yy - c - d * np.sin(t)) ** 2) / (2 * sigma**2))
    return np.minimum(out, 1.0)


def _vessels(rng: np.random.Generator, a: float, n: int) -> np.ndarray:
    """Thin branching lines (arborising vessels) inside the lesion."""
    layer = np.zeros((CANVAS, CANVAS), np.float32)
    c = CANVAS / 2
    for _ in range(n):
        p = np.array([c, c]) + rng.normal(0, 0.35 * a, 2)
        ang = rng.uniform(0, 2 * np.pi)
        for _ in range(rng.integers(4, 8)):
            ang += rng.normal(0, 0.6)
            q = p + rng.uniform(0.12, 0.25) * a * np.array([np.cos(ang), np.sin(ang)])
            cv2.line(layer, tuple(int(x) for x in p), tuple(int(x) for x in q), 1.0, 2, cv2.LINE_AA)
            p = q
    return layer


def _pattern(
    kind: str,
    les: np.ndarray,
    r: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    a: float,
    rng: np.random.Generator,
    s: float,
) -> None:
    """Add the class-specific pattern of a look to the lesion colours `les` (Lab), scaled by s."""
    shape = r.shape
    if kind == "nv":  # regular pigment network, fading towards the edge
        period, warp = max(a * 0.09, 1.5), 1.5 * _smooth_noise(rng, CANVAS, 8)
        lines = (np.abs(np.sin(u / period + warp)) < 0.3) | (np.abs(np.sin(v / period + warp)) < 0.3)
        les[..., 0] -= 7 * s * lines * np.clip(1.2 - r, 0, 1)
    elif kind == "mel":  # blue-grey veil, dark dots, black blotch
        veil = les.copy()
        _draw_veil_and_dots(veil, r, u, v, a, rng)
        les += s * (veil - les)
        blotch = np.clip(_smooth_noise(rng, CANVAS, 4), 0, None)
        les[..., 0] -= 14 * s * blotch * (r < 0.9)
    elif kind == "bkl":  # waxy texture with fissures and milia-like bright cysts
        tex = _smooth_noise(rng, CANVAS, 22)
        les[..., 0] += 6 * s * np.abs(tex) - 6 * s * (np.abs(tex) < 0.15)
        cysts = _blobs(shape, rng, int(rng.integers(4, 9)), a, (0.1, 0.8), max(0.05 * a, 1.3))
        les[..., 0] += 22 * s * cysts
        les[..., 2] -= 6 * s * cysts
    elif kind == "bcc":  # red arborising vessels, pearly sheen, blue-grey ovoid nests
        ves = _vessels(rng, a, int(rng.integers(2, 5)))
        les[..., 0] -= 12 * s * ves
        les[..., 1] += 22 * s * ves
        sheen = np.exp(-(r**2) / 0.3)
        les[..., 0] += 8 * s * sheen
        nests = _blobs(shape, rng, int(rng.integers(2, 5)), a, (0.3, 0.8), max(0.09 * a, 2.0))
        les[..., 0] -= 14 * s * nests
        les[..., 2] -= 14 * s * nests
    elif kind == "akiec":  # white scale on a rough red surface
        scale = np.clip(_smooth_noise(rng, CANVAS, 28) - 0.6, 0, None)
        les[..., 0] += 30 * s * scale
        les[..., 1] -= 10 * s * scale
        les[..., 1] += 5 * s * _smooth_noise(rng, CANVAS, 10)
    elif kind == "vasc":  # red-purple lacunae
        lac = _blobs(shape, rng, int(rng.integers(5, 11)), a, (0.0, 0.75), max(0.14 * a, 2.0))
        les[..., 0] -= 12 * s * lac
        les[..., 1] += 8 * s * lac
        les[..., 2] -= 10 * s * lac
    elif kind == "df":  # pale central scar, darker delicate ring
        centre = np.exp(-(r**2) / (2 * 0.33**2))
        les[..., 0] += 24 * s * centre
        les[..., 1] -= 5 * s * centre
        les[..., 2] -= 9 * s * centre
        les[..., 0] -= 8 * s * np.exp(-((r - 0.85) ** 2) / 0.02)


def render_canvas(row: dict, rng: np.random.Generator) -> np.ndarray:
    """The lesion on its skin, as a CANVAS x CANVAS Lab float image (the same for every view)."""
    look = LOOKS[row["look"]]
    mask, r, u, v, a = _lesion_field(rng, look)
    skin = np.array([row["skin_L"], row["skin_A"], row["skin_B"]], np.float32)
    lab = np.empty((CANVAS, CANVAS, 3), np.float32)
    lab[:] = skin
    lab[..., 0] += _smooth_noise(rng, CANVAS, 6) * 1.5
    shift = np.array([look["dL"], look["dA"], look["dB"]], np.float32) + rng.normal(0, [6, 4, 4])
    var = _smooth_noise(rng, CANVAS, 5) * look["var"]
    les = skin + shift + np.stack([var * 1.6, var * 0.6, var * 0.5], axis=-1)
    les[..., 0] -= 3.0 * (1 - np.clip(r, 0, 1))
    _pattern(row["look"], les, r, u, v, a, rng, row["strength"])
    return (lab * (1 - mask[..., None]) + les * mask[..., None]).astype(np.float32)


def _hairs(lab: np.ndarray, rng: np.random.Generator) -> None:
    """One to three dark hairs across the image."""
    h, w = lab.shape[:2]
    layer = np.zeros((h, w), np.float32)
    for _ in range(rng.integers(1, 4)):
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(layer, p1, p2, 1.0, thickness=1, lineType=cv2.LINE_AA)
    lab[..., 0] -= 35 * layer


def render_view(canvas: np.ndarray, height: int, rng: np.random.Generator) -> np.ndarray:
    """One photograph of the canvas: rotated, scaled, shifted, lit differently; RGB uint8."""
    width = round(height * ASPECT)
    zoom = height / FIELD * np.exp(rng.normal(0, 0.1))
    m = cv2.getRotationMatrix2D((CANVAS / 2, CANVAS / 2), rng.uniform(0, 360), zoom)
    m[:, 2] += np.array([width / 2, height / 2]) - CANVAS / 2 + rng.normal(0, 0.04 * height, 2)
    lab = cv2.warpAffine(canvas, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    lab[..., 0] = lab[..., 0] * rng.normal(1, 0.05) + rng.normal(0, 3)
    lab[..., 1:] += rng.normal(0, 2, 2).astype(np.float32)
    if rng.random() < 0.25:  # dark corners of a dermoscope
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        d = np.hypot((xx - width / 2) / (width / 2), (yy - height / 2) / (height / 2))
        lab[..., 0] *= 1 - 0.8 * np.clip(d - rng.uniform(0.9, 1.2), 0, 1)
    if rng.random() < 0.2:
        _hairs(lab, rng)
    lab[..., 0] += rng.normal(0, 1.5, (height, width)).astype(np.float32)
    lab[..., 0] = np.clip(lab[..., 0], 0, 100)
    return lab_to_rgb(lab)


def render_jpeg(
    row: dict, height: int, lesion_seed: tuple[int, ...], view_seed: tuple[int, ...], quality: int
) -> bytes:
    """Deterministic for the given seeds, whatever process renders it."""
    canvas = render_canvas(row, np.random.default_rng(list(lesion_seed)))
    return encode_jpeg(render_view(canvas, height, np.random.default_rng(list(view_seed))), quality)


def render_all(jobs: list[tuple], workers: int, desc: str) -> list[bytes]:
    """JPEG bytes of every job (render_jpeg's arguments), in order, on `workers` processes."""
    return render_jobs(render_jpeg, jobs, workers, desc, chunk=32)


# ----------------------------------------------------------------------------- one split
def make_split(
    cfg: CompetitionConfig,
    rng: np.random.Generator,
    n_lesions: int,
    taken: set[str],
    split: str,
    workers: int,
) -> tuple[pd.DataFrame, list[bytes]]:
    """The metadata (every train column, in the config's order) and JPEG bytes of one split."""
    s = cfg.synthetic
    les = make_lesions(cfg, rng, n_lesions, taken)
    img = make_images(les, rng, taken)
    heights = rng.integers(s.img_min, s.img_max + 1, len(img)).tolist()
    code = 0 if split == "train" else 1
    look_cols = ["look", "strength", "skin_L", "skin_A", "skin_B"]
    jobs = [
        (row, h, (s.seed, code, int(li)), (s.seed, code, int(li), int(view)), s.jpeg_quality)
        for row, h, li, view in zip(
            img[look_cols].to_dict("records"), heights, img["lesion_index"], img["view"], strict=True
        )
    ]
    blobs = render_all(jobs, workers, desc=f"{split} images")
    meta = img[cfg.table.train_columns].reset_index(drop=True)
    return meta, blobs
