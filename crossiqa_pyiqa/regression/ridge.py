"""Closed-form ridge regression with alpha chosen by k-fold cross-validation.

Plain numpy (no sklearn): the linear head of a frozen encoder is small enough to
solve exactly, and one eigendecomposition per fold evaluates every alpha of the grid at once.
Features are standardised with the statistics of the rows being fitted, which is
exactly what ``CrossIQA.standardise`` + ``CrossIQA.head`` compute at inference.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

#: Default alpha grid (standardised features, so the scale is comparable across encoders).
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 5, 15))
STD_FLOOR = 1e-6  # constant features would otherwise divide by zero


@dataclass
class RidgeModel:
    """``y ≈ ((x - mean) / std) @ coef + intercept``."""

    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray
    intercept: float
    alpha: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float64) - self.mean) / self.std) @ self.coef + self.intercept


def _check_xy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f'ridge: expected x (n, d) and y (n,), got {x.shape} and {y.shape}')
    if x.shape[0] < 2:
        raise ValueError(f'ridge: need at least 2 samples, got {x.shape[0]}')
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError('ridge: features or targets contain NaN/inf')
    return x, y


def standardisation(x: np.ndarray, penalty: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and std of ``x``. ``penalty`` (one factor per column, default 1) scales the ridge penalty
    on a column's coefficient: its std is multiplied by ``sqrt(penalty)``, so ``alpha * ||w||²`` on the
    rescaled columns is ``alpha * sum(penalty * beta²)`` on the standardised ones. The head reads the same
    rescaled std at inference, so nothing else changes."""
    mean = x.mean(axis=0)
    std = np.maximum(x.std(axis=0), STD_FLOOR)
    if penalty is not None:
        penalty = np.asarray(penalty, dtype=np.float64)
        if penalty.shape != std.shape or not (np.isfinite(penalty).all() and (penalty > 0).all()):
            raise ValueError(f'ridge: penalty needs one positive finite factor per feature ({std.shape[0]}), '
                             f'got shape {penalty.shape}')
        std = std * np.sqrt(penalty)
    return mean, std


