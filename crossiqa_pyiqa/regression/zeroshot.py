"""Pristine statistics for the NIQE-style zero-shot head of CrossIQA.

The zero-shot score is the Mahalanobis distance of an image's standardised features
to the mean of pristine images' standardised features. A small ridge on the
covariance keeps it invertible when there are fewer pristine images than dimensions.
"""
from __future__ import annotations

import numpy as np


def pristine_statistics(standardised: np.ndarray, ridge: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and covariance + ``ridge``·I (F, F) of standardised pristine features (N, F)."""
    x = np.asarray(standardised, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f'pristine statistics need at least 2 images, got features of shape {x.shape}')
    mean = x.mean(axis=0)
    cov = np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]) + ridge * np.eye(x.shape[1])
    return mean, cov
