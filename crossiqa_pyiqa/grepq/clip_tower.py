"""CLIP RN50 image tower for GRepQ's high-level path, downloaded on first use like ``clip.load``.

Why openai-clip (``clip.model``) rather than ``pyiqa.archs.clip_model``: it is the code
the GRepQ release runs, so state-dict keys and numerics match OpenAI's ``RN50.pt``
exactly; pyiqa's copy resizes the attention-pool position embedding by 1-D
interpolation along the flattened token axis (rows of the grid bleed into each other)
and its ``load`` downloads into the torch-hub folder. We use openai-clip's model
classes and tokenizer and openai-clip's cache: weights come from ``clip_model_path`` or
``~/.cache/clip/RN50.pt``; a missing file is fetched from ``clip_url`` (OpenAI's URL by
default) through ``crossiqa_pyiqa.download``, which verifies its SHA-256, never leaves
a partial file and, offline, raises an error that says where to put it.

Any resolution: the attention pool's 7×7 position embedding is bicubically resized
to the feature grid (the release instead drops it at inference; ``pos_embed='none'``
reproduces that).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from crossiqa_pyiqa.download import download_verified, file_sha256, sha256_from_url

with warnings.catch_warnings():  # openai-clip imports pkg_resources (setuptools<81 is pinned)
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)
    import clip
    from clip.model import AttentionPool2d, ModifiedResNet

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: RN50's image tower: ModifiedResNet(layers, width) → 2048-channel 7×7 grid at 224 px → 1024-d.
RN50 = dict(layers=(3, 4, 6, 3), width=64, heads=32, output_dim=1024, input_resolution=224)
RN50_URL = ('https://openaipublic.azureedge.net/clip/models/'
            'afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt')


def default_clip_path(name: str = 'RN50') -> Path:
    """Where openai-clip's ``clip.load`` keeps its weights: ``~/.cache/clip/<name>.pt``."""
    return Path(os.path.expanduser('~')) / '.cache' / 'clip' / f'{name}.pt'


class ResizableAttentionPool2d(AttentionPool2d):
    """CLIP's attention pool with its position embedding resized to the input's feature grid."""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int | None = None,
                 pos_embed: str = 'interpolate') -> None:
        super().__init__(spacial_dim, embed_dim, num_heads, output_dim)
        if pos_embed not in ('interpolate', 'none'):
            raise ValueError(f"pos_embed must be 'interpolate' or 'none', got {pos_embed!r}")
        self.pos_embed = pos_embed

    def pos_embed_for(self, h: int, w: int) -> torch.Tensor:
        pos = self.positional_embedding
        n = int(round((pos.shape[0] - 1) ** 0.5))
        if (h, w) == (n, n):
            return pos
        grid = pos[1:].reshape(n, n, -1).permute(2, 0, 1)[None]
        grid = F.interpolate(grid.float(), size=(h, w), mode='bicubic', align_corners=False).to(pos.dtype)
        return torch.cat([pos[:1], grid[0].flatten(1).T])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        tokens = x.flatten(2).permute(2, 0, 1)  # (HW, B, C)
        tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens])
        if self.pos_embed == 'interpolate':
            tokens = tokens + self.pos_embed_for(h, w)[:, None].to(tokens.dtype)
        out, _ = F.multi_head_attention_forward(
            query=tokens[:1], key=tokens, value=tokens, embed_dim_to_check=tokens.shape[-1],
            num_heads=self.num_heads, q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight,
            v_proj_weight=self.v_proj.weight, in_proj_weight=None,
            in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
            out_proj_weight=self.c_proj.weight, out_proj_bias=self.c_proj.bias,
            use_separate_proj_weight=True, training=self.training, need_weights=False)
        return out[0]


def build_image_tower(pos_embed: str = 'interpolate') -> ModifiedResNet:
    """A randomly initialised RN50 image tower whose keys match ``visual.*`` of OpenAI's RN50."""
    c = RN50
    tower = ModifiedResNet(layers=c['layers'], output_dim=c['output_dim'], heads=c['heads'],
                           input_resolution=c['input_resolution'], width=c['width'])
    tower.attnpool = ResizableAttentionPool2d(c['input_resolution'] // 32, c['width'] * 32, c['heads'],
                                              c['output_dim'], pos_embed)
    return tower


def _missing_message(path: Path) -> str:
    return (f'CLIP RN50 weights not found at {path}. GRepQ\'s high-level path (grepq-zs, grepq-<dataset>) '
            f'needs OpenAI\'s RN50.pt: copy the file to {default_clip_path()} '
            '(openai-clip\'s own cache, where clip.load("RN50") puts it) or pass clip_model_path=<file>. '
            f'Source: {RN50_URL}. The low-level metric grepq-ll-zs works without it.')


