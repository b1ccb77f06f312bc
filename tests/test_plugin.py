"""The pyiqa plugin: registration, entry points, scoring at native resolution, weight files."""
import os
import subprocess
import sys

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

import crossiqa_pyiqa  # noqa: F401
import pyiqa
from crossiqa_pyiqa.archs.crossiqa_arch import DEFAULT_WEIGHTS, CrossIQA, default_weight_path
from crossiqa_pyiqa.weights import WeightFileError, save_weights

SMALL = dict(embed_dim=48, depth=2, num_heads=2, decoder_dim=32, decoder_depth=1, decoder_heads=2, img_size=64)


def photo(name: str, h: int, w: int) -> torch.Tensor:
    """A real photograph from scikit-image, cropped to h×w (no resizing)."""
    arr = getattr(skimage.data, name)()
    assert arr.shape[0] >= h and arr.shape[1] >= w
    return torch.from_numpy(arr[:h, :w].copy()).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope='module')
def net() -> CrossIQA:
    torch.manual_seed(0)
    return CrossIQA(pretrained=False, **SMALL)


@pytest.fixture(scope='module')
def weight_file(tmp_path_factory, net) -> str:
    path = tmp_path_factory.mktemp('w') / 'crossiqa-test.safetensors'
    with torch.no_grad():  # a non-trivial head so that scores depend on it
        net.head.weight.normal_()
        net.feat_mean.normal_()
    net.save_pretrained(str(path), {'note': 'test'})
    return str(path)


def test_registered_in_pyiqa():
    from pyiqa.default_model_configs import DEFAULT_CONFIGS
    from pyiqa.utils.registry import ARCH_REGISTRY

    assert ARCH_REGISTRY.get('CrossIQA') is CrossIQA
    nr = pyiqa.list_models(metric_mode='NR')
    for name in ('crossiqa', 'crossiqa-livec', 'crossiqa-zs', 'crossiqa-tiny', 'crossiqa-tiny-zs'):
        assert name in nr
        cfg = DEFAULT_CONFIGS[name]
        assert cfg['metric_mode'] == 'NR' and 'score_range' in cfg and 'lower_better' in cfg
    assert DEFAULT_CONFIGS['crossiqa-zs']['lower_better'] is False  # synthetic-pairs direction: a quality score
    assert DEFAULT_CONFIGS['crossiqa-tiny-zs']['lower_better'] is True  # Mahalanobis distance
    assert DEFAULT_CONFIGS['crossiqa']['lower_better'] is False


