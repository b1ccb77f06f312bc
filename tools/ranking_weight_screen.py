#!/usr/bin/env python
"""Screen ranking-pair weightings of the head against PolyU's real noise, the library's Kodak L-test and
distortions made elsewhere (a design-study tool).

    python tools/ranking_weight_screen.py [--encoder FILE] [--types all] [--smooth-grain] \\
        --config '0.5' --config '0.5 camera_grain:4 camera_grain*4' [--probe] [--kodak] [--levels]

For one encoder (default: the frozen ImageNet Lite0 of ``options/regress/crossiqa_livec.yml``;
``--encoder FILE``: a pretext export, read with ``q``), CLIVE features and the synthetic ranking
pairs of ``--types`` are extracted once (cached under ``runs/cache``). Each ``--config`` is
``WEIGHT [TYPE:W ...] [TYPE*M ...]``: the pairs' total weight, per-type weights (as
``regression.ranking.type_weights``) and per-type margin factors. For each, the head is fitted
on all of CLIVE + the pairs and scored on PolyU's 100 real noisy / clean pairs (fraction with
the clean image higher); ``--probe`` adds CLIVE's 10-split median SRCC (slow: 10 fits each).
``--smooth-grain`` adds a pair set of ``camera_grain`` on 2x upscaled crops (pixel-smooth
content, as in full-resolution camera photos), type ``grain_smooth``.

``--kodak`` adds the Kodak L-test of ``--types`` (the study's ``ranking`` step: 6 images, 256-px centre crops,
nested level draws; mean L over ``--kodak-mean-types``, default the 33 types of the earlier rounds, and how many of
them fall below 0.85). ``--levels`` adds ``scripts/independent_check.py --levels`` on its four camera photos
(distortions made with Pillow / numpy, never with the library). Both are scored with the same features as the
head (``forward_features`` at native size), so a head costs one solve, not one metric run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

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


def kodak_features(net, folder: str, types: list[str], crop: int = 256, n_images: int = 6):
    """Features of the Kodak L-test items and the items: ``scripts/benchmark.py --mode ranking`` as the study runs
    it (nested draws, the benchmark's default seed), so the draws of random-sign types are the study's."""
    from crossiqa_pyiqa.benchmark.ranking import DegradedReader, load_degradations, pristine_paths, ranking_items
    from crossiqa_pyiqa.benchmark.runner import BenchmarkConfig
    from crossiqa_pyiqa.paths import resolve

    _, apply_fn = load_degradations()
    paths = pristine_paths(resolve(folder), n_images)
    items = ranking_items(len(paths), types)
    reader = DegradedReader(paths, crop, apply_fn, types, seed=BenchmarkConfig.seed, level_draws='nested')
    with torch.inference_mode():
        feats = [net.forward_features(reader(it)) for it in tqdm(items, desc='Kodak L-test items')]
    return torch.cat(feats).double().numpy(), items


def ladder_features(net, photos: dict[str, np.ndarray] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """``{photo: {ladder: (5, d) features}}`` for ``independent_check --levels`` (default: its camera photos)."""
    from independent_check import LADDERS, NATURAL_PHOTOS, ladder
    from skimage import data

    if photos is None:
        photos = {name: getattr(data, name)() for name in NATURAL_PHOTOS}
    out = {}
    with torch.inference_mode():
        for photo, rgb in tqdm(photos.items(), desc='--levels photos'):
            out[photo] = {name: torch.cat([net.forward_features(
                torch.from_numpy(np.array(x)).permute(2, 0, 1)[None].float() / 255) for x in ladder(rgb, name)])
                .double().numpy() for name in LADDERS}
    return out


def levels_l(score, feats: dict[str, dict[str, np.ndarray]]) -> dict[str, float]:
    """Per ladder, the mean over photos of ``independent_check.ladder_srcc`` (as ``levels_check`` computes it)."""
    from independent_check import ladder_srcc

    names = list(next(iter(feats.values())))
    out = {}
    for name in names:
        out[name] = float(np.mean([ladder_srcc(score(f[name])) for f in feats.values()]))
    out['all'] = float(np.mean(list(out.values())))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--encoder')
    p.add_argument('--regress', default='options/regress/crossiqa_livec.yml')
    p.add_argument('--types', default='all')
    p.add_argument('--polyu', default='datasets/polyu/CroppedImages')
    p.add_argument('--config', action='append', type=parse_config, required=True)
    p.add_argument('--smooth-grain', action='store_true')
    p.add_argument('--probe', action='store_true')
    p.add_argument('--kodak', nargs='?', const='datasets/pristine/kodak24', default=None, metavar='DIR')
    p.add_argument('--kodak-mean-types', default='kadid,camera')
    p.add_argument('--levels', action='store_true')
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
    opt['regression']['ranking']['types'] = args.types.split(',')
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
    if args.kodak:
        from crossiqa_pyiqa.benchmark.ranking import ranking_tests, ranking_types

        kodak_types = ranking_types(args.types.split(','))
        mean_types = [t for t in ranking_types(args.kodak_mean_types.split(',')) if t in kodak_types]
        kf, kitems = kodak_features(net, args.kodak, kodak_types)
    lf = ladder_features(net) if args.levels else None
    alpha = select_alpha(feats, records.mos, reg['alphas'], reg['cv_folds'], reg['seed'], reg['cv_scoring'])
    types = np.asarray(pairs.types)
    header = ['weight', 'type weights', 'margin factors', 'PolyU clean preferred', 'pairs misordered']
    header += ['CLIVE SRCC (10 splits)'] if args.probe else []
    header += ['Kodak L (mean)', 'types < 0.85'] if args.kodak else []
    header += ['--levels camera photos'] if args.levels else []
    print('| ' + ' | '.join(header) + ' |\n|' + '---|' * len(header))
    details = []
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
        if args.kodak:
            tests = ranking_tests(kitems, m.predict(kf), lower_better=False)
            low = [t for t in mean_types if tests[t]['l_srcc'] < 0.85]
            line += f" {np.mean([tests[t]['l_srcc'] for t in mean_types]):.3f} | {len(low)} |"
            details.append(('Kodak L', f'{weight} {tw or ""} {tm or ""}',
                            {t: tests[t]['l_srcc'] for t in kodak_types if tests[t]['l_srcc'] < 0.85}))
        if args.levels:
            lv = levels_l(m.predict, lf)
            line += f" {lv['all']:.3f} |"
            details.append(('--levels', f'{weight} {tw or ""} {tm or ""}', lv))
        print(line, flush=True)
    for what, config, values in details:
        print(f'\n{what}, config "{config.strip()}": ' + ', '.join(f'{k} {v:.2f}' for k, v in values.items()))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
