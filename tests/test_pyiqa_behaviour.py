"""The plugin's metrics behave like pyiqa's wherever a pyiqa user puts them (issue 20).

As a loss (gradients reach the input, frozen weights stay frozen), inside a model put into
training (scores unchanged), at half precision and under autocast (float32 scores), with
pyiqa's range-check switches, and reading in-memory PIL images with their orientation
applied once. Every test runs the *shipped* metrics (all registered ones that load offline)
as well as small random networks, on real photographs cropped small to stay fast.
"""
from __future__ import annotations

import math
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import skimage.data  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

import crossiqa_pyiqa  # noqa: E402,F401
import pyiqa  # noqa: E402
from crossiqa_pyiqa.archs.crossiqa_arch import DEFAULT_WEIGHTS, CrossIQA, default_weight_path  # noqa: E402
from crossiqa_pyiqa.archs.grepq_arch import GRepQ  # noqa: E402
from crossiqa_pyiqa.inputs import read_image  # noqa: E402

HAVE_WEIGHTS = os.path.exists(default_weight_path(DEFAULT_WEIGHTS))
SMALL_VIT = dict(embed_dim=48, depth=2, num_heads=2, decoder_dim=32, decoder_depth=1, decoder_heads=2, img_size=64)
#: Score scale per metric: tolerances for half precision / autocast are a small fraction of it.
SCALE = {'crossiqa': 100.0, 'crossiqa-livec': 100.0, 'crossiqa-tiny': 100.0, 'crossiqa-zs': 10.0,
         'crossiqa-tiny-zs': 300.0, 'grepq-ll-zs': 0.5, 'grepq-zs': 1.5}


def _shipped() -> list[str]:
    return pyiqa.list_models(filter=['crossiqa*', 'grepq*'])


_CACHE: dict[tuple, object] = {}


def build(name: str, **opts):
    """``pyiqa.create_metric(name, **opts)`` (cached); skipped when the metric's files are not here offline."""
    key = (name, tuple(sorted(opts.items())))
    if key not in _CACHE:
        try:
            _CACHE[key] = pyiqa.create_metric(name, device='cpu', **opts)
        except FileNotFoundError as error:  # grepq-zs offline without CLIP RN50
            _CACHE[key] = error
    if isinstance(_CACHE[key], Exception):
        pytest.skip(f'{name} cannot load offline here: {_CACHE[key]}')
    return _CACHE[key]


def photo(name: str = 'astronaut', h: int = 112, w: int = 112, y: int = 0, x: int = 0) -> torch.Tensor:
    arr = getattr(skimage.data, name)()[y:y + h, x:x + w]
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].float() / 255


def tiny_networks() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    cnn = CrossIQA(pretrained=False, backbone='efficientnet_lite0', embed_dim=64, num_heads=4, decoder_dim=64,
                   decoder_depth=1, decoder_heads=4, img_size=64, patch_size=16, trainable_stages=2,
                   feature_tokens=('mean', 'std', 'cls'), feature_blocks=(4, 7), feature_scales=(1.0,))
    vit = CrossIQA(pretrained=False, **SMALL_VIT)
    grepq = GRepQ(pretrained=False, head='zeroshot')
    for net in (cnn, vit):
        with torch.no_grad():
            net.head.weight.normal_()
    return {'cnn': cnn, 'vit': vit, 'grepq': grepq}


# ============================================================================ as a loss
@pytest.mark.parametrize('name', _shipped())
def test_as_loss_gradients_reach_the_input_of_every_shipped_metric(name):
    metric = build(name, as_loss=True)
    frozen = {n for n, p in metric.net.named_parameters() if not p.requires_grad}
    x = photo('coffee', 112, 128).requires_grad_(True)
    loss = metric(x)
    loss.backward()
    assert x.grad is not None, f'{name}: no gradient reached the input'
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # frozen weights stay frozen: no gradient was accumulated into them
    assert all(p.grad is None for n, p in metric.net.named_parameters() if n in frozen)
    metric.net.zero_grad(set_to_none=True)


@pytest.mark.skipif(not HAVE_WEIGHTS, reason='no trained weights in this checkout')
def test_optimising_an_image_against_the_shipped_metric_raises_its_score():
    metric = build('crossiqa', as_loss=True)
    x0 = photo('astronaut', 112, 112)
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x0, (2, 2, 2, 2), mode='reflect'), 5, 1)
    x = blurred.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.01)
    start = metric(x).item()
    for _ in range(5):
        opt.zero_grad()
        (-metric(x)).backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)
    assert metric(x).item() > start + 1.0


