"""Where a photo is good or bad: the score head applied to local windows of a CNN encoder's feature maps.

The global features of a CNN CrossIQA (``CrossIQA._map_features``) are, per stage, the
spatial mean and standard deviation of the map over the whole image, then the quality code
``q`` (attention pooling of the quality stage's map). Here the same quantities are taken
over a *window* of ``window`` × ``window`` cells around each cell of the quality stage's
grid (cells of its stride: 32 px for EfficientNet-Lite), and the score head reads each
window's feature vector:

- mean / std: average pooling of each stage's map and of its square over the window's
  pixels (windows clipped at the image border, only real pixels counted);
- ``q``: the same attention pooling, its softmax restricted to the window's tokens (exact:
  the window's weighted sum over the sum of its weights), then the pool's projection, MLP and
  norm. Global statistics read by ``q`` (``quality_global_stages``), if any, stay whole-image;
- photometric statistics (feature token ``photometric``): the window's means of the pixel
  moments they are made of (``archs/photometric.py``).

As the window grows to cover the whole image every cell's features become the global
features, and the score head's map becomes the score (tested). Smaller windows see less
variation (a window's std is below the whole image's), so their raw values sit below the score.

The score head (fitted on CLIVE) hardly moves with a window's exposure, contrast or colour, and
its local values move with content (a detailed window reads better than a plain one) by more
than a darkened or faded region costs it. :func:`quality_map` therefore subtracts a penalty
per diagnosed family: the diagnosis heads (which do read exposure, contrast and colour) on the
same window's features, times what a unit of that family's strength costs the global score
(:data:`MAP_PENALTY`, fitted without MOS by ``scripts/fit_map_penalty.py``). With a
whole-image window a cell reads ``score - sum_f MAP_PENALTY[f] * s_f(photo)`` (tested); see
:func:`quality_map` for the centred map ``explain`` reports.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from crossiqa_pyiqa.archs.backbones import NUM_STAGES, BACKBONE_CONFIGS
from crossiqa_pyiqa.archs.photometric import pixel_moments, statistics_from_moments

#: The quality map's penalty per diagnosed family, in score points per unit of strength (1 ≈ library level 5):
#: each window reads the score head minus these times the diagnosis heads' strengths on that window
#: (:func:`quality_map`). Fitted without MOS by ``scripts/fit_map_penalty.py`` (BSDS500 + McMaster,
#: library degradations): see docs/EXPLAIN.md, "The quality map".
#: These are the values of ``crossiqa-v1``'s file (``crossiqa_lite0_livec``), and the default for any file not in
#: :data:`MAP_PENALTY_BY_METRIC`. ``crossiqa-noiseaware-v1`` charges ``MAP_PENALTY['noise']`` and
#: ``crossiqa-noiseaware`` its file's entry's (``crossiqa_pyiqa/registration.py`` reads both from here).
MAP_PENALTY: dict[str, float] = {'blur': 75.7, 'noise': 38.0, 'compression': 54.9, 'exposure': 32.4,
                                  'contrast': 23.3, 'colour': 41.7}
#: The penalty fitted for another shipped file, keyed by the ``metric_name`` its metadata records: a new score head
#: costs each family a different number of points (``python scripts/fit_map_penalty.py --weights FILE``, 4.2 min).
MAP_PENALTY_BY_METRIC: dict[str, dict[str, float]] = {
    'crossiqa-lite0-tone': {'blur': 70.1, 'noise': 29.3, 'compression': 44.5, 'exposure': 31.9, 'contrast': 39.4,
                            'colour': 46.8},
}


def map_penalty_for(net: Any) -> dict[str, float]:
    """The map's penalty per family for this network's weight file: its own fit where one is recorded in
    :data:`MAP_PENALTY_BY_METRIC`, else :data:`MAP_PENALTY`."""
    return dict(MAP_PENALTY_BY_METRIC.get((net.info or {}).get('metric_name'), MAP_PENALTY))


def encode_maps(net, x: torch.Tensor) -> dict:
    """One pass of a CNN CrossIQA's encoder on a checked batch: the feature stages' maps, ``q`` and the
    global features (exactly ``forward_features`` of an image read whole at scale 1)."""
    enc = net.encoder
    wanted = [b % NUM_STAGES for b in net.config['feature_blocks']]
    maps = enc.backbone(x, upto=max([enc.quality_stage, *wanted, *enc.global_stages]))
    stats = enc.global_statistics(x, maps) if enc.global_stages else None
    q = enc.quality(maps[enc.quality_stage], stats)
    blocks = [maps[b] for b in wanted]
    features = net._map_features(blocks, q).float()
    moments = None
    if 'photometric' in net.config['feature_tokens']:
        moments = pixel_moments(x)
        features = torch.cat([features, statistics_from_moments(moments.mean(dim=(2, 3)))], dim=-1)
    return {'blocks': blocks, 'strides': [BACKBONE_CONFIGS[net.config['backbone']]['strides'][b] for b in wanted],
            'quality_map': maps[enc.quality_stage], 'global_stats': stats, 'q': q, 'pixel_moments': moments,
            'features': features}


def _window_pool(t: torch.Tensor, ratio: int, window: int, out_hw: tuple[int, int]) -> torch.Tensor:
    """Mean of ``t`` (B, C, h·ratio, w·ratio) over ``window`` cells of ``ratio`` pixels around each cell."""
    kernel, pad = window * ratio, (window // 2) * ratio
    pooled = F.avg_pool2d(t, kernel, stride=ratio, padding=pad, ceil_mode=True, count_include_pad=False)
    h, w = out_hw
    if pooled.shape[-2] < h or pooled.shape[-1] < w:  # tiny maps: repeat the last row / column
        pooled = F.pad(pooled, (0, max(0, w - pooled.shape[-1]), 0, max(0, h - pooled.shape[-2])), mode='replicate')
    return pooled[..., :h, :w]


def windowed_quality_code(net, quality_map: torch.Tensor, global_stats: torch.Tensor | None,
                          window: int) -> torch.Tensor:
    """``q`` of every ``window`` × ``window`` block of the quality stage's map, (B, C, h, w)."""
    enc = net.encoder
    pool = enc.quality_pool
    b, _, h, w = quality_map.shape
    tokens = enc.quality_proj(quality_map.flatten(2).transpose(1, 2))  # (B, N, C)
    n, c = tokens.shape[1:]
    heads, hd = pool.num_heads, pool.head_dim
    query = pool.q(pool.latent).reshape(1, pool.latent_len, heads, hd).transpose(1, 2)[:, :, :1]  # (1, H, 1, hd)
    kv = pool.kv(tokens).reshape(b, n, 2, heads, hd).permute(2, 0, 3, 1, 4)
    key, value = kv.unbind(0)  # (B, H, N, hd)
    query, key = pool.q_norm(query), pool.k_norm(key)
    logits = (key.float() @ (query.float() * pool.scale).transpose(-2, -1))[..., 0]  # (B, H, N)
    weights = torch.exp(logits - logits.amax(dim=-1, keepdim=True))
    num = (weights[..., None] * value.float()).permute(0, 1, 3, 2).reshape(b, heads * hd, h, w)
    num = _window_pool(num, 1, window, (h, w)).reshape(b, heads, hd, h, w)
    den = _window_pool(weights.reshape(b, heads, h, w), 1, window, (h, w))
    attended = (num / den.clamp_min(1e-30)[:, :, None]).permute(0, 3, 4, 1, 2).reshape(b, h * w, c)
    x = pool.proj(attended.to(tokens.dtype))
    if pool.mlp is not None:
        x = x + pool.mlp(pool.norm(x))
    if enc.global_stages:
        x = x + enc.quality_global((global_stats.to(x.dtype) - enc.global_mean) / enc.global_std)[:, None]
    return enc.quality_norm(x).transpose(1, 2).reshape(b, c, h, w)


