"""Camera family (beyond KADID-10k): degradations made the way a camera makes them.

Eight types, five levels each, registered after the 25 KADID types
(``CAMERA_DEGRADATIONS``):

* ``camera_noise``: sensor noise through a simulated camera pipeline: sRGB -> linear ->
  camera RGB (inverse colour matrix) -> white balance undone -> RGGB Bayer mosaic ->
  shot + read noise at an ISO ladder -> Bayer-domain denoising -> white balance ->
  Malvar-He-Cutler demosaicing -> colour matrix -> sRGB -> luma denoising and sharpening,
  chroma smoothing at half resolution -> JPEG. Demosaicing and the in-camera denoising
  leave spatially correlated grain with chroma blotches, as in real camera JPEGs.
* ``camera_grain``: the same pipeline with the light denoising of large-sensor camera
  JPEGs (no Bayer-domain denoising, most luma grain kept), at lower ISO: grain without the
  softening that comes with phone-style denoising. Registered last (the sampler's order).
* ``low_light``: the same pipeline on an under-exposed raw brought back up by digital gain
  (read noise dominates the shadows), with the black crush and desaturation phones apply.
* ``overexposure`` / ``underexposure``: exposure in linear light with clipping at white /
  8-bit quantisation of the dark encoded image.
* ``white_balance``: colour cast by per-channel gains in linear light.
* ``path_motion_blur``: camera shake along a random smooth trajectory (Boracchi & Foi 2012).
* ``defocus``: soft-edged disk PSF in linear light (highlights bloom into discs).

Noise fields, trajectories and cast directions are drawn per image, independently of the
level (common random numbers), so at a fixed seed a stronger level is the same field /
path / direction, stronger. On CPU (these run inside a training loop) the code is written
for memory traffic, which dominates there: in-place arithmetic, elementwise chains run on
blocks of images small enough to stay in cache, sRGB curves as polynomials, small filters
as shifted adds; docs/DEGRADATIONS.md has the measurements.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from crossiqa_pyiqa.degradations._core import Generators, map_groups, per_image, rand_cpu, randn, register
from crossiqa_pyiqa.degradations._ops import filter2d, filter2d_per_image, gaussian_kernel1d
from crossiqa_pyiqa.degradations.compression import _jpeg, _roundtrip

# ----------------------------------------------------------------------------- sRGB curve

_DEC_KNEE = 0.04045      # sRGB value where the decoding curve turns linear
_ENC_KNEE = 0.0031308    # linear value where the encoding curve turns linear
#: ((x + 0.055) / 1.055)^2.4 on [0.04045, 1] as a degree-6 polynomial in x: a near-minimax
#: fit (Lawson's iteration on least squares) plus a linear correction that makes it exact
#: at both ends (so black stays exactly 0 and white 1); max error 1.1e-5. Constant term first.
_DEC_POLY = (0.0009035462585, 0.03325554366, 0.5106973873, 0.719460202, -0.4385506883,
             0.2298438879, -0.05560987882)
#: 1.055 L^(1/2.4) - 0.055 on [0.0031308, 1] as a degree-5 polynomial in q = L^(1/4)
#: (smooth in q, unlike in L), fitted the same way; exact at both ends, max error 1.4e-5.
_ENC_POLY = (-0.06133459015, 0.1620369736, 1.255361024, -0.5774019344, 0.2894631832,
             -0.0681246562)


def _horner(t: torch.Tensor, coef: tuple[float, ...]) -> torch.Tensor:
    """Evaluate the polynomial in place on ``t`` (cheap multiply-adds instead of pow)."""
    y = t.mul(coef[-1]).add_(coef[-2])
    for c in reversed(coef[:-2]):
        y.mul_(t).add_(c)
    return y


def to_linear(x: torch.Tensor) -> torch.Tensor:
    """sRGB decoding, the curve of ``_ops.srgb_to_linear`` to within 1.1e-5: the power segment
    (as a polynomial) at max(x, knee) plus the linear segment's remainder min(x - knee, 0)/12.92
    (the segments meet at the knee). Returns a contiguous tensor even for a strided view.
    Several times faster than the exact pow on CPU."""
    t = torch.clamp(x, min=_DEC_KNEE, out=x.new_empty(x.shape))
    y = _horner(t, _DEC_POLY)
    return y.add_(torch.clamp(x, max=_DEC_KNEE, out=t).sub_(_DEC_KNEE), alpha=1 / 12.92)


def to_srgb(lin: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """sRGB encoding of linear values clamped to [0, 1], the curve of ``_ops.linear_to_srgb``
    to within 1.4e-5 (branch-free like :func:`to_linear`); ``inplace`` overwrites ``lin``."""
    a = lin.clamp_(0, 1) if inplace else lin.clamp(0, 1)
    q = a.clamp(min=_ENC_KNEE).sqrt_().sqrt_()
    y = _horner(q, _ENC_POLY)
    return y.add_(a.clamp_(max=_ENC_KNEE).sub_(_ENC_KNEE), alpha=12.92)


#: Rec. 709 / sRGB luminance weights (linear light).
_LUMA = (0.2126, 0.7152, 0.0722)


def luminance(lin: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) linear RGB -> (N,1,H,W) relative luminance Y."""
    return (lin[:, 0:1] * _LUMA[0]).add_(lin[:, 1:2], alpha=_LUMA[1]).add_(lin[:, 2:3], alpha=_LUMA[2])


