"""make predict DATA=dir: trained artifacts -> a submission for any folder in the Kaggle layout."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from foldstack import artifacts
from foldstack.cli import base_parser, competition_from_args, run_main
from foldstack.kernel import stack_test_predictions, submission_frame


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--stack", default="lgb_xgb_cb")
    p.add_argument(
        "--out", default="", help="CSV path (default: submissions/<comp>/predict/<UTC>_<stack>.csv)"
    )
    args = p.parse_args(argv)
    cfg, data_dir = competition_from_args(args)
    stack_dir = cfg.run_dir / "stack" / args.stack
    preds = stack_test_predictions(stack_dir, Path(cfg.runs_dir), data_dir)
    sub = submission_frame(cfg, data_dir, preds)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    default = Path("submissions") / cfg.name / "predict" / f"{stamp}_{args.stack}.csv"
    out = Path(args.out) if args.out else default
    artifacts.write_csv(out, sub)
    print(f"wrote {out}: {len(sub)} rows, ids and order of {data_dir / cfg.files.sample_submission}")
    print(sub.head(10).to_string(index=False))
    return 0


if __name__ == "__main__":
    run_main(main)
