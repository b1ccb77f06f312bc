"""Brightness family (KADID types 16-18): brighten, darken, mean shift.

KADID's tone curves are MATLAB ``spline`` through (0,0), (0.5,c), (1,1), i.e. the parabola
y = (2-4c)x^2 + (4c-1)x, clipped to [0,1]; it is linear in c, so per-image levels
broadcast.
"""
from __future__ import annotations

import torch

from crossiqa_pyiqa.degradations._core import Generators, per_image, random_sign, register
from crossiqa_pyiqa.degradations._ops import lab_to_rgb, rgb_to_lab

#: KADID brighten amount (curve midpoint 0.5 + a/2).
BRIGHTEN_AMOUNT = (0.1, 0.2, 0.4, 0.7, 1.1)
#: KADID darken amount (curve midpoint 0.5 - a/2).
DARKEN_AMOUNT = (0.05, 0.1, 0.2, 0.4, 0.8)
#: |shift|. KADID's table is the signed [0.15, 0.08, 0, -0.08, -0.15] (level 3 = identity,
#: strength not monotone in level); we keep its range and both directions: the magnitude
#: grows with level, the sign is random per image.
MEAN_SHIFT = (0.03, 0.055, 0.08, 0.115, 0.15)


def _curve(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return ((2 - 4 * c) * x * x + (4 * c - 1) * x).clamp(0, 1)


@register('brighten', BRIGHTEN_AMOUNT, identity=0.0, param_name='amount')
def brighten(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Brightening tone curve, mixed 2:1 between RGB and Lab-L versions (KADID). a: .1 ... 1.1."""
    c = per_image(0.5 + p / 2, x)
    lab = rgb_to_lab(x)
    lab = torch.cat((_curve(lab[:, :1] / 100, c) * 100, lab[:, 1:]), 1)
    return (2 * _curve(x, c) + lab_to_rgb(lab).clamp(0, 1)) / 3


@register('darken', DARKEN_AMOUNT, identity=0.0, param_name='amount')
def darken(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Darkening tone curve on RGB (KADID). a: .05, .1, .2, .4, .8."""
    return _curve(x, per_image(0.5 - p / 2, x))


@register('mean_shift', MEAN_SHIFT, identity=0.0, random=True, param_name='shift')
def mean_shift(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Intensity offset +-s (random sign per image), clipped. s: .03, .055, .08, .115, .15."""
    return x + random_sign(gens, x) * per_image(p, x)
