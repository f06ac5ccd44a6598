"""Weights and resumable training state as safetensors + JSON: nothing is ever unpickled."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save, save_file

from foldstack import artifacts
from foldstack.runs import CHECKPOINT_SUFFIX


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def write_weights(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Weights as safetensors at `path` (a set's staged path: the set's commit makes it visible)."""
    save_file(_cpu(state), str(path), metadata=metadata)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state split into tensors (for safetensors) and plain values (for JSON)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"opt.{idx}.{name}"] = value
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], plain: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in plain["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": plain["param_groups"]})


def rng_state(device: torch.device) -> tuple[dict[str, torch.Tensor], dict]:
    """Every global random state training draws from: torch's CPU generator (and the CUDA generator of
    `device`) as uint8 tensors; numpy's and python's global states as JSON-ready lists."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    plain = {
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(internal), gauss_next],
    }
    return tensors, plain


def restore_rng(tensors: dict[str, torch.Tensor], plain: dict, device: torch.device) -> None:
    """Put back what rng_state saved. A CUDA state is restored onto `device` (every DDP rank is seeded
    alike and draws alike, so rank 0's state stands for each rank's own device)."""
    torch.set_rng_state(tensors["rng.torch"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    name, keys, pos, has_gauss, gauss = plain["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = plain["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _ckpt_path(prefix: Path) -> Path:
    return prefix.with_name(prefix.name + CHECKPOINT_SUFFIX)


def _write_halves(path: Path, data: bytes) -> None:
    """Write `data` in two halves with a fault point between them (the kill -9 tests stop here)."""
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        artifacts.fault_point("stage1.checkpoint")
        f.write(data[len(data) // 2 :])


def save_training_state(
    prefix: Path,
    groups: dict[str, dict[str, torch.Tensor] | None],
    opt: torch.optim.Optimizer,
    info: dict,
    rng: tuple[dict[str, torch.Tensor], dict] | None = None,
) -> None:
    """One atomic <prefix>.ckpt.safetensors: named tensor groups (model, ema, best...), the optimizer
    tensors and the RNG tensors; everything else (scheduler, GradScaler, numpy/python RNG...) as JSON
    metadata."""
    opt_t, opt_plain = optimizer_tensors(opt)
    tensors = dict(opt_t)
    for group, state in groups.items():
        if state is not None:
            tensors |= {f"{group}.{k}": v for k, v in state.items()}
    meta = info | {"optimizer": opt_plain}
    if rng is not None:
        tensors |= rng[0]
        meta["rng"] = rng[1]
    data = save(_cpu(tensors), metadata={"info": json.dumps(meta)})
    artifacts.write_atomic(_ckpt_path(prefix), lambda p: _write_halves(p, data))


def load_training_state(prefix: Path) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """(info, tensors) of the last completed epoch, or None when there is no checkpoint."""
    path = _ckpt_path(prefix)
    if not path.exists():
        return None
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        info = json.loads((f.metadata() or {})["info"])
    return info, load_file(str(path))


def split_state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def checkpoint_name(prefix: Path) -> str:
    """The file name of the training checkpoint beside `prefix` (a fold set drops it on commit)."""
    return _ckpt_path(prefix).name
