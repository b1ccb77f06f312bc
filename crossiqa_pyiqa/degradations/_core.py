"""Registry, level-to-parameter tables and per-image random streams.

Every degradation is a function ``fn(x, p, gens) -> y`` on a (B,3,H,W) batch where ``p``
holds one parameter value per image (float64, CPU) and ``gens`` one random stream per
image. Keeping parameters and random streams per image lets the sampler batch images
that share a type but not a level, and makes an image's output independent of which
other images were batched with it.

Random draws are made per image, in batch order, all of an image's in one call (so a
batch consumes a shared generator exactly as the images one by one would), from
``gens[i]`` on the generator's own device, then moved to the input's device (so CPU
generators work with CUDA inputs).
They are drawn in float32 whatever the input dtype, and, wherever possible, the draws do
not depend on the level ("common random numbers"): at a fixed seed a stronger level is
the same noise field / patch layout scaled up, so strength is monotone per sample, not
only on average.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import torch

Generators = Sequence[Optional[torch.Generator]]
DegradationFn = Callable[[torch.Tensor, torch.Tensor, Generators], torch.Tensor]

#: KADID-10k's images are 512x384; count-based types scale their counts with area.
KADID_AREA = 512 * 384


@dataclass(frozen=True)
class Degradation:
    """One distortion type and its five-level parameter table."""

    name: str
    fn: DegradationFn
    #: Parameter at levels 1..5 (exactly what integer levels use).
    table: tuple[float, ...]
    #: Parameter value meaning "unchanged"; enables interpolation for levels in (0, 1).
    #: ``None`` means levels below 1 are rounded (0 or 1).
    identity: Optional[float] = None
    #: Round the interpolated parameter to an integer (counts, JPEG quality, ...).
    integer: bool = False
    #: Uses random numbers (so the generator matters).
    random: bool = False
    #: Pure torch (runs on the input's device) vs. CPU codec round trip.
    torch_native: bool = True
    param_name: str = ''
    summary: str = field(default='', compare=False)

    def param(self, level: float) -> float:
        """Parameter for a (possibly fractional) level in (0, 5]; see :meth:`effective_level`."""
        if level == int(level):
            return float(self.table[int(level) - 1])
        if self.identity is not None:
            xs, ys = range(0, 6), (self.identity, *self.table)
        else:
            xs, ys = range(1, 6), self.table
        lo = max(i for i in xs if i <= level)
        hi = lo + 1
        t = level - lo
        y0, y1 = ys[lo - xs[0]], ys[hi - xs[0]]
        value = y0 + t * (y1 - y0)
        if self.integer:
            value = float(math.floor(value + 0.5))
        return value

    def effective_level(self, level: float) -> float:
        """Level actually applied: levels in (0, 1) round to 0/1 when there is no identity value."""
        if 0.0 < level < 1.0 and self.identity is None:
            return float(math.floor(level + 0.5))
        return level


REGISTRY: dict[str, Degradation] = {}


def register(name: str, table: Sequence[float], *, identity: Optional[float] = None,
             integer: bool = False, random: bool = False, torch_native: bool = True,
             param_name: str = '') -> Callable[[DegradationFn], DegradationFn]:
    """Decorator adding a degradation function to :data:`REGISTRY`."""
    if len(table) != 5:
        raise ValueError(f'{name}: table needs 5 entries, got {len(table)}')

    def deco(fn: DegradationFn) -> DegradationFn:
        doc = (fn.__doc__ or '').strip().splitlines()
        REGISTRY[name] = Degradation(name, fn, tuple(float(v) for v in table), identity, integer,
                                     random, torch_native, param_name, doc[0] if doc else '')
        return fn

    return deco


def run(x: torch.Tensor, name: str, levels: Sequence[float], gens: Generators) -> torch.Tensor:
    """Apply ``name`` to each image of a validated batch at its own level and random stream."""
    deg = REGISTRY[name]
    eff = [deg.effective_level(float(lv)) for lv in levels]
    active = [i for i, lv in enumerate(eff) if lv > 0]
    if not active:
        return x.clone()
    work_dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    xa = x if len(active) == x.shape[0] else x[active]
    xa = xa.to(work_dtype)        # validated to [0,1] +- 1e-6; outputs are clamped below
    p = torch.tensor([deg.param(eff[i]) for i in active], dtype=torch.float64)
    with torch.no_grad():      # data generation: no autograd graph (and no grad overhead)
        ya = deg.fn(xa, p, [gens[i] for i in active]).clamp_(0, 1).to(x.dtype)
    if len(active) == x.shape[0]:
        return ya
    out = x.clone()
    out[active] = ya
    return out


# ----------------------------------------------------------------------------- helpers

def unique_groups(p: torch.Tensor) -> Iterator[tuple[float, torch.Tensor]]:
    """Yield ``(value, indices)`` for each distinct parameter value (for per-value kernels)."""
    values, inverse = torch.unique(p, return_inverse=True)
    for k, v in enumerate(values.tolist()):
        yield v, torch.nonzero(inverse == k).flatten()


def map_groups(x: torch.Tensor, p: torch.Tensor, fn: Callable[[torch.Tensor, float], torch.Tensor]
               ) -> torch.Tensor:
    """``fn(images, value)`` on each group of images sharing a parameter value (one call, no
    gather/scatter copies, when they all share it)."""
    if bool((p == p[0]).all()):
        return fn(x, float(p[0]))
    out = torch.empty_like(x)
    for value, idx in unique_groups(p):
        out[idx] = fn(x[idx], value)
    return out


def per_image(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-image parameters as a (B,1,1,1) tensor broadcastable against ``x``."""
    return p.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _draw(kind: str, g: Optional[torch.Generator], shape: Sequence[int],
          out: Optional[torch.Tensor] = None) -> torch.Tensor:
    dev = g.device if g is not None else torch.device('cpu')
    fn = torch.rand if kind == 'rand' else torch.randn
    if out is not None:
        return fn(*shape, generator=g, out=out)
    return fn(*shape, generator=g, device=dev, dtype=torch.float32)


def _draw_batch(kind: str, gens: Generators, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    devs = {g.device if g is not None else torch.device('cpu') for g in gens}
    if len(devs) == 1:       # draw straight into one buffer (no per-image temporaries)
        buf = torch.empty((len(gens), *shape), dtype=torch.float32, device=devs.pop())
        for i, g in enumerate(gens):
            _draw(kind, g, shape, out=buf[i])
    else:
        buf = torch.stack([_draw(kind, g, shape).to(like.device) for g in gens])
    return buf.to(like.device, like.dtype)


def rand(gens: Generators, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """U[0,1) draws of ``shape`` per image, stacked to (B, *shape) on ``like``'s device/dtype."""
    return _draw_batch('rand', gens, shape, like)


def randn(gens: Generators, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """N(0,1) draws of ``shape`` per image, stacked to (B, *shape) on ``like``'s device/dtype."""
    return _draw_batch('randn', gens, shape, like)


def rand_cpu(gens: Generators, shape: Sequence[int]) -> torch.Tensor:
    """U[0,1) draws per image as a float64 CPU tensor (for positions, angles, signs)."""
    return torch.stack([_draw('rand', g, shape).cpu() for g in gens]).double()


def random_sign(gens: Generators, like: torch.Tensor) -> torch.Tensor:
    """One +-1 per image (B,1,1,1), for types KADID applies in both directions."""
    u = rand_cpu(gens, (1,)).flatten()
    return per_image(torch.where(u < 0.5, -1.0, 1.0), like)
