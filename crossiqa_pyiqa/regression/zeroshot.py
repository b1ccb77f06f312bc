"""Zero-shot heads of CrossIQA: fitted without any MOS.

- ``mahalanobis``: the distance of an image's standardised features to the mean of
  pristine images' standardised features (NIQE-style). A small ridge on the covariance
  keeps it invertible when there are fewer pristine images than dimensions.
- ``pairs``: a linear direction on which every synthetic pair (a pristine crop and the
  same crop degraded by the library at level L) differs by L. Its ridge is chosen by
  cross-validation that holds out whole *distortion types*: chosen for transfer to
  distortions the fit never saw, not with any human label. Near-ties are common, so the
  one-standard-error rule picks the strongest ridge within one SE of the best accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from crossiqa_pyiqa.regression.ridge import _svd_solutions  # ridge without intercept, all alphas at once

PAIRS_ALPHAS = (1e1, 1e2, 1e3, 1e4, 1e5, 1e6)


def pristine_statistics(standardised: np.ndarray, ridge: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and covariance + ``ridge``·I (F, F) of standardised pristine features (N, F)."""
    x = np.asarray(standardised, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f'pristine statistics need at least 2 images, got features of shape {x.shape}')
    mean = x.mean(axis=0)
    cov = np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]) + ridge * np.eye(x.shape[1])
    return mean, cov


@dataclass
class PairsDirection:
    """``score(f) = ((f - mean) / std) @ coef``; ``cv_accuracy``: held-out-type pair accuracy per alpha."""

    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray
    alpha: float
    cv_accuracy: dict[float, float]
    cv_se: float = 0.0  # standard error (over folds) of the best alpha's accuracy


def pairs_direction(features: np.ndarray, diffs: np.ndarray, levels: np.ndarray, types: Sequence[str],
                    alphas: Sequence[float] = PAIRS_ALPHAS, n_folds: int = 5, seed: int = 0) -> PairsDirection:
    """Fit the ``pairs`` zero-shot head (see the module docstring).

    ``features``: every pair image (pristine and degraded), for the standardisation;
    ``diffs[k] = f(pristine) - f(degraded)`` of pair k, at ``levels[k]`` of ``types[k]``.
    """
    features = np.asarray(features, dtype=np.float64)
    diffs = np.asarray(diffs, dtype=np.float64)
    levels = np.asarray(levels, dtype=np.float64)
    types = np.asarray(types)
    if diffs.ndim != 2 or len(diffs) != len(levels) or len(types) != len(levels):
        raise ValueError(f'pairs_direction: {len(diffs)} diffs, {len(levels)} levels and {len(types)} types')
    unique = np.unique(types)
    if len(unique) < 2:
        raise ValueError('pairs_direction: the held-out-type cross-validation needs at least 2 distortion types')
    mean, std = features.mean(axis=0), features.std(axis=0) + 1e-6
    z = diffs / std
    order = np.random.default_rng(seed).permutation(len(unique))
    folds = [unique[order[i::n_folds]] for i in range(min(n_folds, len(unique)))]
    per_fold = np.zeros((len(folds), len(alphas)))
    for i, held in enumerate(folds):
        test = np.isin(types, held)
        for j, w in enumerate(_svd_solutions(z[~test], levels[~test], alphas)):
            per_fold[i, j] = float(((z[test] @ w) > 0).mean())
    mean_acc = per_fold.mean(axis=0)
    accuracy = {float(a): float(c) for a, c in zip(alphas, mean_acc)}
    # one-standard-error rule: the strongest ridge within one SE of the best held-out-type accuracy
    # (near-ties are common; the stronger ridge transfers better to distortions the fit never saw)
    top = int(np.argmax(mean_acc))
    se = float(per_fold[:, top].std(ddof=1) / np.sqrt(len(folds))) if len(folds) > 1 else 0.0
    best = max(float(a) for a, m in zip(alphas, mean_acc) if m >= mean_acc[top] - se)
    coef = _svd_solutions(z, levels, [best])[0]
    return PairsDirection(mean=mean, std=std, coef=coef, alpha=best, cv_accuracy=accuracy, cv_se=se)
