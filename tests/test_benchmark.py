"""scripts/benchmark.py on the toy dataset of test_regression: every mode, CSV format, resume.

piqe is the score-only baseline (it needs no parameter file); ``crossiqa-random`` (a seeded
random-init CrossIQA defined in a metric-options file) is the learned-head method.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

os.environ.setdefault('HF_HUB_OFFLINE', '1')

from test_regression import load_script, make_toy_dataset, random_encoder, save_png  # noqa: E402

from crossiqa_pyiqa.archs.crossiqa_arch import DEFAULT_WEIGHTS  # noqa: E402
from crossiqa_pyiqa.benchmark.ranking import auc, ranking_items, ranking_tests  # noqa: E402
from crossiqa_pyiqa.regression import evaluate_scores, random_splits  # noqa: E402


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('bench')
    dataset = make_toy_dataset(root / 'data')
    data_opt = root / 'data.yml'
    data_opt.write_text(yaml.safe_dump({'toy': dataset}))
    metric_opt = root / 'metrics.yml'
    metric_opt.write_text(yaml.safe_dump({'crossiqa-random': {
        'metric_opts': {'type': 'CrossIQA', 'pretrained': False}, 'metric_mode': 'NR', 'lower_better': False,
        'seed': 0}}))
    return {'root': root, 'dataset': dataset, 'data_opt': data_opt, 'metric_opt': metric_opt}


def run_bench(setup, out: str, *extra: str) -> Path:
    bench = load_script('benchmark')
    out_dir = setup['root'] / out
    rc = bench.main(['--data_opt', str(setup['data_opt']), '--out_dir', str(out_dir),
                     '--cache_dir', str(setup['root'] / 'cache'), *extra])
    assert rc == 0
    return out_dir


def test_probe_mode_csv_markdown_scatter_and_resume(setup):
    out = run_bench(setup, 'probe', '-m', 'piqe', '--metric_opt', str(setup['metric_opt']),
                    '--save_result_path', str(setup['root'] / 'probe.csv'), '--markdown', str(setup['root'] / 'p.md'))
    rows = list(csv.reader(open(setup['root'] / 'probe.csv')))
    assert rows[0] == ['Metric name', 'toy(PLCC/SRCC/KRCC)', 'toy-whole(PLCC/SRCC/KRCC)']  # pyiqa's layout
    assert [r[0] for r in rows[1:]] == ['piqe', 'crossiqa-random']
    assert len(rows[1][1].split('/')) == 3 and rows[2][2] == '-'  # no whole-set number for a fitted head
    md = (setup['root'] / 'p.md').read_text()
    assert '| piqe |' in md and 'ridge probe' in md and 'SRCC per distortion type' in md
    assert (out / 'scatter_piqe_toy.png').stat().st_size > 1000
    assert (out / 'per_type_toy.csv').exists()
    details = json.loads((out / 'benchmark_probe.json').read_text())['results']
    probe = details['crossiqa-random']['toy']['splits']
    assert len(probe['srcc_per_split']) == 10 and probe['srcc_median'] > 0.7  # as in test_regression (0.93)

    # Score-only metrics are evaluated on the very same splits as the probe.
    cache = next((setup['root'] / 'cache' / 'scores').glob('toy-piqe-*.jsonl'))
    lines = cache.read_text().splitlines()
    assert len(lines) == 40
    scores = {json.loads(line)['key']: json.loads(line)['score'] for line in lines}
    paths = sorted(scores, key=lambda p: [r[0] for r in csv.reader(open(setup['dataset']['meta_info_file']))][1:]
                   .index(Path(p).name))
    mos = np.array([100 - 18 * int(Path(p).stem[-1]) for p in paths], dtype=float)
    res, whole = evaluate_scores(np.array([scores[p] for p in paths]), mos, random_splits(40, 10, 0.8, 123),
                                 lower_better=True)
    assert details['piqe']['toy']['splits']['srcc_per_split'] == pytest.approx(res.srcc, nan_ok=True)
    assert details['piqe']['toy']['whole']['srcc'] == pytest.approx(whole['srcc'])

    # Resume: a run killed half-way left half the lines; the rerun completes them to the same numbers.
    cache.write_text('\n'.join(lines[:20]) + '\n{"key": "cut')
    run_bench(setup, 'probe2', '-m', 'piqe', '--save_result_path', str(setup['root'] / 'probe2.csv'))
    assert list(csv.reader(open(setup['root'] / 'probe2.csv')))[1] == rows[1]


def test_efficient_mode(setup):
    out = run_bench(setup, 'eff', '-m', 'piqe', '--metric_opt', str(setup['metric_opt']), '--mode', 'efficient',
                    '--efficient_sizes', '10', '20', 'all')
    rows = list(csv.DictReader(open(out / 'efficient_toy.csv')))
    ns = [r['N'] for r in rows if r['method'] == 'crossiqa-random']
    assert ns == ['10', '20', 'all']
    assert all(int(r['repetitions']) == 10 for r in rows)
    assert (out / 'efficient_toy.png').stat().st_size > 1000
    assert any(r['method'] == 'piqe' for r in rows)  # flat reference line


def test_zeroshot_and_ranking_modes(setup):
    fit = load_script('fit_regressor')
    root = setup['root']
    pristine = root / 'pristine'
    pristine.mkdir()
    from test_regression import content_crops

    for i, x in enumerate(content_crops('train')[:4]):
        save_png(x, pristine / f'p{i}.png')
    opt = root / 'regress.yml'
    opt.write_text(yaml.safe_dump({'dataset': setup['dataset'], 'cache_dir': str(root / 'cache'),
                                   'regression': {'n_splits': 3}}))
    weights = root / 'crossiqa-toyzs.safetensors'
    assert fit.main(['-opt', str(opt), '--encoder', str(random_encoder(root / 'enc.safetensors')),
                     '--pristine', str(pristine), '--out', str(weights), '--name', 'crossiqa-toyzs']) == 0
    zs_opt = root / 'zs.yml'
    zs_opt.write_text(yaml.safe_dump({
        'crossiqa-zs-toy': {'metric_opts': {'type': 'CrossIQA', 'pretrained_model_path': str(weights),
                                            'head': 'zeroshot'}, 'metric_mode': 'NR', 'lower_better': True},
        'crossiqa-toy-head': {'metric_opts': {'type': 'CrossIQA', 'pretrained_model_path': str(weights),
                                              'head': 'linear'}, 'metric_mode': 'NR', 'lower_better': False}}))
    out = run_bench(setup, 'zs', '--metric_opt', str(zs_opt), '--mode', 'zeroshot', '--save_result_path',
                    str(root / 'zs.csv'))
    rows = list(csv.reader(open(root / 'zs.csv')))
    assert rows[0] == ['Metric name', 'toy(PLCC/SRCC/KRCC)']
    zs_row = next(r for r in rows if r[0] == 'crossiqa-zs-toy')  # whole dataset, no labels
    assert all(np.isfinite(float(v)) for v in zs_row[1].split('/'))

    pytest.importorskip('crossiqa_pyiqa.degradations')
    # ranking mode scores only the metrics named by -m (crossiqa-toy-head is defined, not named)
    out = run_bench(setup, 'rank', '-m', 'piqe', 'crossiqa-zs-toy', '--metric_opt', str(zs_opt), '--mode', 'ranking',
                    '--pristine_dir', str(pristine), '--ranking_max_images', '2', '--ranking_crop', '64',
                    '--ranking_types', 'gaussian_blur', 'white_noise', '--markdown', str(root / 'rank.md'),
                    '--ranking_baseline', 'piqe')
    rows = list(csv.DictReader(open(out / 'ranking.csv')))
    for r in rows:
        assert float(r['l_ci95_low']) <= float(r['l_srcc_mean']) <= float(r['l_ci95_high'])
    assert 'crossiqa-zs-toy - piqe' in (root / 'rank.md').read_text() and (out / 'ranking_gaps.png').stat().st_size
    assert {r['metric'] for r in rows} == {'piqe', 'crossiqa-zs-toy'}
    assert {r['type'] for r in rows} == {'gaussian_blur', 'white_noise', 'all'}
    for r in rows:
        assert -1 <= float(r['l_srcc_mean']) <= 1 and 0 <= float(r['d_pair_accuracy']) <= 1
    piqe_all = next(r for r in rows if r['metric'] == 'piqe' and r['type'] == 'all')
    assert float(piqe_all['l_srcc_mean']) > 0.5  # piqe ranks blur and noise levels (measured 0.95)
    assert '| gaussian_blur |' in (root / 'rank.md').read_text()


def test_ranking_statistics_sign_and_perfect_metric():
    items = ranking_items(3, ['a', 'b'], levels=(1, 2, 3, 4, 5))
    quality = np.array([10.0 - it.level for it in items])  # pristine best, monotone in level
    res = ranking_tests(items, quality, lower_better=False)
    assert {k: res['a'][k] for k in ('l_srcc', 'd_pair', 'd_auc', 'n_images')} == pytest.approx(
        {'l_srcc': 1.0, 'd_pair': 1.0, 'd_auc': 1.0, 'n_images': 3})
    assert res['a']['l_ci'] == pytest.approx((1.0, 1.0)) and res['a']['l_per_image'] == pytest.approx({0: 1.0, 1: 1.0, 2: 1.0})
    flipped = ranking_tests(items, -quality, lower_better=True)  # a distance: lower is better
    assert flipped['all']['l_srcc'] == pytest.approx(1.0) and flipped['all']['d_pair'] == pytest.approx(1.0)
    blind = ranking_tests(items, np.zeros(len(items)), lower_better=False)
    assert blind['b']['l_srcc'] == 0.0 and blind['b']['d_pair'] == 0.5
    assert auc(np.array([1.0, 2.0]), np.array([0.0, 3.0])) == pytest.approx(0.5)


def test_paired_l_gaps_tell_a_lead_from_the_choice_of_images():
    """Two metrics ranked on the same 8 images: one orders every image, the other reverses half of them. The gap
    (1.0 = the mean of four 0s and four 2s) has an interval above 0; a metric against itself has none; the lead on
    two images of one reversal each is not told apart from the images chosen."""
    from crossiqa_pyiqa.benchmark.ranking import paired_l_gaps

    items = ranking_items(8, ['a'], levels=(1, 2, 3, 4, 5))
    good = np.array([10.0 - it.level for it in items])
    half = np.array([10.0 - it.level if it.image < 4 or it.dtype is None else it.level for it in items])
    tests_good, tests_half = ranking_tests(items, good, False), ranking_tests(items, half, False)
    assert tests_half['a']['l_srcc'] == pytest.approx(0.0)
    low, high = tests_half['a']['l_ci']
    assert -1 < low < 0 < high < 1  # four +1s and four -1s: the mean's interval spans 0
    gaps = paired_l_gaps(tests_good, tests_half)
    assert gaps['a']['gap'] == pytest.approx(1.0) and gaps['all']['gap'] == pytest.approx(1.0)
    assert 0 < gaps['a']['ci'][0] < 1 < gaps['a']['ci'][1] <= 2 and gaps['a']['p_lead'] > 0.97
    self_gap = paired_l_gaps(tests_good, tests_good)['a']
    assert self_gap['gap'] == 0 and self_gap['ci'] == (0.0, 0.0) and self_gap['p_lead'] == 0
    two = ranking_items(2, ['a'], levels=(1, 2, 3, 4, 5))
    one_flip = np.array([10.0 - it.level if it.image == 0 or it.dtype is None else it.level for it in two])
    few = paired_l_gaps(ranking_tests(two, 10.0 - np.array([it.level for it in two]), False),
                        ranking_tests(two, one_flip, False))['a']
    assert few['ci'][0] == 0.0 and few['p_lead'] < 0.9  # a 2-image lead: its interval reaches 0
    with pytest.raises(ValueError, match='other images'):
        paired_l_gaps(tests_good, ranking_tests(two, one_flip, False))


def test_nested_level_draws_make_each_level_the_same_distortion_stronger(tmp_path):
    """The L-test's levels of a randomly drawn type (sign, direction, positions) share one draw when nested:
    mean_shift keeps its sign, the patch types' damaged pixels grow, and no type's pixel deviation falls with
    the level. Independent draws (the ranking pairs') may flip mean_shift's sign between levels."""
    from skimage import data

    from crossiqa_pyiqa.regression.degraded import DegradedReader, RankingItem, load_degradations

    _, apply = load_degradations()
    paths = []
    for k, name in enumerate(('astronaut', 'coffee', 'chelsea')):
        paths.append(str(tmp_path / f'{name}.png'))
        rgb = torch.from_numpy(getattr(data, name)()[k * 20:k * 20 + 96, 100:196]).permute(2, 0, 1) / 255
        save_png(rgb, Path(paths[-1]))
    types = ['mean_shift', 'contrast_change', 'non_eccentricity_patch', 'color_block', 'white_balance', 'white_noise']
    nested = DegradedReader(paths, None, apply, types, seed=123, level_draws='nested')
    independent = DegradedReader(paths, None, apply, types, seed=123)
    flips = 0
    for i in range(len(paths)):
        clean = nested(RankingItem(i, None, 0))
        for t in types:
            levels = [nested(RankingItem(i, t, lv)) for lv in (1, 2, 3, 4, 5)]
            deviation = [float((x - clean).abs().mean()) for x in levels]
            assert all(b > a for a, b in zip(deviation, deviation[1:])), (t, i, deviation)
            if t == 'mean_shift':
                assert len({np.sign(float((x - clean).mean())) for x in levels}) == 1
                signs = {np.sign(float((independent(RankingItem(i, t, lv)) - clean).mean())) for lv in range(1, 6)}
                flips += len(signs) > 1
            if t in ('non_eccentricity_patch', 'color_block'):
                masks = [(x - clean).abs().amax(1) > 0 for x in levels]
                assert all(bool((a <= b).all()) for a, b in zip(masks, masks[1:])), t
    assert flips >= 1  # measured: all 3 images change sign between independent levels
    # nested draws depend on the type's name, not on its place in the list
    alone = DegradedReader(paths, None, apply, ['white_balance'], seed=123, level_draws='nested')
    assert torch.equal(alone(RankingItem(1, 'white_balance', 3)), nested(RankingItem(1, 'white_balance', 3)))
    with pytest.raises(ValueError, match='level_draws'):
        DegradedReader(paths, None, apply, types, level_draws='shared')


def test_unknown_metric_and_dataset_fail_clearly(setup, capsys):
    bench = load_script('benchmark')
    assert bench.main(['-m', 'no-such-metric', '-d', 'toy', '--data_opt', str(setup['data_opt'])]) == 1
    assert 'no-such-metric' in capsys.readouterr().err
    assert bench.main(['-m', 'piqe', '-d', 'nowhere']) == 1
    assert "Unknown dataset 'nowhere'" in capsys.readouterr().err


def test_score_cache_shared_by_two_processes(tmp_path):
    """A second process scoring last-first (--reverse_order) and the first one meet in the middle:
    each picks up what the other appended to the shared cache instead of scoring it again."""
    import json

    import torch

    from crossiqa_pyiqa.benchmark.scores import score_items

    images = [torch.full((3, 8, 8), float(i)) for i in range(6)]
    keys = [f'img{i}.png' for i in range(6)]
    cache = tmp_path / 'scores' / 'shared.jsonl'
    scored = []

    def metric(x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))

    def read_while_other_process_writes(i: int) -> torch.Tensor:
        scored.append(i)
        if len(scored) == 1:  # meanwhile the other process, going last-first, finishes items 5 and 4
            with open(cache, 'a') as f:
                for j in (5, 4):
                    f.write(json.dumps({'key': keys[j], 'score': 100.0 + j, 'seconds': 1.0}) + '\n')
                f.write('{"key": "img3.png", "sco')  # and is half-way through writing item 3's line
        return images[i]

    scores, _ = score_items(metric, keys, read_while_other_process_writes, cache)
    assert scored == [0, 1, 2, 3]  # 4 and 5 came from the cache, the half-written line was not trusted
    assert scores.tolist() == [0.0, 1.0, 2.0, 3.0, 104.0, 105.0]
    # a reverse-order run on a fresh cache scores last-first
    order = []
    score_items(metric, keys, lambda i: order.append(i) or images[i], tmp_path / 'scores' / 'fresh.jsonl',
                reverse=True)
    assert order == [5, 4, 3, 2, 1, 0]


def test_score_cache_survives_a_line_cut_by_a_kill(tmp_path):
    import torch

    from crossiqa_pyiqa.benchmark.scores import score_items

    cache = tmp_path / 'cut.jsonl'
    cache.write_text('{"key": "a.png", "score": 7.0, "seconds": 1.0}\n{"key": "b.png", "sc')
    images = {0: torch.zeros(3, 4, 4), 1: torch.ones(3, 4, 4), 2: torch.full((3, 4, 4), 2.0)}
    keys = ['a.png', 'b.png', 'c.png']
    scores, _ = score_items(lambda x: x.mean(dim=(1, 2, 3)), keys, images.__getitem__, cache)
    assert scores.tolist() == [7.0, 1.0, 2.0]
    again, _ = score_items(lambda x: 1 / 0, keys, images.__getitem__, cache)  # all cached now: never called
    assert again.tolist() == [7.0, 1.0, 2.0]


def test_score_cache_identity_follows_the_packaged_weight_file():
    """Re-shipping a head under the same name must not reuse scores cached with the old file."""
    from crossiqa_pyiqa.benchmark.metrics import MetricSpec, packaged_weight_file
    from crossiqa_pyiqa.weights import PACKAGE_WEIGHTS_DIR, file_sha256

    shipped = PACKAGE_WEIGHTS_DIR / f'{DEFAULT_WEIGHTS}.safetensors'
    spec = MetricSpec('crossiqa', {'type': 'CrossIQA', 'weights': DEFAULT_WEIGHTS, 'head': 'linear'})
    assert spec.identity()['weights_sha256'] == file_sha256(shipped)
    assert packaged_weight_file({'type': 'CrossIQA'}) == str(shipped)  # the architecture's default file
    assert packaged_weight_file({'type': 'GRepQ'}) == str(PACKAGE_WEIGHTS_DIR / 'grepq_ll.safetensors')
    assert 'weights_sha256' not in MetricSpec('r', {'type': 'CrossIQA', 'pretrained': False}).identity()
    assert 'weights_sha256' not in MetricSpec('niqe', {'type': 'NIQE'}).identity()
