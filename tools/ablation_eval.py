#!/usr/bin/env python
"""The design study's evaluation (issue: make the learned features transfer; docs/ABLATIONS.md).

For one encoder (a pretext weight file or checkpoint, or a random initialisation)
this extracts a *superset* of features once — class token, patch-token mean and
standard deviation, of every encoder block, at native and half scale — and then
scores every feature set of interest by slicing it:

- CLIVE: 10 seeded 80/20 splits, ridge with alpha by CV inside each training split,
  median SRCC / PLCC (the regression stage's protocol, ``crossiqa_pyiqa.regression``);
- synthetic L-test on held-out pristine images (Kodak24, not used by the pretext):
  the ridge head fitted on all of CLIVE predicts the quality of each image degraded
  by every library type at levels 1..5; the SRCC between prediction and -level per
  (image, type), averaged.

    python tools/ablation_eval.py --encoder runs/v1/checkpoints/ckpt_00000400.pth --name v1 --minutes 20 \
        --options options/pretrain/crossiqa_tiny_cpu.yml --records docs/ablations/records.jsonl
    python tools/ablation_eval.py --random-seed 0 --name random --records docs/ablations/records.jsonl
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # see scripts/pretrain_crossiqa.py

import numpy as np  # noqa: E402
import torch  # noqa: E402

from probes import FEATURE_SETS, HEAD_SET, SCALES, TOKENS, feature_index, level_probe, per_type_probe  # noqa: E402



def load_network(args) -> torch.nn.Module:
    """CrossIQA with the superset feature config, from a weight file / checkpoint / seed."""
    from crossiqa_pyiqa.archs.crossiqa_arch import CrossIQA
    from crossiqa_pyiqa.regression.head import load_encoder
    from crossiqa_pyiqa.train.options import load_options

    if args.encoder and args.encoder.endswith('.pth'):  # a trainer checkpoint: rebuild from its options
        from crossiqa_pyiqa.train.trainer import read_checkpoint

        ckpt = read_checkpoint(args.encoder)  # weights_only=True: a crafted checkpoint cannot run code
        net_opt = {k: v for k, v in ckpt['options']['network'].items() if k != 'type'}
        net_opt.setdefault('img_size', ckpt['options']['datasets']['train']['crop_size'])
        net = CrossIQA(pretrained=False, **net_opt)
        net.load_state_dict({k[len('model.'):]: v for k, v in ckpt['model'].items() if k.startswith('model.')})
        args.steps = int(ckpt['step'])
    elif args.encoder:
        net = load_encoder(args.encoder)
        args.steps = net.info.get('steps')
    else:
        net_opt = {}
        if args.options:
            opt = load_options(args.options)
            net_opt = {k: v for k, v in opt['network'].items() if k != 'type'}
            net_opt.setdefault('img_size', opt['datasets']['train']['crop_size'])
        net = load_encoder(None, seed=args.random_seed, **net_opt)
        args.steps = 0
    depth = net.config['depth']
    sup = CrossIQA(pretrained=False, **{**net.config, 'feature_tokens': TOKENS,
                                        'feature_blocks': list(range(depth)), 'feature_scales': SCALES,
                                        'native_mode': args.native_mode})
    sup.encoder.load_state_dict(net.encoder.state_dict())
    sup.eval()
    return sup


def kodak_l_test(net, cols_by_set, heads, kodak: str, size: int, n_images: int, cache: Path) -> dict[str, float]:
    """Mean over (image, type) of SRCC(prediction, -level) with each feature set's CLIVE head."""
    from scipy.stats import spearmanr

    from crossiqa_pyiqa import degradations
    from crossiqa_pyiqa.regression.features import folder_images
    from pyiqa.utils import imread2tensor

    paths = folder_images(kodak)[:n_images]
    if cache.is_file():
        feats = np.load(cache, allow_pickle=False)['features']
    else:
        feats = []
        from tqdm import tqdm
        with torch.inference_mode():
            for i, p in enumerate(tqdm(paths, desc='L-test features', unit='img')):
                x = imread2tensor(p, rgb=True)[None]
                h, w = x.shape[-2:]
                x = x[:, :, (h - size) // 2:(h - size) // 2 + size, (w - size) // 2:(w - size) // 2 + size]
                versions = [x] + [degradations.apply(x, name, level, generator=torch.Generator().manual_seed(i))
                                  for name in degradations.DEGRADATIONS for level in range(1, 6)]
                feats.append(torch.cat([net.forward_features(v) for v in versions]).double().numpy())
        feats = np.stack(feats)  # (images, 1 + 25*5, F)
        np.savez(cache, features=feats)
    out = {}
    n_types = len(degradations.DEGRADATIONS)
    for name, cols in cols_by_set.items():
        pred = heads[name].predict(feats[:, :, cols].reshape(-1, len(cols))).reshape(feats.shape[0], -1)
        per_type = []
        for t in range(n_types):
            vals = [spearmanr(pred[i, 1 + 5 * t:1 + 5 * t + 5], -np.arange(1, 6)).statistic
                    for i in range(feats.shape[0])]
            per_type.append(np.nanmean(vals))
        out[name] = float(np.nanmean(per_type))
        out[f'{name} per type'] = dict(zip(degradations.DEGRADATIONS, map(float, per_type)))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--encoder', help='pretext weight file (.safetensors) or trainer checkpoint (.pth)')
    p.add_argument('--random-seed', type=int, default=0, help='random-init encoder when no --encoder')
    p.add_argument('--options', help='options file of the variant (recorded; sizes for a random encoder)')
    p.add_argument('--name', required=True, help='variant name in the records')
    p.add_argument('--minutes', type=float, default=0.0, help='pretraining wall-clock minutes of this encoder')
    p.add_argument('--livec', default='datasets/livec', help='CLIVE in pyiqa layout (python scripts/prepare_data.py livec)')
    p.add_argument('--kodak', default='datasets/pristine/kodak24', help='held-out pristine images')
    p.add_argument('--l-size', type=int, default=256, help='centre crop of the held-out images for the L-test')
    p.add_argument('--l-images', type=int, default=12, help='number of held-out images in the L-test')
    p.add_argument('--sets', nargs='+', default=list(FEATURE_SETS))
    p.add_argument('--cache', default='runs/ablation_cache')
    p.add_argument('--records', default='docs/ablations/records.jsonl')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--native-mode', choices=['tiles', 'interp'], default='tiles',
                   help='native-resolution scoring: tiles of the crop size, or interpolated position embeddings')
    args = p.parse_args()
    from crossiqa_pyiqa.paths import resolve

    for key in ('encoder', 'options', 'livec', 'kodak', 'cache', 'records'):
        setattr(args, key, resolve(getattr(args, key)))  # datasets/... and runs/... under $CROSSIQA_HOME
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    torch.set_num_threads(args.threads)
    t0 = time.time()

    from crossiqa_pyiqa.regression.datasets import build_iqa_dataset, dataset_records
    from crossiqa_pyiqa.regression.features import dataset_features
    from crossiqa_pyiqa.regression.protocol import linear_probe
    from crossiqa_pyiqa.regression.ridge import fit_ridge_cv
    from crossiqa_pyiqa.regression.splits import random_splits

    net = load_network(args)
    opt = {'name': 'livec', 'type': 'LIVEChallengeDataset', 'dataroot_target': f'{args.livec}/Images',
           'meta_info_file': f'{args.livec}/meta_info_LIVEChallengeDataset.csv', 'phase': 'test'}
    dataset = build_iqa_dataset(opt)
    records = dataset_records(dataset, opt)
    feats = dataset_features(net, dataset, records, cache_dir=args.cache)
    splits = random_splits(len(records), n_splits=10, train_ratio=0.8, seed=123)
    result = {'name': args.name, 'encoder': args.encoder or f'random seed {args.random_seed}',
              'options': args.options, 'minutes': args.minutes, 'steps': args.steps,
              'native_mode': args.native_mode,
              'date': datetime.now(timezone.utc).isoformat(timespec='seconds'),
              'commit': subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True,
                                       text=True).stdout.strip(), 'clive': {}}
    cols_by_set, heads = {}, {}
    for name in args.sets:
        cols = feature_index(net, FEATURE_SETS[name])
        r = linear_probe(feats[:, cols], records.mos, splits)
        result['clive'][name] = {'srcc': r.median('srcc'), 'plcc': r.median('plcc'), 'dim': int(len(cols))}
        cols_by_set[name] = cols
        heads[name] = fit_ridge_cv(feats[:, cols], records.mos)
        print(f"{args.name:>24} | {name:<34} | CLIVE SRCC {r.median('srcc'):.3f} PLCC {r.median('plcc'):.3f} "
              f"(dim {len(cols)})", flush=True)
    if args.kodak and os.path.isdir(args.kodak):
        key = f"{Path(str(args.encoder or 'random')).stem}-{args.name}-{args.steps}".replace(' ', '_')
        lt = kodak_l_test(net, cols_by_set, heads, args.kodak, args.l_size, args.l_images,
                          Path(args.cache) / f'ltest-{key}-{args.l_images}x{args.l_size}.npz')
        result['l_test'] = lt
        cache_file = Path(args.cache) / f'ltest-{key}-{args.l_images}x{args.l_size}.npz'
        lt_feats = np.load(cache_file, allow_pickle=False)['features']
        result['level_probe'] = {name: level_probe(lt_feats, cols) for name, cols in cols_by_set.items()}
        result['type_probe'] = {name: dict(zip(('within', 'pooled'), per_type_probe(lt_feats, cols)))
                                for name, cols in cols_by_set.items() if name in ('cls', HEAD_SET)}
        for name in args.sets:
            print(f"{args.name:>24} | {name:<34} | level probe SRCC (held-out images) "
                  f"{result['level_probe'][name]:.3f}", flush=True)
        for name in args.sets:
            print(f"{args.name:>24} | {name:<34} | L-test SRCC {lt[name]:.3f}", flush=True)
    result['seconds'] = time.time() - t0
    Path(args.records).parent.mkdir(parents=True, exist_ok=True)
    with open(args.records, 'a') as f:
        f.write(json.dumps(result) + '\n')
    print(f'recorded in {args.records} ({result["seconds"]:.0f} s)')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
