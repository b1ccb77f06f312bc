"""Tests for the camera family of crossiqa_pyiqa.degradations (beyond KADID): each type is
checked for the physical behaviour it claims, on real images or synthetic targets.

The contract tests every type shares (strictly falling PSNR, level 0 identity,
reproducibility, batch == one by one, dtypes, CUDA with a CPU generator) run over all
registered types in tests/test_degradations.py.
"""
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from crossiqa_pyiqa.degradations import (  # noqa: E402
    ALL_DEGRADATIONS, CAMERA_DEGRADATIONS, CODEC_DEGRADATIONS, DEGRADATIONS, RANDOM_DEGRADATIONS,
    apply, info, parameter, resolve_types,
)
from crossiqa_pyiqa.degradations import camera  # noqa: E402
from crossiqa_pyiqa.degradations._ops import linear_to_srgb, srgb_to_linear  # noqa: E402

from test_degradations import IMAGES, _skimage  # noqa: E402  (the same three photos)


@pytest.fixture(scope='module')
def stack():
    return torch.cat([_skimage(n) for n in IMAGES])


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _psnr(a, b):
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else -10 * math.log10(mse)


def _corr(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).mean() / (a.std() * b.std()))


def _impulse(size=64):
    x = torch.zeros(1, 3, size, size)
    x[..., size // 2, size // 2] = 1
    return x


def _psf_geometry(k, frac=0.01):
    """Centroid, covariance eigenvalues and the largest distance of the support (weights above
    ``frac`` of the peak) from the principal axis of a 2-D PSF."""
    n, m = k.shape
    ys, xs = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(m, dtype=torch.float64), indexing='ij')
    w = k.double().clamp(min=0)
    w = w / w.sum()
    cy, cx = float((w * ys).sum()), float((w * xs).sum())
    cov = torch.tensor([[(w * (ys - cy) ** 2).sum(), (w * (ys - cy) * (xs - cx)).sum()],
                        [(w * (ys - cy) * (xs - cx)).sum(), (w * (xs - cx) ** 2).sum()]])
    ev, evec = torch.linalg.eigh(cov)
    dist = ((ys - cy) * evec[0, 0] + (xs - cx) * evec[1, 0]).abs()
    angle = math.atan2(float(evec[0, 1]), float(evec[1, 1])) % math.pi
    return (cy, cx), ev.tolist(), float(dist[k > frac * k.max()].max()), angle


# ------------------------------------------------------------------ registry and tables

def test_camera_family_registered_after_kadid():
    assert CAMERA_DEGRADATIONS == ('camera_noise', 'low_light', 'overexposure', 'underexposure', 'white_balance',
                                   'path_motion_blur', 'defocus', 'camera_grain')
    assert ALL_DEGRADATIONS[:25] == DEGRADATIONS and ALL_DEGRADATIONS[25:33] == CAMERA_DEGRADATIONS
    assert {'camera_noise', 'low_light', 'camera_grain'} <= CODEC_DEGRADATIONS
    assert RANDOM_DEGRADATIONS & set(CAMERA_DEGRADATIONS) == {'camera_noise', 'low_light', 'white_balance',
                                                              'path_motion_blur', 'camera_grain'}
    tables = {n: [parameter(n, lv) for lv in range(1, 6)] for n in CAMERA_DEGRADATIONS}
    assert tables == {'camera_noise': [400, 800, 1600, 3200, 6400], 'low_light': [1, 2, 3, 4, 5],
                      'overexposure': [0.3, 0.6, 1.0, 1.5, 2.0], 'underexposure': [0.3, 0.6, 1.0, 1.5, 2.5],
                      'white_balance': [0.2, 0.4, 0.7, 1.0, 1.5], 'path_motion_blur': [3, 5, 8, 12, 17],
                      'defocus': [1, 2, 3.5, 5, 7], 'camera_grain': [200, 400, 800, 1600, 3200]}
    for name in CAMERA_DEGRADATIONS:
        deg = info(name)
        assert deg.summary and deg.param_name
        # pipelines with demosaicing and JPEG have no "unchanged" parameter value
        assert (deg.identity is None) == (name in ('camera_noise', 'low_light', 'camera_grain'))


