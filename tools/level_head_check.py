#!/usr/bin/env python
"""Does the pretext's own level head see real camera noise? (issue 19, the level term)

    python tools/level_head_check.py level1=runs/stats_level1/checkpoints/ckpt_00000500.pth [NAME=CKPT ...]
        [--polyu datasets/polyu/CroppedImages] [--kodak datasets/pristine/kodak24] [--out runs/level_head_check]

A ``crossiqa_cached_pretext`` run with ``train.loss.level_weight`` > 0 trains a linear head that reads,
from ``q_a - q_b`` of two views of one crop, how much more noise, blur and sharpening view a has
(``train/cached_pretext.py``). The head is not exported, so this reads it from the trainer checkpoint and
applies it to ``q(noisy) - q(clean)``:

1. on PolyU's 100 real noisy / clean pairs (full 512-px crops, the pairing of ``independent_check.py``);
2. on synthetic controls: Kodak24 crops (held out of the pretext) against the same crop degraded by
   ``camera_noise`` / ``camera_grain`` / ``white_noise`` at levels 1 and 3.

Per set: the fraction of pairs where the head reads more noise in the degraded image, and the median of
each group's predicted difference (noise, blur, sharpen; in level / 5 units). No MOS is used for these.

3. With ``--regress`` (a regress options file; its dataset, CLIVE by default): the head's noise reading of
   each photo alone (``level_head(q)``, which carries an unknown offset because the head was trained on
   differences, so only its spread and order mean something), against PolyU's noisy and clean shots, and
   its rank correlation with the MOS: does CLIVE's MOS mark down what the pretext reads as noise?
4. With ``--ladder-types T1,T2,...``: the pretext's own L-test. Each type is applied to the Kodak crops at
   levels 1-5 (one nested draw per crop); the run's reading of that type's level group on q(level) - q(crop)
   should rise with the level. Per type: the mean over crops of its SRCC with the level. This asks whether
   what the level term taught ``q`` carries over to held-out photos, before any head is fitted on MOS.
Writes ``level_head_check.md`` and ``.json`` under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from typing import Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'scripts'))

CONTROLS = (('camera_noise', 1), ('camera_noise', 3), ('camera_grain', 1), ('camera_grain', 3),
            ('white_noise', 1), ('white_noise', 3))


def load_task(checkpoint: str):
    """The pretext task of a trainer checkpoint, with its level head; refuses a run without one."""
    from crossiqa_pyiqa.train.tasks import build_task
    from crossiqa_pyiqa.train.trainer import read_checkpoint
    import crossiqa_pyiqa.train.cached_pretext  # noqa: F401  (registers the task)

    ckpt = read_checkpoint(checkpoint)
    task = build_task(ckpt['options'])
    if not hasattr(task, 'level_head'):
        raise SystemExit(f'{checkpoint}: the run had no level term (train.loss.level_weight is 0)')
    task.load_state_dict(ckpt['model'])
    return task.eval()


def quality_codes(task, images) -> torch.Tensor:
    """(images, dim): each image's q, computed once and shared by the pair differences and the readings."""
    with torch.inference_mode():
        return torch.cat([task.model.encoder(x)['cls'] for x in images])


def level_differences(task, q_degraded: torch.Tensor, q_reference: torch.Tensor) -> np.ndarray:
    """(pairs, groups): the level head on q(degraded) - q(reference)."""
    with torch.inference_mode():
        return task.level_head(q_degraded - q_reference).numpy()


def summary(diff: np.ndarray, groups: Sequence[str]) -> dict:
    """``groups``: the run's level groups, in the order of its head's outputs (noise first)."""
    return {'n': len(diff), 'more_noise_read': float((diff[:, 0] > 0).mean()),
            **{f'median_{g}': float(np.median(diff[:, j])) for j, g in enumerate(groups)}}


def ladder_orders(task, crops: Sequence[torch.Tensor], types: Sequence[str]) -> dict[str, float]:
    """Section 4: for each of ``types`` in one of the run's level groups, the mean over crops of the SRCC between
    level (0 = the crop, 1..5 one nested draw) and that group's reading of q(level) - q(crop): the pretext's own
    L-test, with no head fitted on MOS."""
    from scipy.stats import spearmanr

    from crossiqa_pyiqa.degradations import apply

    groups = list(task.level_groups)
    out = {}
    for t in types:
        column = next((j for j, g in enumerate(groups) if t in task.level_groups[g]), None)
        if column is None:
            continue
        orders = []
        for i, x in enumerate(crops):
            ladder = [x] + [apply(x, t, lv, generator=torch.Generator().manual_seed(i)) for lv in range(1, 6)]
            q = quality_codes(task, ladder)
            reading = level_differences(task, q, q[:1])[:, column]
            orders.append(spearmanr(reading, np.arange(6)).correlation)
        out[f'{t} ({groups[column]})'] = float(np.nanmean(orders))
    return out


def noise_readings(task, q: torch.Tensor) -> np.ndarray:
    """The level head's noise output on each image's q alone (offset unknown: compare, don't read)."""
    with torch.inference_mode():
        return task.level_head(q)[:, 0].numpy()


