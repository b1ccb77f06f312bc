"""Photometric statistics of the input pixels: exposure, contrast and colour, for a linear head.

A CNN's stage maps are standardised by batch norm, so a linear head over their spatial means
reads global brightness, contrast and colourfulness only weakly, and only as "more is better"
or "less is better" (DESIGN §2.5). Exposure and contrast errors go both ways, so a linear head
needs a term whose value grows with the distance from what natural photos show: luminance,
contrast and colourfulness also come as their squared deviation from a typical value (the median
over the pretext's pristine photos, BSDS500 and McMaster: ``python tools/photometric_centres.py``). Clipping is
read directly, as the share of pixels at the top or bottom of the range, and lost tonal detail
(posterisation, flat blocks, a compressed tone curve) as the share of *flat* pixels, equal in
all three 8-bit channels to their right and lower neighbours.

The statistics are computed in float32 on sRGB values in [0, 1]; they cost a few element-wise
passes over the image (3 % of EfficientNet-Lite0's time on a 500x500 photo, docs/ABLATIONS.md).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

#: Names of the statistics, in the order ``photometric_statistics`` returns them.
PHOTOMETRIC_NAMES = ('clip_high', 'clip_low', 'flat', 'luminance', 'luminance_dev2', 'log_contrast',
                     'log_contrast_dev2', 'log_colourfulness', 'log_colourfulness_dev2', 'colour_cast')
#: Typical values of natural photos (median over BSDS500 + McMaster, ``tools/photometric_centres.py``).
PHOTOMETRIC_CENTRES = {'luminance': 0.431, 'log_contrast': -1.613, 'log_colourfulness': -1.933}
#: A pixel is clipped when its largest channel is at least ``CLIP_HIGH`` or its luminance at most ``CLIP_LOW``.
CLIP_HIGH, CLIP_LOW = 0.98, 0.02
_EPS = 1e-3


def pixel_moments(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel quantities whose means give the statistics, (B, 9, H, W) float32: clipped-high,
    clipped-low and flat indicators, luminance and its square, the opponent channels rg, yb and their squares.
    Means over a window instead of the whole image give the window's statistics (``archs/quality_map.py``)."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f'photometric statistics need a (B, 3, H, W) RGB batch, got shape {tuple(x.shape)}')
    x = x.float()
    r, g, b = x.unbind(1)
    lum = 0.2126 * r + 0.7152 * g + 0.0722 * b  # Rec. 709 weights on the sRGB values
    rg, yb = r - g, 0.5 * (r + g) - b  # opponent channels (Hasler and Suesstrunk, 2003)
    return torch.stack([(x.amax(1) >= CLIP_HIGH).float(), (lum <= CLIP_LOW).float(), flat_pixels(x), lum, lum * lum,
                        rg, yb, rg * rg, yb * yb], dim=1)


def flat_pixels(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W) 1 where a pixel's 8-bit RGB equals its right and lower neighbours' (the last row and column
    repeat their neighbour's flag)."""
    q = torch.round(x.float().clamp(0, 1) * 255)
    if q.shape[-2] < 2 or q.shape[-1] < 2:
        return torch.zeros_like(q[:, 0])
    flat = ((q[..., :-1, 1:] == q[..., :-1, :-1]) & (q[..., 1:, :-1] == q[..., :-1, :-1])).all(dim=1).float()
    return F.pad(flat[:, None], (0, 1, 0, 1), mode='replicate')[:, 0]


def photometric_core(moments: torch.Tensor) -> dict[str, torch.Tensor]:
    """The raw statistics (each (B, ...)) from means of ``pixel_moments`` (B, 9, ...): what the centres are
    medians of."""
    clip_high, clip_low, flat, lum, lum2, rg, yb, rg2, yb2 = moments.float().unbind(1)
    spread = ((rg2 - rg * rg).clamp_min(0) + (yb2 - yb * yb).clamp_min(0)).sqrt()
    offset = (rg * rg + yb * yb).sqrt()
    return {
        'clip_high': clip_high.clamp_min(0).sqrt(),
        'clip_low': clip_low.clamp_min(0).sqrt(),
        'flat': flat.clamp_min(0).sqrt(),
        'luminance': lum,
        'log_contrast': torch.log((lum2 - lum * lum).clamp_min(0).sqrt() + _EPS),
        'log_colourfulness': torch.log(spread + 0.3 * offset + _EPS),
        'colour_cast': offset / (lum + 0.05),
    }


def statistics_from_moments(moments: torch.Tensor) -> torch.Tensor:
    """(B, len(PHOTOMETRIC_NAMES), ...) statistics from means of ``pixel_moments`` (B, 9, ...)."""
    core = photometric_core(moments)
    for name, centre in PHOTOMETRIC_CENTRES.items():
        core[name + '_dev2'] = (core[name] - centre) ** 2
    return torch.stack([core[name] for name in PHOTOMETRIC_NAMES], dim=1)


def photometric_statistics(x: torch.Tensor) -> torch.Tensor:
    """(B, len(PHOTOMETRIC_NAMES)) float32 statistics of a batch of sRGB images in [0, 1]."""
    return statistics_from_moments(pixel_moments(x).mean(dim=(2, 3)))


def photometric_identity() -> dict[str, Any]:
    """What defines the statistics (names, centres, thresholds): part of a feature cache's key."""
    return {'names': list(PHOTOMETRIC_NAMES), 'centres': dict(PHOTOMETRIC_CENTRES), 'clip': [CLIP_HIGH, CLIP_LOW],
            'flat': '8-bit rgb equal to right and lower neighbours'}
