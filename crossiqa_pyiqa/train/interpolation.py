"""A pretext encoder's fine-tuned stages averaged with their ImageNet start (weight-space ensembling).

The pretext fine-tunes the last stages of an ImageNet CNN. On distortions that neither the
pretext nor the head has seen, the fine-tuned stages lose some of what ImageNet knew (gamma,
posterisation: docs/ABLATIONS.md, eighth round) while gaining on others (colour casts, the
library's types). Averaging the weights of the start and the end of fine-tuning keeps much of
both (WiSE-FT: Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022):
``theta(alpha) = (1 - alpha) * theta_imagenet + alpha * theta_pretext``, on the trainable stages
only. It costs nothing at inference: the result is one encoder of the same size.

Exact for the frozen stages (identical in both), and the batch-norm statistics of the
fine-tuned stages are fixed during the pretext (``archs/backbones.CNNBackbone``), so the
average of two networks that share them is a network with the same statistics.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from crossiqa_pyiqa.archs.backbones import NUM_STAGES


def stage_of(key: str) -> int | None:
    """The backbone stage a state-dict key of a CNN ``CrossIQA`` belongs to (None: not the backbone's stages)."""
    prefix = 'encoder.backbone.'
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix):]
    if rest.startswith('blocks.'):
        return int(rest.split('.')[1])
    if rest.startswith(('conv_head.', 'bn2.')):
        return NUM_STAGES - 1
    return -1  # stem


def interpolated_encoder(path: str, alpha: float, init_weights: str = 'pypi') -> torch.nn.Module:
    """A pretext weight file's encoder with its fine-tuned stages averaged with their start, as a network with
    no head: a head, diagnosis heads or a level head in the file were fitted on the un-averaged features, so
    they are dropped (``scripts/fit_regressor.py`` fits a new head). ``info['interpolation']`` says how it
    was made."""
    from crossiqa_pyiqa.archs.crossiqa_arch import CrossIQA
    from crossiqa_pyiqa.weights import file_sha256

    source = CrossIQA(pretrained_model_path=str(path))
    net = CrossIQA(pretrained=False, **{**source.config, 'init_weights': None})
    net.encoder.load_state_dict(source.encoder.state_dict())
    net.decoder.load_state_dict(source.decoder.state_dict())
    provenance = interpolate_with_init(net, alpha, init_weights)
    kept = {k: v for k, v in source.info.items() if k in ('task', 'steps', 'train_data', 'train_images',
                                                            'view_cache', 'backbone_init', 'date', 'commit')}
    net.info = {**kept, 'has_fitted_head': False, 'has_pristine_stats': False,
                'interpolation': {**provenance, 'pretext_file': str(path), 'pretext_sha256': file_sha256(path)}}
    return net.eval()


def interpolate_with_init(pretext: torch.nn.Module, alpha: float, init_weights: str = 'pypi') -> dict[str, Any]:
    """Replace ``pretext``'s trainable backbone stages by ``(1 - alpha) * init + alpha * pretext``, in place.

    ``pretext`` is a CNN ``CrossIQA`` loaded from a pretext weight file; ``init_weights`` is where its
    backbone started (``'pypi'``: the ImageNet weights of the PyPI package, as in the pretext options).
    The read-out ``q``, the decoder and the head keep the pretext's values. Returns provenance, with
    each stage's relative drift ``|theta_pretext - theta_init| / |theta_init|`` (learned parameters, before
    averaging).
    """
    from crossiqa_pyiqa.archs.backbones import load_backbone_weights

    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isfinite(alpha) \
            or not 0.0 <= alpha <= 1.0:
        raise ValueError(f'alpha must be a number in [0, 1] (0: ImageNet, 1: the pretext), got {alpha!r}')
    if not getattr(pretext, 'is_cnn', False):
        raise ValueError('interpolate_with_init needs a CNN CrossIQA encoder (a pretext on the ViT fine-tunes '
                         'every block and has no ImageNet start here)')
    backbone = pretext.encoder.backbone
    first = backbone.first_trainable
    if first >= NUM_STAGES:
        raise ValueError('the encoder has no trainable stage (trainable_stages=0): nothing was fine-tuned')
    init = type(backbone)(backbone.name, NUM_STAGES - first)
    origin = load_backbone_weights(init, init_weights)
    init_state = init.state_dict()
    state = pretext.state_dict()
    learned = {name for name, _ in pretext.named_parameters()}
    drift: dict[int, list[float]] = {}
    averaged = {}
    for key, value in state.items():
        stage = stage_of(key)
        if stage is None or stage < first or not value.is_floating_point():
            continue
        start = init_state[key[len('encoder.backbone.'):]].to(torch.float32)
        end = value.to(torch.float32)
        if key in learned:  # the drift of what the pretext learns (batch-norm statistics are fixed)
            sums = drift.setdefault(stage, [0.0, 0.0])
            sums[0] += float((end - start).square().sum())
            sums[1] += float(start.square().sum())
        averaged[key] = ((1 - alpha) * start + alpha * end).to(value.dtype)
    if not averaged:
        raise ValueError(f'no parameter of the trainable stages (>= {first}) was found in the network')
    pretext.load_state_dict({**state, **averaged})
    return {'alpha': float(alpha), 'init_weights': init_weights, 'init_origin': origin, 'stages': list(
        range(first, NUM_STAGES)), 'relative_drift': {str(s): math.sqrt(d / n) for s, (d, n) in sorted(drift.items())},
            'method': 'WiSE-FT weight-space ensemble of the ImageNet start and the pretext (Wortsman et al., 2022)'}