@contextmanager
def _one_thread():
    """Small dense algebra: one thread. Multi-threaded BLAS on a busy 2-core machine was
    measured 20-50x slower (threads spin while waiting for each other)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _svd_solutions(xs: np.ndarray, yc: np.ndarray, alphas: Sequence[float]) -> np.ndarray:
    """Coefficients for every alpha, shape (len(alphas), d), from one eigendecomposition.

    Uses the smaller Gram matrix (d×d or n×n); ``eigh`` on it is several times faster
    than an SVD of ``xs`` and gives the same solution ``(XᵀX + αI)⁻¹Xᵀy``.
    """
    with _one_thread():
        x = torch.from_numpy(np.ascontiguousarray(xs, dtype=np.float64))
        y = torch.from_numpy(np.ascontiguousarray(yc, dtype=np.float64))
        a = torch.as_tensor(np.asarray(alphas, dtype=np.float64))[:, None]
        n, d = x.shape
        if n >= d:
            lam, v = torch.linalg.eigh(x.T @ x)
            coefs = ((v.T @ (x.T @ y)) / (lam.clamp_min(0) + a)) @ v.T
        else:
            lam, u = torch.linalg.eigh(x @ x.T)
            coefs = (((u.T @ y) / (lam.clamp_min(0) + a)) @ u.T) @ x
    return coefs.numpy()


@dataclass
class RankingRows:
    """Pairwise constraints ``(f(a) - f(b)) · w >= margin`` ("a is better than b by margin").

    ``diffs`` are raw feature differences (standardised inside the fit, like ``x``);
    ``weight`` is the pairs' total weight relative to the MOS rows, so it means the same
    for 50 or 1000 labelled images.
    """

    diffs: np.ndarray
    margins: np.ndarray
    weight: float

    def __post_init__(self) -> None:
        self.diffs = np.asarray(self.diffs, dtype=np.float64)
        self.margins = np.asarray(self.margins, dtype=np.float64).ravel()
        if self.diffs.ndim != 2 or self.diffs.shape[0] != self.margins.shape[0] or self.diffs.shape[0] == 0:
            raise ValueError(f'RankingRows: expected diffs (n, d) and margins (n,), n > 0; got '
                             f'{self.diffs.shape} and {self.margins.shape}')
        if not (np.isfinite(self.diffs).all() and np.isfinite(self.margins).all()) or self.weight < 0:
            raise ValueError('RankingRows: non-finite diffs/margins or negative weight')


def _ranked_solution(xs: np.ndarray, yc: np.ndarray, alpha: float, u: np.ndarray, margins: np.ndarray,
                     lam: float, max_iter: int = 100) -> tuple[np.ndarray, int]:
    """argmin ||xs w - yc||² + lam Σ max(0, m - u w)² + alpha ||w||² (squared hinge; active-set Newton).

    The objective is convex and piecewise quadratic: given the set of violated pairs it is
    a ridge problem; re-solving until that set stops changing reaches the exact minimum.
    Returns the coefficients and the number of solves.
    """
    with _one_thread():
        x = torch.from_numpy(np.ascontiguousarray(xs))
        U = torch.from_numpy(np.ascontiguousarray(u))
        m = torch.from_numpy(np.ascontiguousarray(margins))
        gram = x.T @ x + alpha * torch.eye(x.shape[1], dtype=x.dtype)
        rhs = x.T @ torch.from_numpy(np.ascontiguousarray(yc))
        w = torch.linalg.solve(gram, rhs)
        active = torch.zeros(len(m), dtype=torch.bool)
        outer = torch.zeros_like(gram)  # Σ u uᵀ over the active pairs, updated by the pairs that change
        target = torch.zeros_like(rhs)  # Σ m u over the active pairs
        for it in range(1, max_iter + 1):
            now = (U @ w) < m
            if it > 1 and torch.equal(now, active):
                return w.numpy(), it
            add, drop = now & ~active, active & ~now
            outer += U[add].T @ U[add] - U[drop].T @ U[drop]
            target += U[add].T @ m[add] - U[drop].T @ m[drop]
            active = now
            w = torch.linalg.solve(gram + lam * outer, rhs + lam * target)
    raise RuntimeError(f'ranking-constrained ridge did not converge in {max_iter} active-set steps')


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float, ranking: RankingRows | None = None,
              penalty: np.ndarray | None = None) -> RidgeModel:
    """Standardise with ``x``'s own statistics, then solve ridge in closed form.

    With ``ranking``, the pairs are added as squared-hinge rows (``RankingRows``) in the
    same standardised space; the intercept stays the MOS mean (pairs do not constrain it).
    ``penalty``: per-feature factors of the ridge penalty (``standardisation``).
    """
    x, y = _check_xy(x, y)
    mean, std = standardisation(x, penalty)
    xs = (x - mean) / std
    if ranking is None or ranking.weight == 0:
        coef = _svd_solutions(xs, y - y.mean(), [alpha])[0]
    else:
        if ranking.diffs.shape[1] != x.shape[1]:
            raise ValueError(f'ranking pairs have {ranking.diffs.shape[1]} features, x has {x.shape[1]}')
        lam = ranking.weight * x.shape[0] / ranking.diffs.shape[0]
        coef, _ = _ranked_solution(xs, y - y.mean(), float(alpha), ranking.diffs / std, ranking.margins, lam)
    return RidgeModel(mean=mean, std=std, coef=coef, intercept=float(y.mean()), alpha=float(alpha))


def kfold(n: int, k: int, seed: int = 0, groups: Sequence | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled k-fold (fit, validation) index pairs over ``range(n)``.

    With ``groups`` (one label per row), whole groups go to one fold: rows made from the same
    photo never sit on both sides, which would make a weak ridge look good.
    """
    if groups is None:
        if not 2 <= k <= n:
            raise ValueError(f'kfold: need 2 <= k <= n, got k={k}, n={n}')
        perm = np.random.default_rng(seed).permutation(n)
        folds = np.array_split(perm, k)
        return [(np.concatenate(folds[:i] + folds[i + 1:]), folds[i]) for i in range(k)]
    labels, inverse = np.unique(np.asarray(groups), return_inverse=True)
    if len(inverse) != n or not 2 <= k <= len(labels):
        raise ValueError(f'kfold: need one group per row and 2 <= k <= groups, got {len(inverse)} labels for {n} rows, '
                         f'k={k}, {len(labels)} groups')
    group_folds = np.array_split(np.random.default_rng(seed).permutation(len(labels)), k)
    out = []
    for i in range(k):
        val = np.isin(inverse, group_folds[i])
        out.append((np.flatnonzero(~val), np.flatnonzero(val)))
    return out


