"""Screening metrics: sensitivity, specificity, their mean (MAcc) with 95% intervals.

Plain numpy so that training, the model card and the benchmarks share one definition.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import sqrt
from typing import Optional

import numpy as np


def wilson_interval(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (well behaved for small counts)."""
    if total == 0:
        return (float("nan"), float("nan"))
    p = successes / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class ScreeningMetrics:
    n_abnormal: int
    n_normal: int
    sensitivity: float
    specificity: float
    macc: float
    sensitivity_ci: tuple[float, float]
    specificity_ci: tuple[float, float]
    macc_ci: tuple[float, float]
    auc: Optional[float] = None

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def short(self) -> str:
        return (f"Se {self.sensitivity:.3f} Sp {self.specificity:.3f} MAcc {self.macc:.3f} "
                f"[{self.macc_ci[0]:.3f}-{self.macc_ci[1]:.3f}] (n={self.n_abnormal}+{self.n_normal})")


def auc(labels: np.ndarray, scores: np.ndarray) -> Optional[float]:
    """Area under the ROC curve (Mann-Whitney), None when one class is absent."""
    labels = np.asarray(labels).astype(bool)
    pos, neg = np.asarray(scores)[labels], np.asarray(scores)[~labels]
    if pos.size == 0 or neg.size == 0:
        return None
    ranks = np.argsort(np.argsort(np.concatenate([pos, neg]), kind="mergesort"), kind="mergesort") + 1.0
    # average ranks of ties
    allscores = np.concatenate([pos, neg])
    for value in np.unique(allscores):
        tie = allscores == value
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def screening_metrics(labels: np.ndarray, predicted: np.ndarray, scores: Optional[np.ndarray] = None,
                      *, bootstrap: int = 1000, seed: int = 0) -> ScreeningMetrics:
    """Se/Sp/MAcc of binary predictions (1 = abnormal) against labels (1 = abnormal)."""
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(predicted).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    tp = int((labels & predicted).sum())
    tn = int((~labels & ~predicted).sum())
    se = tp / n_pos if n_pos else float("nan")
    sp = tn / n_neg if n_neg else float("nan")
    macc = float(np.nanmean([se, sp]))
    rng = np.random.default_rng(seed)
    pos_idx, neg_idx = np.flatnonzero(labels), np.flatnonzero(~labels)
    boots = []
    for _ in range(bootstrap if n_pos and n_neg else 0):
        bp = rng.choice(pos_idx, pos_idx.size)
        bn = rng.choice(neg_idx, neg_idx.size)
        boots.append((predicted[bp].mean() + (~predicted[bn]).mean()) / 2)
    macc_ci = (float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))) if boots else (float("nan"),) * 2
    return ScreeningMetrics(n_pos, n_neg, se, sp, macc, wilson_interval(tp, n_pos),
                            wilson_interval(tn, n_neg), macc_ci,
                            auc(labels, scores) if scores is not None else None)


def best_threshold(labels: np.ndarray, scores: np.ndarray, groups: Optional[np.ndarray] = None) -> float:
    """Threshold maximising MAcc on (validation) scores; the midpoint between neighbours.

    ``groups`` (each recording's source set): maximise instead the mean over groups of each
    group's MAcc, so that each stethoscope counts once however many recordings it gave (pooled,
    two thirds of validation is one source set); a group holding one class only is left out."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    members = [np.ones(labels.size, bool)] if groups is None else \
        [g for g in (np.asarray(groups) == name for name in np.unique(groups)) if 0 < labels[g].sum() < g.sum()]
    if not members:
        raise ValueError("no group holds both classes: no threshold can be chosen")
    candidates = np.unique(scores)
    best, best_t = -1.0, 0.5
    for i, t in enumerate(candidates):
        pred = scores >= t
        value = float(np.mean([((pred & labels & g).sum() / max(1, (labels & g).sum())
                                + (~pred & ~labels & g).sum() / max(1, (~labels & g).sum())) / 2 for g in members]))
        if value > best:
            lower = candidates[i - 1] if i else t
            best, best_t = value, float((t + lower) / 2)
    return best_t
