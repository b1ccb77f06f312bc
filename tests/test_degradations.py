"""Tests for crossiqa_pyiqa.degradations: strength vs level on real images, API contract,
reproducibility, errors and the training sampler."""
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')
# as the project's scripts: spinning OpenMP workers crawl on a shared CPU (effective only if
# torch is not imported yet)
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from crossiqa_pyiqa.degradations import (  # noqa: E402
    ALL_DEGRADATIONS, CAMERA_DEGRADATIONS, CODEC_DEGRADATIONS, DEGRADATIONS, RANDOM_DEGRADATIONS, TONE_DEGRADATIONS,
    DegradationSampler, apply, info, jpeg2000_available, parameter,
)

KADID_ORDER = (
    'gaussian_blur', 'lens_blur', 'motion_blur', 'color_diffusion', 'color_shift', 'color_quantization',
    'color_saturation_1', 'color_saturation_2', 'jpeg2000', 'jpeg', 'white_noise', 'white_noise_color',
    'impulse_noise', 'multiplicative_noise', 'denoise', 'brighten', 'darken', 'mean_shift', 'jitter',
    'non_eccentricity_patch', 'pixelate', 'quantization', 'color_block', 'high_sharpen', 'contrast_change',
)
IMAGES = ('astronaut', 'chelsea', 'coffee')
SIZE = 128


def _needs_codec(name):
    if name == 'jpeg2000' and not jpeg2000_available():
        pytest.skip('Pillow without OpenJPEG')


