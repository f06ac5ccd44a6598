"""The stage-1 network: a timm backbone, an optional metadata branch, an MLP head returning a dict."""

from __future__ import annotations

import itertools
from pathlib import Path

import timm
import torch
from torch import nn

from foldstack.errors import ConfigError
from foldstack.stage1.config import ModelCfg

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def mlp(sizes: list[int], dropout: float = 0.0, last_activation: bool = False) -> nn.Sequential:
    """Linear layers through `sizes` with ReLU between them; dropout before the last layer."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        last = i == len(sizes) - 2
        if last and dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(a, b))
        if not last or last_activation:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def resolve_weights(cfg: ModelCfg) -> str | None:
    """Path of local pretrained weights (model.pretrained_file, else the Hugging Face cache), or None.

    No download is attempted. pretrained=true without local weights is an error that says how to
    provide them; pretrained=auto falls back to random init.
    """
    if cfg.pretrained is False:
        return None
    if cfg.pretrained_file:
        path = Path(cfg.pretrained_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"model.pretrained_file={cfg.pretrained_file!r} does not exist")
        return str(path)
    try:
        hf_id = timm.models.get_pretrained_cfg(cfg.backbone).hf_hub_id
    except (RuntimeError, AttributeError):
        hf_id = None
    if hf_id:
        from huggingface_hub import try_to_load_from_cache

        for name in WEIGHT_FILES:
            found = try_to_load_from_cache(hf_id, name)
            if isinstance(found, str):
                return found
    if cfg.pretrained is True:
        raise ConfigError(
            f"model.pretrained=true but no local weights for {cfg.backbone!r} (this machine cannot "
            f"download them). Either copy the Hugging Face repo {hf_id or '(none known)'} into the HF cache "
            f"(e.g. `huggingface-cli download {hf_id}` on a machine with internet, then copy "
            f"~/.cache/huggingface), or set model.pretrained_file=/path/to/model.safetensors, or "
            f"model.pretrained=false to train from random init."
        )
    return None


def create_backbone(cfg: ModelCfg, weights: str | None) -> nn.Module:
    """timm backbone without classifier; an unknown name lists close matches."""
    if not timm.is_model(cfg.backbone):
        arch = cfg.backbone.split(".")[0]
        close = timm.list_models(f"*{arch[:8]}*")[:15]
        raise ConfigError(f"unknown timm model {cfg.backbone!r}; similar names: {', '.join(close) or 'none'}")
    kwargs = {"num_classes": 0, "drop_rate": cfg.drop_rate}
    if weights:
        return timm.create_model(
            cfg.backbone, pretrained=True, pretrained_cfg_overlay={"file": weights}, **kwargs
        )
    return timm.create_model(cfg.backbone, pretrained=False, **kwargs)


class LesionNet(nn.Module):
    """image (+ metadata vector) -> {'logit': (B,) or (B, n_outputs) for multiclass, 'features': (B, F)}."""

    def __init__(
        self, cfg: ModelCfg, n_meta: int = 0, weights: str | None = None, n_outputs: int = 1
    ) -> None:
        super().__init__()
        self.backbone = create_backbone(cfg, weights)
        n_feat = self.backbone.num_features
        self.meta = None
        if cfg.meta and n_meta > 0:
            self.meta = mlp([n_meta, *cfg.meta_hidden], last_activation=False)
            n_feat += cfg.meta_hidden[-1] if cfg.meta_hidden else n_meta
        self.head = mlp([n_feat, *cfg.head, n_outputs], dropout=cfg.head_dropout)
        self.n_outputs = n_outputs
        if cfg.head_input_dropout > 0:
            self.head = nn.Sequential(nn.Dropout(cfg.head_input_dropout), *self.head)
        if cfg.freeze_backbone:
            for p in self.backbone.parameters():
                p.requires_grad_(False)
        self.frozen = cfg.freeze_backbone

    def train(self, mode: bool = True) -> LesionNet:
        super().train(mode)
        if self.frozen:  # a frozen backbone keeps its BatchNorm statistics
            self.backbone.eval()
        return self

    def forward(self, image: torch.Tensor, meta: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        feats = self.backbone(image)
        if self.meta is not None:
            if meta is None:
                raise ValueError("this model fuses metadata: pass the meta tensor")
            feats = torch.cat([feats, self.meta(meta.to(feats.dtype))], dim=1)
        logit = self.head(feats)
        return {"logit": logit.squeeze(1) if self.n_outputs == 1 else logit, "features": feats}
