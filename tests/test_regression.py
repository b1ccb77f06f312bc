"""Regression stage end to end on a toy dataset made here, plus its building blocks.

Toy dataset: 8 content crops (96×96, from ``skimage.data``) × 5 blur levels, two blur
kinds (Gaussian, box) recorded as the distortion type; pseudo-MOS = 100 − 18·level.
Blur removes high frequencies monotonically with the level, which even a randomly
initialised ViT's patch embedding (a bank of linear filters) + ridge picks up, so the
fitted head must rank held-out images by level. Everything is seeded, so the numbers
are deterministic; the bounds leave a wide margin below the measured values.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import crossiqa_pyiqa  # noqa: E402,F401
from crossiqa_pyiqa.archs.crossiqa_arch import CrossIQA  # noqa: E402
from crossiqa_pyiqa.regression import (DatasetError, build_iqa_dataset, fit_ridge, linear_probe,  # noqa: E402
                                       random_splits, select_alpha)
from crossiqa_pyiqa.regression.ridge import cv_scores  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LEVELS = (1, 2, 3, 4, 5)


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / 'scripts' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def content_crops(which: str = 'train') -> list[torch.Tensor]:
    from skimage import data

    sources, offsets = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()], [(40, 60), (200, 220)]
    if which != 'train':  # other crops of the same photos
        offsets = [(120, 330)]
    return [torch.from_numpy(im[y:y + 96, x:x + 96].copy()).permute(2, 0, 1).float() / 255
            for im in sources for y, x in offsets]


def degrade(x: torch.Tensor, level: float, kind: str) -> torch.Tensor:
    if kind == 'gaussian_blur':
        return TF.gaussian_blur(x, 15, 0.8 * level)
    level = int(level)
    padded = F.pad(x[None], (level,) * 4, mode='replicate')
    return F.avg_pool2d(padded, 2 * level + 1, stride=1)[0]


def save_png(x: torch.Tensor, path: Path) -> None:
    from PIL import Image

    Image.fromarray((x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()).save(path)


def make_toy_dataset(root: Path) -> dict:
    """40 images + meta-info CSV in pyiqa's GeneralNRDataset layout; returns the dataset options."""
    images = root / 'images'
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for c, x in enumerate(content_crops('train')):
        kind = 'gaussian_blur' if c % 2 == 0 else 'box_blur'
        for level in LEVELS:
            name = f'c{c}_{kind}_l{level}.png'
            save_png(degrade(x, level, kind), images / name)
            rows.append([name, 100 - 18 * level, kind])
    meta = root / 'meta_info_toy.csv'
    with open(meta, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['img_name', 'mos', 'dist_type'])
        writer.writerows(rows)
    return {'name': 'toy', 'type': 'GeneralNRDataset', 'dataroot_target': str(images),
            'meta_info_file': str(meta), 'distortion_type_column': 'dist_type'}


