"""Blur family (KADID types 1-3): Gaussian, lens (disk) and motion (line) PSFs.

All three are linear filters with replicate borders, run as depthwise (grouped)
convolutions over all B*3 planes at once: the Gaussian as two 1-D passes, the disk and
the per-image (random-direction) motion PSF as 2-D kernels (FFT beyond 25x25 taps).
"""
from __future__ import annotations

import math

import torch

from crossiqa_pyiqa.degradations._core import Generators, map_groups, rand_cpu, register
from crossiqa_pyiqa.degradations._ops import disk_kernel, filter2d, filter2d_per_image, gaussian_blur as _gblur
from crossiqa_pyiqa.degradations._ops import line_kernel

#: sigma (px). KADID: [0.1, 0.5, 1, 2, 5]; sigma=0.1 leaves an 8-bit image bit-identical
#: (neighbour weight e^-50), so level 1 uses 0.3 (barely visible, but not a no-op).
GAUSSIAN_SIGMA = (0.3, 0.5, 1.0, 2.0, 5.0)
#: disk radius (px), as KADID.
LENS_RADIUS = (1.0, 2.0, 4.0, 6.0, 8.0)
#: KADID's motion "radius" [1, 2, 4, 6, 10]; PSF length = radius + 1 px (KADID's
#: ``fspecial('motion', 1, .)`` would be a no-op at level 1). Direction uniform in [0, 180).
MOTION_RADIUS = (1.0, 2.0, 4.0, 6.0, 10.0)


@register('gaussian_blur', GAUSSIAN_SIGMA, identity=0.0, param_name='sigma')
def gaussian_blur(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Gaussian blur, kernel 2*ceil(2 sigma)+1 (``imgaussfilt``). sigma: 0.3, 0.5, 1, 2, 5."""
    return map_groups(x, p, _gblur)


@register('lens_blur', LENS_RADIUS, identity=0.0, param_name='radius')
def lens_blur(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Defocus: anti-aliased disk PSF (``fspecial('disk', r)``). r: 1, 2, 4, 6, 8 px."""
    return map_groups(x, p, lambda xs, r: filter2d(xs, disk_kernel(r, dtype=x.dtype, device=x.device)))


@register('motion_blur', MOTION_RADIUS, identity=0.0, random=True, param_name='radius')
def motion_blur(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Linear motion: anti-aliased line PSF of length r+1, random direction. r: 1, 2, 4, 6, 10."""
    angles = rand_cpu(gens, (1,)).flatten() * math.pi
    kernels = [line_kernel(float(r) + 1.0, float(a)) for r, a in zip(p.tolist(), angles.tolist())]
    size = max(k.shape[-1] for k in kernels)
    stack = torch.zeros(len(kernels), size, size, dtype=torch.float64)
    for i, k in enumerate(kernels):
        o = (size - k.shape[-1]) // 2
        stack[i, o:o + k.shape[-1], o:o + k.shape[-1]] = k
    return filter2d_per_image(x, stack)