def test_type_groups_resolve():
    assert resolve_types(['camera']) == list(CAMERA_DEGRADATIONS)
    assert resolve_types('all') == list(ALL_DEGRADATIONS)
    assert resolve_types(['jpeg', 'camera', 'defocus']) == ['jpeg', *CAMERA_DEGRADATIONS]
    assert resolve_types(['KADID']) == list(DEGRADATIONS)
    with pytest.raises(ValueError, match=r"unknown or empty \['camera_nosie'\]"):
        resolve_types(['camera_nosie'])
    with pytest.raises(ValueError, match='unknown or empty'):
        resolve_types([])


def test_unknown_camera_name_suggests_the_right_one(stack):
    with pytest.raises(ValueError, match="Did you mean 'camera_noise'"):
        apply(stack, 'camera_nosie', 1)


# ------------------------------------------------------------------ strength vs level

@pytest.mark.parametrize('name', CAMERA_DEGRADATIONS)
def test_ssim_falls_strictly_with_level(name, stack):
    """Colour SSIM (pyiqa ``ssimc``, per RGB channel) falls strictly 1 -> 5 on every image for
    every camera type, and luma SSIM (``ssim``) too except for ``white_balance``, whose casts
    keep the luminance by design (luma SSIM stays at 0.999 +- 1e-4, i.e. it is blind to them)."""
    pyiqa = pytest.importorskip('pyiqa')
    metrics = {'ssimc': pyiqa.create_metric('ssimc', device='cpu')}
    if name != 'white_balance':
        metrics['ssim'] = pyiqa.create_metric('ssim', device='cpu')
    ys = [apply(stack, name, lv, generator=_gen(0)) for lv in range(1, 6)]
    for mname, metric in metrics.items():
        ss = torch.stack([metric(y, stack).flatten() for y in ys])
        for i, iname in enumerate(IMAGES):
            col = ss[:, i].tolist()
            assert all(a > b for a, b in zip(col, col[1:])), f'{name} on {iname}: {mname} {col}'


@pytest.mark.parametrize('name', CAMERA_DEGRADATIONS)
def test_continuous_levels(name, stack):
    x = stack[1:2]
    p2, p25, p3 = (_psnr(apply(x, name, lv, generator=_gen(0)), x) for lv in (2, 2.5, 3))
    assert p2 > p25 > p3, (name, p2, p25, p3)
    lo, hi = parameter(name, 2), parameter(name, 3)
    assert parameter(name, 2.5) == pytest.approx((lo + hi) / 2)
    if info(name).identity is None:            # camera pipelines: levels below 1 round
        assert torch.equal(apply(x, name, 0.4, generator=_gen(0)), x)
        assert torch.equal(apply(x, name, 0.6, generator=_gen(0)), apply(x, name, 1, generator=_gen(0)))
    else:                                      # interpolated from the identity value
        assert parameter(name, 0.5) == pytest.approx(info(name).table[0] / 2)
        assert math.isfinite(_psnr(apply(x, name, 0.5, generator=_gen(0)), x))


@pytest.mark.parametrize('name', CAMERA_DEGRADATIONS)
@pytest.mark.parametrize('hw', [(8, 8), (9, 13), (31, 16)])
def test_small_and_odd_sizes(name, hw):
    """The Bayer pipeline mirror-pads odd sizes (keeping the colour-filter phase) and crops back;
    8x8 (the library's minimum) works for every type."""
    x = _skimage('coffee', 32)[..., :hw[0], :hw[1]].expand(2, -1, -1, -1).contiguous()
    y = apply(x, name, 3, generator=_gen(0))
    assert y.shape == x.shape and torch.isfinite(y).all() and 0 <= float(y.min()) and float(y.max()) <= 1
    assert not torch.equal(y, x)


# ------------------------------------------------------------------ building blocks

def test_fast_srgb_curves_match_the_exact_ones():
    x = torch.linspace(0, 1, 100001)
    assert float((camera.to_linear(x).double() - srgb_to_linear(x.double())).abs().max()) < 1.5e-5
    assert float((camera.to_srgb(x).double() - linear_to_srgb(x.double())).abs().max()) < 1.5e-5
    ends = torch.tensor([0.0, 1.0])                   # exact at both ends: black stays black
    torch.testing.assert_close(camera.to_linear(ends), ends, atol=3e-7, rtol=0)
    torch.testing.assert_close(camera.to_srgb(ends), ends, atol=3e-7, rtol=0)