def test_entry_point_resolves_without_importing_plugin():
    code = (
        "import sys\n"
        "from pyiqa.archs import build_network\n"
        "assert 'crossiqa_pyiqa' not in sys.modules\n"
        "net = build_network({'type': 'CrossIQA', 'pretrained': False, 'embed_dim': 48, 'depth': 1, 'num_heads': 2})\n"
        "print(type(net).__module__, net.feature_dim)\n"
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['crossiqa_pyiqa.archs.crossiqa_arch', str(48 * 2 * 2)]


@pytest.mark.parametrize('name,h,w', [('astronaut', 512, 512), ('chelsea', 300, 451), ('coffee', 384, 512)])
def test_scores_native_sizes_deterministic(net, name, h, w):
    x = photo(name, h, w)
    s1, s2 = net(x), net(x)
    assert s1.shape == (1, 1) and torch.isfinite(s1).all()
    assert torch.equal(s1, s2)
    # native scale matters: the same photo resized to 224×224 gives different features
    resized = torch.nn.functional.interpolate(x, size=(224, 224), mode='bilinear', antialias=True)
    assert not torch.allclose(net.forward_features(x), net.forward_features(resized), atol=1e-3)


def test_tiles_cover_the_image(net):
    """forward_features == mean over edge-aligned tiles of the training size, at each scale."""
    net1 = CrossIQA(pretrained=False, **{**SMALL, 'feature_scales': (1.0,)})
    net1.encoder.load_state_dict(net.encoder.state_dict())
    x = photo('chelsea', 150, 200)  # 3 x 4 tiles of 64, last row/col aligned to the edges
    tiles = [x[:, :, y:y + 64, c:c + 64] for y in (0, 64, 86) for c in (0, 64, 128, 136)]
    expected = torch.cat([net1._encode_features(t) for t in tiles]).mean(0, keepdim=True)
    assert torch.allclose(net1.forward_features(x), expected, atol=1e-5)
    # altering only the last rows changes the features: the edge tile sees them
    y = x.clone()
    y[:, :, -10:] = 0
    assert not torch.allclose(net1.forward_features(x), net1.forward_features(y), atol=1e-4)


def test_interp_mode_and_memory_bound():
    torch.manual_seed(0)
    net = CrossIQA(pretrained=False, **{**SMALL, 'native_mode': 'interp', 'max_tokens': 64})
    small = photo('astronaut', 96, 128)  # 6x8 = 48 tokens: one sequence
    large = photo('astronaut', 256, 256)  # 256 tokens > 64: tiles of 8x8 patches
    assert torch.isfinite(net(small)).all() and torch.isfinite(net(large)).all()
    assert net._features_one_scale(small).shape[1] == 1
    assert net._features_one_scale(large).shape[1] == 4


def test_batch_equals_single(net):
    xs = torch.cat([photo('astronaut', 200, 264), photo('coffee', 200, 264), photo('chelsea', 200, 264)])
    batch = net(xs)
    single = torch.cat([net(x[None]) for x in xs])
    assert torch.allclose(batch, single, atol=1e-5)


def test_as_loss_gives_input_gradients(weight_file):
    metric = pyiqa.create_metric('crossiqa', as_loss=True, device='cpu', pretrained_model_path=weight_file)
    x = photo('astronaut', 128, 160).requires_grad_(True)
    loss = metric(x)
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_create_metric_scores_file_and_roundtrip(tmp_path, net, weight_file):
    img = tmp_path / 'photo.png'
    Image.fromarray(skimage.data.chelsea()).save(img)
    metric = pyiqa.create_metric('crossiqa', device='cpu', pretrained_model_path=weight_file)
    from_file = metric(str(img))
    direct = net(torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1)[None].float() / 255)
    assert torch.allclose(from_file, direct, atol=1e-6)
    # save → load reproduces scores exactly
    copy = tmp_path / 'copy.safetensors'
    metric.net.save_pretrained(str(copy))
    again = pyiqa.create_metric('crossiqa', device='cpu', pretrained_model_path=str(copy))
    assert torch.equal(again(str(img)), from_file)
    assert again.net.info['note'] == 'test'


def test_default_weights_missing_is_a_clear_error():
    from crossiqa_pyiqa.archs.crossiqa_arch import default_weight_path

    if os.path.exists(default_weight_path(DEFAULT_WEIGHTS)):
        pytest.skip('trained weights ship with this version')
    with pytest.raises(FileNotFoundError, match='pretrained_model_path'):
        pyiqa.create_metric('crossiqa', device='cpu')


def test_bad_weight_files(tmp_path, net, weight_file):
    with pytest.raises(FileNotFoundError, match='nope.safetensors'):
        CrossIQA(pretrained_model_path=str(tmp_path / 'nope.safetensors'))
    corrupt = tmp_path / 'corrupt.safetensors'
    corrupt.write_bytes(os.urandom(256))
    with pytest.raises(WeightFileError, match='corrupt.safetensors'):
        CrossIQA(pretrained_model_path=str(corrupt))
    truncated = tmp_path / 'truncated.safetensors'
    truncated.write_bytes(open(weight_file, 'rb').read()[:5000])
    with pytest.raises(WeightFileError, match='truncated.safetensors'):
        CrossIQA(pretrained_model_path=str(truncated))
    from safetensors.torch import save_file
    foreign = tmp_path / 'foreign.safetensors'
    save_file({'w': torch.zeros(2)}, str(foreign))
    with pytest.raises(WeightFileError, match='format'):
        CrossIQA(pretrained_model_path=str(foreign))
    # right format, wrong tensors: a state dict from a wider model under a narrower config
    wide = CrossIQA(pretrained=False, **{**SMALL, 'embed_dim': 64})
    mismatched = tmp_path / 'mismatched.safetensors'
    save_weights(mismatched, wide.state_dict(), 'CrossIQA', {**wide.config, 'embed_dim': 48})
    with pytest.raises(WeightFileError, match=r'mismatched.safetensors.*shape mismatches'):
        CrossIQA(pretrained_model_path=str(mismatched))
    with pytest.raises(ValueError, match='embed_dim=48'):
        CrossIQA(pretrained_model_path=weight_file, embed_dim=96)
    with pytest.raises(ValueError, match='zero-shot statistics'):
        CrossIQA(pretrained_model_path=weight_file, head='zeroshot')


def test_too_small_input(net):
    with pytest.raises(ValueError, match=r'8x12.*64x64 minimum'):
        net(torch.rand(1, 3, 8, 12))
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        net(torch.rand(3, 64, 64))


