"""features.engineered: greysky adds the 21 lesion features of greysky's public notebook that the base set
lacked; each formula checked on one row against its published definition."""

import math

import numpy as np
import pandas as pd
import pytest

from foldstack.errors import ConfigError
from foldstack.stage2.features import BASE_SET, ENGINEERED, NAMED_SETS, engineered_names

ROW = {
    "tbp_lv_areaMM2": 12.0,
    "tbp_lv_perimeterMM": 15.0,
    "tbp_lv_symm_2axis": 0.4,
    "tbp_lv_norm_border": 3.0,
    "tbp_lv_stdL": 2.0,
    "tbp_lv_Lext": 60.0,
    "tbp_lv_L": 50.0,
    "tbp_lv_A": 20.0,
    "tbp_lv_Aext": 15.0,
    "tbp_lv_B": 25.0,
    "tbp_lv_Bext": 27.0,
    "tbp_lv_H": 50.0,
    "tbp_lv_Hext": 60.0,
    "tbp_lv_deltaA": 5.0,
    "tbp_lv_deltaB": -2.0,
    "tbp_lv_deltaL": -10.0,
    "tbp_lv_area_perim_ratio": 18.0,
    "tbp_lv_eccentricity": 0.7,
    "tbp_lv_norm_color": 2.0,
    "tbp_lv_color_std_mean": 1.5,
    "tbp_lv_stdLExt": 3.0,
    "clin_size_long_diam_mm": 4.5,
    "tbp_lv_deltaLBnorm": 9.0,
    "tbp_lv_nevi_confidence": 80.0,
    "age_approx": 55.0,
    "tbp_lv_radial_color_std_max": 1.2,
    "tbp_lv_minorAxisMM": 3.0,
    "tbp_lv_x": 100.0,
    "tbp_lv_y": 200.0,
    "tbp_lv_z": 50.0,
}
r = ROW
PUBLISHED = {  # greysky, "ISIC 2024 | Only Tabular Data": the formulas as published
    "area_to_perimeter_ratio": r["tbp_lv_areaMM2"] / r["tbp_lv_perimeterMM"],
    "consistency_symmetry_border": r["tbp_lv_symm_2axis"]
    * r["tbp_lv_norm_border"]
    / (r["tbp_lv_symm_2axis"] + r["tbp_lv_norm_border"]),
    "consistency_color": r["tbp_lv_stdL"] * r["tbp_lv_Lext"] / (r["tbp_lv_stdL"] + r["tbp_lv_Lext"]),
    "shape_complexity_index": r["tbp_lv_norm_border"]
    + r["tbp_lv_symm_2axis"]
    + r["tbp_lv_areaMM2"] / r["tbp_lv_perimeterMM"] ** 2,
    "mean_hue_difference": (r["tbp_lv_H"] + r["tbp_lv_Hext"]) / 2,
    "std_dev_contrast": math.sqrt(
        (r["tbp_lv_deltaA"] ** 2 + r["tbp_lv_deltaB"] ** 2 + r["tbp_lv_deltaL"] ** 2) / 3
    ),
    "overall_color_difference": (r["tbp_lv_deltaA"] + r["tbp_lv_deltaB"] + r["tbp_lv_deltaL"]) / 3,
    "symmetry_perimeter_interaction": r["tbp_lv_symm_2axis"] * r["tbp_lv_perimeterMM"],
    "comprehensive_lesion_index": (
        r["tbp_lv_area_perim_ratio"]
        + r["tbp_lv_eccentricity"]
        + r["tbp_lv_norm_color"]
        + r["tbp_lv_symm_2axis"]
    )
    / 4,
    "color_variance_ratio": r["tbp_lv_color_std_mean"] / r["tbp_lv_stdLExt"],
    "border_color_interaction_2": r["tbp_lv_norm_border"]
    * r["tbp_lv_norm_color"]
    / (r["tbp_lv_norm_border"] + r["tbp_lv_norm_color"]),
    "size_color_contrast_ratio": r["clin_size_long_diam_mm"] / r["tbp_lv_deltaLBnorm"],
    "age_normalized_nevi_confidence": r["tbp_lv_nevi_confidence"] / r["age_approx"],
    "age_normalized_nevi_confidence_2": math.sqrt(r["clin_size_long_diam_mm"] ** 2 + r["age_approx"] ** 2),
    "color_asymmetry_index": r["tbp_lv_radial_color_std_max"] * r["tbp_lv_symm_2axis"],
    "volume_approximation_3d": r["tbp_lv_areaMM2"]
    * math.sqrt(r["tbp_lv_x"] ** 2 + r["tbp_lv_y"] ** 2 + r["tbp_lv_z"] ** 2),
    "color_range": abs(r["tbp_lv_L"] - r["tbp_lv_Lext"])
    + abs(r["tbp_lv_A"] - r["tbp_lv_Aext"])
    + abs(r["tbp_lv_B"] - r["tbp_lv_Bext"]),
    "shape_color_consistency": r["tbp_lv_eccentricity"] * r["tbp_lv_color_std_mean"],
    "border_length_ratio": r["tbp_lv_perimeterMM"] / (2 * math.pi * math.sqrt(r["tbp_lv_areaMM2"] / math.pi)),
    "age_size_symmetry_index": r["age_approx"] * r["clin_size_long_diam_mm"] * r["tbp_lv_symm_2axis"],
    "index_age_size_symmetry": r["age_approx"] * r["tbp_lv_areaMM2"] * r["tbp_lv_symm_2axis"],
}


