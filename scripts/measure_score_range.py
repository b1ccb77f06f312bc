"""The real output range of a shipped metric over many random crops of real photographs.

    python scripts/measure_score_range.py [-m crossiqa] [--crops 400] [--seed 0]

Square and oblong crops with sides drawn from 64 to 1024 px (capped by the photo) of
scikit-image's natural colour photographs, taken at native scale (never resized). Prints
the distribution and the share above 100 / below 0 (the CLIVE MOS scale's ends).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault('HF_HUB_OFFLINE', '1')
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

import numpy as np  # noqa: E402
import skimage.data  # noqa: E402
import torch  # noqa: E402

import crossiqa_pyiqa  # noqa: E402,F401
import pyiqa  # noqa: E402

PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'immunohistochemistry', 'retina', 'hubble_deep_field',
          'stereo_motorcycle')


def photos() -> dict[str, np.ndarray]:
    out = {}
    for name in PHOTOS:
        arr = getattr(skimage.data, name)()
        out[name] = arr[0] if isinstance(arr, tuple) else arr
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-m', '--metric', default='crossiqa')
    parser.add_argument('--crops', type=int, default=400)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    metric = pyiqa.create_metric(args.metric, device='cpu')
    rng = np.random.default_rng(args.seed)
    imgs = photos()
    names = sorted(imgs)
    rows, t0 = [], time.time()
    with torch.no_grad():
        for _ in range(args.crops):
            name = names[int(rng.integers(len(names)))]
            arr = imgs[name]
            h = int(rng.integers(64, min(1024, arr.shape[0]) + 1))
            w = int(rng.integers(64, min(1024, arr.shape[1]) + 1)) if rng.random() < 0.5 else min(h, arr.shape[1])
            y, x = int(rng.integers(0, arr.shape[0] - h + 1)), int(rng.integers(0, arr.shape[1] - w + 1))
            crop = np.ascontiguousarray(arr[y:y + h, x:x + w])
            t = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
            rows.append((metric(t).item(), name, h, w))
    s = np.array([r[0] for r in rows])
    print(f'{args.metric}: {len(s)} crops (64-1024 px sides) of {len(names)} photos, {time.time() - t0:.0f} s')
    print(f'min {s.min():.2f}  p1 {np.percentile(s, 1):.2f}  p25 {np.percentile(s, 25):.2f}  median '
          f'{np.median(s):.2f}  p75 {np.percentile(s, 75):.2f}  p99 {np.percentile(s, 99):.2f}  max {s.max():.2f}')
    print(f'above 100: {(s > 100).mean():.1%}   below 0: {(s < 0).mean():.1%}')
    for side in ((64, 128), (128, 256), (256, 512), (512, 1025)):
        sel = np.array([side[0] <= min(r[2], r[3]) < side[1] for r in rows])
        if sel.any():
            print(f'  short side {side[0]}-{side[1] - 1}: n={sel.sum():>3} min {s[sel].min():7.2f} max {s[sel].max():7.2f}'
                  f'  above 100: {(s[sel] > 100).mean():.0%}')
    worst = sorted(rows, reverse=True)[:3] + sorted(rows)[:3]
    print('extremes:', '; '.join(f'{v:.1f} ({n} {h}x{w})' for v, n, h, w in worst))


if __name__ == '__main__':
    main()
