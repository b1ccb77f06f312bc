#!/usr/bin/env python
"""CLIVE probe of several encoders' features, alone and concatenated (design study, docs/ABLATIONS.md).

Each ``--encoder NAME=SPEC`` is a CrossIQA weight file, or ``frozen`` (the ImageNet backbone of
the regression options, no pretext). Features of CLIVE and of the synthetic ranking pairs are
read from the regression stage's cache (computed and cached when missing), so the protocol is
exactly ``scripts/fit_regressor.py``'s: 10 seeded 80/20 splits, alpha by CV inside each training
split, median SRCC/PLCC, with the ranking pairs of the options (``--plain``: without).

    python tools/concat_probe.py -opt options/regress/crossiqa_livec.yml \
        --encoder frozen=frozen pretext=runs/lite2/crossiqa_lite2_cpu.safetensors --concat frozen+pretext
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('-opt', required=True, help='regression options (dataset, encoder options, regression)')
    p.add_argument('--encoder', nargs='+', required=True, metavar='NAME=SPEC',
                   help="NAME=weight file, or NAME=frozen for the options' encoder without a file")
    p.add_argument('--concat', nargs='*', default=[], metavar='A+B', help='feature concatenations to probe')
    p.add_argument('--plain', action='store_true', help='plain ridge (no ranking pairs)')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--json', help='write the results here')
    args = p.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    import crossiqa_pyiqa  # noqa: F401
    from crossiqa_pyiqa.options import load_options
    from crossiqa_pyiqa.regression.features import dataset_features
    from crossiqa_pyiqa.regression.fit import build_encoder, protocol_data
    from crossiqa_pyiqa.regression.protocol import linear_probe
    from crossiqa_pyiqa.regression.ranking_pairs import ranking_pairs
    from crossiqa_pyiqa.regression.ridge import RankingRows

    opt = load_options(args.opt, kind='regress')
    reg, dataset, all_records, records, keep, splits = protocol_data(opt)
    ranking = None if args.plain else reg['ranking']
    feats, pairs = {}, {}
    for item in args.encoder:
        name, _, spec = item.partition('=')
        net, _ = build_encoder(opt, None if spec == 'frozen' else spec)
        feats[name] = dataset_features(net, dataset, all_records, opt.get('cache_dir'))[keep]
        if ranking is not None:
            pairs[name] = ranking_pairs(net, ranking, opt.get('cache_dir'))
    sets = {name: [name] for name in feats}
    sets.update({combo: combo.split('+') for combo in args.concat})
    results = {}
    for label, parts in sets.items():
        missing = [x for x in parts if x not in feats]
        if missing:
            p.error(f'--concat {label}: unknown encoder(s) {missing}')
        t0 = time.time()
        x = np.concatenate([feats[n] for n in parts], axis=1)
        rows = None
        if ranking is not None:
            rows = RankingRows(np.concatenate([pairs[n].diffs for n in parts], axis=1),
                               pairs[parts[0]].margins(ranking.margin_per_level), ranking.weight)
        r = linear_probe(x, records.mos, splits, reg['alphas'], reg['cv_folds'], reg['seed'], reg['cv_scoring'],
                         ranking=rows)
        results[label] = {'dim': int(x.shape[1]), 'srcc_median': r.median('srcc'), 'plcc_median': r.median('plcc'),
                          'seconds': round(time.time() - t0, 1)}
        print(f"{label:30s} dim {x.shape[1]:6d}  SRCC {results[label]['srcc_median']:.4f}  "
              f"PLCC {results[label]['plcc_median']:.4f}", flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'head': 'ridge' if ranking is None else 'ridge+ranking', 'results': results}, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