def random_encoder(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    net = CrossIQA(pretrained=False)
    net.save_pretrained(str(path), {'note': 'random init, test'})
    return path


def write_options(path: Path, dataset: dict, cache: Path) -> Path:
    import yaml

    opt = {'dataset': dataset, 'regression': {'n_splits': 10, 'cv_folds': 5, 'seed': 123},
           'cache_dir': str(cache)}
    path.write_text(yaml.safe_dump(opt))
    return path


@pytest.fixture(scope='module')
def fitted(tmp_path_factory):
    """prepare (toy dataset) → fit_regressor.py with a random-init encoder → weight file."""
    root = tmp_path_factory.mktemp('toy')
    dataset = make_toy_dataset(root / 'data')
    pristine = root / 'pristine'
    pristine.mkdir()
    for i, x in enumerate(content_crops('train')[:6]):
        save_png(x, pristine / f'p{i}.png')
    encoder = random_encoder(root / 'encoder.safetensors')
    opt = write_options(root / 'regress.yml', dataset, root / 'cache')
    out, summary = root / 'crossiqa-toy.safetensors', root / 'summary.json'
    fit = load_script('fit_regressor')
    rc = fit.main(['-opt', str(opt), '--encoder', str(encoder), '--out', str(out), '--summary', str(summary),
                   '--pristine', str(pristine), '--name', 'crossiqa-toy'])
    assert rc == 0
    return {'root': root, 'dataset': dataset, 'encoder': encoder, 'out': out, 'opt': opt,
            'summary': json.loads(summary.read_text())}


def test_fit_end_to_end(fitted):
    import pyiqa
    from crossiqa_pyiqa.weights import file_sha256, read_weights

    s = fitted['summary']
    for key in ('srcc_median', 'plcc_median', 'krcc_median', 'srcc_per_split', 'alphas', 'feature_dim', 'seconds'):
        assert key in s
    assert len(s['srcc_per_split']) == 10 and s['n_images'] == 40 and s['feature_dim'] == 768
    # Measured 0.93 (median of 10 splits, 8 test images each); 0.7 leaves room for BLAS-level differences.
    assert s['srcc_median'] > 0.7

    _, _, info = read_weights(fitted['out'])
    assert info['dataset'] == 'toy' and info['n_images'] == 40 and info['has_pristine_stats'] is True
    assert info['encoder_file_sha256'] == file_sha256(fitted['encoder'])
    assert info['protocol']['srcc_median'] == pytest.approx(s['srcc_median'])
    assert 'fit_regressor' in info['command'] and info['date']

    metric = pyiqa.create_metric('crossiqa-livec', pretrained_model_path=str(fitted['out']), device='cpu')
    assert metric.lower_better is False
    # Held-out images: the training contents blurred at levels between the training ones (never fitted on).
    from scipy import stats
    per_content = []
    for x in content_crops('train')[::2]:  # the Gaussian-blur contents
        scores = [float(metric(degrade(x, lv, 'gaussian_blur')[None])) for lv in (1.5, 2.5, 3.5, 4.5)]
        per_content.append(stats.spearmanr(scores, [-1.5, -2.5, -3.5, -4.5])[0])
    # Measured mean 1.0; blur strength is monotonic in the level, and the head fitted on levels
    # 1..5 of these contents must interpolate between them. 0.8 allows one swapped pair.
    assert np.mean(per_content) >= 0.8, per_content

    # Scores are on the MOS scale: training images predicted near their pseudo-MOS on average.
    from pyiqa.utils import imread2tensor
    images = sorted((Path(fitted['dataset']['dataroot_target'])).glob('*.png'))
    preds = np.array([float(metric(imread2tensor(str(p), rgb=True)[None])) for p in images])
    assert 20 < preds.mean() < 80

    # a ViT file holds the Mahalanobis zero-shot head: a distance, registered as crossiqa-tiny-zs
    zs = pyiqa.create_metric('crossiqa-tiny-zs', pretrained_model_path=str(fitted['out']), device='cpu')
    assert zs.lower_better is True
    assert np.isfinite(float(zs(degrade(content_crops('train')[0], 3, 'gaussian_blur')[None])))


def test_fitted_metric_registered_by_name(fitted):
    """run_fit registers the written file under its name in-process (new processes: registration.py)."""
    import pyiqa

    metric = pyiqa.create_metric('crossiqa-toy', device='cpu')
    assert metric.net.info['dataset'] == 'toy'


def test_features_cached(fitted, capsys):
    """A second fit reuses the feature cache (same encoder, dataset and config) and gives the same numbers."""
    fit = load_script('fit_regressor')
    cache = fitted['root'] / 'cache' / 'features'
    before = sorted(p.name for p in cache.glob('*.npz'))
    out2, summary2 = fitted['root'] / 'again.safetensors', fitted['root'] / 'again.json'
    assert fit.main(['-opt', str(fitted['opt']), '--encoder', str(fitted['encoder']), '--out', str(out2),
                     '--summary', str(summary2)]) == 0
    assert sorted(p.name for p in cache.glob('*.npz')) == before
    again = json.loads(summary2.read_text())
    assert again['srcc_per_split'] == fitted['summary']['srcc_per_split']
    assert again['seconds_features'] < 5


def test_fit_with_photometric_statistics_and_a_group_penalty(fitted):
    """The toy contents darkened or faded at random strengths (MOS falls with the strength): the photometric
    statistics carry that, the group penalty is stored in the head's std, and the file needs the token."""
    import pyiqa
    from crossiqa_pyiqa.archs.photometric import PHOTOMETRIC_NAMES
    from crossiqa_pyiqa.weights import read_weights

    root = fitted['root'] / 'photometric'
    images = root / 'images'
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for c, x in enumerate(content_crops('train')):
        for j, s in enumerate(rng.uniform(0, 0.8, size=5)):
            y = x * (1 - s) if j % 2 else torch.lerp(x, x.mean(0, keepdim=True).expand_as(x), s)
            save_png(y, images / f'c{c}_{j}.png')
            rows.append([f'c{c}_{j}.png', 90 - 80 * s])
    meta = root / 'meta.csv'
    with open(meta, 'w', newline='') as f:
        csv.writer(f).writerows([['img_name', 'mos'], *rows])
    dataset = {'name': 'toyphoto', 'type': 'GeneralNRDataset', 'dataroot_target': str(images),
               'meta_info_file': str(meta)}
    opt = write_options(root / 'regress.yml', dataset, root / 'cache')
    fit = load_script('fit_regressor')
    runs = {}
    for name, extra in (('plain', []), ('photometric', ['encoder.options.feature_tokens=[cls,mean,photometric]',
                                                        'regression.group_penalty={photometric: 0.01}'])):
        out, summary = root / f'{name}.safetensors', root / f'{name}.json'
        assert fit.main(['-opt', str(opt), '--encoder', str(fitted['encoder']), '--out', str(out), '--summary',
                         str(summary), '--name', f'crossiqa-toy-{name}', '--set', *extra] if extra else
                        ['-opt', str(opt), '--encoder', str(fitted['encoder']), '--out', str(out), '--summary',
                         str(summary), '--name', f'crossiqa-toy-{name}']) == 0
        runs[name] = (out, json.loads(summary.read_text()))
    # measured: 0.76 (random encoder) and 0.89 (+ statistics): exposure and colour are what the MOS follows
    assert runs['photometric'][1]['srcc_median'] > runs['plain'][1]['srcc_median'] + 0.08
    state, config, info = read_weights(runs['photometric'][0])
    k = len(PHOTOMETRIC_NAMES)
    assert config['feature_tokens'] == ['cls', 'mean', 'photometric'] and info['group_penalty'] == {'photometric': 0.01}
    metric = pyiqa.create_metric('crossiqa-livec', pretrained_model_path=str(runs['photometric'][0]), device='cpu')
    feats = metric.net.forward_features(content_crops('train')[0][None])
    assert feats.shape[1] == state['feat_std'].shape[0] and torch.isfinite(metric.net.score_features(feats)).all()
    assert float(metric(content_crops('train')[1][None] * 0.3)) < float(metric(content_crops('train')[1][None]))
    # the stored std is the training features' std, times sqrt(0.01) on the photometric columns only
    from pyiqa.utils import imread2tensor
    with torch.inference_mode():
        raw = np.concatenate([metric.net.forward_features(imread2tensor(str(p), rgb=True)[None]).numpy()
                              for p in sorted(images.glob('*.png'))])
    ratio = state['feat_std'].numpy() / np.maximum(raw.std(axis=0), 1e-6)
    photometric = np.zeros(len(ratio), bool)
    for label, _, cols in metric.net.feature_groups():
        photometric[cols] = label.startswith('photometric')
    assert photometric.sum() == 2 * k  # two feature scales
    varied = raw.std(axis=0) > 1e-4
    np.testing.assert_allclose(ratio[photometric & varied], 0.1, rtol=1e-3)
    np.testing.assert_allclose(ratio[~photometric & varied], 1.0, rtol=1e-3)
    with pytest.raises(ValueError, match='feature_tokens'):
        CrossIQA(pretrained_model_path=str(runs['photometric'][0]), feature_tokens=['cls', 'mean'])


def test_alpha_selection_never_sees_test_rows():
    """Poison the test rows of split i (features and MOS): split i's alpha and fitted head must not move.

    The same poison does change what the other splits choose (their training parts contain
    those rows), which shows it is strong enough to be seen by anything that looks at it.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 30))
    y = x[:, :3] @ np.array([2.0, -1.0, 0.5]) + 0.5 * rng.normal(size=120)
    splits = random_splits(120, 10, 0.8, seed=1)
    clean = linear_probe(x, y, splits, seed=0)
    for model, (_, test), pred in zip(clean.models, splits, clean.predictions):  # the heads it kept score alike
        np.testing.assert_allclose(model.predict(x[test]), pred, rtol=1e-12)
    others_changed = False
    for i, (train, test) in enumerate(splits):
        xp, yp = x.copy(), y.copy()
        xp[test] = 1e3 * rng.normal(size=(len(test), 30))
        yp[test] = rng.choice([-1e4, 1e4], size=len(test))
        poisoned = linear_probe(xp, yp, splits, seed=0)
        assert poisoned.alphas[i] == clean.alphas[i]
        # same head on split i: its predictions on clean copies of the test rows are unchanged
        from crossiqa_pyiqa.regression.ridge import fit_ridge as fr
        np.testing.assert_allclose(fr(xp[train], yp[train], poisoned.alphas[i]).predict(x[test]),
                                   clean.predictions[i], rtol=1e-9, atol=1e-9)
        others_changed |= poisoned.alphas[:i] + poisoned.alphas[i + 1:] != clean.alphas[:i] + clean.alphas[i + 1:]
    assert others_changed


def test_ridge_closed_form_and_cv():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)) * rng.uniform(0.5, 3, size=8) + 1.0
    y = x @ rng.normal(size=8) + 0.1 * rng.normal(size=50)
    model = fit_ridge(x, y, alpha=2.0)
    xs = (x - x.mean(0)) / x.std(0)
    coef = np.linalg.solve(xs.T @ xs + 2.0 * np.eye(8), xs.T @ (y - y.mean()))
    np.testing.assert_allclose(model.coef, coef, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(model.predict(x), xs @ coef + y.mean(), rtol=1e-8)
    wide = rng.normal(size=(10, 40))  # n < d uses the n×n Gram matrix
    m2 = fit_ridge(wide, wide[:, 0], alpha=0.5)
    ws = (wide - wide.mean(0)) / wide.std(0)
    np.testing.assert_allclose(m2.coef, np.linalg.solve(ws.T @ ws + 0.5 * np.eye(40), ws.T @ (wide[:, 0] - wide[:, 0].mean())),
                               atol=1e-8)
    alphas = [1e-3, 1e-1, 10, 1e3, 1e5]
    assert select_alpha(x, y, alphas) <= 10  # clean linear signal: little shrinkage
    assert select_alpha(x, rng.normal(size=50), alphas) >= 1e3  # pure noise: shrink to the mean
    assert cv_scores(x, y, alphas).shape == (5,)


def test_group_penalty_is_a_per_feature_ridge_penalty_the_head_reads_back():
    """``penalty`` p_j: the exact minimum of ||xs beta - y||² + alpha sum p_j beta_j², predicted with the
    rescaled std the head stores; a column with a small factor keeps more of its weight."""
    from crossiqa_pyiqa.archs.photometric import PHOTOMETRIC_NAMES
    from crossiqa_pyiqa.regression.fit import group_penalty_vector
    from crossiqa_pyiqa.regression.options import group_penalty_options

    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 6)) * rng.uniform(0.5, 3, size=6) + 2.0
    y = x @ np.array([1.0, -0.5, 0.3, 0.0, 0.8, 0.2]) + 0.2 * rng.normal(size=60)
    penalty = np.array([1.0, 1.0, 1.0, 1.0, 0.01, 1.0])
    model = fit_ridge(x, y, alpha=50.0, penalty=penalty)
    xs = (x - x.mean(0)) / x.std(0)
    beta = np.linalg.solve(xs.T @ xs + 50.0 * np.diag(penalty), xs.T @ (y - y.mean()))
    np.testing.assert_allclose(model.predict(x), xs @ beta + y.mean(), rtol=1e-8, atol=1e-8)
    plain = fit_ridge(x, y, alpha=50.0)
    kept = (model.coef / np.sqrt(penalty)) / (xs.T @ (y - y.mean()) / len(y))
    kept_plain = plain.coef / (xs.T @ (y - y.mean()) / len(y))
    assert kept[4] > kept_plain[4] and np.allclose(kept[[0, 1]], kept_plain[[0, 1]], rtol=0.5)
    with pytest.raises(ValueError, match='penalty'):
        fit_ridge(x, y, alpha=1.0, penalty=np.ones(5))
    net = CrossIQA(pretrained=False, size='lite0', feature_tokens=['mean', 'cls', 'photometric'],
                   feature_scales=[1.0])
    vector = group_penalty_vector(net, {'photometric': 0.01, 'q': 0.5})
    k = len(PHOTOMETRIC_NAMES)
    assert vector.shape == (net.feature_dim,) and (vector[-k:] == 0.01).all()
    assert (vector[-k - 256:-k] == 0.5).all() and (vector[:-k - 256] == 1).all()  # q: 256 values
    with pytest.raises(ValueError, match="feature groups \\['colour'\\]"):
        group_penalty_vector(net, {'colour': 0.1})
    for bad in ({'photometric': 0}, {'photometric': 'x'}, {'photometric': True}, [0.1], {}):
        with pytest.raises(ValueError, match='group_penalty'):
            group_penalty_options(bad)


def _ranked_objective(x, y, alpha, rows, w):
    xs = (x - x.mean(0)) / x.std(0)
    u = rows.diffs / x.std(0)
    lam = rows.weight * len(y) / len(rows.margins)
    hinge = np.maximum(0.0, rows.margins - u @ w)
    return ((xs @ w - (y - y.mean())) ** 2).sum() + lam * (hinge ** 2).sum() + alpha * (w ** 2).sum()


def test_ranked_ridge_is_the_exact_minimum_and_orders_pairs():
    """Squared-hinge pairs: weight 0 is plain ridge; otherwise the active-set solution is the minimum."""
    from crossiqa_pyiqa.regression import RankingRows

    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 6)) * rng.uniform(0.5, 2, size=6)
    y = 2.0 * x[:, 0] - 1.0 * x[:, 1] + 0.3 * rng.normal(size=80)  # MOS rewards feature 1 going *down*
    diffs = rng.normal(size=(200, 6))
    diffs[:, 1] = np.abs(diffs[:, 1]) + 0.5  # ...but every pair says "more of feature 1 is better"
    diffs[:, 0] = 0.0
    rows = RankingRows(diffs, np.full(200, 0.5), weight=1.0)
    plain = fit_ridge(x, y, 1.0)
    np.testing.assert_allclose(fit_ridge(x, y, 1.0, RankingRows(diffs, np.full(200, 0.5), 0.0)).coef, plain.coef)
    ranked = fit_ridge(x, y, 1.0, rows)
    f0 = _ranked_objective(x, y, 1.0, rows, ranked.coef)
    for _ in range(50):  # no nearby point does better (convex: a local minimum is the minimum)
        assert _ranked_objective(x, y, 1.0, rows, ranked.coef + 1e-3 * rng.normal(size=6)) >= f0 - 1e-9
    grad = np.zeros(6)
    for j in range(6):  # central differences: the gradient vanishes (the objective is C1)
        e = np.eye(6)[j] * 1e-6
        grad[j] = (_ranked_objective(x, y, 1.0, rows, ranked.coef + e)
                   - _ranked_objective(x, y, 1.0, rows, ranked.coef - e)) / 2e-6
    assert np.abs(grad).max() < 1e-3 * max(1.0, f0 / 80)
    misordered = lambda m: float(((diffs / x.std(0)) @ m.coef <= 0).mean())  # noqa: E731
    assert misordered(plain) > 0.5 and misordered(ranked) < 0.2  # measured 1.0 → 0.065
    assert ranked.coef[0] > 0.5 * plain.coef[0]  # the MOS signal is kept
    with pytest.raises(ValueError, match='features'):
        fit_ridge(x, y, 1.0, RankingRows(diffs[:, :5], np.ones(200), 1.0))
    with pytest.raises(ValueError, match='diffs'):
        RankingRows(diffs, np.ones(3), 1.0)


def test_ranking_pairs_features_cache_and_options(tmp_path):
    """Pairs are f(pristine) − f(degraded) of the library's images, cached; bad options fail early."""
    from crossiqa_pyiqa.benchmark.ranking import DegradedReader
    from crossiqa_pyiqa.degradations import apply
    from crossiqa_pyiqa.regression.ranking_pairs import ranking_options, ranking_pairs

    folder = tmp_path / 'pristine'
    folder.mkdir()
    for i, x in enumerate(content_crops('train')[:3]):
        save_png(x, folder / f'p{i}.png')
    torch.manual_seed(0)
    net = CrossIQA(pretrained=False)
    opts = ranking_options({'pristine_dirs': str(folder), 'n_images': 2, 'crop': 64,
                            'types': ['white_noise', 'gaussian_blur'], 'margin_per_level': 2.0})
    pairs = ranking_pairs(net, opts, tmp_path / 'cache')
    assert len(pairs) == 4 and pairs.diffs.shape == (4, 768)
    assert set(pairs.types) == {'white_noise', 'gaussian_blur'} and set(pairs.levels) <= {1, 2, 3, 4, 5}
    np.testing.assert_allclose(pairs.margins(2.0), 2.0 * pairs.levels)
    # the first pair by hand: the same crop, the same seeded degradation
    reader = DegradedReader([pairs.images[0]], 64, apply, ['white_noise', 'gaussian_blur'], seed=0)
    from crossiqa_pyiqa.benchmark.ranking import RankingItem
    with torch.inference_mode():
        f_p = net.forward_features(reader(RankingItem(0, None, 0))).double().numpy()[0]
        f_d = net.forward_features(reader(RankingItem(0, pairs.types[0], int(pairs.levels[0])))).double().numpy()[0]
    np.testing.assert_allclose(pairs.diffs[0], f_p - f_d, rtol=1e-5, atol=1e-6)
    cached = list((tmp_path / 'cache' / 'features').glob('ranking-pairs-*.npz'))
    assert len(cached) == 1
    again = ranking_pairs(net, opts, tmp_path / 'cache')
    np.testing.assert_array_equal(again.diffs, pairs.diffs)
    assert list((tmp_path / 'cache' / 'features').glob('ranking-pairs-*.npz')) == cached

    # ladder: per image x type a second level of the same (nested) draw; the weaker level must win
    ladder = ranking_options({**opts.as_dict(), 'ladder': True})
    steps = ranking_pairs(net, ladder, tmp_path / 'cache')
    assert len(steps) == 8 and steps.better_levels is not None
    rungs = np.flatnonzero(steps.better_levels > 0)
    assert len(rungs) == 4 and (steps.better_levels[rungs] < steps.levels[rungs]).all()
    assert (steps.better_levels[steps.better_levels == 0] == 0).sum() == 4
    np.testing.assert_allclose(steps.margins(2.0), 2.0 * (steps.levels - steps.better_levels))
    k = int(rungs[0])
    nested = DegradedReader([steps.images[k]], 64, apply, ['white_noise', 'gaussian_blur'], seed=0,
                            level_draws='nested')
    with torch.inference_mode():
        f_lo, f_hi = (net.forward_features(nested(RankingItem(0, steps.types[k], int(lv)))).double().numpy()[0]
                      for lv in (steps.better_levels[k], steps.levels[k]))
    np.testing.assert_allclose(steps.diffs[k], f_lo - f_hi, rtol=1e-5, atol=1e-6)
    assert len(list((tmp_path / 'cache' / 'features').glob('ranking-pairs-*.npz'))) == 2  # not the same cache
    with pytest.raises(ValueError, match='ladder'):
        ranking_options({**opts.as_dict(), 'ladder': 'yes'})

    assert ranking_options(None) is None and ranking_options({}) is None
    import yaml
    opt_file = tmp_path / 'regress.yml'  # a benchmark row can point at a fit's options file
    opt_file.write_text(yaml.safe_dump({'regression': {'ranking': opts.as_dict()}}))
    assert ranking_options(str(opt_file)) == opts
    with pytest.raises(FileNotFoundError, match='does not exist'):
        ranking_options(str(tmp_path / 'missing.yml'))
    with pytest.raises(ValueError, match='Unknown regression.ranking'):
        ranking_options({'pristine_dirs': str(folder), 'margin': 1})
    with pytest.raises(FileNotFoundError, match='not a folder'):
        ranking_options({'pristine_dirs': [str(tmp_path / 'nope')]})
    with pytest.raises(ValueError, match='unknown or empty'):
        ranking_options({'pristine_dirs': str(folder), 'types': ['white_nois']})
    with pytest.raises(ValueError, match='needs pristine_dirs'):
        ranking_options({'weight': 1.0})


def test_fit_with_ranking_pairs_stops_rewarding_noise(fitted):
    """The toy MOS only shows blur, so a plain head reads noise as 'sharp'; the pairs correct that.

    fit_regressor with ``regression.ranking`` (white and impulse noise on 24 pristine crops).
    Through ``pyiqa.create_metric`` on the re-generated pair images, the plain head scores
    many noisy versions above their pristine crop and the ranked head none; the weight file
    records how the head was fitted and how many pairs it misorders; blur is still ranked.
    (Generalisation to unseen contents is what the CLIVE and Kodak benchmarks measure: the
    toy head has 768 features for 40 images.)
    """
    import pyiqa
    import yaml
    from skimage import data

    from crossiqa_pyiqa.benchmark.ranking import DegradedReader, RankingItem
    from crossiqa_pyiqa.degradations import apply
    from crossiqa_pyiqa.regression.ranking_pairs import ranking_options, ranking_pairs
    from crossiqa_pyiqa.weights import read_weights

    root = fitted['root']
    pristine = root / 'pristine_pairs'
    pristine.mkdir()
    for k, im in enumerate([data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]):
        for y in (0, 200):
            for x in (0, 100, 200):
                crop = torch.from_numpy(im[y:y + 96, x:x + 96].copy()).permute(2, 0, 1).float() / 255
                save_png(crop, pristine / f'q{k}_{y}_{x}.png')
    types = ['white_noise', 'impulse_noise']
    ranking = {'pristine_dirs': str(pristine), 'n_images': 24, 'crop': 96, 'types': types, 'weight': 1.0,
               'margin_per_level': 10.0}
    opt = yaml.safe_load(fitted['opt'].read_text())
    opt['regression']['ranking'] = ranking
    yml, out, summary = root / 'ranked.yml', root / 'ranked.safetensors', root / 'ranked.json'
    yml.write_text(yaml.safe_dump(opt))
    fit = load_script('fit_regressor')
    assert fit.main(['-opt', str(yml), '--encoder', str(fitted['encoder']), '--out', str(out),
                     '--summary', str(summary), '--name', 'crossiqa-toy-ranked']) == 0
    s = json.loads(summary.read_text())
    _, _, info = read_weights(out)
    assert info['head'] == 'ridge+ranking' and info['ranking']['n_pairs'] == 48 and info['ranking']['types'] == types
    assert s['srcc_median'] > 0.7  # blur is still ranked (measured 0.95; plain head 0.95)

    # the pair images again, as the fit made them
    pairs = ranking_pairs(load_encoder_file(fitted['encoder']), ranking_options(ranking), root / 'cache')
    paths = list(dict.fromkeys(pairs.images))
    reader = DegradedReader(paths, 96, apply, types, seed=0)

    def misordered(path: Path) -> float:
        metric = pyiqa.create_metric('crossiqa-livec', pretrained_model_path=str(path), device='cpu')
        wrong = [float(metric(reader(RankingItem(paths.index(img), None, 0))))
                 <= float(metric(reader(RankingItem(paths.index(img), t, int(lv)))))
                 for img, t, lv in zip(pairs.images, pairs.types, pairs.levels)]
        return float(np.mean(wrong))

    plain, ranked = misordered(fitted['out']), misordered(out)
    assert plain > 0.15, plain  # measured 0.27: the blur-only MOS teaches "noise = detail"
    assert ranked == pytest.approx(info['ranking']['pairs_misordered'], abs=1 / 48) and ranked <= 1 / 48, ranked


def load_encoder_file(path: Path) -> CrossIQA:
    return CrossIQA(pretrained_model_path=str(path))


def test_splits_seeded_disjoint_and_grouped():
    a = random_splits(100, 10, 0.8, seed=5)
    b = random_splits(100, 3, 0.8, seed=5)
    for (tr, te), (tr2, te2) in zip(a[:3], b):
        np.testing.assert_array_equal(tr, tr2)
        np.testing.assert_array_equal(te, te2)
    for tr, te in a:
        assert len(tr) == 80 and len(te) == 20 and not set(tr) & set(te)
    assert not np.array_equal(a[0][1], a[1][1])
    groups = [f'ref{i // 5}' for i in range(100)]  # 20 references × 5 distortions
    for tr, te in random_splits(100, 10, 0.8, seed=5, groups=groups):
        assert not {groups[i] for i in tr} & {groups[i] for i in te}
        assert len(te) == 20


# ----------------------------------------------------------------------------- bad inputs
def _nr_opt(root: Path, rows: list[list], header=('img_name', 'mos')) -> dict:
    images = root / 'images'
    images.mkdir(parents=True, exist_ok=True)
    save_png(torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0)), images / 'a.png')
    meta = root / 'meta.csv'
    with open(meta, 'w', newline='') as f:
        if header:
            csv.writer(f).writerow(header)
        csv.writer(f).writerows(rows)
    return {'name': 'bad', 'type': 'GeneralNRDataset', 'dataroot_target': str(images), 'meta_info_file': str(meta)}


