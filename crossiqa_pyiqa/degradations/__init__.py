"""Synthetic degradations: the 25 KADID-10k distortion types plus camera and tone families, 5 levels each, in torch.

Used to make (reference, degraded) pairs inside the pretext training loop, so they are
batched, run on the input's device (GPU when there is one; only JPEG / JPEG 2000 and the
camera pipelines' final JPEG go through Pillow on the CPU), are seeded by a
``torch.Generator`` and get strictly stronger with the level. The KADID parameters follow
KADID-10k's MATLAB reference (``imdist_generator.m``); deviations, each made so that
level 1 is not a no-op or so that strength grows with level, are listed in
``docs/DEGRADATIONS.md`` and next to each table. The camera family (``camera.py``:
sensor-pipeline noise, low light, exposure, white balance, camera shake, defocus) and the
tone family (``tone.py``: a wrong tone curve) go beyond KADID; they are registered but not
in :data:`DEGRADATIONS` (see :data:`CAMERA_DEGRADATIONS`, :data:`TONE_DEGRADATIONS`,
:data:`ALL_DEGRADATIONS`).

>>> y = apply(x, 'motion_blur', 3, generator=torch.Generator().manual_seed(0))
>>> y, specs = DegradationSampler(max_compose=2)(x, torch.Generator().manual_seed(0))

Levels: integers 1..5 use the type's table exactly, 0 is the identity; floats in [0, 5]
interpolate the parameter linearly between table entries (and from the identity value
below 1 where one exists); integer-valued parameters are rounded, and types without an
identity value round levels below 1.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from crossiqa_pyiqa.degradations import blur, brightness, color, compression, noise, sharpness, spatial  # noqa: F401  (registration)
# registered last, so the registry (and the sampler's type order) starts with the KADID types as before
from crossiqa_pyiqa.degradations import camera  # noqa: F401,E402  (registration)
from crossiqa_pyiqa.degradations import tone  # noqa: F401,E402  (registration)
from crossiqa_pyiqa.degradations._core import REGISTRY, Degradation, run
from crossiqa_pyiqa.degradations._names import (ALL_DEGRADATIONS, CAMERA_DEGRADATIONS, DEGRADATIONS,
                                                TONE_DEGRADATIONS, TYPE_GROUPS, resolve_types)
from crossiqa_pyiqa.degradations._validate import check_image, check_level, check_name
from crossiqa_pyiqa.degradations.compression import jpeg2000_available, set_codec_threads
from crossiqa_pyiqa.degradations.sampler import DegradationSampler

assert set(ALL_DEGRADATIONS) == set(REGISTRY), sorted(set(ALL_DEGRADATIONS) ^ set(REGISTRY))
assert len(ALL_DEGRADATIONS) == len(set(ALL_DEGRADATIONS))

#: Types whose output depends on the generator (all registered types).
RANDOM_DEGRADATIONS: frozenset[str] = frozenset(n for n in ALL_DEGRADATIONS if REGISTRY[n].random)
#: Types implemented with a CPU codec round trip (everything else is pure torch).
CODEC_DEGRADATIONS: frozenset[str] = frozenset(n for n in ALL_DEGRADATIONS if not REGISTRY[n].torch_native)

__all__ = ['DEGRADATIONS', 'CAMERA_DEGRADATIONS', 'TONE_DEGRADATIONS', 'ALL_DEGRADATIONS', 'TYPE_GROUPS',
           'resolve_types', 'RANDOM_DEGRADATIONS', 'CODEC_DEGRADATIONS', 'apply', 'DegradationSampler',
           'info', 'parameter', 'jpeg2000_available', 'set_codec_threads']


def info(name: str) -> Degradation:
    """Table, parameter name and flags of one type."""
    return REGISTRY[check_name(name, ALL_DEGRADATIONS)]


def parameter(name: str, level: Union[int, float]) -> Optional[float]:
    """Parameter value used at ``level`` (``None`` for the identity)."""
    deg = info(name)
    lv = deg.effective_level(check_level(level))
    return None if lv == 0 else deg.param(lv)


def apply(x: torch.Tensor, name: str, level: Union[int, float],
          generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Degrade every image of ``x`` (B,3,H,W, float in [0,1]) with type ``name`` at ``level``.

    Returns a new tensor of the same shape, dtype and device, clamped to [0, 1], without an
    autograd graph (this generates training data); level 0 returns a clone. ``level`` is an
    int 1-5 (the type's table) or a float in [0, 5] (interpolated parameter, see module doc).
    Random types draw from ``generator`` (the global RNG if ``None``),
    image by image in batch order, on the generator's device, so a CPU generator works for
    CUDA inputs and the same seed reproduces the output.
    """
    check_image(x)
    check_name(name, ALL_DEGRADATIONS)
    lv = check_level(level)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f'generator must be a torch.Generator or None, got {type(generator).__name__}')
    if lv == 0:
        return x.clone()
    b = x.shape[0]
    return run(x, name, [lv] * b, [generator] * b)
