"""scripts/prepare_data.py on small fake snapshots (tiny git repos made here), and the data layout rules.

No real data: each test builds a git repository with a few generated images in the
layout of the real source (ChallengeDB_release, the ImageNet sample photos, coco128,
PolyU's CroppedImages, the pristine folders), converts it into a bare snapshot like a
fetched one, and checks what lands under ``$CROSSIQA_HOME/datasets``.
"""
from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which('git') is None, reason='git is not installed')


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / 'scripts' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _img(path: Path, w: int, h: int, seed: int, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path, format=fmt)


def _git_snapshot(work: Path, bare: Path) -> Path:
    """Commit ``work`` and clone it bare, like a fetched snapshot."""
    env = {**os.environ, 'GIT_AUTHOR_NAME': 't', 'GIT_AUTHOR_EMAIL': 't@t', 'GIT_COMMITTER_NAME': 't',
           'GIT_COMMITTER_EMAIL': 't@t'}
    for cmd in (['git', 'init', '-q'], ['git', 'add', '-A'], ['git', 'commit', '-qm', 'snapshot']):
        subprocess.run(cmd, cwd=work, check=True, env=env, capture_output=True)
    subprocess.run(['git', 'clone', '-q', '--bare', str(work), str(bare)], check=True, capture_output=True)
    return bare


def _fake_clive(root: Path, n_test: int = 3) -> None:
    import scipy.io as sio

    names = [f't{i}.bmp' for i in range(1, 8)] + [f'{100 + i}.JPG' for i in range(n_test)]
    for i, name in enumerate(names):
        folder = root / 'Images' / ('trainingImages' if i < 7 else '')
        _img(folder / name, 24, 20, i, 'BMP' if name.endswith('.bmp') else 'JPEG')
    (root / 'Data').mkdir(parents=True)
    cell = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        cell[i, 0] = np.array([n])
    sio.savemat(root / 'Data' / 'AllImages_release.mat', {'AllImages_release': cell})
    sio.savemat(root / 'Data' / 'AllMOS_release.mat', {'AllMOS_release': np.linspace(20, 80, len(names))[None]})
    sio.savemat(root / 'Data' / 'AllStdDev_release.mat', {'AllStdDev_release': np.full((1, len(names)), 15.0)})


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / 'home'
    monkeypatch.setenv('CROSSIQA_HOME', str(home))
    return home


def test_livec_from_a_snapshot_then_the_benchmark_options_find_it(tmp_path, home):
    work = tmp_path / 'iqa'
    _fake_clive(work / 'ChallengeDB_release')
    (work / 'README.md').write_text('other files of the snapshot are ignored\n')
    snap = _git_snapshot(work, tmp_path / 'iqa.git')
    prep = load_script('prepare_data')
    assert prep.main(['livec', '--from', str(snap)]) == 0
    out = home / 'datasets' / 'livec'
    assert len(list((out / 'Images').iterdir())) == 10
    rows = list(csv.reader(open(out / 'meta_info_LIVEChallengeDataset.csv')))
    assert rows[0] == ['img_name', 'mos', 'std'] and rows[1][0] == 't1.bmp' and len(rows) == 11
    assert not [p for p in (home / 'datasets').iterdir() if p.name.startswith('.')]  # no staging left
    # the committed options file reads it through $CROSSIQA_HOME, unchanged
    from crossiqa_pyiqa.options import load_options
    from crossiqa_pyiqa.regression.datasets import build_iqa_dataset

    opt = load_options(ROOT / 'options' / 'benchmark' / 'datasets.yml', kind='benchmark_datasets')['livec']
    assert opt['dataroot_target'] == str(home / 'datasets' / 'livec' / 'Images')
    assert len(build_iqa_dataset(opt)) == 3  # pyiqa drops the 7 training images
    # already there: kept, unless --force
    assert prep.main(['livec', '--from', str(snap)]) == 0
    assert prep.main(['livec', '--from', str(snap), '--force']) == 0


def test_livec_broken_snapshot_writes_nothing(tmp_path, home, capsys):
    work = tmp_path / 'iqa'
    _fake_clive(work / 'ChallengeDB_release')
    (work / 'ChallengeDB_release' / 'Images' / '101.JPG').unlink()
    snap = _git_snapshot(work, tmp_path / 'iqa.git')
    assert load_script('prepare_data').main(['livec', '--from', str(snap)]) == 1
    assert '101.JPG' in capsys.readouterr().err
    assert not (home / 'datasets' / 'livec').exists()
    assert not [p for p in (home / 'datasets').iterdir()]


