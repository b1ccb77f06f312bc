"""Cross-IQA's encoder on a pretrained CNN (DESIGN §2.4): quality code ``q`` and content tokens ``P``.

A CNN has no class token, so ``q`` is a learned attention-pooling query over the last
feature map, and ``P`` is a stride-16 feature map flattened into tokens. The decoder
of the ViT design (``CrossIQADecoder``) is reused unchanged: it renders 16×16-pixel
patches from ``(q, P)``.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn
from timm.layers import AttentionPoolLatent

from crossiqa_pyiqa.archs.backbones import NUM_STAGES, CNNBackbone, backbone_config


class CNNQualityEncoder(nn.Module):
    """Pretrained backbone + attention-pooled quality code + projected content tokens.

    ``forward`` returns the same dictionary as the ViT encoder (``cls`` is ``q``), so the
    pretext (``CrossIQA.pretext``) runs on either.
    """

    def __init__(self, backbone: str, embed_dim: int, num_heads: int, trainable_stages: int,
                 content_stage: int, quality_stage: int) -> None:
        super().__init__()
        cfg = backbone_config(backbone)
        for key, stage in (('content_stage', content_stage), ('quality_stage', quality_stage)):
            if not 0 <= stage < NUM_STAGES:
                raise ValueError(f'{key} must be a stage index in [0, {NUM_STAGES - 1}], got {stage}')
        self.backbone = CNNBackbone(backbone, trainable_stages)
        self.content_stage, self.quality_stage = content_stage, quality_stage
        self.patch_size = cfg['strides'][content_stage]  # pixels per content token
        self.min_size = max(cfg['strides'])  # one cell of the coarsest map
        ch = cfg['channels']
        self.content_proj = nn.Sequential(nn.Linear(ch[content_stage], embed_dim), nn.LayerNorm(embed_dim, eps=1e-6))
        self.quality_proj = nn.Linear(ch[quality_stage], embed_dim)
        self.quality_pool = AttentionPoolLatent(embed_dim, num_heads=num_heads, mlp_ratio=2.0)
        self.quality_norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def quality(self, quality_map: torch.Tensor) -> torch.Tensor:
        tokens = self.quality_proj(quality_map.flatten(2).transpose(1, 2))
        return self.quality_norm(self.quality_pool(tokens))

    def forward(self, x: torch.Tensor, mask_ratio: float = 0.0, generator: torch.Generator | None = None,
                return_blocks: Sequence[int] = ()) -> dict[str, Any]:
        if mask_ratio > 0:
            raise ValueError('patch masking (mask_ratio > 0) is defined for the ViT encoder only')
        wanted = [b % NUM_STAGES for b in return_blocks]
        maps = self.backbone(x, upto=max([self.content_stage, self.quality_stage, *wanted]))
        content = self.content_proj(maps[self.content_stage].flatten(2).transpose(1, 2))
        return {'cls': self.quality(maps[self.quality_stage]), 'patches': content, 'ids_keep': None,
                'blocks': [maps[b] for b in wanted]}