def ensure_clip_file(path: str | os.PathLike | None = None, url: str | None = None) -> Path:
    """The CLIP checkpoint at ``path`` (default ``~/.cache/clip/RN50.pt``), downloaded from ``url`` if missing.

    ``url`` defaults to OpenAI's RN50 URL; a mirror must keep openai-clip's layout
    ``.../<sha256>/<name>.pt`` so the download can be verified. An existing file is
    used as it is.
    """
    path = Path(path).expanduser() if path else default_clip_path()
    return download_verified(url or RN50_URL, path,
                             hint='or pass clip_model_path=<file>; the low-level metric grepq-ll-zs needs no CLIP')


def load_clip_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """State dict of a CLIP checkpoint: OpenAI's RN50 TorchScript archive or a plain ``torch.save`` state dict.

    A TorchScript archive carries code that runs when it is loaded, so only the exact file
    OpenAI publishes (its SHA-256, the second-to-last segment of ``RN50_URL``) is loaded as
    one; anything else must be a tensor state dict, read with ``weights_only=True``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(_missing_message(path))
    if file_sha256(path) == sha256_from_url(RN50_URL):
        return dict(torch.jit.load(str(path), map_location='cpu').state_dict())
    try:
        state = torch.load(str(path), map_location='cpu', weights_only=True)
    except Exception as error:
        raise ValueError(f'{path} is not a plain torch state dict ({error}), nor OpenAI\'s RN50 archive (sha256 '
                         f'{sha256_from_url(RN50_URL)}): other TorchScript archives are not loaded, because '
                         'loading one runs the code it carries.') from error
    if isinstance(state, dict) and 'state_dict' in state and isinstance(state['state_dict'], dict):
        state = state['state_dict']
    if not isinstance(state, dict):
        raise ValueError(f'{path} does not hold a CLIP state dict.')
    return dict(state)


def _check_rn50(state: dict[str, torch.Tensor], path: Path) -> None:
    if 'visual.proj' in state or 'visual.layer1.0.conv1.weight' not in state:
        raise ValueError(f'{path} is not a CLIP ResNet checkpoint (GRepQ uses CLIP RN50).')
    layers = tuple(len({k.split('.')[2] for k in state if k.startswith(f'visual.layer{i}.')}) for i in range(1, 5))
    out_dim = state['visual.attnpool.c_proj.weight'].shape[0]
    if layers != RN50['layers'] or out_dim != RN50['output_dim'] or state['text_projection'].shape[1] != out_dim:
        raise ValueError(f'{path} is a CLIP ResNet with layers {layers} and {out_dim}-d output, not RN50 '
                         f'(layers {RN50["layers"]}, {RN50["output_dim"]}-d).')


@torch.no_grad()
def load_clip_rn50(path: str | os.PathLike | None = None,
                   prompts: Sequence[str] = ('a good photo.', 'a bad photo.'), url: str | None = None
                   ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The RN50 image tower's state dict (float32) and the frozen text tower's prompt embeddings (P, 1024).

    The checkpoint is downloaded from ``url`` (default OpenAI's) when ``path`` is missing (:func:`ensure_clip_file`).
    """
    path = ensure_clip_file(path, url)
    state = load_clip_checkpoint(path)
    _check_rn50(state, path)
    model = clip.model.build_model(dict(state)).float().eval()  # build_model pops metadata keys: pass a copy
    text = model.encode_text(clip.tokenize(list(prompts))).float()
    visual = {k: v.float() for k, v in model.visual.state_dict().items()}
    return visual, text


def clip_quality(image_features: torch.Tensor, text_features: torch.Tensor, scale: float = 10.0) -> torch.Tensor:
    """σ(scale · (cos(f, good) − cos(f, bad))): GRepQ's Q_H and its pseudo-labels, (B,)."""
    cos = F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T
    return torch.sigmoid(scale * (cos[:, 0] - cos[:, 1]))


def normalise_for_clip(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device)[:, None, None]
    std = torch.tensor(CLIP_STD, dtype=x.dtype, device=x.device)[:, None, None]
    return (x - mean) / std


__all__ = ['CLIP_MEAN', 'CLIP_STD', 'RN50', 'RN50_URL', 'ResizableAttentionPool2d', 'build_image_tower',
           'clip_quality', 'default_clip_path', 'ensure_clip_file', 'load_clip_checkpoint', 'load_clip_rn50',
           'normalise_for_clip']
