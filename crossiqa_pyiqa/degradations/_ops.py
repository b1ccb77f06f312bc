"""Batched torch building blocks: colour spaces (MATLAB conventions) and filters.

KADID-10k's reference code is MATLAB, so conversions follow MATLAB's ``rgb2lab`` (sRGB,
D65), ``rgb2ycbcr`` (BT.601 studio swing for double images), ``rgb2gray``
and ``fspecial`` kernels, and filtering uses replicate borders (``imfilter(...,
'replicate')`` / ``imgaussfilt``). Everything works on (N,C,H,W) tensors on any device.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

# ------------------------------------------------------------------------- colour
# Written with few full-size temporaries: on CPU the cost of these per-pixel chains is
# dominated by memory traffic and allocation, not arithmetic. Branches use ``_select``
# (a float-mask lerp) because ``torch.where`` / ``masked_fill`` on bool masks measured
# 4-8x slower than arithmetic on the CPU build this was tuned on.


def _select(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise ``a if mask else b`` for float tensors, as ``lerp(b, a, float(mask))``."""
    return torch.lerp(b, a, mask.to(b.dtype))

_RGB2XYZ = torch.tensor(((0.4124564, 0.3575761, 0.1804375),
                         (0.2126729, 0.7151522, 0.0721750),
                         (0.0193339, 0.1191920, 0.9503041)), dtype=torch.float64)
_WHITE_D65 = torch.tensor((0.95047, 1.0, 1.08883), dtype=torch.float64)
_DELTA = 6.0 / 29.0
#: f(X/Xn), f(Y/Yn), f(Z/Zn) -> L, a, b (plus 16 on L).
_F2LAB = torch.tensor(((0.0, 116.0, 0.0), (500.0, -500.0, 0.0), (0.0, 200.0, -200.0)), dtype=torch.float64)
_RGB2XYZN = _RGB2XYZ / _WHITE_D65.view(3, 1)                 # white point folded in
_XYZN2RGB = torch.linalg.inv(_RGB2XYZN)
_LAB2F = torch.linalg.inv(_F2LAB)


