"""Seeded train/test splits shared by every method of a benchmark run.

Each split is drawn from its own generator ``default_rng([seed, i])``, so split i is
the same whatever the number of splits asked for, and every metric of a run (learned
heads and score-only baselines) is evaluated on exactly the same test images.
When a dataset has reference images (FR datasets such as KADID/TID), splits are
content-disjoint: all distorted versions of a reference fall on the same side.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

Split = tuple[np.ndarray, np.ndarray]  # (train indices, test indices), sorted


def random_splits(n: int, n_splits: int = 10, train_ratio: float = 0.8, seed: int = 123,
                  groups: Sequence | None = None) -> list[Split]:
    """``n_splits`` seeded ``train_ratio`` splits of ``range(n)``; by group when ``groups`` is given."""
    if n < 2:
        raise ValueError(f'random_splits: need at least 2 items, got {n}')
    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f'train_ratio must be in (0, 1), got {train_ratio}')
    if groups is not None and len(groups) != n:
        raise ValueError(f'random_splits: {len(groups)} group labels for {n} items')
    splits = []
    if groups is None:
        n_train = min(n - 1, max(1, int(round(n * train_ratio))))
        for i in range(n_splits):
            perm = np.random.default_rng([seed, i]).permutation(n)
            splits.append((np.sort(perm[:n_train]), np.sort(perm[n_train:])))
        return splits
    labels = np.asarray([str(g) for g in groups])
    unique = np.unique(labels)
    if len(unique) < 2:
        raise ValueError('random_splits: content-disjoint splits need at least 2 distinct reference images')
    n_train = min(len(unique) - 1, max(1, int(round(len(unique) * train_ratio))))
    for i in range(n_splits):
        train_groups = set(np.random.default_rng([seed, i]).permutation(unique)[:n_train])
        in_train = np.array([g in train_groups for g in labels])
        splits.append((np.flatnonzero(in_train), np.flatnonzero(~in_train)))
    return splits


def subsample(indices: np.ndarray, size: int | None, seed: int = 0, repetition: int = 0) -> np.ndarray:
    """A seeded subset of ``size`` training indices (all of them when ``size`` is None or too large)."""
    indices = np.asarray(indices)
    if size is None or size >= len(indices):
        return np.sort(indices)
    rng = np.random.default_rng([seed, repetition, size])
    return np.sort(rng.choice(indices, size=size, replace=False))


def write_pyiqa_split_file(path: str, splits: Sequence[Split], smoke: tuple[int, int] | None = (64, 16)) -> None:
    """Save splits in pyiqa's ``split_file`` format (``{index: {'train', 'val', 'test'}}``, index from 1).

    pyiqa's harness (``python -m pyiqa.train``) then trains on exactly the protocol's
    splits (``split_index: i``). Index 0 is a small smoke split (``smoke`` = (n_train,
    n_val) taken from split 1) for quick harness checks.
    """
    import pickle

    out = {i + 1: {'train': [int(k) for k in tr], 'val': [int(k) for k in te], 'test': [int(k) for k in te]}
           for i, (tr, te) in enumerate(splits)}
    if smoke and splits:
        tr, te = splits[0]
        out[0] = {'train': [int(k) for k in tr[:smoke[0]]], 'val': [int(k) for k in te[:smoke[1]]],
                  'test': [int(k) for k in te[:smoke[1]]]}
    with open(path, 'wb') as f:
        pickle.dump(out, f)
