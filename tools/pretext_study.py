#!/usr/bin/env python
"""Design-study tool: each pretext encoder against the frozen backbone under the same head.

    python tools/pretext_study.py --variant frozen \
        --variant stats=runs/crossiqa_lite0_stats/crossiqa_lite0_stats.safetensors \
        [--types kadid,camera] [--out runs/study] [--steps fit independent real_noise ranking efficient]

For every variant (``frozen`` = the ImageNet EfficientNet-Lite0 with no pretext; ``NAME=FILE`` = a
pretext weight file) the same head recipe is fitted: ridge on CLIVE + the synthetic ranking pairs of
``--types`` (default ``kadid,camera``: the 25 KADID types and the camera family, the head of every round
before the tone family; ``all`` adds the tone family; ``kadid``: the 25 only), from
``--regress`` (default options/regress/crossiqa_livec.yml); ``--photometric`` adds the input's photometric
statistics to every variant's features (``archs/photometric.py``). Then, in one run per step, every variant:

1. ``fit``: CLIVE, 10 seeded 80/20 splits (median SRCC / PLCC), head on all images
   (``scripts/fit_regressor.py``); the weight file is metric ``crossiqa-study-NAME``;
2. ``independent``: distortions implemented outside the library on scikit-image photos
   (``scripts/independent_check.py``);
3. ``levels``: the same kind of distortions, twelve of them at five strengths, as an L-test that neither the
   pretext nor the head's pairs have seen (``scripts/independent_check.py --levels``);
4. ``real_noise``: PolyU's 100 real noisy / clean pairs (``--polyu``);
5. ``ranking``: Kodak24 L / D tests per type (``--kodak``, 6 images, 256-px crops; nested level draws unless
   ``--ranking-level-draws independent``, the protocol before the seventh round of docs/ABLATIONS.md);
6. ``efficient``: the data-efficient probe with N = 25 and 50 labelled images.

Everything is written under ``--out`` (``study.md`` collects the tables and the commands; a later run into
the same folder appends its own, dated).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STEPS = ('fit', 'independent', 'levels', 'real_noise', 'ranking', 'efficient')


def parse_variant(text: str) -> tuple[str, str | None]:
    name, _, path = text.partition('=')
    if not name or (name != 'frozen' and not path):
        raise argparse.ArgumentTypeError(f'--variant is "frozen" or NAME=FILE, got {text!r}')
    if path and not os.path.isfile(path):
        raise argparse.ArgumentTypeError(f'--variant {name}: no file {path}')
    return name, path or None


def ranking_types(which: str) -> list[str]:
    """Comma-separated type names and group shorthands (``kadid``, ``camera``, ``tone``, ``all``)."""
    from crossiqa_pyiqa.degradations import resolve_types

    return resolve_types(which.split(','), '--types')


def absolute_layout(obj):
    """``datasets/...`` and ``runs/...`` strings as absolute paths, resolved like the options reader does
    (under ``$CROSSIQA_HOME`` when set, else the working directory): the study's subprocesses run with
    ``CROSSIQA_HOME`` pointing at the study's own weights folder."""
    from crossiqa_pyiqa.paths import resolve_tree

    def walk(o):
        if isinstance(o, dict):
            return {k: walk(v) for k, v in o.items()}
        if isinstance(o, list):
            return [walk(v) for v in o]
        if isinstance(o, str) and o.replace('./', '', 1).startswith(('datasets/', 'runs/')):
            return os.path.abspath(o)
        return o

    return walk(resolve_tree(obj))


