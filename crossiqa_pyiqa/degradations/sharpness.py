"""Sharpness / contrast family (KADID types 24-25): over-sharpening and contrast change."""
from __future__ import annotations

import numpy as np
import torch

from crossiqa_pyiqa.degradations._core import Generators, per_image, random_sign, register
from crossiqa_pyiqa.degradations._ops import conv_separable, gaussian_kernel1d, lab_to_rgb, rgb_to_lab

#: KADID unsharp-mask amount (MATLAB ``imsharpen(im, 'Radius', 3, 'Amount', a)``).
SHARPEN_AMOUNT = (1.0, 2.0, 3.0, 6.0, 12.0)
#: Contrast-curve offset d from the identity curve, for an increase; decreases use 0.8*d.
#: KADID's table p = [0.3, 0.15, 0, -0.4, -0.6] is d = p + 0.2 = [+.5, +.35, +.2, -.2, -.4]:
#: from strong increase over identity-ish to strong decrease, i.e. not monotone in strength
#: (level 3 is the mildest). We keep KADID's curve family and its extremes (d = +0.5 and
#: -0.4) but order levels by |d|, the direction random per image.
CONTRAST_OFFSET = (0.1, 0.2, 0.3, 0.4, 0.5)
_DECREASE_SCALE = 0.8

_SHARPEN_SIGMA = 3.0


@register('high_sharpen', SHARPEN_AMOUNT, identity=0.0, param_name='amount')
def high_sharpen(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Over-sharpening: unsharp mask of Lab L, sigma 3, 13x13 (``imsharpen``). amount: 1, 2, 3, 6, 12."""
    lab = rgb_to_lab(x)
    L = lab[:, :1]
    blur = conv_separable(L, gaussian_kernel1d(_SHARPEN_SIGMA, dtype=x.dtype, device=x.device))
    L = L + per_image(p, x) * (L - blur)
    return lab_to_rgb(torch.cat((L, lab[:, 1:]), 1))


def _truncated_power(ys: list[float]) -> tuple[list[float], list[tuple[float, float]]]:
    """MATLAB ``spline`` (not-a-knot) through KNOTS as a cubic plus c * (x - k)_+^3 terms."""
    from scipy.interpolate import CubicSpline

    c = CubicSpline(_KNOTS, ys, bc_type='not-a-knot').c          # (4, segments), local in x - k_i
    poly = [float(v) for v in c[::-1, 0]]                         # segment 0 starts at 0: a0..a3
    jumps = [(float(k), float(c[0, i] - c[0, i - 1])) for i, k in enumerate(_KNOTS[1:-1], 1)]
    return poly, [(k, j) for k, j in jumps if abs(j) > 1e-12]


_KNOTS = np.array([0.0, 0.3, 0.5, 0.7, 1.0])
# KADID's curve through (0,0) (.3, .25 - p/4) (.5,.5) (.7, .75 + p/4) (1,1) is linear in p,
# so curve_p = S0 + p * S1 with S0 / S1 the splines of the p-free and p-linear parts. In
# the truncated power basis they need no per-pixel segment lookup (for these symmetric
# points the not-a-knot spline is in fact a single cubic: no kink terms remain).
_S0 = _truncated_power([0.0, 0.25, 0.5, 0.75, 1.0])
_S1 = _truncated_power([0.0, -0.25, 0.0, 0.25, 0.0])


def _spline(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Evaluate S0 + p*S1 at x, p a (B,1,1,1) tensor."""
    (a0, a1, a2, a3), kinks0 = _S0
    (b0, b1, b2, b3), kinks1 = _S1
    y = (p * b3 + a3) * x + (p * b2 + a2)
    y = (y * x + (p * b1 + a1)) * x + (p * b0 + a0)
    k0, k1 = dict(kinks0), dict(kinks1)
    for k in sorted(set(k0) | set(k1)):
        t = (x - k).clamp_(min=0)
        y = y + (k0.get(k, 0.0) + p * k1.get(k, 0.0)) * (t * t * t)
    return y


@register('contrast_change', CONTRAST_OFFSET, identity=0.0, random=True, param_name='offset')
def contrast_change(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """KADID spline tone curve moved d from identity: contrast up (d) or down (0.8 d), random. d: .1 ... .5."""
    sign = random_sign(gens, x).flatten().cpu().double()
    d = p * torch.where(sign > 0, 1.0, -_DECREASE_SCALE)
    return _spline(x, per_image(d - 0.2, x))          # KADID's p = d - 0.2
