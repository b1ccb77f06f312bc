"""scripts/independent_check.py --real_noise: pairing of (noisy, clean) files and the count of pairs won.

The pair folder is made here from scikit-image photos (clean) and the same photos with strong
Gaussian noise (noisy). piqe scores them: it needs no parameter file and is lower-better, so
the count also checks that ``lower_better`` is respected.
"""
from __future__ import annotations

import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from test_regression import load_script  # noqa: E402

PHOTOS = ('astronaut', 'coffee', 'chelsea')


def make_pairs(folder, swap: str = 'chelsea') -> None:
    """NAME_real.png (noise sigma 40) and NAME_mean.png (the photo); for ``swap`` the two are exchanged."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in PHOTOS:
        clean = getattr(data, name)()[:192, :192]
        noisy = np.clip(clean + rng.normal(0, 40, clean.shape), 0, 255).astype(np.uint8)
        if name == swap:
            clean, noisy = noisy, clean
        Image.fromarray(noisy).save(folder / f'{name}_real.png')
        Image.fromarray(clean).save(folder / f'{name}_mean.png')
    (folder / 'Readme.txt').write_text('not an image: ignored')


def test_real_noise_pairs_and_count(tmp_path, capsys):
    check = load_script('independent_check')
    make_pairs(tmp_path / 'pairs')
    pairs = check.find_pairs(tmp_path / 'pairs')
    assert [(k, n.name, c.name) for k, n, c in pairs] == [
        (name, f'{name}_real.png', f'{name}_mean.png') for name in sorted(PHOTOS)]

    (result,) = check.real_noise_check(['piqe'], tmp_path / 'pairs', progress=False)
    assert result['lower_better'] and result['pairs'] == 3 and result['ties'] == 0
    assert result['won'] == 2  # chelsea's "clean" file holds the noisy image
    noisy, clean = result['scores']['chelsea']
    assert noisy < clean  # the swapped pair: the real noise-free image (named _real) scores better
    lo, hi = result['ci']
    assert 0 < lo < 2 / 3 < hi < 1

    assert check.main(['-m', 'piqe', '--real_noise', str(tmp_path / 'pairs')]) == 0
    out = capsys.readouterr().out
    assert '| piqe | 2/3 | 0.667 |' in out


def test_real_noise_errors_name_unpaired_files(tmp_path, capsys):
    check = load_script('independent_check')
    make_pairs(tmp_path / 'pairs')
    os.remove(tmp_path / 'pairs' / 'coffee_mean.png')
    with pytest.raises(ValueError, match=r"1 noisy image\(s\) have no clean partner: coffee_real\.png"):
        check.find_pairs(tmp_path / 'pairs')
    with pytest.raises(SystemExit):  # the CLI refuses before building any metric
        check.main(['-m', 'piqe', '--real_noise', str(tmp_path / 'pairs')])
    assert 'coffee_real.png' in capsys.readouterr().err

    Image.new('RGB', (8, 8)).save(tmp_path / 'pairs' / 'stray.png')
    with pytest.raises(ValueError, match=r"end in neither '_real' nor '_mean': stray\.png"):
        check.find_pairs(tmp_path / 'pairs')

    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='no \\(noisy, clean\\) pair found'):
        check.find_pairs(tmp_path / 'empty')


def test_levels_ladders_grow_stronger_and_piqe_ranks_noise_and_blur(capsys):
    """--levels: every ladder moves the photo farther from itself level by level (checked on its own
    statistic), and a real metric (piqe, lower-better) run through ``levels_check`` ranks noise levels."""
    import torch
    from skimage import data

    check = load_script('independent_check')
    rgb = data.astronaut()[:160, :160]
    for name in check.LADDERS:
        versions = [rgb] + check.ladder(rgb, name)
        deviation = [np.abs(v.astype(float) - rgb).mean() for v in versions]
        assert all(b > a for a, b in zip(deviation, deviation[1:])), (name, deviation)
    grey = [np.ptp(v.astype(float), axis=2).mean() for v in check.ladder(rgb, 'desaturation')]
    assert grey[-1] < 1 and all(b < a for a, b in zip(grey, grey[1:]))  # colour goes, ending in grey

    def tensor(a):
        return torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float() / 255

    slide = data.immunohistochemistry()[:160, :160]
    per_photo = {}
    rows = check.levels_check(['piqe'], {'astronaut': rgb, 'immunohistochemistry': slide}, tensor,
                              ladders=['noise'], per_photo=per_photo)
    assert rows[0][0] == 'piqe' and set(rows[0][1]) == {'noise', 'all'}
    assert per_photo['piqe']['astronaut']['noise'] >= 0.9  # measured 1.0: more noise, worse piqe (lower-better)
    both = per_photo['piqe']['astronaut']['noise'], per_photo['piqe']['immunohistochemistry']['noise']
    assert rows[0][1]['noise'] == pytest.approx(sum(both) / 2)
    capsys.readouterr()
    check.print_levels_tables(rows, per_photo)
    out = capsys.readouterr().out
    assert 'Mean over 2 scikit-image photos' in out and 'Mean over the 1 camera photos (astronaut)' in out
    camera_row = out.split('camera photos')[1].split('| piqe |')[1].split('\n')[0]
    assert camera_row.split('|')[0].strip() == f'{both[0]:.2f}'   # the camera-only table reads astronaut alone
    assert '| piqe | ' + f'{both[0]:.2f} | {both[1]:.2f} |' in out  # per photo


def test_ranking_weight_screen_levels_equal_the_metric_run(capsys):
    """tools/ranking_weight_screen.py --levels scores a head as a linear map of the encoder's features; on the
    shipped ``crossiqa`` that must give exactly what ``levels_check`` gets by running the metric."""
    import importlib.util
    import sys
    from pathlib import Path

    import pyiqa
    import torch
    from skimage import data

    import crossiqa_pyiqa  # noqa: F401

    check = load_script('independent_check')
    sys.modules.setdefault('independent_check', check)
    path = Path(__file__).resolve().parents[1] / 'tools' / 'ranking_weight_screen.py'
    spec = importlib.util.spec_from_file_location('ranking_weight_screen', path)
    screen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(screen)

    photos = {'astronaut': data.astronaut()[:192, :192], 'coffee': data.coffee()[:192, 96:288]}
    ladders = ['gamma', 'contrast_up', 'noise']
    rows = check.levels_check(['crossiqa'], photos, lambda a: torch.from_numpy(np.array(a)).permute(2, 0, 1)[None]
                              .float() / 255, ladders=ladders)
    net = pyiqa.create_metric('crossiqa', device='cpu').net
    feats = screen.ladder_features(net, photos)
    with torch.inference_mode():
        values = screen.levels_l(lambda f: net.score_features(torch.from_numpy(f).float()).flatten().numpy(),
                                 {p: {n: f[n] for n in ladders} for p, f in feats.items()})
    assert set(values) == {*ladders, 'all'}
    for name in [*ladders, 'all']:
        assert values[name] == pytest.approx(rows[0][1][name], abs=1e-9), name
    assert values['noise'] == pytest.approx(1.0)  # and the check is not vacuous: noise is ranked on both crops
