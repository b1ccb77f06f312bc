"""Deterministic degraded versions of pristine images (library type x level), for ranking tests and pairs.

Used by the benchmark's L/D ranking tests (``benchmark/ranking.py``) and by the synthetic
ranking pairs of the regression head (``regression/ranking_pairs.py``).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Sequence

import torch

LEVELS = (1, 2, 3, 4, 5)
#: How a type's random draws (sign, direction, positions, noise pattern) relate across its levels:
#: ``independent``, a fresh draw per level (the ranking pairs' draws); ``nested``, one draw per image x type
#: shared by all levels, so each level is the same distortion made stronger (the Waterloo L-test).
LEVEL_DRAWS = ('independent', 'nested')


def load_degradations():
    try:
        from crossiqa_pyiqa.degradations import DEGRADATIONS, apply
    except ImportError as error:
        raise ImportError('The ranking tests need the degradation library crossiqa_pyiqa.degradations '
                          f'(DEGRADATIONS, apply): {error}') from error
    return list(DEGRADATIONS), apply


def centre_crop(img: torch.Tensor, size: int | None) -> torch.Tensor:
    """Crop (never resize: resizing changes quality) to bound the cost per image."""
    if not size:
        return img
    h, w = img.shape[-2:]
    th, tw = min(size, h), min(size, w)
    y, x = (h - th) // 2, (w - tw) // 2
    return img[..., y:y + th, x:x + tw]


@dataclass
class RankingItem:
    image: int
    dtype: str | None  # None: the pristine image
    level: int  # 0 for the pristine image

    @property
    def key(self) -> str:
        return f'{self.image}|{self.dtype or "pristine"}|{self.level}'


def ranking_items(n_images: int, types: Sequence[str], levels: Sequence[int] = LEVELS) -> list[RankingItem]:
    items = []
    for i in range(n_images):
        items.append(RankingItem(i, None, 0))
        items.extend(RankingItem(i, t, lv) for t in types for lv in levels)
    return items


class DegradedReader:
    """Reads pristine images once and degrades them deterministically.

    ``level_draws='independent'`` seeds each image x type x level on its own (a type drawn in both directions,
    such as ``mean_shift``, may brighten at one level and darken at the next); ``'nested'`` seeds each image x
    type once, by the type's name, so its levels share one draw and the seed does not depend on which other
    types are listed."""

    def __init__(self, paths: Sequence[str], crop: int | None, apply_fn, types: Sequence[str], seed: int = 0,
                 level_draws: str = 'independent'):
        if level_draws not in LEVEL_DRAWS:
            raise ValueError(f'level_draws must be one of {LEVEL_DRAWS}, got {level_draws!r}')
        self.paths, self.crop, self.apply, self.seed = list(paths), crop, apply_fn, seed
        self.level_draws = level_draws
        self.type_index = {t: k for k, t in enumerate(types)}
        self._cache: dict[int, torch.Tensor] = {}

    def item_seed(self, item: RankingItem) -> int:
        base = self.seed * 1_000_003 + item.image * 1009
        if self.level_draws == 'nested':
            return base + zlib.crc32(item.dtype.encode()) * 7
        return base + self.type_index[item.dtype] * 11 + item.level

    def pristine(self, i: int) -> torch.Tensor:
        if i not in self._cache:
            from crossiqa_pyiqa.inputs import read_image

            self._cache = {i: centre_crop(read_image(self.paths[i]), self.crop)[None]}
        return self._cache[i]

    def __call__(self, item: RankingItem) -> torch.Tensor:
        x = self.pristine(item.image)
        if item.dtype is None:
            return x
        g = torch.Generator().manual_seed(self.item_seed(item))
        return self.apply(x, item.dtype, item.level, generator=g).clamp(0, 1)
