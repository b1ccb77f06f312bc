"""Explaining a score (issue 21): family strengths and the quality map, on real photos.

On scikit-image's photos (no data set needed): the shipped ``crossiqa`` names a strong blur,
noise, JPEG or darkening, and its map is lower on the degraded half of a half-degraded photo
(blurred, noisy, darkened or greyed); the map is the score head on local windows less the
diagnosis heads' penalty (a window as large as the image gives the score, or the score less the
photo's own penalty);
the diagnosis heads travel in the weight file without changing anything else in it (fitted
here on a few crops, with the real fitting code); bad input fails as for the metrics; the CLI
writes the pictures and the CSV columns. Checks are about behaviour, not about numbers of
one encoder's weights, so a new encoder with refitted heads passes them too.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import skimage.data  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import crossiqa_pyiqa  # noqa: E402
import pyiqa  # noqa: E402
from crossiqa_pyiqa.archs.crossiqa_arch import DEFAULT_WEIGHTS, CrossIQA, default_weight_path  # noqa: E402
from crossiqa_pyiqa.degradations import ALL_DEGRADATIONS, apply  # noqa: E402
from crossiqa_pyiqa.degradations.families import (FAMILIES, FAMILY_TABLE, HEAD_OUTPUTS, TYPE_FAMILIES,  # noqa: E402
                                                  exposure_direction, family_strengths, targets, type_direction)
from crossiqa_pyiqa.weights import read_weights, save_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = default_weight_path(DEFAULT_WEIGHTS)
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1'}


def photo(name: str = 'astronaut', size: tuple[int, int] = (320, 384)) -> torch.Tensor:
    arr = getattr(skimage.data, name)()
    h, w = size
    y, x = (arr.shape[0] - h) // 2, (arr.shape[1] - w) // 2
    crop = np.ascontiguousarray(arr[y:y + h, x:x + w])
    return torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope='module')
def metric():
    return pyiqa.create_metric('crossiqa', device='cpu')


def shipped_has_heads() -> bool:
    return any(k.startswith('diagnosis.') for k in read_weights(SHIPPED)[0])


needs_heads = pytest.mark.skipif(not os.path.exists(SHIPPED) or not shipped_has_heads(),
                                 reason='the shipped weight file holds no diagnosis heads')


# ============================================================================ family table
def test_every_library_type_has_one_family_or_is_not_diagnosed():
    assert set(TYPE_FAMILIES) == set(ALL_DEGRADATIONS)
    missing = set(ALL_DEGRADATIONS) - set(FAMILY_TABLE)
    assert not missing, f'add {sorted(missing)} to FAMILY_TABLE (crossiqa_pyiqa/degradations/families.py)'
    assert all(t.family in (*FAMILIES, None) for t in TYPE_FAMILIES.values())
    assert targets(None, 0) == {k: 0.0 for k in HEAD_OUTPUTS}
    assert targets('gaussian_blur', 5)['blur'] == 1.0 and targets('jpeg', 1)['compression'] == pytest.approx(0.2)
    low = targets('low_light', 4, 'dark')  # dark exposure brought up by gain: both families
    assert low['exposure_dark'] == low['noise'] == pytest.approx(0.8) and low['exposure_bright'] == 0
    with pytest.raises(ValueError, match='not diagnosed'):
        targets('jitter', 3)
    x = photo('coffee', (64, 64))
    for seed in range(6):  # mean_shift's sign is random per image: the direction is read from the pixels
        y = apply(x, 'mean_shift', 5, generator=torch.Generator().manual_seed(seed))
        assert exposure_direction('mean_shift', x, y) == ('bright' if y.mean() > x.mean() else 'dark')
    assert exposure_direction('darken', x, x) == 'dark' and exposure_direction('jpeg', x, x) is None
    for seed in range(4):  # contrast_change goes up or down: the direction is the luminance spread's change
        y = apply(x, 'contrast_change', 5, generator=torch.Generator().manual_seed(seed))
        lum = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        spread = float((y * lum).sum(1).std() - (x * lum).sum(1).std())
        assert type_direction('contrast_change', x, y) == ('high' if spread > 0 else 'low')
    strengths, directions = family_strengths({**targets('white_balance', 3, 'cast'), 'colour_faded': 0.1})
    assert strengths['colour'] == pytest.approx(0.6) and directions['colour'] == 'cast'
    assert set(strengths) == set(FAMILIES) and set(directions) == {'exposure', 'contrast', 'colour'}


def test_multi_output_ridge_recovers_outputs_and_grouped_folds_keep_groups():
    from crossiqa_pyiqa.regression.ridge import fit_ridge_multi, kfold

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 10)) * rng.uniform(0.5, 3, 10)
    true = rng.normal(size=(3, 10))
    y = x @ true.T + 0.01 * rng.normal(size=(120, 3))
    groups = np.repeat(np.arange(30), 4)
    model = fit_ridge_multi(x, y, [1e-3, 1e-1, 10, 1e3], n_folds=5, groups=groups)
    assert np.abs(model.predict(x) - y).max() < 0.1 and model.alphas.shape == (3,)
    for fit, val in kfold(120, 5, 0, groups):
        assert not set(groups[fit]) & set(groups[val]) and len(fit) + len(val) == 120


def test_diagnosis_options_refuse_bad_values_by_name(tmp_path):
    from crossiqa_pyiqa.regression.diagnosis import diagnosis_options

    good = {'pristine_dirs': [str(tmp_path)]}
    assert diagnosis_options(good)['map_window'] == 3
    for bad, message in (({'map_window': 2}, 'map_window must be an odd'), ({'map_cells': 0}, 'map_cells'),
                         ({'map_images': True}, 'map_images'), ({'levels': [0]}, 'levels'),
                         ({'crops': [32]}, 'crops'), ({'window': 3}, 'Unknown diagnosis option')):
        with pytest.raises(ValueError, match=message):
            diagnosis_options({**good, **bad})
    with pytest.raises(FileNotFoundError, match='not a folder'):
        diagnosis_options({'pristine_dirs': [str(tmp_path / 'missing')]})


# ============================================================ heads in the weight file
@pytest.fixture(scope='module')
def fitted(tmp_path_factory):
    """A copy of the shipped file without heads, and that file with heads fitted here by the real fit."""
    tmp = tmp_path_factory.mktemp('diagnosis')
    state, config, info = read_weights(SHIPPED)
    bare = tmp / 'bare.safetensors'
    save_weights(bare, {k: v for k, v in state.items() if not k.startswith(('diagnosis.', 'diagnosis_map.'))},
                 'CrossIQA', config, {k: v for k, v in info.items() if k not in ('diagnosis', 'diagnosis_map')})
    photos = tmp / 'photos'
    photos.mkdir()
    for name in ('astronaut', 'coffee', 'chelsea', 'rocket'):
        Image.fromarray(np.ascontiguousarray(getattr(skimage.data, name)()[:256, :256])).save(photos / f'{name}.png')
    options = tmp / 'diag.yml'
    options.write_text(f'name: test\ndiagnosis:\n  pristine_dirs: [{photos}]\n  n_images: 4\n  crops: [96, 128]\n'
                       '  pristine_crops: 2\n  types: [gaussian_blur, white_noise, jpeg, darken, brighten]\n'
                       '  cv_folds: 2\n  alphas: [10, 1000]\n  map_images: 4\n  map_cells: 4\n')
    out = tmp / 'with_heads.safetensors'
    run = subprocess.run([sys.executable, str(ROOT / 'scripts/fit_diagnosis.py'), '-opt', str(options), '--weights',
                          str(bare), '--out', str(out), '--cache_dir', str(tmp / 'cache')],
                         capture_output=True, text=True, timeout=600, env=ENV, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    return bare, out


def _only_heads_added(before_file, after_file, entry: str) -> dict:
    """Asserts that ``after_file`` is ``before_file`` plus the float32 heads ``entry.*`` and their metadata entry
    (every other tensor bit for bit, dtypes included: network weights stay float16); returns that entry."""
    before, config_before, info_before = read_weights(before_file)
    after, config_after, info_after = read_weights(after_file)
    extra = sorted(set(after) - set(before))
    assert extra == [f'{entry}.{k}' for k in ('coef', 'intercept', 'mean', 'std')]
    for key, value in before.items():
        assert after[key].dtype == value.dtype and torch.equal(after[key], value), key
    assert all(after[k].dtype == torch.float32 for k in extra)
    prov = info_after.pop(entry)
    assert info_after == info_before and config_after == config_before
    return prov


@pytest.fixture(scope='module')
def fitted_map(fitted):
    """``fitted``'s file with the quality map's window heads added by ``fit_diagnosis.py --map``."""
    _, out = fitted
    options = out.parent / 'diag.yml'
    with_map = out.parent / 'with_map.safetensors'
    run = subprocess.run([sys.executable, str(ROOT / 'scripts/fit_diagnosis.py'), '-opt', str(options), '--weights',
                          str(out), '--out', str(with_map), '--map'],
                         capture_output=True, text=True, timeout=600, env=ENV, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    return out, with_map


def test_window_heads_are_added_beside_the_crop_heads_and_the_map_reads_them(fitted_map):
    from crossiqa_pyiqa.archs.quality_map import encode_maps, family_strength_maps, local_features, quality_map
    from crossiqa_pyiqa.explanation import MAP_HEAD_WEIGHT, map_penalty_for

    out, with_map = fitted_map
    prov = _only_heads_added(out, with_map, 'diagnosis_map')  # crop heads and network bit for bit
    assert prov['outputs'] == list(HEAD_OUTPUTS) and prov['window_cells'] == 3 and '--map' in prov['command']
    assert prov['n_images'] == 4 and prov['n_rows'] == 4 * prov['n_crops']  # 4 windows per crop
    x = photo('chelsea', (200, 232))
    plain = pyiqa.create_metric('crossiqa', device='cpu', pretrained_model_path=str(out))
    m = pyiqa.create_metric('crossiqa', device='cpu', pretrained_model_path=str(with_map))
    assert torch.equal(plain(x), m(x))  # the score does not move
    a, b = crossiqa_pyiqa.explain(x, plain), crossiqa_pyiqa.explain(x, m)
    assert a.families == b.families  # the family strengths still come from the crop heads
    assert a.info['map_heads'] == 'crop' and a.info['map_head_weight'] == 1.0
    assert b.info['map_heads'] == 'window' and b.info['map_head_weight'] == MAP_HEAD_WEIGHT
    net = m.net
    penalty = map_penalty_for(net)
    with torch.inference_mode():
        encoded = encode_maps(net, x)
        feats = local_features(net, encoded, 3)
        head = quality_map(net, encoded, 3, centre=False, penalty={})
        window = family_strength_maps(net, feats, list(penalty))
        crop = family_strength_maps(net, feats, list(penalty), heads=net.diagnosis)
        expected = MAP_HEAD_WEIGHT * head - sum(penalty[f] * s for f, s in window.items())
    assert not torch.allclose(window['blur'], crop['blur'])  # the map reads the window heads ...
    centred = expected - expected.mean() + b.score
    np.testing.assert_allclose(b.quality_map, centred[0].numpy(), atol=1e-3)  # ... at MAP_HEAD_WEIGHT
    assert not np.allclose(a.quality_map, b.quality_map, atol=1e-2)
    # half(): the window heads stay float32, like the crop heads
    assert CrossIQA(pretrained_model_path=str(with_map)).half().diagnosis_map.coef.dtype == torch.float32


def test_heads_are_added_and_nothing_else_in_the_file_changes(fitted):
    bare, out = fitted
    prov = _only_heads_added(bare, out, 'diagnosis')
    assert prov['outputs'] == list(HEAD_OUTPUTS) and 'fit_diagnosis.py' in prov['command']
    assert prov['types'] == ['gaussian_blur', 'white_noise', 'jpeg', 'darken', 'brighten'] and prov['date']
    x = photo('chelsea', (200, 232))
    plain = pyiqa.create_metric('crossiqa', device='cpu', pretrained_model_path=str(bare))
    heads = pyiqa.create_metric('crossiqa', device='cpu', pretrained_model_path=str(out))
    assert torch.equal(plain(x), heads(x))  # the score does not move by one bit
    zs = pyiqa.create_metric('crossiqa-zs', device='cpu', pretrained_model_path=str(out))
    assert torch.equal(zs(x), pyiqa.create_metric('crossiqa-zs', device='cpu', pretrained_model_path=str(bare))(x))
    net = CrossIQA(pretrained_model_path=str(out)).half()
    assert net.diagnosis.coef.dtype == torch.float32 and net.encoder.quality_norm.weight.dtype == torch.float16
    # a file written by save_pretrained(dtype=float16) keeps the heads float32 and loads strictly
    again = net.float().save_pretrained(str(out.parent / 'again.safetensors'), dtype=torch.float16)
    state = read_weights(again)[0]
    assert state['diagnosis.coef'].dtype == torch.float32
    assert torch.equal(CrossIQA(pretrained_model_path=again).diagnosis.coef, net.diagnosis.coef)


def test_a_file_without_heads_names_the_fit_command_and_broken_heads_are_refused(fitted, tmp_path):
    bare, out = fitted
    with pytest.raises(RuntimeError, match=r'no diagnosis heads.*scripts/fit_diagnosis\.py -opt '
                                           r'options/regress/crossiqa_diagnosis\.yml --weights'):
        crossiqa_pyiqa.explain(photo(), pyiqa.create_metric('crossiqa', pretrained_model_path=str(bare)))
    state, config, info = read_weights(out)
    info.pop('diagnosis')
    broken = tmp_path / 'broken.safetensors'
    save_weights(broken, state, 'CrossIQA', config, info)
    with pytest.raises(ValueError, match='no matching output names.*fit_diagnosis'):
        CrossIQA(pretrained_model_path=str(broken))
    state['diagnosis.coef'] = state['diagnosis.coef'].half()
    save_weights(broken, state, 'CrossIQA', config, read_weights(out)[2])
    with pytest.raises(ValueError, match=r"diagnosis\.coef.*float16"):
        CrossIQA(pretrained_model_path=str(broken))


def test_fitted_heads_answer_in_range_and_name_a_strong_blur(fitted):
    _, out = fitted
    m = pyiqa.create_metric('crossiqa', device='cpu', pretrained_model_path=str(out))
    x = photo('astronaut', (256, 256))
    found = crossiqa_pyiqa.explain(apply(x, 'gaussian_blur', 5), m, quality_map=False)
    assert all(0 <= v <= 1 for v in found.families.values()) and found.quality_map is None
    assert found.top_family == 'blur'


# ==================================================================== the shipped model
@needs_heads
def test_shipped_model_names_strong_degradations_of_a_real_photo(metric):
    x = photo('chelsea', (288, 384))
    g = torch.Generator().manual_seed(0)
    clean = crossiqa_pyiqa.explain(x, metric, quality_map=False)
    cases = {'gaussian_blur': 'blur', 'white_noise': 'noise', 'jpeg': 'compression', 'darken': 'exposure'}
    for name, family in cases.items():
        found = crossiqa_pyiqa.explain(apply(x, name, 5, generator=g), metric, quality_map=False)
        assert found.top_family == family, (name, found.families)
        assert found.families[family] > clean.families[family] + 0.3, (name, found.families, clean.families)
    dark = crossiqa_pyiqa.explain(apply(x, 'darken', 5), metric, quality_map=False)
    bright = crossiqa_pyiqa.explain(apply(x, 'brighten', 5), metric, quality_map=False)
    assert dark.exposure_direction == 'dark' and bright.exposure_direction == 'bright'
    blur = [crossiqa_pyiqa.explain(apply(x, 'gaussian_blur', lv), metric, quality_map=False).families['blur']
            for lv in (1, 3, 5)]
    assert blur[0] < blur[1] < blur[2]  # strength grows with the level


def _halves(q: np.ndarray) -> tuple[float, float]:
    n = q.shape[1] // 2  # whole cells on each side
    return float(q[:, :n].mean()), float(q[:, -n:].mean())


@needs_heads
@pytest.mark.parametrize('name', ['gaussian_blur', 'white_noise'])
def test_map_is_lower_on_the_degraded_half(metric, name):
    for image in ('chelsea', 'astronaut'):
        x = photo(image, (288, 384))
        clean = crossiqa_pyiqa.explain(x, metric).quality_map
        w = x.shape[-1] // 2
        for side in ('left', 'right'):
            y = x.clone()
            part = (Ellipsis, slice(0, w)) if side == 'left' else (Ellipsis, slice(w, None))
            y[part] = apply(x[part].contiguous(), name, 4, generator=torch.Generator().manual_seed(1))
            q = crossiqa_pyiqa.explain(y, metric).quality_map
            left, right = _halves(q)
            drop_left, drop_right = _halves(q - clean)
            # the map drops more on the degraded half than on the other ...
            assert (drop_left < drop_right) if side == 'left' else (drop_right < drop_left), (image, side)
            if image == 'chelsea':  # ... and ends lower there; on the astronaut the noisy left half (the suit's
                # detail) stays above the plain right half: content moves the map too (docs/EXPLAIN.md)
                assert (left < right) if side == 'left' else (right < left), (image, name, side, left, right)


@needs_heads
def test_map_is_the_score_head_on_windows_and_its_mean_is_the_score(metric):
    from crossiqa_pyiqa.archs.quality_map import encode_maps, quality_map

    x = photo('coffee', (200, 300))
    found = crossiqa_pyiqa.explain(x, metric)
    assert found.score == metric(x).item()  # the metric's score, exactly
    assert found.quality_map.shape == (7, 10) and found.map_cell == 32 and found.map_window == 96
    assert found.quality_map.mean() == pytest.approx(found.score, abs=1e-3)
    net = metric.net
    with torch.inference_mode():
        encoded = encode_maps(net, x)
        whole = quality_map(net, encoded, 19, centre=False)  # every window covers the whole image
    assert torch.allclose(whole, torch.full_like(whole, found.score), atol=1e-3)
    assert sum(found.families.values()) >= 0 and set(found.row()) == {*FAMILIES, 'exposure_direction', 'contrast_direction',
                                                                           'colour_kind', 'top_family'}


@needs_heads
def test_map_penalty_marks_a_darkened_or_faded_half_and_keeps_the_score_relation(metric):
    from crossiqa_pyiqa.archs.quality_map import encode_maps, family_strength_maps, local_features, quality_map
    from crossiqa_pyiqa.explanation import MAP_HEAD_WEIGHT, MAP_PENALTY, MAP_PENALTY_BY_METRIC, map_penalty_for

    net = metric.net
    # the shipped file is charged its own fit (scripts/fit_map_penalty.py); crossiqa-v1's file the default
    penalty = map_penalty_for(net)
    assert penalty == MAP_PENALTY_BY_METRIC['crossiqa-lite0-tone'] != MAP_PENALTY
    assert map_penalty_for(pyiqa.create_metric('crossiqa-v1', device='cpu').net) == MAP_PENALTY
    for table in (MAP_PENALTY, *MAP_PENALTY_BY_METRIC.values()):
        assert set(table) == set(MAP_PENALTY) <= set(FAMILIES) and all(v >= 0 for v in table.values())
    x = photo('chelsea', (288, 384))
    w = x.shape[-1] // 2
    for change in ('dark', 'faded'):
        for side in ('left', 'right'):
            y = x.clone()
            part = (Ellipsis, slice(0, w)) if side == 'left' else (Ellipsis, slice(w, None))
            if change == 'dark':  # Pillow-style darkening: every channel times 0.35
                y[part] = x[part] * 0.35
            else:  # grey: luminance only
                grey = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:])[part]
                y[part] = grey.expand_as(y[part])
            q = crossiqa_pyiqa.explain(y, metric).quality_map
            left, right = _halves(q)
            assert (left < right) if side == 'left' else (right < left), (change, side, left, right)
    # the penalty is the window heads' strengths on each window times the file's penalty, beside MAP_HEAD_WEIGHT x the
    # score head; {} is the score head alone
    y = x.clone()
    y[..., :w] = x[..., :w] * 0.35
    assert net.diagnosis_map is not None, 'the shipped file holds the window heads (fit_diagnosis.py --map)'
    with torch.inference_mode():
        encoded = encode_maps(net, y)
        head = quality_map(net, encoded, 3, centre=False, penalty={})
        strengths = family_strength_maps(net, local_features(net, encoded, 3), list(penalty))
        expected = MAP_HEAD_WEIGHT * head - sum(penalty[f] * s for f, s in strengths.items())
        shown = quality_map(net, encoded, 3, centre=False, penalty=penalty, head_weight=MAP_HEAD_WEIGHT)
        assert torch.allclose(shown, expected, atol=1e-4)
        cells = w // 32
        assert float(strengths['exposure'][..., :cells].mean()) > float(strengths['exposure'][..., -cells:].mean())
        # a window covering the whole photo, crop heads, head weight 1: the score less the penalty of the
        # photo's own family strengths
        whole = quality_map(net, encoded, 25, centre=False, penalty=penalty, heads=net.diagnosis)
        found = crossiqa_pyiqa.explain(y, metric)
        own = found.score - sum(penalty[f] * found.families[f] for f in penalty)
    assert torch.allclose(whole, torch.full_like(whole, own), atol=1e-3)
    assert found.info['map_heads'] == 'window' and found.info['map_head_weight'] == MAP_HEAD_WEIGHT
    assert found.quality_map.mean() == pytest.approx(found.score, abs=1e-3)
    assert found.info['map_penalty'] == penalty
    plain = crossiqa_pyiqa.explain(y, metric, map_penalty={}).quality_map
    assert plain.mean() == pytest.approx(found.score, abs=1e-3) and not np.allclose(plain, found.quality_map)


@needs_heads
def test_inputs_are_read_and_checked_like_the_metrics(metric, tmp_path):
    x = photo('rocket', (128, 160))
    arr = (x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    path = tmp_path / 'rocket.png'
    Image.fromarray(arr).save(path)
    by_path = crossiqa_pyiqa.explain(str(path), metric)
    assert by_path.score == metric(str(path)).item()
    assert crossiqa_pyiqa.explain(Image.open(path), metric).families == by_path.families
    # an EXIF-rotated JPEG is turned upright, as the metric reads it
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / 'rotated.jpg', exif=exif, quality=95)
    rotated = crossiqa_pyiqa.explain(str(tmp_path / 'rotated.jpg'), metric)
    assert rotated.image_size == (160, 128) and rotated.score == pytest.approx(metric(str(tmp_path / 'rotated.jpg')).item())
    with pytest.raises(FileNotFoundError, match='missing.png'):
        crossiqa_pyiqa.explain(str(tmp_path / 'missing.png'), metric)
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        crossiqa_pyiqa.explain(x * 255, metric)
    with pytest.raises(ValueError, match='smaller than'):
        crossiqa_pyiqa.explain(x[..., :16, :16], metric)
    with pytest.raises(ValueError, match='one image'):
        crossiqa_pyiqa.explain(torch.cat([x, x]), metric)
    with pytest.raises(ValueError, match="CrossIQA metrics"):
        crossiqa_pyiqa.explain(x, pyiqa.create_metric('grepq-ll-zs', device='cpu'))


# ==================================================================================== CLI
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'crossiqa_pyiqa.cli', *args], capture_output=True, text=True,
                          timeout=600, env=ENV)


@needs_heads
def test_cli_explain_writes_a_picture_per_image_and_score_explain_adds_columns(tmp_path):
    folder = tmp_path / 'photos'
    (folder / 'sub').mkdir(parents=True)
    Image.fromarray(np.ascontiguousarray(skimage.data.astronaut()[:160, :192])).save(folder / 'a.png')
    Image.fromarray(np.ascontiguousarray(skimage.data.coffee()[:160, :224])).save(folder / 'sub' / 'b.jpg')
    (folder / 'broken.png').write_bytes(b'not an image')
    out = tmp_path / 'pictures'
    run = _cli('explain', '-q', '--device', 'cpu', '-t', str(folder), '--out', str(out))
    assert run.returncode == 1, run.stderr  # the broken file fails alone
    assert 'FAILED broken.png' in run.stderr and 'a.png' in run.stdout and 'top family' in run.stdout
    for name in ('a.png.png', 'sub/b.jpg.png'):
        with Image.open(out / name) as img:
            assert img.format == 'PNG' and img.size[0] > 1000
    assert not (out / 'broken.png.png').exists()
    single = _cli('explain', '-q', '--device', 'cpu', '-t', str(folder / 'a.png'), '--out', str(tmp_path / 'one'))
    assert single.returncode == 0 and (tmp_path / 'one' / 'a.png.png').is_file()
    bad = _cli('explain', '-q', '--device', 'cpu', '-t', str(folder), '--out', str(out), '-m', 'grepq-ll-zs')
    assert bad.returncode == 2 and 'CrossIQA metric' in bad.stderr
    table = tmp_path / 'scores.csv'
    (folder / 'broken.png').unlink()
    scored = _cli('score', '-q', '--device', 'cpu', '-t', str(folder), '--csv', str(table), '--explain')
    assert scored.returncode == 0, scored.stderr
    with open(table, newline='') as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ['image', 'crossiqa', *FAMILIES, 'exposure_direction', 'contrast_direction', 'colour_kind',
                             'top_family', 'errors']
    plain = pyiqa.create_metric('crossiqa', device='cpu')
    for row in rows:
        assert float(row['crossiqa']) == pytest.approx(plain(str(folder / row['image'])).item(), abs=1e-4)
        assert all(0 <= float(row[f]) <= 1 for f in FAMILIES)
    refused = _cli('score', '-q', '--device', 'cpu', '-t', str(folder), '-m', 'grepq-ll-zs', '--explain')
    assert refused.returncode == 2 and '--explain needs a CrossIQA metric' in refused.stderr