def test_missing_blob_is_named(tmp_path, home, capsys):
    work = tmp_path / 'polyu'
    for i in range(2):
        _img(work / 'CroppedImages' / f'cam_{i}_real.JPG', 32, 32, i, 'JPEG')
        _img(work / 'CroppedImages' / f'cam_{i}_mean.JPG', 32, 32, 10 + i, 'JPEG')
    snap = _git_snapshot(work, tmp_path / 'polyu.git')
    sha = subprocess.run(['git', f'--git-dir={snap}', 'rev-parse', 'HEAD:CroppedImages/cam_1_mean.JPG'],
                         capture_output=True, text=True, check=True).stdout.strip()
    (snap / 'objects' / sha[:2] / sha[2:]).unlink()  # a blob absent from a partial snapshot
    prep = load_script('prepare_data')
    assert prep.main(['polyu', '--from', str(snap)]) == 1
    assert 'cam_1_mean.JPG is listed but its content is missing' in capsys.readouterr().err
    assert not (home / 'datasets' / 'polyu').exists()


def test_pretext_polyu_and_pristine_from_several_sources(tmp_path, home):
    inet = tmp_path / 'inet'
    _img(inet / 'n01440764_tench.JPEG', 300, 240, 1, 'JPEG')
    _img(inet / 'n01443537_goldfish.JPEG', 300, 200, 2, 'JPEG')  # short side < 224: left out
    (inet / 'README.md').write_text('x')
    coco = tmp_path / 'coco'
    _img(coco / 'images' / 'train2017' / '000000000009.jpg', 320, 240, 3, 'JPEG')
    shutil.copy(coco / 'images' / 'train2017' / '000000000009.jpg', tmp_path / 'dup.jpg')
    (coco / 'images' / 'val2017').mkdir(parents=True)
    shutil.copy(tmp_path / 'dup.jpg', coco / 'images' / 'val2017' / '000000000139.jpg')  # same photo twice
    _img(coco / 'images' / 'val2017' / '000000000285.jpg', 240, 320, 4, 'JPEG')
    polyu = tmp_path / 'polyu'
    for i in range(2):
        _img(polyu / 'CroppedImages' / f'cam_{i}_real.JPG', 32, 32, i, 'JPEG')
        _img(polyu / 'CroppedImages' / f'cam_{i}_mean.JPG', 32, 32, 10 + i, 'JPEG')
    _img(polyu / 'OriginalImages' / 'cam_0_real.JPG', 32, 32, 20, 'JPEG')  # not needed
    pristine = tmp_path / 'pristine'
    for k, name in enumerate(('bsds500', 'kodak24', 'mcmaster')):
        _img(pristine / name / f'{k}.png', 40, 30, 30 + k)
    tar = tmp_path / 'pristine.tar.gz'
    subprocess.run(['tar', 'czf', str(tar), '-C', str(tmp_path), 'pristine'], check=True)
    sources = [_git_snapshot(inet, tmp_path / 'inet.git'), _git_snapshot(coco, tmp_path / 'coco.git'),
               _git_snapshot(polyu, tmp_path / 'polyu.git'), tar]
    prep = load_script('prepare_data')
    argv = ['pretext', 'polyu', 'pristine', '--home', str(tmp_path / 'elsewhere')]
    assert prep.main(argv + [a for s in sources for a in ('--from', str(s))]) == 0
    data = tmp_path / 'elsewhere' / 'datasets'
    assert sorted(os.listdir(data / 'pretext' / 'imagenet')) == ['n01440764_tench.JPEG']
    assert sorted(os.listdir(data / 'pretext' / 'coco')) == ['000000000009.jpg', '000000000285.jpg']
    assert sorted(os.listdir(data / 'polyu' / 'CroppedImages')) == sorted(
        f'cam_{i}_{s}.JPG' for i in range(2) for s in ('real', 'mean'))
    assert sorted(p.relative_to(data / 'pristine').as_posix() for p in (data / 'pristine').rglob('*.png')) == [
        'bsds500/0.png', 'kodak24/1.png', 'mcmaster/2.png']


