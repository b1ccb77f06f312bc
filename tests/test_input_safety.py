"""Inputs, files, options and the CLI: correct scores or clear errors, no code execution, no lost results.

Every file is written here: EXIF-rotated JPEGs, 16-bit PNGs, palette/CMYK/alpha images,
malicious pickles and YAML, duplicate-row CSVs, truncated checkpoints.
"""
from __future__ import annotations

import csv
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

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
from crossiqa_pyiqa.inputs import ImageReadError, read_image  # noqa: E402
from crossiqa_pyiqa.options import OptionsError, apply_overrides, check_file, load_options  # noqa: E402
from crossiqa_pyiqa.weights import WeightFileError, read_weights, save_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'scripts'))
sys.path.insert(0, str(ROOT / 'tools'))
sys.path.insert(0, str(ROOT / 'tests'))
DEBUG = str(ROOT / 'options' / 'pretrain' / 'crossiqa_debug.yml')
TINY = dict(embed_dim=48, depth=2, num_heads=2, decoder_dim=32, decoder_depth=1, decoder_heads=2, img_size=64)
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1'}
HAVE_WEIGHTS = os.path.exists(default_weight_path(DEFAULT_WEIGHTS))
needs_weights = pytest.mark.skipif(not HAVE_WEIGHTS, reason='no trained weights in this checkout')


def rgb(name: str = 'chelsea', h: int | None = None, w: int | None = None) -> np.ndarray:
    arr = getattr(skimage.data, name)()
    return np.ascontiguousarray(arr[:h, :w])


def tensor(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope='module')
def metric():
    if not HAVE_WEIGHTS:
        pytest.skip('no trained weights in this checkout')
    return pyiqa.create_metric('crossiqa', device='cpu')


# ============================================================================ code execution
class _Evil:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def _evil_checkpoint(path: Path, marker: Path, wrap: bool = True) -> Path:
    payload = {'step': 5, 'model': {}, 'optimizer': {}, 'scheduler': {}, 'rng': _Evil(marker)} if wrap else _Evil(marker)
    torch.save(payload, path)
    assert not marker.exists()
    return path


def _debug_opt(**train) -> dict:
    opt = load_options(DEBUG, kind='pretrain')
    opt['logger']['use_tb_logger'] = False
    opt['datasets']['train']['dataroots'] = ['unused']
    opt['train'].update(train)
    return opt


def test_malicious_checkpoint_is_not_run_by_resume_path_auto_or_ablation_eval(tmp_path):
    from crossiqa_pyiqa.train.trainer import CheckpointError, Trainer

    marker = tmp_path / 'pwned'
    evil = _evil_checkpoint(tmp_path / 'evil.pth', marker)
    with pytest.raises(CheckpointError, match=r'evil\.pth.*could run code'):
        Trainer(_debug_opt(), str(tmp_path / 'run'), resume=str(evil))
    assert not marker.exists()
    # --resume auto: the crafted newest checkpoint is named, skipped, and nothing runs
    ckpts = tmp_path / 'auto' / 'checkpoints'
    ckpts.mkdir(parents=True)
    _evil_checkpoint(ckpts / 'ckpt_00000010.pth', marker)
    with pytest.warns(RuntimeWarning, match='ckpt_00000010.pth'):
        trainer = Trainer(_debug_opt(), str(tmp_path / 'auto'), resume='auto')
    assert trainer.step == 0 and not marker.exists()
    # tools/ablation_eval.py --encoder X.pth
    import argparse

    import ablation_eval

    with pytest.raises(CheckpointError, match='could run code'):
        ablation_eval.load_network(argparse.Namespace(encoder=str(_evil_checkpoint(tmp_path / 'x.pth', marker, False)),
                                                      options=None, random_seed=0, native_mode='tiles'))
    assert not marker.exists()


