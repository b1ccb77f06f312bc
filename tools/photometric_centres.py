#!/usr/bin/env python
"""The typical values ``archs/photometric.py`` measures deviations from: medians over pristine photos.

    python tools/photometric_centres.py [--dirs datasets/pristine/bsds500 datasets/pristine/mcmaster]

Kodak24 is left out by default: it is the L-test's held-out set.
"""
from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    from crossiqa_pyiqa.archs.photometric import PHOTOMETRIC_CENTRES, photometric_core, pixel_moments
    from crossiqa_pyiqa.image_files import find_images
    from crossiqa_pyiqa.inputs import read_image
    from crossiqa_pyiqa.paths import resolve

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dirs', nargs='+', default=['datasets/pristine/bsds500', 'datasets/pristine/mcmaster'])
    args = parser.parse_args()
    paths = [p for d in args.dirs for p in find_images(resolve(d))]
    if not paths:
        raise SystemExit(f'no images under {args.dirs}')
    values: dict[str, list[float]] = {name: [] for name in PHOTOMETRIC_CENTRES}
    for path in paths:
        core = photometric_core(pixel_moments(read_image(path)[None]).mean(dim=(2, 3)))
        for name in values:
            values[name].append(float(core[name][0]))
    print(f'{len(paths)} photos from {args.dirs}')
    for name, v in values.items():
        print(f'{name}: median {np.median(v):.3f} (now {PHOTOMETRIC_CENTRES[name]}), '
              f'10-90 % {np.percentile(v, 10):.3f} .. {np.percentile(v, 90):.3f}')


if __name__ == '__main__':
    main()