def cv_predictions(x: np.ndarray, y: np.ndarray, alphas: Sequence[float] = DEFAULT_ALPHAS, n_folds: int = 5,
                   seed: int = 0, penalty: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per k-fold split of (x, y): (validation rows, their predictions for every alpha, shape (n_val, n_alphas)).

    Only ``x``/``y`` are seen: callers pass the training split, never test rows.
    """
    x, y = _check_xy(x, y)
    out = []
    for fit_idx, val_idx in kfold(x.shape[0], min(n_folds, x.shape[0]), seed):
        mean, std = standardisation(x[fit_idx], penalty)
        coefs = _svd_solutions((x[fit_idx] - mean) / std, y[fit_idx] - y[fit_idx].mean(), alphas)
        with _one_thread():
            pred = (torch.from_numpy((x[val_idx] - mean) / std) @ torch.from_numpy(coefs).T).numpy()
        out.append((val_idx, pred + y[fit_idx].mean()))
    return out


def cv_scores(x: np.ndarray, y: np.ndarray, alphas: Sequence[float] = DEFAULT_ALPHAS, n_folds: int = 5,
              seed: int = 0, scoring: str = 'mse', penalty: np.ndarray | None = None) -> np.ndarray:
    """Validation score per alpha (higher is better): ``-MSE`` or mean SRCC over the folds.

    Only ``x``/``y`` are seen: callers pass the training split, never test rows.
    """
    from scipy import stats

    x, y = _check_xy(x, y)
    if scoring not in ('mse', 'srcc'):
        raise ValueError(f"scoring must be 'mse' or 'srcc', got {scoring!r}")
    folds = cv_predictions(x, y, alphas, n_folds, seed, penalty)
    scores = np.zeros(len(alphas))
    for val_idx, pred in folds:
        if scoring == 'mse':
            scores -= ((pred - y[val_idx, None]) ** 2).mean(axis=0)
        else:
            for j in range(len(alphas)):
                r = stats.spearmanr(pred[:, j], y[val_idx])[0] if len(val_idx) > 2 else 0.0
                scores[j] += 0.0 if not np.isfinite(r) else r
    return scores / len(folds)


def select_alpha(x: np.ndarray, y: np.ndarray, alphas: Sequence[float] = DEFAULT_ALPHAS, n_folds: int = 5,
                 seed: int = 0, scoring: str = 'mse', penalty: np.ndarray | None = None) -> float:
    """The alpha with the best k-fold score on (x, y); ties go to the larger (smoother) alpha."""
    alphas = [float(a) for a in alphas]
    if len(alphas) == 1:
        return alphas[0]
    scores = cv_scores(x, y, alphas, n_folds, seed, scoring, penalty)
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    return max(alphas[i] for i in best)


def fit_ridge_cv(x: np.ndarray, y: np.ndarray, alphas: Sequence[float] = DEFAULT_ALPHAS, n_folds: int = 5,
                 seed: int = 0, scoring: str = 'mse') -> RidgeModel:
    """Choose alpha by CV on (x, y), then refit on all of (x, y)."""
    return fit_ridge(x, y, select_alpha(x, y, alphas, n_folds, seed, scoring))


@dataclass
class MultiRidgeModel:
    """``Y ≈ ((x - mean) / std) @ coef.T + intercept``: K ridge outputs on one standardisation."""

    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray  # (K, d)
    intercept: np.ndarray  # (K,)
    alphas: np.ndarray  # (K,) the ridge of each output

    def predict(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float64) - self.mean) / self.std) @ self.coef.T + self.intercept


def _multi_solutions(xs: np.ndarray, yc: np.ndarray, alphas: Sequence[float]) -> np.ndarray:
    """Coefficients (len(alphas), K, d) of every alpha and output from one eigendecomposition
    (the K-output form of :func:`_svd_solutions`)."""
    with _one_thread():
        x = torch.from_numpy(np.ascontiguousarray(xs, dtype=np.float64))
        y = torch.from_numpy(np.ascontiguousarray(yc, dtype=np.float64))
        n, d = x.shape
        out = []
        if n >= d:
            lam, v = torch.linalg.eigh(x.T @ x)
            vy = v.T @ (x.T @ y)  # (d, K)
            for a in alphas:
                out.append((v @ (vy / (lam.clamp_min(0) + a)[:, None])).T)
        else:
            lam, u = torch.linalg.eigh(x @ x.T)
            uy = u.T @ y  # (n, K)
            for a in alphas:
                out.append((x.T @ (u @ (uy / (lam.clamp_min(0) + a)[:, None]))).T)
    return torch.stack(out).numpy()


def fit_ridge_multi(x: np.ndarray, y: np.ndarray, alphas: Sequence[float] = DEFAULT_ALPHAS, n_folds: int = 5,
                    seed: int = 0, groups: Sequence | None = None) -> MultiRidgeModel:
    """K ridge outputs on shared standardised features, each with its own alpha by (grouped) k-fold MSE.

    One eigendecomposition per fold serves every alpha and output; ties go to the larger alpha.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2 or x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f'fit_ridge_multi: expected x (n, d) and y (n, K), n >= 2; got {x.shape} and {y.shape}')
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError('fit_ridge_multi: features or targets contain NaN/inf')
    alphas = [float(a) for a in alphas]
    errors = np.zeros((len(alphas), y.shape[1]))
    if len(alphas) > 1:
        for fit_idx, val_idx in kfold(x.shape[0], n_folds, seed, groups):
            mean, std = standardisation(x[fit_idx])
            coefs = _multi_solutions((x[fit_idx] - mean) / std, y[fit_idx] - y[fit_idx].mean(0), alphas)
            pred = np.einsum('nd,akd->ank', (x[val_idx] - mean) / std, coefs) + y[fit_idx].mean(0)
            errors += ((pred - y[val_idx]) ** 2).mean(axis=1)
    best = [max(j for j in range(len(alphas)) if errors[j, k] <= errors[:, k].min() + 1e-12)
            for k in range(y.shape[1])]
    mean, std = standardisation(x)
    coefs = _multi_solutions((x - mean) / std, y - y.mean(0), alphas)
    coef = np.stack([coefs[j, k] for k, j in enumerate(best)])
    return MultiRidgeModel(mean=mean, std=std, coef=coef, intercept=y.mean(0),
                           alphas=np.array([alphas[j] for j in best]))
