"""Cross-IQA's statistics decoder: renders a low-resolution summary of a degraded view.

The pixel decoder (``CrossIQADecoder``) spends most of a CPU pretext step rendering
16x16x3 pixels per patch, while what the quality code has to carry is mostly
low-frequency (colour, exposure, contrast) plus how much energy sits in the fine
bands (noise, blur, compression). So this decoder reconstructs, per ``cell`` x ``cell``
pixel cell of the view (8x8 by default, i.e. the view at 1/8 resolution):

- the mean colour (3 values): a low-resolution reconstruction of the image;
- the log RMS of the fine band, pixel minus its 3x3 box mean (3, one per channel);
- the log RMS of the middle band, 3x3 box mean minus 9x9 box mean (3).

It is still a reconstruction of the *degraded view* from the other view's content
tokens and this view's quality code (DESIGN §2.1), at lower resolution; the log
energies make noise in flat regions and lost detail in textured ones equally visible.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block

#: Values per cell: mean RGB, log RMS fine band RGB, log RMS middle band RGB.
STATS_PER_CELL = 9
_LOG_EPS = 1e-3  # RMS floor: 8-bit quantisation noise is ~1e-3


def _box(x: torch.Tensor, k: int) -> torch.Tensor:
    r = k // 2
    return F.avg_pool2d(F.pad(x, (r, r, r, r), mode='replicate'), k, stride=1)


def quality_statistics(img: torch.Tensor, patch: int, cell: int) -> torch.Tensor:
    """Targets of the statistics decoder: (B, L, (patch/cell)^2 * 9) for (B, 3, H, W) images in [0, 1].

    ``L`` = (H/patch) * (W/patch) patches in raster order, each listing its cells in raster
    order, each cell as [mean RGB, log RMS fine RGB, log RMS middle RGB].
    """
    b, c, h, w = img.shape
    if c != 3 or h % patch or w % patch or patch % cell:
        raise ValueError(f'quality_statistics needs (B, 3, H, W) with H, W multiples of patch={patch} and patch a '
                         f'multiple of cell={cell}; got {tuple(img.shape)}')
    x = img.float()
    b3 = _box(x, 3)
    fine = x - b3
    mid = b3 - _box(x, 9)
    cells = torch.cat([F.avg_pool2d(x, cell),
                       F.avg_pool2d(fine.square(), cell).add(_LOG_EPS ** 2).sqrt().log(),
                       F.avg_pool2d(mid.square(), cell).add(_LOG_EPS ** 2).sqrt().log()], dim=1)  # (B, 9, H/c, W/c)
    n = patch // cell
    gh, gw = h // patch, w // patch
    cells = cells.reshape(b, STATS_PER_CELL, gh, n, gw, n)
    return torch.einsum('bkhpwq->bhwpqk', cells).reshape(b, gh * gw, n * n * STATS_PER_CELL)


def statistics_groups(patch: int, cell: int) -> dict[str, torch.Tensor]:
    """Boolean masks over the last target dimension: ``colour``, ``fine``, ``middle``."""
    per = torch.arange((patch // cell) ** 2 * STATS_PER_CELL) % STATS_PER_CELL
    return {'colour': per < 3, 'fine': (per >= 3) & (per < 6), 'middle': per >= 6}


class StatsDecoder(nn.Module):
    """Light ViT decoder from a quality code and content tokens to per-patch statistics.

    Same conditioning as ``CrossIQADecoder`` ('token+add': q as an extra token and added to
    every content token); ``out_dim`` = cells per patch x 9.
    """

    def __init__(self, num_patches: int, embed_dim: int, decoder_dim: int, depth: int, num_heads: int,
                 mlp_ratio: float, out_dim: int) -> None:
        super().__init__()
        self.embed = nn.Linear(embed_dim, decoder_dim)
        self.quality_embed = nn.Linear(embed_dim, decoder_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, decoder_dim))
        self.blocks = nn.ModuleList([Block(decoder_dim, num_heads, mlp_ratio, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.stats_head = nn.Linear(decoder_dim, out_dim)
        trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, quality: torch.Tensor, content: torch.Tensor, ids_keep: torch.Tensor | None = None
                ) -> torch.Tensor:
        """``quality`` (B, D), ``content`` (B, L, D) → statistics (B, L, out_dim)."""
        if ids_keep is not None:
            raise ValueError('the statistics decoder does not support patch masking')
        q = self.quality_embed(quality)[:, None]
        tokens = torch.cat([q, self.embed(content) + q], dim=1) + self.pos_embed
        for block in self.blocks:
            tokens = block(tokens)
        return self.stats_head(self.norm(tokens)[:, 1:])