def test_unpaired_noisy_image_and_missing_source(tmp_path, home, capsys):
    polyu = tmp_path / 'polyu'
    _img(polyu / 'CroppedImages' / 'cam_0_real.JPG', 32, 32, 0, 'JPEG')
    prep = load_script('prepare_data')
    assert prep.main(['polyu', '--from', str(polyu)]) == 1
    assert 'without their _real/_mean partner' in capsys.readouterr().err
    assert prep.main(['livec', '--from', str(polyu)]) == 1
    assert 'livec: no source holds ChallengeDB_release' in capsys.readouterr().err
    assert prep.main(['livec', '--from', str(tmp_path / 'nowhere')]) == 1
    assert 'no such file or folder' in capsys.readouterr().err


# ------------------------------------------------------------------------------ layout rules
def test_layout_paths_resolve_under_crossiqa_home(tmp_path, monkeypatch):
    from crossiqa_pyiqa import paths

    monkeypatch.delenv('CROSSIQA_HOME', raising=False)
    assert paths.resolve('datasets/livec/Images') == 'datasets/livec/Images'  # unset: relative to the cwd
    assert paths.resolve('./runs/cache') == 'runs/cache'
    monkeypatch.setenv('CROSSIQA_HOME', str(tmp_path))
    assert paths.resolve('datasets/livec/Images') == str(tmp_path / 'datasets/livec/Images')
    assert paths.resolve('./runs/cache') == str(tmp_path / 'runs/cache')
    for kept in ('options/regress/crossiqa_livec.yml', '/abs/datasets/x', '../datasets/x', 'datasets', 'runsx/y'):
        assert paths.resolve(kept) == kept
    assert paths.resolve_tree({'a': ['runs/x', 3, None], 'b': {'c': 'datasets/y'}}) == {
        'a': [str(tmp_path / 'runs/x'), 3, None], 'b': {'c': str(tmp_path / 'datasets/y')}}
    from crossiqa_pyiqa.options import apply_overrides

    assert apply_overrides({}, ['cache_dir=runs/c'])['cache_dir'] == str(tmp_path / 'runs/c')


def test_a_relative_crossiqa_home_is_taken_from_the_cwd_once(tmp_path, monkeypatch):
    """A home such as ``runs/study/home`` is itself a layout path: resolving twice must not nest it again."""
    from crossiqa_pyiqa import paths

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('CROSSIQA_HOME', 'runs/study/home')
    once = paths.resolve('datasets/pristine/bsds500')
    assert once == str(tmp_path / 'runs/study/home/datasets/pristine/bsds500')
    assert paths.resolve(once) == once


def test_missing_dataset_is_one_line_naming_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv('CROSSIQA_HOME', str(tmp_path))
    env = {**os.environ, 'CROSSIQA_HOME': str(tmp_path), 'HF_HUB_OFFLINE': '1'}
    for argv, name in (
            (['benchmark.py', '-m', 'crossiqa-zs', '-d', 'livec', '--data_opt', 'options/benchmark/datasets.yml'],
             'livec'),
            (['fit_regressor.py', '-opt', 'options/regress/crossiqa_livec.yml'], 'pristine')):
        out = subprocess.run([sys.executable, str(ROOT / 'scripts' / argv[0]), *argv[1:]], cwd=ROOT,
                             capture_output=True, text=True, timeout=300, env=env)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 1 and len(lines) == 1, out.stderr
        assert lines[0].endswith(f'`python scripts/prepare_data.py {name}`'), out.stderr
    from crossiqa_pyiqa.train.data import list_images

    with pytest.raises(FileNotFoundError, match=r'prepare_data\.py pristine`$'):
        list_images(['datasets/pristine/kodak24'])


def test_no_committed_options_file_holds_an_absolute_path():
    from crossiqa_pyiqa.optionfile import load_options

    def strings(node):
        if isinstance(node, dict):
            for v in node.values():
                yield from strings(v)
        elif isinstance(node, list):
            for v in node:
                yield from strings(v)
        elif isinstance(node, str):
            yield node
    files = sorted(ROOT.glob('options/**/*.yml'))
    assert len(files) > 8
    for path in files:
        text = path.read_text()
        assert '/work/' not in text and '../shared' not in text, path
        for value in strings(load_options(path, resolve_paths=False)):
            assert not os.path.isabs(value) and not value.startswith('../'), (path, value)
