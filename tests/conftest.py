"""Shared fixtures: tiny synthetic competitions generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from foldstack.config import CompetitionConfig, load_competition
from foldstack.data.metadata import read_metadata
from foldstack.folds import make_folds
from foldstack.runs import Runs
from foldstack.stage1.config import load_oof_config
from foldstack.stage1.run import run_oof
from foldstack.stage2.config import load_stack_config
from foldstack.stage2.run import run_stack
from foldstack.synth.generate import generate

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "isic2024-public-test"
TINY = {
    "isic2024": (
        "synthetic.n_train_patients=24 synthetic.n_test_patients=6 synthetic.lesions_per_patient=12 "
        "synthetic.pos_rate=0.06 synthetic.img_min=48 synthetic.img_max=64 folds.k=3 "
        "kernel.runtime_limit_h=0"  # no runtime gate on tiny runs (their per-row timing is all overhead)
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


@pytest.fixture(scope="session")
def tiny_isic2024_constant_skin(tmp_path_factory) -> tuple[CompetitionConfig, Path]:
    """A tiny ISIC 2024 whose skin colour around the lesion (tbp_lv_*ext) is constant within each patient
    (synthetic.skin_noise=0): the case where rounding once made the stack split on noise (issue 21)."""
    root = tmp_path_factory.mktemp("isic2024-constant-skin")
    cfg = tiny_config("isic2024", root / "runs", "synthetic.skin_noise=0")
    generate(cfg, root / "data", workers=1)
    return cfg, root / "data"


@pytest.fixture
def fixture_dir() -> Path:
    """The real ISIC 2024 public test files, read-only."""
    if not FIXTURES.is_dir():
        pytest.fail(f"the real fixtures are missing: expected {FIXTURES} (shared/ beside the repo)")
    return FIXTURES


@pytest.fixture(scope="session")
def trained(tiny_isic2024_constant_skin, tmp_path_factory):
    """(competition config, data dir, runs root, stack dir): a tiny stage-1 run and an lgbm stack on it,
    shared read-only by the submission and kernel tests; the data's skin colour columns are constant
    within each patient, so the kernel test is also the regression test of issue 21."""
    _, data = tiny_isic2024_constant_skin
    root = tmp_path_factory.mktemp("submit")
    runs = root / "runs"
    base = f"{TINY['isic2024']} runs_dir={runs}"
    # the stage-1 model starts from a pretrained file and trains auxiliary heads; the file is gone before
    # anything is submitted: the bundle and the kernel need the fold weights alone
    weights = root / "weights" / "test_efficientnet.safetensors"
    weights.parent.mkdir()
    torch.manual_seed(0)
    save_file(timm.create_model("test_efficientnet").state_dict(), str(weights))
    s1 = load_oof_config(
        "isic2024",
        "tiny",
        f"{base} data.img_size=32 train.epochs=1 predict.tta=2 model.pretrained=true "
        f"model.pretrained_file={weights} model.aux_targets=[iddx_2]",
    )
    make_folds(s1, read_metadata(s1, data, "train"), data)
    run_oof(s1, data, progress=False)
    weights.unlink()
    st = load_stack_config("isic2024", "lgb_xgb_cb", f"{base} tuning.n_trials=1")
    run_stack(st, data)
    return load_competition("isic2024", base), data, runs, Runs.of(st).stack(st.run).dir


@pytest.fixture(autouse=True)
def _no_real_kaggle_venv(monkeypatch):
    """No test builds the real Kaggle-versions venv (.kaggle-venv: GBs, up to half an hour on a cold
    pip cache): a test that reaches it fails and says how to run the check instead."""
    from foldstack.submit import check as kc

    real = kc.kaggle_venv

    def guarded(pins: Path = kc.PINS, venv: Path = kc.VENV) -> Path:
        if Path(venv).resolve() == kc.VENV.resolve():
            raise AssertionError(
                "a test asked for the real Kaggle-versions venv: pass --kernel-python own "
                "(KERNEL_PYTHON=own) or --skip-kernel-check, or kaggle_venv(pins, venv) with small pins"
            )
        return real(pins, venv)

    monkeypatch.setattr(kc, "kaggle_venv", guarded)
