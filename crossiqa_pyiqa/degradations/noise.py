"""Noise family (KADID types 11-15): white, white in YCbCr, impulse, multiplicative, denoise.

Noise fields are drawn at unit scale and scaled by the level's parameter, so at a fixed
seed every level sees the same field (strength is monotone per sample).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from crossiqa_pyiqa.degradations._core import Generators, per_image, rand, randn, register
from crossiqa_pyiqa.degradations._ops import box_mean, gaussian_blur, rgb_to_gray, rgb_to_ycbcr, ycbcr_to_rgb

#: Gaussian noise variance (``imnoise(im, 'gaussian', 0, v)``), as KADID.
WHITE_VAR = (0.001, 0.002, 0.003, 0.005, 0.01)
#: Variance of the noise added to Y, Cb and Cr (MATLAB studio-swing YCbCr), as KADID.
WHITE_COLOR_VAR = (0.0001, 0.0005, 0.001, 0.002, 0.003)
#: Salt & pepper density (``imnoise(im, 'salt & pepper', d)``), as KADID.
IMPULSE_DENSITY = (0.001, 0.005, 0.01, 0.02, 0.03)
#: Speckle variance (``imnoise(im, 'speckle', v)``: uniform n, J = I + n*I), as KADID.
MULTIPLICATIVE_VAR = (0.001, 0.005, 0.01, 0.02, 0.05)
#: Variance of the Gaussian noise that is then removed, as KADID (sigma 0.10 ... 0.39).
DENOISE_VAR = (0.01, 0.03, 0.05, 0.1, 0.15)


@register('white_noise', WHITE_VAR, identity=0.0, random=True, param_name='variance')
def white_noise(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Additive Gaussian noise, i.i.d. per pixel and channel. variance: .001, .002, .003, .005, .01."""
    return randn(gens, x.shape[1:], x).mul_(per_image(p.sqrt(), x)).add_(x)


@register('white_noise_color', WHITE_COLOR_VAR, identity=0.0, random=True, param_name='variance')
def white_noise_color(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Gaussian noise added to Y, Cb, Cr (``rgb2ycbcr``), clipped, back to RGB. v: 1e-4 ... 3e-3.

    The YCbCr->RGB matrix amplifies chroma noise (~1.6x into R and B), hence KADID's
    smaller variances than for ``white_noise``.
    """
    ycc = randn(gens, x.shape[1:], x).mul_(per_image(p.sqrt(), x)).add_(rgb_to_ycbcr(x))
    return ycbcr_to_rgb(ycc.clamp_(0, 1))


@register('impulse_noise', IMPULSE_DENSITY, identity=0.0, random=True, param_name='density')
def impulse_noise(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Salt & pepper on a fraction d of the samples (per channel, as MATLAB). d: .001 ... .03."""
    u = rand(gens, x.shape[1:], x)
    half = per_image(p / 2, x)
    pepper = (u < half).to(x.dtype)
    salt = (u >= 1 - half).to(x.dtype)
    return x * (1 - pepper - salt) + salt


@register('multiplicative_noise', MULTIPLICATIVE_VAR, identity=0.0, random=True, param_name='variance')
def multiplicative_noise(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Speckle J = I + n*I, n uniform with zero mean and variance v (MATLAB). v: .001 ... .05."""
    n = rand(gens, x.shape[1:], x).sub_(0.5).mul_(per_image((12 * p).sqrt(), x))
    return n.mul_(x).add_(x)


def _guided_denoise(y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Edge-preserving smoothing tuned to the noise level (fast guided filter, He & Sun 2015).

    The guide is the pre-smoothed noisy luminance (so coefficients follow structure, not
    noise); radius and regulariser grow with sigma, as a learned denoiser smooths more at
    higher noise. The linear coefficients are fitted at half resolution and upsampled,
    which is 4x cheaper and visually the same.
    """
    out = torch.empty_like(y)
    h, w = y.shape[-2:]
    s = 2 if min(h, w) >= 64 else 1
    for sg in torch.unique(sigma).tolist():
        idx = torch.nonzero(sigma == sg).flatten()
        yi = y[idx]
        r = max(1, int(round((1 + 6 * sg) / s)))
        eps = (0.5 * sg) ** 2
        guide = gaussian_blur(rgb_to_gray(yi), 0.5 + 3 * sg)
        g_lo = F.avg_pool2d(guide, s) if s > 1 else guide
        p_lo = F.avg_pool2d(yi, s) if s > 1 else yi
        m_i = box_mean(g_lo, r)
        var_i = box_mean(g_lo * g_lo, r) - m_i * m_i
        m_p = box_mean(p_lo, r)
        cov = box_mean(g_lo * p_lo, r) - m_i * m_p
        a = cov / (var_i + eps)
        b = m_p - a * m_i
        ab = box_mean(torch.cat((a, b), 1), r)
        if s > 1:
            ab = F.interpolate(ab, size=(h, w), mode='bilinear', align_corners=False)
        out[idx] = ab[:, :3] * guide + ab[:, 3:]
    return out


@register('denoise', DENOISE_VAR, random=True, param_name='variance')
def denoise(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Denoising artefacts: Gaussian noise (variance v) then an edge-preserving denoiser. v: .01 ... .15.

    KADID removes the noise with MATLAB's DnCNN; here a torch approximation is used: a
    fast guided filter (coefficients fitted at half resolution) with radius 1 + 6*sigma and
    regulariser (sigma/2)^2 on a luminance guide smoothed with sigma 0.5 + 3*sigma, which likewise leaves smooth, slightly blotchy, edge-preserved images
    with residual low-frequency noise. Not a learned denoiser, so textures are lost a bit
    differently than in KADID.
    """
    sigma = p.sqrt()
    noisy = randn(gens, x.shape[1:], x).mul_(per_image(sigma, x)).add_(x).clamp_(0, 1)
    return _guided_denoise(noisy, sigma.to(x.device))
