"""Fit the quality map's penalty per diagnosed family (``archs.quality_map.MAP_PENALTY``), no MOS.

    python scripts/fit_map_penalty.py [--weights FILE] [--bsds 42] [--out runs/map_penalty]

The map (``archs/quality_map.py``) reads, per window, the score head minus
``sum_f lambda_f * s_f``, ``s_f`` the diagnosis heads' strength of family ``f`` on the window's
features. ``lambda_f`` is what one unit of ``f``'s strength costs the *global score*: the slope,
through the origin, of ``score(pristine) - score(degraded)`` on ``s_f(degraded) - s_f(pristine)``
(both from the whole photo's features) over whole photos degraded by the library types of
family ``f`` in :data:`FIT_TYPES` at level 4, floored at 0. So a window that reads as much of a
family as a whole photo would is marked down by what the score takes off that photo for it.
The photos: the McMaster set and ``--bsds`` BSDS500 photos (the diagnosis heads' fitting
photos; Kodak24 stays held out for ``scripts/explain_evidence.py``). No MOS is read: the score
head is only asked how much it drops. Prints the fitted dict (paste it into
``archs.quality_map.MAP_PENALTY_BY_METRIC`` under the file's ``metric_name``) and writes it with the fit's
data to ``--out``/map_penalty.json. About 5 minutes on one CPU thread.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import numpy as np  # noqa: E402
import torch  # noqa: E402

#: Library types the penalty is fitted on (level 4), by family.
FIT_TYPES = ('gaussian_blur', 'lens_blur', 'white_noise', 'camera_noise', 'jpeg', 'jpeg2000', 'darken',
             'underexposure', 'brighten', 'overexposure', 'mean_shift', 'contrast_change', 'color_saturation_1',
             'color_saturation_2', 'white_balance', 'color_diffusion')
#: Families given a penalty: all of them (the score head's own local response stays, the penalty adds the
#: diagnosis heads' reading, which does not depend on the score head seeing the family locally).
PENALISED = ('blur', 'noise', 'compression', 'exposure', 'contrast', 'colour')
LEVEL = 4


def collect(net, photos: list[str], types: tuple[str, ...], log=print) -> list[dict]:
    """Per (photo, type): the global score and family strengths of the pristine and the wholly degraded photo."""
    from crossiqa_pyiqa.degradations import apply
    from crossiqa_pyiqa.degradations.families import TYPE_FAMILIES, family_strengths

    def read(x):
        with torch.inference_mode():
            features = net.forward_features(net.prepare_input(x))
            strengths = net.diagnose(features)[0].tolist()
            families, _ = family_strengths(dict(zip(net.diagnosis.outputs, strengths)))
            return float(net.score_features(features).reshape(-1)[0]), families

    from crossiqa_pyiqa.inputs import read_image

    records, start = [], time.time()
    for i, path in enumerate(photos):
        x = read_image(path)[None]
        p_score, p_families = read(x)
        for j, name in enumerate(types):
            seed = 1009 * i + 7 * j
            d_score, d_families = read(apply(x, name, LEVEL, generator=torch.Generator().manual_seed(seed)))
            family = TYPE_FAMILIES[name].family
            records.append({'photo': os.path.basename(path), 'type': name, 'family': family,
                            'score_drop': p_score - d_score, 'strength_rise': d_families[family] - p_families[family]})
        log(f'{i + 1}/{len(photos)} {path} {time.time() - start:.0f} s')
    return records


def fit(records: list[dict]) -> tuple[dict[str, float], dict]:
    """``lambda_f`` per family (slope through the origin, floored at 0, 0.1 points) and the fit's data."""
    penalty, report = {}, {}
    for family in PENALISED:
        rows = [r for r in records if r['family'] == family]
        x = np.array([r['strength_rise'] for r in rows])
        y = np.array([r['score_drop'] for r in rows])
        penalty[family] = round(max(0.0, float(x @ y / (x @ x))), 1)
        report[family] = {'n': len(rows), 'types': sorted({r['type'] for r in rows}),
                          'mean_score_drop': float(y.mean()), 'mean_strength_rise': float(x.mean()),
                          'pearson': float(np.corrcoef(x, y)[0, 1])}
    return penalty, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--weights', default=None, help="CrossIQA weight file with diagnosis heads (default: the "
                        "shipped crossiqa's)")
    parser.add_argument('--bsds', type=int, default=42, help='BSDS500 photos (every len/N-th one), with McMaster')
    parser.add_argument('--pristine', default='datasets/pristine')
    parser.add_argument('--out', default='runs/map_penalty')
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args(argv)
    from crossiqa_pyiqa.paths import resolve

    for key in ('weights', 'pristine', 'out'):
        setattr(args, key, resolve(getattr(args, key)))
    torch.set_num_threads(max(1, args.threads))
    import crossiqa_pyiqa  # noqa: F401
    from crossiqa_pyiqa.archs.crossiqa_arch import CrossIQA, DEFAULT_WEIGHTS, default_weight_path
    from fit_noise_penalty import fitting_photos  # the same photos (scripts/ is on the path of a script)

    net = CrossIQA(pretrained_model_path=args.weights or default_weight_path(DEFAULT_WEIGHTS))
    try:
        net.require_diagnosis()
        photos = fitting_photos(args.pristine, args.bsds)
    except (RuntimeError, FileNotFoundError) as error:
        print(f'fit_map_penalty: error: {error}', file=sys.stderr)
        return 1
    records = collect(net, photos, FIT_TYPES)
    penalty, report = fit(records)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'map_penalty.json').write_text(json.dumps({'penalty': penalty, 'fit': report, 'n_photos': len(photos),
                                                     'types': FIT_TYPES, 'level': LEVEL}, indent=1))
    print(json.dumps(penalty))
    return 0


if __name__ == '__main__':
    sys.exit(main())
