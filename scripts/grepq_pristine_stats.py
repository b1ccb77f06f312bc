#!/usr/bin/env python
"""Pristine statistics for GRepQ's zero-shot score, and the weight file that carries them.

    python scripts/grepq_pristine_stats.py --weights runs/grepq/ll_cpu/grepq_ll_cpu.safetensors \
        --pristine datasets/pristine --out crossiqa_pyiqa/weights/grepq_ll.safetensors --dtype float16
    python scripts/grepq_pristine_stats.py --random-seed 0 --out runs/grepq/random_ll.safetensors  # baseline

Builds the sharp-and-colourful 96×96 patch bank of the pristine folder (DESIGN §3), fits the
Gaussian of the low-level features, writes the file (optionally with weight matrices in
float16/bfloat16 to keep the packaged file small) and checks that scores survive the dtype
round trip: the reloaded file must give the same Q_L as the float32 network on pristine
images and on blurred/noisy versions of them, within ``--tolerance``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault('HF_HUB_OFFLINE', '1')

DTYPES = {'float32': None, 'float16': 'float16', 'bfloat16': 'bfloat16'}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--weights', help='GRepQ weight file with the trained low-level encoder')
    src.add_argument('--random-seed', type=int, help='randomly initialised encoder (baseline, DESIGN §5)')
    p.add_argument('--pristine', nargs='+', default=['datasets/pristine'], help='pristine image folders')
    p.add_argument('--out', required=True, help='weight file to write')
    p.add_argument('--dtype', choices=sorted(DTYPES), default='float16', help='storage dtype of weight matrices')
    p.add_argument('--sharpness-ratio', type=float, default=0.75)
    p.add_argument('--colour-ratio', type=float, default=0.8)
    p.add_argument('--check-images', type=int, default=6, help='pristine images used for the round-trip check')
    p.add_argument('--tolerance', type=float, default=1e-3, help='max |ΔQ_L| allowed by the round trip')
    p.add_argument('--threads', type=int, default=2)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from crossiqa_pyiqa.paths import resolve

    args.pristine = [resolve(d) for d in args.pristine]  # datasets/... under $CROSSIQA_HOME
    import torch

    torch.set_num_threads(args.threads)
    from crossiqa_pyiqa import degradations
    from crossiqa_pyiqa.archs.grepq_arch import GRepQ
    from crossiqa_pyiqa.grepq.pristine import fit_pristine_statistics
    from crossiqa_pyiqa.train.data import list_images

    t0 = time.time()
    if args.weights:
        net = GRepQ(pretrained_model_path=args.weights, head='linear')
        source = {'encoder_file': os.path.abspath(args.weights)}
    else:
        torch.manual_seed(args.random_seed)
        net = GRepQ(pretrained=False, head='linear')
        source = {'encoder_random_seed': args.random_seed, 'stage': 'random-init baseline'}
    net.eval()
    paths = list_images(args.pristine)
    mean, cov, meta = fit_pristine_statistics(net.ll, paths, net.config['patch_size'], args.sharpness_ratio,
                                              args.colour_ratio)
    with torch.no_grad():
        net.pristine_mean.copy_(mean)
        net.pristine_cov.copy_(cov)
    info = {**source, **meta, 'has_pristine_stats': True, 'pristine_dir': [os.path.abspath(d) for d in args.pristine],
            'pristine_date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}
    dtype = getattr(torch, DTYPES[args.dtype]) if DTYPES[args.dtype] else None
    out = net.save_pretrained(args.out, info, dtype=dtype)

    # Round trip: the file as pyiqa loads it vs. the float32 network it was written from.
    from pyiqa.utils import imread2tensor

    reloaded = GRepQ(pretrained_model_path=out, head='zeroshot')
    net.head_type = 'zeroshot'
    step = max(1, len(paths) // max(1, args.check_images))
    diffs, scores = [], []
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for path in paths[::step][:args.check_images]:
            x = imread2tensor(path, rgb=True)[None]
            for name, level in (('none', 0), ('gaussian_blur', 4), ('white_noise', 4)):
                y = x if level == 0 else degradations.apply(x, name, level, generator=g)
                a, b = net(y).item(), reloaded(y).item()
                diffs.append(abs(a - b))
                scores.append({'image': os.path.basename(path), 'distortion': name, 'q_fp32': a, 'q_file': b})
    worst = max(diffs)
    report = {'out': out, 'bytes': os.path.getsize(out), 'storage_dtype': args.dtype, **meta,
              'roundtrip_max_abs_diff': worst, 'tolerance': args.tolerance, 'seconds': round(time.time() - t0, 1),
              'scores': scores}
    print(json.dumps(report, indent=1))
    if worst > args.tolerance:
        print(f'grepq_pristine_stats: error: {args.dtype} storage changes Q_L by {worst:.2e} > {args.tolerance:.0e}; '
              'use --dtype float32', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
