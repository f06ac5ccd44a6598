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


@dataclass
class Grouping:
    """Rows -> groups: the rows sorted by group (stable, so in their given order within a group)."""

    order: np.ndarray  # row indices sorted by group
    starts: np.ndarray  # where each group begins in `order`
    seg: np.ndarray  # group index of each sorted row
    n: int

    @classmethod
    def of(cls, keys: pd.DataFrame) -> Grouping:
        """The groups of equal key tuples (a missing key is a value of its own)."""
        codes = keys.groupby(list(keys.columns), sort=True, dropna=False).ngroup().to_numpy()
        order = np.argsort(codes, kind="stable")
        sc = codes[order]
        starts = np.flatnonzero(np.r_[True, sc[1:] != sc[:-1]]) if len(sc) else np.zeros(0, int)
        seg = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(sc)]))
        return cls(order, starts, seg, len(codes))

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

    def zscore(self, values: np.ndarray) -> np.ndarray:
        """(x - group mean) / group std (ddof 1); 0 for a constant group or a group of one."""
        dev, _, cnt, valid = self.deviations(values)
        ss = np.add.reduceat(np.where(valid, dev * dev, 0.0), self.starts, axis=0)
        std = np.sqrt(ss / np.maximum(cnt - 1, 1))
        s = std[self.seg]
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(s > 0, dev / np.where(s > 0, s, 1.0), 0.0)
        return grid32(self._unsort(np.where(valid, z, np.nan)))

    def ratio(self, values: np.ndarray) -> np.ndarray:
        """x / group mean, as 1 + deviation / (mean +- EPS): exactly 1 for a constant group."""
        dev, mean, _, valid = self.deviations(values)
        m = mean[self.seg]
        den = m + np.where(m < 0, -EPS, EPS)
        with np.errstate(invalid="ignore"):
            r = 1.0 + dev / den
        return grid32(self._unsort(np.where(valid, r, np.nan)))

    def rank(self, values: np.ndarray) -> np.ndarray:
        """Percentile rank within the group, (mid-rank - 0.5) / valid count: in (0, 1), 0.5 for a
        constant group or a group of one, ties (on the float32 grid) sharing their mid-rank."""
        v = grid32(np.asarray(values, dtype=np.float64)[self.order])
        v = v[:, None] if v.ndim == 1 else v
        out = np.full(v.shape, np.nan)
        pos = np.arange(len(v))
        for j in range(v.shape[1]):
            col = v[:, j]
            valid = np.isfinite(col)
            o = np.lexsort((np.where(valid, col, np.inf), ~valid, self.seg))  # by group, value; missing last
            g, x, ok = self.seg[o], col[o], valid[o]
            new_block = np.r_[True, (g[1:] != g[:-1]) | (x[1:] != x[:-1])]
            first = np.maximum.accumulate(np.where(new_block, pos, 0))
            last = np.flip(np.minimum.accumulate(np.flip(np.where(np.r_[new_block[1:], True], pos, len(v)))))
            cnt = np.add.reduceat(ok, self.starts)[g] if len(g) else np.zeros(0)
            mid = (first + last) / 2 - self.starts[g]
            r = np.full(len(o), np.nan)
            r[ok] = (mid[ok] + 0.5) / cnt[ok]
            out[o, j] = r
        out = self._unsort(out)
        return out[:, 0] if np.ndim(values) == 1 else out
