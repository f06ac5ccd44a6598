"""Shared plumbing for the thin entry points in pipelines/: common arguments and error reporting."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from foldstack.config import CompetitionConfig, load_competition
from foldstack.errors import FoldstackError
from foldstack.runs import default_data_dir


def base_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the variables every Make target shares: COMP, DATA, SET."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--comp", default="isic2024", help="competition config name (configs/competitions/)")
    p.add_argument("--data", default=None, help="data folder in the Kaggle layout (default data/<comp>)")
    p.add_argument("--set", default="", dest="overrides", help='dotted overrides, e.g. "folds.k=3"')
    return p


def resolve_data(data: str | Path | None, cfg: CompetitionConfig) -> Path:
    """DATA, else data/<comp>."""
    return Path(data) if data else default_data_dir(cfg)


def competition(
    comp: str, overrides: str = "", data: str | Path | None = None
) -> tuple[CompetitionConfig, Path]:
    """The competition config with its overrides, and its data folder."""
    cfg = load_competition(comp, overrides)
    return cfg, resolve_data(data, cfg)


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
