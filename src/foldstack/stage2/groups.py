"""Group statistics that rounding cannot turn into a signal.

A value constant within its group has a z-score of exactly 0, a ratio to the group mean of exactly 1
and a percentile rank of exactly 0.5, whatever the float (0.1 + 0.2 repeated included), the row order,
the library versions or the CPU. Three rules make it so:

- deviations are taken from a reference inside the group (its smallest value), so equal values give
  deviations of exactly 0 before any sum is taken; what is left of a deviation after the group mean
  is removed is snapped to 0 when it is below RTOL times the group's largest |value| (summation
  rounding is ~1e-16 of it, a measured difference is never that small);
- sums run in numpy over rows in a fixed order (build_features sorts rows by id), never in a library
  whose summation algorithm changes between versions;
- every computed value is put on the float32 grid (grid32): float64 noise of a few ulps from a
  transcendental function or a summation order moves no value to another float32, so no tree can
  split between two values that are equal in arithmetic (XGBoost and CatBoost see float32 anyway).

A group of one lesion has z = 0, ratio 1 and rank 0.5; a missing value stays missing and takes no
part in its group's statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

RTOL = 1e-9  # deviations below this share of the group's largest |value| are rounding, not signal
EPS = 1e-6  # keeps a ratio to a group mean near 0 finite


def grid32(x: np.ndarray) -> np.ndarray:
    """x rounded to the nearest float32 (returned as float64): a few float64 ulps of noise vanish."""
    with np.errstate(over="ignore"):
        return np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float64)


def snapped_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a - b, exactly 0 where the two agree to RTOL of their magnitude (a difference that cancels)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    d = a - b
    with np.errstate(invalid="ignore"):
        d[np.abs(d) <= RTOL * np.maximum(np.abs(a), np.abs(b))] = 0.0
    return d


CHUNK = 8  # columns per pass: the temporaries of a pass stay small, so memory is reused, not faulted in
STATS = ("z", "ratio", "rank")
_MISSING_KEY = np.uint64(0xFFFFFFFF)  # the low half of a missing value's sort key: after every float32


def _order_key(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a uint32 per value that sorts as the value on the float32 grid does, missing (NaN, +-inf) last
    and -0.0 equal to 0.0; validity): ranks come from one integer sort, no per-column lexsort."""
    v = np.asarray(values, dtype=np.float64)
    valid = np.isfinite(v)
    with np.errstate(over="ignore", invalid="ignore"):
        f = (v.astype(np.float32) + np.float32(0.0)).view(np.uint32)  # + 0.0 turns -0.0 into 0.0
    valid &= np.isfinite(f.view(np.float32))  # beyond float32's range is missing too (as on the grid)
    key = np.where(f & np.uint32(0x80000000), ~f, f | np.uint32(0x80000000)).astype(np.uint64)
    key[~valid] = _MISSING_KEY
    return key, valid