def test_the_greysky_set_is_the_base_set_the_21_it_lacked_and_the_combined_site():
    assert len(BASE_SET) == 21 and len(NAMED_SETS["greysky"]) == 43
    assert NAMED_SETS["all"] == NAMED_SETS["base"] == BASE_SET  # the default stays what it was
    assert set(NAMED_SETS["greysky"]) == set(BASE_SET) | set(PUBLISHED) | {"combined_anatomical_site"}


def test_combined_anatomical_site_is_site_underscore_location_and_missing_where_either_is():
    from foldstack.stage2.features import CATEGORICAL

    d = pd.DataFrame(
        {
            "anatom_site_general": ["head/neck", None, "lower extremity"],
            "tbp_lv_location": ["Head & Neck", "Torso Back", None],
        }
    )
    got = [None if pd.isna(v) else v for v in CATEGORICAL["combined_anatomical_site"](d)]
    assert got == ["head/neck_Head & Neck", None, None]  # greysky: site + "_" + location


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_each_added_feature_matches_its_published_formula(name):
    got = float(ENGINEERED[name](pd.DataFrame([ROW]))[0])
    assert got == pytest.approx(PUBLISHED[name], rel=1e-5), name  # EPS in denominators moves it < 1e-5


def test_named_sets_keep_only_features_whose_inputs_exist_and_a_bad_name_is_refused():
    cols = set(ROW) - {"tbp_lv_nevi_confidence"}
    made = engineered_names("greysky", cols)
    assert "age_normalized_nevi_confidence" not in made and "color_range" in made
    assert engineered_names("all", set(ROW)) == list(BASE_SET)
    with pytest.raises(ConfigError, match=r"unknown \['ugly'\]; valid names: .*color_range"):
        engineered_names(("ugly",), set(ROW))


def test_color_range_is_exactly_zero_when_lesion_and_skin_colours_agree():
    row = dict(ROW) | {"tbp_lv_L": 0.1 + 0.2, "tbp_lv_Lext": 0.3, "tbp_lv_A": 1.0, "tbp_lv_Aext": 1.0}
    row |= {"tbp_lv_B": 2.0, "tbp_lv_Bext": 2.0}
    assert float(ENGINEERED["color_range"](pd.DataFrame([row]))[0]) == 0.0
    assert np.isfinite(ENGINEERED["border_length_ratio"](pd.DataFrame([ROW | {"tbp_lv_areaMM2": 0.0}]))).all()
