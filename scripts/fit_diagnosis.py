"""Fit the diagnosis heads of ``crossiqa_pyiqa.explain`` on synthetic crops and add them to a weight file.

    python scripts/fit_diagnosis.py -opt options/regress/crossiqa_diagnosis.yml \
        --weights crossiqa_pyiqa/weights/crossiqa_lite0_livec.safetensors --out runs/diagnosis/crossiqa.safetensors
        [--set diagnosis.n_images=50 ...] [--threads 1]

Reads the encoder of ``--weights`` (any CrossIQA file: the shipped one, or a new encoder's),
degrades crops of the options' pristine photos with the library, fits one ridge head per
family output on the encoder's features (no MOS) and writes ``--out``: ``--weights`` with the
heads added as ``diagnosis.*`` tensors and their provenance in the metadata (every other
tensor unchanged, so the metric's scores are too). ``--out`` may be ``--weights`` itself.

``--map`` fits the quality map's heads instead (``diagnosis_map.*``): the same outputs, on the features
of 3 x 3-cell windows of such crops (``diagnosis.map_*`` options), which read a window's exposure
and colour better than the crop heads do; the crop heads stay as they are.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys

os.environ.setdefault('HF_HUB_OFFLINE', '1')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('-opt', required=True, help='options YAML (diagnosis section)')
    parser.add_argument('--weights', required=True, help='CrossIQA weight file whose encoder the heads read')
    parser.add_argument('--out', required=True, help='weight file to write (may be --weights itself)')
    parser.add_argument('--cache_dir', default=None, help='feature cache (default: the options\' cache_dir)')
    parser.add_argument('--threads', type=int, default=1, help='torch threads (default 1: a shared 2-core machine)')
    parser.add_argument('--map', action='store_true', help="fit the quality map's window heads (diagnosis_map.*; "
                        'diagnosis.map_images / map_window / map_cells) instead of the crop heads, keeping those')
    parser.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE', help='override options, e.g. '
                        'diagnosis.n_images=50')
    args = parser.parse_args(argv)
    from crossiqa_pyiqa.paths import resolve

    for key in ('weights', 'out', 'cache_dir'):
        setattr(args, key, resolve(getattr(args, key)))
    import torch

    torch.set_num_threads(max(1, args.threads))
    import crossiqa_pyiqa  # noqa: F401  (registers CrossIQA)
    from crossiqa_pyiqa.options import OptionsError, apply_overrides, load_options
    from crossiqa_pyiqa.regression.diagnosis import run_diagnosis_fit

    try:
        opt = apply_overrides(load_options(args.opt, kind='diagnosis'), args.set)
    except (OptionsError, FileNotFoundError) as error:
        parser.error(str(error))
    command = 'python ' + ' '.join(shlex.quote(a) for a in
                                   [os.path.relpath(__file__)] + list(argv if argv is not None else sys.argv[1:]))
    try:
        info = run_diagnosis_fit(opt, args.weights, args.out, command=command, cache_dir=args.cache_dir,
                                 window_heads=args.map)
    except (FileNotFoundError, ValueError) as error:
        print(f'fit_diagnosis: error: {error}', file=sys.stderr)
        return 1
    rows = 'windows' if args.map else 'crops'
    print(f"{info['n_rows']} {rows} of {info['n_images']} photos, {len(info['types'])} types; "
          f"{info['seconds']:.0f} s -> {args.out}")
    for name in info['outputs']:
        print(f"  {name:<16} alpha {info['alphas'][name]:<10g} train RMSE {info['train_rmse'][name]:.3f}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
