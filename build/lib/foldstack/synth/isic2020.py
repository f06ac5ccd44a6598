"""The synthetic SIIM-ISIC 2020 layout: train.csv / test.csv and a JPEG folder per split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from foldstack.config import CompetitionConfig
from foldstack.synth.lesions import LOCATIONS

_SITE = {
    "posterior torso": "torso",
    "anterior torso": "torso",
    "lower extremity": "lower extremity",
    "upper extremity": "upper extremity",
    "head/neck": "head/neck",
}
BENIGN_DIAGNOSES = [
    ("unknown", 0.88),
    ("nevus", 0.09),
    ("seborrheic keratosis", 0.01),
    ("lentigo NOS", 0.01),
    ("lichenoid keratosis", 0.01),
]


def metadata_frame(
    cfg: CompetitionConfig, les: pd.DataFrame, ids: list[str], rng: np.random.Generator, taken: set[str]
) -> pd.DataFrame:
    """The 8 train.csv columns, in the config's order, for the latent lesions `les`."""
    n = len(les)
    site = np.array([_SITE.get(LOCATIONS[i][2]) for i in les["location"]], dtype=object)
    rare = rng.random(n) < 0.02
    site[rare] = rng.choice(["palms/soles", "oral/genital"], int(rare.sum()))
    site[rng.random(n) < 0.015] = np.nan
    target = les["target"].to_numpy().astype(np.int64)
    diagnosis = rng.choice([d for d, _ in BENIGN_DIAGNOSES], n, p=[w for _, w in BENIGN_DIAGNOSES])
    diagnosis = np.where(target == 1, "melanoma", diagnosis)
    cols = {
        "image_name": ids,
        "patient_id": les["patient_id"].to_numpy(),
        "sex": les["sex"].to_numpy(),
        "age_approx": les["age"].to_numpy(),
        "anatom_site_general_challenge": site,
        "diagnosis": diagnosis,
        "benign_malignant": np.where(target == 1, "malignant", "benign"),
        "target": target,
    }
    return pd.DataFrame({c: cols[c] for c in cfg.table.train_columns})
