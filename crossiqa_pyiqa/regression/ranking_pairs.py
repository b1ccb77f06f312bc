"""Synthetic quality-ranking pairs that keep a MOS-fitted head honest about distortions.

A ridge head fitted on CLIVE alone learns what CLIVE shows: there, more high-frequency
energy mostly means "sharper", so the head rewards white noise, JPEG blocking and
over-sharpening (README, synthetic ranking table). The remedy costs no labels: take
pristine images, degrade each with the library (every type, one seeded level), and ask
the head to score the pristine version above the degraded one by a margin that grows
with the level. The pairs enter the fit as squared-hinge rows (``ridge.RankingRows``).

With ``ladder: true`` each image x type is also degraded at a second level of the same draw
(nested levels: the same sign, direction and positions, made stronger), and the head is asked
to score the weaker level above the stronger one by the margin of their level difference: the
within-type ordering the L-test measures, which pristine-vs-degraded pairs only imply.

Features of the pairs are cached like dataset features (content hash of encoder,
image list, crop, seed, types), so a refit of the head reuses them.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

#: Defaults of ``regression.ranking`` (``weight``: total weight of the pairs relative to the
#: MOS rows; ``margin_per_level``: required score drop per degradation level, MOS units).
RANKING_DEFAULTS: dict[str, Any] = {
    'pristine_dirs': None,
    'n_images': 150,
    'crop': 256,
    'seed': 0,
    'types': None,  # None: the 25 KADID types; or names / 'camera' / 'all' (any registered type)
    'weight': 0.3,
    'margin_per_level': 3.0,
    'type_weights': None,  # {type: w}: that type's pairs count w times (default 1 for every type)
    'ladder': False,  # also (weaker level, stronger level) pairs of one nested draw per image x type
}


@dataclass
class RankingOptions:
    pristine_dirs: list[str]
    n_images: int = 150
    crop: int | None = 256
    seed: int = 0
    types: list[str] | None = None
    weight: float = 0.3
    margin_per_level: float = 3.0
    type_weights: dict[str, float] | None = None
    ladder: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in RANKING_DEFAULTS}


def ranking_options(spec: dict[str, Any] | str | os.PathLike | None) -> RankingOptions | None:
    """Checked ``regression.ranking`` options; ``None``/empty means a plain MOS fit.

    A path instead of a dict reads ``regression.ranking`` of that options file, so a
    benchmark row can follow the shipped head's recipe without a copy that drifts.
    """
    if isinstance(spec, (str, os.PathLike)):
        from crossiqa_pyiqa.optionfile import load_options

        if not os.path.isfile(spec):
            raise FileNotFoundError(f'ranking: options file {spec} does not exist')
        spec = (load_options(spec).get('regression') or {}).get('ranking')
    if not spec:
        return None
    unknown = set(spec) - set(RANKING_DEFAULTS)
    if unknown:
        raise ValueError(f'Unknown regression.ranking option(s) {sorted(unknown)}; valid: {sorted(RANKING_DEFAULTS)}')
    opts = {**RANKING_DEFAULTS, **spec}
    dirs = opts['pristine_dirs']
    if isinstance(dirs, (str, os.PathLike)):
        dirs = [dirs]
    if not dirs:
        raise ValueError('regression.ranking needs pristine_dirs: folders of pristine images to degrade')
    from crossiqa_pyiqa.paths import dataset_of, resolve

    dirs = [resolve(d) for d in dirs]  # datasets/... under $CROSSIQA_HOME
    for d in dirs:
        if not os.path.isdir(d):
            name = dataset_of(d)
            how = f': prepare it with `python scripts/prepare_data.py {name}`' if name else ''
            raise FileNotFoundError(f'regression.ranking.pristine_dirs: {d} is not a folder{how}')
    if int(opts['n_images']) < 1:
        raise ValueError(f"regression.ranking.n_images must be >= 1, got {opts['n_images']}")
    if float(opts['weight']) < 0 or float(opts['margin_per_level']) < 0:
        raise ValueError('regression.ranking.weight and margin_per_level must be >= 0')
    from crossiqa_pyiqa.degradations import DEGRADATIONS, resolve_types

    types = None
    if opts['types'] is not None:
        # type names (camera family included) and the shorthands 'kadid', 'camera', 'all'
        types = resolve_types(opts['types'], 'regression.ranking.types')
    type_weights = _type_weights(opts['type_weights'], types or list(DEGRADATIONS))
    if not isinstance(opts['ladder'], bool):
        raise ValueError(f"regression.ranking.ladder must be true or false, got {opts['ladder']!r}")
    return RankingOptions(pristine_dirs=[str(d) for d in dirs], n_images=int(opts['n_images']),
                          crop=int(opts['crop']) if opts['crop'] else None, seed=int(opts['seed']),
                          types=types, weight=float(opts['weight']),
                          margin_per_level=float(opts['margin_per_level']), type_weights=type_weights,
                          ladder=opts['ladder'])


def _type_weights(spec: Any, types: Sequence[str]) -> dict[str, float] | None:
    """Checked ``regression.ranking.type_weights``: a mapping from types of the fit to weights >= 0."""
    if not spec:
        return None
    if not isinstance(spec, dict):
        raise TypeError('regression.ranking.type_weights must be a mapping {type: weight}, got '
                        f'{type(spec).__name__}')
    unknown = sorted(set(spec) - set(types))
    if unknown:
        raise ValueError(f'regression.ranking.type_weights names type(s) {unknown} that are not among the '
                         f'ranking types {list(types)}')
    out = {}
    for name, value in spec.items():
        try:
            w = float(value)
        except (TypeError, ValueError):
            raise ValueError(f'regression.ranking.type_weights.{name} must be a number, got {value!r}') from None
        if not np.isfinite(w) or w < 0:
            raise ValueError(f'regression.ranking.type_weights.{name} must be a finite weight >= 0, got {value!r}')
        out[str(name)] = w
    return out


@dataclass
class RankingPairs:
    """``diffs[k] = f(better) - f(worse)`` for pair k, in the encoder's raw feature space: the better image is
    the pristine one (``better_levels[k] == 0``) or, in a ladder pair, the same draw at a weaker level."""

    diffs: np.ndarray
    levels: np.ndarray  # the worse image's level
    types: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    features: np.ndarray | None = None  # every pair image's raw features (pristine and degraded)
    better_levels: np.ndarray | None = None  # None: every pair's better image is pristine

    def level_gaps(self) -> np.ndarray:
        """Levels between the two images of each pair (the margin's multiplier)."""
        gap = self.levels.astype(np.float64)
        return gap if self.better_levels is None else gap - self.better_levels

    def __len__(self) -> int:
        return len(self.levels)

    def margins(self, per_level: float) -> np.ndarray:
        return per_level * self.level_gaps()

    def row_scale(self, type_weights: dict[str, float] | None) -> np.ndarray:
        """Per-pair factor sqrt(w_type): scaling a squared-hinge row's difference and margin by it
        weighs that row's loss by w_type (``regression.ranking.type_weights``)."""
        if not type_weights:
            return np.ones(len(self))
        return np.sqrt(np.array([type_weights.get(t, 1.0) for t in self.types], dtype=np.float64))

    def as_rows(self, opts: RankingOptions):
        """The pairs as fit rows (``ridge.RankingRows``) with the options' margin, weight and type weights."""
        from crossiqa_pyiqa.regression.ridge import RankingRows

        scale = self.row_scale(opts.type_weights)
        return RankingRows(self.diffs * scale[:, None], self.margins(opts.margin_per_level) * scale, opts.weight)


def _pristine_images(dirs: Sequence[str]) -> list[str]:
    from crossiqa_pyiqa.regression.features import folder_images

    return [p for d in dirs for p in folder_images(d)]


def ranking_pairs(net: torch.nn.Module, opts: RankingOptions,
                  cache_dir: str | os.PathLike | None = None) -> RankingPairs:
    """Features of ``n_images`` seeded pristine crops and of one degraded version per type of each."""
    from crossiqa_pyiqa.regression.degraded import DegradedReader, RankingItem, load_degradations
    from crossiqa_pyiqa.regression.features import cache_key, default_cache_dir, extract

    all_types, apply_fn = load_degradations()
    types = opts.types or all_types
    paths = _pristine_images(opts.pristine_dirs)
    rng = np.random.default_rng(opts.seed)
    chosen = sorted(rng.choice(len(paths), min(opts.n_images, len(paths)), replace=False).tolist())
    paths = [paths[i] for i in chosen]
    items: list[RankingItem] = []
    pairs: list[tuple[int, int]] = []  # (better, worse) item indices
    for i in range(len(paths)):
        pristine = len(items)
        items.append(RankingItem(i, None, 0))
        for t in types:
            level = int(rng.integers(1, 6))
            pairs.append((pristine, len(items)))
            items.append(RankingItem(i, t, level))
            if opts.ladder:  # a second level of the same draw: (weaker, stronger)
                second = int(rng.choice([lv for lv in range(1, 6) if lv != level]))
                pairs.append((len(items) - 1, len(items)) if second > level else (len(items), len(items) - 1))
                items.append(RankingItem(i, t, second))
    draws = 'nested' if opts.ladder else 'independent'
    reader = DegradedReader(paths, opts.crop, apply_fn, types, seed=opts.seed, level_draws=draws)
    keys = [f'{paths[it.image]}|{it.dtype or "pristine"}|{it.level}' for it in items]
    identity = {'items': keys, 'sizes': [os.path.getsize(p) for p in paths], 'crop': opts.crop, 'seed': opts.seed}
    if opts.ladder:  # the same keys drawn otherwise (independent identities are kept: their caches stay valid)
        identity['level_draws'] = draws
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache = cache_dir / 'features' / f'ranking-pairs-{cache_key(net, digest)}.npz'
    feats = extract(net, len(items), lambda k: reader(items[k]), keys, cache, desc='ranking pairs')
    better, worse = map(list, zip(*pairs))
    better_levels = np.array([items[k].level for k in better]) if opts.ladder else None
    return RankingPairs(diffs=feats[better] - feats[worse], levels=np.array([items[k].level for k in worse]),
                        types=[items[k].dtype for k in worse], images=[paths[items[k].image] for k in worse],
                        features=feats, better_levels=better_levels)