@functools.lru_cache(maxsize=64)
def _const(name: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return globals()[name].to(device=device, dtype=dtype)


def _mix(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3 matrix over the channel dim of (N,3,H,W) (one batched matmul)."""
    n = x.shape[0]
    return torch.matmul(m.to(x.device, x.dtype), x.reshape(n, 3, -1)).view(x.shape)


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """sRGB decoding of values in [0,1]."""
    t = x.add(0.055).mul_(1 / 1.055).pow_(2.4)
    return _select(x <= 0.04045, x * (1 / 12.92), t)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """sRGB encoding; values are clamped to [0,1] first (every caller clamps its output)."""
    a = x.clamp(0, 1)
    t = a.clamp(min=0.0031308).pow_(1 / 2.4).mul_(1.055).sub_(0.055)
    return _select(a <= 0.0031308, a * 12.92, t)


def rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """sRGB in [0,1] -> CIELAB (L in [0,100]), D65, as MATLAB ``rgb2lab``."""
    xyz = _mix(srgb_to_linear(x), _const('_RGB2XYZN', x.dtype, x.device))
    cube = xyz.clamp(min=_DELTA ** 3).pow_(1 / 3)
    f = _select(xyz > _DELTA ** 3, cube, xyz.mul_(1 / (3 * _DELTA ** 2)).add_(4 / 29))
    lab = _mix(f, _const('_F2LAB', x.dtype, x.device))
    lab[:, 0] -= 16
    return lab


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIELAB -> sRGB, out-of-gamut colours clipped to [0,1] (MATLAB ``lab2rgb`` + clip)."""
    shifted = lab.clone()
    shifted[:, 0] += 16
    f = _mix(shifted, _const('_LAB2F', lab.dtype, lab.device))
    lin = _select(f > _DELTA, f * f * f, f.sub(4 / 29).mul_(3 * _DELTA ** 2))
    return linear_to_srgb(_mix(lin, _const('_XYZN2RGB', lab.dtype, lab.device)))


_RGB2YCBCR = torch.tensor(((65.481, 128.553, 24.966),
                           (-37.797, -74.203, 112.0),
                           (112.0, -93.786, -18.214)), dtype=torch.float64) / 255.0
_YCBCR_OFFSET = (16 / 255, 128 / 255, 128 / 255)


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """RGB in [0,1] -> YCbCr as MATLAB ``rgb2ycbcr`` on double images (Y in [16,235]/255)."""
    off = torch.tensor(_YCBCR_OFFSET, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return _mix(x, _RGB2YCBCR) + off


def ycbcr_to_rgb(y: torch.Tensor) -> torch.Tensor:
    off = torch.tensor(_YCBCR_OFFSET, device=y.device, dtype=y.dtype).view(1, 3, 1, 1)
    return _mix(y - off, torch.linalg.inv(_RGB2YCBCR))


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) -> (N,1,H,W) luma, MATLAB ``rgb2gray`` weights."""
    w = torch.tensor((0.2989, 0.5870, 0.1140), device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


# ------------------------------------------------------------------------- kernels

def gaussian_kernel1d(sigma: float, radius: int | None = None, *, dtype=torch.float64,
                      device=None) -> torch.Tensor:
    """1-D slice of MATLAB ``fspecial('gaussian')``; default support ``2*ceil(2*sigma)+1``
    (``imgaussfilt``'s default filter size)."""
    if radius is None:
        radius = int(math.ceil(2 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    h = torch.exp(-t ** 2 / (2 * max(sigma, 1e-12) ** 2))
    h[h < torch.finfo(torch.float64).eps * h.max()] = 0
    return (h / h.sum()).to(device=device, dtype=dtype)


def disk_kernel(radius: float, *, supersample: int = 33, dtype=torch.float64,
                device=None) -> torch.Tensor:
    """Anti-aliased disk (MATLAB ``fspecial('disk')``): each tap is the fraction of its pixel
    covered by the disk, computed by supersampling (exact up to ~1/supersample^2)."""
    crad = max(int(math.ceil(radius - 0.5)), 0)
    n = 2 * crad + 1
    s = supersample
    sub = (torch.arange(s, dtype=torch.float64) + 0.5) / s - 0.5
    c = torch.arange(-crad, crad + 1, dtype=torch.float64)
    pos = (c[:, None] + sub[None, :]).flatten()          # n*s sub-sample coordinates
    inside = (pos[:, None] ** 2 + pos[None, :] ** 2) <= radius ** 2
    cover = inside.double().view(n, s, n, s).mean((1, 3))
    if cover.sum() == 0:
        cover[crad, crad] = 1.0
    return (cover / cover.sum()).to(device=device, dtype=dtype)


def line_kernel(length: float, angle: float, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """Anti-aliased straight-line PSF (``fspecial('motion')``-like): the segment of the given
    length through the centre at ``angle`` radians, splatted bilinearly and normalised.
    Odd square support, so kernels of different angles share a centre."""
    half = max(length - 1, 0) / 2
    r = int(math.ceil(half)) + 1
    n = 2 * r + 1
    k = torch.zeros(n, n, dtype=torch.float64)
    m = max(int(math.ceil(length * 8)), 1)
    t = torch.linspace(-half, half, m, dtype=torch.float64) if m > 1 else torch.zeros(1, dtype=torch.float64)
    xs, ys = r + t * math.cos(angle), r - t * math.sin(angle)
    x0, y0 = xs.floor(), ys.floor()
    fx, fy = xs - x0, ys - y0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                      (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi = (x0 + dx).long().clamp(0, n - 1)
        yi = (y0 + dy).long().clamp(0, n - 1)
        k.index_put_((yi, xi), w, accumulate=True)
    return (k / k.sum()).to(device=device, dtype=dtype)


# ------------------------------------------------------------------------- filtering

@functools.lru_cache(maxsize=256)
def _band_matrix(n: int, taps: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n, n) matrix M with ``(v @ M)[i] = sum_j taps[j] * v[clamp(i + j - r)]``: 1-D
    correlation with replicate borders as one matrix product."""
    r = (len(taps) - 1) // 2
    i = torch.arange(n).view(-1, 1)
    j = torch.arange(len(taps)).view(1, -1)
    src = (i + j - r).clamp(0, n - 1)                      # (n, K) source index per output/tap
    m = torch.zeros(n, n, dtype=torch.float64)
    m.index_put_((src.flatten(), i.expand_as(src).flatten()),
                 torch.tensor(taps, dtype=torch.float64).repeat(n), accumulate=True)
    return m.to(device=device, dtype=dtype)


#: Up to this many taps a 1-D pass is a depthwise conv, beyond it a banded matmul.
_DEPTHWISE_MAX_TAPS = 41
#: Up to this many taps a 2-D kernel is a depthwise conv, beyond it FFT.
_DEPTHWISE_MAX_AREA = 25 * 25


def _depthwise(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Correlate channel c of image n of (N,C,H,W) with ``w[n]`` ((N,kh,kw)), replicate borders.

    One grouped conv over all N*C planes: on CPU oneDNN's depthwise kernels are an order of
    magnitude faster than ``conv2d`` on (N*C,1,H,W), which takes a generic slow path.
    """
    n, c, h, wd = x.shape
    kh, kw = w.shape[-2:]
    y = F.pad(x.reshape(1, n * c, h, wd), (kw // 2, kw // 2, kh // 2, kh // 2), mode='replicate')
    wt = w.to(x.device, x.dtype).repeat_interleave(c, 0).unsqueeze(1)     # (N*C, 1, kh, kw)
    return F.conv2d(y, wt, groups=n * c).view(n, c, h, wd)


def conv_separable(x: torch.Tensor, k: torch.Tensor, k_rows: torch.Tensor | None = None) -> torch.Tensor:
    """Filter every channel of (N,C,H,W) with the separable kernel ``k_rows`` x ``k``
    (``k_rows`` defaults to ``k``; symmetric odd kernels, replicate borders).

    Two depthwise 1-D convolutions for kernels up to 41 taps; beyond, two dense matrix
    products with banded matrices that fold the borders in (O(H + W) per pixel whatever the
    kernel size, run by BLAS).
    """
    kr = k if k_rows is None else k_rows
    n = x.shape[0]
    if max(k.numel(), kr.numel()) <= _DEPTHWISE_MAX_TAPS:
        y = x
        if kr.numel() > 1:
            y = _depthwise(y, kr.view(1, -1, 1).expand(n, -1, 1))
        if k.numel() > 1:
            y = _depthwise(y, k.view(1, 1, -1).expand(n, 1, -1))
        return y.clone() if y is x else y
    h, w = x.shape[-2:]
    mw = _band_matrix(w, tuple(k.double().tolist()), x.dtype, x.device)
    mh = _band_matrix(h, tuple(kr.double().tolist()), x.dtype, x.device)
    return torch.matmul(mh.t(), torch.matmul(x, mw))


def filter2d(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Filter every channel of (N,C,H,W) with one 2-D odd-sized kernel (replicate borders)."""
    return filter2d_per_image(x, k.expand(x.shape[0], *k.shape))


def filter2d_per_image(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Convolve image ``i`` of (N,C,H,W) with its own odd-sized kernel ``k[i]`` (replicate
    borders): depthwise conv up to 25x25 taps, FFT beyond."""
    kh, kw = k.shape[-2:]
    if kh * kw > _DEPTHWISE_MAX_AREA:
        return filter2d_fft(x, k)
    return _depthwise(x, k.flip(-2, -1))


def _fft_size(n: int) -> int:
    """Smallest 5-smooth integer >= n (fast FFT length)."""
    while True:
        m = n
        for f in (2, 3, 5):
            while m % f == 0:
                m //= f
        if m == 1:
            return n
        n += 1


def filter2d_fft(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per-image 2-D convolution, ``k`` of shape (N,kh,kw), via FFT on a replicate-padded
    canvas of a fast FFT size (cost independent of the kernel size)."""
    n, c, h, w = x.shape
    kh, kw = k.shape[-2:]
    ph, pw = kh // 2, kw // 2
    H, W = _fft_size(h + 2 * ph), _fft_size(w + 2 * pw)
    xp = F.pad(x.reshape(1, n * c, h, w), (pw, W - w - pw, ph, H - h - ph), mode='replicate').view(n, c, H, W)
    cdtype = x.dtype if x.dtype == torch.float64 else torch.float32
    kk = torch.zeros(n, H, W, device=x.device, dtype=cdtype)
    kk[:, :kh, :kw] = k.to(x.device, cdtype)
    kk = torch.roll(kk, shifts=(-ph, -pw), dims=(1, 2))   # centre the kernel at (0, 0)
    y = torch.fft.irfft2(torch.fft.rfft2(xp.to(cdtype)) * torch.fft.rfft2(kk).unsqueeze(1), s=(H, W))
    return y[..., ph:ph + h, pw:pw + w].to(x.dtype).contiguous()


def gaussian_blur(x: torch.Tensor, sigma: float, radius: int | None = None) -> torch.Tensor:
    """``imgaussfilt``-style blur of every channel (separable, replicate borders)."""
    if sigma <= 0:
        return x.clone()
    return conv_separable(x, gaussian_kernel1d(sigma, radius, dtype=x.dtype, device=x.device))


def box_mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over (2r+1)^2 windows with replicate borders (guided-filter building block)."""
    if r <= 0:
        return x
    return conv_separable(x, torch.full((2 * r + 1,), 1.0 / (2 * r + 1), dtype=torch.float64))
