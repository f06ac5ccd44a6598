"""Shared fixtures: tiny synthetic competitions generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from foldstack.config import CompetitionConfig, load_competition
from foldstack.synth.generate import generate

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "isic2024-public-test"
TINY = {
    "isic2024": (
        "synthetic.n_train_patients=24 synthetic.n_test_patients=6 synthetic.lesions_per_patient=12 "
        "synthetic.pos_rate=0.06 synthetic.img_min=48 synthetic.img_max=64 folds.k=3"
    ),
    "isic2020": (
        "synthetic.n_train_patients=18 synthetic.n_test_patients=5 synthetic.lesions_per_patient=8 "
        "synthetic.pos_rate=0.08 synthetic.img_min=48 synthetic.img_max=64 folds.k=3"
    ),
    "ham10000": (
        "synthetic.n_train_patients=150 synthetic.n_test_patients=20 synthetic.img_min=40 "
        "synthetic.img_max=48 folds.k=3"
    ),
}


def tiny_config(comp: str, runs_dir: Path, extra: str = "") -> CompetitionConfig:
    return load_competition(comp, f"{TINY[comp]} runs_dir={runs_dir} {extra}")


def _generate_tiny(tmp_path_factory, comp: str) -> tuple[CompetitionConfig, Path]:
    root = tmp_path_factory.mktemp(comp)
    cfg = tiny_config(comp, root / "runs")
    generate(cfg, root / "data", workers=1)
    return cfg, root / "data"


@pytest.fixture(scope="session")
def tiny_isic2024(tmp_path_factory) -> tuple[CompetitionConfig, Path]:
    """(config, data dir) of a tiny synthetic ISIC 2024 competition; treat the files as read-only."""
    return _generate_tiny(tmp_path_factory, "isic2024")


@pytest.fixture(scope="session")
def tiny_isic2020(tmp_path_factory) -> tuple[CompetitionConfig, Path]:
    return _generate_tiny(tmp_path_factory, "isic2020")


@pytest.fixture(scope="session")
def tiny_ham10000(tmp_path_factory) -> tuple[CompetitionConfig, Path]:
    """A tiny synthetic HAM10000 (metadata CSV + JPEG part folders), read-only."""
    return _generate_tiny(tmp_path_factory, "ham10000")


@pytest.fixture
def fixture_dir() -> Path:
    """The real ISIC 2024 public test files, read-only."""
    if not FIXTURES.is_dir():
        pytest.fail(f"the real fixtures are missing: expected {FIXTURES} (shared/ beside the repo)")
    return FIXTURES
