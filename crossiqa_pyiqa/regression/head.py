"""Putting fitted heads and statistics into a CrossIQA network.

``RidgeModel`` standardises with (mean, std) then applies (coef, intercept): the same
computation as ``CrossIQA.head(CrossIQA.standardise(f))``, so the fitted numbers are
copied into the buffers and the ``nn.Linear`` without any re-parametrisation.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from crossiqa_pyiqa.regression.ridge import RidgeModel


def _file_arch(path: str | os.PathLike) -> str | None:
    """The architecture a weight file was written for (its metadata), without loading tensors."""
    from safetensors.torch import safe_open

    try:
        with safe_open(str(path), framework='pt') as f:
            return (f.metadata() or {}).get('arch')
    except Exception:  # unreadable files get their clear error from the architecture's loader
        return None


def changes_layout(path: str | os.PathLike, options: dict[str, Any]) -> bool:
    """Whether ``options`` read a CrossIQA weight file's encoder out into other features than its head's."""
    from crossiqa_pyiqa.archs.crossiqa_arch import DEFAULT_CONFIG, CrossIQA, layout_value
    from crossiqa_pyiqa.weights import read_metadata

    file_config, _ = read_metadata(path, 'CrossIQA')
    base = {**DEFAULT_CONFIG, **file_config}
    return any(layout_value(k, options[k], base) != layout_value(k, base[k], base)
               for k in CrossIQA.LAYOUT_KEYS if k in options)


def load_encoder(path: str | os.PathLike | None = None, seed: int | None = None, **options: Any) -> torch.nn.Module:
    """A CrossIQA network from a weight file, or randomly initialised with ``torch.manual_seed(seed)``."""
    from crossiqa_pyiqa.archs.crossiqa_arch import CrossIQA

    if path:
        if _file_arch(path) == 'GRepQ':  # GRepQ's feature extractor, read with its linear head
            from crossiqa_pyiqa.archs.grepq_arch import GRepQ

            return GRepQ(pretrained_model_path=str(path), **{'head': 'linear', **options})
        if not changes_layout(path, options):
            return CrossIQA(pretrained_model_path=str(path), **options)
        # a file read out with other feature options (fitted or not): keep its encoder, (re)fit the head
        base = CrossIQA(pretrained_model_path=str(path))
        net = CrossIQA(pretrained=False, **{**base.config, **options, 'init_weights': None})
        net.encoder.load_state_dict(base.encoder.state_dict())
        net.decoder.load_state_dict(base.decoder.state_dict())
        net.info = {**base.info, 'has_fitted_head': False, 'has_pristine_stats': False,
                    'encoder_from_fitted_file': str(path)}
        if base.level_head is not None:  # the pretext's level head reads q, which no layout option changes
            net.set_level_head(base.level_head, base.info['level_head'])
        return net.eval()
    if seed is None:
        raise ValueError('Give an encoder weight file, or a seed for a randomly initialised encoder.')
    state = torch.random.get_rng_state()
    torch.manual_seed(int(seed))
    try:
        return CrossIQA(pretrained=False, **options)
    finally:
        torch.random.set_rng_state(state)


def set_linear_head(net: torch.nn.Module, model: RidgeModel) -> None:
    """Copy a ridge fit (in the network's feature space) into ``feat_mean/feat_std`` and ``head``."""
    dim = net.head.in_features
    if model.coef.shape != (dim,):
        raise ValueError(f'Ridge coefficients have shape {model.coef.shape}, the head expects ({dim},)')
    with torch.no_grad():
        net.feat_mean.copy_(torch.as_tensor(model.mean, dtype=net.feat_mean.dtype))
        net.feat_std.copy_(torch.as_tensor(model.std, dtype=net.feat_std.dtype))
        net.head.weight.copy_(torch.as_tensor(model.coef, dtype=net.head.weight.dtype)[None])
        net.head.bias.fill_(float(model.intercept))


def set_pristine_statistics(net: torch.nn.Module, mean: np.ndarray, cov: np.ndarray) -> None:
    with torch.no_grad():
        net.pristine_mean.copy_(torch.as_tensor(mean, dtype=net.pristine_mean.dtype))
        net.pristine_cov.copy_(torch.as_tensor(cov, dtype=net.pristine_cov.dtype))


def standardise_np(net: torch.nn.Module, features: np.ndarray) -> np.ndarray:
    """``net.standardise`` on numpy features (float64)."""
    mean = net.feat_mean.detach().cpu().double().numpy()
    std = net.feat_std.detach().cpu().double().numpy()
    return (np.asarray(features, dtype=np.float64) - mean) / std


def set_pairs_direction(net: torch.nn.Module, direction) -> None:
    """Copy a ``zeroshot.PairsDirection`` into the ``pairs`` zero-shot head's buffers."""
    with torch.no_grad():
        for name, value in (('zs_mean', direction.mean), ('zs_std', direction.std), ('zs_coef', direction.coef)):
            getattr(net, name).copy_(torch.as_tensor(value, dtype=torch.float32))