def run(cmd: list[str], env: dict[str, str], log: list[str], capture: bool = True) -> str:
    text = ' '.join(shlex.quote(c) for c in cmd)
    print(f'\n$ {text}', flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, text=True, stdout=subprocess.PIPE if capture else None)
    minutes = (time.time() - t0) / 60
    if proc.returncode:
        raise SystemExit(f'command failed ({proc.returncode}): {text}')
    log.append(f'`{text}` ({minutes:.1f} min)')
    out = proc.stdout or ''
    print(out, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--variant', type=parse_variant, action='append', required=True)
    p.add_argument('--types', default='kadid,camera',
                   help='ranking-pair types of the head, names or shorthands: kadid,camera (default) | all | a,b,c')
    p.add_argument('--regress', default='options/regress/crossiqa_livec.yml')
    p.add_argument('--out', default='runs/study')
    p.add_argument('--polyu', default='datasets/polyu/CroppedImages')
    p.add_argument('--kodak', default='datasets/pristine/kodak24')
    p.add_argument('--steps', nargs='+', default=list(STEPS), choices=STEPS)
    p.add_argument('--ranking-level-draws', choices=('nested', 'independent'), default='nested')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--photometric', action='store_true',
                   help="the head also reads the input's photometric statistics (feature token 'photometric')")
    p.add_argument('--cache', default='runs/study_cache', help='feature cache shared by studies (per encoder and data)')
    p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE',
                   help='override regress options (as fit_regressor)')
    args = p.parse_args(argv)

    args.polyu, args.kodak = absolute_layout([args.polyu, args.kodak])
    out = Path(absolute_layout(args.out)).resolve()
    home = out / 'home'
    (home / 'weights').mkdir(parents=True, exist_ok=True)
    env = {**os.environ, 'CROSSIQA_HOME': str(home), 'HF_HUB_OFFLINE': '1',
           'OMP_WAIT_POLICY': os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')}
    env.setdefault('TORCH_HOME', str(ROOT.parent / 'shared' / 'data' / 'torch_home'))
    types = ranking_types(args.types)
    from crossiqa_pyiqa.optionfile import apply_overrides

    regress = absolute_layout(apply_overrides(yaml.safe_load((ROOT / args.regress).read_text()), args.set))
    regress['regression']['ranking']['types'] = types
    regress['cache_dir'] = str(Path(absolute_layout(args.cache)).resolve())
    # the efficient probe reads CLIVE as the fit does (same files: the feature cache is shared)
    livec = yaml.safe_load((ROOT / 'options/benchmark/datasets.yml').read_text())['livec']
    livec.update({k: regress['dataset'][k] for k in ('dataroot_target', 'meta_info_file')})
    data_opt = out / 'datasets.yml'
    data_opt.write_text(yaml.safe_dump({'livec': absolute_layout(livec)}, sort_keys=False))
    regress_file = out / 'regress.yml'
    regress_file.write_text(yaml.safe_dump(regress, sort_keys=False))
    names = [f'crossiqa-study-{n}' for n, _ in args.variant]
    py = sys.executable
    log: list[str] = []
    md = [f'# Pretext study ({time.strftime("%Y-%m-%d %H:%M")}, {os.cpu_count()} CPU threads)\n',
          f'Head: ridge on CLIVE + ranking pairs of {len(types)} types ({args.types}); regress options '
          f'{args.regress} (copied to {regress_file}).\n']

    if 'fit' in args.steps:
        rows = []
        for (name, path), metric in zip(args.variant, names):
            tokens = ['mean', 'std'] + (['cls'] if path else []) + (['photometric'] if args.photometric else [])
            tokens = '[' + ','.join(tokens) + ']'
            summary = out / f'fit_{name}.json'
            cmd = [py, 'scripts/fit_regressor.py', '-opt', str(regress_file), '--name', metric,
                   '--out', str(home / 'weights' / f'{metric}.safetensors'), '--summary', str(summary),
                   '--threads', str(args.threads), '--set', f'encoder.options.feature_tokens={tokens}']
            if path:
                cmd += ['--encoder', os.path.abspath(absolute_layout(path))]
            weight = home / 'weights' / f'{metric}.safetensors'
            if summary.is_file() and weight.is_file():  # fitted by an earlier (killed or partial) run
                print(f'{name}: reusing {summary}', flush=True)
            else:
                run(cmd, env, log)
            s = json.loads(summary.read_text())
            rows.append(f"| {name} | {s['srcc_median']:.4f} | {s['plcc_median']:.4f} |")
        md += ['## CLIVE, 10 splits (median)\n', '| variant | SRCC | PLCC |', '|---|---|---|', *rows, '']
    metrics_yml = out / f"metrics-{'-'.join(n for n, _ in args.variant)}.yml"  # one per run: runs may share --out
    metrics_yml.write_text(yaml.safe_dump({
        m: {'metric_opts': {'type': 'CrossIQA', 'pretrained_model_path': str(home / 'weights' / f'{m}.safetensors'),
                            'head': 'linear'},
            'metric_mode': 'NR', 'lower_better': False, 'ranking': str(regress_file)} for m in names}))
    if 'independent' in args.steps:
        md += ['## Independent distortions (clean photo wins, of 6)\n',
               run([py, 'scripts/independent_check.py', '-m', *names, '--threads', str(args.threads)], env, log)]
    if 'levels' in args.steps:
        md += ['## Independent distortions at five strengths (mean SRCC over 6 photos)\n',
               run([py, 'scripts/independent_check.py', '--levels', '-m', *names, '--threads', str(args.threads)],
                   env, log)]
    if 'real_noise' in args.steps:
        md += ['## Real camera noise (PolyU)\n',
               run([py, 'scripts/independent_check.py', '-m', *names, '--real_noise', args.polyu,
                    '--threads', str(args.threads)], env, log)]
    if 'ranking' in args.steps:
        run([py, 'scripts/benchmark.py', '--mode', 'ranking', '-m', *names, '--metric_opt', str(metrics_yml),
             '--pristine_dir', args.kodak, '--ranking_max_images', '6', '--ranking_crop', '256',
             '--ranking_types', *types, '--ranking_level_draws', args.ranking_level_draws,
             '--out_dir', str(out / 'ranking'), '--markdown', str(out / 'ranking.md'),
             '--threads', str(args.threads)], env, log)
        md += ['## Kodak L / D per type\n', (out / 'ranking.md').read_text()]
    if 'efficient' in args.steps:
        run([py, 'scripts/benchmark.py', '--mode', 'efficient', '-m', *names, '--metric_opt', str(metrics_yml),
             '-d', 'livec', '--data_opt', str(data_opt), '--efficient_sizes', '25', '50',
             '--out_dir', str(out / 'efficient'), '--markdown', str(out / 'efficient.md'),
             '--cache_dir', regress['cache_dir'],
             '--threads', str(args.threads)], env, log)
        md += ['## Data-efficient (CLIVE)\n', (out / 'efficient.md').read_text()]
    md += ['## Commands\n', *[f'- {c}' for c in log]]
    report = out / 'study.md'
    earlier = report.read_text() + '\n' if report.is_file() else ''  # a later run of other steps adds its tables
    report.write_text(earlier + '\n'.join(md) + '\n')
    print(f'{"appended to" if earlier else "wrote"} {report}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
