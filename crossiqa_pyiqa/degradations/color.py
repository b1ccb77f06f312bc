"""Colour family (KADID types 4-8): diffusion, shift, quantisation, two saturations.

Colour conversions are MATLAB-convention torch ports (:mod:`._ops`), so everything stays
batched and on the input's device.
"""
from __future__ import annotations

import torch

from crossiqa_pyiqa.degradations._core import Generators, map_groups, per_image, rand, rand_cpu, register
from crossiqa_pyiqa.degradations._core import unique_groups
from crossiqa_pyiqa.degradations._ops import gaussian_blur, lab_to_rgb, rgb_to_gray, rgb_to_lab

#: KADID ``amount``; chroma blur sigma = 1.5*amount + 2 and chroma gain = amount.
DIFFUSION_AMOUNT = (1.0, 3.0, 6.0, 8.0, 12.0)
#: KADID shift length (px) of the green channel.
SHIFT_AMOUNT = (1.0, 3.0, 6.0, 8.0, 12.0)
#: KADID palette size (``rgb2ind(im, n)``).
QUANT_COLORS = (64, 48, 32, 16, 8)
#: KADID HSV saturation factor (negative = complementary hues).
SATURATION1_FACTOR = (0.4, 0.2, 0.1, 0.0, -0.4)
#: Lab chroma factor. KADID: [1, 2, 3, 6, 9]; factor 1 is the identity, so level 1 uses 1.5.
SATURATION2_FACTOR = (1.5, 2.0, 3.0, 6.0, 9.0)

_KMEANS_SAMPLES = 2048
_KMEANS_ITERS = 6


