"""The embedded synthetic ISIC 2024 competition, in the real file layout and schema."""

from __future__ import annotations

import numpy as np
import pandas as pd

from foldstack.config import CompetitionConfig
from foldstack.errors import ConfigError
from foldstack.synth.lesions import INSTITUTIONS, LOCATIONS

MALIGNANT_IDDX = [
    ("Malignant::Malignant melanocytic proliferations (Melanoma)::Melanoma Invasive", 0.35),
    ("Malignant::Malignant melanocytic proliferations (Melanoma)::Melanoma in situ", 0.25),
    ("Malignant::Malignant adnexal epithelial proliferations - Follicular::Basal cell carcinoma", 0.3),
    ("Malignant::Malignant epidermal proliferations::Squamous cell carcinoma in situ", 0.1),
]
BENIGN_IDDX = [
    ("Benign::Benign melanocytic proliferations::Nevus", 0.6),
    ("Benign::Benign epidermal proliferations::Seborrheic keratosis", 0.25),
    ("Indeterminate::Indeterminate melanocytic proliferations::Atypical melanocytic neoplasm", 0.15),
]
# the 3-D body position of each location: (x, y, z) centre; x left/right, y height, z front/back
_XYZ = {
    "Torso Back": (0, 1300, -90),
    "Torso Front": (0, 1250, 110),
    "Left Leg": (-120, 550, 0),
    "Right Leg": (120, 550, 0),
    "Left Arm": (-280, 1150, 0),
    "Right Arm": (280, 1150, 0),
    "Head & Neck": (0, 1620, 20),
    "Unknown": (0, 1000, 0),
}


def _nan_where(values: np.ndarray | pd.Series, mask: np.ndarray) -> pd.Series:
    s = pd.Series(values).astype(object)
    s[mask] = np.nan
    return s