def test_demosaic_is_exact_on_flat_colour_and_ramps():
    """Malvar-He-Cutler reproduces constant colour and linear ramps exactly (its design
    property), here through the pipeline's plane layout and mirrored Bayer border."""
    ys, xs = torch.meshgrid(torch.arange(24, dtype=torch.float64), torch.arange(32, dtype=torch.float64),
                            indexing='ij')
    flat = torch.tensor([0.2, 0.5, 0.7], dtype=torch.float64).view(1, 3, 1, 1).expand(1, 3, 24, 32)
    ramp = torch.stack([0.01 * xs + 0.003 * ys, 0.005 * xs + 0.01 * ys, 0.002 * xs + 0.002 * ys])[None]
    for img in (flat, ramp):
        img = img.double()
        planes = torch.stack([img[:, c, py::2, px::2] for py, px, c in camera._CFA], 1)
        out = camera.demosaic_mhc(camera._cfa_border(planes))                   # (1,3,4,h,w)
        full = F.pixel_shuffle(out.reshape(1, 12, 12, 16), 2)
        err = (full - img).abs()[..., 2:-2, 2:-2]                               # ramps: the mirror bends them
        assert float(err.max()) < 1e-9
    # the mirrored border keeps each site's colour: a flat colour stays exact up to the edge
    planes = torch.stack([flat.double()[:, c, py::2, px::2] for py, px, c in camera._CFA], 1)
    full = F.pixel_shuffle(camera.demosaic_mhc(camera._cfa_border(planes)).reshape(1, 12, 12, 16), 2)
    assert float((full - flat.double()).abs().max()) < 1e-12


# ------------------------------------------------------------------ camera_noise / low_light

def test_camera_noise_is_correlated_grain_with_chroma_blotches():
    """Demosaicing and in-camera denoising make the noise spatially correlated (neighbouring
    pixels move together) with low-frequency colour blotches; KADID's white noise is i.i.d."""
    x = torch.full((2, 3, 96, 96), 0.5)
    for name, level in (('white_noise', 3), ('camera_noise', 3), ('camera_noise', 5), ('low_light', 3)):
        r = (apply(x, name, level, generator=_gen(0)) - x)[..., 8:-8, 8:-8]
        luma, chroma = r.mean(1), r[:, 0] - r[:, 2]
        c1 = _corr(luma[..., :-1], luma[..., 1:])
        c4 = _corr(chroma[..., :-4], chroma[..., 4:])
        if name == 'white_noise':
            assert abs(c1) < 0.05 and abs(c4) < 0.05, (c1, c4)
        else:
            assert c1 > 0.3, (name, level, c1)                 # grain, not per-pixel noise
            assert c4 > 0.4, (name, level, c4)                 # chroma blotches 4+ px wide
            assert float(chroma.std()) > 0.25 * float(luma.std()), (name, level)


def test_camera_grain_keeps_the_detail_camera_noise_erases():
    """``camera_grain`` (no Bayer-domain denoising) leaves fine detail intact under its grain, where
    ``camera_noise``'s phone-style denoising erases it: on a fine texture at the same ISO, the
    residual after removing the noise (a 5x5 median over many seeds would be slow; instead the
    mean of 8 noise draws) keeps more of the texture's high-pass energy. Its noise is luma grain
    correlated over neighbouring pixels."""
    x = _skimage('chelsea', 96).expand(8, -1, -1, -1).contiguous()      # one photo, 8 noise draws

    def kept_detail(name: str, level: int) -> float:
        y = apply(x, name, level, generator=_gen(3)).mean(0, keepdim=True)  # noise averages out
        hp = lambda t: t - F.avg_pool2d(t, 3, 1, 1, count_include_pad=False)
        return float((hp(y) * hp(x[:1]))[..., 8:-8, 8:-8].sum() / (hp(x[:1]) ** 2)[..., 8:-8, 8:-8].sum())

    # camera_grain at ISO 1600 (level 4) vs camera_noise at ISO 1600 (level 3)
    assert kept_detail('camera_grain', 4) > kept_detail('camera_noise', 3) + 0.1
    r = (apply(torch.full((2, 3, 96, 96), 0.5), 'camera_grain', 3, generator=_gen(0)) - 0.5)[..., 8:-8, 8:-8]
    luma = r.mean(1)
    assert _corr(luma[..., :-1], luma[..., 1:]) > 0.3