def test_missing_image_names_row_and_file(tmp_path):
    opt = _nr_opt(tmp_path, [['a.png', 50], ['a.png', 40], ['missing.png', 30]])
    with pytest.raises(DatasetError, match=r'line 4: image .*missing\.png does not exist'):
        build_iqa_dataset(opt)


def test_non_numeric_mos_names_row(tmp_path):
    opt = _nr_opt(tmp_path, [['a.png', 50], ['a.png', 'good']])
    with pytest.raises(DatasetError, match=r"meta\.csv, line 3: MOS 'good' is not a number"):
        build_iqa_dataset(opt)


def test_empty_csv(tmp_path):
    opt = _nr_opt(tmp_path, [], header=None)
    with pytest.raises(DatasetError, match=r'meta\.csv is empty'):
        build_iqa_dataset(opt)
    opt = _nr_opt(tmp_path / 'h', [])
    with pytest.raises(DatasetError, match='header but no rows'):
        build_iqa_dataset(opt)


def test_resize_augment_refused(tmp_path):
    opt = {**_nr_opt(tmp_path, [['a.png', 50]]), 'augment': {'resize': 224}}
    with pytest.raises(DatasetError, match='native resolution'):
        build_iqa_dataset(opt)


def test_fit_regressor_reports_bad_dataset(tmp_path, capsys):
    opt = _nr_opt(tmp_path, [['a.png', 50], ['gone.png', 1]])
    yml = write_options(tmp_path / 'r.yml', opt, tmp_path / 'cache')
    fit = load_script('fit_regressor')
    assert fit.main(['-opt', str(yml), '--random_seed', '0', '--out', str(tmp_path / 'x.safetensors')]) == 1
    assert 'gone.png does not exist' in capsys.readouterr().err
    assert not (tmp_path / 'x.safetensors').exists()