def _colour_columns(les: pd.DataFrame, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = len(les)
    Lext, Aext, Bext = les["skin_L"].to_numpy(), les["skin_A"].to_numpy(), les["skin_B"].to_numpy()
    L = Lext + les["dL"].to_numpy() + rng.normal(0, 0.8, n)
    A = Aext + les["dA"].to_numpy() + rng.normal(0, 0.5, n)
    B = Bext + les["dB"].to_numpy() + rng.normal(0, 0.5, n)
    dLB = np.hypot(L - Lext, B - Bext)
    return {
        "tbp_lv_A": A,
        "tbp_lv_Aext": Aext,
        "tbp_lv_B": B,
        "tbp_lv_Bext": Bext,
        "tbp_lv_C": np.hypot(A, B),
        "tbp_lv_Cext": np.hypot(Aext, Bext),
        "tbp_lv_H": np.degrees(np.arctan2(B, A)),
        "tbp_lv_Hext": np.degrees(np.arctan2(Bext, Aext)),
        "tbp_lv_L": L,
        "tbp_lv_Lext": Lext,
        "tbp_lv_deltaA": A - Aext,
        "tbp_lv_deltaB": B - Bext,
        "tbp_lv_deltaL": L - Lext,
        "tbp_lv_deltaLB": dLB,
        "tbp_lv_deltaLBnorm": dLB * rng.uniform(0.8, 1.15, n),
    }


def _shape_columns(les: pd.DataFrame, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = len(les)
    area = les["area_mm2"].to_numpy() * rng.normal(1, 0.02, n)
    ecc = les["eccentricity"].to_numpy()
    ratio = np.sqrt(1 - ecc**2)
    a = np.sqrt(area / (np.pi * ratio))  # semi-axes in mm
    b = a * ratio
    ellipse_perim = np.pi * (3 * (a + b) - np.sqrt((3 * a + b) * (a + 3 * b)))
    perim = ellipse_perim * (1 + 0.05 * les["border"].to_numpy()) * rng.normal(1, 0.02, n)
    cvar = les["color_var"].to_numpy()
    return {
        "clin_size_long_diam_mm": np.round(2 * a * rng.normal(1.05, 0.08, n), 2),
        "tbp_lv_areaMM2": area,
        "tbp_lv_perimeterMM": perim,
        "tbp_lv_area_perim_ratio": perim**2 / area,
        "tbp_lv_eccentricity": ecc,
        "tbp_lv_minorAxisMM": 2 * b * rng.normal(1, 0.03, n),
        "tbp_lv_color_std_mean": np.abs(0.8 * cvar + rng.normal(0, 0.12, n)),
        "tbp_lv_norm_color": np.clip(2.5 * cvar + rng.normal(0, 0.4, n), 0, 10),
        "tbp_lv_radial_color_std_max": np.abs(0.6 * cvar + rng.normal(0, 0.1, n)),
        "tbp_lv_stdL": 0.8 + 1.5 * cvar + np.abs(rng.normal(0, 0.3, n)),
        "tbp_lv_norm_border": les["border"].to_numpy(),
        "tbp_lv_symm_2axis": les["asym"].to_numpy(),
        "tbp_lv_symm_2axis_angle": les["angle"].to_numpy().astype(np.int64),
        "tbp_lv_nevi_confidence": les["nevi_conf"].to_numpy(),
    }


def _position_columns(simple: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    centre = np.array([_XYZ[s] for s in simple], dtype=float)
    n = len(simple)
    return {
        "tbp_lv_x": centre[:, 0] + rng.normal(0, 60, n),
        "tbp_lv_y": centre[:, 1] + rng.normal(0, 120, n),
        "tbp_lv_z": centre[:, 2] + rng.normal(0, 40, n),
    }


def _diagnosis_columns(target: np.ndarray, rng: np.random.Generator, taken: set[str]) -> dict:
    """The train-only columns: they describe the diagnosis and so leak the label."""
    from foldstack.synth.lesions import _ids

    n, pos = len(target), target == 1
    has_lesion_id = pos | (rng.random(n) < 0.06)
    lesion_ids = np.full(n, np.nan, dtype=object)
    lesion_ids[has_lesion_id] = _ids(rng, int(has_lesion_id.sum()), "IL", taken)
    full = np.full(n, "Benign", dtype=object)
    mal = rng.choice([s for s, _ in MALIGNANT_IDDX], size=n, p=[w for _, w in MALIGNANT_IDDX])
    ben = rng.choice([s for s, _ in BENIGN_IDDX], size=n, p=[w for _, w in BENIGN_IDDX])
    full[pos] = mal[pos]
    full[~pos & has_lesion_id] = ben[~pos & has_lesion_id]
    parts = [str(f).split("::") for f in full]
    out: dict = {"lesion_id": lesion_ids, "iddx_full": full}
    for level in range(1, 6):
        out[f"iddx_{level}"] = np.array(
            [p[level - 1] if len(p) >= level else np.nan for p in parts], dtype=object
        )
    invasive = np.array(["Invasive" in str(f) for f in full])
    mitotic = rng.choice(["<1/mm^2", "1/mm^2", "2/mm^2", "3/mm^2"], n, p=[0.6, 0.2, 0.12, 0.08])
    out["mel_mitotic_index"] = _nan_where(mitotic, ~invasive).to_numpy()
    out["mel_thick_mm"] = np.where(invasive, np.round(rng.gamma(2, 0.35, n) + 0.1, 2), np.nan)
    out["tbp_lv_dnn_lesion_confidence"] = 100 / (1 + np.exp(-rng.normal(4.5, 1.5, n)))
    return out


def metadata_frame(
    cfg: CompetitionConfig, les: pd.DataFrame, ids: list[str], rng: np.random.Generator, taken: set[str]
) -> pd.DataFrame:
    """The 55 train columns, in the config's order, for the latent lesions `les`."""
    n = len(les)
    loc = les["location"].to_numpy()
    simple = np.array([LOCATIONS[i][1] for i in loc])
    site = np.array([LOCATIONS[i][2] for i in loc], dtype=object)
    patients = les["patient_id"].unique()
    no_age = les["patient_id"].isin(patients[rng.random(len(patients)) < 0.01]).to_numpy()
    no_sex = les["patient_id"].isin(patients[rng.random(len(patients)) < 0.03]).to_numpy()
    inst = les["institution"].to_numpy()
    cols: dict = {
        "isic_id": ids,
        "target": les["target"].to_numpy().astype(np.int64),
        "patient_id": les["patient_id"].to_numpy(),
        "age_approx": np.where(no_age, np.nan, les["age"].to_numpy()),
        "sex": _nan_where(les["sex"].to_numpy(), no_sex),
        "anatom_site_general": _nan_where(site, rng.random(n) < 0.01),
        "image_type": np.full(n, "TBP tile: close-up", dtype=object),
        "tbp_tile_type": np.where(les["tile_xp"].to_numpy(), "3D: XP", "3D: white"),
        "tbp_lv_location": np.array([LOCATIONS[i][0] for i in loc]),
        "tbp_lv_location_simple": simple,
        "attribution": np.array([INSTITUTIONS[i][0] for i in inst]),
        "copyright_license": np.array([INSTITUTIONS[i][1] for i in inst]),
    }
    cols |= _colour_columns(les, rng) | _shape_columns(les, rng) | _position_columns(simple, rng)
    cols["tbp_lv_stdLExt"] = cols["tbp_lv_Lext"]  # as in the real files
    cols |= _diagnosis_columns(cols["target"], rng, taken)
    missing = set(cfg.table.train_columns) - set(cols)
    if missing:
        raise ConfigError(
            f"{cfg.name} config lists train columns {sorted(missing)} that the synthetic generator does "
            f"not make: remove them from the config or add them to foldstack/synth/isic2024.py"
        )
    return pd.DataFrame({c: cols[c] for c in cfg.table.train_columns})
