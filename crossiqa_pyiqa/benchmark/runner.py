"""One benchmark run: every metric on exactly the same images and splits (DESIGN §5).

Modes:
- ``probe``: learned-head methods (CrossIQA, or any ``forward_features`` extractor
  marked ``probe: true``) get a ridge head per split (alpha by CV inside the training
  split); score-only metrics are scored once per image and evaluated on the same test
  splits, and on the whole dataset. Medians over the splits are reported.
- ``efficient``: median SRCC vs N labelled training images, for the feature methods.
- ``zeroshot``: every metric scores the whole dataset, no labels used.
- ``ranking``: synthetic L-/D-tests on pristine images and the degradation library.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crossiqa_pyiqa.benchmark import report
from crossiqa_pyiqa.benchmark.metrics import MetricSpec, build_metric, is_probe
from crossiqa_pyiqa.benchmark.scores import cache_file, score_items
from crossiqa_pyiqa.regression.datasets import build_iqa_dataset, dataset_records
from crossiqa_pyiqa.regression.features import dataset_features
from crossiqa_pyiqa.regression.protocol import (CORRELATIONS, data_efficient, evaluate_scores, linear_probe,
                                                per_type)
from crossiqa_pyiqa.regression.ranking_pairs import ranking_options, ranking_pairs
from crossiqa_pyiqa.regression.ridge import DEFAULT_ALPHAS, RankingRows
from crossiqa_pyiqa.regression.splits import random_splits

MODES = ('probe', 'efficient', 'zeroshot', 'ranking')


@dataclass
class BenchmarkConfig:
    metrics: list[MetricSpec]
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    mode: str = 'probe'
    n_splits: int = 10
    train_ratio: float = 0.8
    seed: int = 123
    alphas: list[float] = field(default_factory=lambda: list(DEFAULT_ALPHAS))
    cv_folds: int = 5
    efficient_sizes: list[int | None] = field(default_factory=lambda: [25, 50, 100, 200, 400, None])
    cache_dir: str = 'results/benchmark/cache'
    out_dir: str = 'results/benchmark'
    save_result_path: str | None = None
    markdown_path: str | None = None
    max_images: int | None = None
    scatter_metric: str | None = None
    pristine_dir: str | None = None
    ranking_max_images: int | None = None
    ranking_crop: int | None = 256
    ranking_types: list[str] | None = None
    ranking_level_draws: str = 'nested'
    ranking_baseline: str | None = None  # a metric's name: per-type L gaps of the others against it, paired by image
    device: str = 'cpu'
    reverse_order: bool = False  # score missing images last-first (a second process sharing the cache)


@dataclass
class LoadedDataset:
    name: str
    opt: dict[str, Any]
    dataset: Any
    records: Any
    splits: list


def load_dataset(name: str, opt: dict[str, Any], cfg: BenchmarkConfig) -> LoadedDataset:
    from crossiqa_pyiqa.optionfile import DATASET_KEYS, MapOf, validate_schema

    validate_schema({name: opt}, MapOf(DATASET_KEYS))  # a misspelt key fails here, naming it
    opt = {**opt, 'name': opt.get('name', name)}
    opt.setdefault('phase', 'test')
    dataset = build_iqa_dataset(opt)
    if cfg.max_images:
        dataset.paths_mos = dataset.paths_mos[:cfg.max_images]
    records = dataset_records(dataset, {**opt, 'name': name})
    splits = random_splits(len(records), cfg.n_splits, cfg.train_ratio, cfg.seed, records.groups)
    return LoadedDataset(name, opt, dataset, records, splits)


def _read_item(ds: LoadedDataset, spec: MetricSpec):
    if spec.metric_mode == 'FR':
        def read(i):
            item = ds.dataset[i]
            if 'ref_img' not in item:
                raise ValueError(f'{spec.name} is full-reference; dataset {ds.name} has no reference images')
            return item['img'], item['ref_img']
        return read
    return lambda i: ds.dataset[i]['img']


def _per_type_over_splits(values: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    out = {}
    for t in sorted({t for v in values for t in v}):
        rows = [v[t] for v in values if t in v]
        out[t] = {k: float(np.nanmedian([r[k] for r in rows])) for k in CORRELATIONS}
        out[t]['n'] = int(np.median([r['n'] for r in rows]))
    return out


def ranking_rows(spec: MetricSpec, net, cfg: BenchmarkConfig) -> RankingRows | None:
    """The metric's synthetic ranking pairs as fit rows (``ranking:`` in its metric options), else None."""
    opts = ranking_options(spec.ranking)
    if opts is None:
        return None
    return ranking_pairs(net, opts, cfg.cache_dir).as_rows(opts)


