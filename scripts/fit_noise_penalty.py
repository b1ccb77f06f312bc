"""Calibrate the pretext's noise reading as a score penalty (``noise_source='level'``), no MOS and no real noise.

    python scripts/fit_noise_penalty.py --weights FILE --out FILE [--quantile 0.5] [--level 4]
        [--types white_noise camera_noise camera_grain] [--bsds 42]

A pretext trained with the level term (``train.loss.level_weight`` > 0) exports a level head that reads
from the quality code ``q`` how much noise a view has (``CrossIQA.level_reading``). It was trained on
differences of two views, so one photo's reading has no origin; and a score head fitted on CLIVE's MOS
pays real grain as detail (docs/ABLATIONS.md). This script fixes the two numbers of
``score = head - gamma * max(0, reading - threshold)`` from synthetic data only:

- **threshold**: the ``--quantile`` of the reading over clean photos (McMaster and ``--bsds`` BSDS500
  photos, the diagnosis heads' fitting photos; Kodak24 stays held out): only noise above what clean
  photos read is charged;
- **gamma**: what the score head itself charges for a unit of that reading on synthetic noise: the slope,
  through the origin, of ``score(clean) - score(noisy)`` on the rise of ``max(0, reading - threshold)``,
  over the same photos with each of ``--types`` at ``--level`` (floored at 0). Real grain, which the head
  pays as detail, is then charged at the rate the head charges synthetic noise that reads as much.
  ``crossiqa-noiseaware``'s first penalty was fitted the same way (``scripts/fit_map_penalty.py``).

Writes ``--out`` (may be ``--weights``; every other tensor unchanged): the level head's noise bias
moved by the threshold (so the reading is 0 there) and ``info['level_head']`` with the threshold, gamma and
the fit's data; prints gamma.
Use it as ``pyiqa.create_metric('crossiqa', pretrained_model_path=FILE, noise_penalty=GAMMA,
noise_source='level')``; written into the user weights dir as ``crossiqa-NAME.safetensors`` it registers as
metric ``crossiqa-NAME`` with that penalty already applied. About 3 minutes on one CPU thread.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import numpy as np  # noqa: E402
import torch  # noqa: E402

DEFAULT_TYPES = ('white_noise', 'camera_noise', 'camera_grain')


def fitting_photos(pristine: str, bsds: int) -> list[str]:
    """McMaster and every len/``bsds``-th BSDS500 photo (the diagnosis heads' fitting photos; Kodak24 held out)."""
    from crossiqa_pyiqa.regression.features import folder_images

    bsds_photos = folder_images(os.path.join(pristine, 'bsds500'))
    return folder_images(os.path.join(pristine, 'mcmaster')) + bsds_photos[::max(1, len(bsds_photos) // bsds)][:bsds]


def noise_photo_features(net, photos: list[str], types: tuple[str, ...], level: float,
                         progress=None) -> np.ndarray:
    """(photos, 1 + types, feature_dim) float64: each clean photo's features, then its version with each type."""
    from crossiqa_pyiqa.degradations import apply
    from crossiqa_pyiqa.inputs import read_image

    out = []
    for i, path in enumerate(progress(photos) if progress else photos):
        x = read_image(path)[None]
        batch = [x] + [apply(x, kind, level, generator=torch.Generator().manual_seed(1009 * i + 7 * j))
                       for j, kind in enumerate(types)]
        with torch.inference_mode():  # photos differ in size: one at a time
            out.append(torch.cat([net.forward_features(v) for v in batch]).double().numpy())
    return np.stack(out)


def fit_gamma(score: np.ndarray, reading: np.ndarray, threshold: float) -> float:
    """Slope through the origin of the score's drop on the rise of ``max(0, reading - threshold)``, floored at 0.

    ``score`` and ``reading``: (photos, 1 + types), the clean photo first (as ``noise_photo_features``)."""
    excess = np.maximum(reading - threshold, 0)
    x = (excess[:, 1:] - excess[:, :1]).ravel()
    y = (score[:, :1] - score[:, 1:]).ravel()
    if not (x @ x) > 0:
        return 0.0
    return max(0.0, float(x @ y / (x @ x)))


def clean_preferred(score: np.ndarray) -> float:
    """Fraction of (photo, type) pairs in which the clean photo scores higher."""
    return float((score[:, :1] > score[:, 1:]).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--weights', required=True, help='CrossIQA weight file with a fitted MOS head and a level head')
    parser.add_argument('--out', required=True, help='weight file to write (may be --weights itself)')
    parser.add_argument('--pristine', default='datasets/pristine')
    parser.add_argument('--bsds', type=int, default=42, help='BSDS500 photos (every len/N-th one), with McMaster')
    parser.add_argument('--types', nargs='+', default=list(DEFAULT_TYPES), help='library noise types of the fit')
    parser.add_argument('--level', type=float, default=4.0)
    parser.add_argument('--quantile', type=float, default=0.5, help="threshold: this quantile of clean photos' reading")
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args(argv)
    from crossiqa_pyiqa.degradations import ALL_DEGRADATIONS
    from crossiqa_pyiqa.paths import resolve

    problems = [f'--quantile must lie in [0, 1], got {args.quantile}'] if not 0 <= args.quantile <= 1 else []
    problems += [f'--bsds must be > 0, got {args.bsds}'] if args.bsds <= 0 else []
    problems += [f'--level must lie in (0, 5], got {args.level}'] if not 0 < args.level <= 5 else []
    problems += [f'--types: {t!r} is not a library type' for t in args.types if t not in ALL_DEGRADATIONS]
    if problems:
        parser.error('; '.join(problems))
    torch.set_num_threads(max(1, args.threads))
    import crossiqa_pyiqa  # noqa: F401  (registers the architecture)
    from crossiqa_pyiqa.archs.crossiqa_arch import LEVEL_HEAD_PREFIX, CrossIQA
    from crossiqa_pyiqa.regression.features import progress
    from crossiqa_pyiqa.weights import read_weights, save_weights

    try:
        net = CrossIQA(pretrained_model_path=resolve(args.weights))
        net._check_head_fitted()
        k = net.require_level_head()
        photos = fitting_photos(args.pristine, args.bsds)
    except (RuntimeError, ValueError, FileNotFoundError) as error:
        print(f'fit_noise_penalty: error: {error}', file=sys.stderr)
        return 1
    meta = dict(net.info['level_head'])
    old_threshold = float(meta.get('threshold', 0.0))  # a calibrated file: its reading is already shifted
    types = tuple(args.types)
    feats = noise_photo_features(net, photos, types, args.level,
                                 progress=lambda it: progress(iterable=it, desc='clean and noisy photos', unit='photo'))
    with torch.inference_mode():
        flat = torch.as_tensor(feats.reshape(-1, feats.shape[-1]))
        score = net.score_features(flat)[:, 0].double().numpy().reshape(feats.shape[:2])
        reading = net.level_reading(flat)[:, k].double().numpy().reshape(feats.shape[:2])
    threshold = float(np.quantile(reading[:, 0], args.quantile))
    gamma = round(fit_gamma(score, reading, threshold), 3)
    bias = net.level_head.bias.detach().float().clone()
    bias[k] -= threshold
    meta.update(threshold=old_threshold + threshold, noise_penalty=gamma, calibration={
        'photos': len(photos), 'types': list(types), 'level': args.level, 'quantile': args.quantile,
        'noisy_reads_higher': float((reading[:, 1:] > reading[:, :1]).mean()),
        'clean_preferred_plain': clean_preferred(score),
        'clean_preferred_penalised': clean_preferred(score - gamma * np.maximum(reading - threshold, 0)),
        'command': 'python scripts/fit_noise_penalty.py ' + ' '.join(argv if argv is not None else sys.argv[1:])})
    # every other tensor, the config and the provenance are written back unchanged (an fp16 file stays fp16)
    state, config, file_info = read_weights(resolve(args.weights), arch='CrossIQA')
    state[LEVEL_HEAD_PREFIX + 'bias'] = bias
    save_weights(resolve(args.out), state, 'CrossIQA', config, {**file_info, 'level_head': meta})
    print(json.dumps({'noise_penalty': gamma, 'threshold': meta['threshold'], **meta['calibration']}, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