def test_cli_scores_folder_and_reports_bad_files(tmp_path, weight_file):
    folder = tmp_path / 'imgs'
    folder.mkdir()
    Image.fromarray(skimage.data.chelsea()).save(folder / 'cat.png')
    Image.fromarray(skimage.data.astronaut()[:200, :200]).save(folder / 'astronaut.jpg')
    (folder / 'broken.jpg').write_bytes(b'not an image')
    env = {**os.environ, 'CROSSIQA_HOME': str(tmp_path / 'home')}
    os.makedirs(tmp_path / 'home' / 'weights')
    os.symlink(weight_file, tmp_path / 'home' / 'weights' / 'crossiqa-test.safetensors')
    out = subprocess.run([sys.executable, '-m', 'crossiqa_pyiqa.cli', 'score', '-t', str(folder), '-m',
                          'crossiqa-test', '--csv', str(tmp_path / 'out.csv'), '-q'],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 1, out.stderr  # one file failed
    assert 'FAILED' in out.stderr and 'broken.jpg' in out.stderr
    import csv
    with open(tmp_path / 'out.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ['image', 'crossiqa-test', 'errors'] and len(rows) == 3  # in scoring order, names relative
    by_name = {r['image']: r for r in rows}
    assert by_name['broken.jpg']['crossiqa-test'] == '' and 'ImageReadError' in by_name['broken.jpg']['errors']
    assert all(float(by_name[n]['crossiqa-test']) and not by_name[n]['errors'] for n in ('cat.png', 'astronaut.jpg'))
    table = out.stdout.splitlines()
    ranked = [line.split()[1] for line in table[2:4]]  # the table is sorted best first
    scores = {n: float(by_name[n]['crossiqa-test']) for n in ('cat.png', 'astronaut.jpg')}
    assert ranked == sorted(scores, key=scores.get, reverse=True)


def test_shipped_model_prefers_sharp_photos():
    """The packaged crossiqa (CLIVE head) scores Gaussian blur (KADID level 4) below the original."""
    from crossiqa_pyiqa import degradations
    from crossiqa_pyiqa.archs.crossiqa_arch import default_weight_path

    if not os.path.exists(default_weight_path(DEFAULT_WEIGHTS)):
        pytest.skip('no trained weights in this checkout')
    metric = pyiqa.create_metric('crossiqa', device='cpu')
    info = metric.net.info
    # 1161: CLIVE's byte-identical 246.bmp / 333.bmp count once (mean MOS)
    assert info['dataset'] and info['n_images'] == 1161 and info['has_pristine_stats']
    for name in ('astronaut', 'chelsea', 'coffee', 'rocket'):
        x = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1)[None].float() / 255
        blurred = degradations.apply(x, 'gaussian_blur', 4, generator=torch.Generator().manual_seed(0))
        assert metric(blurred).item() < metric(x).item() - 3, name
    zs = pyiqa.create_metric('crossiqa-zs', device='cpu')
    assert not zs.lower_better and zs(blurred).item() < zs(x).item()  # no MOS: the synthetic pairs' direction


def test_shipped_model_prefers_clean_photos_to_added_noise_and_jpeg():
    """The tiny ViT scored Gaussian noise *above* the clean photo on every photo; the shipped model must not."""
    import io

    from crossiqa_pyiqa.archs.crossiqa_arch import DEFAULT_WEIGHTS, default_weight_path

    if not os.path.exists(default_weight_path(DEFAULT_WEIGHTS)):
        pytest.skip('no trained weights in this checkout')
    metric = pyiqa.create_metric('crossiqa', device='cpu')
    rng = np.random.default_rng(0)
    for name in ('astronaut', 'coffee', 'chelsea'):
        rgb = getattr(skimage.data, name)()
        clean = metric(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255).item()
        noisy = np.clip(rgb + rng.normal(0, 10, rgb.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format='JPEG', quality=10)
        jpeg = np.array(Image.open(buf))
        for distorted in (noisy, jpeg):
            assert metric(torch.from_numpy(distorted).permute(2, 0, 1)[None].float() / 255).item() < clean, name


def test_freeze_encoder_trains_only_the_head():
    torch.manual_seed(0)
    net = CrossIQA(pretrained=False, freeze_encoder=True, **SMALL)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {'head.weight', 'head.bias'}
    x = photo('coffee', 96, 96).requires_grad_(True)
    net(x).sum().backward()
    assert net.head.weight.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.encoder.parameters())
