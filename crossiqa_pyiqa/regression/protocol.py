"""Evaluation protocols of DESIGN §5, on precomputed features or scores.

- Linear probe: for each seeded 80/20 split, alpha by k-fold CV on the training split
  only, ridge refit on the training split, correlations on the test split; the
  median over splits is reported.
- Data-efficient: the same, with only N labelled training images per split.
- Score-only metrics (NIQE, BRISQUE, ...) are evaluated on the very same test splits
  so that their medians are comparable with the learned heads, and on the whole set.

Correlations are pyiqa's ``calculate_srcc/plcc/krcc``; scores of lower-is-better
metrics are negated first, as in pyiqa's ``benchmark_results.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from crossiqa_pyiqa.regression.ridge import DEFAULT_ALPHAS, RankingRows, RidgeModel, fit_ridge, select_alpha
from crossiqa_pyiqa.regression.splits import Split, subsample

CORRELATIONS = ('srcc', 'plcc', 'krcc')


def correlations(pred: np.ndarray, mos: np.ndarray, lower_better: bool = False) -> dict[str, float]:
    """SRCC/PLCC/KRCC with pyiqa's functions (NaN when undefined, e.g. constant predictions)."""
    from pyiqa.metrics import calculate_krcc, calculate_plcc, calculate_srcc

    pred = -np.asarray(pred, dtype=np.float64) if lower_better else np.asarray(pred, dtype=np.float64)
    mos = np.asarray(mos, dtype=np.float64)
    if len(pred) < 3 or np.ptp(pred) == 0 or np.ptp(mos) == 0:
        return {k: float('nan') for k in CORRELATIONS}
    return {'srcc': float(calculate_srcc(pred, mos)), 'plcc': float(calculate_plcc(pred, mos)),
            'krcc': float(calculate_krcc(pred, mos))}


@dataclass
class SplitResults:
    """Per-split correlations (and, for learned heads, chosen alphas and test predictions)."""

    srcc: list[float] = field(default_factory=list)
    plcc: list[float] = field(default_factory=list)
    krcc: list[float] = field(default_factory=list)
    alphas: list[float] = field(default_factory=list)
    test_indices: list[np.ndarray] = field(default_factory=list)
    predictions: list[np.ndarray] = field(default_factory=list)
    models: list[RidgeModel] = field(default_factory=list)  # a probe's fitted heads, to score other images

    def add(self, corr: dict[str, float]) -> None:
        for k in CORRELATIONS:
            getattr(self, k).append(corr[k])

    def median(self, key: str) -> float:
        values = np.asarray(getattr(self, key), dtype=np.float64)
        return float(np.nanmedian(values)) if np.isfinite(values).any() else float('nan')

    def quantiles(self, key: str, q: Sequence[float] = (0.25, 0.5, 0.75)) -> list[float]:
        values = np.asarray(getattr(self, key), dtype=np.float64)
        return [float(v) for v in np.nanquantile(values, q)] if np.isfinite(values).any() else [float('nan')] * len(q)

    def summary(self) -> dict:
        out = {f'{k}_median': self.median(k) for k in CORRELATIONS}
        out.update({f'{k}_per_split': [float(v) for v in getattr(self, k)] for k in CORRELATIONS})
        if self.alphas:
            out['alphas'] = [float(a) for a in self.alphas]
        return out


def linear_probe(features: np.ndarray, mos: np.ndarray, splits: Sequence[Split],
                 alphas: Sequence[float] = DEFAULT_ALPHAS, cv_folds: int = 5, seed: int = 0,
                 scoring: str = 'mse', train_size: int | None = None, repetition: int = 0,
                 ranking: RankingRows | None = None, penalty: np.ndarray | None = None) -> SplitResults:
    """Ridge on the training part of each split (alpha by CV on it alone), scored on its test part.

    ``train_size`` keeps only that many (seeded) training images: the data-efficient protocol.
    ``ranking``: synthetic pairs added to every fit (alpha is still chosen on the MOS rows).
    ``penalty``: per-feature factors of the ridge penalty (``ridge.standardisation``).
    """
    features = np.asarray(features, dtype=np.float64)
    mos = np.asarray(mos, dtype=np.float64)
    results = SplitResults()
    for i, (train, test) in enumerate(splits):
        train = subsample(train, train_size, seed=seed, repetition=repetition * 1000 + i)
        alpha = select_alpha(features[train], mos[train], alphas, n_folds=min(cv_folds, len(train)),
                             seed=seed + i, scoring=scoring, penalty=penalty)
        model = fit_ridge(features[train], mos[train], alpha, ranking, penalty)
        pred = model.predict(features[test])
        results.add(correlations(pred, mos[test]))
        results.alphas.append(alpha)
        results.test_indices.append(np.asarray(test))
        results.predictions.append(pred)
        results.models.append(model)
    return results


def data_efficient(features: np.ndarray, mos: np.ndarray, splits: Sequence[Split],
                   sizes: Sequence[int | None] = (25, 50, 100, 200, 400, None),
                   alphas: Sequence[float] = DEFAULT_ALPHAS, cv_folds: int = 5, seed: int = 0,
                   scoring: str = 'mse', ranking: RankingRows | None = None) -> dict[str, SplitResults]:
    """SRCC vs number of labelled training images; one repetition per split (10 splits = 10 reps).

    ``None`` in ``sizes`` means all training images of the split. Sizes larger than a
    training split are skipped (they would silently equal 'all').
    """
    from crossiqa_pyiqa.regression.features import progress

    out = {}
    n_train = min(len(tr) for tr, _ in splits)
    for size in progress(iterable=sizes, desc='data-efficient sizes', unit='N'):
        if size is not None and size >= n_train:
            continue
        out['all' if size is None else str(size)] = linear_probe(features, mos, splits, alphas, cv_folds, seed,
                                                                 scoring, train_size=size, ranking=ranking)
    return out


def evaluate_scores(scores: np.ndarray, mos: np.ndarray, splits: Sequence[Split],
                    lower_better: bool = False) -> tuple[SplitResults, dict[str, float]]:
    """A score-only metric on the test part of each split, and on the whole set."""
    scores = np.asarray(scores, dtype=np.float64)
    mos = np.asarray(mos, dtype=np.float64)
    if not np.isfinite(scores).all():
        bad = np.flatnonzero(~np.isfinite(scores))
        raise ValueError(f'{len(bad)} non-finite score(s), e.g. at indices {bad[:5].tolist()}')
    results = SplitResults()
    for _, test in splits:
        results.add(correlations(scores[test], mos[test], lower_better))
        results.test_indices.append(np.asarray(test))
        results.predictions.append(scores[test])
    return results, correlations(scores, mos, lower_better)


def per_type(scores: np.ndarray, mos: np.ndarray, types: Sequence[str], lower_better: bool = False,
             indices: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Correlations within each distortion type (on ``indices`` only when given)."""
    types = np.asarray(types)
    idx = np.arange(len(types)) if indices is None else np.asarray(indices)
    out = {}
    for t in sorted(set(types[idx].tolist())):
        sel = idx[types[idx] == t]
        out[t] = {**correlations(np.asarray(scores)[sel], np.asarray(mos)[sel], lower_better), 'n': int(len(sel))}
    return out
