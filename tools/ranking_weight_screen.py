#!/usr/bin/env python
"""Screen ranking-pair weightings of the head against PolyU's real noise (a design-study tool).

    python tools/ranking_weight_screen.py [--encoder FILE] [--types all] [--smooth-grain] \\
        --config '0.5' --config '0.5 camera_grain:4 camera_grain*4' [--probe]

For one encoder (default: the frozen ImageNet Lite0 of ``options/regress/crossiqa_livec.yml``;
``--encoder FILE``: a pretext export, read with ``q``), CLIVE features and the synthetic ranking
pairs of ``--types`` are extracted once (cached under ``runs/cache``). Each ``--config`` is
``WEIGHT [TYPE:W ...] [TYPE*M ...]``: the pairs' total weight, per-type weights (as
``regression.ranking.type_weights``) and per-type margin factors. For each, the head is fitted
on all of CLIVE + the pairs and scored on PolyU's 100 real noisy / clean pairs (fraction with
the clean image higher); ``--probe`` adds CLIVE's 10-split median SRCC (slow: 10 fits each).
``--smooth-grain`` adds a pair set of ``camera_grain`` on 2x upscaled crops (pixel-smooth
content, as in full-resolution camera photos), type ``grain_smooth``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'scripts'))


def parse_config(text: str) -> tuple[float, dict[str, float], dict[str, float]]:
    parts = text.split()
    weights, margins = {}, {}
    for item in parts[1:]:
        if ':' in item:
            k, v = item.split(':', 1)
            weights[k] = float(v)
        elif '*' in item:
            k, v = item.split('*', 1)
            margins[k] = float(v)
        else:
            raise argparse.ArgumentTypeError(f'config item {item!r} is neither TYPE:W nor TYPE*M')
    return float(parts[0]), weights, margins


def smooth_grain_pairs(net, n: int = 150, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    from crossiqa_pyiqa.degradations import apply
    from crossiqa_pyiqa.inputs import read_image
    from crossiqa_pyiqa.paths import resolve
    from crossiqa_pyiqa.regression.features import folder_images

    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    imgs = [p for d in ('datasets/pristine/bsds500', 'datasets/pristine/mcmaster') for p in folder_images(resolve(d))]
    imgs = [imgs[i] for i in rng.choice(len(imgs), n, replace=False)]
    diffs, levels = [], []
    with torch.inference_mode():
        for p in imgs:
            x = read_image(p)[None]
            h, w = x.shape[-2:]
            y0, x0 = int(rng.integers(0, h - 128)), int(rng.integers(0, w - 128))
            x = torch.nn.functional.interpolate(x[..., y0:y0 + 128, x0:x0 + 128], scale_factor=2, mode='bicubic',
                                                align_corners=False).clamp(0, 1)
            lv = int(rng.integers(1, 4))
            grain = apply(x, 'camera_grain', lv, generator=gen)
            diffs.append((net.forward_features(x) - net.forward_features(grain))[0])
            levels.append(lv)
    return torch.stack(diffs).double().numpy(), np.array(levels)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--encoder')
    p.add_argument('--regress', default='options/regress/crossiqa_livec.yml')
    p.add_argument('--types', default='all')
    p.add_argument('--polyu', default='datasets/polyu/CroppedImages')
    p.add_argument('--config', action='append', type=parse_config, required=True)
    p.add_argument('--smooth-grain', action='store_true')
    p.add_argument('--probe', action='store_true')
    p.add_argument('--threads', type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from independent_check import find_pairs

    from crossiqa_pyiqa.inputs import read_image
    from crossiqa_pyiqa.optionfile import load_options
    from crossiqa_pyiqa.regression.features import dataset_features
    from crossiqa_pyiqa.regression.fit import build_encoder, protocol_data
    from crossiqa_pyiqa.regression.protocol import linear_probe
    from crossiqa_pyiqa.regression.ranking_pairs import RankingPairs, ranking_pairs
    from crossiqa_pyiqa.regression.ridge import RankingRows, fit_ridge, select_alpha

    opt = load_options(args.regress)
    if args.encoder:
        opt['encoder']['options']['feature_tokens'] = ['mean', 'std', 'cls']
    opt['regression']['ranking']['types'] = args.types
    reg, dataset, all_records, records, keep, splits = protocol_data(opt)
    net, _ = build_encoder(opt, args.encoder)
    feats = dataset_features(net, dataset, all_records, opt.get('cache_dir'))[keep]
    pairs = ranking_pairs(net, reg['ranking'], opt.get('cache_dir'))
    polyu = find_pairs(args.polyu)  # scripts/independent_check.py: the pairing --real_noise uses
    with torch.inference_mode():
        def features(paths) -> np.ndarray:
            return torch.cat([net.forward_features(read_image(str(f))[None]) for f in paths]).double().numpy()

        pn, pc = features([n for _, n, _ in polyu]), features([c for _, _, c in polyu])
    if args.smooth_grain:
        d, lv = smooth_grain_pairs(net)
        better = np.zeros(len(pairs)) if pairs.better_levels is None else pairs.better_levels
        pairs = RankingPairs(diffs=np.concatenate([pairs.diffs, d]), levels=np.concatenate([pairs.levels, lv]),
                             types=list(pairs.types) + ['grain_smooth'] * len(lv),
                             better_levels=np.concatenate([better, np.zeros(len(lv))]))
    alpha = select_alpha(feats, records.mos, reg['alphas'], reg['cv_folds'], reg['seed'], reg['cv_scoring'])
    types = np.asarray(pairs.types)
    print('| weight | type weights | margin factors | PolyU clean preferred | pairs misordered |'
          + (' CLIVE SRCC (10 splits) |' if args.probe else ''))
    print('|---|---|---|---|---|' + ('---|' if args.probe else ''))
    for weight, tw, tm in args.config:
        scale = np.sqrt(np.array([tw.get(t, 1.0) for t in types]))
        factor = np.array([tm.get(t, 1.0) for t in types])
        margins = pairs.margins(reg['ranking'].margin_per_level) * factor * scale
        rows = RankingRows(pairs.diffs * scale[:, None], margins, weight)
        m = fit_ridge(feats, records.mos, alpha, rows)
        polyu = float((((pc - pn) / m.std) @ m.coef > 0).mean())
        wrong = float(((((pairs.diffs / m.std) @ m.coef) <= 0)).mean())
        line = f'| {weight} | {tw or "-"} | {tm or "-"} | {polyu:.2f} | {wrong:.3f} |'
        if args.probe:
            probe = linear_probe(feats, records.mos, splits, [alpha], 2, reg['seed'], reg['cv_scoring'], ranking=rows)
            line += f" {probe.median('srcc'):.4f} |"
        print(line, flush=True)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
