"""Cross-IQA's encoder on a pretrained ViT (DESIGN §2.4): the class token is ``q``, the patch tokens ``P``.

A pretrained ViT already has Cross-IQA's structure, so nothing is added: the (normalised)
class token is the quality code and the patch tokens are the content the decoder reads.
Position embeddings are interpolated to any input size (timm's ``dynamic_img_size``).
The last ``trainable_blocks`` blocks (and the final norm) learn in the pretext; the frozen
prefix runs without autograd.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Sequence

import torch
from torch import nn

from crossiqa_pyiqa.archs.backbones import vit_backbone_config


class PretrainedViTEncoder(nn.Module):
    """A timm ViT returning the same dictionary as Cross-IQA's own ViT encoder."""

    def __init__(self, backbone: str, trainable_blocks: int) -> None:
        super().__init__()
        import timm

        cfg = vit_backbone_config(backbone)
        self.patch_size = cfg['patch_size']
        self.depth = cfg['depth']
        timm_kwargs = dict(img_size=cfg['img_size'], dynamic_img_size=True)
        self.backbone = timm.create_model(cfg['timm_name'], pretrained=False, num_classes=0, **timm_kwargs)
        self.backbone.crossiqa_name, self.backbone.timm_kwargs = backbone, timm_kwargs
        if self.backbone.num_prefix_tokens != 1:  # Cross-IQA reads token 0 as q and the rest as P
            raise ValueError(f'{backbone}: {self.backbone.num_prefix_tokens} prefix tokens; one class token expected')
        self.register_buffer('pixel_mean', torch.tensor(cfg['mean']).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('pixel_std', torch.tensor(cfg['std']).view(1, 3, 1, 1), persistent=False)
        if not 0 <= trainable_blocks <= self.depth:
            raise ValueError(f'trainable_stages (blocks) must be in [0, {self.depth}], got {trainable_blocks}')
        self.first_trainable = self.depth - trainable_blocks
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        for block in self.backbone.blocks[self.first_trainable:]:
            block.requires_grad_(True)
        self.backbone.norm.requires_grad_(trainable_blocks > 0)

    def forward(self, x: torch.Tensor, mask_ratio: float = 0.0, generator: torch.Generator | None = None,
                return_blocks: Sequence[int] = ()) -> dict[str, Any]:
        """``x`` in [0, 1], sides multiples of the patch size; ``blocks``: normalised token sequences."""
        if mask_ratio > 0:
            raise ValueError('patch masking (mask_ratio > 0) is defined for the from-scratch ViT encoder only')
        net = self.backbone
        grad = torch.is_grad_enabled() and not x.requires_grad  # as a loss, gradients reach the input
        wanted = {i % self.depth for i in return_blocks}
        outputs = {}
        with torch.no_grad() if grad and self.first_trainable > 0 else nullcontext():
            tokens = net.norm_pre(net._pos_embed(net.patch_embed((x - self.pixel_mean) / self.pixel_std)))
        for i, block in enumerate(net.blocks):
            with torch.no_grad() if grad and i < self.first_trainable else nullcontext():
                tokens = block(tokens)
            if i in wanted:
                outputs[i] = net.norm(tokens)
        tokens = net.norm(tokens)
        return {'cls': tokens[:, 0], 'patches': tokens[:, 1:], 'ids_keep': None,
                'blocks': [outputs[i % self.depth] for i in return_blocks]}
