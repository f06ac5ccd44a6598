"""make download: the competition's files through the kaggle CLI, checked, then moved into place whole.

    python pipelines/download.py --comp isic2024 [--data data/isic2024] [--force] [--dry-run] [--timeout S]

`kaggle competitions download -c SLUG` into data/<comp>.partial-<pid>/, unzipped there and checked
against the competition config (every file of the layout, the metadata columns, the sample submission's
ids, the image stores, the published row counts); only then renamed to data/<comp>. A failure leaves
data/<comp> as it was and removes the partial folder. A complete data/<comp> is kept unless --force.

Exit code 0 when the folder holds the complete download (downloaded now or before); 2 on an error.
"""

from __future__ import annotations

from foldstack.cli import base_parser, run_main
from foldstack.commands import data
from foldstack.data.download import DOWNLOAD_TIMEOUT_S


def main(argv: list[str] | None = None) -> int:
    p = base_parser("Download a competition's files through the kaggle CLI into a checked data folder.")
    p.add_argument("--force", action="store_true", help="download again over a complete folder")
    p.add_argument("--dry-run", action="store_true", help="print the kaggle command, run nothing")
    p.add_argument(
        "--timeout",
        type=float,
        default=DOWNLOAD_TIMEOUT_S,
        help=f"seconds the kaggle CLI may take (default {DOWNLOAD_TIMEOUT_S})",
    )
    a = p.parse_args(argv)
    if a.timeout <= 0:
        p.error(f"--timeout must be positive, got {a.timeout}")
    return data.download(a.comp, a.overrides, a.data, force=a.force, dry_run=a.dry_run, timeout=a.timeout)


if __name__ == "__main__":
    run_main(main)
