#!/usr/bin/env python
"""Unsupervised Cross-IQA pretext training (DESIGN §2.1).

    python scripts/pretrain_crossiqa.py -opt options/pretrain/crossiqa_debug.yml
    torchrun --nproc_per_node 2 scripts/pretrain_crossiqa.py -opt options/pretrain/crossiqa_tiny_cpu.yml

Also trains GRepQ's low-level encoder (``task: grepq_lowlevel`` options): one trainer for both.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

# OpenMP threads that spin while waiting make a shared CPU crawl (measured 15x slower steps with
# other jobs running, see README "Training speed"); passive waiting costs nothing on an idle machine.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

from crossiqa_pyiqa.paths import resolve
from crossiqa_pyiqa.train.options import apply_overrides, dict2str, load_options


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('-opt', '--opt', required=True, help='options YAML (pyiqa style)')
    p.add_argument('--data', nargs='+', help='folders of unlabelled images (override datasets.train.dataroots)')
    p.add_argument('--out', help='output folder (default: runs/<name>)')
    p.add_argument('--max-steps', type=int, help='override train.total_iter')
    p.add_argument('--stop-after', type=int, help='stop (with a checkpoint) after this many steps of this run; '
                   'the schedule still follows train.total_iter')
    p.add_argument('--resume', help="'auto' (latest checkpoint in the output folder) or a checkpoint path")
    p.add_argument('--summary', help='write a JSON summary of the run here')
    p.add_argument('--export', help='weight file to write at the end (default: <out>/<name>.safetensors)')
    p.add_argument('--export-only', action='store_true',
                   help='no training: export the checkpoint given by --resume (e.g. a run stopped early)')
    p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE',
                   help='override any option, e.g. train.optim.lr=1e-4 datasets.train.crop_size=96')
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for key in ('out', 'resume', 'summary', 'export'):
        setattr(args, key, resolve(getattr(args, key)))  # runs/... (and datasets/...) under $CROSSIQA_HOME
    opt = load_options(args.opt)
    overrides = list(args.set)
    if args.data:
        overrides.append(f'datasets.train.dataroots={json.dumps(args.data)}')
    if args.max_steps is not None:
        overrides.append(f'train.total_iter={args.max_steps}')
    opt = apply_overrides(opt, overrides)
    out = args.out or resolve(f"runs/{opt.get('name', 'pretrain')}")

    from crossiqa_pyiqa.train.trainer import Trainer

    trainer = Trainer(opt, out, resume=args.resume)
    if trainer.is_main:
        os.makedirs(out, exist_ok=True)
        print(f'Options:{dict2str(opt)}', flush=True)
    if args.export_only:
        if not args.resume:
            raise SystemExit('--export-only needs --resume auto|CHECKPOINT')
        path = trainer.export(args.export or os.path.join(out, f"{opt.get('name', 'model')}.safetensors"),
                              {'note': f'exported from a checkpoint at step {trainer.step} of '
                                       f"{opt['train']['total_iter']}"})
        print(f'exported step {trainer.step} to {path}')
        trainer.close()
        return 0
    summary = trainer.train(stop_after=args.stop_after)
    if not summary['interrupted']:
        summary['export'] = trainer.export(args.export or os.path.join(out, f"{opt.get('name', 'model')}.safetensors"),
                                           {'pairs_per_s': summary['pairs_per_s'], 'seconds': summary['seconds']})
    if trainer.is_main:
        print(json.dumps({k: v for k, v in summary.items() if k not in ('param_checksums', 'losses')}, indent=1), flush=True)
        if args.summary:
            with open(args.summary, 'w') as f:
                json.dump(summary, f, indent=1)
    trainer.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
