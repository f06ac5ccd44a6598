"""Several seeds per stage-1 model: `make oof MODEL=m SEEDS=0,1,2` trains the run once per seed, as the
ordinary runs <run>_s0, <run>_s1, <run>_s2 (train.seed=<seed>; fold jobs and resuming as for any run),
and when every one of them is assembled writes their per-id mean as the stage-1 run <run>:

- oof.parquet: id, fold, target and the per-id mean of the seed runs' prediction columns (refused, naming
  the run and the id, unless every seed run has the same ids in the same folds on the same folds sha256);
- test.parquet: the per-id mean of each fold column over the seeds, `pred` their mean (test_frame);
- metrics.json (the set's manifest): the mean's own OOF scores, each seed run's scores, config_sha and
  fold_records_sha256, the seeds, and seed_runs_sha256 (the sha256 of the seed runs' metrics.json): a
  rerun reassembles the mean only when a seed run changed;
- config.yaml (the model config without the seed's run name) and report/.

The mean run holds no fold weights: prediction (make predict, the Kaggle kernel) runs every seed run's
fold models in one pass and averages them (seed_members; a bundle copies the seed runs beside it)."""

from __future__ import annotations

import contextlib
import shlex
from dataclasses import dataclass

import numpy as np
import pandas as pd

from foldstack import artifacts
from foldstack import prediction_tables as pt
from foldstack.config import to_yaml
from foldstack.errors import ConfigError, DataError
from foldstack.report import write_report
from foldstack.runs import Runs, Stage1Run, runs_of
from foldstack.stage1.config import OofConfig, load_oof_config
from foldstack.stage1.run import assembled

SEED_RUNS = "seed_runs"  # metrics.json of a mean run: one entry per seed run (run, seed, shas, scores)


@dataclass(frozen=True)
class SeedPlan:
    """The mean run's config (`base`, named like the model's run) and one config per seed."""

    model: str
    base: OofConfig
    seeds: list[int]
    configs: list[OofConfig]

    @property
    def command(self) -> str:
        return f"make oof MODEL={self.model} SEEDS={','.join(map(str, self.seeds))}"


def parse_seeds(seeds: str) -> list[int]:
    """SEEDS=2,0,1 -> [0, 1, 2]; anything but distinct whole numbers >= 0 is an error saying so."""
    items = [s.strip() for s in str(seeds).split(",")]
    bad = [s for s in items if not s.isdigit()]
    if bad:
        raise ConfigError(
            f"SEEDS={seeds}: {', '.join(map(repr, bad))} is not a seed; give distinct whole numbers >= 0, "
            f"comma-separated, e.g. SEEDS=0,1,2"
        )
    values = [int(s) for s in items]
    twice = sorted({v for v in values if values.count(v) > 1})
    if twice:
        raise ConfigError(
            f"SEEDS={seeds}: seed(s) {', '.join(map(str, twice))} given twice; each seed is one run "
            f"(<run>_s<seed>), so give each once, e.g. SEEDS={','.join(map(str, sorted(set(values))))}"
        )
    return sorted(values)


def seed_run_name(run: str, seed: int) -> str:
    return f"{run}_s{seed}"


def seed_plan(comp: str, model: str, overrides: str, seeds: str) -> SeedPlan:
    """The configs of `make oof MODEL=model SEEDS=seeds`: each seed's is the model's with
    train.seed=<seed> and run=<run>_s<seed> (after SET, so SEEDS wins over a SET train.seed)."""
    values = parse_seeds(seeds)
    base = load_oof_config(comp, model, overrides)
    mean = Runs.of(base).stage1(base.run)
    single = mean.fold_files()
    if single:
        raise ConfigError(
            f"{mean.dir} holds the fold sets of a single-seed run ({single[0].name}, ...), and the mean of "
            f"SEEDS={','.join(map(str, values))} would be written there as run {base.run}: move or delete "
            f'that folder, or give the runs another name (SET="run=<name>")'
        )
    configs = [
        load_oof_config(
            comp, model, f"{overrides} train.seed={s} run={shlex.quote(seed_run_name(base.run, s))}"
        )
        for s in values
    ]
    return SeedPlan(model, base, values, configs)


def _records_sha(run: Stage1Run, k: int) -> str:
    from foldstack.stage1.run import records_sha  # deferred: stage 2 reads mean runs without torch

    return records_sha(run, k)


def member_ready(run: Stage1Run, k: int) -> bool:
    """Whether a seed run is assembled from exactly its current k fold records."""
    if not run.finished() or len(run.folds_with_record(k)) < k:
        return False
    try:
        body = run.read_metrics(deep=False)
    except DataError:
        return False
    return body.get("fold_records_sha256") == _records_sha(run, k)


def members_sha(members: list[Stage1Run]) -> str:
    """The sha256 of the seed runs' names and metrics.json (each lists its oof/test files' sha256)."""
    return artifacts.sha256_bytes(b"".join(m.name.encode() + b"\0" + m.metrics.read_bytes() for m in members))