@pytest.mark.skipif(not HAVE_WEIGHTS, reason='no trained weights in this checkout')
def test_freeze_encoder_on_the_shipped_model_still_passes_input_gradients():
    metric = build('crossiqa', as_loss=True, freeze_encoder=True)
    trainable = {n for n, p in metric.net.named_parameters() if p.requires_grad}
    assert trainable == {'head.weight', 'head.bias'}
    x = photo('chelsea', 96, 128).requires_grad_(True)
    metric(x).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert metric.net.head.weight.grad is not None
    assert all(p.grad is None for p in metric.net.encoder.parameters())


def test_tiny_networks_pass_input_gradients_and_keep_frozen_stages_frozen():
    for label, net in tiny_networks().items():
        x = photo('rocket', 96, 112).requires_grad_(True)
        net(x).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0, label
        if label == 'cnn':  # stages before the last 2 are frozen: no parameter gradients there
            stem = net.encoder.backbone.conv_stem.weight
            assert not stem.requires_grad and stem.grad is None
            assert net.encoder.backbone.blocks[-1][0].conv_pw.weight.grad is not None


def test_pretext_training_keeps_the_frozen_prefix_out_of_autograd():
    """Without an input that requires grad, the frozen stages still run under no_grad (pretext speed)."""
    net = tiny_networks()['cnn']
    maps = net.encoder.backbone(photo('coffee', 64, 64))
    first = net.encoder.backbone.first_trainable
    assert not maps[first - 1].requires_grad and maps[-1].requires_grad


# ====================================================================== train() mode
@pytest.mark.parametrize('name', _shipped())
def test_scores_do_not_drift_after_train_mode(name):
    metric = build(name)
    probe = photo('astronaut', 112, 112)
    before = metric(probe).clone()
    metric.train()
    try:
        for i in range(6):  # a loss inside a model in training sees many different batches
            x = photo(('coffee', 'chelsea', 'rocket')[i % 3], 96 + 8 * i, 112)
            metric(x)
        during = metric(probe)
    finally:
        metric.eval()
    assert torch.equal(during, before) and torch.equal(metric(probe), before), name


def test_tiny_networks_do_not_drift_after_train_mode():
    for label, net in tiny_networks().items():
        probe = photo('astronaut', 112, 112)
        with torch.no_grad():
            before = net(probe)
            net.train()
            for i in range(4):
                net(photo('coffee', 96, 96 + 8 * i) * 0.5)
            net.eval()
            assert torch.equal(net(probe), before), label


def test_grepq_training_tasks_still_learn_batch_norm_statistics():
    net = GRepQ(pretrained=False, head='zeroshot', freeze_batchnorm=False)
    bn = net.ll.backbone.bn1
    before = bn.running_mean.clone()
    net.train()
    net.low_level_features(photo('coffee', 96, 96))
    assert not torch.equal(bn.running_mean, before)


# =============================================================== pyiqa's range switches
@pytest.mark.parametrize('name', _shipped())
def test_as_loss_and_check_input_range_false_score_values_outside_0_1(name):
    x = photo('chelsea', 112, 112)
    x[:, :, :4, :4], x[:, :, -4:, -4:] = 1.01, -0.01  # [-0.01, 1.01]: an image being optimised
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        build(name)(x)
    scores, refused = {}, []
    for switch in ('check_input_range', 'as_loss'):  # each switch on its own: both are pyiqa's
        try:
            if switch == 'as_loss':
                scores[switch] = build(name, as_loss=True)(x.clone().requires_grad_(True)).detach()
            else:
                scores[switch] = build(name, check_input_range=False)(x)
        except ValueError as error:
            refused.append(f'{switch}: {error}')
    assert not refused, refused
    off, loss = scores['check_input_range'], scores['as_loss']
    assert torch.isfinite(off).all() and torch.allclose(off.reshape(-1), loss.reshape(-1), atol=1e-4)
    with pytest.raises(ValueError, match=r'\[0, 1\]'):  # the default metric still checks after the others ran
        build(name)(x)


# ================================================================= half and autocast
@pytest.mark.parametrize('name', _shipped())
def test_half_gives_float32_scores_close_to_float32(name):
    base = build(name)
    x = photo('coffee', 112, 144)
    ref = base(x)
    half = pyiqa.create_metric(name, device='cpu').half()
    h = half(x)  # bf77cb4: every call failed (float32 input against half weights)
    assert h.dtype == torch.float32 and abs(h.item() - ref.item()) < 0.02 * SCALE.get(name, 100.0), (h.item(), ref)
    for buf in ('feat_mean', 'feat_std', 'pristine_cov', 'zs_coef'):
        if hasattr(half.net, buf):  # statistics and head stay float32: half would turn them into noise
            assert getattr(half.net, buf).dtype == torch.float32
    assert half.net.head.weight.dtype == torch.float32
    assert torch.equal(base(x), ref)  # nothing left behind by half()


