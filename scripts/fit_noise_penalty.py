"""Calibrate the pretext's noise reading as a score penalty (``noise_source='level'``), no MOS and no real noise.

    python scripts/fit_noise_penalty.py --weights FILE --out FILE [--quantile 0.75] [--preferred 0.95]
        [--type camera_grain] [--level 1] [--bsds 42] [--scale 2]

A pretext trained with the level term (``train.loss.level_weight`` > 0) exports a level head that reads
from the quality code ``q`` how much noise a view has (``CrossIQA.level_reading``). It was trained on
differences of two views, so one photo's reading has no origin, and a score head fitted on CLIVE's MOS
pays real grain as detail (docs/ABLATIONS.md). This script fixes the two numbers of
``score = head - gamma * max(0, reading - threshold)`` from synthetic data only:

- **threshold**: the ``--quantile`` of the reading over clean photos (McMaster and ``--bsds`` BSDS500
  photos, the diagnosis heads' fitting photos; Kodak24 stays held out), made pixel-smooth by
  ``--scale`` x bicubic upscaling, as a camera's full-resolution pixels are (demosaiced, optically
  low-passed): only noise above what clean photos read is charged, so most photos pay nothing;
- **gamma**: the smallest penalty (score points per level / 5 unit, in steps of ``--step``) with which the
  score prefers each clean photo to the same photo with the library's ``--type`` at ``--level`` in at
  least ``--preferred`` of the photos: faint camera grain must never pass as detail.

Writes ``--out`` (may be ``--weights``): the level head's noise bias moved by the threshold (so the
reading is 0 at it) and ``info['level_head']`` with the threshold, gamma and the fit's data; prints gamma.
Use it as ``pyiqa.create_metric('crossiqa', pretrained_model_path=FILE, noise_penalty=GAMMA,
noise_source='level')``. About 5 minutes on one CPU thread.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import numpy as np  # noqa: E402
import torch  # noqa: E402


def smallest_gamma(score_clean: np.ndarray, score_noisy: np.ndarray, excess_clean: np.ndarray,
                   excess_noisy: np.ndarray, preferred: float, step: float, limit: float) -> float | None:
    """The smallest gamma on a grid of ``step`` with ``score - gamma * excess`` higher on the clean photo in at
    least ``preferred`` of the pairs (``excess``: the reading above the threshold, >= 0); None up to ``limit``."""
    for gamma in np.arange(0.0, limit + step / 2, step):
        if ((score_clean - gamma * excess_clean) > (score_noisy - gamma * excess_noisy)).mean() >= preferred:
            return round(float(gamma), 6)
    return None


def read_photos(net, photos: list[str], kind: str, level: float, scale: float,
                progress=None) -> dict[str, np.ndarray]:
    """Score and noise reading of each photo (upscaled ``scale`` x) and of the same photo with ``kind`` at ``level``."""
    import torch.nn.functional as F

    from crossiqa_pyiqa.degradations import apply
    from crossiqa_pyiqa.inputs import read_image

    k = net.require_level_head()
    out = {'score_clean': [], 'score_noisy': [], 'reading_clean': [], 'reading_noisy': []}
    for i, path in enumerate(progress(photos) if progress else photos):
        x = read_image(path)[None]
        if scale != 1:
            x = F.interpolate(x, scale_factor=scale, mode='bicubic', align_corners=False).clamp(0, 1)
        noisy = apply(x, kind, level, generator=torch.Generator().manual_seed(i))
        with torch.inference_mode():
            features = net.forward_features(torch.cat([x, noisy]))
            score = net.score_features(features)[:, 0]
            reading = net.level_reading(features)[:, k]
        for tag, j in (('clean', 0), ('noisy', 1)):
            out[f'score_{tag}'].append(float(score[j]))
            out[f'reading_{tag}'].append(float(reading[j]))
    return {key: np.asarray(v) for key, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--weights', required=True, help='CrossIQA weight file with a fitted MOS head and a level head')
    parser.add_argument('--out', required=True, help='weight file to write (may be --weights itself)')
    parser.add_argument('--pristine', default='datasets/pristine')
    parser.add_argument('--bsds', type=int, default=42, help='BSDS500 photos (every len/N-th one), with McMaster')
    parser.add_argument('--scale', type=float, default=2.0, help='bicubic upscaling that makes the photos '
                        'pixel-smooth, as full-resolution camera crops are')
    parser.add_argument('--type', default='camera_grain', help='library type of the faint noise that must not pay')
    parser.add_argument('--level', type=float, default=1.0)
    parser.add_argument('--quantile', type=float, default=0.75, help="threshold: this quantile of clean photos' reading")
    parser.add_argument('--preferred', type=float, default=0.95, help='fraction of clean photos that must win')
    parser.add_argument('--step', type=float, default=1.0, help='grid step of gamma (score points per level/5 unit)')
    parser.add_argument('--limit', type=float, default=1000.0, help='largest gamma tried')
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args(argv)
    from crossiqa_pyiqa.degradations import ALL_DEGRADATIONS
    from crossiqa_pyiqa.paths import resolve

    problems = [f'--{name} must lie in (0, 1], got {value}' for name, value in
                (('quantile', args.quantile), ('preferred', args.preferred)) if not 0 < value <= 1]
    problems += [f'--{name} must be > 0, got {value}' for name, value in
                 (('scale', args.scale), ('step', args.step), ('limit', args.limit), ('bsds', args.bsds)) if value <= 0]
    if args.type not in ALL_DEGRADATIONS:
        problems.append(f'--type {args.type!r} is not a library type')
    if problems:
        parser.error('; '.join(problems))
    torch.set_num_threads(max(1, args.threads))
    import crossiqa_pyiqa  # noqa: F401  (registers the architecture)
    from crossiqa_pyiqa.archs.crossiqa_arch import CrossIQA
    from crossiqa_pyiqa.regression.features import folder_images, progress

    try:
        net = CrossIQA(pretrained_model_path=resolve(args.weights))
        net._check_head_fitted()
        k = net.require_level_head()
        bsds = folder_images(os.path.join(args.pristine, 'bsds500'))
        photos = folder_images(os.path.join(args.pristine, 'mcmaster')) + bsds[::max(1, len(bsds) // args.bsds)][
            :args.bsds]
    except (RuntimeError, ValueError, FileNotFoundError) as error:
        print(f'fit_noise_penalty: error: {error}', file=sys.stderr)
        return 1
    meta = dict(net.info['level_head'])
    old_threshold = float(meta.get('threshold', 0.0))  # a calibrated file: its reading is already shifted
    data = read_photos(net, photos, args.type, args.level, args.scale,
                       progress=lambda it: progress(iterable=it, desc='clean and noisy photos', unit='photo'))
    threshold = float(np.quantile(data['reading_clean'], args.quantile))
    excess = {tag: np.maximum(data[f'reading_{tag}'] - threshold, 0) for tag in ('clean', 'noisy')}
    gamma = smallest_gamma(data['score_clean'], data['score_noisy'], excess['clean'], excess['noisy'],
                           args.preferred, args.step, args.limit)
    if gamma is None:
        print(f'fit_noise_penalty: error: no gamma up to {args.limit} makes {args.preferred:.0%} of the clean photos '
              f'win against {args.type} level {args.level}', file=sys.stderr)
        return 1
    with torch.no_grad():
        net.level_head.bias[k] -= threshold
    meta.update(threshold=old_threshold + threshold, noise_penalty=gamma, calibration={
        'photos': len(photos), 'scale': args.scale, 'type': args.type, 'level': args.level,
        'quantile': args.quantile, 'preferred': args.preferred, 'step': args.step,
        'clean_preferred_without_penalty': float((data['score_clean'] > data['score_noisy']).mean()),
        'noisy_reads_higher': float((data['reading_noisy'] > data['reading_clean']).mean()),
        'command': 'python scripts/fit_noise_penalty.py ' + ' '.join(argv if argv is not None else sys.argv[1:])})
    net.set_level_head(net.level_head, meta)
    net.save_pretrained(resolve(args.out))
    print(json.dumps({'noise_penalty': gamma, 'threshold': meta['threshold'], **meta['calibration']}, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
