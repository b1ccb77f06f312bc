"""Spatial family (KADID types 19-23): jitter, non-eccentricity patches, pixelate,
quantisation, colour blocks.

KADID's patch types are defined on 512x384 images; here counts / block sizes scale with
the image area so a 224 px crop receives the same *fraction* of damage as a KADID image.
Patch loops run over patches (at most a few dozen), never over pixels, and are batched
across images.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from crossiqa_pyiqa.degradations._core import KADID_AREA, Generators, map_groups, per_image, rand_cpu, randn
from crossiqa_pyiqa.degradations._core import register

#: KADID per-pixel displacement std (px) of each of the 5 warps.
JITTER_AMOUNT = (0.05, 0.1, 0.2, 0.5, 1.0)
#: KADID number of displaced 16x16 patches per 512x384 image (scaled by area, and at
#: least n/20 so levels stay distinct on small crops).
NON_ECCENTRICITY_PATCHES = (20, 40, 60, 80, 100)
#: KADID pixelation strength; downscale factor z = 0.95 - strength^0.6.
PIXELATE_STRENGTH = (0.01, 0.05, 0.1, 0.2, 0.5)
#: KADID number of thresholds (``multithresh(im, n)``).
QUANTIZATION_THRESHOLDS = (20, 16, 13, 10, 7)
#: KADID number of uniform random-colour blocks (32x32 on 512x384, side scaled by sqrt(area)).
COLOR_BLOCKS = (2, 4, 6, 8, 10)

_JITTER_ITERS = 5


def _area_ratio(h: int, w: int) -> float:
    return h * w / KADID_AREA


@register('jitter', JITTER_AMOUNT, identity=0.0, random=True, param_name='amount')
def jitter(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Pixel scatter: 5 bilinear warps by i.i.d. N(0, a^2) displacements (KADID ``imjitter``). a: .05 ... 1."""
    b, _, h, w = x.shape
    # Each warp samples a replicate-padded copy, displacements clipped at the margin (>= 6
    # sigma), so sampling never leaves it: equivalent to border (replicate) padding, but
    # grid_sample's zero-padding path measured ~4x faster than its border path on CPU.
    m = int(math.ceil(6 * float(p.max()))) + 1
    hp, wp = h + 2 * m, w + 2 * m
    shifts = randn(gens, (_JITTER_ITERS, h, w, 2), x).mul_(per_image(p, x).view(-1, 1, 1, 1, 1))
    scale = torch.tensor((2 / (wp - 1), 2 / (hp - 1)), device=x.device, dtype=x.dtype)
    shifts.clamp_(-(m - 1), m - 1).mul_(scale)
    ys, xs = torch.meshgrid(torch.arange(m, m + h, device=x.device, dtype=x.dtype),
                            torch.arange(m, m + w, device=x.device, dtype=x.dtype), indexing='ij')
    base = torch.stack((xs, ys), -1).mul_(scale).sub_(1)                 # (H, W, 2) as (x, y)
    y = x
    for it in range(_JITTER_ITERS):
        canvas = F.pad(y, (m, m, m, m), mode='replicate')
        y = F.grid_sample(canvas, torch.sub(base, shifts[:, it]), mode='bilinear', padding_mode='zeros',
                          align_corners=True)
    return y


def _patch_index(b: int, rows: torch.Tensor, cols: torch.Tensor, size: int):
    ar = torch.arange(size, device=rows.device)
    bidx = torch.arange(b, device=rows.device).view(-1, 1, 1)
    return bidx, (rows[:, None] + ar)[:, :, None], (cols[:, None] + ar)[:, None, :]


def non_eccentricity_count(n: float, h: int, w: int) -> int:
    """Patches for an h x w image given KADID's count ``n`` for 512x384."""
    return max(int(round(n * _area_ratio(h, w))), int(round(n / 20)))