def evaluate_metric(spec: MetricSpec, model, ds: LoadedDataset, cfg: BenchmarkConfig) -> dict[str, Any]:
    """Protocol results of one metric on one dataset (mode probe/zeroshot)."""
    records = ds.records
    t0 = time.time()
    probe = cfg.mode == 'probe' and is_probe(spec, model)
    if spec.ranking and not probe:
        raise ValueError(f'{spec.name}: `ranking:` applies to probed (feature + ridge head) metrics only')
    if probe:
        features = dataset_features(model.net, ds.dataset, records, cfg.cache_dir, desc=f'{spec.name} features')
        t_score = time.time() - t0
        results = linear_probe(features, records.mos, ds.splits, cfg.alphas, cfg.cv_folds, cfg.seed,
                               ranking=ranking_rows(spec, model.net, cfg))
        whole = None
        lower_better = False  # predictions are on the MOS scale
    else:
        cache = cache_file(cfg.cache_dir, spec.identity(), records.identity, ds.name)
        scores, per_image = score_items(model, records.paths, _read_item(ds, spec), cache,
                                        desc=f'{spec.name} on {ds.name}', reverse=cfg.reverse_order)
        t_score = time.time() - t0
        results, whole = evaluate_scores(scores, records.mos, ds.splits, spec.lower_better)
        lower_better = spec.lower_better
    if probe:  # features are cached whole; their cost is the extraction time of this run (0 when cached)
        per_image = t_score / max(1, len(records))
    protocol = ('ridge+ranking probe' if spec.ranking else 'ridge probe') if probe else 'score only'
    out = {'protocol': protocol, 'probe': probe,
           'splits': results.summary(), 'whole': whole, 'seconds_this_run': round(t_score, 2),
           'seconds_per_image': round(per_image, 4), 'n_images': len(records),
           'lower_better': lower_better, '_results': results, '_scores': None if probe else scores}
    if records.types is not None:
        types = np.asarray(records.types)
        out['per_type'] = _per_type_over_splits([
            per_type(pred, records.mos[test], types[test], lower_better)
            for test, pred in zip(results.test_indices, results.predictions)])
    return out


def _scatter(cfg: BenchmarkConfig, spec: MetricSpec, ds: LoadedDataset, res: dict[str, Any]) -> str:
    """Split-0 test predictions for probes (never fitted on), whole-dataset scores otherwise."""
    results = res['_results']
    if res['probe']:
        idx, pred = results.test_indices[0], results.predictions[0]
        what, xlabel = 'test split 0', 'predicted score (MOS scale)'
    else:
        idx, pred = np.arange(len(ds.records)), res['_scores']
        what = 'whole dataset'
        xlabel = f'{spec.name} score' + (' (lower is better)' if spec.lower_better else '')
    path = Path(cfg.out_dir) / f'scatter_{spec.name}_{ds.name}.png'
    srcc = res['splits']['srcc_per_split'][0] if res['probe'] else res['whole']['srcc']
    srcc = -srcc if (not res['probe'] and spec.lower_better) else srcc  # plain correlation of the plotted axes
    report.plot_scatter(path, pred, ds.records.mos[idx], f'{spec.name} on {ds.name} ({what}); SRCC {srcc:.3f}',
                        xlabel)
    return str(path)


