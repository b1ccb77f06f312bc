"""Half precision and autocast for the plugin's networks: weights may go low, statistics may not.

``net.half()`` (or ``.bfloat16()``) casts every floating tensor of a module. The fitted head
and the feature statistics (standardisation, pristine covariance, zero-shot direction) are
not network weights: rounded to float16 they turn scores into noise (a float16 copy of
``crossiqa-zs`` scored 0.0 for noise and for black). :func:`apply_keeping_float32` is the
body of the networks' ``_apply``: the casts apply, then those entries are put back in
float32 on the new device. Features are computed in the network's dtype (or under
``torch.autocast``) and the head reads them in float32, so the score is always float32.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

LOW_PRECISION = (torch.float16, torch.bfloat16)


def apply_keeping_float32(module: nn.Module, apply: Callable, fn: Callable, recurse: bool,
                          buffers: Iterable[str], children: Iterable[str]) -> nn.Module:
    """``apply(fn, recurse)`` (``super()._apply``), then float32 back for ``buffers`` of ``module`` and the
    parameters of its child modules ``children`` where the cast made them float16/bfloat16."""
    keep_buffers = {n: b for n, b in module._buffers.items()
                    if n in set(buffers) and b is not None and b.dtype == torch.float32}
    keep_params = {}
    for child_name in children:
        child = getattr(module, child_name, None)
        if isinstance(child, nn.Module):
            for name, p in child.named_parameters():
                if p.dtype == torch.float32:
                    keep_params[(child_name, name)] = p.detach().clone()
    apply(fn, recurse)
    for name, old in keep_buffers.items():
        new = module._buffers[name]
        if new is not None and new.dtype in LOW_PRECISION:
            module._buffers[name] = old.to(new.device)
    for (child_name, name), old in keep_params.items():
        child = getattr(module, child_name)
        *path, leaf = name.split('.')
        owner = child.get_submodule('.'.join(path)) if path else child
        p = owner._parameters[leaf]
        if p is not None and p.dtype in LOW_PRECISION:
            p.data = old.to(p.device)
    return module


def module_dtype(module: nn.Module, default: torch.dtype = torch.float32) -> torch.dtype:
    """The floating dtype of a module's first floating parameter (its compute dtype)."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return default


def full_precision(device: torch.device):
    """A context in which autocast is off (the head and statistics run in float32)."""
    return torch.autocast(device_type=device.type, enabled=False)
