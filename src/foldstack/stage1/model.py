"""The stage-1 network: a timm backbone, an optional metadata branch, an MLP head returning a dict."""

from __future__ import annotations

import itertools
from pathlib import Path

import timm
import torch
from torch import nn

from foldstack.errors import ConfigError
from foldstack.stage1.config import ModelCfg
from foldstack.stage1.weights import PACKAGES, WEIGHTS_DIR, get_command, load_checked, verify

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
    """Path of local pretrained weights (model.pretrained_file, checked against the sha256 manifest beside
    it, else the Hugging Face cache), or None.

    No download is attempted. pretrained=true without local weights is an error that says how to
    provide them; pretrained=auto falls back to random init.
    """
    if cfg.pretrained is False:
        return None
    if cfg.pretrained_file:
        path = Path(cfg.pretrained_file).expanduser()
        if not path.is_file():
            name = path.name.removesuffix(".safetensors")
            how = (
                f"get it with `{get_command(name)}`"
                if name in PACKAGES or path.parent == WEIGHTS_DIR
                else "copy the file there, or set model.pretrained_file to a timm safetensors file"
            )
            raise ConfigError(
                f"model.pretrained_file={cfg.pretrained_file!r} does not exist: {how} "
                f'(or SET="model.pretrained=false model.pretrained_file=null" to train from random init)'
            )
        verify(path)
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


def check_pretrained(cfg: ModelCfg) -> str | None:
    """Resolve the pretrained weights and load them into the backbone once, before any data is read or
    trained on: a missing, changed or misfitting file fails here, naming the file and the command."""
    weights = resolve_weights(cfg)
    if weights:
        create_backbone(cfg, weights)
    return weights


def create_backbone(cfg: ModelCfg, weights: str | None) -> nn.Module:
    """timm backbone without classifier; an unknown name lists close matches."""
    if not timm.is_model(cfg.backbone):
        arch = cfg.backbone.split(".")[0]
        close = timm.list_models(f"*{arch[:8]}*")[:15]
        raise ConfigError(f"unknown timm model {cfg.backbone!r}; similar names: {', '.join(close) or 'none'}")
    model = timm.create_model(cfg.backbone, pretrained=False, num_classes=0, drop_rate=cfg.drop_rate)
    if weights:
        load_checked(Path(weights), model)
    return model


class LesionNet(nn.Module):
    """image (+ metadata vector) -> {'logit': (B,) or (B, n_outputs) for multiclass, 'features': (B, F)}."""

    def __init__(
        self, cfg: ModelCfg, n_meta: int = 0, weights: str | None = None, n_outputs: int = 1, n_aux: int = 0
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
        # auxiliary multi-label head (model.aux_targets): trained, never saved with the fold's weights
        self.aux_head = nn.Linear(n_feat, n_aux) if n_aux else None
        self.frozen = False
        self.set_backbone_frozen(cfg.freeze_backbone)

    def set_backbone_frozen(self, frozen: bool) -> None:
        """Freeze (no gradients, BatchNorm statistics kept) or unfreeze the backbone."""
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        self.frozen = frozen
        self.train(self.training)

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
        out = {"logit": logit.squeeze(1) if self.n_outputs == 1 else logit, "features": feats}
        if self.aux_head is not None:
            out["aux_logit"] = self.aux_head(feats)
        return out


def without_aux(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A LesionNet state dict less the auxiliary head: what a fold's weights file holds."""
    return {k: v for k, v in state.items() if not k.startswith("aux_head.")}