def test_camera_noise_has_shot_noise():
    """Noise std (in linear light) is several times larger on a mid-grey patch than on a dark
    one: shot noise grows with the signal; a read-noise-only model would give equal std."""
    x = torch.zeros(1, 3, 128, 128)
    x[..., :64] = 0.12                       # linear 0.013
    x[..., 64:] = 0.6                        # linear 0.32
    for level in (1, 3, 5):
        r = camera.to_linear(apply(x, 'camera_noise', level, generator=_gen(0))) - camera.to_linear(x)
        dark, mid = float(r[..., 16:-16, 12:52].std()), float(r[..., 16:-16, 76:116].std())
        assert mid > 2.5 * dark, (level, dark, mid)


def test_camera_noise_grows_per_sample_from_one_field():
    """Common random numbers: one unit noise field per image, scaled by the ISO, so the
    residuals of two levels are strongly correlated and the stronger one is larger."""
    x = torch.full((1, 3, 96, 96), 0.45)
    r = [(apply(x, 'camera_noise', lv, generator=_gen(7)) - x)[..., 8:-8, 8:-8].mean(1) for lv in (1, 3, 5)]
    assert float(r[0].std()) < float(r[1].std()) < float(r[2].std())
    assert _corr(r[1], r[2]) > 0.6
    other = (apply(x, 'camera_noise', 5, generator=_gen(8)) - x)[..., 8:-8, 8:-8].mean(1)
    assert abs(_corr(r[2], other)) < 0.1


def test_low_light_is_noisy_dull_and_crushes_blacks(stack):
    """Colours get duller with level, brightness stays roughly the same, and shadows end up
    darker (crushed) than ``camera_noise`` leaves them at the same effective ISO, whose noise
    floor lifts the blacks."""
    def chroma(y):
        b = F.avg_pool2d(y, 8)
        return (b - b.mean(1, keepdim=True)).abs().mean((1, 2, 3))

    dark = stack.mean(1) < 0.1
    dark_mean = lambda y: [float(y[i].mean(0)[dark[i]].mean()) for i in range(len(y))]  # noqa: E731
    ratios = []
    for ev in range(1, 6):
        y = apply(stack, 'low_light', ev, generator=_gen(0))
        ratios.append(chroma(y) / chroma(stack))
        bright = y.mean((1, 2, 3)) / stack.mean((1, 2, 3))
        assert bool(((bright > 0.9) & (bright < 1.05)).all()), (ev, bright)
        if ev <= 4:                           # camera_noise at ISO 400 * 2^EV is level EV + 1
            same_iso = apply(stack, 'camera_noise', ev + 1, generator=_gen(0))
            for a, b in zip(dark_mean(y), dark_mean(same_iso)):
                assert a < b, (ev, dark_mean(y), dark_mean(same_iso))
    ratios = torch.stack(ratios)
    assert bool((ratios[1:] < ratios[:-1]).all()) and bool((ratios[-1] < 0.75).all()), ratios


# ------------------------------------------------------------------ exposure

def test_overexposure_blows_more_highlights_with_level(stack):
    clipped = [(apply(stack, 'overexposure', lv) >= 1 - 1e-6).float().mean((1, 2, 3)) for lv in range(0, 6)]
    clipped = torch.stack(clipped)            # (level, image): fraction of channel values at 1
    assert bool((clipped[1:] >= clipped[:-1]).all()), clipped
    assert bool((clipped[4:] > clipped[3:-1]).all()), clipped      # from +1 EV on, every image
    assert bool((clipped[-1] > 0.2).all()), clipped
    # a channel clips first: a saturated orange blows toward yellow / white, losing saturation
    orange = torch.tensor([0.95, 0.55, 0.2]).view(1, 3, 1, 1).expand(1, 3, 8, 8).contiguous()
    sat = lambda v: float((v.max() - v.min()) / v.max())  # noqa: E731
    y = apply(orange, 'overexposure', 4)[0, :, 0, 0]
    assert float(y[0]) == 1.0 and float(y[1] / y[0]) > 0.55 / 0.95 + 0.2
    assert sat(y) < sat(orange[0, :, 0, 0]) - 0.1


def test_underexposure_darkens_and_crushes_shadows(stack):
    shadows = stack.mean(1, keepdim=True).expand_as(stack) < 0.25
    means, distinct = [], []
    for lv in range(0, 6):
        y = apply(stack, 'underexposure', lv)
        q = (y * 255).round()
        if lv:
            assert float((y * 255 - q).abs().max()) < 1e-3             # 8-bit output
        means.append(float(y.mean()))
        distinct.append(sum(len(torch.unique(q[i][shadows[i]])) for i in range(len(y))))
    assert all(a > b for a, b in zip(means, means[1:])), means
    assert all(a > b for a, b in zip(distinct, distinct[1:])), distinct
    assert distinct[-1] < 0.5 * distinct[0], distinct