# ----------------------------------------------------------------------------- prepare_livec
def _fake_release(root: Path, n_test: int = 3, drop: str | None = None, mos_nan: bool = False,
                  short_std: bool = False) -> Path:
    import scipy.io as sio

    names = [f't{i}.bmp' for i in range(1, 8)] + [f'{100 + i}.bmp' for i in range(n_test)]
    (root / 'Images' / 'trainingImages').mkdir(parents=True)
    (root / 'Data').mkdir()
    for i, name in enumerate(names):
        folder = root / 'Images' / ('trainingImages' if i < 7 else '')
        if name != drop:
            save_png(torch.full((3, 20, 20), i / len(names)), folder / name)  # PIL writes by content, name is .bmp
    cell = np.empty((len(names), 1), dtype=object)  # the release's (N, 1) cell array of strings
    for i, n in enumerate(names):
        cell[i, 0] = np.array([n])
    mos = np.linspace(20, 80, len(names))[None]
    if mos_nan:
        mos[0, 8] = np.nan
    std = np.full((1, len(names) - (1 if short_std else 0)), 15.0)
    sio.savemat(root / 'Data' / 'AllImages_release.mat', {'AllImages_release': cell})
    sio.savemat(root / 'Data' / 'AllMOS_release.mat', {'AllMOS_release': mos})
    sio.savemat(root / 'Data' / 'AllStdDev_release.mat', {'AllStdDev_release': std})
    return root