def run_probe_or_zeroshot(cfg: BenchmarkConfig, loaded: list[LoadedDataset]) -> dict[str, Any]:
    table: dict[str, dict[str, Any]] = {}
    for spec in cfg.metrics:
        model = build_metric(spec, cfg.device)
        table[spec.name] = {}
        for ds in loaded:
            res = evaluate_metric(spec, model, ds, cfg)
            if spec.name == (cfg.scatter_metric or cfg.metrics[0].name):
                res['scatter'] = _scatter(cfg, spec, ds, res)
            table[spec.name][ds.name] = res
            s = res['splits']
            print(f"Results of *{spec.name}* on ({ds.name}) [{res['protocol']}] median of {cfg.n_splits} test splits "
                  f"[PLCC|SRCC|KRCC]: {s['plcc_median']:.4f}, {s['srcc_median']:.4f}, {s['krcc_median']:.4f}"
                  + (f"; whole dataset: {res['whole']['plcc']:.4f}, {res['whole']['srcc']:.4f}, "
                     f"{res['whole']['krcc']:.4f}" if res['whole'] else '')
                  + f"; {res['seconds_this_run']:.1f} s ({res['seconds_per_image']:.3f} s/img)", flush=True)
        del model
    return table


def write_probe_outputs(cfg: BenchmarkConfig, loaded: list[LoadedDataset], table: dict[str, Any]) -> str:
    names = [ds.name for ds in loaded]
    zeroshot = cfg.mode == 'zeroshot'
    header = ['Metric name'] + [f'{n}(PLCC/SRCC/KRCC)' for n in names]
    if not zeroshot:
        header += [f'{n}-whole(PLCC/SRCC/KRCC)' for n in names]
    rows = []
    for metric, per_ds in table.items():
        if zeroshot:
            rows.append([metric] + [report.triple(per_ds[n]['whole']) for n in names])
        else:
            rows.append([metric] + [report.triple({k: per_ds[n]['splits'][f'{k}_median'] for k in CORRELATIONS})
                                    for n in names] + [report.triple(per_ds[n]['whole']) for n in names])
    if cfg.save_result_path:
        report.write_csv(cfg.save_result_path, header, rows)
    md = []
    for n in names:
        md_header = ['Metric', 'protocol', 'SRCC', 'PLCC', 'KRCC', 'SRCC (whole)', 'PLCC (whole)', 's/img']
        md_rows = []
        for metric, per_ds in table.items():
            r = per_ds[n]
            w = r['whole'] or {}
            md_rows.append([metric, r['protocol'], r['splits']['srcc_median'], r['splits']['plcc_median'],
                            r['splits']['krcc_median'], w.get('srcc'), w.get('plcc'), r['seconds_per_image']])
        what = 'whole dataset, no labels' if zeroshot else f'median over {cfg.n_splits} seeded {cfg.train_ratio:.0%} train / test splits'
        md.append(f'### {n} ({len(loaded[names.index(n)].records)} images; {what})\n\n'
                  + report.markdown_table(md_header, md_rows))
        typed = {m: per_ds[n]['per_type'] for m, per_ds in table.items() if 'per_type' in per_ds[n]}
        if typed:
            types = sorted({t for v in typed.values() for t in v})
            t_rows = [[t] + [typed[m].get(t, {}).get('srcc') for m in typed] for t in types]
            report.write_csv(Path(cfg.out_dir) / f'per_type_{n}.csv', ['type'] + [f'{m} SRCC' for m in typed], t_rows)
            md.append(f'#### {n}: SRCC per distortion type (median over test splits)\n\n'
                      + report.markdown_table(['type'] + list(typed), t_rows))
    return '\n\n'.join(md)


