"""Type names of the library, by family (kept apart from ``__init__`` so the sampler can use them)."""
from __future__ import annotations

#: The 25 KADID-10k types in the dataset's order (type ids 1..25).
DEGRADATIONS: tuple[str, ...] = (
    'gaussian_blur', 'lens_blur', 'motion_blur',
    'color_diffusion', 'color_shift', 'color_quantization', 'color_saturation_1', 'color_saturation_2',
    'jpeg2000', 'jpeg',
    'white_noise', 'white_noise_color', 'impulse_noise', 'multiplicative_noise', 'denoise',
    'brighten', 'darken', 'mean_shift',
    'jitter', 'non_eccentricity_patch', 'pixelate', 'quantization', 'color_block',
    'high_sharpen', 'contrast_change',
)

#: The camera family (beyond KADID, ``camera.py``): sensor pipeline noise, exposure, colour
#: cast, camera shake and defocus.
CAMERA_DEGRADATIONS: tuple[str, ...] = (
    'camera_noise', 'low_light', 'overexposure', 'underexposure', 'white_balance',
    'path_motion_blur', 'defocus', 'camera_grain',
)

#: The tone family (``tone.py``): a wrong tone curve, mid-tones moved with black and white kept.
TONE_DEGRADATIONS: tuple[str, ...] = ('tone_dark', 'tone_bright')

#: Every registered type: the KADID types first (in KADID order), then the camera and tone families.
ALL_DEGRADATIONS: tuple[str, ...] = DEGRADATIONS + CAMERA_DEGRADATIONS + TONE_DEGRADATIONS

#: Shorthands accepted where a list of types is configured (ranking pairs, ranking benchmark).
TYPE_GROUPS: dict[str, tuple[str, ...]] = {
    'kadid': DEGRADATIONS, 'camera': CAMERA_DEGRADATIONS, 'tone': TONE_DEGRADATIONS, 'all': ALL_DEGRADATIONS,
}


def resolve_types(types, what: str = 'types') -> list[str]:
    """Expand a list of type names and group shorthands (``kadid``, ``camera``, ``tone``, ``all``) into
    distinct type names in the given order; a single string is one entry. Raises
    ``ValueError`` naming unknown entries (with the valid names) or an empty list."""
    if isinstance(types, str):
        types = [types]
    try:
        entries = list(types)
    except TypeError:
        raise TypeError(f'{what} must be a list of degradation type names, got {type(types).__name__}') from None
    out: list[str] = []
    bad = []
    for entry in entries:
        if not isinstance(entry, str):
            bad.append(entry)
            continue
        names = TYPE_GROUPS.get(entry.lower(), (entry,) if entry in ALL_DEGRADATIONS else None)
        if names is None:
            bad.append(entry)
            continue
        out.extend(n for n in names if n not in out)
    if bad or not out:
        raise ValueError(f'{what}: unknown or empty {bad if bad else entries!r}; valid: the shorthands '
                         f'{", ".join(TYPE_GROUPS)} or type names {", ".join(ALL_DEGRADATIONS)}')
    return out
