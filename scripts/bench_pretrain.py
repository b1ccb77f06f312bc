#!/usr/bin/env python
"""Pretext training throughput on CPU: pairs/s per configuration, and where step time goes.

    python scripts/bench_pretrain.py [-opt options/pretrain/crossiqa_tiny_cpu.yml] [--crops 128 224]
                                     [--threads 2] [--steps 6] [--variants base nofused compile] [--json F]
    python scripts/bench_pretrain.py -opt options/pretrain/crossiqa_lite0_cpu.yml --crops 224 --variants base \
        --cached options/pretrain/crossiqa_lite0_stats.yml
    python scripts/bench_pretrain.py -opt options/pretrain/crossiqa_lite0_cpu.yml --set network.trainable_stages=7 \
        --crops 224 --variants base --steps 4 --cached options/pretrain/crossiqa_lite0_stats.yml

``--cached OPT`` also times a cached pretext (``task: crossiqa_cached_pretext``) in the same run:
building its view cache (degradations + frozen stages, per view) and its training steps, and
reports pairs per CPU hour with the cache build amortised over the run that OPT plans
(``train.total_iter`` x batch pairs drawn from ``crops`` x ``views`` cached views), against
the first row.

Each variant times full training steps (degradation sampling + forward + backward +
AdamW) on random crops after a warm-up step, and separately the degradation part
and the data loading part (decoding + cropping real images), so the share of a
step that is not the model is visible. Variants:
  base     timm blocks with fused attention (torch scaled_dot_product_attention)
  nofused  the same blocks with timm's explicit attention (softmax(QK^T)V)
  compile  torch.compile of the model (inductor)
  noself   without the self-reconstruction terms (cross terms only)
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from crossiqa_pyiqa.train.options import apply_overrides, load_options
from crossiqa_pyiqa.train.tasks import build_task


def time_variant(opt: dict, variant: str, crop: int, steps: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    opt = apply_overrides(opt, [f'datasets.train.crop_size={crop}', f'network.img_size={crop}'])
    if variant == 'noself':
        opt = apply_overrides(opt, ['train.loss.self_weight=0'])
    torch.manual_seed(0)
    task = build_task(opt)
    if variant == 'nofused':
        for m in task.modules():
            if hasattr(m, 'fused_attn'):
                m.fused_attn = False
    if variant == 'compile':
        task.model = torch.compile(task.model)
    optim = torch.optim.AdamW(task.parameters(), lr=1e-4)
    batch = int(opt['datasets']['train']['batch_size_per_gpu'])
    crops = (torch.rand(batch, 3, crop, crop) * 255).to(torch.uint8)
    step_times, degrade_times = [], []
    for i in range(steps + 1):
        g = torch.Generator().manual_seed(i)
        t = time.perf_counter()
        loss, _ = task(crops, g)
        optim.zero_grad()
        loss.backward()
        optim.step()
        if i:  # first step is warm-up (and compilation)
            step_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        task.degrade(crops, torch.Generator().manual_seed(i))
        if i:
            degrade_times.append(time.perf_counter() - t)
    step, deg = float(np.median(step_times)), float(np.median(degrade_times))
    return {'variant': variant, 'crop': crop, 'batch': batch, 'threads': threads, 'step_s': step,
            'pairs_per_s': batch / step, 'degrade_s': deg, 'degrade_share': deg / step}


def time_loading(opt: dict, crop: int, batches: int = 5) -> float:
    """Seconds to load one batch of real crops (cache disabled: includes decoding)."""
    from crossiqa_pyiqa.train.data import RandomCropDataset, list_images

    d = opt['datasets']['train']
    roots = d['dataroots'] if isinstance(d['dataroots'], list) else [d['dataroots']]
    ds = RandomCropDataset(list_images(roots), crop, cache_images=False)
    batch = int(d['batch_size_per_gpu'])
    t = time.perf_counter()
    for b in range(batches):
        torch.stack([ds[b * batch + i] for i in range(batch)])
    return (time.perf_counter() - t) / batches


def time_cached(opt: dict, steps: int, threads: int, crops: int = 8) -> dict:
    """Seconds per cached view (build) and per training step of a crossiqa_cached_pretext options file."""
    import tempfile

    from crossiqa_pyiqa.train import cached_pretext  # noqa: F401  (registers the task)
    from crossiqa_pyiqa.train.data import RandomCropDataset

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    task = build_task(opt)
    d = opt['datasets']['train']
    views, crop = int(d['view_cache'].get('views', 8)), int(d['crop_size'])
    images = (torch.rand(crops, crop + 32, crop + 32, 3) * 255).to(torch.uint8).numpy()
    with tempfile.TemporaryDirectory() as folder:
        from PIL import Image

        paths = []
        for i, arr in enumerate(images):
            paths.append(os.path.join(folder, f'{i}.png'))
            Image.fromarray(arr).save(paths[-1])
        dataset = RandomCropDataset(paths, crop, seed=0)
        make = task._shard_maker(dataset, views)
        task.model.eval()
        make(0, 1)  # warm-up
        t = time.perf_counter()
        shard = make(0, crops)
        build_per_view = (time.perf_counter() - t) / (crops * views)
    task.model.train()
    from crossiqa_pyiqa.train.view_cache import CachedPairDataset

    pairs = CachedPairDataset(shard)
    batch = int(d['batch_size_per_gpu'])
    optim = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-4)
    step_times = []
    for i in range(steps + 1):
        items = [pairs[i * batch + j] for j in range(batch)]
        b = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        t = time.perf_counter()
        loss, _ = task(b)
        optim.zero_grad()
        loss.backward()
        optim.step()
        if i:
            step_times.append(time.perf_counter() - t)
    step = float(np.median(step_times))
    planned_pairs = int(opt['train']['total_iter']) * batch
    cached_views = int(d['view_cache'].get('crops', 2048)) * views
    amortised = step / batch + build_per_view * cached_views / planned_pairs
    return {'variant': 'cached', 'crop': crop, 'batch': batch, 'threads': threads, 'step_s': step,
            'pairs_per_s': batch / step, 'build_s_per_view': build_per_view, 'planned_pairs': planned_pairs,
            'cached_views': cached_views, 'amortised_pairs_per_s': 1 / amortised}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('-opt', default='options/pretrain/crossiqa_tiny_cpu.yml')
    p.add_argument('--crops', nargs='+', type=int, default=[128, 224])
    p.add_argument('--threads', nargs='+', type=int, default=[2])
    p.add_argument('--steps', type=int, default=6)
    p.add_argument('--variants', nargs='+', default=['base', 'nofused', 'noself'])
    p.add_argument('--json')
    p.add_argument('--cached', help='options of a cached pretext to time in the same run (see above)')
    p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE',
                   help='override -opt options, e.g. network.trainable_stages=7 (stages 1-6 trainable)')
    args = p.parse_args()
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    opt = apply_overrides(load_options(args.opt), args.set)
    t0 = time.time()
    rows = []
    for crop in args.crops:
        for threads in args.threads:
            for variant in args.variants:
                rows.append(time_variant(opt, variant, crop, args.steps, threads))
                r = rows[-1]
                print(f"crop {crop} threads {threads} {variant:>8}: {r['pairs_per_s']:.1f} pairs/s "
                      f"(step {r['step_s']:.2f} s, degradations {100 * r['degrade_share']:.0f}%)", flush=True)
    cached = None
    if args.cached:
        cached = time_cached(load_options(args.cached), args.steps, args.threads[0])
        base = rows[0]['pairs_per_s']
        print(f"cached {args.cached}: steps {cached['pairs_per_s']:.1f} pairs/s ({cached['pairs_per_s'] / base:.1f}x "
              f"the first row), view cache {1000 * cached['build_s_per_view']:.0f} ms/view, amortised over the "
              f"planned run ({cached['planned_pairs']} pairs from {cached['cached_views']} views): "
              f"{cached['amortised_pairs_per_s']:.1f} pairs/s = {cached['amortised_pairs_per_s'] / base:.1f}x; "
              f"pairs per CPU hour {3600 * base:.0f} -> {3600 * cached['amortised_pairs_per_s']:.0f}", flush=True)
    loading = {crop: time_loading(opt, crop) for crop in args.crops}
    print(f'\nwall time {time.time() - t0:.0f} s; batch {rows[0]["batch"]}\n')
    print('| crop | threads | variant | pairs/s | step (s) | degradation share | image loading (s/batch, uncached) |')
    print('|---|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['crop']} | {r['threads']} | {r['variant']} | {r['pairs_per_s']:.1f} | {r['step_s']:.2f} | "
              f"{100 * r['degrade_share']:.0f}% | {loading[r['crop']]:.2f} |")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'rows': rows, 'cached': cached, 'loading_s_per_batch': loading}, f, indent=1)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