def test_malicious_yaml_is_not_run_by_any_options_reader(tmp_path):
    import fit_regressor
    import pretrain_crossiqa

    marker = tmp_path / 'pwned'
    evil = tmp_path / 'evil.yml'
    evil.write_text(f'name: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(OptionsError, match='not valid plain YAML'):
        load_options(str(evil))
    with pytest.raises(OptionsError):
        pretrain_crossiqa.main(['-opt', str(evil)])
    with pytest.raises(SystemExit):  # fit_regressor: a usage error naming the file
        fit_regressor.main(['-opt', str(evil), '--random_seed', '0'])
    from crossiqa_pyiqa.benchmark.metrics import load_metric_opt_file

    with pytest.raises(OptionsError):
        load_metric_opt_file(str(evil))
    with pytest.raises(OptionsError):
        apply_overrides({}, [f'a=!!python/object/apply:os.system ["touch {marker}"]'])
    assert not marker.exists()


def test_checkpoints_hold_only_tensors_and_plain_data(tmp_path):
    """What the trainer writes loads with weights_only=True and restores every RNG exactly."""
    import random

    from crossiqa_pyiqa.train.trainer import Trainer, read_checkpoint

    trainer = Trainer(_debug_opt(), str(tmp_path / 'run'))
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    path = trainer.save_checkpoint()
    expected = torch.rand(3), np.random.rand(3), random.random()
    ckpt = torch.load(path, weights_only=True)  # raises on anything but tensors and plain types
    assert set(ckpt['rng']) == {'torch', 'numpy', 'python'}
    trainer.load_checkpoint(path, read_checkpoint(path))
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


# ======================================================================= reading images
def test_exif_orientation_is_applied_in_metric_path_and_cli(tmp_path, metric):
    arr = rgb('chelsea')  # 300 x 451: orientation shows in the shape
    stored = Image.fromarray(arr).transpose(Image.Transpose.ROTATE_90)  # pixels as a camera stores them
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / 'rotated.jpg'
    stored.save(path, exif=exif, quality=95)
    shown = ImageOps.exif_transpose(Image.open(path))
    x = read_image(path)
    assert x.shape == (3, 300, 451)
    assert torch.equal(x, torch.from_numpy(np.array(shown)).permute(2, 0, 1).float() / 255)
    by_path = metric(str(path)).item()
    assert by_path == pytest.approx(metric(x[None]).item(), abs=1e-4)
    # the upright photo: the JPEG round trip alone moves crossiqa by ~3 points (it sees q95 JPEG)
    assert abs(by_path - metric(tensor(arr)).item()) < 6.0
    lossless = tmp_path / 'rotated.png'  # the same orientation tag in a PNG: exactly the upright photo
    stored.save(lossless, exif=exif)
    assert metric(str(lossless)).item() == pytest.approx(metric(tensor(arr)).item(), abs=1e-4)
    out = subprocess.run([sys.executable, '-m', 'crossiqa_pyiqa.cli', 'score', '-t', str(path), '-q', '--device', 'cpu'],
                         capture_output=True, text=True, timeout=300, env=ENV)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.splitlines()[2].split()[-1]) == pytest.approx(by_path, abs=1e-3)


def test_bit_depth_palette_cmyk_gray_and_alpha(tmp_path, metric):
    arr = rgb('astronaut', 128, 160)
    gray8 = np.asarray(Image.fromarray(arr).convert('L'))
    # 16-bit grayscale: the same picture, scaled (not clipped to white)
    Image.fromarray(gray8.astype(np.uint16) * 257).save(tmp_path / 'g16.png')
    Image.fromarray(gray8).save(tmp_path / 'g8.png')
    g16, g8 = read_image(tmp_path / 'g16.png'), read_image(tmp_path / 'g8.png')
    assert g16.shape == (3, 128, 160) and torch.allclose(g16, g8, atol=1e-6)
    assert metric(str(tmp_path / 'g16.png')).item() == pytest.approx(metric(str(tmp_path / 'g8.png')).item(), abs=1e-3)
    # palette and CMYK give the RGB picture
    Image.fromarray(arr).convert('CMYK').save(tmp_path / 'cmyk.tif')
    assert torch.equal(read_image(tmp_path / 'cmyk.tif'), tensor(arr)[0])
    Image.fromarray(arr).convert('CMYK').save(tmp_path / 'cmyk.jpg', quality=98)  # Adobe (inverted) CMYK JPEG
    assert (read_image(tmp_path / 'cmyk.jpg') - tensor(arr)[0]).abs().mean() < 0.02
    pal = Image.fromarray(arr).convert('P', palette=Image.Palette.ADAPTIVE, colors=256)
    pal.save(tmp_path / 'pal.png')
    assert torch.equal(read_image(tmp_path / 'pal.png'), tensor(np.asarray(pal.convert('RGB')))[0])
    # grayscale: R = G = B
    assert torch.equal(g8[0], g8[1]) and torch.equal(g8[1], g8[2])
    # alpha is composited over white: transparent pixels become white, half alpha mixes
    rgba = np.dstack([arr, np.full(arr.shape[:2], 255, np.uint8)])
    rgba[:10, :, 3] = 0
    rgba[10:20, :, 3] = 128
    rgba[:10, :, :3] = 0  # what hides under transparency (often black) must not show
    Image.fromarray(rgba, 'RGBA').save(tmp_path / 'alpha.png')
    x = read_image(tmp_path / 'alpha.png')
    assert torch.equal(x[:, :10], torch.ones_like(x[:, :10]))
    a = 128 / 255
    expected = torch.from_numpy(arr[10:20]).permute(2, 0, 1).float() / 255 * a + (1 - a)
    assert torch.allclose(x[:, 10:20], expected, atol=1e-6)
    assert torch.equal(x[:, 20:], tensor(arr)[0][:, 20:])
    la = Image.fromarray(gray8).convert('LA')
    la.putalpha(0)
    la.save(tmp_path / 'la.png')
    assert torch.equal(read_image(tmp_path / 'la.png'), torch.ones(3, 128, 160))
    # palette with a transparent index
    pt = Image.fromarray(np.zeros((70, 70), np.uint8), 'P')
    pt.putpalette([0, 0, 0] * 256)
    pt.info['transparency'] = 0
    pt.save(tmp_path / 'pt.png', transparency=0)
    assert torch.equal(read_image(tmp_path / 'pt.png'), torch.ones(3, 70, 70))
    # float images must already be in [0, 1]; out-of-range integers and broken files are errors
    Image.fromarray(np.full((70, 70), 3.0, np.float32), 'F').save(tmp_path / 'f.tif')
    with pytest.raises(ImageReadError, match='pixel scale is unknown'):
        read_image(tmp_path / 'f.tif')
    Image.fromarray(np.full((70, 70), 0.25, np.float32), 'F').save(tmp_path / 'f01.tif')
    assert torch.allclose(read_image(tmp_path / 'f01.tif'), torch.full((3, 70, 70), 0.25))
    (tmp_path / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'0' * 50)
    with pytest.raises(ImageReadError, match='broken.png'):
        read_image(tmp_path / 'broken.png')
    # bytes and PIL images read the same way as paths
    data = (tmp_path / 'g16.png').read_bytes()
    assert torch.equal(read_image(data), g16) and torch.equal(read_image(Image.open(tmp_path / 'g16.png')), g16)