def finish_seeds(plan: SeedPlan) -> dict:
    """When every seed run is assembled: write the mean run (once, under its lock, unless it is already
    the mean of exactly these seed runs). With seed runs unfinished: say which, and how to finish them."""
    base = plan.base
    mean = Runs.of(base).stage1(base.run)
    members = [Runs.of(c).stage1(c.run) for c in plan.configs]
    with artifacts.folder_lock(mean.lock):
        waiting = [m.name for m in members if not member_ready(m, base.folds.k)]
        if waiting:
            print(
                f"run {base.run}: seed run(s) {', '.join(waiting)} not assembled yet (folds missing); the "
                f"mean of the seeds is written when the last one lands: `{plan.command}` (FOLDS= as for "
                f"one run)"
            )
            return {"missing_seed_runs": waiting}
        sha = members_sha(members)
        if assembled(mean, sha, key="seed_runs_sha256"):
            print(f"run {base.run}: every seed run done and their mean already assembled ({mean.metrics})")
            return mean.read_metrics(deep=False)
        return assemble_mean(plan, members, sha)


Member = tuple[dict, pd.DataFrame, pd.DataFrame]  # a seed run's metrics.json, oof and test frames


def read_member(run: Stage1Run) -> Member:
    body = run.read_metrics()  # deep: the oof/test files are the ones it lists
    return body, pd.read_parquet(run.oof), pd.read_parquet(run.test)


def _check_ids(name: str, first: str, frame: pd.DataFrame, ref: pd.DataFrame, what: str, cols: list) -> None:
    """`frame` (seed run `name`'s) has the ids of `ref` (seed run `first`'s), each once, with equal `cols`."""
    fix = "the mean of seed runs needs every seed run made on the same data and folds; rerun them"
    dup = frame["id"][frame["id"].duplicated()]
    if len(dup):
        raise DataError(f"seed run {name}: id {dup.iloc[0]} appears twice in its {what} file; {fix}")
    ids, ref_ids = set(frame["id"]), set(ref["id"])
    if ids != ref_ids:
        only = sorted(ids ^ ref_ids)
        where = name if only[0] in ids else first
        raise DataError(
            f"seed run {name}: its {what} ids differ from {first}'s ({len(only)} id(s) in one only, e.g. "
            f"id {only[0]}, only in {where}); {fix}"
        )
    if cols:
        a, b = frame.set_index("id")[cols], ref.set_index("id").loc[frame["id"], cols]
        diff = (a != b).any(axis=1).to_numpy()
        if diff.any():
            i = a.index[int(np.flatnonzero(diff)[0])]
            theirs, ours = (", ".join(f"{c} {t.loc[i, c]}" for c in cols) for t in (a, b))
            raise DataError(
                f"seed run {name}: id {i} has {theirs} there and {ours} in {first}: its {what} rows are "
                f"not on the same folds; {fix}"
            )


def check_members_agree(names: list[str], read: list[Member]) -> None:
    """Same folds sha256, same train ids in the same folds with the same targets, same test ids."""
    (m0, oof0, test0), first = read[0], names[0]
    for name, (m, oof, test) in zip(names[1:], read[1:], strict=True):
        if m.get("folds_sha256") != m0.get("folds_sha256"):
            raise DataError(
                f"seed run {name}: made on folds sha256 {str(m.get('folds_sha256'))[:12]}, {first} on "
                f"{str(m0.get('folds_sha256'))[:12]}: the mean of seed runs needs the same folds; rerun "
                f"them on the current folds"
            )
        _check_ids(name, first, oof, oof0, "OOF", ["fold", "target"])
        _check_ids(name, first, test, test0, "test", [])


def mean_oof(cfg: OofConfig, names: list[str], read: list[Member]) -> pd.DataFrame:
    """id, fold, target of the first seed run, and the per-id mean of every seed run's predictions."""
    oof0 = read[0][1]
    preds = [
        pt.as_matrix(pt.read(cfg, oof.set_index("id").loc[oof0["id"]], f"seed run {n} OOF"))
        for n, (_, oof, _) in zip(names, read, strict=True)
    ]
    head = oof0[["id", "fold", "target"]].reset_index(drop=True)
    return pd.concat([head, pt.columns_frame(cfg, np.mean(preds, axis=0))], axis=1)


def mean_test(cfg: OofConfig, names: list[str], read: list[Member]) -> pd.DataFrame:
    """Each fold column's per-id mean over the seed runs; `pred` the mean of those (as a run's own)."""
    ids = read[0][2]["id"].tolist()
    tests = [
        (f"seed run {n} test", t.set_index("id").loc[ids]) for n, (_, _, t) in zip(names, read, strict=True)
    ]
    per_fold = [
        np.mean([pt.read(cfg, t, where, pt.fold_columns(cfg, f)) for where, t in tests], axis=0)
        for f in range(cfg.folds.k)
    ]
    return pt.test_frame(cfg, ids, per_fold)


