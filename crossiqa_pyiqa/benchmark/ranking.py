"""MOS-free synthetic ranking tests (DESIGN §5, after the Waterloo Exploration database).

On held-out pristine images degraded by the library (by default the 25 KADID types, or
any registered types incl. the camera family, see :func:`ranking_types`; levels 1..5):

- L-test: within one image × type, the SRCC between predicted quality (sign-corrected
  by the metric's ``lower_better``, so higher = better) and the negated level; the
  mean over images is reported per type (1 = quality always falls with the level).
- D-test: how well pristine images are told apart from distorted ones, per type:
  ``d_pair`` is the fraction of (pristine, distorted version of it) pairs ranked
  correctly (ties count 1/2); ``d_auc`` the AUC of pristine vs distorted scores across
  all images (the population view of the Waterloo D-test).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from scipy import stats

from crossiqa_pyiqa.regression.degraded import (LEVELS, DegradedReader, RankingItem, centre_crop,  # noqa: F401
                                                load_degradations, ranking_items)  # (re-exported)


def ranking_types(types: Sequence[str] | str | None) -> list[str]:
    """Degradation types for the ranking tests: ``None`` -> the 25 KADID types (default);
    otherwise type names (any registered type, camera family included) and the shorthands
    ``kadid``, ``camera`` and ``all``, expanded in order without repeats. Raises
    ``ValueError`` naming unknown entries."""
    load_degradations()
    from crossiqa_pyiqa.degradations import DEGRADATIONS, resolve_types

    return list(DEGRADATIONS) if types is None else resolve_types(types, 'ranking types')


def ranking_tests(items: Sequence[RankingItem], scores: np.ndarray, lower_better: bool) -> dict[str, dict[str, float]]:
    """Per-type L-test (mean SRCC over images), D-test pair accuracy and AUC; plus an 'all' row."""
    q = -np.asarray(scores, dtype=np.float64) if lower_better else np.asarray(scores, dtype=np.float64)
    pristine = {it.image: q[k] for k, it in enumerate(items) if it.dtype is None}
    by_type: dict[str, dict[int, list[tuple[int, float]]]] = {}
    for k, it in enumerate(items):
        if it.dtype is not None:
            by_type.setdefault(it.dtype, {}).setdefault(it.image, []).append((it.level, q[k]))
    out = {}
    all_l, all_pairs, all_dist = [], [], []
    for dtype, per_image in by_type.items():
        l_values, pairs, dist = [], [], []
        for image, lq in per_image.items():
            levels = np.array([lv for lv, _ in lq], dtype=float)
            qs = np.array([v for _, v in lq])
            if np.ptp(qs) == 0:
                l_values.append(0.0)  # a metric blind to this degradation ranks nothing
            else:
                l_values.append(float(stats.spearmanr(qs, -levels)[0]))
            p = pristine[image]
            pairs.extend(np.where(p > qs, 1.0, np.where(p == qs, 0.5, 0.0)).tolist())
            dist.extend(qs.tolist())
        p_all = np.array(list(pristine.values()))
        out[dtype] = {'l_srcc': float(np.mean(l_values)), 'd_pair': float(np.mean(pairs)),
                      'd_auc': auc(p_all, np.array(dist)), 'n_images': len(per_image)}
        all_l += l_values
        all_pairs += pairs
        all_dist += dist
    if by_type:
        out['all'] = {'l_srcc': float(np.mean(all_l)), 'd_pair': float(np.mean(all_pairs)),
                      'd_auc': auc(np.array(list(pristine.values())), np.array(all_dist)),
                      'n_images': len(pristine)}
    return out


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(positive > negative) + P(tie)/2 (Mann-Whitney), via ranks."""
    if len(positive) == 0 or len(negative) == 0:
        return float('nan')
    ranks = stats.rankdata(np.concatenate([positive, negative]))
    r_pos = ranks[:len(positive)].sum()
    return float((r_pos - len(positive) * (len(positive) + 1) / 2) / (len(positive) * len(negative)))


def pristine_paths(folder: str | os.PathLike, max_images: int | None = None) -> list[str]:
    from crossiqa_pyiqa.regression.features import folder_images

    paths = folder_images(folder)
    return paths[:max_images] if max_images else paths