# ------------------------------------------------------------------ white balance

def test_white_balance_casts_along_temperature_and_keeps_luminance(stack):
    lin = camera.to_linear(stack)
    rb = lambda v: torch.log2(v[:, 0].mean((1, 2)) / v[:, 2].mean((1, 2)))  # noqa: E731
    signs = set()
    for seed in range(6):
        shifts = []
        for lv in range(1, 6):
            y = camera.to_linear(apply(stack, 'white_balance', lv, generator=_gen(seed)))
            shift = rb(y) - rb(lin)
            shifts.append(shift)
            stops = parameter('white_balance', lv)
            # the R/B ratio moves by the level's stops (a little less where channels clip)
            assert bool(((shift.abs() > 0.75 * stops) & (shift.abs() < 1.05 * stops)).all()), (seed, lv, shift)
            lum = camera.luminance(y).mean((1, 2, 3)) / camera.luminance(lin).mean((1, 2, 3))
            assert bool(((lum - 1).abs() < 0.05).all()), (seed, lv, lum)   # < 1: clipped highlights
        shifts = torch.stack(shifts)
        # the direction is drawn per image, independently of the level
        assert bool((torch.sign(shifts) == torch.sign(shifts[0])).all())
        assert bool((shifts.abs()[1:] > shifts.abs()[:-1]).all())
        signs |= set(torch.sign(shifts[0]).tolist())
    assert signs == {-1.0, 1.0}, 'both warm and cool casts are drawn'


# ------------------------------------------------------------------ blur

def test_path_motion_blur_psf_is_a_curved_normalised_path():
    """The point-spread function (an impulse through ``apply``, read in linear light) conserves
    energy, does not shift the image, and is a curved path: its support strays well off any
    straight line, unlike KADID's ``motion_blur``; its shape is the same at every level."""
    devs = []
    for seed in range(10):
        psf5 = camera.to_linear(apply(_impulse(), 'path_motion_blur', 5, generator=_gen(seed)))[0, 1]
        psf3 = camera.to_linear(apply(_impulse(), 'path_motion_blur', 3, generator=_gen(seed)))[0, 1]
        assert float(psf5.sum()) == pytest.approx(1.0, abs=2e-3)
        (cy, cx), ev5, dev5, angle5 = _psf_geometry(psf5)
        assert abs(cy - 32) < 0.1 and abs(cx - 32) < 0.1
        _, ev3, _, angle3 = _psf_geometry(psf3)
        assert ev5[1] > 2 * ev3[1]                                         # longer path
        if ev5[1] > 2 * ev5[0]:                                            # elongated: same direction
            assert min(abs(angle5 - angle3), math.pi - abs(angle5 - angle3)) < math.radians(12)
        devs.append(dev5)
        line = camera.to_linear(apply(_impulse(), 'motion_blur', 5, generator=_gen(seed)))[0, 1]
        assert _psf_geometry(line)[2] < 1.2
    assert min(devs) > 1.5 and sorted(devs)[5] > 2.5, devs
    # the kernels themselves: non-negative, sum to one, one odd size for the batch
    from crossiqa_pyiqa.degradations._core import rand_cpu

    gens = [_gen(s) for s in range(8)]
    ker = camera.path_kernels(camera.trajectories(rand_cpu(gens, (camera._TRAJ_DRAWS,))), [17.0] * 8)
    assert ker.shape[-1] % 2 == 1 and float(ker.min()) >= 0
    torch.testing.assert_close(ker.sum((1, 2)), torch.ones(8, dtype=torch.float64))


def test_defocus_spreads_a_point_into_a_growing_bright_disc():
    """In linear light a point spreads into a disc of the level's radius; encoded, the disc is
    much brighter than the same blur done on sRGB values (``lens_blur``): highlights bloom."""
    radii = []
    for lv in range(1, 6):
        psf = camera.to_linear(apply(_impulse(), 'defocus', lv))[0, 1]
        assert float(psf.sum()) == pytest.approx(1.0, abs=3e-3)
        disc = psf > 0.5 * psf.max()
        radius = math.sqrt(float(disc.sum()) / math.pi)
        radii.append(radius)
        if lv >= 2:
            assert abs(radius - parameter('defocus', lv)) < 0.6, (lv, radius)
        if lv >= 3:
            enc = apply(_impulse(), 'defocus', lv)[0, 1][disc].mean()
            srgb_blur = apply(_impulse(), 'lens_blur', lv)[0, 1][disc].mean()
            assert float(enc) > 4 * float(srgb_blur), (lv, float(enc), float(srgb_blur))
    assert all(a < b for a, b in zip(radii, radii[1:])), radii