def mean_metrics(plan: SeedPlan, names: list[str], read: list[Member], oof: pd.DataFrame, sha: str) -> dict:
    base = plan.base
    ms = [m for m, _, _ in read]
    y, p = oof["target"].to_numpy(), pt.read(base, oof, "the mean OOF")
    main = f"oof_{pt.main_key(base)}"
    members = [
        {"run": n, "seed": s, "config_sha": m.get("config_sha")}
        | {"fold_records_sha256": m.get("fold_records_sha256")}
        | {k: v for k, v in m.items() if k.startswith("oof_") and isinstance(v, float)}
        for n, s, m in zip(names, plan.seeds, ms, strict=True)
    ]
    how = (
        f"per-id mean of {len(names)} seed runs' predictions ({', '.join(names)}), each out of fold on the "
        f"same {base.folds.k} folds (sha {str(ms[0]['folds_sha256'])[:12]}): {ms[0].get('how_scored', '')}"
    )
    return {
        "run": base.run,
        "competition": base.name,
        "metric": base.metric,
        **pt.score_folds(base, y, p, oof["fold"].to_numpy()),
        f"seed_{main}_mean": float(np.mean([m[main] for m in ms])),
        "score_is_optimistic": any(bool(m.get("score_is_optimistic")) for m in ms),
        "how_scored": how,
        "model_config": plan.model,
        "seeds": plan.seeds,
        SEED_RUNS: members,
        "seed_runs_sha256": sha,
        "folds_k": base.folds.k,
        "train_seconds_all_folds": round(sum(m.get("train_seconds_all_folds", 0) for m in ms), 1),
        "test_prediction_seconds": round(sum(m.get("test_prediction_seconds", 0) for m in ms), 1),
        "img_size": ms[0].get("img_size"),
        "pretrained_weights": ms[0].get("pretrained_weights"),
        "folds_sha256": ms[0]["folds_sha256"],
        "runtime": ms[0].get("runtime"),
        "git_commit": artifacts.git_commit(),
    }


def assemble_mean(plan: SeedPlan, members: list[Stage1Run], sha: str) -> dict:
    """Write the mean run's oof, test, config, report and metrics.json (the manifest) as one set."""
    base = plan.base
    names = [m.name for m in members]
    read = [read_member(m) for m in members]
    check_members_agree(names, read)
    oof, test = mean_oof(base, names, read), mean_test(base, names, read)
    result = mean_metrics(plan, names, read, oof, sha)
    mean = Runs.of(base).stage1(base.run)
    with artifacts.SetWriter(mean.dir, "run", manifest=mean.metrics.name) as s:
        s.write_parquet(mean.oof.name, oof)
        s.write_parquet(mean.test.name, test)
        mean.write_config(to_yaml(base), s.workdir())
        s.write_json(mean.metrics.name, result)
        write_report(base, s.workdir(), oof["target"].to_numpy(), pt.read(base, oof, mean.oof.name), base.run)
    key = pt.main_key(base)
    seeds = ", ".join(f"{m['run']} {m.get(f'oof_{key}', float('nan')):.4f}" for m in result[SEED_RUNS])
    print(f"run {base.run}: mean of {len(names)} seed runs: oof {key} {result[f'oof_{key}']:.4f} ({seeds})")
    return result


def _listed(run: Stage1Run) -> dict:
    """A run's metrics.json without checking its members (a bundle holds no stage-1 oof/test files);
    {} when there is none."""
    return run.read_metrics(only=()) if run.metrics.exists() else {}


def seed_members(run: Stage1Run) -> list[Stage1Run]:
    """The seed runs a mean run was assembled from, beside it in the same runs tree (also inside a
    bundle), each refused if its fold records differ from those the mean was made from; [] for an
    ordinary run."""
    body = _listed(run)
    listed, k = body.get(SEED_RUNS) or [], int(body.get("folds_k") or 0)
    out = []
    for entry in listed:
        member = runs_of(run).stage1(entry["run"])
        if len(member.folds_with_record(k)) == k and _records_sha(member, k) != entry["fold_records_sha256"]:
            command = f"make oof MODEL={body.get('model_config')} SEEDS={','.join(map(str, body['seeds']))}"
            raise DataError(
                f"seed run {member.name} ({member.dir}): its fold records differ from those the mean run "
                f"{run.name} was assembled from (it was retrained alone): `{command}` reassembles "
                f"{run.name}; then stack it again"
            )
        out.append(member)
    return out


def stage1_members(run: Stage1Run) -> list[Stage1Run]:
    """The runs whose fold models predict for `run`: its seed runs for a mean run, else the run itself."""
    return seed_members(run) or [run]


def stacked_by_default(runs: list[Stage1Run]) -> list[str]:
    """The names of the finished stage-1 runs that `models_in: all` stacks: a mean of seed runs stands for
    its seed runs, which are left out (MODELS= naming them stacks them)."""
    covered: set[str] = set()
    for r in runs:
        with contextlib.suppress(DataError):  # an unreadable metrics.json is refused when it is loaded
            covered |= {e["run"] for e in _listed(r).get(SEED_RUNS) or []}
    return [r.name for r in runs if r.name not in covered]
