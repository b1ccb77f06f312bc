"""FSIM between all versions of each image: the soft labels of the QACL.

pyiqa's own ``fsim`` (``pyiqa.archs.fsim_arch``) does the work; this module only batches
the V(V−1)/2 unordered pairs of every image of a batch into a few calls (FSIM is
symmetric and FSIM(x, x) = 1, so only pairs k < l are computed).

FSIM's cost grows with the pixel count and dominates a CPU training step, so it can be
computed on a central window (native scale: keeps the high-frequency distortions, noise
and blocking, that pooling would average away; the library's distortions are spatially
uniform, so a window is representative) and/or after average pooling (the reduction
FSIM itself applies to images larger than 384 px).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pyiqa.archs.fsim_arch import fsim


@torch.no_grad()
def version_similarity(versions: torch.Tensor, window: int = 0, downsample: int = 1, chunk: int = 72) -> torch.Tensor:
    """(B, V, 3, H, W) in [0, 1] → (B, V, V) FSIM matrix (ones on the diagonal).

    ``window`` > 0: only the central ``window``×``window`` pixels; ``downsample`` > 1: average
    pooling by that factor; ``chunk``: pairs per ``fsim`` call (bounds memory).
    """
    if versions.dim() != 5 or versions.shape[2] != 3:
        raise ValueError(f'versions must be (B, V, 3, H, W), got {tuple(versions.shape)}')
    b, v = versions.shape[:2]
    x = versions.flatten(0, 1).float()
    h, w = x.shape[-2:]
    if 0 < window < min(h, w):
        top, left = (h - window) // 2, (w - window) // 2
        x = x[..., top:top + window, left:left + window]
    if downsample > 1:
        x = F.avg_pool2d(x, int(downsample))
    x = x.reshape(b, v, *x.shape[1:])
    k, l = torch.triu_indices(v, v, offset=1)
    first, second = x[:, k].flatten(0, 1), x[:, l].flatten(0, 1)  # (B * pairs, 3, h, w)
    scores = torch.cat([fsim(first[i:i + chunk], second[i:i + chunk]) for i in range(0, first.shape[0], chunk)])
    sim = torch.ones(b, v, v, dtype=scores.dtype, device=scores.device)
    scores = scores.reshape(b, -1)
    sim[:, k, l] = scores
    sim[:, l, k] = scores
    return sim
