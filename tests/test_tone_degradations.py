"""Tests for the tone family of crossiqa_pyiqa.degradations: a wrong tone curve moves the
mid-tones, keeps black, white and every pixel's order, and gets stronger with the level.

The contract every type shares (strictly falling PSNR, level 0 identity, reproducibility,
batch == one by one, dtypes) runs over all registered types in tests/test_degradations.py.
"""
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import pytest  # noqa: E402
import torch  # noqa: E402

from crossiqa_pyiqa.degradations import (  # noqa: E402
    ALL_DEGRADATIONS, CAMERA_DEGRADATIONS, RANDOM_DEGRADATIONS, TONE_DEGRADATIONS, DegradationSampler, apply, info,
    parameter, resolve_types,
)
from crossiqa_pyiqa.degradations.families import TYPE_FAMILIES, type_direction  # noqa: E402

from test_degradations import IMAGES, _skimage  # noqa: E402  (the same three photos)


@pytest.fixture(scope='module')
def stack():
    return torch.cat([_skimage(n) for n in IMAGES])


def _luma(x):
    return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]


def test_tone_family_registered_last_with_its_table():
    assert TONE_DEGRADATIONS == ('tone_dark', 'tone_bright')
    assert ALL_DEGRADATIONS[-2:] == TONE_DEGRADATIONS and ALL_DEGRADATIONS[25:33] == CAMERA_DEGRADATIONS
    assert not RANDOM_DEGRADATIONS & set(TONE_DEGRADATIONS)       # deterministic curves
    for name in TONE_DEGRADATIONS:
        assert [parameter(name, lv) for lv in range(1, 6)] == [1.25, 1.5, 1.8, 2.2, 2.7]
        assert info(name).identity == 1.0 and info(name).param_name == 'gamma'
        assert parameter(name, 0.5) == pytest.approx(1.125)         # interpolated from the identity gamma 1
    assert resolve_types(['tone']) == list(TONE_DEGRADATIONS)
    assert resolve_types(['kadid', 'camera']) == list(ALL_DEGRADATIONS[:33])


def test_black_white_and_order_kept_mid_tones_moved():
    """On a grey ramp: the end points stay, the curve is strictly increasing, and mid-grey moves
    strictly further with each level (down for tone_dark, up for tone_bright)."""
    ramp = torch.linspace(0, 1, 256).view(1, 1, 1, 256).expand(1, 3, 8, 256).contiguous()
    for name, sign in (('tone_dark', -1), ('tone_bright', 1)):
        mids = []
        for lv in range(1, 6):
            y = apply(ramp, name, lv)[0, 0, 0]
            assert float(y[0]) == 0 and float(y[-1]) == pytest.approx(1.0)
            assert bool((y[1:] > y[:-1]).all()), f'{name} level {lv} is not strictly increasing'
            mids.append(float(y[128]))
        shift = [sign * (m - float(ramp[0, 0, 0, 128])) for m in mids]
        assert all(0 < a < b for a, b in zip(shift, shift[1:])), (name, mids)


def test_tone_dark_pulls_shadows_down_more_than_highlights(stack):
    """x^gamma: a pixel at 0.9 loses less than one at 0.4 would relative to its value; on photos the
    mean luminance falls strictly with the level while the brightest percentile stays near white."""
    means = [float(_luma(apply(stack, 'tone_dark', lv)).mean()) for lv in range(6)]
    assert all(a > b for a, b in zip(means, means[1:])), means
    x = torch.tensor([0.4, 0.9]).repeat_interleave(4).view(1, 1, 1, 8).expand(1, 3, 8, 8).contiguous()
    y = apply(x, 'tone_dark', 3)[0, 0, 0]
    assert float(y[-1] / 0.9) > float(y[0] / 0.4)


def test_tone_bright_lifts_mid_tones_and_compresses_highlights(stack):
    """1 - (1 - x)^gamma: mean luminance rises with the level, and the tonal spread of the pixels
    that were highlights (luma >= 0.6) falls: they are squeezed toward white."""
    highlights = _luma(stack) >= 0.6
    lumas = [_luma(apply(stack, 'tone_bright', lv)) for lv in range(6)]
    means = [float(v.mean()) for v in lumas]
    spread = [float(v[highlights].std()) for v in lumas]
    assert all(a < b for a, b in zip(means, means[1:])), means
    assert all(a > b for a, b in zip(spread, spread[1:])), spread


@pytest.mark.parametrize('name', TONE_DEGRADATIONS)
def test_ssim_falls_strictly_with_level(name, stack):
    pyiqa = pytest.importorskip('pyiqa')
    metric = pyiqa.create_metric('ssimc', device='cpu')
    ss = torch.stack([metric(apply(stack, name, lv), stack).flatten() for lv in range(1, 6)])
    for i, iname in enumerate(IMAGES):
        col = ss[:, i].tolist()
        assert all(a > b for a, b in zip(col, col[1:])), f'{name} on {iname}: ssimc {col}'


def test_bad_levels_and_images_are_refused(stack):
    with pytest.raises(ValueError, match='level'):
        apply(stack, 'tone_dark', 6)
    with pytest.raises(ValueError, match='level'):
        apply(stack, 'tone_bright', float('nan'))
    with pytest.raises(ValueError):
        apply(stack * 2, 'tone_dark', 1)                       # outside [0, 1]
    with pytest.raises(ValueError, match="Did you mean 'tone_dark'"):
        apply(stack, 'tone_drak', 1)


def test_diagnosed_as_exposure_and_drawn_by_the_sampler(stack):
    assert TYPE_FAMILIES['tone_dark'].family == TYPE_FAMILIES['tone_bright'].family == 'exposure'
    assert type_direction('tone_dark') == 'dark' and type_direction('tone_bright') == 'bright'
    sampler = DegradationSampler(weights={'tone_dark': 1.0, 'tone_bright': 1.0}, identity_prob=0.0, max_compose=1)
    y, specs = sampler(stack, torch.Generator().manual_seed(0))
    assert {s[0][0] for s in specs} <= set(TONE_DEGRADATIONS) and all(len(s) == 1 for s in specs)
    for i, spec in enumerate(specs):
        name, level = spec[0]
        assert torch.allclose(y[i:i + 1], apply(stack[i:i + 1], name, level), atol=1e-6)
