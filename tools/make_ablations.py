#!/usr/bin/env python
"""Render the design study's records (``tools/ablation_eval.py`` output) as tables and a plot.

    python tools/make_ablations.py [--records docs/ablations/records.jsonl] [--out docs/ablations/generated.md]

Writes a Markdown fragment (one row per evaluated encoder and feature set) that
docs/ABLATIONS.md includes verbatim, and ``docs/ablations/srcc_vs_minutes.png``:
CLIVE SRCC against pretraining minutes for each variant, with the random
encoder as a horizontal line.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--records', default='docs/ablations/records.jsonl')
    p.add_argument('--out', default='docs/ablations/generated.md')
    p.add_argument('--plot', default='docs/ablations/srcc_vs_minutes.png')
    p.add_argument('--main-set', default='cls+mean+std mid+last 2 scales', help='feature set used for the plot')
    args = p.parse_args()
    records = [json.loads(line) for line in Path(args.records).read_text().splitlines() if line.strip()]
    latest = {r['name']: r for r in records}  # a re-evaluated variant replaces its older record in place
    records = [latest[name] for name in dict.fromkeys(r['name'] for r in records)]
    sets = list(dict.fromkeys(k for r in records for k in r['clive']))

    lines = ['| variant | steps | minutes | feature set | dim | CLIVE SRCC | CLIVE PLCC | L-test SRCC |',
             '|---|---|---|---|---|---|---|---|']
    for r in records:
        for s in sets:
            if s not in r['clive']:
                continue
            c = r['clive'][s]
            lt = r.get('l_test', {}).get(s)
            lines.append(f"| {r['name']} | {r.get('steps', '')} | {r.get('minutes', 0):.0f} | {s} | {c['dim']} | "
                         f"{c['srcc']:.3f} | {c['plcc']:.3f} | {'' if lt is None else f'{lt:.3f}'} |")
    probed = [r for r in records if 'type_probe' in r]
    if probed:  # per-type level probe on held-out images (tools/level_probe.py), newer records only
        lines += ['', '| variant | steps | class-token probe: within image | class-token probe: pooled | '
                  'head features: within image | head features: pooled |', '|---|---|---|---|---|---|']
        for r in probed:
            cells = [f"{r['type_probe'][k][m]:.3f}" if k in r['type_probe'] else ''
                     for k in ('cls', args.main_set) for m in ('within', 'pooled')]
            lines.append(f"| {r['name']} | {r.get('steps', '')} | " + ' | '.join(cells) + ' |')
    Path(args.out).write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    curves = defaultdict(list)
    baseline = None
    for r in records:
        if args.main_set not in r['clive']:
            continue
        srcc = r['clive'][args.main_set]['srcc']
        if r.get('native_mode', 'tiles') != 'tiles':  # the scoring-mode comparison is a table, not a curve
            continue
        if r.get('steps', 0) == 0:
            baseline = srcc
        else:
            curves[r['name'].split('@')[0]].append((r.get('minutes', 0), srcc))
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=110)
    for name, pts in curves.items():
        pts.sort()
        ax.plot([m for m, _ in pts], [s for _, s in pts], marker='o', label=name)
    if baseline is not None:
        ax.axhline(baseline, color='grey', ls='--', label='random encoder')
        ax.axhline(baseline + 0.15, color='grey', ls=':', label='bar: random + 0.15')
    ax.set_xlabel('pretraining minutes (2-core CPU, shared)')
    ax.set_ylabel('CLIVE median SRCC (10 splits)')
    ax.set_title(f'features: {args.main_set}', fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.plot)
    print(f'wrote {args.out} and {args.plot}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
