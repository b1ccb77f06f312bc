"""Tone family (beyond KADID-10k and the camera family): a wrong tone curve.

A camera or raw converter renders linear sensor values through a tone curve. A wrong one (a
display-gamma mismatch, a render left too close to linear, a flat "log" profile shown without
its look-up table) keeps every pixel's order and both end points, black and white, but moves
the mid-tones. The library had no such change: KADID's ``darken`` / ``brighten`` are parabolas
that clip whole tonal ranges, ``overexposure`` / ``underexposure`` scale linear light (clipping
at white, crushing 8-bit shadows), and ``contrast_change`` moves the end points. docs/ABLATIONS.md
(eighth and ninth rounds) found every pretext encoder ranking darker mid-tones as *better* where
the frozen ImageNet backbone does not.

Two types, five levels each, per channel on the encoded sRGB values, deterministic:

* ``tone_dark``: y = x^gamma. Mid-tones and shadows are pulled down, highlights kept; the
  colours get denser (the curve is per channel).
* ``tone_bright``: y = 1 - (1 - x)^gamma. Mid-tones and shadows are lifted and highlights
  compressed toward white (their tonal detail flattens): a flat profile shown as it is.

gamma = 1.25, 1.5, 1.8, 2.2, 2.7; 1 is the identity, so fractional levels below 1 interpolate
from it.
"""
from __future__ import annotations

import torch

from crossiqa_pyiqa.degradations._core import Generators, per_image, register

#: Exponent of the tone curve per level (1: unchanged).
TONE_GAMMA = (1.25, 1.5, 1.8, 2.2, 2.7)


@register('tone_dark', TONE_GAMMA, identity=1.0, param_name='gamma')
def tone_dark(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Mid-tones pulled down by a power curve, black and white kept: y = x^gamma. gamma: 1.25 ... 2.7."""
    return x.clamp(0, 1).pow(per_image(p, x))


@register('tone_bright', TONE_GAMMA, identity=1.0, param_name='gamma')
def tone_bright(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Mid-tones lifted and highlights compressed toward white: y = 1 - (1 - x)^gamma. gamma: 1.25 ... 2.7."""
    return 1 - (1 - x.clamp(0, 1)).pow(per_image(p, x))
