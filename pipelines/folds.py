"""make folds: patient-grouped, target-stratified folds written once to runs/<comp>/folds.csv."""

from __future__ import annotations

from foldstack.cli import base_parser, competition_from_args, run_main
from foldstack.data.metadata import read_metadata
from foldstack.folds import folds_paths, make_folds


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--force", action="store_true", help="replace folds made for other data, k or seed")
    args = p.parse_args(argv)
    cfg, data_dir = competition_from_args(args)
    train = read_metadata(cfg, data_dir, "train")
    meta = make_folds(cfg, train, data_dir, force=args.force)
    csv_path, _ = folds_paths(cfg)
    verb = "reused" if meta["reused"] else "wrote"
    if meta.get("upgraded"):
        verb = "reused (folds.json now holds the table hash of the train data)"
    if cfg.multiclass:
        counts = ", ".join(f"{c} {n}" for c, n in meta["class_counts"].items())
        what, per = f"classes: {counts}", "classes present"
    else:
        what, per = f"{meta['positives']} positives", "positives"
    groups = cfg.columns.group
    print(
        f"{verb} {csv_path}: k={meta['k']} seed={meta['seed']} sha256={meta['sha256'][:12]} "
        f"({meta['rows']} rows, {what}, {meta['groups']} groups of {groups})"
    )
    for f in meta["per_fold"]:
        print(f"  fold {f['fold']}: {f['rows']} rows, {f['positives']} {per}, {f['groups']} groups")
    return 0


if __name__ == "__main__":
    run_main(main)
