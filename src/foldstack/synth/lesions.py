"""Latent patients and lesions shared by the synthetic competitions.

Malignancy is carried by three independent kinds of cue, so that image-only, tabular-only and
stacked models each have something to add, as in the real ISIC 2024 data:
- `cue_image`: a blue-grey veil with dark dots, drawn in the image and in no column;
- `cue_table`: larger, more irregular, more varied in colour, lower nevus confidence (columns that
  the image also partly shows), plus age and body site, which only the table has;
- `cue_patient`: an "ugly duckling" whose colour and size differ from the same patient's other
  lesions; patients' typical lesions differ far more between patients than this shift, so the cue
  is weak in absolute values and strong once features are normalised within the patient.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from foldstack.config import Synthetic

# (tbp_lv_location, tbp_lv_location_simple, anatom_site_general, weight, malignancy log-odds shift)
LOCATIONS = [
    ("Torso Back Top Third", "Torso Back", "posterior torso", 0.14, 0.3),
    ("Torso Back Middle Third", "Torso Back", "posterior torso", 0.12, 0.3),
    ("Torso Back Bottom Third", "Torso Back", "posterior torso", 0.08, 0.2),
    ("Torso Front Top Half", "Torso Front", "anterior torso", 0.10, 0.1),
    ("Torso Front Bottom Half", "Torso Front", "anterior torso", 0.07, 0.0),
    ("Left Leg - Upper", "Left Leg", "lower extremity", 0.06, -0.2),
    ("Left Leg - Lower", "Left Leg", "lower extremity", 0.07, 0.1),
    ("Right Leg - Upper", "Right Leg", "lower extremity", 0.06, -0.2),
    ("Right Leg - Lower", "Right Leg", "lower extremity", 0.07, 0.1),
    ("Left Arm - Upper", "Left Arm", "upper extremity", 0.05, -0.1),
    ("Left Arm - Lower", "Left Arm", "upper extremity", 0.04, -0.3),
    ("Right Arm - Upper", "Right Arm", "upper extremity", 0.05, -0.1),
    ("Right Arm - Lower", "Right Arm", "upper extremity", 0.04, -0.3),
    ("Head & Neck", "Head & Neck", "head/neck", 0.04, 0.9),
    ("Unknown", "Unknown", None, 0.01, 0.0),
]
# (attribution, copyright_license, weight)
INSTITUTIONS = [
    ("Memorial Sloan Kettering Cancer Center", "CC-BY", 0.32),
    ("Department of Dermatology, Hospital Clínic de Barcelona", "CC-BY-NC", 0.26),
    ("University Hospital of Basel", "CC-BY-NC", 0.17),
    ("Frazer Institute, The University of Queensland, Dermatology Research Centre", "CC-BY", 0.12),
    ("ViDIR Group, Department of Dermatology, Medical University of Vienna", "CC-BY-NC", 0.06),
    ("ACEMID MIA", "CC-0", 0.04),
    ("FNQH Cairns", "CC-BY", 0.03),
]


def _ids(rng: np.random.Generator, n: int, prefix: str, taken: set[str]) -> list[str]:
    """n unique ids of the form PREFIX_0123456, none of them in `taken`."""
    out: list[str] = []
    while len(out) < n:
        for v in rng.integers(0, 10_000_000, size=2 * (n - len(out)) + 8):
            s = f"{prefix}_{v:07d}"
            if s not in taken:
                taken.add(s)
                out.append(s)
                if len(out) == n:
                    break
    return out


def make_patients(cfg: Synthetic, rng: np.random.Generator, n: int, taken: set[str]) -> pd.DataFrame:
    """One row per patient: demographics, skin, typical lesion, lesion count, institution."""
    sigma = 1.0
    mu = np.log(cfg.lesions_per_patient) - sigma**2 / 2
    n_lesions = np.maximum(1, np.round(rng.lognormal(mu, sigma, n))).astype(int)
    age = np.clip(5 * np.round(rng.normal(57, 14, n) / 5), 20, 85).astype(float)
    inst = rng.choice(len(INSTITUTIONS), size=n, p=[w for *_, w in INSTITUTIONS])
    return pd.DataFrame(
        {
            "patient_id": _ids(rng, n, "IP", taken),
            "n_lesions": n_lesions,
            "age": age,
            "sex": rng.choice(["male", "female"], size=n, p=[0.53, 0.47]),
            "skin_L": rng.normal(62, 7, n),
            "skin_A": rng.normal(17, 3, n),
            "skin_B": rng.normal(25, 3, n),
            # the patient's typical lesion, relative to the skin: differs a lot between patients
            "typ_dL": rng.normal(-13, 5, n),
            "typ_dA": rng.normal(5, 2.0, n),
            "typ_dB": rng.normal(3, 2.0, n),
            "typ_logsize": rng.normal(np.log(3.2), 0.25, n),
            "risk": rng.normal(0, 0.8, n),
            "institution": inst,
        }
    )


def _calibrate(logit: np.ndarray, rate: float) -> float:
    """Offset b such that mean(sigmoid(logit + b)) == rate (bisection)."""
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.mean(1 / (1 + np.exp(-(logit + mid)))) < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def make_lesions(cfg: Synthetic, rng: np.random.Generator, patients: pd.DataFrame) -> pd.DataFrame:
    """One row per lesion with its target, cue flags and every latent used by columns and images."""
    p = patients.loc[patients.index.repeat(patients["n_lesions"])].reset_index(drop=True)
    loc, logit = lesion_logit(rng, p)
    target = (rng.random(len(p)) < 1 / (1 + np.exp(-(logit + _calibrate(logit, cfg.pos_rate))))).astype(int)
    return lesion_latents(rng, p, loc, target, cfg.skin_noise)


def lesion_logit(rng: np.random.Generator, p: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each lesion's body location and malignancy log-odds (before calibration to a positive rate)."""
    n = len(p)
    loc = rng.choice(len(LOCATIONS), size=n, p=[w for *_, w, _ in LOCATIONS])
    site_shift = np.array([s for *_, s in LOCATIONS])[loc]
    logit = 0.045 * (p["age"].to_numpy() - 57) + p["risk"].to_numpy() + site_shift
    logit += rng.normal(0, 0.5, n)
    return loc, logit


