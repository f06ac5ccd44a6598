"""Weights and resumable training state as safetensors + JSON: nothing is ever unpickled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from foldstack import artifacts


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def save_weights(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    artifacts.write_atomic(path, lambda p: save_file(_cpu(state), str(p), metadata=metadata))


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


def _ckpt_path(prefix: Path) -> Path:
    return prefix.with_name(prefix.name + ".ckpt.safetensors")


def save_training_state(
    prefix: Path, groups: dict[str, dict[str, torch.Tensor] | None], opt: torch.optim.Optimizer, info: dict
) -> None:
    """One atomic <prefix>.ckpt.safetensors: named tensor groups (model, ema, best...) and the optimizer
    tensors; everything else as JSON metadata."""
    opt_t, opt_plain = optimizer_tensors(opt)
    tensors = dict(opt_t)
    for group, state in groups.items():
        if state is not None:
            tensors |= {f"{group}.{k}": v for k, v in state.items()}
    save_weights(_ckpt_path(prefix), tensors, {"info": json.dumps(info | {"optimizer": opt_plain})})


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


def remove_training_state(prefix: Path) -> None:
    _ckpt_path(prefix).unlink(missing_ok=True)
