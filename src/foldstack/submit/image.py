"""Kaggle's Python image as the kernel meets it: its package versions, and what our package needs beyond them.

configs/kaggle-image/requirements.txt holds the versions of Kaggle's image (a copy of
shared/kaggle-image/requirements.txt); pyproject.toml states our dependencies as ranges. A dependency the
image lacks, or pins outside our range, travels in the bundle as a wheel for the image's Python and
platform; torch, torchvision and timm never do (a CUDA build is gigabytes and must match the image's
drivers), so such a mismatch is an error.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from foldstack.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[3]
PINS = REPO / "configs" / "kaggle-image" / "requirements.txt"
PYPROJECT = REPO / "pyproject.toml"
# The image is built on Colab's base image; its Python is not stated in the list of versions. 3.11 is the
# oldest that numpy 2.4 supports, and the one `make kernel-check` runs.
PYTHON = "3.11"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
NEVER_BUNDLED = frozenset({"torch", "torchvision", "timm"})
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path = PINS) -> dict[str, str]:
    """{canonical name: version} of a `name==version` requirements file (comments and blanks skipped)."""
    if not path.exists():
        raise ConfigError(f"{path} is missing: it lists the package versions of Kaggle's image")
    pins: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = _PIN.match(line)
        if not m:
            raise ConfigError(f"{path}, line {n}: expected `name==version`, got {line!r}")
        pins[canonical(m.group(1))] = m.group(2)
    return pins


def project_requirements(pyproject: Path = PYPROJECT) -> list[str]:
    """[project].dependencies of pyproject.toml: what the package needs wherever it runs."""
    data = tomllib.loads(pyproject.read_text())
    deps = data.get("project", {}).get("dependencies")
    if not deps:
        raise ConfigError(f"{pyproject}: [project].dependencies is empty; it must state what foldstack needs")
    return list(deps)


@dataclass(frozen=True)
class Unmet:
    requirement: str  # as pyproject states it, e.g. "pandas>=2.3,<4"
    name: str  # canonical
    pinned: str | None  # the version the pins hold, None when they lack the package

    def __str__(self) -> str:
        have = f"has {self.pinned}" if self.pinned else "lacks it"
        return f"{self.requirement} (the image {have})"


def unmet(requirements: list[str], pins: dict[str, str]) -> list[Unmet]:
    """The requirements that `pins` lack or hold outside the stated range."""
    from packaging.requirements import Requirement  # make submit's dependency (the `submit` extra)

    out = []
    for text in requirements:
        req = Requirement(text)
        name = canonical(req.name)
        pinned = pins.get(name)
        if pinned is None or not req.specifier.contains(pinned, prereleases=True):
            out.append(Unmet(text, name, pinned))
    return out


def bundle_wheels(out: Path, pins_path: Path = PINS, pyproject: Path = PYPROJECT) -> list[Path]:
    """Download into `out` a wheel of every dependency Kaggle's image lacks or holds outside our range, for
    the image's Python and platform (installed in the kernel with pip --no-index --find-links). Returns the
    wheels; none when the image meets every range."""
    missing = unmet(project_requirements(pyproject), read_pins(pins_path))
    heavy = [u for u in missing if u.name in NEVER_BUNDLED]
    if heavy:
        raise DataError(
            f"Kaggle's image ({pins_path}) does not meet {', '.join(map(str, heavy))}: torch, torchvision "
            f"and timm are never bundled, they must come from the image. Widen the range in {pyproject} "
            "to hold the image's version (and check the code against it with `make kernel-check`)"
        )
    if not missing:
        return []
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(out)]
    cmd += ["--python-version", PYTHON, "--implementation", "cp"]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    cmd += [u.requirement for u in missing]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise DataError(
            f"could not download wheels for Kaggle's image (Python {PYTHON}, {PLATFORMS[0]}) of "
            f"{', '.join(map(str, missing))}; each must exist as a wheel on the package index:\n{tail}"
        )
    return sorted(out.glob("*.whl"))
