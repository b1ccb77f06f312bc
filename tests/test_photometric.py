"""Photometric statistics (``archs/photometric.py``): what exposure, contrast and colour changes do to them
on real photos, and how the ``photometric`` feature token carries them into the features and the quality map."""
from __future__ import annotations

import math
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import pytest  # noqa: E402
import skimage.data  # noqa: E402
import torch  # noqa: E402

from crossiqa_pyiqa.archs.crossiqa_arch import CrossIQA  # noqa: E402
from crossiqa_pyiqa.archs.photometric import PHOTOMETRIC_NAMES, photometric_statistics  # noqa: E402

PHOTOS = ('astronaut', 'coffee', 'chelsea')


def photo(name: str) -> torch.Tensor:
    return torch.from_numpy(getattr(skimage.data, name)()[:256, :256].copy()).permute(2, 0, 1)[None].float() / 255


def stat(x: torch.Tensor, name: str) -> float:
    return float(photometric_statistics(x)[0, PHOTOMETRIC_NAMES.index(name)])


def grey(x: torch.Tensor) -> torch.Tensor:
    return (0.2126 * x[:, :1] + 0.7152 * x[:, 1:2] + 0.0722 * x[:, 2:]).expand_as(x)


@pytest.mark.parametrize('name', PHOTOS)
def test_each_statistic_follows_the_change_it_reads_on_real_photos(name):
    x = photo(name)
    strengths = (0.25, 0.5, 0.75)
    dark = [stat(x * (1 - 0.9 * s), 'clip_low') for s in (0, *strengths)]
    bright = [stat((x * (1 + 3 * s)).clamp(0, 1), 'clip_high') for s in (0, *strengths)]
    faded = [stat(torch.lerp(x, grey(x), s), 'log_colourfulness') for s in (0, *strengths)]
    flat = [stat(torch.lerp(x, x.mean(), s), 'log_contrast') for s in (0, *strengths)]
    posterised = [stat(torch.round(x * n) / n, 'flat') for n in (255, 32, 12, 6)]
    cast = [stat((x * torch.tensor([1 + s, 1.0, 1 - s]).view(1, 3, 1, 1)).clamp(0, 1), 'colour_cast')
            for s in (0, 0.2, 0.4)]
    for values, rising, what in ((dark, True, 'darkening: clipped shadows'),
                                 (bright, True, 'brightening: clipped highlights'),
                                 (faded, False, 'desaturation: colourfulness'),
                                 (flat, False, 'less contrast: contrast'),
                                 (cast, True, 'red cast: cast'), (posterised, True, 'fewer levels: flat pixels')):
        steps = [b - a for a, b in zip(values, values[1:])]
        assert all(d > 0 for d in steps) if rising else all(d < 0 for d in steps), (name, what, values)


@pytest.mark.parametrize('name', PHOTOS)
def test_deviation_terms_grow_both_ways_from_a_typical_photo(name):
    """A linear head needs them: exposure and contrast errors go both ways (darker and brighter are both worse)."""
    from crossiqa_pyiqa.archs.photometric import PHOTOMETRIC_CENTRES

    x = photo(name)
    lum = grey(x)[:, :1]
    # the photo moved to the typical luminance and contrast, then changed both ways
    contrast = math.exp(PHOTOMETRIC_CENTRES['log_contrast'])
    typical = ((x - lum.mean()) / lum.std() * contrast + PHOTOMETRIC_CENTRES['luminance']).clamp(0, 1)
    for name_, darker, brighter in (
            ('luminance_dev2', typical * 0.5, (typical * 1.6).clamp(0, 1)),
            ('log_contrast_dev2', torch.lerp(typical, typical.mean(), 0.6),
             ((typical - typical.mean()) * 2 + typical.mean()).clamp(0, 1))):
        start = stat(typical, name_)
        assert start < 0.01, (name, name_, start)
        assert stat(darker, name_) > start + 0.01 and stat(brighter, name_) > start + 0.01, (name, name_)


