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


def _scan_folder(folder: str) -> tuple[list[tuple[str, str]], int]:
    """Image files under ``folder`` (symlinks followed, each real folder and file once), labelled by their
    path relative to ``folder``; returns ``(items, duplicates)`` where duplicates were reached twice."""
    from pyiqa.utils.img_util import is_image_file

    items, seen_dirs, seen_files, duplicates = [], set(), set(), 0
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen_dirs:  # a symlink loop, or a second link to a folder already listed
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs.sort()
        for name in sorted(files):
            if not is_image_file(name):
                continue
            path = os.path.join(root, name)
            key = os.path.realpath(path)
            if key in seen_files:
                duplicates += 1
                continue
            seen_files.add(key)
            items.append((os.path.relpath(path, folder), path))
    items.sort()
    return items, duplicates


def _list_targets(target: str) -> list[tuple[str, str]]:
    """``(label, path)`` of the images to score: a file as given, a folder's images relative to it."""
    if os.path.isdir(target):
        items, duplicates = _scan_folder(target)
        if not items:
            raise SystemExit(f'crossiqa-pyiqa: error: no image files found in {target}')
        if duplicates:
            print(f'{duplicates} path(s) under {target} lead to files already listed (symbolic links); '
                  'each file is scored once.', file=sys.stderr)
        return items
    if not os.path.exists(target):
        raise SystemExit(f'crossiqa-pyiqa: error: target not found: {target}')
    return [(target, target)]


def resolve_device(name: str | None) -> torch.device:
    """A usable torch device, or a one-line error (never a traceback)."""
    if name is None:
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise SystemExit(f'crossiqa-pyiqa: error: --device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)')
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise SystemExit(f'crossiqa-pyiqa: error: --device {name}: no CUDA GPU is available here; use --device cpu')
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SystemExit(f'crossiqa-pyiqa: error: --device {name}: only {torch.cuda.device_count()} CUDA '
                             'device(s) here')
    try:
        torch.empty(1, device=device)
    except Exception as error:  # mps without a GPU, xpu without a driver...
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SystemExit(f'crossiqa-pyiqa: error: --device {name} cannot be used: {message}')
    return device


def check_output(path: str, inputs: Sequence[str]) -> None:
    """Refuse a --csv path that cannot be written, or that would overwrite an input or another image."""
    from pyiqa.utils.img_util import is_image_file

    if os.path.isdir(path):
        raise SystemExit(f'crossiqa-pyiqa: error: --csv {path} is a folder; give a file name')
    real = os.path.realpath(path)
    if real in {os.path.realpath(p) for p in inputs}:
        raise SystemExit(f'crossiqa-pyiqa: error: --csv {path} is one of the images to score; it would be '
                         'overwritten. Choose another file name.')
    if os.path.exists(path) and is_image_file(path):
        raise SystemExit(f'crossiqa-pyiqa: error: --csv {path} is an existing image file; refusing to overwrite it')
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise SystemExit(f'crossiqa-pyiqa: error: --csv {path}: {parent} is not an existing folder')
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise SystemExit(f'crossiqa-pyiqa: error: --csv {path} cannot be written (permission denied)')


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f'{type(error).__name__}: {text[0] if text else ""}'.rstrip(': ')


def score_command(args: argparse.Namespace) -> int:
    import pyiqa

    import crossiqa_pyiqa  # noqa: F401  (registers the plugin's metrics)
    from crossiqa_pyiqa.inputs import read_image

    device = resolve_device(args.device)
    for name in args.metric:
        if name not in pyiqa.list_models():
            raise SystemExit(f'crossiqa-pyiqa: error: unknown metric {name!r}; see `crossiqa-pyiqa list`.')
    if args.target is None:
        items: list[tuple[str, object]] = _skimage_images()
        print(f'No target given: scoring {len(items)} images that ship with scikit-image.', file=sys.stderr)
    else:
        items = list(_list_targets(args.target))
    refs = None
    if args.ref is not None:
        refs = [p for _, p in _list_targets(args.ref)]
        if len(refs) != len(items):
            raise SystemExit(f'crossiqa-pyiqa: error: {len(items)} target images but {len(refs)} reference images')
    if args.csv:  # before any metric is built or image scored: a bad path never costs the results
        check_output(args.csv, [s for _, s in items if isinstance(s, str)] + (refs or []))

    metrics = {}
    for name in args.metric:
        try:
            metrics[name] = pyiqa.create_metric(name, device=device)
        except Exception as error:
            raise SystemExit(f'crossiqa-pyiqa: error: metric {name!r} cannot be built: {_one_line(error)}')

    out, writer = None, None
    if args.csv:
        try:
            out = open(args.csv, 'w', newline='')
        except OSError as error:
            raise SystemExit(f'crossiqa-pyiqa: error: --csv {args.csv}: {_one_line(error)}')
        writer = csv.DictWriter(out, fieldnames=['image', *args.metric, 'errors'])
        writer.writeheader()
        out.flush()

    rows, failures, interrupted = [], [], False
    try:
        for i, (label, source) in enumerate(tqdm(items, unit='image', desc='scoring', disable=args.quiet)):
            row: dict[str, object] = {'image': label}
            errors: dict[str, str] = {}
            try:
                x = source if torch.is_tensor(source) else read_image(source)[None]
                ref = read_image(refs[i])[None] if refs is not None else None
            except Exception as error:  # unreadable file: every metric fails on it
                errors = {name: _one_line(error) for name in metrics}
            else:
                for name, metric in metrics.items():
                    try:
                        if metric.metric_mode == 'FR':
                            if ref is None:
                                raise ValueError(f'{name} is a full-reference metric: pass -r REF')
                            value = metric(x, ref)
                        else:
                            value = metric(x)
                        row[name] = float(value.reshape(-1)[0].item())
                    except Exception as error:  # one metric failing keeps the others' scores
                        errors[name] = _one_line(error)
            row['errors'] = '; '.join(f'{k}: {v}' for k, v in errors.items())
            failures.extend((label, k, v) for k, v in errors.items())
            rows.append(row)
            if writer is not None:
                writer.writerow(row)
                out.flush()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if out is not None:
            out.close()

    first = args.metric[0]
    lower = metrics[first].lower_better
    scored = sorted((r for r in rows if first in r), key=lambda r: r[first], reverse=not lower)
    ordered = scored + [r for r in rows if first not in r]
    width = max([len(str(r['image'])) for r in rows] + [5])
    header = f"{'rank':>4}  {'image':<{width}}  " + '  '.join(f'{m:>14}' for m in args.metric)
    print(header)
    print('-' * len(header))
    for k, r in enumerate(ordered, 1):
        cells = [f'{r[m]:>14.4f}' if m in r else f"{'FAILED':>14}" for m in args.metric]
        print(f"{k if first in r else '-':>4}  {str(r['image']):<{width}}  " + '  '.join(cells))
    print(f"(sorted best first by {first}; {'lower' if lower else 'higher'} is better)")
    if args.csv:
        print(f'Wrote {len(rows)} rows to {args.csv} (one per image as it was scored)')
    for label, name, message in failures:
        print(f'FAILED {label} [{name}]: {message}', file=sys.stderr)
    if interrupted:
        print(f'Interrupted after {len(rows)} of {len(items)} images' + (f'; their rows are in {args.csv}'
                                                                         if args.csv else '') + '.', file=sys.stderr)
        return 130
    if failures:
        bad = len({label for label, _, _ in failures})
        print(f'{len(failures)} score(s) failed on {bad} of {len(items)} images (other metrics kept).',
              file=sys.stderr)
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
