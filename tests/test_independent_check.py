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
