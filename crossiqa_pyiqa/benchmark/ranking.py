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

A type's L is a mean over few images (the study uses 6), so it comes with a bootstrap
interval over images (``l_ci``), and :func:`paired_l_gaps` tells whether one metric's
lead over another on a type is more than the choice of images.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

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


def ranking_tests(items: Sequence[RankingItem], scores: np.ndarray, lower_better: bool) -> dict[str, dict[str, Any]]:
    """Per-type L-test (mean SRCC over images, with its interval over images), D-test pair accuracy and AUC; plus
    an 'all' row whose interval resamples images (each image's mean L over the types), not (image, type) cells."""
    q = -np.asarray(scores, dtype=np.float64) if lower_better else np.asarray(scores, dtype=np.float64)
    pristine = {it.image: q[k] for k, it in enumerate(items) if it.dtype is None}
    by_type: dict[str, dict[int, list[tuple[int, float]]]] = {}
    for k, it in enumerate(items):
        if it.dtype is not None:
            by_type.setdefault(it.dtype, {}).setdefault(it.image, []).append((it.level, q[k]))
    out: dict[str, dict[str, Any]] = {}
    all_pairs, all_dist = [], []
    per_image_all: dict[int, list[float]] = {}
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
        out[dtype] = {'l_srcc': float(np.mean(l_values)), 'l_ci': bootstrap_mean_ci(l_values),
                      'l_per_image': dict(zip(per_image, l_values)), 'd_pair': float(np.mean(pairs)),
                      'd_auc': auc(p_all, np.array(dist)), 'n_images': len(per_image)}
        for image, value in zip(per_image, l_values):
            per_image_all.setdefault(image, []).append(value)
        all_pairs += pairs
        all_dist += dist
    if by_type:
        image_means = {image: float(np.mean(v)) for image, v in per_image_all.items()}
        out['all'] = {'l_srcc': float(np.mean(list(image_means.values()))),
                      'l_ci': bootstrap_mean_ci(list(image_means.values())), 'l_per_image': image_means,
                      'd_pair': float(np.mean(all_pairs)),
                      'd_auc': auc(np.array(list(pristine.values())), np.array(all_dist)),
                      'n_images': len(pristine)}
    return out


def bootstrap_means(values: Sequence[float], n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """Means of ``n_boot`` resamples of ``values`` with replacement (seeded: the same images give the same draws)."""
    v = np.asarray(values, dtype=np.float64)
    return v[np.random.default_rng(seed).integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)


def bootstrap_mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``; NaNs below 2 values."""
    if len(values) < 2:
        return float('nan'), float('nan')
    means, tail = bootstrap_means(values), (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def paired_l_gaps(tests: dict[str, dict[str, Any]], baseline: dict[str, dict[str, Any]],
                  level: float = 0.95) -> dict[str, dict[str, Any]]:
    """Per type, the mean over images of L(metric) - L(baseline) on the same degraded images, its bootstrap
    interval, and ``p_lead``: the share of bootstrap resamples of the images where the gap is above 0. A gap
    whose interval holds 0 is not a lead on that type. Raises ``ValueError`` if the two ran on other images."""
    out = {}
    for dtype, res in tests.items():
        if dtype not in baseline:
            continue
        mine, theirs = res['l_per_image'], baseline[dtype]['l_per_image']
        if set(mine) != set(theirs):
            raise ValueError(f'{dtype}: the two metrics were ranked on other images; run them in one benchmark')
        gaps = [mine[k] - theirs[k] for k in mine]
        out[dtype] = {'gap': float(np.mean(gaps)), 'ci': bootstrap_mean_ci(gaps, level),
                      'p_lead': float(np.mean(bootstrap_means(gaps) > 0)) if len(gaps) > 1 else float('nan'),
                      'n_images': len(gaps)}
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
