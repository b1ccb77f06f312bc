"""GRepQ's zero-shot low-level score: feature statistics of a test image vs. pristine patches.

Pristine bank (DESIGN §3, after the release): every pristine image is cut into
non-overlapping 96×96 patches; patches whose sharpness is at least 0.75× the image's
sharpest patch are kept, and among those the ones whose colourfulness is at least 0.8×
the most colourful one. The encoder's 128-d features of the bank give a Gaussian
(mean, covariance) stored with the weights.

Test image: features of its 96×96 patches at stride 48 give (μ_t, Σ_t) and

    D = sqrt((μ_r − μ_t)ᵀ ((Σ_r + Σ_t)/2 + 1e-3·I)⁻¹ (μ_r − μ_t)),   Q_L = 1 − σ(D / 100),

the NIQE distance with a ridge that keeps the averaged covariance invertible.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

#: ITU-R 601 luma weights (torchvision's ``Grayscale``), as the release's sharpness uses.
LUMA = (0.2989, 0.587, 0.114)


def _gaussian_window(size: int = 7, sigma: float = 7 / 6) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * sigma ** 2))
    return (g / g.sum())[None, None]


def sharpness(patches: torch.Tensor) -> torch.Tensor:
    """Sum over a patch of the local (7×7 Gaussian-weighted) standard deviation of luma: (N,)."""
    luma = torch.tensordot(torch.tensor(LUMA, dtype=patches.dtype, device=patches.device), patches,
                           dims=([0], [1]))[:, None]
    window = _gaussian_window().to(patches)
    mu = F.conv2d(luma, window, padding=3)
    var = F.conv2d(luma ** 2, window, padding=3) - mu ** 2
    return var.abs().sqrt().sum(dim=(1, 2, 3))


def colourfulness(patches: torch.Tensor) -> torch.Tensor:
    """Hasler–Süsstrunk colourfulness of each patch (release variant, no 0.3 weight on the means): (N,)."""
    r, g, b = patches.unbind(1)
    rg = (r - g).abs().flatten(1)
    yb = (0.5 * (r + g) - b).abs().flatten(1)
    spread = (rg.std(dim=1) ** 2 + yb.std(dim=1) ** 2).sqrt()
    level = (rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2).sqrt()
    return spread + level


def unfold_patches(x: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """(B, C, H, W) → (B, N, C, size, size), patches at ``stride`` from the top-left corner (remainder dropped)."""
    if x.shape[-2] < size or x.shape[-1] < size:
        raise ValueError(f'Image of {x.shape[-2]}x{x.shape[-1]} is smaller than one {size}x{size} patch')
    b, c = x.shape[:2]
    p = x.unfold(2, size, stride).unfold(3, size, stride)  # (B, C, nh, nw, size, size)
    return p.permute(0, 2, 3, 1, 4, 5).reshape(b, -1, c, size, size)


def select_pristine_patches(image: torch.Tensor, size: int = 96, sharpness_ratio: float = 0.75,
                            colour_ratio: float = 0.8) -> torch.Tensor:
    """The sharp and colourful non-overlapping patches of one (3, H, W) image in [0, 1]: (K, 3, size, size)."""
    patches = unfold_patches(image[None], size, size)[0]
    s = sharpness(patches)
    patches = patches[s >= sharpness_ratio * s.max()]
    c = colourfulness(patches)
    return patches[c >= colour_ratio * c.max()]


def build_patch_bank(paths: Sequence[str], size: int = 96, sharpness_ratio: float = 0.75,
                     colour_ratio: float = 0.8) -> tuple[torch.Tensor, list[int]]:
    """Selected patches of every image (uint8, (N, 3, size, size)) and how many came from each image."""
    from crossiqa_pyiqa.inputs import read_image_uint8

    banks, counts = [], []
    for path in paths:
        arr = read_image_uint8(path)  # as a viewer shows it (EXIF orientation, 16-bit, alpha)
        if min(arr.shape[:2]) < size:
            counts.append(0)
            continue
        x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0
        chosen = select_pristine_patches(x, size, sharpness_ratio, colour_ratio)
        banks.append((chosen * 255.0).round().to(torch.uint8))
        counts.append(int(chosen.shape[0]))
    if not banks:
        raise ValueError(f'No pristine patches of {size}x{size} could be taken from {len(paths)} images')
    return torch.cat(banks), counts


@torch.no_grad()
def patch_features(encode: Callable[[torch.Tensor], torch.Tensor], patches: torch.Tensor,
                   batch: int = 64) -> torch.Tensor:
    """``encode`` of uint8 or [0, 1] patches in batches: (N, D) float64."""
    out = []
    for i in range(0, patches.shape[0], batch):
        chunk = patches[i:i + batch]
        chunk = chunk.float() / 255.0 if chunk.dtype == torch.uint8 else chunk.float()
        out.append(encode(chunk).double())
    return torch.cat(out)


def gaussian_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance of (N, D) features, in float64."""
    f = features.double()
    if f.shape[0] < 2:
        raise ValueError(f'Need at least 2 feature vectors for a covariance, got {f.shape[0]}')
    mean = f.mean(dim=0)
    diff = f - mean
    return mean, diff.T @ diff / (f.shape[0] - 1)


def niqe_distance(features: torch.Tensor, mean_r: torch.Tensor, cov_r: torch.Tensor,
                  ridge: float = 1e-3) -> torch.Tensor:
    """D between each image's patch features (B, N, D) and the pristine Gaussian: (B,), float64."""
    f = features.double()
    n = f.shape[1]
    mu_t = f.mean(dim=1)
    diff = f - mu_t[:, None]
    cov_t = diff.transpose(1, 2) @ diff / (n - 1) if n > 1 else torch.zeros_like(diff.transpose(1, 2) @ diff)
    eye = torch.eye(f.shape[-1], dtype=f.dtype, device=f.device)
    cov = (cov_r.double() + cov_t) / 2 + ridge * eye
    d = mean_r.double() - mu_t
    solved = torch.linalg.solve(cov, d[..., None])[..., 0]
    return (d * solved).sum(dim=-1).clamp_min(0).sqrt()


def fit_pristine_statistics(encode: Callable[[torch.Tensor], torch.Tensor], paths: Sequence[str], size: int = 96,
                            sharpness_ratio: float = 0.75, colour_ratio: float = 0.8, batch: int = 64
                            ) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Pristine Gaussian (mean, cov) of ``encode`` over the patch bank of ``paths``, and what went into it."""
    patches, counts = build_patch_bank(paths, size, sharpness_ratio, colour_ratio)
    mean, cov = gaussian_statistics(patch_features(encode, patches, batch))
    meta = {'pristine_n_images': int(sum(c > 0 for c in counts)), 'pristine_n_patches': int(patches.shape[0]),
            'pristine_patch_size': size, 'pristine_sharpness_ratio': sharpness_ratio,
            'pristine_colour_ratio': colour_ratio}
    return mean, cov, meta
