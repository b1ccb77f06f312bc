"""Folder throughput: ``crossiqa-pyiqa score -t FOLDER`` against pyiqa's own loop, same metric, one run.

    python scripts/bench_folder.py [--n 500] [-m crossiqa] [--size 1024x768] [--workers N]

Writes ``--n`` JPEG photos (crops of scikit-image's photos, mirrored out to the size, each a
different crop) into a temporary folder, then times, in this order and in one process tree:

1. pyiqa's loop: ``metric = pyiqa.create_metric(m); for p in paths: metric(p)``
2. the CLI: ``python -m crossiqa_pyiqa.cli score -q -t FOLDER -m m --csv out.csv`` (a subprocess;
   its start-up, metric build and CSV writing are included)

and prints both rates and their ratio (CLI time / pyiqa time).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault('HF_HUB_OFFLINE', '1')
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

import numpy as np  # noqa: E402
import skimage.data  # noqa: E402
from PIL import Image  # noqa: E402

PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'immunohistochemistry', 'retina', 'hubble_deep_field')


def make_folder(folder: str, n: int, w: int, h: int) -> list[str]:
    rng = np.random.default_rng(0)
    sources = []
    for name in PHOTOS:
        arr = getattr(skimage.data, name)()
        reps = (-(-2 * h // arr.shape[0]) + 1, -(-2 * w // arr.shape[1]) + 1, 1)
        big = np.tile(np.concatenate([arr, arr[:, ::-1]], axis=1), reps)
        sources.append(big)
    paths = []
    for i in range(n):
        big = sources[i % len(sources)]
        y, x = int(rng.integers(0, big.shape[0] - h)), int(rng.integers(0, big.shape[1] - w))
        path = os.path.join(folder, f'photo_{i:04d}.jpg')
        Image.fromarray(np.ascontiguousarray(big[y:y + h, x:x + w])).save(path, quality=90)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--n', type=int, default=500)
    parser.add_argument('-m', '--metric', default='crossiqa')
    parser.add_argument('--size', default='1024x768')
    parser.add_argument('--workers', type=int, default=None, help="the CLI's --workers (default: its own)")
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split('x'))
    import torch

    import crossiqa_pyiqa  # noqa: F401
    import pyiqa

    with tempfile.TemporaryDirectory() as folder:
        t = time.time()
        paths = make_folder(folder, args.n, w, h)
        print(f'{args.n} photos {w}x{h} written in {time.time() - t:.0f} s; torch threads {torch.get_num_threads()}')
        t = time.time()
        metric = pyiqa.create_metric(args.metric, device='cpu')
        for p in paths:
            metric(p)
        t_pyiqa = time.time() - t
        print(f'pyiqa loop : {t_pyiqa:7.1f} s  {args.n / t_pyiqa:6.2f} images/s (metric build included)')
        cmd = [sys.executable, '-m', 'crossiqa_pyiqa.cli', 'score', '-q', '--device', 'cpu', '-t', folder, '-m',
               args.metric, '--csv', os.path.join(folder, 'out.csv')]
        if args.workers is not None:
            cmd += ['--workers', str(args.workers)]
        t = time.time()
        res = subprocess.run(cmd, capture_output=True, text=True)
        t_cli = time.time() - t
        if res.returncode != 0:
            print(res.stderr[-2000:])
        print(f'CLI        : {t_cli:7.1f} s  {args.n / t_cli:6.2f} images/s (process start-up included), '
              f'exit {res.returncode}')
        print(f'ratio CLI / pyiqa time: {t_cli / t_pyiqa:.2f}')


if __name__ == '__main__':
    main()