def clive_section(task, records, q_noisy: torch.Tensor, q_clean: torch.Tensor) -> dict:
    """Each labelled photo's noise reading against PolyU's noisy and clean shots, and its SRCC with the MOS."""
    from scipy.stats import spearmanr
    from tqdm import tqdm

    from crossiqa_pyiqa.inputs import read_image

    quart = lambda v: ' / '.join(f'{q:.3f}' for q in np.percentile(v, [25, 50, 75]))  # noqa: E731
    photos = (read_image(p)[None] for p in tqdm(records.paths, desc=records.name))
    clive = noise_readings(task, quality_codes(task, photos))
    noisy, clean = noise_readings(task, q_noisy), noise_readings(task, q_clean)
    return {'name': records.name, 'n': len(clive), 'quartiles': quart(clive), 'polyu_noisy_quartiles': quart(noisy),
            'polyu_clean_quartiles': quart(clean), 'above_polyu_noisy_median': float((clive > np.median(noisy)).mean()),
            'srcc_mos': float(spearmanr(clive, records.mos).correlation)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('runs', nargs='+', metavar='NAME=CHECKPOINT')
    p.add_argument('--polyu', default='datasets/polyu/CroppedImages')
    p.add_argument('--kodak', default='datasets/pristine/kodak24')
    p.add_argument('--crop', type=int, default=256)
    p.add_argument('--out', default='runs/level_head_check')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--ladder-types', default='',
                   help='4: comma-separated library types; each whose level group the run reads is ranked over its '
                        "five nested levels by the run's own reading (no MOS head)")
    p.add_argument('--ladder-crops', type=int, default=24, help='4: how many Kodak crops')
    p.add_argument('--regress', default='options/regress/crossiqa_livec.yml',
                   help="section 3's labelled set (its dataset block); 'none' skips it")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    from independent_check import find_pairs  # scripts/: the pairing --real_noise uses

    from crossiqa_pyiqa.degradations import apply
    from crossiqa_pyiqa.inputs import read_image
    from crossiqa_pyiqa.paths import resolve, require

    runs = [r.partition('=')[::2] for r in args.runs]
    for name, path in runs:
        if not name or not path:
            raise SystemExit(f'runs are NAME=CHECKPOINT, got {name}={path}')
    polyu = [(read_image(n)[None], read_image(c)[None]) for _, n, c in find_pairs(require(args.polyu, 'PolyU folder'))]
    kodak_dir = require(args.kodak, 'Kodak folder')
    kodak = [read_image(os.path.join(kodak_dir, f))[None, :, :args.crop, :args.crop]
             for f in sorted(os.listdir(kodak_dir))]
    controls = {f'{t} level {lv}': [(apply(x, t, lv, generator=torch.Generator().manual_seed(i)), x)
                                    for i, x in enumerate(kodak)] for t, lv in CONTROLS}
    records = None
    if args.regress != 'none':
        from crossiqa_pyiqa.optionfile import load_options
        from crossiqa_pyiqa.regression.fit import protocol_data

        records = protocol_data(load_options(args.regress)).records
    result: dict = {}
    ladders: dict = {}
    for name, path in runs:
        task = load_task(path)
        q_noisy, q_clean = (quality_codes(task, (pair[k] for pair in polyu)) for k in (0, 1))
        groups = list(task.level_groups)
        result[name] = {'checkpoint': path, 'groups': groups,
                        'polyu real noise': summary(level_differences(task, q_noisy, q_clean), groups)}
        for label, pairs in controls.items():
            q_deg, q_ref = (quality_codes(task, (pair[k] for pair in pairs)) for k in (0, 1))
            result[name][label] = summary(level_differences(task, q_deg, q_ref), groups)
        if args.ladder_types:
            ladders[name] = ladder_orders(task, kodak[:args.ladder_crops], args.ladder_types.split(','))
        if records is not None:
            result[name]['labelled set'] = clive_section(task, records, q_noisy, q_clean)
    lines = [f'# The pretext level head on real and synthetic noise ({(time.time() - t0) / 60:.1f} min)', '',
             'Head applied to q(noisy or degraded) − q(clean): the fraction of pairs where it reads more noise, and '
             'the median predicted difference per group (level / 5 units).', '',
             '| run | pairs | n | reads more noise | medians per group |', '|---|---|---|---|---|']
    for name, sets in result.items():
        for label, s in sets.items():
            if label in ('checkpoint', 'groups', 'labelled set'):
                continue
            lines.append(f"| {name} | {label} | {s['n']} | {s['more_noise_read']:.2f} | "
                         + ', '.join(f"{g} {s[f'median_{g}']:+.3f}" for g in sets['groups']) + ' |')
    for name, orders in ladders.items():
        result[name]['ladder_orders'] = orders
        lines += ['', f'**{name}, its own L-test** (SRCC of level 0..5 with its group\'s reading of q(level) − '
                  f'q(crop), mean over {args.ladder_crops} Kodak crops): '
                  + ', '.join(f'{t} {v:.2f}' for t, v in orders.items()) + '.']
    for name, sets in result.items():
        if 'labelled set' in sets:
            c = sets['labelled set']
            lines += ['', f"**{name}, the noise reading of each photo alone** (quartiles): PolyU noisy "
                      f"{c['polyu_noisy_quartiles']}, PolyU clean {c['polyu_clean_quartiles']}, {c['name']} "
                      f"{c['quartiles']}; {c['name']} photos above PolyU's noisy median: "
                      f"{c['above_polyu_noisy_median']:.2f}; "
                      f"SRCC(noise reading, MOS) on {c['name']}: {c['srcc_mos']:+.3f} ({c['n']} photos)."]
    out = resolve(args.out)
    os.makedirs(out, exist_ok=True)
    Path(out, 'level_head_check.md').write_text('\n'.join(lines) + '\n')
    Path(out, 'level_head_check.json').write_text(json.dumps(result, indent=1))
    print('\n'.join(lines))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