@pytest.mark.parametrize('mode', ['--link', '--copy'])
def test_prepare_livec(tmp_path, mode):
    from pyiqa.data import build_dataset

    src = _fake_release(tmp_path / 'release')
    prep = load_script('prepare_livec')
    assert prep.main([str(src), str(tmp_path / 'out'), mode]) == 0
    images = tmp_path / 'out' / 'Images'
    assert len(list(images.iterdir())) == 10
    assert all((images / n).is_symlink() == (mode == '--link') for n in ('t1.bmp', '100.bmp'))
    rows = list(csv.reader(open(tmp_path / 'out' / 'meta_info_LIVEChallengeDataset.csv')))
    assert rows[0] == ['img_name', 'mos', 'std'] and [r[0] for r in rows[1:8]] == [f't{i}.bmp' for i in range(1, 8)]
    ds = build_dataset({'name': 'l', 'type': 'LIVEChallengeDataset', 'dataroot_target': str(images), 'phase': 'test',
                        'meta_info_file': str(tmp_path / 'out' / 'meta_info_LIVEChallengeDataset.csv')})
    assert len(ds) == 3 and ds[0]['img'].shape == (3, 20, 20)
    assert float(ds[0]['mos_label']) == pytest.approx(float(rows[8][1]))


@pytest.mark.parametrize('kwargs, message', [
    ({'drop': '101.bmp'}, r'missing, e\.g\. .*101\.bmp'),
    ({'drop': 't3.bmp'}, r'trainingImages/t3\.bmp'),
    ({'mos_nan': True}, r'Non-finite MOS/std for image 101\.bmp'),
    ({'short_std': True}, r'10 image names, 10 MOS values, 9 standard deviations'),
])
def test_prepare_livec_errors(tmp_path, capsys, kwargs, message):
    import re

    src = _fake_release(tmp_path / 'release', **kwargs)
    prep = load_script('prepare_livec')
    assert prep.main([str(src), str(tmp_path / 'out')]) == 1
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / 'out' / 'meta_info_LIVEChallengeDataset.csv').exists()


