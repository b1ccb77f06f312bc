"""Pristine-vs-distorted check with distortions implemented outside this project.

The L/D tests (``benchmark.py --mode ranking``) use the project's own degradation
library, which also made the head's ranking pairs. This check uses Pillow's JPEG and
Gaussian blur and numpy's Gaussian noise on scikit-image's full-size photos, so it
shows what a metric does with distortions it never saw implemented this way:

    TORCH_HOME=../shared/data/torch_home python scripts/independent_check.py -m crossiqa niqe brisque

For each metric and distortion: on how many photos the clean version scores better.
"""
from __future__ import annotations

import argparse
import io
import os
import sys

os.environ.setdefault('HF_HUB_OFFLINE', '1')

PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'immunohistochemistry', 'retina')


def distortions(rgb):
    """Name -> uint8 RGB array; JPEG and blur by Pillow, noise by numpy (seeded)."""
    import numpy as np
    from PIL import Image, ImageFilter

    pil = Image.fromarray(rgb)
    out = {}
    for quality in (30, 10):
        buf = io.BytesIO()
        pil.save(buf, 'JPEG', quality=quality)
        out[f'jpeg q{quality}'] = np.asarray(Image.open(buf).convert('RGB'))
    rng = np.random.default_rng(0)
    for sigma in (5, 10, 25):
        out[f'noise σ{sigma}'] = np.clip(rgb + rng.normal(0, sigma, rgb.shape), 0, 255).astype(np.uint8)
    for radius in (1, 3):
        out[f'blur r{radius}'] = np.asarray(pil.filter(ImageFilter.GaussianBlur(radius)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('-m', nargs='+', default=['crossiqa', 'niqe', 'brisque'], help='pyiqa metric names')
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args(argv)

    import numpy as np
    import pyiqa
    import torch
    from skimage import data

    import crossiqa_pyiqa  # noqa: F401  (registers the plugin's metrics)

    torch.set_num_threads(args.threads)

    def tensor(rgb: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255

    photos = {name: getattr(data, name)() for name in PHOTOS}
    rows = []
    for metric_name in args.m:
        metric = pyiqa.create_metric(metric_name, device='cpu')
        sign = -1.0 if metric.lower_better else 1.0
        wins: dict[str, int] = {}
        for rgb in photos.values():
            clean = sign * float(metric(tensor(rgb)))
            for name, distorted in distortions(rgb).items():
                wins[name] = wins.get(name, 0) + int(clean > sign * float(metric(tensor(distorted))))
        rows.append((metric_name, wins))
        print(f'{metric_name}: {wins}', file=sys.stderr, flush=True)
    names = list(rows[0][1])
    print(f'Clean photo scored better than its distorted version, of {len(photos)} scikit-image photos:\n')
    print('| metric | ' + ' | '.join(names) + ' |')
    print('|---|' + '---|' * len(names))
    for metric_name, wins in rows:
        print(f'| {metric_name} | ' + ' | '.join(str(wins[n]) for n in names) + ' |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