def _skimage(name, size=SIZE):
    import skimage.data

    im = torch.from_numpy(getattr(skimage.data, name)()[..., :3].copy())
    h, w = im.shape[:2]
    s = min(h, w)
    im = im[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return F.interpolate(im.permute(2, 0, 1)[None].float() / 255, size=(size, size), mode='area').clamp(0, 1)


@pytest.fixture(scope='module')
def images():
    return {n: _skimage(n) for n in IMAGES}


@pytest.fixture(scope='module')
def stack(images):
    """The validation images as one (3,3,128,128) batch."""
    return torch.cat(list(images.values()))


@pytest.fixture(scope='module')
def ssim():
    pyiqa = pytest.importorskip('pyiqa')
    return pyiqa.create_metric('ssim', device='cpu')


@pytest.fixture(scope='module')
def batch():
    """Three small non-square float32 images (different content per image)."""
    return torch.cat([_skimage(n, 96)[..., 8:72, :80] for n in IMAGES])


def _psnr(a, b):
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else -10 * math.log10(mse)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ strength vs level

def test_names_in_kadid_order():
    assert DEGRADATIONS == KADID_ORDER
    assert ALL_DEGRADATIONS == KADID_ORDER + CAMERA_DEGRADATIONS + TONE_DEGRADATIONS
    assert CODEC_DEGRADATIONS == {'jpeg', 'jpeg2000', 'camera_noise', 'low_light', 'camera_grain'}


@pytest.mark.parametrize('name', ALL_DEGRADATIONS)
def test_psnr_falls_strictly_with_level(name, stack):
    """Every type: level 1 changes the image, and PSNR to it falls strictly 1 -> 5 on
    each of three natural images (same seed per level: common random numbers)."""
    _needs_codec(name)
    ys = [apply(stack, name, lv, generator=_gen(0)) for lv in range(1, 6)]
    for i, iname in enumerate(IMAGES):
        ps = [_psnr(y[i], stack[i]) for y in ys]
        assert math.isfinite(ps[0]), f'{name} level 1 is a no-op on {iname}'
        assert all(a > b for a, b in zip(ps, ps[1:])), f'{name} on {iname}: PSNR {ps}'


@pytest.mark.parametrize('name', ['contrast_change', 'color_saturation_1'])
def test_ssim_falls_strictly_with_level(name, stack, ssim):
    """The two types flagged as possibly non-monotone (KADID's own contrast table is not)
    also fall strictly in pyiqa's SSIM, not only in PSNR."""
    x = stack[:2]
    ss = torch.stack([ssim(apply(x, name, lv, generator=_gen(0)), x).flatten() for lv in range(1, 6)])
    for i in range(len(x)):
        col = ss[:, i].tolist()
        assert all(a > b for a, b in zip(col, col[1:])), f'{name} on {IMAGES[i]}: SSIM {col}'


# ------------------------------------------------------------------ API contract

@pytest.mark.parametrize('name', ALL_DEGRADATIONS)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_shape_range_dtype_device(name, dtype, batch):
    _needs_codec(name)
    x = batch.to(dtype)
    x_before = x.clone()
    y = apply(x, name, 3, generator=_gen(1))
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.isfinite(y).all()
    assert not torch.equal(y, x), 'level 3 left the batch unchanged'
    assert torch.equal(x, x_before), 'input was modified in place'


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
@pytest.mark.parametrize('name', ALL_DEGRADATIONS)
def test_cuda_input_with_cpu_generator(name, batch):
    _needs_codec(name)
    y_cpu = apply(batch, name, 4, generator=_gen(3))
    y_gpu = apply(batch.cuda(), name, 4, generator=_gen(3))
    assert y_gpu.device.type == 'cuda'
    if name in ('camera_noise', 'low_light'):
        # torch pipeline, then JPEG: float differences of ~1e-6 flip the 8-bit rounding of a few
        # pixels before the codec, which moves their 8x8 blocks by a few levels
        diff = (y_gpu.cpu() - y_cpu).abs()
        assert float(diff.mean()) < 1e-3 and float(diff.max()) < 0.1, (float(diff.mean()), float(diff.max()))
    else:
        torch.testing.assert_close(y_gpu.cpu(), y_cpu, atol=2e-3, rtol=0)


@pytest.mark.parametrize('name', ALL_DEGRADATIONS)
def test_level_zero_is_identity(name, batch):
    y = apply(batch, name, 0, generator=_gen(0))
    assert torch.equal(y, batch)
    assert y.data_ptr() != batch.data_ptr()
    assert parameter(name, 0) is None


@pytest.mark.parametrize('name', ALL_DEGRADATIONS)
def test_generator_reproducibility(name, batch):
    _needs_codec(name)
    a = apply(batch, name, 4, generator=_gen(7))
    b = apply(batch, name, 4, generator=_gen(7))
    assert torch.equal(a, b)
    others = [apply(batch, name, 4, generator=_gen(s)) for s in (8, 9, 10)]
    if name in RANDOM_DEGRADATIONS:
        assert any(not torch.equal(a, o) for o in others), f'{name} ignores the generator'
    else:
        assert all(torch.equal(a, o) for o in others), f'{name} is deterministic but varied'


@pytest.mark.parametrize('name', ALL_DEGRADATIONS)
def test_batch_equals_images_one_by_one(name, batch):
    """Batched application = per-image application drawing from the same generator in order."""
    _needs_codec(name)
    y = apply(batch, name, 2, generator=_gen(5))
    g = _gen(5)
    singles = torch.cat([apply(batch[i:i + 1], name, 2, generator=g) for i in range(len(batch))])
    torch.testing.assert_close(y, singles, atol=1e-5, rtol=0)


def test_kadid_tables():
    """Integer levels use KADID-10k's parameters exactly (where we follow them)."""
    assert [parameter('jpeg', lv) for lv in range(1, 6)] == [43, 36, 24, 7, 4]
    assert [parameter('jpeg2000', lv) for lv in range(1, 6)] == [16, 32, 45, 120, 400]
    assert [parameter('white_noise', lv) for lv in range(1, 6)] == [0.001, 0.002, 0.003, 0.005, 0.01]
    assert [parameter('lens_blur', lv) for lv in range(1, 6)] == [1, 2, 4, 6, 8]
    assert [parameter('color_quantization', lv) for lv in range(1, 6)] == [64, 48, 32, 16, 8]
    assert [parameter('quantization', lv) for lv in range(1, 6)] == [20, 16, 13, 10, 7]
    assert [parameter('high_sharpen', lv) for lv in range(1, 6)] == [1, 2, 3, 6, 12]
    for name in ALL_DEGRADATIONS:
        assert len(info(name).table) == 5 and info(name).param_name and info(name).summary


def test_continuous_levels(images):
    x = images['chelsea']
    # integer-valued floats are the discrete levels
    assert torch.equal(apply(x, 'gaussian_blur', 3.0), apply(x, 'gaussian_blur', 3))
    # interpolated parameters
    assert parameter('gaussian_blur', 2.5) == pytest.approx(0.75)
    assert parameter('white_noise', 0.5) == pytest.approx(0.0005)          # from the identity
    assert parameter('jpeg', 3.5) == 16                                      # rounded quality
    # strength in between the neighbouring levels
    for name in ('gaussian_blur', 'white_noise', 'brighten', 'jitter', 'color_saturation_2'):
        p2, p25, p3 = (_psnr(apply(x, name, lv, generator=_gen(0)), x) for lv in (2, 2.5, 3))
        assert p2 > p25 > p3, (name, p2, p25, p3)
    # types without an identity parameter round levels below 1
    assert torch.equal(apply(x, 'pixelate', 0.4), x)
    assert torch.equal(apply(x, 'pixelate', 0.6), apply(x, 'pixelate', 1))
    assert parameter('jpeg2000', 0.4) is None


# ------------------------------------------------------------------ errors

def test_errors_name_the_problem(batch):
    with pytest.raises(TypeError, match='torch.Tensor'):
        apply(batch.numpy(), 'jpeg', 1)
    with pytest.raises(ValueError, match='floating-point'):
        apply((batch * 255).to(torch.uint8), 'jpeg', 1)
    with pytest.raises(ValueError, match=r'values must lie in \[0, 1\]'):
        apply(batch * 255, 'jpeg', 1)
    with pytest.raises(ValueError, match=r'values must lie in \[0, 1\]'):
        apply(batch - 0.01, 'jpeg', 1)
    apply(batch.clamp(0, 1) + 1e-7, 'darken', 1)                               # tolerance
    with pytest.raises(ValueError, match='NaN'):
        apply(batch.clone().fill_(float('nan')), 'jpeg', 1)
    with pytest.raises(ValueError, match='4 dimensions'):
        apply(batch[0], 'jpeg', 1)
    with pytest.raises(ValueError, match='3 \\(RGB\\) channels'):
        apply(batch[:, :1], 'jpeg', 1)
    with pytest.raises(ValueError, match='too small'):
        apply(batch[..., :4, :4], 'jpeg', 1)
    with pytest.raises(ValueError, match="unknown degradation 'gausian_blur'.*Did you mean 'gaussian_blur'"):
        apply(batch, 'gausian_blur', 1)
    with pytest.raises(ValueError, match='Valid names: gaussian_blur, lens_blur'):
        apply(batch, 'sepia', 1)
    with pytest.raises(TypeError, match='name must be a str'):
        apply(batch, 3, 1)
    for bad in (6, -1, 5.01, float('nan')):
        with pytest.raises(ValueError, match=r'level must be in \[0, 5\]'):
            apply(batch, 'jpeg', bad)
    for bad in ('3', None, True):
        with pytest.raises(TypeError, match='level must be'):
            apply(batch, 'jpeg', bad)
    with pytest.raises(TypeError, match='generator'):
        apply(batch, 'white_noise', 1, generator=0)


# ------------------------------------------------------------------ sampler

def test_sampler_validates_arguments():
    with pytest.raises(ValueError, match="unknown degradation 'jpg'"):
        DegradationSampler({'jpg': 1.0})
    with pytest.raises(ValueError, match="weight of 'jpeg' must be >= 0"):
        DegradationSampler({'jpeg': -1.0})
    with pytest.raises(ValueError, match='finite'):
        DegradationSampler({'jpeg': float('nan')})
    with pytest.raises(ValueError, match='all degradation weights are zero'):
        DegradationSampler({'jpeg': 0.0, 'darken': 0})
    with pytest.raises(ValueError, match='identity_prob'):
        DegradationSampler(identity_prob=1.5)
    with pytest.raises(ValueError, match='max_compose'):
        DegradationSampler(max_compose=0)
    with pytest.raises(ValueError, match='levels'):
        DegradationSampler(levels=())
    with pytest.raises(ValueError, match='levels'):
        DegradationSampler(levels=(0, 1))
    with pytest.raises(TypeError, match='weights'):
        DegradationSampler(['jpeg'])
    with pytest.raises(ValueError, match='num_threads'):
        DegradationSampler(num_threads=0)


def test_sampler_default_is_kadid_and_accepts_camera_types():
    """The default draws only the 25 KADID types, in the registry order it always had (so
    seeds reproduce earlier runs); camera types are drawn when weighted."""
    from crossiqa_pyiqa.degradations._core import REGISTRY

    assert DegradationSampler().names == tuple(REGISTRY)[:25]
    assert set(DegradationSampler().names) == set(KADID_ORDER)
    s = DegradationSampler({'camera_noise': 1.0, 'defocus': 1.0, 'jpeg': 1.0}, identity_prob=0.0)
    assert s.names == ('jpeg', 'camera_noise', 'defocus')
    g = _gen(4)
    drawn = {sp[0][0] for sp in (s.sample(g) for _ in range(200))}
    assert drawn == {'camera_noise', 'defocus', 'jpeg'}
    specs, seeds = s.sample_batch(3, _gen(0))
    y = DegradationSampler.apply_specs(_skimage('coffee', 32).expand(3, -1, -1, -1).contiguous(), specs, seeds)
    assert y.shape == (3, 3, 32, 32)


def test_sampler_respects_weights_and_identity_prob():
    s = DegradationSampler({'jpeg': 0.0, 'white_noise': 3.0, 'darken': 1.0}, identity_prob=0.3)
    g = _gen(0)
    specs = [s.sample(g) for _ in range(4000)]
    names = [sp[0][0] for sp in specs if sp]
    assert 'jpeg' not in names
    ident = sum(1 for sp in specs if not sp) / len(specs)
    assert abs(ident - 0.3) < 0.03, ident
    frac = names.count('white_noise') / len(names)
    assert abs(frac - 0.75) < 0.03, frac
    assert {lv for sp in specs for _, lv in sp} == {1, 2, 3, 4, 5}


def test_sampler_compositions_and_levels():
    s = DegradationSampler(identity_prob=0.0, max_compose=3, levels=(2, 4))
    g = _gen(1)
    specs = [s.sample(g) for _ in range(600)]
    lengths = {len(sp) for sp in specs}
    assert lengths == {1, 2, 3}
    for sp in specs:
        assert len({n for n, _ in sp}) == len(sp), 'types repeat within a composition'
        assert all(lv in (2, 4) and isinstance(lv, int) for _, lv in sp)
    c = DegradationSampler(identity_prob=0.0, continuous=True, levels=(1, 5))
    lv = [sp[0][1] for sp in (c.sample(g) for _ in range(300))]
    assert all(isinstance(v, float) and 1 <= v <= 5 for v in lv)
    assert min(lv) < 1.5 and max(lv) > 4.5


def test_sampler_applies_each_images_spec(batch):
    """Each image's output = its spec applied alone with its own stream, whatever the grouping."""
    x = torch.cat([batch, batch.flip(-1)])                                      # 6 images
    s = DegradationSampler({'white_noise': 1, 'gaussian_blur': 1, 'jpeg': 1, 'color_block': 1,
                            'mean_shift': 1, 'jitter': 1}, identity_prob=0.2, max_compose=2)
    y, specs = s(x, _gen(11))
    specs2, seeds = s.sample_batch(len(x), _gen(11))
    assert specs == specs2
    assert len(specs) == len(x) and all(len(sp) <= 2 for sp in specs)
    assert any(len(sp) == 2 for sp in specs) and any(len(sp) == 1 for sp in specs)
    for i, (spec, seed) in enumerate(zip(specs, seeds)):
        g = _gen(seed)
        ref = x[i:i + 1]
        for name, level in spec:
            ref = apply(ref, name, level, generator=g)
        torch.testing.assert_close(y[i:i + 1], ref, atol=1e-5, rtol=0, msg=f'image {i} spec {spec}')
        if not spec:
            assert torch.equal(y[i], x[i])
    y2, specs3 = s(x, _gen(11))
    assert specs3 == specs and torch.equal(y, y2)
    threads = torch.get_num_threads()
    s1 = DegradationSampler(dict.fromkeys(s.names, 1.0), identity_prob=0.2, max_compose=2, num_threads=1)
    y1, specs1 = s1(x, _gen(11))
    assert specs1 == specs and torch.get_num_threads() == threads
    torch.testing.assert_close(y1, y, atol=1e-5, rtol=0)
    y3, specs4 = s(x, _gen(12))
    assert specs4 != specs or not torch.equal(y3, y)


def test_sampler_keeps_dtype_and_shape(batch):
    s = DegradationSampler(max_compose=2, continuous=True)
    y, specs = s(batch.double(), _gen(2))
    assert y.shape == batch.shape and y.dtype == torch.float64
    assert 0 <= float(y.min()) and float(y.max()) <= 1
    with pytest.raises(ValueError, match='3 \\(RGB\\) channels'):
        s(batch[:, :2], _gen(0))
