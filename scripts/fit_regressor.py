"""Fit the linear (ridge) head of a frozen CrossIQA encoder on a labelled pyiqa dataset.

    python scripts/fit_regressor.py -opt options/regress/crossiqa_livec.yml \
        [--encoder FILE] [--summary FILE.json] [--pristine DIR] [--name crossiqa-livec] [--out FILE]
        [--set encoder.options.clip_model_path=/path/RN50.pt ...]

Reports the median SRCC/PLCC/KRCC of the 10-split linear probe, then writes a weight
file with the head fitted on all images (default: ``$CROSSIQA_HOME/weights/<name>.safetensors``,
registered as pyiqa metric ``<name>`` on ``import crossiqa_pyiqa``).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys

os.environ.setdefault('HF_HUB_OFFLINE', '1')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('-opt', required=True, help='options YAML (dataset, encoder, regression sections)')
    parser.add_argument('--encoder', default=None, help='encoder weight file (overrides encoder.* in the options)')
    parser.add_argument('--random_seed', type=int, default=None,
                        help='use a randomly initialised encoder with this torch seed (baseline)')
    parser.add_argument('--summary', default=None, help='write the protocol results as JSON here')
    parser.add_argument('--pristine', default=None, help='folder of pristine images: adds zero-shot statistics')
    parser.add_argument('--name', default=None, help='metric name (default: crossiqa-<dataset name>)')
    parser.add_argument('--out', default=None, help='weight file to write (default: user weights dir/<name>)')
    parser.add_argument('--split_file', default=None,
                        help="also save the protocol's splits in pyiqa's split_file format (.pkl) for pyiqa.train")
    parser.add_argument('--half', action='store_true',
                        help='store the network weights in float16 (half the file; head and statistics stay float32)')
    parser.add_argument('--cache_dir', default=None, help='feature cache (default: $CROSSIQA_HOME/cache)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch threads (default 1: on a shared 2-core machine, one thread per process was '
                             'measured 3x faster than two)')
    parser.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE',
                        help='override any option, e.g. regression.n_splits=5 encoder.options.clip_model_path=RN50.pt')
    args = parser.parse_args(argv)
    from crossiqa_pyiqa.paths import resolve

    for key in ('encoder', 'summary', 'pristine', 'out', 'split_file', 'cache_dir'):
        setattr(args, key, resolve(getattr(args, key)))  # datasets/... and runs/... under $CROSSIQA_HOME
    import torch

    torch.set_num_threads(max(1, args.threads))

    import crossiqa_pyiqa  # noqa: F401  (registers CrossIQA)
    from crossiqa_pyiqa.regression.datasets import DatasetError
    from crossiqa_pyiqa.regression.fit import run_fit
    from crossiqa_pyiqa.regression.options import load_yaml
    from crossiqa_pyiqa.train.options import apply_overrides

    try:
        opt = apply_overrides(load_yaml(args.opt), args.set)
    except ValueError as error:
        parser.error(str(error))
    if args.random_seed is not None:
        if args.encoder:
            parser.error('--encoder and --random_seed are exclusive')
        opt['encoder'] = {**(opt.get('encoder') or {}), 'pretrained_model_path': None,
                          'random_seed': args.random_seed}
    args_list = list(argv) if argv is not None else sys.argv[1:]
    command = 'python ' + ' '.join(shlex.quote(a) for a in [os.path.relpath(__file__)] + args_list)
    try:
        result = run_fit(opt, encoder_file=args.encoder, name=args.name, out=args.out, pristine=args.pristine,
                         summary=args.summary, cache_dir=args.cache_dir, command=command,
                         split_file=args.split_file, half=args.half)
    except (DatasetError, FileNotFoundError, ValueError) as error:
        print(f'fit_regressor: error: {error}', file=sys.stderr)
        return 1
    print(f"{result['dataset']}: {result['n_images']} images, feature dim {result['feature_dim']}, "
          f"{len(result['srcc_per_split'])} splits")
    print(f"median SRCC {result['srcc_median']:.4f}  PLCC {result['plcc_median']:.4f}  "
          f"KRCC {result['krcc_median']:.4f}  (alphas {sorted(set(result['alphas']))})")
    print(f"head fitted on all images (alpha {result['alpha_full']:g}) -> {result['weight_file']} "
          f"as metric {result['metric_name']!r}; {result['seconds']:.1f} s")
    return 0


if __name__ == '__main__':
    sys.exit(main())
