#!/usr/bin/env python
"""Inference speed and memory of ``crossiqa`` next to pyiqa's ``niqe`` and ``brisque``, same run, same CPU.

    TORCH_HOME=../shared/data/torch_home python scripts/bench_inference.py [--threads 2] [--json out.json]

Seconds per image at 512x384 and 1024x768 (median of repeats after a warm-up) and
peak resident memory while scoring one 4000x3000 image. Each (metric, size) runs in
its own process so that peak RSS belongs to that measurement alone.

``--ratio``: the bar of issue 13, CPU time per 500x500 photo relative to niqe, with every
metric in ONE process, interleaved round by round (the machine's speed drifts by 2x from
hour to hour, so only a same-process ratio means anything). Also times the crossiqa
variants worth keeping or not: channels-last memory format and ``torch.compile``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SIZES = [(384, 512), (768, 1024)]
LARGE = (3000, 4000)


def measure(metric: str, h: int, w: int, repeats: int, threads: int, weights: str | None) -> dict:
    """Runs in a child process: score a real photograph resized to h×w ``repeats`` times."""
    import resource

    import numpy as np
    import skimage.data
    import torch

    torch.set_num_threads(threads)
    import pyiqa

    import crossiqa_pyiqa  # noqa: F401

    kwargs = {}
    if metric.startswith('crossiqa'):
        from crossiqa_pyiqa.archs.crossiqa_arch import DEFAULT_WEIGHTS, default_weight_path

        if weights:
            kwargs['pretrained_model_path'] = weights
        elif not os.path.exists(default_weight_path(DEFAULT_WEIGHTS)):
            kwargs['pretrained'] = False  # same architecture, random weights: same cost
    m = pyiqa.create_metric(metric, device='cpu', **kwargs)
    arr = skimage.data.astronaut()
    x = torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.interpolate(x, size=(h, w), mode='bilinear', antialias=True).clamp(0, 1)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with torch.no_grad():
        m(x)  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            score = m(x)
            times.append(time.perf_counter() - t)
    return {'metric': metric, 'h': h, 'w': w, 'seconds': float(np.median(times)), 'score': float(score.item()),
            'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            'rss_before_mb': rss_before}


def ratio(metrics: list[str], rounds: int, threads: int, size: int = 500) -> dict:
    """CPU (process) and wall seconds per image, interleaved in one process; ratios to niqe."""
    import numpy as np
    import skimage.data
    import torch

    torch.set_num_threads(threads)
    import pyiqa

    import crossiqa_pyiqa  # noqa: F401

    x = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.interpolate(x, size=(size, size), mode='bilinear', antialias=True).clamp(0, 1)
    runners = {}
    for name in metrics:
        runners[name] = pyiqa.create_metric(name, device='cpu')
    crossiqa = runners.get('crossiqa')
    if crossiqa is not None:
        net = crossiqa.net
        runners['crossiqa channels-last'] = lambda im: net(im.contiguous(memory_format=torch.channels_last))
        compiled = torch.compile(net.forward_features, dynamic=False)
        runners['crossiqa torch.compile'] = lambda im: net.head(net.standardise(compiled(im)))
    cpu = {k: [] for k in runners}
    wall = {k: [] for k in runners}
    with torch.no_grad():
        for name, run in runners.items():  # warm-up (and compilation) outside the timing
            run(x)
        for _ in range(rounds):
            for name, run in runners.items():
                c, w = time.process_time(), time.perf_counter()
                run(x)
                cpu[name].append(time.process_time() - c)
                wall[name].append(time.perf_counter() - w)
    out = {k: {'cpu_s': float(np.median(cpu[k])), 'wall_s': float(np.median(wall[k]))} for k in runners}
    if 'niqe' in out:
        for k in out:
            out[k]['cpu_ratio_to_niqe'] = out[k]['cpu_s'] / out['niqe']['cpu_s']
            out[k]['wall_ratio_to_niqe'] = out[k]['wall_s'] / out['niqe']['wall_s']
    return {'size': size, 'rounds': rounds, 'threads': threads, 'rows': out}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('-m', '--metrics', nargs='+', default=['crossiqa', 'niqe', 'brisque'])
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--weights', help='CrossIQA weight file (default: the packaged model)')
    p.add_argument('--json', help='write the measurements here')
    p.add_argument('--ratio', action='store_true', help='CPU time per 500x500 photo vs niqe, one process')
    p.add_argument('--rounds', type=int, default=10, help='--ratio: interleaved rounds')
    p.add_argument('--child', nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.ratio:
        os.environ.setdefault('HF_HUB_OFFLINE', '1')
        t0 = time.time()
        result = ratio(list(dict.fromkeys(args.metrics + ['niqe'])), args.rounds, args.threads)
        print(f"{result['size']}x{result['size']} photo, {args.threads} threads, median of {args.rounds} interleaved "
              f'rounds in one process ({time.time() - t0:.0f} s)\n')
        print('| metric | CPU s/image | wall s/image | CPU time / niqe | wall time / niqe |')
        print('|---|---|---|---|---|')
        for k, r in result['rows'].items():
            print(f"| {k} | {r['cpu_s']:.3f} | {r['wall_s']:.3f} | {r.get('cpu_ratio_to_niqe', float('nan')):.2f} | "
                  f"{r.get('wall_ratio_to_niqe', float('nan')):.2f} |")
        if args.json:
            with open(args.json, 'w') as f:
                json.dump(result, f, indent=1)
        return 0
    if args.child:
        metric, h, w, repeats = args.child
        print(json.dumps(measure(metric, int(h), int(w), int(repeats), args.threads, args.weights)))
        return 0
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    rows = []
    t0 = time.time()
    for metric in args.metrics:
        for (h, w), repeats in [*[(s, args.repeats) for s in SIZES], (LARGE, 1)]:
            cmd = [sys.executable, __file__, '--threads', str(args.threads), '--child', metric, str(h), str(w),
                   str(repeats)] + (['--weights', args.weights] if args.weights else [])
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(f'{metric} at {w}x{h} failed:\n{out.stderr[-2000:]}', file=sys.stderr)
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{metric:>10} {w}x{h}: {r['seconds']:.3f} s/image, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    print(f'\nCPU threads: {args.threads}; wall time {time.time() - t0:.0f} s\n')
    print('| metric | s/image 512x384 | s/image 1024x768 | s/image 4000x3000 | peak RSS 4000x3000 (MB) |')
    print('|---|---|---|---|---|')
    for metric in args.metrics:
        r = {(x['w'], x['h']): x for x in rows if x['metric'] == metric}
        def cell(size: tuple[int, int], key: str, fmt: str) -> str:
            return fmt.format(r[size][key]) if size in r else 'n/a'

        print(f"| {metric} | {cell((512, 384), 'seconds', '{:.3f}')} | {cell((1024, 768), 'seconds', '{:.3f}')} | "
              f"{cell((4000, 3000), 'seconds', '{:.2f}')} | {cell((4000, 3000), 'peak_rss_mb', '{:.0f}')} |")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'threads': args.threads, 'rows': rows}, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
