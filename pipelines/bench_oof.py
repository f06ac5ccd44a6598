"""make bench-oof [MODEL=effnetv2_b1] [SCALE=isic2024]: one fold's real stage-1 work with its wall-time split,
and training images/s end to end vs model only.

With SCALE=isic2024 the data is a synthetic competition of ISIC 2024's size and imbalance (401,059 train
rows, 393 positives, 1,042 patients; data/bench-isic2024, made once) and the runs go to
runs/bench-isic2024, apart from the embedded competition's. Prints, for fold 0 of MODEL's config as
written: images trained, scored and predicted, and the seconds of cache, training, held-out scoring, OOF
and test prediction; then end-to-end vs model-only images/s of each --throughput backbone@size.
"""

from __future__ import annotations

from foldstack.cli import base_parser, run_main
from foldstack.commands import stage1


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--scale", default="", choices=["", "isic2024"])
    p.add_argument("--steps", type=int, default=30, help="timed training steps per throughput figure")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--no-fold", action="store_true", help="only the throughput figures")
    p.add_argument("--throughput", default=stage1.THROUGHPUT, help="backbone@size,... ('' for none)")
    p.add_argument("--rounds", type=int, default=5, help="alternating test-prediction rounds, best kept")
    a = p.parse_args(argv)
    if a.scale and a.comp != "isic2024":
        p.error("SCALE=isic2024 goes with COMP=isic2024")
    return stage1.bench_oof(
        a.comp, a.model, a.overrides, a.data, a.scale, a.steps, a.fold, a.no_fold, a.throughput, a.rounds
    )


if __name__ == "__main__":
    run_main(main)