# ----------------------------------------------------------------------------- camera model

#: linear sRGB -> camera RGB: the mean of the four camera matrices of Brooks et al. 2019
#: ("Unprocessing images for learned raw denoising"; XYZ->camera times sRGB->XYZ), rows
#: normalised to 1 so white stays white. All entries are positive (the camera's colour
#: filters overlap); its inverse, the in-camera colour matrix (CCM), has diagonal 1.4-1.6
#: and negative off-diagonals, which amplifies and cross-correlates the noise.
_RGB2CAM = torch.tensor(((0.6460, 0.2714, 0.0826),
                         (0.0826, 0.7558, 0.1617),
                         (0.0145, 0.2250, 0.7604)), dtype=torch.float64)
_RGB2CAM = _RGB2CAM / _RGB2CAM.sum(1, keepdim=True)
#: White-balance gains (R, G, B) the camera applied (daylight-like; Brooks et al. draw
#: R in [1.9, 2.4], B in [1.5, 1.9]).
_WB = torch.tensor((2.0, 1.0, 1.5), dtype=torch.float64)
#: linear sRGB -> raw (white balance undone): the values the sensor recorded.
_RGB2RAW = torch.diag(1 / _WB) @ _RGB2CAM
#: white-balanced camera RGB -> linear sRGB: the colour matrix (CCM).
_CAM2RGB = torch.linalg.inv(_RGB2CAM)
#: Linear luminance (Rec. 709 weights) of demosaiced camera RGB: CCM and luminance weights
#: folded into one row.
_CAM2LUMA = (torch.tensor(_LUMA, dtype=torch.float64) @ _CAM2RGB).tolist()

#: RGGB Bayer pattern: (row phase, column phase, colour) of planes R, G1 (R rows), G2 (B rows), B.
_CFA = ((0, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 2))
#: (1, RGB, site, 1, 1): weight of linear R, G, B in the raw value of each Bayer site.
_SITE_WEIGHTS = torch.stack([_RGB2RAW[c] for _, _, c in _CFA], 1).view(1, 3, 4, 1, 1)
#: (1, site, 1, 1): white-balance gain of each Bayer site.
_SITE_WB = torch.stack([_WB[c] for _, _, c in _CFA]).view(1, 4, 1, 1)


