"""Score of the shipped ``crossiqa`` against image width around ``max_pixels`` (where whole-image reading
turns into tiles): the current blended/weighted tiles next to bf77cb4's plain tile mean.

    python scripts/measure_tiles.py [--height 800] [--widths 2880:3776:32]

A real photo (scikit-image's astronaut) mirrored out to each size, no resampling.
"""
from __future__ import annotations

import argparse
import math
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


def wide(h: int, w: int) -> torch.Tensor:
    arr = skimage.data.astronaut()
    reps = (math.ceil(h / arr.shape[0]) + 1, math.ceil(w / arr.shape[1]) + 1, 1)
    tiled = np.tile(np.concatenate([arr, arr[:, ::-1]], axis=1), reps)[:h, :w]
    return torch.from_numpy(np.ascontiguousarray(tiled)).permute(2, 0, 1)[None].float() / 255


def old_score(net, x: torch.Tensor) -> float:
    """bf77cb4: whole image up to max_pixels, above it the plain mean of patch-aligned tiles."""
    h, w = x.shape[-2:]
    if h * w <= net.config['max_pixels']:
        f = net._encode_features(x)
    else:
        tile = max(net.min_input_size, int(math.sqrt(net.config['max_pixels'])) // 32 * 32)
        tiles, _ = net._tiles(x, tile)
        f = torch.cat([net._encode_features(t[None]) for t in tiles]).mean(0, keepdim=True)
    return net.head(net.standardise(f)).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--height', type=int, default=800)
    parser.add_argument('--widths', default='2880:3776:32', help='start:stop:step (stop excluded)')
    args = parser.parse_args()
    net = pyiqa.create_metric('crossiqa', device='cpu').net
    start, stop, step = (int(v) for v in args.widths.split(':'))
    x_all = wide(args.height, stop)
    limit = net.config['max_pixels']
    print(f'max_pixels {limit}; blend up to {(1 + net.TILE_BLEND) * limit:.0f} pixels; height {args.height}')
    print(f"{'width':>6} {'pixels':>9} {'mode':>6} {'new':>9} {'old':>9} {'new step':>9} {'old step':>9}")
    prev = None
    worst_new = worst_old = 0.0
    t0 = time.time()
    with torch.no_grad():
        for w in range(start, stop, step):
            x = x_all[..., :w]
            n = args.height * w
            mode = 'whole' if n <= limit else ('blend' if n < (1 + net.TILE_BLEND) * limit else 'tiles')
            new, old = net(x).item(), old_score(net, x)
            if prev is not None:
                worst_new, worst_old = max(worst_new, abs(new - prev[0])), max(worst_old, abs(old - prev[1]))
                print(f'{w:>6} {n:>9} {mode:>6} {new:>9.4f} {old:>9.4f} {new - prev[0]:>+9.4f} {old - prev[1]:>+9.4f}')
            else:
                print(f'{w:>6} {n:>9} {mode:>6} {new:>9.4f} {old:>9.4f}')
            prev = (new, old)
    print(f'largest change between neighbouring widths ({step} px): new {worst_new:.4f}, old {worst_old:.4f} '
          f'({time.time() - t0:.0f} s)')


if __name__ == '__main__':
    main()
