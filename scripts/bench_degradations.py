#!/usr/bin/env python
"""Throughput of the degradation library, and its strength-vs-level validation.

    python scripts/bench_degradations.py [--batch 32] [--size 224] [--threads 2] [--json OUT]
    python scripts/bench_degradations.py --validate [--size 128] [--json OUT]
    python scripts/bench_degradations.py --batch 16 --threads 1 --types white_noise jpeg camera \
        --repeat 7 --per-type-only

--types picks the types (names or the shorthands kadid, camera, all; default: the 25 KADID
types); --repeat N times every type N times, interleaved, and reports the median and the
minimum (robust to other jobs on the machine).

Benchmark: crops/s of ``apply`` per type on a (batch, 3, size, size) CPU batch, averaged
over levels 1-5 (total crops / total time), and of the mixed ``DegradationSampler``
(uniform weights, identity_prob 0.1, max_compose 1) producing 64 crops at a time (one
32-pair pretext batch), with torch's thread setting and with ``num_threads=1``. Validation: PSNR (and SSIM) to the original per type and level
on four ``skimage.data`` colour images, with a check that it falls strictly with level on
every image. Both print Markdown tables.

Wall-clock numbers need an otherwise idle machine; the CPU-time column (process time of
all threads, incl. the codec pool) is a rough guide when other jobs share the cores, and
the load average at start and end is printed for that reason.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
# As the project's training scripts (README "Training speed"): spinning OpenMP workers make a
# shared CPU crawl; passive waiting costs nothing on an idle machine. Set before torch loads.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from crossiqa_pyiqa.degradations import ALL_DEGRADATIONS, CODEC_DEGRADATIONS, DEGRADATIONS  # noqa: E402
from crossiqa_pyiqa.degradations import DegradationSampler, apply, resolve_types, set_codec_threads  # noqa: E402

IMAGES = ('astronaut', 'chelsea', 'coffee', 'rocket')


def skimage_image(name: str, size: int) -> torch.Tensor:
    """(1,3,size,size): centre square of a skimage.data colour image, area-resized."""
    import skimage.data

    im = torch.from_numpy(getattr(skimage.data, name)()[..., :3].copy())
    h, w = im.shape[:2]
    s = min(h, w)
    im = im[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    x = im.permute(2, 0, 1)[None].float() / 255
    return F.interpolate(x, size=(size, size), mode='area').clamp(0, 1)


def crop_batch(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """n random size x size crops from the skimage images (resized to 2*size first)."""
    g = torch.Generator().manual_seed(seed)
    pool = [skimage_image(name, 2 * size)[0] for name in IMAGES]
    out = []
    for i in range(n):
        im = pool[i % len(pool)]
        t, l = (int(v) for v in torch.randint(0, size + 1, (2,), generator=g))
        out.append(im[:, t:t + size, l:l + size])
    return torch.stack(out).contiguous()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float('inf') if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def bench(batch: int, size: int, reps: int, per_type_too: bool = True, types=DEGRADATIONS, repeat: int = 1,
          mixed: bool = True) -> dict:
    x = crop_batch(batch, size)
    per_type = {}
    names = list(types) if per_type_too else []
    for name in names:
        apply(x[:2], name, 3, generator=torch.Generator().manual_seed(0))      # warm-up
    runs: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for _ in range(repeat):                  # interleaved, so slow phases of a shared machine hit all types
        for name in names:
            t0, c0 = time.perf_counter(), time.process_time()
            for level in range(1, 6):
                apply(x, name, level, generator=torch.Generator().manual_seed(level))
            runs[name].append((time.perf_counter() - t0, time.process_time() - c0))
    for name in names:
        dt = statistics.median(r[0] for r in runs[name])
        dc = statistics.median(r[1] for r in runs[name])
        per_type[name] = {'crops_per_s': 5 * batch / dt, 'ms_per_crop': 1000 * dt / (5 * batch),
                          'cpu_ms_per_crop': 1000 * dc / (5 * batch),
                          'ms_per_batch': 1000 * dt / 5, 'cpu_ms_per_batch': 1000 * dc / 5,
                          'cpu_ms_per_batch_min': 1000 * min(r[1] for r in runs[name]) / 5, 'repeat': repeat}
        print(f'  {name:24s} {per_type[name]["crops_per_s"]:8.1f} crops/s', file=sys.stderr)
    out = {'per_type': per_type}
    if not mixed:
        return out
    x64 = crop_batch(64, size, seed=1)
    for key, threads in (('mixed', None), ('mixed_1thread', 1)):
        if key == 'mixed_1thread' and torch.get_num_threads() == 1:
            continue
        sampler = DegradationSampler(identity_prob=0.1, num_threads=threads)
        g = torch.Generator().manual_seed(0)
        sampler(x64[:8], g)                                                      # warm-up
        times, cpu = [], []
        for _ in range(reps):
            t0, c0 = time.perf_counter(), time.process_time()
            sampler(x64, g)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        out[key] = {'crops_per_s': 64 * len(times) / sum(times), 's_per_64_mean': statistics.mean(times),
                    's_per_64_median': statistics.median(times), 's_per_64_min': min(times),
                    's_per_64_max': max(times), 'cpu_s_per_64_median': statistics.median(cpu), 'reps': reps}
    return out


def print_bench(res: dict, args: argparse.Namespace) -> None:
    print(f'Batch {args.batch}, {args.size}x{args.size} crops, torch.set_num_threads({args.threads}), '
          f'codec threads {args.threads}, OMP_WAIT_POLICY={os.environ.get("OMP_WAIT_POLICY", "")}, CPU only.\n')
    rep = max((r.get('repeat', 1) for r in res['per_type'].values()), default=1)
    if rep > 1:
        print(f'Per type: median of {rep} interleaved runs (CPU min in the last column).\n')
    print(f'| # | type | impl | crops/s | ms/crop (wall) | ms/crop (CPU) | ms/batch of {args.batch} (wall) | '
          f'ms/batch (CPU) | ms/batch (CPU, min) |')
    print('|---|---|---|---:|---:|---:|---:|---:|---:|')
    for i, name in enumerate(ALL_DEGRADATIONS, 1):
        if name not in res['per_type']:
            continue
        r = res['per_type'][name]
        impl = ('Pillow codec' if name in ('jpeg', 'jpeg2000') else 'torch + JPEG') if name in CODEC_DEGRADATIONS \
            else 'torch'
        print(f'| {i} | {name} | {impl} | {r["crops_per_s"]:.0f} | {r["ms_per_crop"]:.2f} | '
              f'{r["cpu_ms_per_crop"]:.2f} | {r["ms_per_batch"]:.1f} | {r["cpu_ms_per_batch"]:.1f} | '
              f'{r["cpu_ms_per_batch_min"]:.1f} |')
    labels = {'mixed': f'mixed sampler (uniform, identity_prob 0.1), {args.threads} thread(s)',
              'mixed_1thread': 'mixed sampler, `num_threads=1`'}
    for key, label in labels.items():
        if key in res:
            m = res[key]
            print(f'| | **{label}** | | **{m["crops_per_s"]:.0f}** | {1000 / m["crops_per_s"]:.2f} | '
                  f'{1000 * m["cpu_s_per_64_median"] / 64:.2f} |')
    print()
    for key, label in labels.items():
        if key in res:
            m = res[key]
            print(f'{label}: 64 crops in {m["s_per_64_median"]:.3f} s median ({m["s_per_64_min"]:.3f} min, '
                  f'{m["s_per_64_mean"]:.3f} mean, {m["s_per_64_max"]:.3f} max) over {m["reps"]} batches, '
                  f'{m["cpu_s_per_64_median"]:.3f} s CPU time median (target: well under 0.8 s).')


def validate(size: int, use_ssim: bool = True, types=DEGRADATIONS) -> dict:
    imgs = {n: skimage_image(n, size) for n in IMAGES}
    ssim = None
    if use_ssim:
        import pyiqa

        ssim = pyiqa.create_metric('ssim', device='cpu', as_loss=False)
    res = {}
    for name in types:
        rows = {}
        for iname, x in imgs.items():
            ys = [apply(x, name, lv, generator=torch.Generator().manual_seed(0)) for lv in range(1, 6)]
            ps = [psnr(y, x) for y in ys]
            ss = [float(ssim(y, x)) for y in ys] if ssim is not None else []
            rows[iname] = {'psnr': ps, 'ssim': ss}
        res[name] = rows
    return res


def _strict(v: list[float]) -> bool:
    return all(a > b for a, b in zip(v, v[1:]))


def print_validate(res: dict, size: int) -> None:
    print(f'PSNR (dB) to the original, mean over {", ".join(IMAGES)} ({size}x{size} centre crops, '
          f'seed 0); "strict" = PSNR falls strictly 1->5 on every image; SSIM (pyiqa) likewise.\n')
    print('| type | L1 | L2 | L3 | L4 | L5 | PSNR strict | SSIM L1 -> L5 | SSIM strict |')
    print('|---|---:|---:|---:|---:|---:|:---:|---|:---:|')
    for name in res:
        rows = res[name]
        mean = [statistics.mean(r['psnr'][i] for r in rows.values()) for i in range(5)]
        ok = all(_strict(r['psnr']) for r in rows.values())
        has_ssim = all(r['ssim'] for r in rows.values())
        if has_ssim:
            smean = [statistics.mean(r['ssim'][i] for r in rows.values()) for i in range(5)]
            sok = all(_strict(r['ssim']) for r in rows.values())
            stxt, sflag = ' / '.join(f'{v:.3f}' for v in smean), 'yes' if sok else '**no**'
        else:
            stxt, sflag = '-', '-'
        print(f'| {name} | ' + ' | '.join(f'{v:.1f}' for v in mean) +
              f' | {"yes" if ok else "**no**"} | {stxt} | {sflag} |')


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--size', type=int, default=None, help='crop size (default 224; 128 with --validate)')
    ap.add_argument('--threads', type=int, default=2, help='torch and codec threads')
    ap.add_argument('--reps', type=int, default=20, help='mixed-sampler batches to time')
    ap.add_argument('--json', type=Path, default=None, help='also write the results as JSON')
    ap.add_argument('--mixed-only', action='store_true', help='benchmark only the mixed sampler')
    ap.add_argument('--validate', action='store_true', help='print the PSNR/SSIM-vs-level table instead')
    ap.add_argument('--no-ssim', action='store_true', help='with --validate: PSNR only')
    ap.add_argument('--types', nargs='+', default=['kadid'],
                    help='types to time / validate: names or the shorthands kadid (default), camera, all')
    ap.add_argument('--repeat', type=int, default=1, help='per-type timings: interleaved runs (median, min)')
    ap.add_argument('--per-type-only', action='store_true', help='skip the mixed-sampler benchmark')
    args = ap.parse_args(argv)
    try:
        types = resolve_types(args.types, '--types')
    except ValueError as error:
        ap.error(str(error))
    if args.repeat < 1:
        ap.error('--repeat must be >= 1')
    torch.set_num_threads(args.threads)
    set_codec_threads(args.threads)
    load0 = os.getloadavg() if hasattr(os, 'getloadavg') else (float('nan'),) * 3
    t0 = time.time()
    if args.validate:
        args.size = args.size or 128
        res = validate(args.size, not args.no_ssim, types)
        print_validate(res, args.size)
    else:
        args.size = args.size or 224
        res = bench(args.batch, args.size, args.reps, not args.mixed_only, types, args.repeat,
                    mixed=not args.per_type_only)
        print_bench(res, args)
    wall = time.time() - t0
    load = os.getloadavg() if hasattr(os, 'getloadavg') else (float('nan'),) * 3
    print(f'\nWall time {wall:.1f} s; torch {torch.__version__}, {platform.processor() or platform.machine()}, '
          f'{os.cpu_count()} logical CPUs, CUDA {"available" if torch.cuda.is_available() else "not available"}; '
          f'load average at start {load0[0]:.1f}, at end {load[0]:.1f}.')
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({'args': {k: str(v) for k, v in vars(args).items()}, 'results': res,
                                         'wall_s': wall, 'loadavg_start': load0, 'loadavg_end': load,
                                         'omp_wait_policy': os.environ.get('OMP_WAIT_POLICY', '')},
                                        indent=1))


if __name__ == '__main__':
    main()
