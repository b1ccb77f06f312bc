"""Argument checks shared by :func:`apply` and :class:`DegradationSampler`.

Degradations run inside training loops, where a silently wrong input (uint8 images,
0-255 floats, a misspelt type) would corrupt a whole run; every check raises with a
message naming the offending argument instead.
"""
from __future__ import annotations

import difflib
import math
import numbers
from typing import Sequence

import torch

#: Inputs may overshoot [0, 1] by this much (float round-off of upstream resizes).
RANGE_TOL = 1e-6
#: Smallest supported side: the patch / codec types need a few pixels to work on.
MIN_SIDE = 8
MAX_LEVEL = 5


def check_image(x: object, what: str = 'x') -> None:
    """Raise unless ``x`` is a float (B,3,H,W) tensor with values in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f'{what} must be a torch.Tensor of shape (B,3,H,W), got {type(x).__name__}')
    if not (x.is_floating_point() and not x.is_complex()):
        raise ValueError(f'{what} must be a floating-point tensor with values in [0, 1], got dtype '
                         f'{x.dtype}; convert integer images with x.float() / 255')
    if x.ndim != 4:
        raise ValueError(f'{what} must have 4 dimensions (B,3,H,W), got ndim={x.ndim} '
                         f'(shape {tuple(x.shape)}); add a batch dimension with x[None]')
    if x.shape[1] != 3:
        raise ValueError(f'{what} must have 3 (RGB) channels in dim 1, got {x.shape[1]} '
                         f'(shape {tuple(x.shape)})')
    if x.shape[2] < MIN_SIDE or x.shape[3] < MIN_SIDE:
        raise ValueError(f'{what} is too small: spatial size {tuple(x.shape[2:])}, '
                         f'need at least {MIN_SIDE}x{MIN_SIDE}')
    if x.numel() == 0:
        return
    lo, hi = torch.aminmax(x.detach())
    lo, hi = float(lo), float(hi)
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError(f'{what} contains NaN values')
    if lo < -RANGE_TOL or hi > 1 + RANGE_TOL:
        raise ValueError(f'{what} values must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]'
                         + ('; divide 0-255 images by 255' if hi > 1.5 else ''))


def check_name(name: object, valid: Sequence[str]) -> str:
    """Return ``name`` if it is a known degradation, else raise listing the valid ones."""
    if not isinstance(name, str):
        raise TypeError(f'degradation name must be a str, got {type(name).__name__}')
    if name in valid:
        return name
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f' Did you mean {close[0]!r}?' if close else ''
    raise ValueError(f'unknown degradation {name!r}.{hint} Valid names: {", ".join(valid)}')


def check_level(level: object) -> float:
    """Return ``level`` as a float in [0, 5]; integers select KADID levels exactly."""
    if isinstance(level, torch.Tensor):
        if level.numel() != 1:
            raise ValueError(f'level must be a scalar, got a tensor of shape {tuple(level.shape)}')
        level = level.item()
    if isinstance(level, bool) or not isinstance(level, numbers.Real):
        raise TypeError(f'level must be an int (1-5, 0 = identity) or a float in [0, 5], '
                        f'got {type(level).__name__}')
    value = float(level)
    if not (0.0 <= value <= MAX_LEVEL):  # also rejects NaN
        raise ValueError(f'level must be in [0, {MAX_LEVEL}] (0 = identity), got {level!r}')
    return value