def test_statistics_refuse_a_batch_that_is_not_rgb():
    with pytest.raises(ValueError, match='RGB batch'):
        photometric_statistics(torch.rand(1, 1, 32, 32))


@pytest.mark.parametrize('size', ['lite0', 'tiny'])
def test_the_feature_token_appends_the_statistics_last_in_float32(size):
    x = photo('coffee')[..., :128, :128]
    plain = CrossIQA(pretrained=False, size=size, feature_tokens=['mean', 'cls'], feature_scales=[1.0])
    net = CrossIQA(pretrained=False, size=size, feature_tokens=['mean', 'cls', 'photometric'], feature_scales=[1.0])
    net.encoder.load_state_dict(plain.encoder.state_dict())
    with torch.inference_mode():
        base, feats = plain.forward_features(x), net.forward_features(x)
    assert feats.shape[1] == net.feature_dim == plain.feature_dim + len(PHOTOMETRIC_NAMES)
    label, _, cols = net.feature_groups()[-1]
    assert label == 'photometric' and cols.stop == net.feature_dim
    assert torch.allclose(feats[:, :cols.start], base, atol=1e-5)
    assert torch.allclose(feats[:, cols], photometric_statistics(x), atol=1e-6)
    if size == 'lite0':  # half weights: the statistics are still read from the pixels in float32
        half = net.half()
        with torch.inference_mode():
            assert torch.allclose(half.forward_features(x.half())[:, cols], photometric_statistics(x.half()), atol=1e-6)


@pytest.mark.parametrize('tokens', [['photometric'], ['mean', 'photometric', 'photometric'], ['mean', 'colour']])
def test_feature_tokens_without_an_encoder_readout_or_unknown_are_refused(tokens):
    with pytest.raises(ValueError, match='feature_tokens'):
        CrossIQA(pretrained=False, size='lite0', feature_tokens=tokens)


def test_windows_read_the_statistics_of_their_own_pixels_and_the_whole_window_the_photo():
    from crossiqa_pyiqa.archs.quality_map import encode_maps, local_features

    net = CrossIQA(pretrained=False, size='lite0', feature_tokens=['mean', 'std', 'cls', 'photometric'],
                   feature_blocks=[0, 4, 7], feature_scales=[1.0])
    x = photo('astronaut')
    x[..., :, 128:] *= 0.15  # the right half underexposed
    with torch.inference_mode():
        encoded = encode_maps(net, x)
        assert torch.allclose(encoded['features'], net.forward_features(x), atol=1e-4)
        cols = net.feature_groups()[-1][2]
        whole = local_features(net, encoded, 17)  # every window covers the 8 x 8 cells
        assert torch.allclose(whole[0, cols], encoded['features'][0, cols, None, None].expand_as(whole[0, cols]),
                              atol=1e-4)
        local = local_features(net, encoded, 1)[0, cols]
    clip_low = local[PHOTOMETRIC_NAMES.index('clip_low')]
    luminance = local[PHOTOMETRIC_NAMES.index('luminance')]
    assert clip_low[:, 4:].mean() > clip_low[:, :4].mean() + 0.2
    assert (luminance[:, 4:] < luminance[:, :4]).float().mean() > 0.9


def test_a_feature_cache_key_changes_with_the_statistics_definition(monkeypatch):
    from crossiqa_pyiqa.archs import photometric
    from crossiqa_pyiqa.regression.features import cache_key

    net = CrossIQA(pretrained=False, size='lite0', feature_tokens=['mean', 'photometric'], feature_scales=[1.0])
    plain = CrossIQA(pretrained=False, size='lite0', feature_tokens=['mean'], feature_scales=[1.0])
    plain.encoder.load_state_dict(net.encoder.state_dict())
    key = cache_key(net, 'data')
    assert key != cache_key(plain, 'data')
    monkeypatch.setitem(photometric.PHOTOMETRIC_CENTRES, 'luminance', 0.5)
    assert cache_key(net, 'data') != key  # features cached under other centres are never read back