@pytest.mark.parametrize('name', _shipped())
def test_autocast_gives_a_float32_score_close_to_float32(name):
    base = build(name)
    x = photo('coffee', 112, 144)
    ref = base(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        a = base(x)
    assert a.dtype == torch.float32, a.dtype  # bf77cb4: bfloat16
    assert abs(a.item() - ref.item()) < 0.02 * SCALE.get(name, 100.0), (a.item(), ref.item())
    assert torch.equal(base(x), ref)  # nothing left behind by autocast


def test_tiny_networks_half_precision():
    for label, net in tiny_networks().items():
        x = photo('astronaut', 128, 128)
        with torch.no_grad():
            ref = net(x)
            h = net.half()(x)
            net.float()
        assert h.dtype == torch.float32 and torch.isfinite(h).all(), label
        assert torch.allclose(h, ref, rtol=0.05, atol=0.05 * max(1.0, ref.abs().max().item())), (label, h, ref)


# ===================================================================== EXIF orientation
@pytest.mark.skipif(not HAVE_WEIGHTS, reason='no trained weights in this checkout')
def test_exif_orientation_is_applied_once_to_pil_images(tmp_path):
    arr = skimage.data.chelsea()[:120, :180]
    stored = Image.fromarray(arr).transpose(Image.Transpose.ROTATE_90)  # as a camera stores it
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / 'cam.png'
    stored.save(path, exif=exif)
    upright = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    # from the file, straight from Image.open, and turned upright by the user: the same upright picture
    by_user = ImageOps.exif_transpose(Image.open(path))
    by_hand = Image.open(path).transpose(Image.Transpose.ROTATE_270)  # keeps the stale tag in info['exif']
    assert by_hand.getexif().get(0x0112) == 6
    for source in (path, str(path), Image.open(path), by_user, by_hand, path.read_bytes()):
        x = read_image(source)
        assert torch.equal(x, upright), type(source)
    metric = build('crossiqa')
    want = metric(upright[None]).item()
    for source in (str(path), Image.open(path), by_user, by_hand):
        assert metric(source).item() == pytest.approx(want, abs=1e-4)


# ============================================================================== files
def test_missing_file_is_file_not_found(tmp_path):
    missing = tmp_path / 'nope.jpg'
    with pytest.raises(FileNotFoundError, match='nope.jpg'):
        read_image(missing)
    metric = build('grepq-ll-zs')
    with pytest.raises(FileNotFoundError, match='nope.jpg'):
        metric(str(missing))


# ============================================================== tiles and score range
def _wide(h: int, w: int) -> torch.Tensor:
    """A real photo mirrored out to h x w (no resampling)."""
    arr = skimage.data.astronaut()
    reps = (math.ceil(h / arr.shape[0]) + 1, math.ceil(w / arr.shape[1]) + 1, 1)
    tiled = np.tile(np.concatenate([arr, arr[:, ::-1]], axis=1), reps)[:h, :w]
    return torch.from_numpy(np.ascontiguousarray(tiled)).permute(2, 0, 1)[None].float() / 255


@pytest.mark.skipif(not HAVE_WEIGHTS, reason='no trained weights in this checkout')
def test_score_is_continuous_where_whole_image_reading_turns_into_tiles():
    net = build('crossiqa').net
    limit = net.config['max_pixels']
    h = 800
    w_below = limit // h // 32 * 32  # 2944: the last width read whole (bit-identical to before)
    x = _wide(h, w_below + 32)
    with torch.no_grad():
        # below the limit: the whole image, bit-identical to what the head was fitted on
        assert torch.equal(net.forward_features(x[..., :w_below]), net._encode_features(x[..., :w_below]))
        above = net(x).item()  # 32 columns more: over the limit
        whole = net.head(net.standardise(net._encode_features(x))).item()  # the same image read whole
    # the tiling itself moves the score by a small step only (bf77cb4: a jump of ~0.8-1.25 here)
    assert abs(above - whole) < 0.2, (above, whole)


@pytest.mark.skipif(not HAVE_WEIGHTS, reason='no trained weights in this checkout')
def test_score_range_of_the_shipped_model_holds_on_random_crops():
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    metric = build('crossiqa')
    text = DEFAULT_CONFIGS['crossiqa']['score_range']  # what pyiqa tells its users ('~0, ~100' at bf77cb4)
    lo, hi = (float(part.strip().lstrip('~')) for part in text.split(','))
    rng = np.random.default_rng(0)
    scores = []
    for name in ('astronaut', 'coffee', 'chelsea', 'rocket', 'immunohistochemistry', 'retina'):
        arr = getattr(skimage.data, name)()
        for _ in range(2):
            s = int(rng.integers(64, 160))
            y, x = int(rng.integers(0, arr.shape[0] - s)), int(rng.integers(0, arr.shape[1] - s))
            scores.append(metric(photo(name, s, s, y, x)).item())
    assert all(lo <= v <= hi for v in scores), (lo, hi, min(scores), max(scores))
    from crossiqa_pyiqa.registration import parse_score_range

    assert parse_score_range(text) == (lo, hi)
