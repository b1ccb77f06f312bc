"""Cross-IQA's encoder on a pretrained CNN (DESIGN §2.4): quality code ``q`` and content tokens ``P``.

A CNN has no class token, so ``q`` is a learned attention-pooling query over the last
feature map, and ``P`` is a feature map flattened into tokens (stride 16 for the pixel
decoder ``CrossIQADecoder``, stride 32 for the statistics decoder ``StatsDecoder``).

The last CNN stage is nearly blind to global colour, brightness and contrast (DESIGN §2.5),
so ``q`` can also read *global statistics*: the per-channel spatial mean and standard
deviation of the input pixels (stage ``-1``) and of early stage maps, standardised and
passed through a small MLP that is added to the pooled query (``global_stages``).
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
                 content_stage: int, quality_stage: int, global_stages: Sequence[int] = ()) -> None:
        super().__init__()
        cfg = backbone_config(backbone)
        for key, stage in (('content_stage', content_stage), ('quality_stage', quality_stage)):
            if not 0 <= stage < NUM_STAGES:
                raise ValueError(f'{key} must be a stage index in [0, {NUM_STAGES - 1}], got {stage}')
        self.global_stages = tuple(int(s) for s in global_stages)
        if any(not -1 <= s < NUM_STAGES for s in self.global_stages) or len(set(self.global_stages)) != len(
                self.global_stages):
            raise ValueError(f'quality_global_stages must be distinct stage indices in [-1, {NUM_STAGES - 1}] '
                             f'(-1: the input pixels), got {list(global_stages)}')
        self.backbone = CNNBackbone(backbone, trainable_stages)
        self.content_stage, self.quality_stage = content_stage, quality_stage
        self.patch_size = cfg['strides'][content_stage]  # pixels per content token
        self.min_size = max(cfg['strides'])  # one cell of the coarsest map
        ch = cfg['channels']
        self.content_proj = nn.Sequential(nn.Linear(ch[content_stage], embed_dim), nn.LayerNorm(embed_dim, eps=1e-6))
        self.quality_proj = nn.Linear(ch[quality_stage], embed_dim)
        self.quality_pool = AttentionPoolLatent(embed_dim, num_heads=num_heads, mlp_ratio=2.0)
        self.quality_norm = nn.LayerNorm(embed_dim, eps=1e-6)
        if self.global_stages:
            dim = 2 * sum(3 if s < 0 else ch[s] for s in self.global_stages)
            # standardisation of the statistics, set once from the pretext's data (set_global_statistics)
            self.register_buffer('global_mean', torch.zeros(dim))
            self.register_buffer('global_std', torch.ones(dim))
            self.quality_global = nn.Sequential(nn.Linear(dim, embed_dim), nn.GELU(), nn.Linear(embed_dim, embed_dim))

    def global_statistics(self, x: torch.Tensor, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-channel spatial mean and std of the pixels ``x`` (stage -1) and of ``maps[s]`` (B, G)."""
        parts = []
        for s in self.global_stages:
            fmap = (x if s < 0 else maps[s]).float()
            parts += [fmap.mean(dim=(2, 3)), fmap.std(dim=(2, 3), unbiased=False)]
        return torch.cat(parts, dim=1)

    def set_global_statistics(self, stats: torch.Tensor) -> None:
        """Standardise the global statistics with the mean / std of ``stats`` (N, G), e.g. the pretext's views."""
        self.global_mean.copy_(stats.float().mean(0))
        self.global_std.copy_(stats.float().std(0).clamp_min(1e-6))

    def quality(self, quality_map: torch.Tensor, global_stats: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.quality_proj(quality_map.flatten(2).transpose(1, 2))
        pooled = self.quality_pool(tokens)
        if self.global_stages:
            pooled = pooled + self.quality_global((global_stats.to(pooled.dtype) - self.global_mean) / self.global_std)
        return self.quality_norm(pooled)

    def forward_cached(self, fmap: torch.Tensor, global_stats: torch.Tensor | None) -> dict[str, Any]:
        """``q`` and ``P`` from a cached map of the last frozen stage (``first_trainable - 1``).

        Exact while the stages before ``first_trainable`` stay frozen with fixed batch-norm
        statistics (``CNNBackbone``): the pretext computes them once per degraded view.
        """
        start = self.backbone.first_trainable
        if start < 1 or self.content_stage != start - 1 or self.quality_stage < start:
            raise ValueError(f'a cached pretext needs content_stage == first trainable stage - 1 ({start - 1}) and '
                             f'quality_stage >= {start}; got content_stage={self.content_stage}, '
                             f'quality_stage={self.quality_stage}')
        maps = self.backbone.forward_from(fmap, start, upto=self.quality_stage)
        content = self.content_proj(fmap.float().flatten(2).transpose(1, 2))
        return {'cls': self.quality(maps[-1], global_stats), 'patches': content, 'ids_keep': None}

    def forward(self, x: torch.Tensor, mask_ratio: float = 0.0, generator: torch.Generator | None = None,
                return_blocks: Sequence[int] = ()) -> dict[str, Any]:
        if mask_ratio > 0:
            raise ValueError('patch masking (mask_ratio > 0) is defined for the ViT encoder only')
        wanted = [b % NUM_STAGES for b in return_blocks]
        maps = self.backbone(x, upto=max([self.content_stage, self.quality_stage, *wanted, *self.global_stages]))
        content = self.content_proj(maps[self.content_stage].flatten(2).transpose(1, 2))
        stats = self.global_statistics(x, maps) if self.global_stages else None
        return {'cls': self.quality(maps[self.quality_stage], stats), 'patches': content, 'ids_keep': None,
                'blocks': [maps[b] for b in wanted]}
