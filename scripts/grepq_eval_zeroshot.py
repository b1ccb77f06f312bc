#!/usr/bin/env python
"""Zero-shot SRCC/PLCC/KRCC of a GRepQ metric on a labelled NR dataset (no labels used for scoring).

    python scripts/grepq_eval_zeroshot.py --metric grepq-ll-zs --out runs/grepq/eval/livec_ll_zs
    python scripts/grepq_eval_zeroshot.py --metric grepq-ll-zs \
        --weights runs/grepq/random_ll.safetensors --out runs/grepq/eval/livec_ll_zs_random

Images are read by pyiqa's dataset class (CLIVE: ``LIVEChallengeDataset``, which drops the
7 training images t1..t7) at their native size and scored through
``pyiqa.create_metric``. Per-image scores go to ``<out>/scores.csv`` as they are computed,
so an interrupted run resumes; the correlations use pyiqa's ``calculate_srcc`` etc.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

os.environ.setdefault('HF_HUB_OFFLINE', '1')

LIVEC = {'name': 'livec', 'type': 'LIVEChallengeDataset', 'dataroot_target': 'datasets/livec/Images',
         'meta_info_file': 'datasets/livec/meta_info_LIVEChallengeDataset.csv', 'phase': 'test'}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--metric', default='grepq-ll-zs', help='pyiqa metric name (grepq-ll-zs, grepq-zs, ...)')
    p.add_argument('--weights', help='weight file (pretrained_model_path); default: the metric\'s own')
    p.add_argument('--clip-model-path',
                   help='CLIP RN50 checkpoint for grepq-zs (default ~/.cache/clip/RN50.pt; downloaded if missing)')
    p.add_argument('--clip-url', help="where a missing CLIP file is downloaded from (default OpenAI's RN50 "
                   'URL; this script sets HF_HUB_OFFLINE=1 unless the environment says otherwise: run with '
                   'HF_HUB_OFFLINE=0 to download)')
    p.add_argument('--dataroot', default=LIVEC['dataroot_target'])
    p.add_argument('--meta-info', default=LIVEC['meta_info_file'])
    p.add_argument('--dataset-type', default=LIVEC['type'])
    p.add_argument('--limit', type=int, help='score only the first N images (smoke tests)')
    p.add_argument('--out', required=True, help='output folder (scores.csv, summary.json)')
    p.add_argument('--threads', type=int, default=2)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    import crossiqa_pyiqa  # noqa: F401  (registers the plugin's metrics)
    import pyiqa
    from pyiqa.metrics.correlation_coefficient import calculate_krcc, calculate_plcc, calculate_srcc

    from crossiqa_pyiqa.archs.grepq_arch import GREPQ_METRICS
    from crossiqa_pyiqa.registration import register_metric
    from crossiqa_pyiqa.regression.datasets import build_iqa_dataset, dataset_records

    for name, cfg in GREPQ_METRICS.items():  # until registration.register() adds them
        register_metric(name, cfg['metric_opts'], cfg['lower_better'], cfg['score_range'])
    opts = {}
    if args.weights:
        opts['pretrained_model_path'] = args.weights
    if args.clip_model_path:
        opts['clip_model_path'] = args.clip_model_path
    if args.clip_url:
        opts['clip_url'] = args.clip_url
    metric = pyiqa.create_metric(args.metric, device='cpu', **opts)
    data_opt = {**LIVEC, 'dataroot_target': args.dataroot, 'meta_info_file': args.meta_info,
                'type': args.dataset_type}
    dataset = build_iqa_dataset(data_opt)
    records = dataset_records(dataset, data_opt)
    n = min(len(records), args.limit or len(records))

    os.makedirs(args.out, exist_ok=True)
    scores_file = os.path.join(args.out, 'scores.csv')
    done: dict[str, float] = {}
    if os.path.isfile(scores_file):
        with open(scores_file) as f:
            done = {row['path']: float(row['score']) for row in csv.DictReader(f)}
    t0, new = time.time(), 0
    with open(scores_file, 'a', newline='') as f:
        writer = csv.writer(f)
        if not done:
            writer.writerow(['path', 'mos', 'score'])
        for i in range(n):
            path = records.paths[i]
            if path in done:
                continue
            with torch.inference_mode():
                score = float(metric(dataset[i]['img'][None]).item())
            writer.writerow([path, records.mos[i], score])
            f.flush()
            done[path] = score
            new += 1
            if new % 50 == 0:
                rate = (time.time() - t0) / new
                print(f'{len(done)}/{n} images, {rate:.2f} s/image', flush=True)
    seconds = time.time() - t0
    pred = np.array([done[p] for p in records.paths[:n]])
    mos = records.mos[:n]
    sign = -1.0 if metric.lower_better else 1.0
    try:  # VQEG 4-parameter logistic before PLCC, as pyiqa's benchmarks report it
        plcc_logistic = float(calculate_plcc(sign * pred, mos, fit_scale='logistic_4params'))
    except (RuntimeError, TypeError, ValueError):
        plcc_logistic = None
    summary = {
        'metric': args.metric, 'weights': args.weights or 'metric default', 'dataset': records.name,
        'n_images': int(n), 'srcc': float(calculate_srcc(sign * pred, mos)),
        'plcc': float(calculate_plcc(sign * pred, mos)), 'krcc': float(calculate_krcc(sign * pred, mos)),
        'plcc_logistic': plcc_logistic,
        'seconds_this_run': round(seconds, 1), 'seconds_per_image': round(seconds / max(new, 1), 3),
        'images_scored_this_run': new, 'threads': args.threads,
        'command': 'python ' + ' '.join([sys.argv[0]] + list(argv if argv is not None else sys.argv[1:])),
    }
    with open(os.path.join(args.out, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
