"""Shared plumbing for the thin entry points in pipelines/: common arguments and error reporting."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from foldstack.config import CompetitionConfig, load_competition
from foldstack.errors import FoldstackError


def base_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the variables every Make target shares: COMP, DATA, SET."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--comp", default="isic2024", help="competition config name (configs/competitions/)")
    p.add_argument("--data", default=None, help="data folder in the Kaggle layout (default data/<comp>)")
    p.add_argument("--set", default="", dest="overrides", help='dotted overrides, e.g. "folds.k=3"')
    return p


def data_dir(args: argparse.Namespace, cfg: CompetitionConfig) -> Path:
    """--data, else data/<comp>."""
    return Path(args.data) if args.data else Path("data") / cfg.name


def competition_from_args(args: argparse.Namespace) -> tuple[CompetitionConfig, Path]:
    cfg = load_competition(args.comp, args.overrides)
    return cfg, data_dir(args, cfg)


def run_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a pipeline's main; a FoldstackError becomes a one-paragraph message and exit code 2."""
    try:
        code = main(argv)
    except FoldstackError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
