"""The kernel check's comparison, stage by stage: `make predict`'s outputs against the kernel's (stage-1
predictions per run, the feature matrix, each engine's per-fold predictions, the blend), each stage also
redone here on the kernel's own input to it, so that a stage which computes differently is told from one
that only passes a difference on."""

from __future__ import annotations

import numpy as np
import pandas as pd

from foldstack.errors import DataError

TOLERANCE = 1e-6  # what every stage but the features (exact) may differ by


def _diff(local: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """|local - kernel| elementwise, 0 where both are NaN, inf where only one is (or shapes differ)."""
    a, b = np.asarray(local, dtype=np.float64), np.asarray(kernel, dtype=np.float64)
    if a.shape != b.shape:
        return np.full(max(a.shape, b.shape), np.inf)
    d = np.abs(a - b)
    na, nb = np.isnan(a), np.isnan(b)
    d[na & nb] = 0.0
    d[na ^ nb] = np.inf
    return d


def frame_diff(local: pd.DataFrame, kernel: pd.DataFrame) -> pd.DataFrame:
    """Per cell |local - kernel| of two frames of the same columns (categorical or text columns: 0 where
    equal, inf where not); a column one frame lacks differs everywhere."""
    out = {}
    for c in dict.fromkeys([*local.columns, *kernel.columns]):
        if c not in local or c not in kernel:
            out[c] = np.full(len(local), np.inf)
        elif pd.api.types.is_numeric_dtype(local[c]) and pd.api.types.is_numeric_dtype(kernel[c]):
            out[c] = _diff(local[c].to_numpy(float), kernel[c].to_numpy(float))
        else:
            a, b = local[c].astype(object), kernel[c].astype(object)
            same = (a.to_numpy() == b.to_numpy()) | (a.isna().to_numpy() & b.isna().to_numpy())
            out[c] = np.where(same, 0.0, np.inf)
    return pd.DataFrame(out)


def _stage_record(name: str, diff: pd.DataFrame, ids: list[str], tolerance: float, own=None) -> dict:
    """What one stage's comparison says: its largest difference, where (column, id), how many rows and
    which columns differ at all; `own`: the same stage redone here on the kernel's own inputs."""
    values = diff.to_numpy(dtype=np.float64) if diff.size else np.zeros((0, 0))
    worst = float(values.max()) if values.size else 0.0
    rec: dict = {"stage": name, "tolerance": tolerance, "max_abs_diff": worst, "rows": len(ids)}
    rec["rows_differ"] = int((values > 0).any(axis=1).sum()) if values.size else 0
    rec["rows_over_1e-3"] = int((values > 1e-3).any(axis=1).sum()) if values.size else 0
    rec["columns_differ"] = [str(c) for c in diff.columns[(values > 0).any(axis=0)]] if values.size else []
    if worst > 0:
        r, c = np.unravel_index(int(np.argmax(values)), values.shape)
        rec["worst"] = {"column": str(diff.columns[c]), "id": ids[r]}
    if own is not None:
        rec["own"] = _stage_record(name, own, ids, tolerance)
    return rec


def _fold_frame(values: np.ndarray, prefix: str) -> pd.DataFrame:
    """(k, n) or (k, n, C) per-fold predictions as one frame: <prefix>fold<f>[_<class index>]."""
    a = np.asarray(values, dtype=np.float64)
    cols = {}
    for f in range(a.shape[0]):
        if a.ndim == 2:
            cols[f"{prefix}fold{f}"] = a[f]
        else:
            for c in range(a.shape[2]):
                cols[f"{prefix}fold{f}_{c}"] = a[f, :, c]
    return pd.DataFrame(cols)


def compare_stages(stack, test: pd.DataFrame, local, kernel) -> list[dict]:
    """Stage by stage, `make predict`'s outputs (local) against the kernel's: stage-1 predictions per run,
    the feature matrix, each engine, the blend; for every stage after the first also the stage redone
    here on the kernel's own inputs ('own'), which tells a stage that computes differently from one
    that only passes a difference on. Features must be exact; the other stages agree to TOLERANCE."""
    ids = local.ids
    if kernel.ids != ids:
        raise DataError("the kernel's stage outputs are not in the test metadata's row order")
    out = []
    for name, frame in local.cnn.items():
        theirs = kernel.cnn.get(name)
        if theirs is None:
            raise DataError(f"the kernel wrote no stage-1 predictions of run {name!r}")
        cols = [c for c in frame.columns if c != "id"]
        out.append(_stage_record(f"stage 1 {name}", frame_diff(frame[cols], theirs[cols]), ids, TOLERANCE))
    out.append(
        _stage_record(
            "features",
            frame_diff(local.features, kernel.features),
            ids,
            0.0,
            frame_diff(stack.features(test, kernel.cnn), kernel.features),
        )
    )
    own_engines = stack.engines(kernel.features)
    for name, p in local.engines.items():
        theirs = kernel.engines.get(name, np.full(1, np.nan))
        out.append(
            _stage_record(
                f"engine {name}",
                frame_diff(_fold_frame(p, ""), _fold_frame(theirs, "")),
                ids,
                TOLERANCE,
                frame_diff(_fold_frame(own_engines[name], ""), _fold_frame(theirs, "")),
            )
        )
    out.append(
        _stage_record(
            "blend",
            frame_diff(_fold_frame(local.blend, ""), _fold_frame(kernel.blend, "")),
            ids,
            TOLERANCE,
            frame_diff(_fold_frame(stack.blend(kernel.engines), ""), _fold_frame(kernel.blend, "")),
        )
    )
    return out


def _where(rec: dict) -> str:
    w = rec.get("worst")
    return f" ({w['column']}, id {w['id']})" if w else ""


def stage_lines(stages: list[dict]) -> list[str]:
    """One line per stage: the largest difference kernel vs predict, and given the kernel's inputs."""
    lines = []
    for r in stages:
        own = r.get("own")
        given = f"; redone here on the kernel's inputs {own['max_abs_diff']:.3g}" if own else ""
        lines.append(
            f"  {r['stage']}: max |diff| {r['max_abs_diff']:.3g}{_where(r)}, {r['rows_differ']:,} of "
            f"{r['rows']:,} rows differ ({r['rows_over_1e-3']:,} by > 1e-3){given}"
        )
    return lines


def stage_verdict(stages: list[dict], submission_error: str | None) -> str | None:
    """None when every stage agrees; else the error, naming the first stage that computes differently
    (its own difference over its tolerance), or else the first whose difference the later stages grew."""
    for r in stages:
        own = r.get("own", r)
        if own["max_abs_diff"] > r["tolerance"]:
            cols = own["columns_differ"]
            more = f"; {len(cols)} column(s) differ: {', '.join(cols[:8])}" if len(cols) > 1 else ""
            given = " given the kernel's own inputs to it" if "own" in r else ""
            return (
                f"the kernel diverges at stage {r['stage']!r}: {own['max_abs_diff']:.3g} "
                f"(> {r['tolerance']:g}){_where(own)}{given}, {own['rows_differ']:,} of {own['rows']:,} "
                f"rows{more}. Stage by stage (kernel vs `make predict`):\n" + "\n".join(stage_lines(stages))
            )
    if submission_error is None:
        return None
    first = next((r for r in stages if r["max_abs_diff"] > 0), None)
    grew = (
        f"; the first difference is at stage {first['stage']!r} ({first['max_abs_diff']:.3g}"
        f"{_where(first)}), within its tolerance, and the later stages grow it"
        if first
        else ""
    )
    return f"{submission_error}{grew}. Stage by stage:\n" + "\n".join(stage_lines(stages))