# ===================================================================== tensors and sizes
def test_minimum_sizes_per_model(tmp_path, metric):
    # the shipped statistics encoder pools tokens of the stride-32 map: 2x2 of them, so that their std exists
    for size in (16, 33, 63):
        with pytest.raises(ValueError, match=f'{size}x{size} is smaller than the 64x64 minimum of CrossIQA'):
            metric(torch.rand(1, 3, size, size))
    Image.fromarray(rgb('coffee', 40, 40)).save(tmp_path / 'tiny.png')
    with pytest.raises(ValueError, match='64x64 minimum'):
        metric(str(tmp_path / 'tiny.png'))
    assert metric.net.min_input_size == 64 and torch.isfinite(metric(torch.rand(1, 3, 64, 64))).all()
    v1 = pyiqa.create_metric('crossiqa-v1', device='cpu')  # the reconstruction encoder: one stride-32 cell
    with pytest.raises(ValueError, match='31x31 is smaller than the 32x32 minimum of CrossIQA'):
        v1(torch.rand(1, 3, 31, 31))
    assert v1.net.min_input_size == 32 and torch.isfinite(v1(torch.rand(1, 3, 32, 32))).all()
    vit = pyiqa.create_metric('crossiqa-tiny', device='cpu')  # patch 16 at scales 1 and 1/2
    with pytest.raises(ValueError, match='63x63 is smaller than the 64x64 minimum of CrossIQA'):
        vit(torch.rand(1, 3, 63, 63))
    assert vit.net.min_input_size == 64 and torch.isfinite(vit(torch.rand(1, 3, 64, 64))).all()
    zs = pyiqa.create_metric('grepq-ll-zs', device='cpu')  # packaged low-level zero-shot: one 96x96 patch
    assert zs.net.min_input_size == 96
    with pytest.raises(ValueError, match='95x120 is smaller than the 96x96 minimum'):
        zs(torch.rand(1, 3, 95, 120))
    with pytest.raises(ValueError, match='95x120 is smaller than one 96x96 patch'):
        zs.net(torch.rand(1, 3, 95, 120))
    with pytest.raises(ValueError, match='31x40 is smaller than the 32x32 minimum'):
        zs.net.forward_features(torch.rand(1, 3, 31, 40))


