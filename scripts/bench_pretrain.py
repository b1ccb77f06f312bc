#!/usr/bin/env python
"""Pretext training throughput on CPU: pairs/s per configuration, and where step time goes.

    python scripts/bench_pretrain.py [-opt options/pretrain/crossiqa_tiny_cpu.yml] [--crops 128 224]
                                     [--threads 2] [--steps 6] [--variants base nofused compile] [--json F]

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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('-opt', default='options/pretrain/crossiqa_tiny_cpu.yml')
    p.add_argument('--crops', nargs='+', type=int, default=[128, 224])
    p.add_argument('--threads', nargs='+', type=int, default=[2])
    p.add_argument('--steps', type=int, default=6)
    p.add_argument('--variants', nargs='+', default=['base', 'nofused', 'noself'])
    p.add_argument('--json')
    args = p.parse_args()
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    opt = load_options(args.opt)
    t0 = time.time()
    rows = []
    for crop in args.crops:
        for threads in args.threads:
            for variant in args.variants:
                rows.append(time_variant(opt, variant, crop, args.steps, threads))
                r = rows[-1]
                print(f"crop {crop} threads {threads} {variant:>8}: {r['pairs_per_s']:.1f} pairs/s "
                      f"(step {r['step_s']:.2f} s, degradations {100 * r['degrade_share']:.0f}%)", flush=True)
    loading = {crop: time_loading(opt, crop) for crop in args.crops}
    print(f'\nwall time {time.time() - t0:.0f} s; batch {rows[0]["batch"]}\n')
    print('| crop | threads | variant | pairs/s | step (s) | degradation share | image loading (s/batch, uncached) |')
    print('|---|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['crop']} | {r['threads']} | {r['variant']} | {r['pairs_per_s']:.1f} | {r['step_s']:.2f} | "
              f"{100 * r['degrade_share']:.0f}% | {loading[r['crop']]:.2f} |")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'rows': rows, 'loading_s_per_batch': loading}, f, indent=1)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
