"""Feature sets and level probes of the design study, shared by ``ablation_eval.py`` and ``level_probe.py``.

The study extracts a *superset* of features once per encoder (class token, patch-token
mean and standard deviation of every encoder block, at native and half scale);
:func:`feature_index` picks the columns of one feature set out of it.
"""
from __future__ import annotations

import numpy as np

FEATURE_SETS = {
    'cls': dict(tokens=['cls'], blocks=[-1], scales=[1.0]),
    'cls+mean': dict(tokens=['cls', 'mean'], blocks=[-1], scales=[1.0]),
    'cls+mean 2 scales': dict(tokens=['cls', 'mean'], blocks=[-1], scales=[1.0, 0.5]),
    'cls+mean+std 2 scales': dict(tokens=['cls', 'mean', 'std'], blocks=[-1], scales=[1.0, 0.5]),
    'cls+mean+std mid+last 2 scales': dict(tokens=['cls', 'mean', 'std'], blocks=['mid', -1], scales=[1.0, 0.5]),
    'all blocks cls+mean+std 2 scales': dict(tokens=['cls', 'mean', 'std'], blocks='all', scales=[1.0, 0.5]),
}
HEAD_SET = 'cls+mean+std mid+last 2 scales'  # the features of the shipped model's head
TOKENS = ['cls', 'mean', 'std']
SCALES = [1.0, 0.5]


def feature_index(net, spec) -> np.ndarray:
    """Columns of the superset features that make up one feature set."""
    e, depth = net.config['embed_dim'], net.config['depth']
    blocks = range(depth) if spec['blocks'] == 'all' else [
        depth // 2 - 1 if b == 'mid' else b % depth for b in spec['blocks']]
    per_scale = depth * len(TOKENS) * e
    cols = []
    for s in spec['scales']:
        for b in blocks:
            for t in spec['tokens']:
                start = SCALES.index(s) * per_scale + b * len(TOKENS) * e + TOKENS.index(t) * e
                cols.append(np.arange(start, start + e))
    return np.concatenate(cols)


def level_probe(feats: np.ndarray, cols: np.ndarray, folds: int = 3) -> float:
    """Issue 4's evidence: does a linear probe on frozen features predict the degradation level
    of *held-out images*? Ridge (alpha by CV on the training images) from features to level
    (0 = pristine, 1..5), images split into ``folds`` groups; SRCC on the unseen images, pooled."""
    from scipy.stats import spearmanr

    from crossiqa_pyiqa.regression.ridge import fit_ridge_cv

    n_img, n_ver, _ = feats.shape
    levels = np.concatenate([[0], np.tile(np.arange(1, 6), (n_ver - 1) // 5)]).astype(np.float64)
    pred = np.zeros((n_img, n_ver))
    for k in range(folds):
        test = np.arange(k, n_img, folds)
        train = np.setdiff1d(np.arange(n_img), test)
        model = fit_ridge_cv(feats[train][:, :, cols].reshape(-1, len(cols)), np.tile(levels, len(train)))
        pred[test] = model.predict(feats[test][:, :, cols].reshape(-1, len(cols))).reshape(len(test), n_ver)
    return float(spearmanr(pred.reshape(-1), np.tile(levels, n_img)).statistic)


def per_type_probe(feats: np.ndarray, cols: np.ndarray, folds: int = 3) -> tuple[float, float]:
    """(within-image SRCC, pooled SRCC), each averaged over the degradation types."""
    from scipy.stats import spearmanr

    from crossiqa_pyiqa.regression.ridge import fit_ridge_cv

    n_img, n_ver, _ = feats.shape
    n_types = (n_ver - 1) // 5
    levels = np.arange(6, dtype=np.float64)
    pooled, within = [], []
    for t in range(n_types):
        idx = np.concatenate([[0], 1 + 5 * t + np.arange(5)])
        x = feats[:, idx][:, :, cols]  # (images, 6, F)
        pred = np.zeros((n_img, 6))
        for k in range(folds):
            test = np.arange(k, n_img, folds)
            train = np.setdiff1d(np.arange(n_img), test)
            model = fit_ridge_cv(x[train].reshape(-1, len(cols)), np.tile(levels, len(train)), n_folds=4)
            pred[test] = model.predict(x[test].reshape(-1, len(cols))).reshape(len(test), 6)
        pooled.append(float(spearmanr(pred.reshape(-1), np.tile(levels, n_img)).statistic))
        within.append(float(np.nanmean([spearmanr(p, levels).statistic for p in pred])))
    return float(np.nanmean(within)), float(np.mean(pooled))
