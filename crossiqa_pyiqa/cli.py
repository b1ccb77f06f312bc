"""``crossiqa-pyiqa``: score images with the plugin's (or any pyiqa) metrics from the shell.

pyiqa's own ``pyiqa`` command checks the metric name against ``DEFAULT_CONFIGS``
before anything could load a plugin, so ``pyiqa crossiqa -t img.png`` cannot work
without patching pyiqa. This command mirrors its flags instead::

    crossiqa-pyiqa score -t PATH [-r REF] [-m crossiqa niqe ...] [--csv out.csv]
    crossiqa-pyiqa list
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

SKIMAGE_SAMPLES = ('astronaut', 'chelsea', 'coffee', 'rocket', 'immunohistochemistry', 'retina')


def _skimage_images() -> list[tuple[str, torch.Tensor]]:
    """scikit-image's bundled colour photographs: a folder to score on a fresh machine."""
    import skimage.data

    out = []
    for name in SKIMAGE_SAMPLES:
        load = getattr(skimage.data, name, None)
        if load is None:
            continue
        arr = load()
        if arr.ndim == 3 and arr.shape[2] == 3:
            out.append((f'skimage.data.{name}', torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].float() / 255))
    return out


def _list_targets(target: str) -> list[str]:
    from pyiqa.utils.img_util import scandir_images

    if os.path.isdir(target):
        files = scandir_images(target)
        if not files:
            raise SystemExit(f'No image files found in {target}')
        return files
    if not os.path.exists(target):
        raise SystemExit(f'Target not found: {target}')
    return [target]


def score_command(args: argparse.Namespace) -> int:
    import pyiqa

    import crossiqa_pyiqa  # noqa: F401  (registers the plugin's metrics)

    metrics = {}
    for name in args.metric:
        if name not in pyiqa.list_models():
            raise SystemExit(f'Unknown metric {name!r}; see `crossiqa-pyiqa list`.')
        metrics[name] = pyiqa.create_metric(name, device=args.device)
    if args.target is None:
        items: list[tuple[str, object]] = _skimage_images()
        print(f'No target given: scoring {len(items)} images that ship with scikit-image.', file=sys.stderr)
    else:
        items = [(p, p) for p in _list_targets(args.target)]
    refs = None
    if args.ref is not None:
        refs = _list_targets(args.ref)
        if len(refs) != len(items):
            raise SystemExit(f'{len(items)} target images but {len(refs)} reference images')

    rows, failures = [], []
    for i, (label, source) in enumerate(tqdm(items, unit='image', desc='scoring', disable=args.quiet)):
        row = {'image': label}
        try:
            for name, metric in metrics.items():
                ref = refs[i] if refs is not None and metric.metric_mode == 'FR' else None
                if metric.metric_mode == 'FR' and ref is None:
                    raise ValueError(f'{name} is a full-reference metric: pass -r REF')
                row[name] = float(metric(source, ref).item()) if ref is not None else float(metric(source).item())
        except Exception as error:  # a bad file is reported and skipped, never fatal
            failures.append((label, f'{type(error).__name__}: {error}'))
            continue
        rows.append(row)

    first = args.metric[0]
    rows.sort(key=lambda r: r[first], reverse=not metrics[first].lower_better)
    width = max([len(os.path.basename(r['image'])) for r in rows] + [5])
    header = f"{'rank':>4}  {'image':<{width}}  " + '  '.join(f'{m:>14}' for m in args.metric)
    print(header)
    print('-' * len(header))
    for k, r in enumerate(rows, 1):
        print(f"{k:>4}  {os.path.basename(r['image']):<{width}}  " + '  '.join(f'{r[m]:>14.4f}' for m in args.metric))
    print(f"(sorted best first by {first}; {'lower' if metrics[first].lower_better else 'higher'} is better)")
    if args.csv:
        with open(args.csv, 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=['image', *args.metric])
            writer.writeheader()
            writer.writerows(rows)
        print(f'Wrote {len(rows)} rows to {args.csv}')
    for label, message in failures:
        print(f'FAILED {label}: {message}', file=sys.stderr)
    if failures:
        print(f'{len(failures)} of {len(items)} images could not be scored.', file=sys.stderr)
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='crossiqa-pyiqa', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    s = sub.add_parser('score', help='score an image or a folder (default: scikit-image sample photos)')
    s.add_argument('-t', '--target', help='image file or folder (recursive)')
    s.add_argument('-r', '--ref', help='reference image or folder, for full-reference metrics')
    s.add_argument('-m', '--metric', nargs='+', default=['crossiqa'], help='pyiqa metric name(s)')
    s.add_argument('--csv', help='write the scores to this CSV file')
    s.add_argument('--device', default=None, help='cpu, cuda, … (default: cuda if available)')
    s.add_argument('-q', '--quiet', action='store_true', help='no progress bar')
    sub.add_parser('list', help="list the plugin's metrics")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == 'list':
        import pyiqa

        import crossiqa_pyiqa  # noqa: F401

        for name in pyiqa.list_models(filter=['crossiqa*', 'grepq*']):
            print(name)
        return 0
    return score_command(args)


if __name__ == '__main__':
    sys.exit(main())
