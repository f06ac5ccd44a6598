"""Dependencies stated and tested at both ends: pyproject's ranges hold our pins (what CI installs) and
Kaggle's image (what the kernel meets); what the image lacks travels as wheels, never torch or timm."""

from __future__ import annotations

import importlib.metadata as md
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from foldstack.errors import ConfigError, DataError
from foldstack.submit import image as ki

REPO = Path(__file__).resolve().parents[1]
SHARED_PINS = REPO.parent / "shared" / "kaggle-image" / "requirements.txt"


def test_pyproject_ranges_hold_our_pins_and_what_is_installed():
    pins = ki.read_pins(REPO / "requirements.txt")
    reqs = ki.project_requirements()
    assert {ki.canonical(Requirement(r).name) for r in reqs} <= set(pins), "a dependency without a pin"
    assert not ki.unmet(reqs, pins), "requirements.txt pins a version outside pyproject's range"
    for text in reqs:  # the venv CI runs in is what the pins say
        req = Requirement(text)
        assert req.specifier.contains(md.version(req.name), prereleases=True), text


def test_kaggle_image_meets_every_range_so_nothing_is_bundled():
    unmet = ki.unmet(ki.project_requirements(), ki.read_pins())
    assert unmet == [], f"Kaggle's image misses {[str(u) for u in unmet]}: they would travel as wheels"


def test_our_copy_of_the_kaggle_versions_is_the_shared_one():
    if not SHARED_PINS.exists():
        pytest.skip(f"{SHARED_PINS} is not beside the repo")
    assert ki.read_pins(SHARED_PINS) == ki.read_pins()


def _pyproject(tmp_path: Path, deps: list[str]) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text("[project]\nname = 'x'\ndependencies = [" + ", ".join(f"'{d}'" for d in deps) + "]\n")
    return path


def test_what_the_image_lacks_is_bundled_as_a_wheel_for_its_python(tmp_path):
    pins = tmp_path / "pins.txt"
    pins.write_text("numpy==2.4.6\nsix==1.10.0  # too old for the range below\n")
    wheels = ki.bundle_wheels(tmp_path / "wheels", pins, _pyproject(tmp_path, ["numpy>=2", "six>=1.16,<2"]))
    assert [w.name.split("-")[0] for w in wheels] == ["six"]
    assert zipfile.ZipFile(wheels[0]).testzip() is None
    assert ki.bundle_wheels(tmp_path / "none", pins, _pyproject(tmp_path, ["numpy>=2"])) == []


def test_torch_is_never_bundled(tmp_path):
    pins = tmp_path / "pins.txt"
    pins.write_text("torch==2.10.0\n")
    with pytest.raises(DataError, match=r"torch>=2\.99 \(the image has 2\.10\.0\).*never bundled"):
        ki.bundle_wheels(tmp_path / "w", pins, _pyproject(tmp_path, ["torch>=2.99"]))
    assert not (tmp_path / "w").exists()


def test_a_wheel_that_does_not_exist_is_a_clear_error(tmp_path):
    pins = tmp_path / "pins.txt"
    pins.write_text("six==1.17.0\n")
    with pytest.raises(DataError, match=r"could not download wheels .* six>=99"):
        ki.bundle_wheels(tmp_path / "w", pins, _pyproject(tmp_path, ["six>=99"]))


def test_a_malformed_pins_file_names_the_line(tmp_path):
    pins = tmp_path / "pins.txt"
    pins.write_text("# fine\ntorch>=2\n")
    with pytest.raises(ConfigError, match=r"pins\.txt, line 2: expected `name==version`"):
        ki.read_pins(pins)