def _cell_layout(h: int, w: int, ps: int, margin: int, kmax: int) -> tuple[int, int, int]:
    """Largest cell side in [ps, 2ps] giving >= kmax cells inside the margins: (side, rows, cols)."""
    for c in range(2 * ps, ps - 1, -1):
        nr, nc = (h - 2 * margin) // c, (w - 2 * margin) // c
        if nr * nc >= kmax:
            return c, nr, nc
    return ps, max(1, (h - 2 * margin) // ps), max(1, (w - 2 * margin) // ps)


@register('non_eccentricity_patch', NON_ECCENTRICITY_PATCHES, identity=0.0, integer=True, random=True,
          param_name='patches')
def non_eccentricity_patch(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """16x16 patches replaced by the content up to 8 px away (KADID). n: 20 ... 100 per 512x384.

    KADID pastes patches one after the other at random, possibly overlapping, places;
    here the destinations are distinct cells of a jittered grid (cells of 16-32 px, a
    random order per image, the first n used) and sources are read from the input, so
    each extra patch adds damage on fresh pixels and strength is monotone in n. The
    displacement is round(U(-8, 8)) per axis as in KADID, but never (0, 0).
    """
    b, _, h, w = x.shape
    ps = max(2, min(16, h // 4, w // 4))
    margin = ps // 2                                   # |displacement| <= ps/2 keeps sources inside
    counts = [non_eccentricity_count(n, h, w) for n in p.tolist()]
    kmax = non_eccentricity_count(NON_ECCENTRICITY_PATCHES[-1], h, w)   # level-independent draws
    cell, nr, nc = _cell_layout(h, w, ps, margin, kmax)
    ncells = nr * nc
    draws = rand_cpu(gens, (ncells + 4 * kmax,))      # one draw per image keeps streams per image
    order = draws[:, :ncells].argsort(1)               # random cell order per image
    u = draws[:, ncells:].reshape(-1, kmax, 4)
    cid = order[:, torch.arange(kmax) % ncells]
    dy = margin + (cid // nc) * cell + (u[..., 0] * (cell - ps + 1)).floor().long().clamp(max=cell - ps)
    dx = margin + (cid % nc) * cell + (u[..., 1] * (cell - ps + 1)).floor().long().clamp(max=cell - ps)
    oy = ((u[..., 2] - 0.5) * 2 * margin).round().long()
    ox = ((u[..., 3] - 0.5) * 2 * margin).round().long()
    ox = torch.where((oy == 0) & (ox == 0), torch.where(u[..., 3] < 0.5, -1, 1), ox)
    sy, sx = (dy - oy).clamp(0, h - ps), (dx - ox).clamp(0, w - ps)
    y = x.clone()
    cnt = torch.tensor(counts)
    for k in range(max(counts)):
        act = torch.nonzero(cnt > k).flatten()
        _, rs, cs = _patch_index(len(act), sy[act, k].to(x.device), sx[act, k].to(x.device), ps)
        _, rd, cd = _patch_index(len(act), dy[act, k].to(x.device), dx[act, k].to(x.device), ps)
        ia = act.to(x.device).view(-1, 1, 1)
        y[ia, :, rd, cd] = x[ia, :, rs, cs]
    return y


@register('pixelate', PIXELATE_STRENGTH, param_name='strength')
def pixelate(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Nearest down-scale by z = 0.95 - s^0.6 and nearest up-scale (KADID). s: .01, .05, .1, .2, .5."""
    _, _, h, w = x.shape

    def one(xs: torch.Tensor, s: float) -> torch.Tensor:
        z = 0.95 - s ** 0.6
        lo = F.interpolate(xs, size=(max(1, int(z * h)), max(1, int(z * w))), mode='nearest-exact')
        return F.interpolate(lo, size=(h, w), mode='nearest-exact')

    return map_groups(x, p, one)


def _lloyd_thresholds(x: torch.Tensor, n: int, iters: int = 30) -> torch.Tensor:
    """n multi-level thresholds per image minimising within-class variance (what Otsu's
    ``multithresh`` maximises the complement of), by Lloyd-Max on the 256-bin histogram."""
    b = x.shape[0]
    bins = (x.flatten(1) * 255).round_().clamp_(0, 255).long()
    bins += torch.arange(0, 256 * b, 256, device=x.device).view(-1, 1)
    hist = torch.bincount(bins.flatten(), minlength=256 * b).view(b, 256).to(x.dtype)
    v = torch.arange(256, device=x.device, dtype=x.dtype) / 255
    cdf = hist.cumsum(1) / hist.sum(1, keepdim=True)
    qs = torch.arange(1, n + 1, device=x.device, dtype=x.dtype) / (n + 1)
    t = v[torch.searchsorted(cdf.contiguous(), qs.expand(b, n).contiguous()).clamp(max=255)]
    t = t + torch.arange(n, device=x.device, dtype=x.dtype) * 1e-6          # strictly increasing
    for _ in range(iters):
        cls = (v.view(1, -1, 1) > t.view(b, 1, n)).sum(-1)                  # (B, 256) in 0..n
        mass = torch.zeros(b, n + 1, device=x.device, dtype=x.dtype).scatter_add_(1, cls, hist)
        mom = torch.zeros_like(mass).scatter_add_(1, cls, hist * v)
        edges_lo = torch.cat((torch.zeros(b, 1, device=x.device, dtype=x.dtype), t), 1)
        edges_hi = torch.cat((t, torch.ones(b, 1, device=x.device, dtype=x.dtype)), 1)
        cent = torch.where(mass > 0, mom / mass.clamp(min=1e-12), (edges_lo + edges_hi) / 2)
        t = (cent[:, :-1] + cent[:, 1:]) / 2
    return t


@register('quantization', QUANTIZATION_THRESHOLDS, integer=True, param_name='thresholds')
def quantization(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Intensity quantisation with n image-adaptive thresholds (``multithresh``/``imquantize``). n: 20 ... 7.

    As KADID, a value in class k is replaced by the class's upper threshold, the first
    class by 0 and the last by 1 (``values = [0 thresh(2:end) 1]``). Pixels are classified
    by their 8-bit value (KADID works on uint8 images), via a 256-entry table per image.
    """
    def one(xi: torch.Tensor, n: float) -> torch.Tensor:
        n = int(n)
        t = _lloyd_thresholds(xi, n)
        b = xi.shape[0]
        values = torch.cat((torch.zeros(b, 1, device=x.device, dtype=x.dtype), t[:, 1:],
                            torch.ones(b, 1, device=x.device, dtype=x.dtype)), 1)
        # class of each 8-bit level, count(t < v), then a per-image 256-entry lookup table
        levels = torch.arange(256, device=x.device, dtype=x.dtype) / 255
        cls = (levels.view(1, -1, 1) > t.view(b, 1, n)).sum(-1)                 # (b, 256)
        lut = values.gather(1, cls).flatten()
        codes = (xi * 255).round_().clamp_(0, 255).long()
        codes += torch.arange(0, 256 * b, 256, device=x.device).view(-1, 1, 1, 1)
        return lut.index_select(0, codes.flatten()).view_as(xi)

    return map_groups(x, p, one)


def color_block_side(h: int, w: int) -> int:
    """Side of KADID's 32x32 blocks scaled to keep the same area fraction."""
    return max(2, int(round(min(32 * math.sqrt(_area_ratio(h, w)), h, w))))


@register('color_block', COLOR_BLOCKS, identity=0.0, integer=True, random=True, param_name='blocks')
def color_block(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """n opaque uniformly-coloured square blocks at random places (KADID). n: 2, 4, 6, 8, 10."""
    b, _, h, w = x.shape
    side = color_block_side(h, w)
    kmax = int(COLOR_BLOCKS[-1])
    u = rand_cpu(gens, (kmax, 5))                       # level-independent: first n blocks used
    rows = (u[..., 0] * (h - side)).floor().long()
    cols = (u[..., 1] * (w - side)).floor().long()
    colours = u[..., 2:].to(x.device, x.dtype)
    counts = p.long()
    y = x.clone()
    for k in range(int(counts.max())):
        act = torch.nonzero(counts > k).flatten()
        _, rd, cd = _patch_index(len(act), rows[act, k].to(x.device), cols[act, k].to(x.device), side)
        ia = act.to(x.device).view(-1, 1, 1)
        y[ia, :, rd, cd] = colours[act.to(x.device), k].view(-1, 1, 1, 3)
    return y
