"""``crossiqa-noiseaware-pretext``: a score that charges what the pretext reads as noise.

CLIVE's MOS teaches a head that fine luma grain on smooth content is detail (the shipped
``crossiqa`` prefers PolyU's real noisy shots to their clean means in 60 of 100 pairs). This
noise-aware metric (beside ``crossiqa-noiseaware``, tests/test_noise_aware.py) is its own file:
an encoder whose pretext also learned, with no human score, to read a view's noise level (the
level term), a head that reads stages >= 4 and ``q``, and the score less ``noise_penalty`` x the
level head's noise reading above a threshold, both calibrated without MOS or real noise
(``scripts/fit_noise_penalty.py``). These tests run the shipped file on the pixel-smooth photos
of tests/test_noise_aware.py with faint luma noise or the library's ``camera_grain``: the cases
where a plain score is fooled.
"""
from __future__ import annotations

import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import pytest  # noqa: E402
import torch  # noqa: E402

import crossiqa_pyiqa  # noqa: E402, F401  (registers the metrics)
import pyiqa  # noqa: E402
from crossiqa_pyiqa.archs.crossiqa_arch import CrossIQA  # noqa: E402
from crossiqa_pyiqa.registration import PLUGIN_METRICS  # noqa: E402
from test_noise_aware import (assert_blur_and_jpeg_rank_alike, assert_map_charges_noise_once,  # noqa: E402
                              noisy_versions, smooth_photo)

NAME = 'crossiqa-noiseaware-pretext'
NOISEAWARE_WEIGHTS = PLUGIN_METRICS[NAME]['metric_opts']['weights']


@pytest.fixture(scope='module')
def metrics():
    """The noise-aware metric and its own head without the penalty (same file)."""
    return pyiqa.create_metric(NAME, device='cpu'), CrossIQA(weights=NOISEAWARE_WEIGHTS)


def test_the_score_is_the_head_less_the_calibrated_penalty_on_the_level_reading(metrics):
    aware, own = metrics
    meta = own.info['level_head']
    # the registered penalty is the one scripts/fit_noise_penalty.py fitted into the file (no MOS, no real noise)
    assert aware.net.noise_penalty == meta['noise_penalty'] > 0 and aware.net.noise_source == 'level'
    assert meta['calibration']['noisy_reads_higher'] > 0.95
    x = smooth_photo('astronaut')
    batch = torch.cat([x, *noisy_versions(x).values()])
    with torch.inference_mode():
        features = own.forward_features(batch)
        reading = own.level_reading(features)[:, meta['outputs'].index('noise')]
        expected = own.score_features(features)[:, 0] - meta['noise_penalty'] * reading.clamp_min(0)
    torch.testing.assert_close(aware(batch).flatten(), expected, rtol=0, atol=1e-4)
    # the pretext reads luma noise of sigma 4/255 and camera grain as more noise; sigma 2/255 (0.8 %) on this
    # pixel-smooth photo it does not resolve (README, "crossiqa-noiseaware-pretext")
    assert (reading[2:] > reading[0]).all()


@pytest.mark.parametrize('photo', ['rocket', 'astronaut', 'chelsea'])
def test_faint_grain_on_smooth_content_scores_below_the_clean_photo(metrics, photo):
    aware, own = metrics
    x = smooth_photo(photo)
    versions = {k: v for k, v in noisy_versions(x).items() if k != 'luma sigma 2/255'}  # below its resolution
    with torch.inference_mode():
        p = own(torch.cat([x, *versions.values()])).flatten()
        a = aware(torch.cat([x, *versions.values()])).flatten()
    for i, name in enumerate(versions, start=1):
        assert a[0] > a[i], f'{photo} + {name}: noise-aware score {a[i]:.2f} >= clean {a[0]:.2f}'
        assert a[0] - a[i] >= p[0] - p[i]  # the penalty only widens the gap the head leaves


def test_blur_and_jpeg_rank_as_with_the_plain_head(metrics):
    aware, own = metrics
    assert_blur_and_jpeg_rank_alike(own, aware)


def test_the_map_charges_noise_once(metrics):
    aware, own = metrics
    e_plain, e_aware = assert_map_charges_noise_once(own, aware)
    assert e_aware.score < e_plain.score  # sigma 4/255 luma noise reads above the threshold on rocket


def test_a_calibrated_user_weight_file_registers_with_its_penalty(tmp_path, monkeypatch, metrics):
    """A file written by fit_noise_penalty.py into the user weights dir scores as the calibration measured."""
    import shutil

    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    from crossiqa_pyiqa.archs.crossiqa_arch import default_weight_path
    from crossiqa_pyiqa.registration import _register_user_weights, user_metric_opts

    folder = tmp_path / 'weights'
    folder.mkdir()
    shutil.copy(default_weight_path(NOISEAWARE_WEIGHTS), folder / 'crossiqa-mycalibrated.safetensors')
    shutil.copy(default_weight_path(PLUGIN_METRICS['crossiqa']['metric_opts']['weights']),
                folder / 'crossiqa-myplain.safetensors')
    (folder / 'crossiqa-broken.safetensors').write_bytes(b'not a weight file')
    monkeypatch.setenv('CROSSIQA_HOME', str(tmp_path))
    try:
        _register_user_weights()
        calibrated = DEFAULT_CONFIGS['crossiqa-mycalibrated']['metric_opts']
        assert calibrated['noise_penalty'] == metrics[1].info['level_head']['noise_penalty'] > 0
        assert calibrated['noise_source'] == 'level'
        assert 'noise_penalty' not in DEFAULT_CONFIGS['crossiqa-myplain']['metric_opts']
        assert user_metric_opts(folder / 'crossiqa-broken.safetensors') == DEFAULT_CONFIGS['crossiqa-broken'][
            'metric_opts'] == {'type': 'CrossIQA', 'pretrained_model_path': str(folder / 'crossiqa-broken.safetensors'),
                               'head': 'linear'}
        x = smooth_photo('rocket')
        mine = pyiqa.create_metric('crossiqa-mycalibrated', device='cpu')
        with torch.inference_mode():
            assert mine(x).item() == pytest.approx(metrics[0](x).item(), abs=1e-4)
        with pytest.raises(ValueError, match='crossiqa-broken.safetensors is not a readable safetensors file'):
            pyiqa.create_metric('crossiqa-broken', device='cpu')
    finally:
        for name in ('crossiqa-mycalibrated', 'crossiqa-myplain', 'crossiqa-broken'):
            DEFAULT_CONFIGS.pop(name, None)
