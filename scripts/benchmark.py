"""Benchmark NR-IQA metrics on pyiqa datasets, with the flags and CSV of pyiqa's ``benchmark_results.py``.

    python scripts/benchmark.py -m niqe brisque piqe crossiqa-livec -d livec \
        --data_opt options/benchmark/datasets.yml --metric_opt options/benchmark/metrics.yml \
        --save_result_path results.csv [--mode probe|efficient|zeroshot|ranking]

As in ``benchmark_results.py``: ``-m``/``-d`` name metrics and datasets, every entry of
``--metric_opt``/``--data_opt`` is tested too (``-d`` names are looked up there first,
then in pyiqa's ``default_dataset_configs.yml``), and the CSV has a row per metric and
a ``<dataset>(PLCC/SRCC/KRCC)`` column per dataset. Exception: ``--mode ranking`` with
``-m`` scores only the metrics named there (``--metric_opt`` entries are then definitions;
feature-probe entries have no head of their own to rank with). Here the column holds the median
over the seeded test splits, with ``<dataset>-whole(...)`` columns for plain scoring of
the whole dataset; a Markdown table is printed (and written with ``--markdown``).
Per-image scores and features are cached (``--cache_dir``), so a killed run resumes.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault('HF_HUB_OFFLINE', '1')


def _datasets(names: list[str], data_opt: str | None) -> dict[str, dict]:
    from crossiqa_pyiqa.options import load_options

    import pyiqa

    custom = load_options(data_opt, kind='benchmark_datasets') if data_opt else {}

    default_file = os.path.join(os.path.dirname(pyiqa.__file__), 'default_dataset_configs.yml')
    defaults = load_options(default_file)  # safe loader: no options file can run code
    out = {}
    for name in list(dict.fromkeys(names + list(custom))):
        opt = custom.get(name) or defaults.get(name)
        if opt is None:
            raise KeyError(f'Unknown dataset {name!r}: not in --data_opt nor in pyiqa default_dataset_configs.yml')
        out[name] = dict(opt)
    return out


def _size(value: str) -> int | None:
    return None if value.lower() == 'all' else int(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-m', type=str, nargs='+', default=None, help='metric name list.')
    parser.add_argument('-d', type=str, nargs='+', default=None, help='dataset name list.')
    parser.add_argument('--metric_opt', type=str, default=None, help='custom metric option YAML (pyiqa format).')
    parser.add_argument('--data_opt', type=str, default=None, help='custom dataset option YAML (pyiqa format).')
    parser.add_argument('--save_result_path', type=str, default=None, help='CSV file to save results.')
    parser.add_argument('--use_gpu', action='store_true', default=False, help='use gpu or not')
    parser.add_argument('--mode', choices=['probe', 'efficient', 'zeroshot', 'ranking'], default='probe')
    parser.add_argument('--markdown', default=None, help='also write the Markdown tables here')
    parser.add_argument('--out_dir', default='runs/benchmark', help='plots, per-type tables, JSON details')
    parser.add_argument('--cache_dir', default=None, help='score/feature cache (default: OUT_DIR/cache)')
    parser.add_argument('--n_splits', type=int, default=10)
    parser.add_argument('--train_ratio', type=float, default=0.8)
    parser.add_argument('--seed', type=int, default=123, help='split seed (same splits for every metric)')
    parser.add_argument('--cv_folds', type=int, default=5, help='k-fold CV for alpha, inside the training split')
    parser.add_argument('--efficient_sizes', nargs='+', default=['25', '50', '100', '200', '400', 'all'])
    parser.add_argument('--max_images', type=int, default=None, help='first N images only (quick checks)')
    parser.add_argument('--scatter_metric', default=None, help='metric of the scatter plot (default: first)')
    parser.add_argument('--pristine_dir', default=None, help='ranking mode: held-out pristine images')
    parser.add_argument('--ranking_max_images', type=int, default=None)
    parser.add_argument('--ranking_crop', type=int, default=256, help='centre crop of pristine images (0: none)')
    parser.add_argument('--ranking_level_draws', choices=('nested', 'independent'), default='nested',
                        help='nested: one random draw (sign, direction, positions) per image x type, shared by its '
                             'levels (the L-test as Waterloo defines it); independent: a fresh draw per level '
                             '(the protocol of the numbers measured before December 2026)')
    parser.add_argument('--ranking_types', nargs='+', default=None,
                        help='degradation types for --mode ranking: names (camera family included) or the '
                             'shorthands kadid, camera, all (default: the 25 KADID types)')
    parser.add_argument('--ranking_baseline', default=None, metavar='NAME',
                        help='ranking mode: per-type L gaps of the other metrics against this one (e.g. the frozen '
                             'backbone), paired by image, with 95%% bootstrap intervals and a forest plot')
    parser.add_argument('--reverse_order', action='store_true',
                        help='score images last-first: start a second process with it to spread a slow metric '
                             '(e.g. ilniqe) over two cores; both share the score cache')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch threads (default 1: on a shared 2-core machine, one thread per process was '
                             'measured 3x faster than two)')
    args = parser.parse_args(argv)
    from crossiqa_pyiqa.paths import resolve

    for key in ('out_dir', 'cache_dir', 'pristine_dir', 'save_result_path', 'markdown'):
        setattr(args, key, resolve(getattr(args, key)))  # datasets/... and runs/... under $CROSSIQA_HOME
    import torch

    torch.set_num_threads(max(1, args.threads))

    from crossiqa_pyiqa.benchmark import BenchmarkConfig, resolve_metrics, run
    from crossiqa_pyiqa.benchmark.metrics import load_metric_opt_file
    from crossiqa_pyiqa.regression.datasets import DatasetError

    try:
        custom = load_metric_opt_file(args.metric_opt) if args.metric_opt else {}
        named = (args.m or []) if args.mode == 'ranking' and args.m else (args.m or []) + list(custom)
        specs = resolve_metrics(named, custom)
        if not specs:
            parser.error('no metric to test: give -m and/or --metric_opt')
        datasets = {} if args.mode == 'ranking' else _datasets(args.d or [], args.data_opt)
        if args.ranking_types:
            from crossiqa_pyiqa.benchmark.ranking import ranking_types

            args.ranking_types = ranking_types(args.ranking_types)  # expands kadid / camera / all
        cfg = BenchmarkConfig(
            metrics=specs, datasets=datasets, mode=args.mode, n_splits=args.n_splits, train_ratio=args.train_ratio,
            seed=args.seed, cv_folds=args.cv_folds, efficient_sizes=[_size(s) for s in args.efficient_sizes],
            cache_dir=args.cache_dir or os.path.join(args.out_dir, 'cache'), out_dir=args.out_dir,
            save_result_path=args.save_result_path, markdown_path=args.markdown, max_images=args.max_images,
            scatter_metric=args.scatter_metric, pristine_dir=args.pristine_dir,
            ranking_max_images=args.ranking_max_images, ranking_crop=args.ranking_crop or None,
            ranking_types=args.ranking_types, ranking_level_draws=args.ranking_level_draws,
            ranking_baseline=args.ranking_baseline, device='cuda' if args.use_gpu else 'cpu',
            reverse_order=args.reverse_order)
        run(cfg)
    except (DatasetError, KeyError, ValueError, FileNotFoundError, ImportError) as error:
        print(f'benchmark: error: {error}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