def _dtype_script(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-O', '-c', code], capture_output=True, text=True, timeout=300, env=ENV)


@needs_weights
def test_validation_survives_python_O():
    code = (
        "import torch, pyiqa, crossiqa_pyiqa\n"
        "for name in ('crossiqa', 'grepq-ll-zs'):\n"
        "    m = pyiqa.create_metric(name, device='cpu')\n"
        "    for label, x in [('nan', torch.full((1, 3, 128, 128), float('nan'))),\n"
        "                     ('0-255', torch.rand(1, 3, 128, 128) * 255), ('empty', torch.rand(0, 3, 128, 128)),\n"
        "                     ('uint8', (torch.rand(1, 3, 128, 128) * 255).to(torch.uint8))]:\n"
        "        for f in (m, m.net):\n"
        "            try:\n"
        "                print(name, label, 'SCORED', f(x))\n"
        "            except (ValueError, TypeError) as e:\n"
        "                print(name, label, 'ERROR', type(e).__name__, str(e)[:300])\n"
    )
    out = _dtype_script(code)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 16 and not [line for line in lines if 'SCORED' in line], out.stdout
    assert all('NaN' in line for line in lines if ' nan ' in line)
    assert all('divide by 255' in line for line in lines if ' 0-255 ' in line)
    assert all('empty batch' in line for line in lines if ' empty ' in line)
    assert all('TypeError' in line and 'x.float() / 255' in line for line in lines if ' uint8 ' in line)


def test_float16_and_float64_inputs_are_cast(metric):
    x = tensor(rgb('chelsea'))
    ref = metric(x).item()
    for dtype in (torch.float16, torch.float64):
        assert metric(x.to(dtype)).item() == pytest.approx(ref, abs=0.3), dtype
        assert metric.net(x.to(dtype)).item() == pytest.approx(ref, abs=0.3), dtype
    assert metric(x.to(torch.bfloat16)).item() == pytest.approx(ref, abs=3.0)  # 8-bit mantissa: coarser pixels
    grepq = pyiqa.create_metric('grepq-ll-zs', device='cpu')
    assert grepq(x.double()).item() == pytest.approx(grepq(x).item(), abs=1e-4)


# ========================================================================== weight files
@needs_weights
@pytest.mark.parametrize('option, value', [('feature_blocks', [5, 2]), ('feature_scales', [0.5, 1.0]),
                                           ('feature_tokens', ['mean', 'cls', 'std']), ('native_mode', 'interp'),
                                           ('max_tokens', 64)])
def test_options_that_change_the_head_input_are_refused(option, value):
    for name in ('crossiqa', 'crossiqa-zs'):
        with pytest.raises(ValueError, match=f'{option}=.*changes what the head reads'):
            pyiqa.create_metric(name, device='cpu', **{option: value})


@needs_weights
def test_options_that_keep_the_head_input_are_accepted(metric):
    x = tensor(rgb('coffee', 200, 260))
    vit = pyiqa.create_metric('crossiqa-tiny', device='cpu')
    ref = vit(x).item()
    same = pyiqa.create_metric('crossiqa-tiny', device='cpu', feature_blocks=[2, -1], feature_scales=[1, 0.5],
                               feature_tokens=('cls', 'mean', 'std'), tile_batch=3)
    assert same(x).item() == pytest.approx(ref, abs=1e-4)


def test_pretext_export_without_head_cannot_score(tmp_path, monkeypatch):
    """A head-less file in the user weights dir gets a metric entry, but scoring says how to fit a head."""
    from crossiqa_pyiqa import registration

    home = tmp_path / 'home'
    (home / 'weights').mkdir(parents=True)
    torch.manual_seed(0)
    CrossIQA(pretrained=False, **TINY).save_pretrained(str(home / 'weights' / 'crossiqa-pretext.safetensors'),
                                                       {'stage': 'pretext'})
    GRepQ(pretrained=False).save_pretrained(str(home / 'weights' / 'grepq-pretext.safetensors'))
    monkeypatch.setenv('CROSSIQA_HOME', str(home))
    registration._register_user_weights()
    from crossiqa_pyiqa.archs.grepq_arch import user_weight_metrics
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    DEFAULT_CONFIGS.update(user_weight_metrics())
    x = torch.rand(1, 3, 96, 96)
    m = pyiqa.create_metric('crossiqa-pretext', device='cpu')
    with pytest.raises(RuntimeError, match='no fitted head.*fit_regressor.py'):
        m(x)
    assert torch.isfinite(m.net.forward_features(x)).all()  # still usable as a feature extractor
    with pytest.raises(RuntimeError, match='no fitted linear head.*fit_regressor'):
        pyiqa.create_metric('grepq-pretext', device='cpu')(x)
    for name in ('crossiqa-pretext', 'grepq-pretext'):
        DEFAULT_CONFIGS.pop(name, None)


@needs_weights
def test_half_precision_statistics_are_refused(tmp_path):
    for name, stat in (('crossiqa_tiny_livec', 'pristine_cov_triu'), (DEFAULT_WEIGHTS, 'zs_coef')):
        state, config, info = read_weights(default_weight_path(name), 'CrossIQA')
        half = tmp_path / f'{name}_fp16.safetensors'
        save_weights(half, {k: v.half() if v.is_floating_point() else v for k, v in state.items()}, 'CrossIQA',
                     config, info)
        for head in ('zeroshot', 'linear'):
            with pytest.raises(WeightFileError, match=rf'fp16.safetensors stores .*{stat}.*float16'):
                CrossIQA(pretrained_model_path=str(half), head=head)
    # weights in half precision with float32 statistics load (GRepQ's save_pretrained(dtype=float16))
    small = tmp_path / 'grepq_half.safetensors'
    GRepQ().save_pretrained(str(small), dtype=torch.float16)
    x = tensor(rgb('chelsea', 200, 200))
    assert GRepQ(pretrained_model_path=str(small))(x).item() == pytest.approx(GRepQ()(x).item(), abs=2e-3)


# ================================================================ data for a fitted head
@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    from test_regression import make_toy_dataset, random_encoder

    root = tmp_path_factory.mktemp('toy_safety')
    dataset = make_toy_dataset(root / 'data')
    return {'root': root, 'dataset': dataset, 'encoder': random_encoder(root / 'encoder.safetensors')}


def _with_rows(toy, tmp_path, edit) -> dict:
    meta = Path(toy['dataset']['meta_info_file'])
    with open(meta, newline='') as f:
        rows = list(csv.reader(f))
    rows = edit(rows)
    new = tmp_path / 'meta.csv'
    with open(new, 'w', newline='') as f:
        csv.writer(f).writerows(rows)
    return {**toy['dataset'], 'meta_info_file': str(new)}


def _fit(toy, tmp_path, dataset, *extra):
    import fit_regressor
    import yaml

    opt = tmp_path / 'regress.yml'
    opt.write_text(yaml.safe_dump({'dataset': dataset, 'regression': {'n_splits': 3, 'cv_folds': 3},
                                   'cache_dir': str(toy['root'] / 'cache')}))
    summary = tmp_path / 'summary.json'
    rc = fit_regressor.main(['-opt', str(opt), '--encoder', str(toy['encoder']), '--summary', str(summary),
                             '--out', str(tmp_path / 'crossiqa-safety.safetensors'), *extra])
    return rc, (json.loads(summary.read_text()) if summary.exists() else None)


def test_fit_drops_agreeing_duplicates_and_refuses_conflicts(toy, tmp_path, capsys):
    # the same rows again (and one image copied under another name with the same MOS): dropped, counted
    images = Path(toy['dataset']['dataroot_target'])
    (images / 'copy_of_c0.png').write_bytes((images / 'c0_gaussian_blur_l1.png').read_bytes())

    def duplicate(rows):
        return rows + rows[1:11] + [['copy_of_c0.png', rows[1][1], rows[1][2]]]
    rc, summary = _fit(toy, tmp_path, _with_rows(toy, tmp_path, duplicate), '--name', 'crossiqa-safety')
    assert rc == 0 and summary['n_images'] == 40
    assert 'dropped 11 duplicate row(s)' in capsys.readouterr().out
    # the same file listed again with another MOS: an error that names it
    rc, _ = _fit(toy, tmp_path, _with_rows(toy, tmp_path, lambda rows: rows + [[rows[1][0], '3.5', rows[1][2]]]),
                 '--name', 'crossiqa-safety')
    assert rc == 1
    err = capsys.readouterr().err
    assert 'different MOS' in err and 'c0_gaussian_blur_l1.png' in err
    # two files of a release with identical bytes, rated separately (CLIVE's 246.bmp and 333.bmp): one image,
    # kept once with the mean of its ratings, said so; it can no longer sit on both sides of a split
    rc, summary = _fit(toy, tmp_path, _with_rows(toy, tmp_path, lambda rows: rows + [['copy_of_c0.png', '3.5',
                                                                                        rows[1][2]]]),
                       '--name', 'crossiqa-safety')
    assert rc == 0 and summary['n_images'] == 40
    assert 'kept once with the mean MOS' in capsys.readouterr().out


def test_fit_refuses_constant_mos_tiny_data_and_taken_names(toy, tmp_path, capsys):
    rc, _ = _fit(toy, tmp_path, _with_rows(toy, tmp_path, lambda rows: [rows[0]] + [[r[0], '50', r[2]] for r in rows[1:]]))
    assert rc == 1 and 'same MOS (50)' in capsys.readouterr().err
    rc, _ = _fit(toy, tmp_path, _with_rows(toy, tmp_path, lambda rows: rows[:9]))
    assert rc == 1 and 'too few' in capsys.readouterr().err
    for name in ('niqe', 'brisque', 'crossiqa', 'crossiqa-zs', 'grepq-ll-zs'):
        rc, _ = _fit(toy, tmp_path, toy['dataset'], '--name', name)
        assert rc == 1 and f"--name {name!r} is already a metric" in capsys.readouterr().err
    import fit_regressor
    assert fit_regressor.main(['-opt', str(tmp_path / 'regress.yml'), '--encoder', str(toy['encoder']),
                               '--name', 'mine']) == 1  # the user weights dir registers crossiqa-* names only
    assert "names starting with 'crossiqa-'" in capsys.readouterr().err


# ============================================================================== options
@pytest.mark.parametrize('override, key', [('train.loss.self_weigth=0.2', 'train.loss.self_weigth'),
                                           ('train.mask_ratoi=0.5', 'train.mask_ratoi'),
                                           ('manual_sed=3', 'manual_sed'),
                                           ('logger.save_checkpoint_frq=5', 'logger.save_checkpoint_frq'),
                                           ('datsets.train.crop_size=64', 'datsets'),
                                           ('network.embed_dmi=64', 'network.embed_dmi')])
def test_unknown_pretrain_keys_are_errors(override, key, tmp_path):
    import pretrain_crossiqa

    with pytest.raises(OptionsError, match=rf"Unknown option '{key}'.*valid keys"):
        pretrain_crossiqa.main(['-opt', DEBUG, '--out', str(tmp_path), '--set', override])


def test_misspelt_datasets_section_names_itself(tmp_path):
    import yaml

    opt = load_options(DEBUG)
    opt['datsets'] = opt.pop('datasets')
    path = tmp_path / 'bad.yml'
    path.write_text(yaml.safe_dump(opt))
    with pytest.raises(OptionsError, match=r"Unknown option 'datsets' in .*bad.yml \(did you mean 'datasets'\?\)"):
        check_file(str(path), 'pretrain')
    del opt['datsets']
    path.write_text(yaml.safe_dump(opt))
    with pytest.raises(OptionsError, match=r"Missing option\(s\) \['datasets'\]"):
        check_file(str(path), 'pretrain')


def test_unknown_keys_in_regress_benchmark_and_harness_files(tmp_path):
    import yaml

    from crossiqa_pyiqa.benchmark.metrics import load_metric_opt_file

    def write(name, data):
        p = tmp_path / name
        p.write_text(yaml.safe_dump(data))
        return str(p)
    regress = load_options(str(ROOT / 'options/regress/crossiqa_livec.yml'))
    regress['regression']['n_split'] = 3
    with pytest.raises(OptionsError, match=r"'regression.n_split'.*did you mean 'n_splits'"):
        check_file(write('r.yml', regress), 'regress')
    regress = load_options(str(ROOT / 'options/regress/crossiqa_livec.yml'))
    regress['encoder']['options']['feature_blokcs'] = [2]
    with pytest.raises(OptionsError, match="'encoder.options.feature_blokcs'"):
        check_file(write('r2.yml', regress), 'regress')
    metrics = load_options(str(ROOT / 'options/benchmark/metrics.yml'))
    metrics['crossiqa']['lower_beter'] = True
    with pytest.raises(OptionsError, match="'crossiqa.lower_beter'"):
        load_metric_opt_file(write('m.yml', metrics))
    datasets = load_options(str(ROOT / 'options/benchmark/datasets.yml'))
    datasets['livec']['meta_info_fiel'] = 'x.csv'
    with pytest.raises(OptionsError, match="'livec.meta_info_fiel'"):
        check_file(write('d.yml', datasets), 'benchmark_datasets')
    harness = load_options(str(ROOT / 'options/train/CrossIQA/train_CrossIQA_livec.yml'))
    harness['logger']['save_checkpoint_frq'] = 5
    with pytest.raises(OptionsError, match="'logger.save_checkpoint_frq'"):
        check_file(write('t.yml', harness), 'train')
    out = subprocess.run([sys.executable, '-m', 'crossiqa_pyiqa.options', write('t2.yml', harness), '--kind', 'train'],
                         capture_output=True, text=True, timeout=120, env=ENV)
    assert out.returncode == 1 and 'save_checkpoint_frq' in out.stderr


def test_every_shipped_options_file_is_valid():
    files = sorted(ROOT.glob('options/**/*.yml'))
    assert len(files) > 8
    for path in files:
        check_file(str(path))


def test_set_and_files_read_numbers_as_yaml_1_2(tmp_path):
    opt = apply_overrides({'train': {'optim': {}}}, ['train.optim.lr=1e6', 'train.optim.eps=1.5e-8', 'a=-2E3',
                                                    'b=[1e-3, 2]', 'c=0.5', 'd=1', 'e=true', 'f=text'])
    assert opt['train']['optim'] == {'lr': 1e6, 'eps': 1.5e-8}
    assert (opt['a'], opt['b'], opt['c'], opt['d'], opt['e'], opt['f']) == (-2000.0, [1e-3, 2], 0.5, 1, True, 'text')
    assert isinstance(opt['train']['optim']['lr'], float)
    (tmp_path / 'o.yml').write_text('lr: 1e-4\nn: 12\n')
    assert load_options(str(tmp_path / 'o.yml')) == {'lr': 1e-4, 'n': 12}


# ================================================================== long training runs
def _images(folder: Path, n: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rgb(('astronaut', 'chelsea', 'coffee')[i % 3], 100 + 10 * i, 120)).save(folder / f'img{i}.png')
    return folder


def test_pretext_training_skips_bad_images_with_a_summary(tmp_path, capsys):
    import pretrain_crossiqa

    folder = _images(tmp_path / 'imgs')
    (folder / 'broken.jpg').write_bytes(b'not an image')
    Image.fromarray(rgb('coffee', 40, 40)).save(folder / 'small.png')
    full = (folder / 'img0.png').read_bytes()
    (folder / 'truncated.png').write_bytes(full[:len(full) // 2])  # a good header, cut data
    for cache in ('true', 'false'):
        out = tmp_path / f'run_{cache}'
        summary = out / 's.json'
        rc = pretrain_crossiqa.main(['-opt', DEBUG, '--data', str(folder), '--out', str(out), '--max-steps', '2',
                                     '--summary', str(summary), '--set', 'logger.use_tb_logger=false',
                                     f'datasets.train.cache_images={cache}', 'logger.visual_freq=0'])
        assert rc == 0 and json.loads(summary.read_text())['steps'] == 2
        captured = capsys.readouterr()
        text = captured.err + captured.out
        assert 'broken.jpg' in text and 'small.png' in text, text[-2000:]
        if cache == 'true':  # decoded at start: the truncated file is found there
            assert 'Skipped 3 of 9 training images' in text and 'truncated.png' in text
        else:  # headers only at start; the truncated file is skipped when it is read (next test)
            assert 'Skipped 2 of 9 training images' in text


def test_read_time_failure_takes_the_next_image(tmp_path):
    from crossiqa_pyiqa.train.data import RandomCropDataset

    folder = _images(tmp_path / 'imgs', 3)
    paths = sorted(str(p) for p in folder.glob('*.png'))
    ds = RandomCropDataset(paths, 64, cache_images=False)
    Path(paths[0]).write_bytes(b'gone bad')  # changed on disk after the start-up check
    crops = [ds[i] for i in range(12)]
    assert all(c.shape == (3, 64, 64) for c in crops) and list(ds.read_failures) == [paths[0]]


def test_truncated_latest_checkpoint_falls_back_with_a_warning(tmp_path):
    import pretrain_crossiqa

    folder = _images(tmp_path / 'imgs')
    out = tmp_path / 'run'
    base = ['-opt', DEBUG, '--data', str(folder), '--out', str(out), '--set', 'logger.use_tb_logger=false',
            'logger.save_checkpoint_freq=2', 'logger.visual_freq=0']
    assert pretrain_crossiqa.main(base + ['--max-steps', '6', '--stop-after', '4']) == 0
    latest = out / 'checkpoints' / 'ckpt_00000004.pth'
    latest.write_bytes(latest.read_bytes()[:5000])
    with pytest.warns(RuntimeWarning, match=r'ckpt_00000004.pth cannot be read.*previous checkpoint'):
        assert pretrain_crossiqa.main(base + ['--max-steps', '6', '--resume', 'auto',
                                              '--summary', str(tmp_path / 's.json')]) == 0
    s = json.loads((tmp_path / 's.json').read_text())
    assert s['steps'] == 6 and s['steps_this_run'] == 4  # resumed at step 2


# ============================================================================== the CLI
def _cli(*args, timeout=300, **kwargs):
    return subprocess.run([sys.executable, '-m', 'crossiqa_pyiqa.cli', 'score', '-q', '--device', 'cpu', *args],
                          capture_output=True, text=True, timeout=timeout, env=ENV, **kwargs)


@needs_weights
def test_cli_checks_the_csv_path_before_scoring(tmp_path):
    folder = _images(tmp_path / 'imgs', 2)
    before = (folder / 'img0.png').read_bytes()
    for bad, message in [(folder / 'img0.png', 'one of the images to score'),
                         (tmp_path / 'nowhere' / 'out.csv', 'not an existing folder'),
                         (folder, 'is a folder'),
                         (Path(os.devnull) / 'out.csv', 'not an existing folder')]:
        out = _cli('-t', str(folder), '--csv', str(bad))
        assert out.returncode != 0 and message in out.stderr and 'Traceback' not in out.stderr, out.stderr
        assert 'rank' not in out.stdout  # nothing was scored
    assert (folder / 'img0.png').read_bytes() == before


@needs_weights
def test_cli_keeps_rows_written_before_an_interrupt(tmp_path):
    folder = tmp_path / 'many'
    folder.mkdir()
    for i in range(60):
        Image.fromarray(rgb('astronaut', 512, 512)).save(folder / f'a{i:02d}.png')
    csv_path = tmp_path / 'out.csv'
    proc = subprocess.Popen([sys.executable, '-m', 'crossiqa_pyiqa.cli', 'score', '-q', '--device', 'cpu', '-t',
                             str(folder), '--csv', str(csv_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if csv_path.exists() and len(csv_path.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    rows = list(csv.DictReader(open(csv_path, newline='')))
    assert len(rows) >= 2 and all(r['crossiqa'] != '' and not r['errors'] for r in rows)
    if len(rows) < 60:  # interrupted mid-run (not finished first): said so, and exit 130
        assert proc.returncode == 130 and 'Interrupted after' in err


def test_cli_keeps_other_metrics_when_one_fails(tmp_path, classic_weights):
    classic_weights('niqe', 'brisque')
    folder = tmp_path / 'imgs'
    folder.mkdir()
    Image.fromarray(rgb('chelsea', 24, 200)).save(folder / 'strip.png')  # below crossiqa's and niqe's sizes
    Image.fromarray(rgb('chelsea', 200, 200)).save(folder / 'square.png')
    out = _cli('-t', str(folder), '-m', 'crossiqa', 'niqe', 'brisque', '--csv', str(tmp_path / 'o.csv'))
    assert out.returncode == 1
    rows = {r['image']: r for r in csv.DictReader(open(tmp_path / 'o.csv', newline=''))}
    assert set(rows) == {'strip.png', 'square.png'}
    strip = rows['strip.png']
    assert strip['crossiqa'] == '' and strip['niqe'] == '' and float(strip['brisque']) > 0
    assert 'crossiqa: ValueError' in strip['errors'] and '64x64 minimum' in strip['errors'] and 'niqe:' in strip['errors']
    assert all(rows['square.png'][m] for m in ('crossiqa', 'niqe', 'brisque')) and not rows['square.png']['errors']
    assert 'FAILED strip.png [crossiqa]' in out.stderr and 'FAILED strip.png [brisque]' not in out.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason='a GPU is present')
def test_cli_device_without_gpu_is_one_line():
    out = subprocess.run([sys.executable, '-m', 'crossiqa_pyiqa.cli', 'score', '--device', 'cuda'],
                         capture_output=True, text=True, timeout=120, env=ENV)
    assert out.returncode != 0 and 'Traceback' not in out.stderr
    assert out.stderr.strip().splitlines() == ['crossiqa-pyiqa: error: --device cuda: no CUDA GPU is available here; '
                                               'use --device cpu']


def test_cli_labels_paths_relative_to_the_target_through_symlinks(tmp_path):
    from crossiqa_pyiqa.cli import _list_targets

    root = tmp_path / 'photos'
    (root / 'a').mkdir(parents=True)
    (root / 'b').mkdir()
    Image.fromarray(rgb('chelsea', 80, 80)).save(root / 'a' / 'cat.png')
    Image.fromarray(rgb('coffee', 80, 80)).save(root / 'b' / 'cat.png')
    os.symlink(root / 'a', root / 'link_to_a')
    os.symlink(root, root / 'b' / 'loop')  # a symlink loop must terminate
    items = _list_targets(str(root))
    assert [label for label, _ in items] == [os.path.join('a', 'cat.png'), os.path.join('b', 'cat.png')]