@register('color_diffusion', DIFFUSION_AMOUNT, param_name='amount')
def color_diffusion(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Colour bleeding: blur Lab a*/b* (sigma 1.5a+2) and amplify them by a, keep L. a: 1, 3, 6, 8, 12.

    Follows the public KADID ports (chroma multiplied by ``amount`` after the blur), so high
    levels are also strongly over-saturated.
    """
    lab = rgb_to_lab(x)
    ab = map_groups(lab[:, 1:], p, lambda c, a: gaussian_blur(c, 1.5 * a + 2).mul_(a))
    return lab_to_rgb(torch.cat((lab[:, :1], ab), 1))


def _edge_weight(x: torch.Tensor) -> torch.Tensor:
    """Smoothed gradient magnitude in [0,1] with 1% tails clipped: where the shift shows."""
    g = torch.nn.functional.pad(rgb_to_gray(x), (1, 1, 1, 1), mode='replicate')
    gx = (g[..., 1:-1, 2:] - g[..., 1:-1, :-2]) / 2
    gy = (g[..., 2:, 1:-1] - g[..., :-2, 1:-1]) / 2
    e = gaussian_blur(torch.sqrt(gx ** 2 + gy ** 2), 4.0)
    flat = e.flatten(1)
    n = flat.shape[1]
    lo = flat.kthvalue(max(1, int(round(0.01 * n))), dim=1).values.view(-1, 1, 1, 1)
    hi = flat.kthvalue(max(1, int(round(0.99 * n))), dim=1).values.view(-1, 1, 1, 1)
    return ((e.clamp(lo, hi) - lo) / (hi - lo).clamp(min=1e-12))


@register('color_shift', SHIFT_AMOUNT, identity=0.0, random=True, param_name='amount')
def color_shift(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Chromatic misregistration: green shifted by `amount` px, blended in at edges. 1, 3, 6, 8, 12.

    As KADID: the shift vector is ``round(a/|a| * amount)`` with ``a ~ U[0,1)^2`` (first
    quadrant), the blend weight the smoothed, percentile-clipped gradient magnitude.
    """
    b, _, h, w = x.shape
    a = rand_cpu(gens, (2,))
    vec = torch.round(a / a.norm(dim=1, keepdim=True).clamp(min=1e-12) * p[:, None]).long()
    dev = x.device
    rows = (torch.arange(h)[None] - vec[:, 1:2]).clamp(0, h - 1).to(dev)
    cols = (torch.arange(w)[None] - vec[:, 0:1]).clamp(0, w - 1).to(dev)
    g = x[:, 1]
    shifted = g.gather(1, rows[:, :, None].expand(b, h, w)).gather(2, cols[:, None, :].expand(b, h, w))
    e = _edge_weight(x)[:, 0]
    out = x.clone()
    out[:, 1] = shifted * e + g * (1 - e)
    return out


def _nearest(pts: torch.Tensor, cent: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid, (B,N,3) x (B,K,3) -> (B,N): argmin |c|^2 - 2<x,c>
    as one batched GEMM (no square roots, no N x K x 3 temporaries)."""
    c2 = (cent * cent).sum(-1).unsqueeze(1)
    return torch.baddbmm(c2, pts, cent.transpose(1, 2), alpha=-2).argmin(-1)


@register('color_quantization', QUANT_COLORS, integer=True, random=True, param_name='colors')
def color_quantization(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Palette reduction to n colours (``rgb2ind``): batched k-means in RGB. n: 64, 48, 32, 16, 8.

    MATLAB's minimum-variance quantiser is approximated by 6 Lloyd iterations on 2048
    random pixels (initialised at the first n of them, so smaller palettes start from a
    subset); no dithering (Floyd-Steinberg is sequential per pixel).
    """
    b, c, h, w = x.shape
    flat = x.flatten(2).transpose(1, 2)                                   # (B, HW, 3)
    s = min(_KMEANS_SAMPLES, h * w)
    pick = (rand(gens, (s,), flat) * (h * w)).long().clamp_(max=h * w - 1)
    pts = flat.gather(1, pick[..., None].expand(b, s, 3))
    out = torch.empty_like(x)
    for k, idx in unique_groups(p):
        k = int(k)
        pg = pts[idx]
        cent = pg[:, :k].clone()
        ones = torch.ones(pg.shape[:2], device=x.device, dtype=x.dtype)
        for _ in range(_KMEANS_ITERS):
            assign = _nearest(pg, cent)
            sums = torch.zeros_like(cent).scatter_add_(1, assign[..., None].expand(-1, -1, 3), pg)
            cnt = torch.zeros(cent.shape[:2], device=x.device, dtype=x.dtype).scatter_add_(1, assign, ones)
            cent = torch.lerp(cent, sums / cnt.clamp(min=1)[..., None], (cnt[..., None] > 0).to(x.dtype))
        fg = flat[idx]
        labels = torch.empty(fg.shape[:2], dtype=torch.long, device=x.device)
        chunk = 512                       # keeps the (B, chunk, k) score block in cache
        for j in range(0, h * w, chunk):
            labels[:, j:j + chunk] = _nearest(fg[:, j:j + chunk], cent)
        q = cent.gather(1, labels[..., None].expand(-1, -1, 3))
        out[idx] = q.transpose(1, 2).reshape(len(idx), c, h, w)
    return out


@register('color_saturation_1', SATURATION1_FACTOR, identity=1.0, param_name='factor')
def color_saturation_1(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Desaturation: HSV saturation times f (f < 0 flips hues). f: 0.4, 0.2, 0.1, 0, -0.4.

    HSV->RGB is linear in S at fixed H and V (channel = V - V*S*g(H)), so scaling S by f
    is exactly ``V + f * (RGB - V)`` with V the channel maximum: no HSV round trip.
    """
    v = x.amax(1, keepdim=True)
    return torch.lerp(v.expand_as(x), x, per_image(p, x))


@register('color_saturation_2', SATURATION2_FACTOR, identity=1.0, param_name='factor')
def color_saturation_2(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Over-saturation: Lab a*, b* times f (out-of-gamut clipped). f: 1.5, 2, 3, 6, 9."""
    lab = rgb_to_lab(x)
    lab = torch.cat((lab[:, :1], lab[:, 1:] * per_image(p, x)), 1)
    return lab_to_rgb(lab)
