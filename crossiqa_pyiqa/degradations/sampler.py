"""Random degradation specs for training batches.

Each image gets its own independently sampled spec (a possibly empty list of
``(name, level)`` steps) and its own random stream; images sharing a type at a given
composition step are degraded together in one batched call, whatever their levels.
"""
from __future__ import annotations

import contextlib
import math
import numbers
from typing import Iterator, Mapping, Optional, Sequence, Union

import torch

from crossiqa_pyiqa.degradations._core import REGISTRY, run
from crossiqa_pyiqa.degradations._names import DEGRADATIONS
from crossiqa_pyiqa.degradations._validate import check_image, check_level, check_name

Level = Union[int, float]
Spec = list[tuple[str, Level]]

_SEED_BOUND = 2 ** 62


@contextlib.contextmanager
def _torch_threads(n: Optional[int]) -> Iterator[None]:
    if n is None or n == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _device(generator: Optional[torch.Generator]) -> torch.device:
    return generator.device if generator is not None else torch.device('cpu')


class DegradationSampler:
    """Draws KADID-style degradation specs and applies them to batches.

    Args:
        weights: relative probability per type name (any registered type, camera family
            included); types left out are never drawn. ``None`` = uniform over the 25 KADID
            types (:data:`DEGRADATIONS`; the camera types are drawn only when named).
        identity_prob: probability that an image is left untouched (empty spec).
        levels: the levels to draw from (uniformly). With ``continuous=True`` levels are
            instead drawn uniformly from ``[min(levels), max(levels)]``.
        max_compose: a non-identity image gets 1..max_compose (uniform) *distinct* types,
            applied in the drawn order.
        continuous: draw float levels (types that cannot interpolate round them).
        num_threads: if set, torch's intra-op thread count while degrading (restored
            afterwards). The work is many small per-group ops, which gain little from
            threads; on a CPU shared with other jobs, 1 avoids OpenMP threads spinning
            for a descheduled partner (with OpenMP's default active waiting, 2 threads
            measured 4.6x slower at load 5 and 20x+ at load 12 on the 2-core reference
            machine; ``OMP_WAIT_POLICY=PASSIVE`` fixes most of it too, see
            docs/DEGRADATIONS.md). ``None`` leaves it alone.
            Process-wide setting: only use it when nothing else runs torch ops meanwhile
            (the usual sequential training loop).

    Reproducibility: ``sampler(x, g)`` with the same generator state gives the same
    output. Image ``i``'s random degradations use their own stream,
    ``torch.Generator().manual_seed(seeds[i])`` (see :meth:`sample_batch`), so its result
    equals :func:`~crossiqa_pyiqa.degradations.apply` of its spec, step by step, on that
    image alone with that generator, independently of how the batch was grouped.
    """

    def __init__(self, weights: Optional[Mapping[str, float]] = None, identity_prob: float = 0.1,
                 levels: Sequence[Level] = (1, 2, 3, 4, 5), max_compose: int = 1,
                 continuous: bool = False, num_threads: Optional[int] = None) -> None:
        names = tuple(REGISTRY)      # registry order: the KADID types first, as before the camera family
        if weights is None:
            weights = {n: 1.0 for n in DEGRADATIONS}
        if not isinstance(weights, Mapping):
            raise TypeError(f'weights must be a dict of type name -> weight, got {type(weights).__name__}')
        for n, w in weights.items():
            check_name(n, names)
            if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(float(w)):
                raise ValueError(f'weight of {n!r} must be a finite number, got {w!r}')
            if w < 0:
                raise ValueError(f'weight of {n!r} must be >= 0, got {w!r}')
        self.names: tuple[str, ...] = tuple(n for n in names if weights.get(n, 0) > 0)
        if not self.names:
            raise ValueError('all degradation weights are zero; give at least one type a positive weight')
        total = sum(float(weights[n]) for n in self.names)
        self.probs = torch.tensor([float(weights[n]) / total for n in self.names], dtype=torch.float64)
        if isinstance(identity_prob, bool) or not isinstance(identity_prob, numbers.Real) \
                or not 0.0 <= float(identity_prob) <= 1.0:
            raise ValueError(f'identity_prob must be in [0, 1], got {identity_prob!r}')
        self.identity_prob = float(identity_prob)
        levels = tuple(levels)
        if not levels:
            raise ValueError('levels must not be empty')
        for lv in levels:
            if isinstance(lv, bool) or not isinstance(lv, numbers.Real) or not 0 < float(lv) <= 5:
                raise ValueError(f'levels must be numbers in (0, 5] (use identity_prob for level 0), got {lv!r}')
        self.levels = levels
        if isinstance(max_compose, bool) or not isinstance(max_compose, numbers.Integral) or max_compose < 1:
            raise ValueError(f'max_compose must be an int >= 1, got {max_compose!r}')
        self.max_compose = int(max_compose)
        self.continuous = bool(continuous)
        if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, numbers.Integral)
                                        or num_threads < 1):
            raise ValueError(f'num_threads must be None or an int >= 1, got {num_threads!r}')
        self.num_threads = None if num_threads is None else int(num_threads)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(types={len(self.names)}, identity_prob={self.identity_prob}, '
                f'levels={self.levels}, max_compose={self.max_compose}, continuous={self.continuous}, '
                f'num_threads={self.num_threads})')

    def sample(self, generator: Optional[torch.Generator] = None) -> Spec:
        """One image's spec: ``[]`` (identity) or up to ``max_compose`` distinct ``(name, level)``."""
        dev = _device(generator)
        if float(torch.rand(1, generator=generator, device=dev)) < self.identity_prob:
            return []
        k = 1 + int(torch.randint(self.max_compose, (1,), generator=generator, device=dev))
        k = min(k, len(self.names))
        picks = torch.multinomial(self.probs.to(dev), k, replacement=False, generator=generator).tolist()
        spec: Spec = []
        for j in picks:
            if self.continuous:
                lo, hi = float(min(self.levels)), float(max(self.levels))
                level: Level = lo + (hi - lo) * float(torch.rand(1, generator=generator, device=dev, dtype=torch.float64))
            else:
                level = self.levels[int(torch.randint(len(self.levels), (1,), generator=generator, device=dev))]
            spec.append((self.names[j], level))
        return spec

    def sample_batch(self, n: int, generator: Optional[torch.Generator] = None) -> tuple[list[Spec], list[int]]:
        """Specs and per-image random-stream seeds for ``n`` images (spec i, then seed i, ...)."""
        dev = _device(generator)
        specs, seeds = [], []
        for _ in range(n):
            specs.append(self.sample(generator))
            seeds.append(int(torch.randint(_SEED_BOUND, (1,), generator=generator, device=dev)))
        return specs, seeds

    @staticmethod
    def apply_specs(x: torch.Tensor, specs: Sequence[Spec], seeds: Sequence[int]) -> torch.Tensor:
        """Degrade image i of ``x`` by ``specs[i]`` with stream ``Generator().manual_seed(seeds[i])``."""
        check_image(x)
        if len(specs) != x.shape[0] or len(seeds) != x.shape[0]:
            raise ValueError(f'need one spec and one seed per image: batch {x.shape[0]}, '
                             f'{len(specs)} specs, {len(seeds)} seeds')
        for spec in specs:
            for step in spec:
                check_name(step[0], tuple(REGISTRY))
                check_level(step[1])
        return DegradationSampler._apply(x, specs, seeds)

    @staticmethod
    def _apply(x: torch.Tensor, specs: Sequence[Spec], seeds: Sequence[int]) -> torch.Tensor:
        """Composition step by step; at each step the images sharing a type form one batch."""
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        y = x.clone()
        depth = max((len(s) for s in specs), default=0)
        for step in range(depth):
            groups: dict[str, list[int]] = {}
            for i, spec in enumerate(specs):
                if len(spec) > step:
                    groups.setdefault(spec[step][0], []).append(i)
            for name, idx in groups.items():
                levels = [float(specs[i][step][1]) for i in idx]
                if len(idx) == x.shape[0]:
                    y = run(y, name, levels, gens)
                else:
                    y[idx] = run(y[idx], name, levels, [gens[i] for i in idx])
        return y

    def __call__(self, x: torch.Tensor, generator: Optional[torch.Generator] = None
                 ) -> tuple[torch.Tensor, list[Spec]]:
        """Degrade each image of ``x`` (B,3,H,W) by its own random spec; returns (images, specs)."""
        check_image(x)
        specs, seeds = self.sample_batch(x.shape[0], generator)
        with _torch_threads(self.num_threads):
            return self._apply(x, specs, seeds), specs