@functools.lru_cache(maxsize=32)
def _const_cached(name: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return globals()[name].to(device=device, dtype=dtype)


def _const(name: str, like: torch.Tensor) -> torch.Tensor:
    return _const_cached(name, like.dtype, like.device)


#: Shot-noise variance per unit signal at ISO 100 (raw signal in [0, 1]): variance = a*s + b.
#: a = 2e-4 * ISO/100 reaches 0.0128 at ISO 6400, the top of the range Brooks et al.
#: fitted to phone raw noise profiles (1e-4 ... 0.012).
_SHOT_PER_ISO100 = 2e-4


def read_variance(shot: torch.Tensor) -> torch.Tensor:
    """Read-noise variance from the shot-noise gain by Brooks et al.'s fit to phone sensors,
    log(b) = 2.18 log(a) + 1.20 (their per-sample scatter of 0.26 in log(b) is left out)."""
    return torch.exp(2.18 * torch.log(shot) + 1.20)


def _site_value(planes: torch.Tensor, py: int, px: int, oy: int, ox: int, h: int, w: int) -> torch.Tensor:
    """View of the mosaic at full-resolution offset (oy, ox) from every site of phase (py, px):
    ``planes`` (N,4,h+2,w+2) are the four CFA planes with a one-site border."""
    ty, tx = py + oy, px + ox
    k = 2 * (ty % 2) + tx % 2
    dy, dx = ty // 2, tx // 2
    return planes[:, k, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]


def _sum(views) -> torch.Tensor:
    out = views[0].clone()
    for v in views[1:]:
        out.add_(v)
    return out


def demosaic_mhc(planes: torch.Tensor) -> torch.Tensor:
    """Malvar-He-Cutler (2004) demosaicing of an RGGB mosaic given as its four planes
    (N,4,h+2,w+2) (R, G1, G2, B, each with a one-site border): returns (N,3,4,h,w), the
    R, G, B values at each of the four sites of every 2x2 cell (interior only).

    MHC is bilinear interpolation plus a Laplacian correction from the known colour at
    the site (gains 1/2 for G, 5/8 for R/B at G sites, 3/4 for R/B at B/R sites); written
    as shifted plane views (no convolution), sharing the Laplacian terms between the two
    missing colours of a site.
    """
    n, _, hp, wp = planes.shape
    h, w = hp - 2, wp - 2
    out = planes.new_empty(n, 3, 4, h, w)

    def at(py, px, oy, ox):
        return _site_value(planes, py, px, oy, ox, h, w)

    for k, (py, px, c) in enumerate(_CFA):
        centre = at(py, px, 0, 0)
        out[:, c, k] = centre
        if c != 1:            # R or B site: G on the axes, the other colour on the diagonals
            lap = _sum([at(py, px, 0, -2), at(py, px, 0, 2), at(py, px, -2, 0), at(py, px, 2, 0)])
            lap.mul_(-0.25).add_(centre)                                   # centre - mean(axis +-2)
            g = _sum([at(py, px, 0, -1), at(py, px, 0, 1), at(py, px, -1, 0), at(py, px, 1, 0)])
            out[:, 1, k] = g.mul_(0.25).add_(lap, alpha=0.5)
            o = _sum([at(py, px, -1, -1), at(py, px, -1, 1), at(py, px, 1, -1), at(py, px, 1, 1)])
            out[:, 2 - c, k] = o.mul_(0.25).add_(lap, alpha=0.75)
        else:                 # G site: one colour left/right, the other above/below
            s = _sum([at(py, px, -1, -1), at(py, px, -1, 1), at(py, px, 1, -1), at(py, px, 1, 1)])
            s.mul_(-1).add_(centre, alpha=5)                               # 5 G - diagonals
            hh = at(py, px, 0, -2) + at(py, px, 0, 2)
            vv = at(py, px, -2, 0) + at(py, px, 2, 0)
            corr_h = (s - hh).add_(vv, alpha=0.5).mul_(1 / 8)              # for the colour left/right
            corr_v = s.sub_(vv).add_(hh, alpha=0.5).mul_(1 / 8)            # for the colour above/below
            horiz = (at(py, px, 0, -1) + at(py, px, 0, 1)).mul_(0.5).add_(corr_h)
            vert = (at(py, px, -1, 0) + at(py, px, 1, 0)).mul_(0.5).add_(corr_v)
            c_h, c_v = (0, 2) if py == 0 else (2, 0)                       # R rows: R left/right
            out[:, c_h, k] = horiz
            out[:, c_v, k] = vert
    return out


def _mix_planes(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(k,3) matrix ``m`` over dim 1 of (N,3,...) -> (N,k,...)."""
    n = x.shape[0]
    return torch.matmul(m.to(x.device, x.dtype), x.reshape(n, 3, -1)).view(n, m.shape[0], *x.shape[2:])


#: Images per block on CPU. Chains of elementwise ops (sRGB curves, exposure, colour gains,
#: small filters) run 2 images at a time so their temporaries stay in cache (measured 2-3x
#: faster than whole-batch passes over memory); the camera pipeline, many small ops per
#: image, runs 8 at a time (smaller blocks pay more per-op overhead than they save);
#: convolutions run on the whole batch (one set-up). On GPUs everything is one block.
_CPU_CHUNK = 2
_CPU_BLOCK = 8


def _blocks(x: torch.Tensor, step: int = _CPU_CHUNK) -> list[slice]:
    n = x.shape[0]
    step = step if x.device.type == 'cpu' else n
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def _blocked(fn, x: torch.Tensor, *per_image_args: torch.Tensor, step: int = _CPU_CHUNK) -> torch.Tensor:
    """``fn(x[block], *(a[block] for a in per_image_args))`` for each block of ``step`` images;
    ``fn`` returns a tensor of one shape per image (it need not be ``x``'s)."""
    blocks = _blocks(x, step)
    if len(blocks) == 1:
        return fn(x, *per_image_args)
    first = fn(x[blocks[0]], *(a[blocks[0]] for a in per_image_args))
    out = first.new_empty((x.shape[0], *first.shape[1:]))
    out[blocks[0]] = first
    for sl in blocks[1:]:
        out[sl] = fn(x[sl], *(a[sl] for a in per_image_args))
    return out


def _pixel_shuffle(planes: torch.Tensor) -> torch.Tensor:
    """(N,4,h,w) Bayer-site planes -> (N,1,2h,2w) image (``F.pixel_shuffle(planes, 2)``, as
    one strided copy: ~4x faster on CPU)."""
    n, _, h, w = planes.shape
    return planes.view(n, 1, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(n, 1, 2 * h, 2 * w)


def _upsample2(x: torch.Tensor) -> torch.Tensor:
    """2x bilinear upsampling of (N,C,h,w) (``F.interpolate(..., scale_factor=2, mode='bilinear',
    align_corners=False)``: taps 3/4, 1/4, replicate borders) as shifted adds written into
    interleaved views, several times faster on CPU."""
    n, c, h, w = x.shape
    p = F.pad(x, (1, 1, 1, 1), mode='replicate')
    rows = x.new_empty(n, c, h, 2, w + 2)
    mid = p[..., 1:-1, :]
    torch.add(mid, p[..., :-2, :], alpha=1 / 3, out=rows[..., 0, :]).mul_(0.75)
    torch.add(mid, p[..., 2:, :], alpha=1 / 3, out=rows[..., 1, :]).mul_(0.75)
    rows = rows.view(n, c, 2 * h, w + 2)
    out = x.new_empty(n, c, 2 * h, w, 2)
    mid = rows[..., 1:-1]
    torch.add(mid, rows[..., :-2], alpha=1 / 3, out=out[..., 0]).mul_(0.75)
    torch.add(mid, rows[..., 2:], alpha=1 / 3, out=out[..., 1]).mul_(0.75)
    return out.view(n, c, 2 * h, 2 * w)


def _binomial3(x: torch.Tensor) -> torch.Tensor:
    """3x3 binomial blur ([1,2,1]/4 both ways) of every channel of (N,C,H,W), replicate
    borders, as shifted adds (about 2x faster than a depthwise convolution for 3 taps)."""
    p = F.pad(x, (1, 1, 1, 1), mode='replicate')
    r = torch.add(p[..., :-2, :], p[..., 2:, :]).add_(p[..., 1:-1, :], alpha=2)
    return torch.add(r[..., :-2], r[..., 2:]).add_(r[..., 1:-1], alpha=2).mul_(1 / 16)


def _gaussian_small(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (``_ops.gaussian_kernel1d`` taps, replicate borders) as shifted
    adds: for the small chroma planes this avoids the convolution's per-call setup, which
    dominates there."""
    k = gaussian_kernel1d(sigma).tolist()
    r = len(k) // 2
    y = x
    for dim in (-2, -1):
        size = y.shape[dim]
        pad = (0, 0, r, r) if dim == -2 else (r, r, 0, 0)
        p = F.pad(y, pad, mode='replicate')
        y = p.narrow(dim, r, size) * k[r]
        for i in range(1, r + 1):
            y.add_(torch.add(p.narrow(dim, r - i, size), p.narrow(dim, r + i, size)), alpha=k[r + i])
    return y


#: Bayer-domain denoising: fraction of each CFA plane's 3x3 high-pass kept where it is
#: within the noise (raw noise is Gaussian there, so the threshold is well calibrated).
_RAW_KEEP = 0.25
_RAW_CORING = 3.0
#: Variance of the 3x3 binomial high-pass of white noise, per unit noise variance.
_HIGHPASS_VAR = 1 - 2 * 0.25 + 0.375 ** 2
#: YCbCr stage: fraction of the luma high-pass kept where it is below the noise level (0
#: would flatten, 1 keep all grain), unsharp-mask amount where it is above, and the
#: threshold in units of the (pre-denoising) noise variance.
_LUMA_KEEP = 0.5
_SHARPEN = 0.4
_CORING = 1.0
#: Encoded values below this are treated as this dark when estimating the noise level.
_NOISE_FLOOR = 0.03
#: Exponent of the power law standing in for the sRGB curve in the noise estimate.
_GAMMA = 2.25


def _encoded_noise_var(mean: torch.Tensor, shot: torch.Tensor, read: torch.Tensor) -> torch.Tensor:
    """Expected noise variance of encoded (sRGB) values around an encoded local mean E, for raw
    variance a * L + b at linear value L: the raw variance times the squared slope of the
    encoding, with the curve approximated by L = E^2.25 (slope E^-1.25 / 2.25), i.e.
    shot * E^-0.25 + read * E^-2.5 with ``shot`` = a / 2.25^2, ``read`` = b / 2.25^2 (per-image
    (N,1,1,1) tensors), from square roots only. Overwrites ``mean``."""
    r = mean.clamp_(min=_NOISE_FLOOR).sqrt_()                             # E^1/2
    var = r.rsqrt().mul_(shot)                                            # shot * E^-1/4
    r5 = r * r
    r5.mul_(r5).mul_(r).reciprocal_()                                     # E^-5/2
    return var.addcmul_(r5, read)


def _coring(x: torch.Tensor, noise_var, keep: float, boost: float = 1.0) -> torch.Tensor:
    """Edge-aware denoise (+ sharpening): ``x``'s 3x3 binomial high-pass h is scaled by
    keep + (boost - keep) * e / (e + v), i.e. by ``keep`` where it is within the noise and by
    ``boost`` (> 1: unsharp masking) at edges. e is the local (3x3 binomial) mean of h^2,
    so an isolated noise spike does not count as an edge (pointwise h^2 would keep the
    spikes and leave salt-and-pepper dots); v = ``noise_var(local mean)`` (a new tensor)
    is the threshold. Overwrites ``x``."""
    blur = _binomial3(x)
    v = noise_var(blur)
    high = x.sub_(blur)
    energy = _binomial3(high * high)
    gain = energy.div_(v.add_(energy).clamp_(min=1e-12))
    gain.mul_(boost - keep).add_(keep)
    return blur.addcmul_(high, gain)


def _cfa_border(interior: torch.Tensor) -> torch.Tensor:
    """(N,4,h,w) CFA planes of an even-sized mosaic -> (N,4,h+2,w+2) with a one-site border:
    the planes of the full-resolution mosaic mirrored about its first / last row and column
    (reflect for the planes whose sites are 2 px from the mirror line, replicate for those
    1 px from it), so every border site keeps its colour."""
    n, _, h, w = interior.shape
    out = interior.new_empty(n, 4, h + 2, w + 2)
    out[:, :, 1:-1, 1:-1] = interior
    for k, (py, px, _) in enumerate(_CFA):
        o = out[:, k]
        o[:, 0, 1:-1] = o[:, 2 - py, 1:-1]
        o[:, h + 1, 1:-1] = o[:, h - py, 1:-1]
        o[:, :, 0] = o[:, :, 2 - px]
        o[:, :, w + 1] = o[:, :, w - px]
    return out


def _develop(x: torch.Tensor, noise: torch.Tensor, luma_out: torch.Tensor, chroma_out: torch.Tensor,
             q: dict[str, torch.Tensor]) -> None:
    """One block of :func:`_camera_pipeline` (even-sized ``x``) up to the luma processing:
    writes the encoded, denoised and sharpened luma (N,1,H,W) and the colour differences of
    the 2x2-binned image (N,3,H/2,W/2). ``q``: the per-image parameters as (N,1,1,1)
    tensors on ``x``'s device and dtype."""
    n, _, hh, ww = x.shape
    h, w = hh // 2, ww // 2
    # --- raw mosaic as its four planes (R, G1, G2, B): each site's colour of the sensor RGB
    sites = x.view(n, 3, h, 2, w, 2).permute(0, 1, 3, 5, 2, 4)           # strided pixel_unshuffle
    u = _blocked(to_linear, sites).view(n, 3, 4, h, w)                   # (N, RGB, site, h, w)
    planes = u.mul_(_const('_SITE_WEIGHTS', x)).sum(1)                  # (N, 4, h, w)
    del u
    # --- shot + read noise from the unit field (common random numbers), white clip
    std = planes.clamp(min=0).mul_(q['shot']).add_(q['read']).sqrt_()
    planes.addcmul_(noise, std)
    del std
    torch.minimum(planes, q['white'], out=planes)
    # --- Bayer-domain denoising of each CFA plane, thresholded at the known noise level
    planes = _coring(planes, lambda m: m.clamp(min=0).mul_(q['raw_shot']).add_(q['raw_read']),
                     q.get('raw_keep', _RAW_KEEP))
    # --- white balance on the mosaic (as ISPs do, so that demosaicing sees balanced channels)
    planes.mul_(_const('_SITE_WB', planes))
    # --- demosaic; luma at full resolution: linear luminance (colour matrix folded into the
    # weights), black point, sRGB encoding
    cam = demosaic_mhc(_cfa_border(planes))                              # (N,3,4,h,w)
    del planes
    ky = _CAM2LUMA
    luma = torch.mul(cam[:, 0], ky[0]).add_(cam[:, 1], alpha=ky[1]).add_(cam[:, 2], alpha=ky[2])
    # --- colour differences of the 2x2-binned image, all the chroma smoothing needs:
    # encoded R, G, B minus encoded luminance ("constant-luminance" YCbCr)
    rgb = _mix_planes(_CAM2RGB, cam.mean(2))                            # (N,3,h,w) linear
    del cam
    lum_lo = luminance(rgb)
    if 'black' in q:
        luma.sub_(q['black']).mul_(q['stretch'])
        rgb.sub_(q['black']).mul_(q['stretch'])
        lum_lo.sub_(q['black']).mul_(q['stretch'])
    torch.sub(to_srgb(rgb, inplace=True), to_srgb(lum_lo, inplace=True), out=chroma_out)
    del rgb, lum_lo
    luma = _pixel_shuffle(to_srgb(luma, inplace=True))                  # (N,1,2h,2w) encoded
    # --- luma: coring denoise + unsharp mask in one: the 3x3 high-pass is attenuated where
    # it is within the local noise level and amplified where it is above (edges)
    luma_out.copy_(_coring(luma, lambda m: _encoded_noise_var(m.clone(), q['enc_shot'], q['enc_read']),
                           q.get('luma_keep', _LUMA_KEEP), 1 + _SHARPEN))


def _camera_pipeline(x: torch.Tensor, gens: Generators, shot: torch.Tensor, read: torch.Tensor,
                     white: torch.Tensor, chroma_sigma: torch.Tensor, quality: list[int],
                     black: torch.Tensor | None = None, saturation: torch.Tensor | None = None,
                     raw_keep: float | None = None, luma_keep: float | None = None) -> torch.Tensor:
    """The simulated camera shared by ``camera_noise`` and ``low_light``; per-image (N,)
    float64 parameters: noise variance ``shot * s + read`` on the raw signal s (already in
    output units, i.e. after any digital gain), clip level ``white`` of the noisy raw,
    chroma-smoothing sigma (half-resolution px), JPEG quality, optional black point (linear,
    subtracted and stretched back) and chroma gain (< 1 desaturates); ``raw_keep`` /
    ``luma_keep`` override the share of in-noise high-pass the in-camera denoising keeps
    (``_RAW_KEEP`` / ``_LUMA_KEEP``; 1 = that denoising stage off).

    sRGB -> linear -> raw (inverse colour matrix, white balance undone) -> RGGB mosaic ->
    noise -> Bayer-domain denoising -> white balance -> Malvar-He-Cutler demosaicing ->
    colour matrix -> (black point) -> sRGB -> luma / colour differences: luma coring +
    sharpening at full resolution, colour differences smoothed at half resolution -> RGB ->
    JPEG. As in a camera's image signal processor, white balance precedes demosaicing
    (which assumes balanced channels) and the luma / chroma stage runs on the gamma-encoded
    image (in linear light, colour differences of bright neighbours would dominate and
    bleed into the shadows). Odd sizes are mirror-padded to even (keeping the Bayer phase)
    and cropped back. On CPU, blocks of 8 images keep the temporaries in cache.
    """
    n, _, h, w = x.shape
    xe = F.pad(x, (0, w % 2, 0, h % 2), mode='reflect') if h % 2 or w % 2 else x
    hh, ww = xe.shape[-2:]
    noise = randn(gens, (4, hh // 2, ww // 2), xe)        # one unit field per image, all levels
    params = {'shot': shot, 'read': read, 'white': white,
              'raw_shot': shot * (_RAW_CORING * _HIGHPASS_VAR), 'raw_read': read * (_RAW_CORING * _HIGHPASS_VAR),
              'enc_shot': shot * (_CORING / _GAMMA ** 2), 'enc_read': read * (_CORING / _GAMMA ** 2)}
    if black is not None:
        params.update(black=black, stretch=1 / (1 - black))
    if saturation is not None:
        params['saturation'] = saturation
    for key, keep in (('raw_keep', raw_keep), ('luma_keep', luma_keep)):
        if keep is not None:
            params[key] = torch.full_like(shot, keep)
    params = {k: per_image(v, xe) for k, v in params.items()}
    luma = xe.new_empty(n, 1, hh, ww)
    chroma = xe.new_empty(n, 3, hh // 2, ww // 2)
    for sl in _blocks(xe, _CPU_BLOCK):
        _develop(xe[sl], noise[sl], luma[sl], chroma[sl], {k: v[sl] for k, v in params.items()})
    # --- chroma: smoothed at half resolution (leaves low-frequency blotches), upsampled; the
    # whole batch at once (small tensors: per-call overhead would dominate per block)
    chroma = map_groups(chroma, chroma_sigma, _gaussian_small)
    if saturation is not None:
        chroma.mul_(params['saturation'])
    # --- back to RGB (luma + upsampled colour differences), crop, JPEG
    rgb = _blocked(lambda c, lum: _upsample2(c).add_(lum), chroma, luma)[:, :, :h, :w]
    return _roundtrip(rgb, [float(q) for q in quality], _jpeg)


# ----------------------------------------------------------------------------- camera_noise

#: ISO speed per level (sensor gain). Level 1 is a clean-ish indoor phone shot, level 5 a
#: phone at ISO 6400.
CAMERA_ISO = (400.0, 800.0, 1600.0, 3200.0, 6400.0)


def _stops(iso: torch.Tensor) -> torch.Tensor:
    return torch.log2(iso / 400.0)


def _quality(stops: torch.Tensor) -> list[int]:
    """JPEG quality 92 at level 1 down to 80 at level 5 (3 per stop of gain)."""
    return [int(math.floor(92 - 3 * float(s) + 0.5)) for s in stops]


@register('camera_noise', CAMERA_ISO, random=True, torch_native=False, param_name='ISO')
def camera_noise(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Sensor noise via a camera pipeline (Bayer, shot+read, demosaic, denoise, sharpen, JPEG). ISO: 400 ... 6400.

    Shot-noise variance 2e-4 * ISO/100 per unit raw signal, read noise from it by Brooks
    et al.'s phone fit; chroma smoothing sigma 0.8 + 0.5 * stops above ISO 400
    (half-resolution px); JPEG quality 92 - 3 * stops (92, 89, 86, 83, 80).
    """
    stops = _stops(p)
    shot = _SHOT_PER_ISO100 * p / 100
    return _camera_pipeline(x, gens, shot, read_variance(shot), torch.ones_like(p), 0.8 + 0.5 * stops,
                            _quality(stops))


# ----------------------------------------------------------------------------- low_light

#: Stops of under-exposure recovered by digital gain.
LOW_LIGHT_EV = (1.0, 2.0, 3.0, 4.0, 5.0)
#: Sensor ISO of the dark exposure (before the digital gain).
_LOW_LIGHT_ISO = 400.0
#: Black point (linear) in units of the read-noise std after the gain: phones crush the
#: noisy shadows of dark scenes to black rather than show the noise floor.
_LOW_LIGHT_BLACK = 1.0
#: Chroma gain lost per stop (phones desaturate dark scenes to hide chroma noise).
_LOW_LIGHT_DESAT = 0.07


@register('low_light', LOW_LIGHT_EV, random=True, torch_native=False, param_name='EV under')
def low_light(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Dark exposure at ISO 400 brought up by digital gain 2^EV through the camera pipeline. EV: 1 ... 5.

    Gain G = 2^EV multiplies the shot variance by G and the read variance by G^2 (read
    noise dominates the shadows); then a black point at one read-noise std (linear: 0.0015 at
    EV 1 ... 0.025 at EV 5), chroma gain 1 - 0.07 * EV, chroma smoothing 1 + 0.5 * EV and JPEG
    quality 95 - 3 * EV, as ``camera_noise``.
    """
    gain = torch.pow(2.0, p)
    shot0 = torch.full_like(p, _SHOT_PER_ISO100 * _LOW_LIGHT_ISO / 100)
    read = read_variance(shot0) * gain * gain
    return _camera_pipeline(x, gens, shot0 * gain, read, gain, 1.0 + 0.5 * p, _quality(p - 1),
                            black=_LOW_LIGHT_BLACK * read.sqrt(), saturation=1 - _LOW_LIGHT_DESAT * p)


# ----------------------------------------------------------------------------- exposure

#: Over-exposure in stops (linear x 2^EV, clipped at white).
OVEREXPOSURE_EV = (0.3, 0.6, 1.0, 1.5, 2.0)
#: Under-exposure in stops (linear x 2^-EV, 8-bit sRGB).
UNDEREXPOSURE_EV = (0.3, 0.6, 1.0, 1.5, 2.5)


@register('overexposure', OVEREXPOSURE_EV, identity=0.0, param_name='EV')
def overexposure(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Over-exposure: linear light x 2^EV, each channel clipped at white. EV: 0.3, 0.6, 1, 1.5, 2."""
    return _blocked(lambda xs, g: to_srgb(to_linear(xs).mul_(g), inplace=True), x, per_image(torch.pow(2.0, p), x))


@register('underexposure', UNDEREXPOSURE_EV, identity=0.0, param_name='EV')
def underexposure(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Under-exposure: linear light x 2^-EV, sRGB-encoded to 8 bit (shadows crush). EV: .3, .6, 1, 1.5, 2.5."""
    def expose(xs: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return to_srgb(to_linear(xs).mul_(g), inplace=True).mul_(255).round_().mul_(1 / 255)

    return _blocked(expose, x, per_image(torch.pow(2.0, -p), x))


# ----------------------------------------------------------------------------- white balance

#: |log2 R/B gain ratio| (stops) of the cast along the colour-temperature axis. 1.5 stops is
#: roughly tungsten light left uncorrected in daylight balance (3200 K vs 5500 K).
WB_STOPS = (0.2, 0.4, 0.7, 1.0, 1.5)
#: Largest green-magenta tint, as a fraction of the temperature shift.
_WB_TINT = 0.35


def white_balance_gains(p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(N,3) linear-light RGB gains for cast magnitudes ``p`` (stops of R/B) and per-image
    uniforms ``u`` (N,2): direction warm/cool by u[:,0] < 0.5, tint (2 u[:,1] - 1) * 0.35 of the
    magnitude toward green (+) or magenta (-); normalised so a neutral grey keeps its luminance."""
    sign = torch.where(u[:, 0] < 0.5, -1.0, 1.0).double()
    tint = (2 * u[:, 1].double() - 1) * _WB_TINT
    p = p.double()
    log2g = torch.stack((p * (sign / 2 - tint / 3), p * (2 * tint / 3), p * (-sign / 2 - tint / 3)), 1)
    g = torch.pow(2.0, log2g)
    return g / (g @ torch.tensor(_LUMA, dtype=torch.float64)).unsqueeze(1)


@register('white_balance', WB_STOPS, identity=0.0, random=True, param_name='cast stops')
def white_balance(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Colour cast: linear RGB gains, warm or cool (random) plus a smaller tint. |log2 R/B|: .2 ... 1.5.

    The gains are rescaled per image so that its mean linear luminance is unchanged (as the
    camera's auto-exposure would keep it); highlights pushed above white clip.
    """
    g = white_balance_gains(p, rand_cpu(gens, (2,))).to(x.device, x.dtype)
    w = torch.tensor(_LUMA, device=x.device, dtype=x.dtype)

    def cast(xs: torch.Tensor, gs: torch.Tensor) -> torch.Tensor:
        lin = to_linear(xs)
        m = lin.mean((2, 3))                                              # (n,3) mean colour
        gs = gs * ((m @ w) / ((m * gs) @ w).clamp(min=1e-12)).unsqueeze(1)
        return to_srgb(lin.mul_(gs.view(-1, 3, 1, 1)), inplace=True)

    return _blocked(cast, x, g)


# ----------------------------------------------------------------------------- camera shake

#: Length (px) of the camera path during the exposure.
PATH_LENGTH = (3.0, 5.0, 8.0, 12.0, 17.0)
#: Steps of a path (its samples are spaced <= 0.2 px at level 5's length).
_TRAJ_STEPS = 96
#: Uniforms per path: five per-path values, then four per step.
_TRAJ_DRAWS = 5 + 4 * _TRAJ_STEPS


def trajectories(u: torch.Tensor) -> np.ndarray:
    """Random camera paths of unit length, centred on their centroid: (N, steps+1) complex.

    After Boracchi & Foi (2012)'s generator, vectorised over images and with fewer steps:
    the velocity keeps its norm and is nudged each step by Gaussian jitter (0.05-0.13 rad
    per step) and a pull back toward the start (the hand's inertia and return), rarely by an
    abrupt near-reversal. Unlike theirs, every path also turns steadily, by 1.2-3 rad in
    total (the wrist rotating), so no path degenerates into the straight line of KADID's
    ``motion_blur`` (median deviation from a straight line: 16 % of the length). ``u``
    (N, ``_TRAJ_DRAWS``) are the uniforms that drive it: direction, jitter, pull, shake
    rate and turn per path, then four per step.
    """
    uu = u.double().numpy()
    s = _TRAJ_STEPS
    n = uu.shape[0]
    angle0 = 2 * math.pi * uu[:, 0]
    jitter = 0.05 + 0.08 * uu[:, 1]
    pull = 0.04 * uu[:, 2]
    shake_p = 0.015 * uu[:, 3]
    turn = np.where(uu[:, 4] < 0.5, -1, 1) * (1.2 + 3.6 * np.abs(uu[:, 4] - 0.5))     # total, rad
    turn_rate = np.exp(1j * turn / s)
    steps = uu[:, 5:].reshape(n, s, 4)
    gauss = torch.special.ndtri(torch.from_numpy(steps[..., 2:]).clamp(1e-7, 1 - 1e-7)).numpy()
    x = np.zeros((n, s + 1), dtype=np.complex128)
    v = np.exp(1j * angle0) / s
    for t in range(s):
        shake = steps[:, t, 0] < shake_p
        kick = np.where(shake, 2 * v * np.exp(1j * (math.pi + steps[:, t, 1] - 0.5)), 0)
        dv = kick + (jitter * (gauss[:, t, 0] + 1j * gauss[:, t, 1]) - pull * x[:, t]) / s
        v = (v + dv) * turn_rate
        v = v / np.abs(v) / s
        x[:, t + 1] = x[:, t] + v
    return x - x.mean(1, keepdims=True)


def path_kernels(paths: np.ndarray, lengths) -> torch.Tensor:
    """Rasterise unit paths (N, steps+1) scaled to ``lengths`` px into normalised PSFs
    (N, K, K) float64 sharing one odd size K (bilinear splat of the equally spaced samples,
    i.e. constant speed; centred on the path's centroid so the image does not shift)."""
    lengths = np.asarray(lengths, dtype=np.float64).reshape(-1, 1)
    pts = paths * lengths
    r = int(math.ceil(max(np.abs(pts.real).max(), np.abs(pts.imag).max()))) + 1
    k = 2 * r + 1
    n = pts.shape[0]
    xs, ys = torch.from_numpy(pts.real + r), torch.from_numpy(pts.imag + r)
    x0, y0 = xs.floor(), ys.floor()
    fx, fy = xs - x0, ys - y0
    ker = torch.zeros(n, k, k, dtype=torch.float64)
    bi = torch.arange(n).view(-1, 1).expand_as(xs)
    for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy),
                        (1, 1, fx * fy)):
        ker.index_put_((bi, (y0 + dy).long().clamp(0, k - 1), (x0 + dx).long().clamp(0, k - 1)), wgt,
                       accumulate=True)
    return ker / ker.sum((1, 2), keepdim=True)


@register('path_motion_blur', PATH_LENGTH, identity=0.0, random=True, param_name='path length')
def path_motion_blur(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Camera shake: PSF along a random smooth path (Boracchi & Foi), in linear light. length: 3 ... 17 px."""
    paths = trajectories(rand_cpu(gens, (_TRAJ_DRAWS,)))
    ker = path_kernels(paths, p.numpy())
    lin = filter2d_per_image(_blocked(to_linear, x), ker)
    return _blocked(lambda t: to_srgb(t, inplace=True), lin)


# ----------------------------------------------------------------------------- defocus

#: Disk radius (px) of the out-of-focus PSF.
DEFOCUS_RADIUS = (1.0, 2.0, 3.5, 5.0, 7.0)
#: Width (px) of the PSF's soft edge (linear ramp from 1 to 0 across the rim).
_DEFOCUS_EDGE = 1.0


def soft_disk(radius: float, edge: float = _DEFOCUS_EDGE, supersample: int = 5) -> torch.Tensor:
    """Pillbox PSF with a soft rim: weight clamp((radius - r)/edge + 1/2, 0, 1), averaged over
    ``supersample``^2 points per pixel, normalised. Radius 0 is a delta (the identity)."""
    crad = max(int(math.ceil(radius + edge / 2)), 0)
    s = supersample
    sub = (torch.arange(s, dtype=torch.float64) + 0.5) / s - 0.5
    c = torch.arange(-crad, crad + 1, dtype=torch.float64)
    pos = (c[:, None] + sub[None, :]).flatten()
    r = torch.sqrt(pos[:, None] ** 2 + pos[None, :] ** 2)
    wgt = ((radius - r) / edge + 0.5).clamp(0, 1)
    n = 2 * crad + 1
    k = wgt.view(n, s, n, s).mean((1, 3))
    return k / k.sum()


@register('defocus', DEFOCUS_RADIUS, identity=0.0, param_name='radius')
def defocus(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Out of focus: soft-edged disk PSF in linear light (highlights bloom). radius: 1, 2, 3.5, 5, 7 px."""
    lin = map_groups(_blocked(to_linear, x), p, lambda xs, r: filter2d(xs, soft_disk(r)))
    return _blocked(lambda t: to_srgb(t, inplace=True), lin)


# ----------------------------------------------------------------------------- camera_grain

#: ISO speed per level of ``camera_grain``, in the phone-sensor units of ``camera_noise``.
GRAIN_ISO = (200.0, 400.0, 800.0, 1600.0, 3200.0)
#: In-camera denoising of ``camera_grain``: none in the Bayer domain (it is what erases fine
#: detail below the noise), ``camera_noise``'s luma coring, stronger chroma smoothing.
_GRAIN_RAW_KEEP = 1.0
_GRAIN_LUMA_KEEP = _LUMA_KEEP
_GRAIN_CHROMA_SIGMA = 1.5


@register('camera_grain', GRAIN_ISO, random=True, torch_native=False, param_name='ISO')
def camera_grain(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Luma grain over intact detail: ``camera_noise``'s pipeline without Bayer-domain denoising. ISO: 200 ... 3200.

    Why a second noise type: ``camera_noise`` denoises like a phone, and its Bayer-domain
    coring (25% of the in-noise high-pass kept) also erases fine detail, so a head can learn
    its softness and chroma blotches instead of the grain. Real camera JPEGs keep luma grain
    over intact detail with little chroma noise (the PolyU residuals: luma-dominated, most
    power below a quarter of Nyquist). Here the Bayer-domain denoising is off; luma coring
    and sharpening are ``camera_noise``'s, chroma smoothing is stronger (sigma 1.5 + 0.5 *
    stops above ISO 200, half-resolution px); JPEG quality 95 - 2 * stops (95 ... 87).
    """
    stops = torch.log2(p / 200.0)
    shot = _SHOT_PER_ISO100 * p / 100
    quality = [int(math.floor(95 - 2 * float(s) + 0.5)) for s in stops]
    return _camera_pipeline(x, gens, shot, read_variance(shot), torch.ones_like(p), _GRAIN_CHROMA_SIGMA + 0.5 * stops,
                            quality,
                            raw_keep=_GRAIN_RAW_KEEP, luma_keep=_GRAIN_LUMA_KEEP)