def run_efficient(cfg: BenchmarkConfig, loaded: list[LoadedDataset]) -> tuple[dict[str, Any], str]:
    out: dict[str, Any] = {}
    md = []
    for ds in loaded:
        curves, flat, rows = {}, {}, []
        for spec in cfg.metrics:
            model = build_metric(spec, cfg.device)
            if hasattr(model.net, 'forward_features') and (spec.probe is not False):
                feats = dataset_features(model.net, ds.dataset, ds.records, cfg.cache_dir,
                                         desc=f'{spec.name} features')
                res = data_efficient(feats, ds.records.mos, ds.splits, cfg.efficient_sizes, cfg.alphas,
                                     cfg.cv_folds, cfg.seed, ranking=ranking_rows(spec, model.net, cfg))
                curves[spec.name] = {n: r.srcc for n, r in res.items()}
                for n, r in res.items():
                    q25, q50, q75 = r.quantiles('srcc')
                    rows.append([spec.name, ds.name, n, q50, q25, q75, r.median('plcc'), len(r.srcc)])
            else:  # a metric without training: one flat reference line on the same test splits
                cache = cache_file(cfg.cache_dir, spec.identity(), ds.records.identity, ds.name)
                scores, _ = score_items(model, ds.records.paths, _read_item(ds, spec), cache,
                                        desc=f'{spec.name} on {ds.name}', reverse=cfg.reverse_order)
                res, _ = evaluate_scores(scores, ds.records.mos, ds.splits, spec.lower_better)
                flat[spec.name] = res.median('srcc')
                rows.append([spec.name, ds.name, 'none (no training)', res.median('srcc'), *res.quantiles('srcc')[::2],
                             res.median('plcc'), len(res.srcc)])
            del model
        header = ['method', 'dataset', 'N', 'srcc_median', 'srcc_q25', 'srcc_q75', 'plcc_median', 'repetitions']
        report.write_csv(Path(cfg.out_dir) / f'efficient_{ds.name}.csv', header, rows)
        png = Path(cfg.out_dir) / f'efficient_{ds.name}.png'
        report.plot_efficient(png, curves, flat, title=f'{ds.name}: data-efficient linear probe')
        out[ds.name] = {'rows': rows, 'plot': str(png)}
        md.append(f'### {ds.name}: median SRCC vs labelled training images N ({cfg.n_splits} repetitions)\n\n'
                  + report.markdown_table(header[:-1], [r[:-1] for r in rows]))
    return out, '\n\n'.join(md)


def run_ranking(cfg: BenchmarkConfig) -> tuple[dict[str, Any], str]:
    from crossiqa_pyiqa.benchmark.ranking import (DegradedReader, load_degradations, pristine_paths,
                                                  ranking_items, ranking_tests, ranking_types)

    if not cfg.pristine_dir:
        raise ValueError('--mode ranking needs --pristine_dir (held-out pristine images)')
    names = [spec.name for spec in cfg.metrics]
    if cfg.ranking_baseline is not None and (cfg.ranking_baseline not in names or len(names) < 2):
        raise ValueError(f'--ranking_baseline {cfg.ranking_baseline!r} must be one of two or more metrics run '
                         f'together (-m): {names}')
    types, apply_fn = load_degradations()
    if cfg.ranking_types:  # names of any registered type (camera family included) and the shorthands
        types = ranking_types(cfg.ranking_types)
    paths = pristine_paths(cfg.pristine_dir, cfg.ranking_max_images)
    items = ranking_items(len(paths), types)
    reader = DegradedReader(paths, cfg.ranking_crop, apply_fn, types, seed=cfg.seed,
                            level_draws=cfg.ranking_level_draws)
    # independent draws are seeded by each type's place in the list, so the list is part of the data
    draws = 'nested' if cfg.ranking_level_draws == 'nested' else types
    identity = json.dumps({'paths': paths, 'crop': cfg.ranking_crop, 'seed': cfg.seed, 'level_draws': draws})
    data_id = hashlib.sha256(identity.encode()).hexdigest()[:16]
    results, rows = {}, []
    for spec in cfg.metrics:
        model = build_metric(spec, cfg.device)
        cache = cache_file(cfg.cache_dir, spec.identity(), data_id, 'ranking')
        t0 = time.time()
        scores, per_item = score_items(model, [it.key for it in items], lambda k: reader(items[k]), cache,
                                       desc=f'{spec.name} ranking', reverse=cfg.reverse_order)
        res = ranking_tests(items, scores, spec.lower_better)
        results[spec.name] = {'tests': res, 'seconds_this_run': round(time.time() - t0, 2),
                              'seconds_per_item': round(per_item, 4)}
        for t, r in res.items():
            rows.append([spec.name, t, r['l_srcc'], *r['l_ci'], r['d_pair'], r['d_auc'], r['n_images']])
        del model
    header = ['metric', 'type', 'l_srcc_mean', 'l_ci95_low', 'l_ci95_high', 'd_pair_accuracy', 'd_auc', 'n_images']
    report.write_csv(cfg.save_result_path or Path(cfg.out_dir) / 'ranking.csv', header, rows)
    names = list(results)
    md_rows = [[t] + [results[m]['tests'].get(t, {}).get(k) for m in names for k in ('l_srcc', 'd_pair')]
               for t in types + ['all']]
    md = (f'### Synthetic ranking tests: {len(paths)} pristine images from {cfg.pristine_dir} '
          f'(centre crop {cfg.ranking_crop}), {len(types)} types × levels 1..5, {cfg.ranking_level_draws} '
          'draws across levels\n\n'
          'L = mean over images of SRCC(quality, -level); D = fraction of (pristine, distorted) pairs ranked '
          'correctly.\n\n'
          + report.markdown_table(['type'] + [f'{m} {k}' for m in names for k in ('L', 'D')], md_rows))
    if cfg.ranking_baseline is not None:
        md += '\n\n' + ranking_gaps(cfg, results, types + ['all'], len(paths))
    return results, md


