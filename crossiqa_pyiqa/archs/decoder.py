"""The pretext's pixel decoder, shared by every Cross-IQA encoder (from-scratch ViT, CNN, pretrained ViT)."""
from __future__ import annotations

import torch
from torch import nn
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block


class CrossIQADecoder(nn.Module):
    """Light ViT decoder: renders an image's patches from a quality code and content tokens."""

    def __init__(self, num_patches: int, patch_size: int, embed_dim: int, decoder_dim: int, depth: int,
                 num_heads: int, mlp_ratio: float, condition: str) -> None:
        super().__init__()
        if condition not in ('token', 'token+add'):
            raise ValueError(f"decoder_condition must be 'token' or 'token+add', got {condition!r}")
        self.condition = condition
        self.embed = nn.Linear(embed_dim, decoder_dim)
        self.quality_embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, decoder_dim))
        self.blocks = nn.ModuleList([Block(decoder_dim, num_heads, mlp_ratio, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.pixel_head = nn.Linear(decoder_dim, patch_size * patch_size * 3)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.mask_token, std=0.02)

    def forward(self, quality: torch.Tensor, content: torch.Tensor, ids_keep: torch.Tensor | None) -> torch.Tensor:
        """``quality`` (B, D), ``content`` (B, L_kept, D) → pixel patches (B, L, p*p*3)."""
        content = self.embed(content)
        b, _, dim = content.shape
        num_patches = self.pos_embed.shape[1] - 1
        if ids_keep is not None:  # put the kept tokens back in place, mask tokens elsewhere
            full = self.mask_token.expand(b, num_patches, -1).clone()
            full.scatter_(1, ids_keep[..., None].expand(-1, -1, dim), content)
            content = full
        q = self.quality_embed(quality)[:, None]
        if self.condition == 'token+add':
            content = content + q
        tokens = torch.cat([q, content], dim=1) + self.pos_embed
        for block in self.blocks:
            tokens = block(tokens)
        return self.pixel_head(self.norm(tokens)[:, 1:])