# ------------------------------------------------------------------ consumers of type names

def test_ranking_options_accept_camera_types(tmp_path):
    from crossiqa_pyiqa.regression.ranking_pairs import RANKING_DEFAULTS, ranking_options

    assert RANKING_DEFAULTS['types'] is None
    folder = tmp_path / 'pristine'
    folder.mkdir()
    base = {'pristine_dirs': str(folder)}
    assert ranking_options(base).types is None                                 # default: the KADID 25
    assert ranking_options({**base, 'types': ['camera_noise', 'defocus']}).types == ['camera_noise', 'defocus']
    assert ranking_options({**base, 'types': 'camera'}).types == list(CAMERA_DEGRADATIONS)
    assert ranking_options({**base, 'types': ['kadid', 'white_balance']}).types == [*DEGRADATIONS, 'white_balance']
    with pytest.raises(ValueError, match='regression.ranking.types'):
        ranking_options({**base, 'types': ['camera_nois']})


def test_ranking_benchmark_types():
    from crossiqa_pyiqa.benchmark.ranking import load_degradations, ranking_types

    types, apply_fn = load_degradations()
    assert types == list(DEGRADATIONS) and apply_fn is apply                   # default unchanged
    assert ranking_types(None) == list(DEGRADATIONS)
    assert ranking_types(['camera']) == list(CAMERA_DEGRADATIONS)
    assert ranking_types(['gaussian_blur', 'low_light']) == ['gaussian_blur', 'low_light']
    with pytest.raises(ValueError, match='ranking types'):
        ranking_types(['fog'])


def test_ranking_type_weights_are_checked_and_weigh_their_pairs(tmp_path):
    """``regression.ranking.type_weights`` refuses unknown types and bad weights; a type's weight
    scales its squared-hinge rows, so a heavier type's pairs end up ordered where the MOS rows
    alone would not order them."""
    import numpy as np

    from crossiqa_pyiqa.regression.ranking_pairs import RankingPairs, ranking_options
    from crossiqa_pyiqa.regression.ridge import fit_ridge

    folder = tmp_path / 'pristine'
    folder.mkdir()
    base = {'pristine_dirs': [str(folder)], 'types': ['camera_grain', 'jpeg']}
    assert ranking_options({**base, 'type_weights': {'camera_grain': 4}}).type_weights == {'camera_grain': 4.0}
    assert ranking_options(base).type_weights is None
    with pytest.raises(ValueError, match=r"\['defocus'\] that are not among the ranking types"):
        ranking_options({**base, 'type_weights': {'defocus': 2}})
    with pytest.raises(ValueError, match='finite weight >= 0'):
        ranking_options({**base, 'type_weights': {'jpeg': -1}})
    with pytest.raises(TypeError, match='mapping'):
        ranking_options({**base, 'type_weights': ['jpeg']})

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    y = 10 * x[:, 0] + rng.normal(size=300)          # MOS: feature 0 only
    # grain pairs need a drop along feature 1, which MOS ignores; jpeg pairs agree with the MOS
    grain = np.tile([0.0, 1.0, 0.0, 0.0], (50, 1)) + 0.1 * rng.normal(size=(50, 4))
    jpeg = np.tile([1.0, 0.0, 0.0, 0.0], (50, 1)) + 0.1 * rng.normal(size=(50, 4))
    pairs = RankingPairs(diffs=np.concatenate([grain, jpeg]), levels=np.full(100, 3),
                         types=['camera_grain'] * 50 + ['jpeg'] * 50)

    def grain_drop(weights):                          # mean score drop of the grain pairs (margin: 9)
        opts = ranking_options({**base, 'weight': 0.05, 'type_weights': weights})
        model = fit_ridge(x, y, 1.0, pairs.as_rows(opts))
        return float(((grain / model.std) @ model.coef).mean())

    light, heavy = grain_drop(None), grain_drop({'camera_grain': 50.0})
    assert light < 1.0 and heavy > 5.0, (light, heavy)
    np.testing.assert_allclose(pairs.row_scale({'camera_grain': 4.0})[[0, 99]], [2.0, 1.0])