def ranking_gaps(cfg: BenchmarkConfig, results: dict[str, Any], types: list[str], n_images: int) -> str:
    """Paired per-type L gaps of every metric against ``cfg.ranking_baseline`` (stored in ``results``), a
    Markdown table and a forest plot ``ranking_gaps.png`` in the output folder."""
    from crossiqa_pyiqa.benchmark.ranking import paired_l_gaps

    base = cfg.ranking_baseline
    others = [m for m in results if m != base]
    for m in others:
        results[m]['gaps_vs_baseline'] = paired_l_gaps(results[m]['tests'], results[base]['tests'])

    def cell(m: str, t: str) -> str:
        g = results[m]['gaps_vs_baseline'].get(t)
        return '-' if g is None else f"{g['gap']:+.3f} [{g['ci'][0]:+.3f}, {g['ci'][1]:+.3f}]"

    def l_cell(m: str, t: str) -> str:
        r = results[m]['tests'].get(t)
        return '-' if r is None else f"{r['l_srcc']:.3f} [{r['l_ci'][0]:.2f}, {r['l_ci'][1]:.2f}]"

    rows = [[t, l_cell(base, t)] + [c for m in others for c in (l_cell(m, t), cell(m, t))] for t in types]
    report.plot_gaps(Path(cfg.out_dir) / 'ranking_gaps.png',
                     {m: {t: results[m]['gaps_vs_baseline'][t] for t in types
                          if t in results[m]['gaps_vs_baseline']} for m in others}, base)
    return (f'### L-test gaps against {base}, paired by image ({n_images} images, 95% bootstrap intervals over '
            'images)\n\nA gap whose interval holds 0 is within what another draw of images would change.\n\n'
            + report.markdown_table(['type', f'{base} L'] + [h for m in others for h in (f'{m} L', f'{m} - {base}')],
                                    rows))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items() if not str(k).startswith('_')}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def run(cfg: BenchmarkConfig) -> dict[str, Any]:
    """Run the benchmark, write CSV/JSON/Markdown/PNG outputs, return the results."""
    if cfg.mode not in MODES:
        raise ValueError(f'mode must be one of {MODES}, got {cfg.mode!r}')
    t0 = time.time()
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    if cfg.mode == 'ranking':
        results, md = run_ranking(cfg)
    else:
        if not cfg.datasets:
            raise ValueError('No dataset to test: give -d NAME and/or --data_opt FILE')
        loaded = [load_dataset(name, opt, cfg) for name, opt in cfg.datasets.items()]
        if cfg.mode == 'efficient':
            results, md = run_efficient(cfg, loaded)
        else:
            results = run_probe_or_zeroshot(cfg, loaded)
            md = write_probe_outputs(cfg, loaded, results)
    seconds = round(time.time() - t0, 1)
    md = f'## Benchmark ({cfg.mode}), {seconds} s\n\n' + md
    print('\n' + md + '\n', flush=True)
    if cfg.markdown_path:
        Path(cfg.markdown_path).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.markdown_path).write_text(md + '\n')
    details = {'mode': cfg.mode, 'seconds': seconds, 'metrics': [m.__dict__ for m in cfg.metrics],
               'datasets': cfg.datasets, 'n_splits': cfg.n_splits, 'seed': cfg.seed, 'results': results}
    with open(Path(cfg.out_dir) / f'benchmark_{cfg.mode}.json', 'w') as f:
        json.dump(_jsonable(details), f, indent=1, default=str)
    return results
