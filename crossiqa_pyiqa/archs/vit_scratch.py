"""The from-scratch ViT encoder of Cross-IQA (``backbone: vit``; the ``crossiqa-tiny`` model).

A small ViT with a class token (timm blocks), trained from random weights by the pretext;
usable at any input size (position embeddings resampled), with optional MAE-style masking.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn
from timm.layers import PatchEmbed, resample_abs_pos_embed, trunc_normal_
from timm.models.vision_transformer import Block


class CrossIQAEncoder(nn.Module):
    """ViT encoder with a class token (timm blocks), usable at any input size."""

    def __init__(self, img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int,
                 mlp_ratio: float) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.grid = img_size // patch_size
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=3, embed_dim=embed_dim,
                                      strict_img_size=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid ** 2, embed_dim))
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)

    def pos_embed_for(self, grid_hw: tuple[int, int]) -> torch.Tensor:
        if grid_hw == (self.grid, self.grid):
            return self.pos_embed
        return resample_abs_pos_embed(self.pos_embed, list(grid_hw), old_size=[self.grid, self.grid],
                                      num_prefix_tokens=1)

    def forward(self, x: torch.Tensor, mask_ratio: float = 0.0, generator: torch.Generator | None = None,
                return_blocks: Sequence[int] = ()) -> dict[str, Any]:
        """Encode; optionally drop a random ``mask_ratio`` of patches (MAE-style).

        Returns ``cls`` (B, D), ``patches`` (B, L_kept, D), ``ids_keep`` (B, L_kept) or None,
        and ``blocks``: normalised token sequences of the requested block indices.
        """
        grid_hw = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        tokens = self.patch_embed((x - 0.45) / 0.225)  # [0,1] pixels → roughly zero-mean, unit-scale
        pos = self.pos_embed_for(grid_hw)
        tokens = tokens + pos[:, 1:]
        ids_keep = None
        if mask_ratio > 0:
            b, length, dim = tokens.shape
            keep = max(1, int(round(length * (1 - mask_ratio))))
            noise = torch.rand(b, length, generator=generator, device='cpu' if generator is None else generator.device)
            ids_keep = noise.to(tokens.device).argsort(dim=1)[:, :keep].sort(dim=1).values
            tokens = torch.gather(tokens, 1, ids_keep[..., None].expand(-1, -1, dim))
        cls = (self.cls_token + pos[:, :1]).expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        wanted = {i % len(self.blocks) for i in return_blocks}
        outputs = {}
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)
            if i in wanted:
                outputs[i] = self.norm(tokens)
        tokens = self.norm(tokens)
        return {'cls': tokens[:, 0], 'patches': tokens[:, 1:], 'ids_keep': ids_keep,
                'blocks': [outputs[i % len(self.blocks)] for i in return_blocks]}