def local_features(net, encoded: dict, window: int) -> torch.Tensor:
    """The head's features over each cell's window, (B, F, h, w) float32, in ``_map_features``'s order."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f'window must be an odd number of cells (1, 3, 5, ...), got {window}')
    qmap = encoded['quality_map']
    h, w = qmap.shape[-2:]
    cell = BACKBONE_CONFIGS[net.config['backbone']]['strides'][net.encoder.quality_stage]
    parts = []
    for fmap, stride in zip(encoded['blocks'], encoded['strides']):
        if cell % stride:
            raise ValueError(f'a feature stage of stride {stride} does not tile the quality grid of {cell} px')
        f = fmap.float()
        mean = _window_pool(f, cell // stride, window, (h, w))
        for kind in net.config['feature_tokens']:
            if kind == 'mean':
                parts.append(mean)
            elif kind == 'std':
                square = _window_pool(f * f, cell // stride, window, (h, w))
                parts.append((square - mean * mean).clamp_min(0).sqrt())
    if 'cls' in net.config['feature_tokens']:
        parts.append(windowed_quality_code(net, qmap, encoded['global_stats'], window).float())
    if 'photometric' in net.config['feature_tokens']:
        parts.append(statistics_from_moments(_window_pool(encoded['pixel_moments'], cell, window, (h, w))))
    return torch.cat(parts, dim=1)


def family_strength_maps(net, feats: torch.Tensor, families, heads=None) -> dict:
    """Diagnosis family strengths (each (B, h, w), in [0, 1]) of windowed features ``feats`` (B, F, h, w):
    diagnosis heads on every window, a family's strength being its largest head (as in ``explain``).

    ``heads``: None reads the weight file's window heads (``net.diagnosis_map``, fitted on window features)
    when it has them, else its crop heads (``net.diagnosis``, fitted on whole crops)."""
    if heads is None:
        heads = net.diagnosis_map if getattr(net, 'diagnosis_map', None) is not None else net.require_diagnosis()
    b, d, h, w = feats.shape
    strengths = heads(feats.permute(0, 2, 3, 1).reshape(b * h * w, d))  # (N, K) in [0, 1]
    out = {}
    for family in families:
        idx = [k for k, name in enumerate(heads.outputs) if name == family or name.startswith(family + '_')]
        if not idx:
            raise ValueError(f'map penalty on {family!r}: the diagnosis heads have no output for it '
                             f'({list(heads.outputs)})')
        out[family] = strengths[:, idx].amax(dim=1).reshape(b, h, w)
    return out


def quality_map(net, encoded: dict, window: int, centre: bool = True, penalty=None, head_weight: float = 1.0,
                heads=None) -> torch.Tensor:
    """Local scores (B, h, w): the score head on each cell's window, less a penalty per diagnosed family.

    ``penalty``: {family: score points per unit of strength} (see :data:`MAP_PENALTY`):
    each window's value is ``head_weight`` x the score head's minus ``sum_f penalty[f] * s_f``, ``s_f``
    the diagnosis heads' strength of family ``f`` on that window's features (``heads``: see
    :func:`family_strength_maps`). The score head hardly moves with a window's exposure, contrast or
    colour, and moves with content; the diagnosis heads read the former whatever the content, so a
    darkened or colour-cast region reads lower, and ``head_weight`` < 1 keeps content from outweighing
    them. None or {}: the score head alone. A metric built with ``noise_penalty`` subtracts that much per unit
    of noise in ``score_features``; with a ``penalty`` the map reads the head without it (noise is charged once,
    by ``penalty['noise']``), so such a metric's map is the plain metric's, centred on its own score.

    ``centre=True`` shifts each image's map so that its mean is that image's score
    (``net.score_features`` of the global features): the map then says where the photo is
    better or worse than its score, in the score's units. ``centre=False`` gives the raw values
    per window, which sit below the score for small windows (less variation in them).
    """
    feats = local_features(net, encoded, window)
    b, d, h, w = feats.shape
    flat = feats.permute(0, 2, 3, 1).reshape(b * h * w, d)
    local = net.score_features(flat)[:, 0]
    if penalty and getattr(net, 'noise_penalty', 0.0):
        # a metric whose score pays for noise (``noise_penalty``, crop heads): taken back out of the head's reading,
        # so that the map charges noise once, as ``penalty`` says, with the map's heads
        local = local + net.noise_penalty * net.penalised_noise(flat).float()
    local = head_weight * local.reshape(b, h, w)
    if penalty:
        for family, s in family_strength_maps(net, feats, list(penalty), heads).items():
            local = local - float(penalty[family]) * s
    if not centre:
        return local
    score = net.score_features(encoded['features']).reshape(b, 1, 1)
    return local - local.mean(dim=(1, 2), keepdim=True) + score
