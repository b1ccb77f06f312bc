"""Deterministic degraded versions of pristine images (library type x level), for ranking tests and pairs.

Used by the benchmark's L/D ranking tests (``benchmark/ranking.py``) and by the synthetic
ranking pairs of the regression head (``regression/ranking_pairs.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

LEVELS = (1, 2, 3, 4, 5)


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
    """Reads pristine images once and degrades them deterministically (seed per image × type × level)."""

    def __init__(self, paths: Sequence[str], crop: int | None, apply_fn, types: Sequence[str], seed: int = 0):
        self.paths, self.crop, self.apply, self.seed = list(paths), crop, apply_fn, seed
        self.type_index = {t: k for k, t in enumerate(types)}
        self._cache: dict[int, torch.Tensor] = {}

    def pristine(self, i: int) -> torch.Tensor:
        if i not in self._cache:
            from crossiqa_pyiqa.inputs import read_image

            self._cache = {i: centre_crop(read_image(self.paths[i]), self.crop)[None]}
        return self._cache[i]

    def __call__(self, item: RankingItem) -> torch.Tensor:
        x = self.pristine(item.image)
        if item.dtype is None:
            return x
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + item.image * 1009 + self.type_index[item.dtype]
                                          * 11 + item.level)
        return self.apply(x, item.dtype, item.level, generator=g).clamp(0, 1)