@dataclass
class Grouping:
    """Rows -> groups: the rows sorted by group (stable, so in their given order within a group)."""

    order: np.ndarray  # row indices sorted by group
    starts: np.ndarray  # where each group begins in `order`
    seg: np.ndarray  # group index of each sorted row
    n: int
    codes: np.ndarray  # group index of each row, in the rows' own order

    @classmethod
    def of(cls, keys: pd.DataFrame) -> Grouping:
        """The groups of equal key tuples (a missing key is a value of its own)."""
        codes = keys.groupby(list(keys.columns), sort=True, dropna=False).ngroup().to_numpy()
        order = np.argsort(codes, kind="stable")
        sc = codes[order]
        starts = np.flatnonzero(np.r_[True, sc[1:] != sc[:-1]]) if len(sc) else np.zeros(0, int)
        seg = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(sc)]))
        return cls(order, starts, seg, len(codes), codes.astype(np.int64))

    def _unsort(self, sorted_values: np.ndarray) -> np.ndarray:
        """Values in sorted (by group) order -> the rows' own order."""
        out = np.empty_like(sorted_values)
        out[self.order] = sorted_values
        return out

    def size(self) -> np.ndarray:
        """Rows in each row's group (missing values included)."""
        return self._unsort(np.diff(np.r_[self.starts, self.n])[self.seg].astype(np.float64))

    def deviations(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For an (n, m) array, in sorted order: (deviation from the group mean with rounding snapped
        to 0 (NaN where missing), group mean per group, valid count per group, validity)."""
        v = np.asarray(values, dtype=np.float64)[self.order]
        valid = np.isfinite(v)
        x = np.where(valid, v, np.nan)
        cnt = np.add.reduceat(valid, self.starts, axis=0)
        with np.errstate(invalid="ignore"):
            ref = np.fmin.reduceat(x, self.starts, axis=0)  # NaN where a group has no value
            scale = np.fmax.reduceat(np.abs(x), self.starts, axis=0)
        d0 = np.where(valid, x - ref[self.seg], 0.0)
        mean_d = np.add.reduceat(d0, self.starts, axis=0) / np.maximum(cnt, 1)
        dev = np.where(valid, d0 - mean_d[self.seg], np.nan)
        with np.errstate(invalid="ignore"):
            dev[np.abs(dev) <= RTOL * scale[self.seg]] = 0.0
        return dev, ref + mean_d, cnt, valid

    def _z(self, dev, cnt, valid) -> np.ndarray:
        ss = np.add.reduceat(np.where(valid, dev * dev, 0.0), self.starts, axis=0)
        std = np.sqrt(ss / np.maximum(cnt - 1, 1))
        s = std[self.seg]
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(s > 0, dev / np.where(s > 0, s, 1.0), 0.0)
        return np.where(valid, z, np.nan)

    def _ratio(self, dev, mean, valid) -> np.ndarray:
        m = mean[self.seg]
        den = m + np.where(m < 0, -EPS, EPS)
        with np.errstate(invalid="ignore"):
            r = 1.0 + dev / den
        return np.where(valid, r, np.nan)

    def _rank(self, col: np.ndarray) -> np.ndarray:
        """One column's percentile ranks, in the rows' own order (see rank)."""
        low, valid = _order_key(col)
        o = np.argsort((self.codes.astype(np.uint64) << np.uint64(32)) | low)  # by group, then value
        ks = low[o]
        g = self.codes[o]
        pos = np.arange(self.n)
        new_block = np.r_[True, (g[1:] != g[:-1]) | (ks[1:] != ks[:-1])] if self.n else np.zeros(0, bool)
        first = np.maximum.accumulate(np.where(new_block, pos, 0))
        last = np.flip(np.minimum.accumulate(np.flip(np.where(np.r_[new_block[1:], True], pos, self.n))))
        cnt = np.bincount(self.codes[valid], minlength=len(self.starts))[g]
        mid = (first + last) / 2 - self.starts[g]
        ok = valid[o]
        r = np.full(self.n, np.nan)
        r[ok] = (mid[ok] + 0.5) / cnt[ok]
        out = np.empty(self.n)
        out[o] = r
        return out

    def normalise(self, values: np.ndarray, stats=STATS, dtype=np.float64) -> dict[str, np.ndarray]:
        """{stat: values normalised within the groups} for stat in z / ratio / rank, in the rows' own
        order and on the float32 grid (as `dtype`); the deviations are taken once for z and ratio, a
        few columns at a time."""
        v = np.asarray(values, dtype=np.float64)
        v2 = v[:, None] if v.ndim == 1 else v
        out = {s: np.empty(v2.shape, dtype) for s in stats}
        for j in range(0, v2.shape[1], CHUNK):
            cols = slice(j, j + CHUNK)
            part = v2[:, cols]
            if "z" in stats or "ratio" in stats:
                dev, mean, cnt, valid = self.deviations(part)
                if "z" in stats:
                    out["z"][self.order, cols] = grid32(self._z(dev, cnt, valid))
                if "ratio" in stats:
                    out["ratio"][self.order, cols] = grid32(self._ratio(dev, mean, valid))
            if "rank" in stats:
                for k in range(part.shape[1]):
                    out["rank"][:, j + k] = self._rank(part[:, k])
        return {s: a[:, 0] if v.ndim == 1 else a for s, a in out.items()}

    def zscore(self, values: np.ndarray) -> np.ndarray:
        """(x - group mean) / group std (ddof 1); 0 for a constant group or a group of one."""
        return self.normalise(values, ("z",))["z"]

    def ratio(self, values: np.ndarray) -> np.ndarray:
        """x / group mean, as 1 + deviation / (mean +- EPS): exactly 1 for a constant group."""
        return self.normalise(values, ("ratio",))["ratio"]

    def rank(self, values: np.ndarray) -> np.ndarray:
        """Percentile rank within the group, (mid-rank - 0.5) / valid count: in (0, 1), 0.5 for a
        constant group or a group of one, ties (on the float32 grid) sharing their mid-rank."""
        return self.normalise(values, ("rank",))["rank"]