def test_prepare_livec_missing_mat(tmp_path, capsys):
    src = _fake_release(tmp_path / 'release')
    (src / 'Data' / 'AllMOS_release.mat').unlink()
    assert load_script('prepare_livec').main([str(src), str(tmp_path / 'out')]) == 1
    assert 'AllMOS_release.mat' in capsys.readouterr().err


def test_fit_grepq_lowlevel_head(tmp_path):
    """fit_regressor fits GRepQ's 128-d low-level features too (metric type GRepQ, zero-shot stats kept)."""
    import pyiqa
    from scipy.stats import spearmanr

    from crossiqa_pyiqa.archs.grepq_arch import GRepQ

    dataset = make_toy_dataset(tmp_path / 'data')
    net = GRepQ()  # the packaged low-level encoder (zero-shot statistics included)
    zs_mean = net.pristine_mean.clone()
    encoder = tmp_path / 'grepq.safetensors'
    net.save_pretrained(str(encoder), {'note': 'test copy of the packaged encoder'})
    opt = write_options(tmp_path / 'regress.yml', dataset, tmp_path / 'cache')
    out, summary = tmp_path / 'grepq-ll-toy.safetensors', tmp_path / 'summary.json'
    fit = load_script('fit_regressor')
    assert fit.main(['-opt', str(opt), '--encoder', str(encoder), '--out', str(out), '--summary', str(summary),
                     '--name', 'grepq-ll-toy']) == 0
    s = json.loads(summary.read_text())
    assert s['feature_dim'] == 128 and s['srcc_median'] > 0.3  # measured 0.42 (96-px crops are small for it)
    metric = pyiqa.create_metric('grepq-ll-toy', device='cpu')
    assert type(metric.net).__name__ == 'GRepQ'
    assert torch.equal(metric.net.pristine_mean, zs_mean)  # its own zero-shot statistics survive the fit
    rho = [spearmanr([metric(degrade(x, lv, 'blur')[None]).item() for lv in LEVELS], [-lv for lv in LEVELS]).statistic
           for x in content_crops('test')]
    assert np.mean(rho) > 0.3  # measured 0.47: blur ranks the right way on average on unseen crops
