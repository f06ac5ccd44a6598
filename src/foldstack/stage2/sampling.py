"""Which training rows each booster of a stage-2 model sees.

Per seed, in this order (imblearn's RandomOverSampler then RandomUnderSampler, as the ISIC 2024 winners
used them):
- pos_rate: positives drawn again with replacement until positives / negatives = pos_rate;
- neg_rate: negatives kept until positives (after pos_rate) / negatives = neg_rate; or neg_ratio: this
  many negatives per (original) positive;
- bags: the negatives are shuffled once and cut into `bags` disjoint parts; bag b takes its kept
  negatives from part b only, so no negative is in two bags, and without a rate each bag takes its
  whole part: together the bags see every negative.
Each bag is a booster: a model has seeds x bags boosters, averaged. The same rule runs in inner CV
(tuning), in the refit on every fold and in `make compare`; predict uses every booster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from foldstack.errors import ConfigError


@dataclass(frozen=True)
class Plan:
    n_pos: int  # positive rows per bag (with repeats)
    n_neg: int  # negative rows per bag
    bags: int
    covers_all: bool  # the bags together hold every negative


def plan(name: str, n_pos: int, n_neg: int, neg_ratio, neg_rate, pos_rate, bags: int) -> Plan:
    """Rows per bag for a training set of n_pos positives and n_neg negatives; refused when `bags`
    parts of the negatives cannot each hold a bag's negatives."""
    pos = max(n_pos, math.ceil(pos_rate * n_neg)) if pos_rate else n_pos
    part = n_neg // bags
    if neg_rate:
        keep = min(n_neg, round(pos / neg_rate))
    elif neg_ratio:
        keep = min(n_neg, round(neg_ratio * max(n_pos, 1)))
    else:
        keep = part if bags > 1 else n_neg
    if bags > 1 and keep > part:
        raise ConfigError(
            f"model {name}: bags={bags} disjoint bags of {keep} negatives each need {bags * keep} negatives, "
            f"a training set has {n_neg}; lower bags to at most {max(n_neg // max(keep, 1), 1)} or raise "
            f"neg_rate / lower neg_ratio"
        )
    return Plan(pos, keep, bags, keep * bags >= n_neg)


def bag_rows(
    y: np.ndarray, rng: np.random.Generator, spec_name: str, neg_ratio, neg_rate, pos_rate, bags: int
):
    """Row indices of each bag (sorted; a repeated positive appears once per draw)."""
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    p = plan(spec_name, len(pos), len(neg), neg_ratio, neg_rate, pos_rate, bags)
    pos_rows = pos if p.n_pos == len(pos) else np.concatenate([pos, rng.choice(pos, p.n_pos - len(pos))])
    parts = np.array_split(rng.permutation(neg), bags)
    return [np.sort(np.concatenate([pos_rows, part[: p.n_neg]])) for part in parts]


def resamples(spec) -> bool:
    """Whether a model (its spec or its estimator: the same attribute names) uses the bag rule rather
    than plain neg_ratio undersampling."""
    return bool(spec.pos_rate or spec.neg_rate or spec.bags > 1)


def check_sampling(cfg, y: np.ndarray, fold: np.ndarray) -> None:
    """Every model's bags fit every fold's training set (the smallest of them), before any fitting."""
    if cfg.multiclass:
        return
    k = int(fold.max()) + 1
    for spec in cfg.models:
        if not resamples(spec):
            continue
        for f in range(k):
            t = y[fold != f]
            plan(
                spec.name,
                int((t == 1).sum()),
                int((t == 0).sum()),
                spec.neg_ratio,
                spec.neg_rate,
                spec.pos_rate,
                spec.bags,
            )