def lesion_latents(
    rng: np.random.Generator, p: pd.DataFrame, loc: np.ndarray, target: np.ndarray, skin_noise: float = 1.0
) -> pd.DataFrame:
    """The lesions of `p` (patients' rows repeated once per lesion) for a given location and target:
    cue flags and every latent used by columns and images."""
    n = len(p)
    pos = target == 1

    def cue(p_pos: float, p_neg: float) -> np.ndarray:
        return np.where(pos, rng.random(n) < p_pos, rng.random(n) < p_neg)

    cue_image, cue_table, cue_patient = cue(0.75, 0.015), cue(0.7, 0.04), cue(0.7, 0.02)
    ud_sign = rng.choice([-1.0, 1.0], size=n, p=[0.75, 0.25])  # ugly ducklings mostly darker
    les = pd.DataFrame(
        {
            "patient_id": p["patient_id"],
            "age": p["age"],
            "sex": p["sex"],
            "institution": p["institution"],
            "skin_L": p["skin_L"] + rng.normal(0, 1.5 * skin_noise, n),
            "skin_A": p["skin_A"] + rng.normal(0, 0.8 * skin_noise, n),
            "skin_B": p["skin_B"] + rng.normal(0, 0.8 * skin_noise, n),
            "location": loc,
            "target": target,
            "cue_image": cue_image,
            "cue_table": cue_table,
            "cue_patient": cue_patient,
            "tile_xp": rng.random(n) < 0.7,
        }
    )
    les["dL"] = p["typ_dL"] + rng.normal(0, 2.0, n) + cue_patient * ud_sign * rng.normal(10, 2, n)
    les["dA"] = p["typ_dA"] + rng.normal(0, 1.0, n) + cue_patient * rng.normal(4, 1, n)
    les["dB"] = p["typ_dB"] + rng.normal(0, 1.0, n) - cue_patient * rng.normal(2, 1, n)
    logsize = p["typ_logsize"] + rng.normal(0, 0.3, n) + cue_table * 0.55 + cue_patient * 0.35
    les["area_mm2"] = np.exp(logsize)
    les["eccentricity"] = np.clip(rng.beta(4, 3, n) + cue_table * 0.1, 0.05, 0.98)
    les["border"] = np.clip(rng.gamma(3, 1.1, n) + cue_table * rng.normal(2.5, 0.8, n), 0.3, 10)
    les["color_var"] = np.clip(rng.gamma(2, 0.25, n) + cue_table * rng.normal(0.9, 0.3, n), 0.0, 4)
    les["asym"] = np.clip(rng.beta(2, 5, n) + cue_table * 0.2, 0.0, 1.0)
    les["angle"] = 5 * rng.integers(0, 36, n)
    les["nevi_conf"] = 100 / (1 + np.exp(-(rng.normal(1.5, 2.5, n) - 2.5 * cue_table - 1.0 * pos)))
    les["hair"] = rng.random(n) < 0.15
    return les
