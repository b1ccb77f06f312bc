"""Which *family* of quality problem each library type is, for diagnosing a photo (``crossiqa_pyiqa.explain``).

A user asks "is it blurred, noisy, over-compressed, too dark or too bright, flat, off in
colour?", not "is it ``lens_blur`` level 3?". This table is the one place that answers it:
every registered type (:data:`ALL_DEGRADATIONS`) maps to one family, or to ``None`` ("not
diagnosed": spatial damage and artefacts that no family describes, left out of the fit).
The diagnosis heads (``regression/diagnosis.py``) are fitted on targets made from it, and
the evidence (``scripts/explain_evidence.py``) scores against it; docs/EXPLAIN.md prints it.

Three families have *directions*, each with its own head, because a linear head cannot
read "away from normal in either direction" (more contrast and less contrast move the
features opposite ways): exposure is ``dark`` or ``bright``, contrast ``low`` or ``high``,
colour ``faded`` (desaturated), ``vivid`` (over-saturated) or ``cast``. A family's strength
is the largest of its heads (:func:`family_strengths`). Types whose sign is drawn per image
(``mean_shift``, ``contrast_change``) have their direction ``measured`` from the pixels
(:func:`measured_direction`). ``low_light`` is dark exposure *and* noise (the library makes
it by gain on an under-exposed raw, so both are in the image): both heads are asked for its
strength, and either family counts as a right reading.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from crossiqa_pyiqa.degradations._names import ALL_DEGRADATIONS

#: What ``explain`` reports, in this order.
FAMILIES: tuple[str, ...] = ('blur', 'noise', 'compression', 'exposure', 'contrast', 'colour')
#: Directions of the families that have them (a head each); ``measured``: read from the pixels.
DIRECTIONS: dict[str, tuple[str, ...]] = {'exposure': ('dark', 'bright'), 'contrast': ('low', 'high'),
                                          'colour': ('faded', 'vivid', 'cast')}
#: The heads' outputs: one per family, one per direction for the families that have them.
HEAD_OUTPUTS: tuple[str, ...] = tuple(o for f in FAMILIES for o in ([f'{f}_{d}' for d in DIRECTIONS[f]]
                                                                  if f in DIRECTIONS else [f]))


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


#: Every library type → its family. ``None``: not diagnosed (not fitted, reported as such). Types named here
#: that this version of the library does not register are ignored (see ``TYPE_FAMILIES``).
FAMILY_TABLE: dict[str, TypeFamily] = {
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
    'camera_grain': _f('noise', note='luma grain over intact detail'),
    'jpeg': _f('compression'),
    'jpeg2000': _f('compression'),
    'darken': _f('exposure', 'dark'),
    'underexposure': _f('exposure', 'dark'),
    'low_light': _f('exposure', 'dark', also=('noise',), note='dark exposure brought up by gain: also noise'),
    'brighten': _f('exposure', 'bright'),
    'overexposure': _f('exposure', 'bright'),
    'tone_dark': _f('exposure', 'dark', note='mid-tones pulled down by a tone curve, black and white kept'),
    'tone_bright': _f('exposure', 'bright', note='mid-tones lifted, highlights compressed toward white'),
    'mean_shift': _f('exposure', 'measured', note='offset of random sign: direction read from the pixels'),
    'contrast_change': _f('contrast', 'measured', note='up or down (random per image): read from the pixels'),
    'color_saturation_1': _f('colour', 'faded', note='desaturation'),
    'color_saturation_2': _f('colour', 'vivid', note='over-saturation'),
    'white_balance': _f('colour', 'cast', note='colour cast'),
    'color_diffusion': _f('colour', 'vivid', note='chroma blurred and amplified'),
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

#: The registered types' entries. A registered type missing from the table is not diagnosed until it is added
#: (``tests/test_explain.py`` fails until then), so adding a type never breaks ``explain``.
TYPE_FAMILIES: dict[str, TypeFamily] = {
    t: FAMILY_TABLE.get(t, _f(None, note='not in the family table yet')) for t in ALL_DEGRADATIONS}
assert all(t.family in FAMILIES + (None,) and set(t.also) <= set(FAMILIES) for t in TYPE_FAMILIES.values())
assert all((t.direction in (*DIRECTIONS[t.family], 'measured')) if t.family in DIRECTIONS else t.direction is None
           for t in TYPE_FAMILIES.values())

#: Types the heads are fitted on and judged by, in library order.
DIAGNOSED_TYPES: tuple[str, ...] = tuple(t for t in ALL_DEGRADATIONS if TYPE_FAMILIES[t].family is not None)
NOT_DIAGNOSED_TYPES: tuple[str, ...] = tuple(t for t in ALL_DEGRADATIONS if TYPE_FAMILIES[t].family is None)


def _luminance(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return 0.299 * x[..., 0, :, :] + 0.587 * x[..., 1, :, :] + 0.114 * x[..., 2, :, :]


def measured_direction(family: str, pristine: torch.Tensor, degraded: torch.Tensor) -> str:
    """The direction a degradation took, from the pixels: exposure by the mean luminance, contrast by its spread."""
    before, after = _luminance(pristine), _luminance(degraded)
    if family == 'exposure':
        return 'bright' if float(after.mean() - before.mean()) > 0 else 'dark'
    if family == 'contrast':
        return 'high' if float(after.std() - before.std()) > 0 else 'low'
    raise ValueError(f'{family} has no measured direction')


def type_direction(name: str, pristine: torch.Tensor | None = None, degraded: torch.Tensor | None = None
                   ) -> Optional[str]:
    """The direction of one degraded image of type ``name`` (None for families without directions)."""
    entry = TYPE_FAMILIES[name]
    if entry.family not in DIRECTIONS:
        return None
    if entry.direction != 'measured':
        return entry.direction
    if pristine is None or degraded is None:
        raise ValueError(f'{name}: the direction is measured from the pixels; pass the pristine and degraded images')
    return measured_direction(entry.family, pristine, degraded)


def exposure_direction(name: str, pristine: torch.Tensor, degraded: torch.Tensor) -> Optional[str]:
    """'dark' / 'bright' for an exposure type, else None."""
    return type_direction(name, pristine, degraded) if TYPE_FAMILIES[name].family == 'exposure' else None


def targets(name: Optional[str], level: float, direction: Optional[str] = None) -> dict[str, float]:
    """Head targets of one image: ``level / 5`` on its family's output(s), 0 elsewhere (pristine: all 0).

    ``direction`` is the image's direction for families that have them (:func:`type_direction`).
    """
    out = {k: 0.0 for k in HEAD_OUTPUTS}
    if name is None or level == 0:
        return out
    entry = TYPE_FAMILIES[name]
    if entry.family is None:
        raise ValueError(f'{name} is not diagnosed (crossiqa_pyiqa.degradations.families.TYPE_FAMILIES)')
    strength = min(max(float(level) / 5.0, 0.0), 1.0)
    for family in entry.families:
        if family in DIRECTIONS:
            if direction not in DIRECTIONS[family]:
                raise ValueError(f'{name}: {family} needs a direction in {DIRECTIONS[family]}, got {direction!r}')
            out[f'{family}_{direction}'] = strength
        else:
            out[family] = strength
    return out


def family_strengths(outputs: dict[str, float]) -> tuple[dict[str, float], dict[str, Optional[str]]]:
    """``(strength per family, direction per family with directions)`` from the heads' outputs: a family's
    strength is its largest head, its direction that head's."""
    strengths, directions = {}, {}
    for family in FAMILIES:
        if family in DIRECTIONS:
            best = max(DIRECTIONS[family], key=lambda d: outputs.get(f'{family}_{d}', 0.0))
            strengths[family] = float(outputs.get(f'{family}_{best}', 0.0))
            directions[family] = best
        else:
            strengths[family] = float(outputs.get(family, 0.0))
    return strengths, directions
