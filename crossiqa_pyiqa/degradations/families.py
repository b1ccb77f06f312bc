"""Which *family* of quality problem each library type is, for diagnosing a photo (``crossiqa_pyiqa.explain``).

A user asks "is it blurred, noisy, over-compressed, too dark or too bright, flat, off in
colour?", not "is it ``lens_blur`` level 3?". This table is the one place that answers it:
every registered type (:data:`ALL_DEGRADATIONS`) maps to one family, or to ``None`` ("not
diagnosed": spatial damage and artefacts that no family describes, left out of the fit).
The diagnosis heads (``regression/diagnosis.py``) are fitted on targets made from it, and
the evidence (``scripts/explain_evidence.py``) scores against it; docs/EXPLAIN.md prints it.

Exposure is signed: its types are *dark* or *bright*, and ``mean_shift`` (whose sign is
drawn per image) is ``measured`` from the pixels. ``low_light`` is dark exposure *and*
noise (the library makes it by gain on an under-exposed raw, so both are in the image):
both heads are asked for its strength, and either family counts as a right reading.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from crossiqa_pyiqa.degradations._names import ALL_DEGRADATIONS

#: What ``explain`` reports, in this order.
FAMILIES: tuple[str, ...] = ('blur', 'noise', 'compression', 'exposure', 'contrast', 'colour')
#: The heads' outputs: the families, with exposure split by direction.
HEAD_OUTPUTS: tuple[str, ...] = ('blur', 'noise', 'compression', 'exposure_dark', 'exposure_bright', 'contrast',
                                 'colour')
#: Directions of exposure (``measured``: read from the pixels, for types whose sign is random).
DIRECTIONS = ('dark', 'bright', 'measured')


@dataclass(frozen=True)
class TypeFamily:
    """How one library type is diagnosed: its family (None: not diagnosed), exposure direction, and
    other families it carries at the same strength."""

    family: Optional[str]
    direction: Optional[str] = None
    also: tuple[str, ...] = ()
    note: str = ''

    @property
    def families(self) -> tuple[str, ...]:
        """Every family that counts as a right reading."""
        return () if self.family is None else (self.family, *self.also)


def _f(family: Optional[str], direction: Optional[str] = None, also: tuple[str, ...] = (), note: str = '') -> TypeFamily:
    return TypeFamily(family, direction, also, note)


#: Every registered type → its family. ``None``: not diagnosed (not fitted, reported as such).
TYPE_FAMILIES: dict[str, TypeFamily] = {
    'gaussian_blur': _f('blur'),
    'lens_blur': _f('blur'),
    'motion_blur': _f('blur'),
    'path_motion_blur': _f('blur', note='camera shake'),
    'defocus': _f('blur'),
    'white_noise': _f('noise'),
    'white_noise_color': _f('noise'),
    'impulse_noise': _f('noise'),
    'multiplicative_noise': _f('noise'),
    'camera_noise': _f('noise', note='sensor noise through a camera pipeline'),
    'jpeg': _f('compression'),
    'jpeg2000': _f('compression'),
    'darken': _f('exposure', 'dark'),
    'underexposure': _f('exposure', 'dark'),
    'low_light': _f('exposure', 'dark', also=('noise',), note='dark exposure brought up by gain: also noise'),
    'brighten': _f('exposure', 'bright'),
    'overexposure': _f('exposure', 'bright'),
    'mean_shift': _f('exposure', 'measured', note='offset of random sign: direction read from the pixels'),
    'contrast_change': _f('contrast', note='up or down (random per image)'),
    'color_saturation_1': _f('colour', note='desaturation'),
    'color_saturation_2': _f('colour', note='over-saturation'),
    'white_balance': _f('colour', note='colour cast'),
    'color_diffusion': _f('colour', note='chroma blurred and amplified'),
    'color_shift': _f(None, note='colour fringes along edges: too local for a global colour reading'),
    'denoise': _f(None, note='over-smoothed with blotches: neither blur nor noise'),
    'color_quantization': _f(None, note='palette banding'),
    'quantization': _f(None, note='grey-level banding'),
    'pixelate': _f(None, note='blocky resampling'),
    'jitter': _f(None, note='spatial warping'),
    'non_eccentricity_patch': _f(None, note='misplaced patches'),
    'color_block': _f(None, note='opaque coloured squares'),
    'high_sharpen': _f(None, note='over-sharpening halos'),
}

assert set(TYPE_FAMILIES) == set(ALL_DEGRADATIONS), sorted(set(TYPE_FAMILIES) ^ set(ALL_DEGRADATIONS))
assert all(t.family in FAMILIES + (None,) and set(t.also) <= set(FAMILIES) for t in TYPE_FAMILIES.values())

#: Types the heads are fitted on and judged by, in library order.
DIAGNOSED_TYPES: tuple[str, ...] = tuple(t for t in ALL_DEGRADATIONS if TYPE_FAMILIES[t].family is not None)
NOT_DIAGNOSED_TYPES: tuple[str, ...] = tuple(t for t in ALL_DEGRADATIONS if TYPE_FAMILIES[t].family is None)


def exposure_direction(name: str, pristine: torch.Tensor, degraded: torch.Tensor) -> Optional[str]:
    """'dark' / 'bright' for an exposure type (``measured``: the sign of the mean pixel change), else None."""
    entry = TYPE_FAMILIES[name]
    if entry.family != 'exposure':
        return None
    if entry.direction != 'measured':
        return entry.direction
    return 'bright' if float(degraded.float().mean() - pristine.float().mean()) > 0 else 'dark'


def targets(name: Optional[str], level: float, direction: Optional[str] = None) -> dict[str, float]:
    """Head targets of one image: ``level / 5`` on its family's output(s), 0 elsewhere (pristine: all 0).

    ``direction`` is the exposure direction ('dark' / 'bright', from :func:`exposure_direction`).
    """
    out = {k: 0.0 for k in HEAD_OUTPUTS}
    if name is None or level == 0:
        return out
    entry = TYPE_FAMILIES[name]
    if entry.family is None:
        raise ValueError(f'{name} is not diagnosed (crossiqa_pyiqa.degradations.families.TYPE_FAMILIES)')
    strength = min(max(float(level) / 5.0, 0.0), 1.0)
    for family in entry.families:
        if family == 'exposure':
            if direction not in ('dark', 'bright'):
                raise ValueError(f'{name}: exposure needs a direction (dark or bright), got {direction!r}')
            out[f'exposure_{direction}'] = strength
        else:
            out[family] = strength
    return out
