"""Evidence for ``crossiqa_pyiqa.explain``: does it name the right problem, and put it in the right place?

    python scripts/explain_evidence.py [--weights FILE] [--out runs/explain_evidence] [--photos 24]

On held-out pristine photos (Kodak24; the heads were fitted on BSDS500 + McMaster):

1. **library**: every diagnosed library type at levels 1-5: is the top family right, does the
   right family's strength grow with the level; what the heads say on pristine photos and on
   the types that are not diagnosed (the misreadings);
2. **outside**: distortions implemented here with Pillow / numpy, not by the library the heads
   were fitted on (blur, noise, JPEG, darker, brighter, lower contrast, de-/over-saturation,
   a colour cast), levels 1-5: the same questions;
3. **half**: one half of each photo degraded (the side alternates): is the quality map (as
   ``explain`` reports it, with the file's penalty, ``map_penalty_for``; ``--no_penalty``: without) lower on
   the degraded half than on the other, and are the earlier map (crop heads, head weight 1) and the score head's
   map alone; the map at other score head weights; the raw maps' means against the score.
   ``--half_only --kodak datasets/pristine/mcmaster`` runs this part alone on other photos (the
   fitting photos, where ``MAP_HEAD_WEIGHT`` was chosen);
4. **polyu**: real camera noise (PolyU: 100 noisy shots and the means of many shots of the same
   scene): is ``noise`` higher on the noisy shot.

Writes ``evidence.md`` (the tables of the README and docs/EXPLAIN.md) and ``evidence.json``
under ``--out``. Features of the degraded photos are cached (``--cache_dir``), so a refitted
head is re-evaluated in seconds; the maps of part 3 are computed each time.
"""
from __future__ import annotations

import argparse
import glob
import io
import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import numpy as np  # noqa: E402
import torch  # noqa: E402

#: Distortions made outside the library: (family, direction, function of (PIL image, level, rng), levels 1-5).
OUTSIDE_LEVELS = {
    'pil_gaussian_blur': ('blur', None, [0.6, 1.0, 1.5, 2.5, 4.0]),  # radius
    'numpy_gaussian_noise': ('noise', None, [4, 8, 12, 20, 32]),  # sigma, 8-bit units
    'pil_jpeg': ('compression', None, [40, 25, 15, 8, 4]),  # quality
    'pil_darker': ('exposure', 'dark', [0.8, 0.65, 0.5, 0.35, 0.22]),  # ImageEnhance.Brightness
    'pil_brighter': ('exposure', 'bright', [1.2, 1.4, 1.65, 1.95, 2.3]),
    'pil_low_contrast': ('contrast', 'low', [0.75, 0.6, 0.45, 0.3, 0.18]),  # ImageEnhance.Contrast
    'pil_desaturate': ('colour', 'faded', [0.65, 0.45, 0.3, 0.15, 0.0]),  # ImageEnhance.Color
    'pil_oversaturate': ('colour', 'vivid', [1.4, 1.8, 2.3, 3.0, 4.0]),
    'channel_cast': ('colour', 'cast', [0.06, 0.12, 0.18, 0.26, 0.35]),  # R x (1 + a), B x (1 - a)
}
#: Half-degraded photos: one library and one outside distortion per family, at this level.
HALF_DISTORTIONS = (('library', 'gaussian_blur'), ('library', 'white_noise'), ('library', 'jpeg'),
                    ('library', 'darken'), ('library', 'brighten'), ('library', 'contrast_change'),
                    ('library', 'color_saturation_1'), ('library', 'camera_noise'),
                    ('outside', 'pil_gaussian_blur'), ('outside', 'numpy_gaussian_noise'), ('outside', 'pil_jpeg'),
                    ('outside', 'pil_darker'), ('outside', 'pil_brighter'), ('outside', 'pil_low_contrast'),
                    ('outside', 'pil_desaturate'), ('outside', 'channel_cast'))
HALF_LEVEL = 4
#: Score head weights at which the half-degraded maps are also evaluated (``head_weight_sweep``).
HEAD_WEIGHT_SWEEP = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0)


def outside(x: torch.Tensor, name: str, level: int, seed: int) -> torch.Tensor:
    """One outside distortion of a (1, 3, H, W) image in [0, 1] at level 1-5 (Pillow / numpy only)."""
    from PIL import Image, ImageEnhance, ImageFilter

    p = OUTSIDE_LEVELS[name][2][level - 1]
    arr = (x[0].permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    if name == 'pil_gaussian_blur':
        img = img.filter(ImageFilter.GaussianBlur(p))
    elif name == 'numpy_gaussian_noise':
        noisy = arr.astype(np.float64) + np.random.default_rng(seed).normal(0, p, arr.shape)
        img = Image.fromarray(noisy.round().clip(0, 255).astype(np.uint8))
    elif name == 'pil_jpeg':
        buf = io.BytesIO()
        img.save(buf, format='JPEG', quality=int(p))
        img = Image.open(io.BytesIO(buf.getvalue())).convert('RGB')
    elif name in ('pil_darker', 'pil_brighter'):
        img = ImageEnhance.Brightness(img).enhance(p)
    elif name == 'pil_low_contrast':
        img = ImageEnhance.Contrast(img).enhance(p)
    elif name in ('pil_desaturate', 'pil_oversaturate'):
        img = ImageEnhance.Color(img).enhance(p)
    elif name == 'channel_cast':
        gains = np.array([1 + p, 1.0, 1 - p])
        img = Image.fromarray((arr.astype(np.float64) * gains).round().clip(0, 255).astype(np.uint8))
    out = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(out).permute(2, 0, 1)[None].contiguous()


def library(x: torch.Tensor, name: str, level: int, seed: int) -> torch.Tensor:
    from crossiqa_pyiqa.degradations import apply

    return apply(x, name, level, generator=torch.Generator().manual_seed(seed))


def truth(source: str, name: str, pristine: torch.Tensor, degraded: torch.Tensor | None
          ) -> tuple[tuple[str, ...], str | None]:
    """(families that count as right, exposure direction) of one distortion."""
    from crossiqa_pyiqa.degradations.families import TYPE_FAMILIES, type_direction

    if source == 'outside':
        family, direction, _ = OUTSIDE_LEVELS[name]
        return (family,), direction
    return TYPE_FAMILIES[name].families, type_direction(name, pristine, degraded)


def readings(net, features: np.ndarray) -> list[dict[str, float]]:
    """Family strengths (the ``explain`` rule: a family's largest head) of cached features."""
    from crossiqa_pyiqa.degradations.families import family_strengths

    with torch.inference_mode():
        out = net.diagnose(torch.from_numpy(features).float()).numpy()
    rows = []
    for r in out:
        strengths, directions = family_strengths(dict(zip(net.diagnosis.outputs, r.tolist())))
        rows.append({**strengths, '_directions': directions})
    return rows


def top(r: dict[str, float]) -> str:
    from crossiqa_pyiqa.degradations.families import FAMILIES

    return max(FAMILIES, key=lambda f: r[f])


def cached_features(net, keys: list[str], make, cache_dir: str, tag: str) -> np.ndarray:
    import hashlib

    from crossiqa_pyiqa.regression.features import cache_key, extract

    digest = hashlib.sha256('\n'.join(keys).encode()).hexdigest()[:16]
    cache = Path(cache_dir) / 'features' / f'explain-evidence-{tag}-{cache_key(net, digest)}.npz'
    return extract(net, len(keys), make, keys, cache, desc=tag)


def level_study(net, photos: list[str], source: str, names: list[str], cache_dir: str) -> dict:
    """Top family and strength per (photo, distortion, level), levels 1-5, and the pristine photos."""
    from crossiqa_pyiqa.degradations.families import TYPE_FAMILIES
    from crossiqa_pyiqa.inputs import read_image

    items = [(i, None, 0) for i in range(len(photos))]
    items += [(i, n, lv) for i in range(len(photos)) for n in names for lv in range(1, 6)]
    keys = [f'{photos[i]}|{source}|{n or "pristine"}|{lv}' for i, n, lv in items]
    cache: dict[int, torch.Tensor] = {}

    def pristine(i: int) -> torch.Tensor:
        if i not in cache:
            cache.clear()
            cache[i] = read_image(photos[i])[None]
        return cache[i]

    def make(k: int) -> torch.Tensor:
        i, n, lv = items[k]
        if n is None:
            return pristine(i)
        fn = library if source == 'library' else outside
        return fn(pristine(i), n, lv, seed=1009 * i + 7 * names.index(n))

    feats = cached_features(net, keys, make, cache_dir, source)
    reads = readings(net, feats)
    rows = []
    for k, (i, n, lv) in enumerate(items):
        row = {'photo': os.path.basename(photos[i]), 'distortion': n, 'level': lv, **reads[k]}
        if n is not None:
            measured = source == 'library' and TYPE_FAMILIES[n].direction == 'measured'
            fams, direction = truth(source, n, pristine(i), make(k) if measured else None)
            row.update(truth=list(fams), direction=direction, top=top(reads[k]), right=top(reads[k]) in fams,
                       strength=max(reads[k][f] for f in fams))
        rows.append(row)
    return {'rows': rows}


def summarise_levels(rows: list[dict]) -> dict:
    """Per family x level: accuracy, mean strength; monotonicity; per distortion: level >= 3 accuracy, misreadings."""
    from crossiqa_pyiqa.degradations.families import FAMILIES

    out: dict = {'family': {}, 'distortion': {}, 'pristine': {}}
    deg = [r for r in rows if r['distortion'] is not None]
    for fam in FAMILIES:
        fr = [r for r in deg if r['truth'][0] == fam]
        if not fr:
            continue
        per_level = {}
        for lv in range(1, 6):
            lr = [r for r in fr if r['level'] == lv]
            per_level[lv] = {'n': len(lr), 'accuracy': float(np.mean([r['right'] for r in lr])),
                             'strength': float(np.mean([r['strength'] for r in lr]))}
        means = [per_level[lv]['strength'] for lv in range(1, 6)]
        # per (photo, distortion): strength non-decreasing over the 5 levels (0.01 slack)
        series = defaultdict(dict)
        for r in fr:
            series[(r['photo'], r['distortion'])][r['level']] = r['strength']
        mono = [all(s[lv + 1] >= s[lv] - 0.01 for lv in range(1, 5)) for s in series.values()]
        hi = [r for r in fr if r['level'] >= 3]
        out['family'][fam] = {'levels': per_level, 'mean_monotone': bool(all(b > a for a, b in zip(means, means[1:]))),
                              'monotone_fraction': float(np.mean(mono)),
                              'accuracy_ge3': float(np.mean([r['right'] for r in hi])), 'n_ge3': len(hi)}
    for name in sorted({r['distortion'] for r in deg}, key=lambda n: [r['distortion'] for r in deg].index(n)):
        dr = [r for r in deg if r['distortion'] == name]
        hi = [r for r in dr if r['level'] >= 3]
        wrong = Counter(r['top'] for r in hi if not r['right'])
        entry = {'family': '+'.join(dr[0]['truth']), 'accuracy_ge3': float(np.mean([r['right'] for r in hi])),
                 'accuracy_all': float(np.mean([r['right'] for r in dr])),
                 'strength_by_level': [float(np.mean([r['strength'] for r in dr if r['level'] == lv]))
                                       for lv in range(1, 6)],
                 'misread_as': dict(wrong.most_common())}
        family = dr[0]['truth'][0]
        if dr[0]['direction'] is not None:
            entry['direction_accuracy_ge3'] = float(np.mean([r['_directions'][family] == r['direction'] for r in hi]))
        out['distortion'][name] = entry
    pr = [r for r in rows if r['distortion'] is None]
    out['pristine'] = {'n': len(pr), 'mean': {f: float(np.mean([r[f] for r in pr])) for f in FAMILIES},
                       'max_over_0.3': float(np.mean([max(r[f] for f in FAMILIES) > 0.3 for r in pr]))}
    ge3 = [r for r in deg if r['level'] >= 3]
    out['accuracy_ge3'] = float(np.mean([r['right'] for r in ge3]))
    out['n_ge3'] = len(ge3)
    return out


def not_diagnosed(net, photos: list[str], cache_dir: str) -> dict:
    """What the heads say on the library types no family describes (level 3 and 5)."""
    from crossiqa_pyiqa.degradations.families import FAMILIES, NOT_DIAGNOSED_TYPES
    from crossiqa_pyiqa.inputs import read_image

    items = [(i, n, lv) for i in range(len(photos)) for n in NOT_DIAGNOSED_TYPES for lv in (3, 5)]
    keys = [f'{photos[i]}|library|{n}|{lv}' for i, n, lv in items]

    def make(k: int) -> torch.Tensor:
        i, n, lv = items[k]
        return library(read_image(photos[i])[None], n, lv, seed=1009 * i + 7 * NOT_DIAGNOSED_TYPES.index(n))

    reads = readings(net, cached_features(net, keys, make, cache_dir, 'not-diagnosed'))
    out = {}
    for n in NOT_DIAGNOSED_TYPES:
        rs = [r for (i, name, lv), r in zip(items, reads) if name == n]
        out[n] = {'top': dict(Counter(top(r) for r in rs).most_common()),
                  'mean': {f: float(np.mean([r[f] for r in rs])) for f in FAMILIES}}
    return out


def half_study(net, photos: list[str], window: int, penalty: dict, head_weight: float = 1.0) -> dict:
    """Quality maps of half-degraded photos: lower on the degraded half? The map as ``explain`` reports it
    (``penalty``, ``head_weight``, the file's window heads if it has them), the earlier map (crop heads, head weight
    1), and the score head alone; and the raw maps' means vs the score."""
    from crossiqa_pyiqa.archs.quality_map import encode_maps, quality_map
    from crossiqa_pyiqa.inputs import read_image

    # computed: kind -> (penalty, head weight, diagnosis heads: None = the file's window heads if any); the maps are
    # linear in their parts, so the map (at any head weight) and the earlier map are sums of these
    parts = {'head': ({}, 1.0, None), 'penalty': (penalty, 0.0, None), 'crop_penalty': (penalty, 0.0, net.diagnosis)}
    rows = []
    for i, path in enumerate(photos):
        x = read_image(path)[None]
        for j, (source, name) in enumerate(HALF_DISTORTIONS):
            side = (i + j) % 2  # 0: left half degraded
            w = x.shape[-1] // 2
            part = (Ellipsis, slice(0, w)) if side == 0 else (Ellipsis, slice(w, None))
            y = x.clone()
            fn = library if source == 'library' else outside
            y[part] = fn(x[part].contiguous(), name, HALF_LEVEL, seed=1009 * i + 7 * j)
            family = OUTSIDE_LEVELS[name][0] if source == 'outside' else None
            if family is None:
                from crossiqa_pyiqa.degradations.families import TYPE_FAMILIES

                family = TYPE_FAMILIES[name].family
            row = {'photo': os.path.basename(path), 'source': source, 'distortion': name, 'family': family,
                   'side': 'left' if side == 0 else 'right'}
            with torch.inference_mode():
                enc = encode_maps(net, net.prepare_input(y))
                row['score'] = float(net.score_features(enc['features']).reshape(-1)[0])
                raws = {kind: quality_map(net, enc, window, centre=False, penalty=pen, head_weight=weight,
                                          heads=heads)[0].numpy() for kind, (pen, weight, heads) in parts.items()}
                raws['map'] = head_weight * raws['head'] + raws['penalty']  # as explain reports it (uncentred)
                raws['crop'] = raws['head'] + raws.pop('crop_penalty')  # the earlier map
                for kind, raw in raws.items():
                    cols = raw.shape[1]
                    # cells wholly on one side (an odd number of columns leaves the middle one out)
                    left, right = raw[:, :cols // 2], raw[:, cols - cols // 2:]
                    deg, other = (left, right) if side == 0 else (right, left)
                    row.update({f'{kind}_degraded_mean': float(deg.mean()), f'{kind}_other_mean': float(other.mean()),
                                f'{kind}_lower': bool(deg.mean() < other.mean()),
                                f'{kind}_raw_mean': float(raw.mean())})
            row['lower'] = row['map_lower']
            rows.append(row)
    out: dict = {'rows': rows, 'penalty': penalty, 'head_weight': head_weight,
                 'map_heads': 'window' if getattr(net, 'diagnosis_map', None) is not None else 'crop'}
    scores = np.array([r['score'] for r in rows])
    if penalty:  # the map at other head weights (window heads if the file has them): how MAP_HEAD_WEIGHT was chosen
        out['head_weight_sweep'] = {
            str(b): float(np.mean([b * r['head_degraded_mean'] + r['penalty_degraded_mean']
                                   < b * r['head_other_mean'] + r['penalty_other_mean'] for r in rows]))
            for b in HEAD_WEIGHT_SWEEP}
    for kind in ('map', 'crop', 'head'):
        by = defaultdict(list)
        for r in rows:
            by[(r['source'], r['distortion'])].append(r[f'{kind}_lower'])
        means = np.array([r[f'{kind}_raw_mean'] for r in rows])
        prefix = '' if kind == 'map' else kind + '_'
        out[prefix + 'fraction_lower'] = float(np.mean([r[f'{kind}_lower'] for r in rows]))
        out[prefix + 'by_distortion'] = {f'{s}:{n}': float(np.mean(v)) for (s, n), v in by.items()}
        out[prefix + 'raw_map_vs_score'] = {'pearson': float(np.corrcoef(scores, means)[0, 1]),
                                            'mean_difference': float(np.mean(means - scores)),
                                            'sd_difference': float(np.std(means - scores))}
    return out


def polyu_study(net, folder: str, cache_dir: str) -> dict:
    from crossiqa_pyiqa.inputs import read_image

    reals = sorted(glob.glob(os.path.join(folder, '*_real.*')))
    pairs = []
    for r in reals:
        stem = r.rsplit('_real.', 1)[0]
        means = glob.glob(stem + '_mean.*')
        if means:
            pairs.append((r, means[0]))
    if not pairs:
        raise FileNotFoundError(f'no *_real / *_mean pairs in {folder}: prepare them with '
                                '`python scripts/prepare_data.py polyu`')
    paths = [p for pair in pairs for p in pair]
    reads = readings(net, cached_features(net, paths, lambda k: read_image(paths[k])[None], cache_dir, 'polyu'))
    noisy, clean = reads[0::2], reads[1::2]
    higher = [a['noise'] > b['noise'] for a, b in zip(noisy, clean)]
    return {'n': len(pairs), 'noise_higher_on_noisy': int(sum(higher)),
            'mean_noise_noisy': float(np.mean([a['noise'] for a in noisy])),
            'mean_noise_clean': float(np.mean([b['noise'] for b in clean])),
            'top_on_noisy': dict(Counter(top(a) for a in noisy).most_common())}


def markdown(result: dict) -> str:
    from crossiqa_pyiqa.degradations.families import FAMILIES

    lines = []
    for source, title in (('library', 'Library degradations'), ('outside', 'Distortions made outside the library '
                                                                           '(Pillow / numpy)')):
        if source not in result:  # --half_only
            continue
        s = result[source]
        lines += [f'**{title}, Kodak24 ({result["n_photos"]} photos).** Top family right at level >= 3: '
                  f'**{s["accuracy_ge3"]:.1%}** of {s["n_ge3"]} (photo, distortion, level) cases.', '',
                  '| family | L1 right | L2 | L3 | L4 | L5 | strength L1 → L5 | mean rises with level | '
                  'monotone per photo |', '|---|---|---|---|---|---|---|---|---|']
        for fam, f in s['family'].items():
            lv = f['levels']
            lines.append(f'| {fam} | ' + ' | '.join(f'{lv[k]["accuracy"]:.0%}' for k in range(1, 6))
                         + ' | ' + ' → '.join(f'{lv[k]["strength"]:.2f}' for k in range(1, 6))
                         + f' | {"yes" if f["mean_monotone"] else "no"} | {f["monotone_fraction"]:.0%} |')
        lines += ['', '| distortion | family | right (L>=3) | strength L1 → L5 | misread as (L>=3) |',
                  '|---|---|---|---|---|']
        for name, d in s['distortion'].items():
            mis = ', '.join(f'{k} {v}' for k, v in d['misread_as'].items()) or '-'
            extra = f' (direction {d["direction_accuracy_ge3"]:.0%})' if 'direction_accuracy_ge3' in d else ''
            lines.append(f'| {name} | {d["family"]} | {d["accuracy_ge3"]:.0%}{extra} | '
                         + ' → '.join(f'{v:.2f}' for v in d['strength_by_level']) + f' | {mis} |')
        p = s['pristine']
        lines += ['', 'Pristine photos: mean strength ' + ', '.join(f'{f} {p["mean"][f]:.2f}' for f in FAMILIES)
                  + f'; {p["max_over_0.3"]:.0%} have a family above 0.3.', '']
    nd = result.get('not_diagnosed', {})
    if nd:
        lines += ['**Types not diagnosed** (levels 3 and 5; what the heads say instead):', '',
                  '| type | top family (count) | ' + ' | '.join(FAMILIES) + ' |', '|---|---|' + '---|' * len(FAMILIES)]
    for name, d in nd.items():
        lines.append(f'| {name} | ' + ', '.join(f'{k} {v}' for k, v in d['top'].items()) + ' | '
                     + ' | '.join(f'{d["mean"][f]:.2f}' for f in FAMILIES) + ' |')
    h = result['half']
    pen = ', '.join(f'{k} {v:g}' for k, v in h['penalty'].items()) or 'none'
    lines += ['', f'**Half-degraded photos** (level {HALF_LEVEL}, the degraded side alternating; window '
              f'{result["window_px"]} px; map penalty per unit of strength: {pen}; {h.get("map_heads", "crop")} '
              f'diagnosis heads, score head weight {h.get("head_weight", 1.0):g}): the map is lower on the degraded '
              f'half in **{h["fraction_lower"]:.1%}** of {len(h["rows"])} cases (the earlier map, crop heads and head '
              f'weight 1: {h["crop_fraction_lower"]:.1%}; score head alone, no penalty: '
              f'{h["head_fraction_lower"]:.1%}).', '']
    if 'head_weight_sweep' in h:
        lines += ['The same maps at other score head weights (the map lower on the degraded half): '
                  + ', '.join(f'{b}: {v:.1%}' for b, v in h['head_weight_sweep'].items()) + '.', '']
    lines += ['| distortion | map lower on the degraded half | earlier map | score head alone |', '|---|---|---|---|']
    for name, v in h['by_distortion'].items():
        lines.append(f'| {name} | {v:.0%} | {h["crop_by_distortion"][name]:.0%} | '
                     f'{h["head_by_distortion"][name]:.0%} |')
    for key, what in (('raw_map_vs_score', 'Raw map (no centring)'), ('head_raw_map_vs_score',
                                                                      'Raw score head alone')):
        rel = h[key]
        lines += ['', f'{what} against the score on these photos: Pearson {rel["pearson"]:.3f}, mean of the map − '
                  f'score {rel["mean_difference"]:+.2f} (sd {rel["sd_difference"]:.2f}).']
    lines += ['']
    if 'polyu' in result:
        p = result['polyu']
        lines += [f'**Real camera noise** (PolyU, {p["n"]} pairs): `noise` higher on the noisy shot than on its clean '
                  f'mean in **{p["noise_higher_on_noisy"]}/{p["n"]}**; mean `noise` {p["mean_noise_noisy"]:.2f} '
                  f'(noisy) vs {p["mean_noise_clean"]:.2f} (clean); top family on the noisy shots: '
                  + ', '.join(f'{k} {v}' for k, v in p['top_on_noisy'].items()) + '.', '']
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--weights', default=None, help='CrossIQA weight file with diagnosis heads (default: the '
                        "shipped crossiqa's)")
    parser.add_argument('--kodak', default='datasets/pristine/kodak24')
    parser.add_argument('--polyu', default='datasets/polyu/CroppedImages', help="PolyU pairs ('' to skip)")
    parser.add_argument('--photos', type=int, default=24, help='Kodak photos used (default all 24)')
    parser.add_argument('--window', type=int, default=None, help='map window in cells (default: explain\'s)')
    parser.add_argument('--out', default='runs/explain_evidence')
    parser.add_argument('--cache_dir', default='runs/cache')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--no_penalty', action='store_true', help="the map without explain's penalty (the score "
                        'head alone)')
    parser.add_argument('--skip_half', action='store_true', help='skip the (uncached) half-degraded maps')
    parser.add_argument('--half_only', action='store_true', help='only the half-degraded maps (e.g. --kodak '
                        'datasets/pristine/mcmaster: the fitting photos, where MAP_HEAD_WEIGHT was chosen)')
    args = parser.parse_args(argv)
    from crossiqa_pyiqa.paths import resolve

    for key in ('weights', 'kodak', 'polyu', 'out', 'cache_dir'):
        setattr(args, key, resolve(getattr(args, key)))
    torch.set_num_threads(max(1, args.threads))
    import crossiqa_pyiqa  # noqa: F401
    from crossiqa_pyiqa.archs.crossiqa_arch import CrossIQA, default_weight_path, DEFAULT_WEIGHTS
    from crossiqa_pyiqa.degradations.families import DIAGNOSED_TYPES
    from crossiqa_pyiqa.explanation import DEFAULT_WINDOW, MAP_HEAD_WEIGHT, map_penalty_for
    from crossiqa_pyiqa.regression.features import folder_images

    start = time.time()
    weights = args.weights or default_weight_path(DEFAULT_WEIGHTS)
    net = CrossIQA(pretrained_model_path=weights)
    try:
        net.require_diagnosis()
        photos = folder_images(args.kodak)[:args.photos]
    except (RuntimeError, FileNotFoundError) as error:
        print(f'explain_evidence: error: {error}', file=sys.stderr)
        return 1
    window = args.window or DEFAULT_WINDOW
    cell = 32
    result: dict = {'weights': weights, 'photos': args.kodak, 'n_photos': len(photos), 'window_cells': window, 'window_px': window * cell,
                    'diagnosis': net.info.get('diagnosis', {}).get('date')}
    if args.half_only and args.skip_half:
        print('explain_evidence: error: --half_only and --skip_half leave nothing to do', file=sys.stderr)
        return 2
    if not args.half_only:
        result['library'] = summarise_levels(level_study(net, photos, 'library', list(DIAGNOSED_TYPES),
                                                         args.cache_dir)['rows'])
        result['outside'] = summarise_levels(level_study(net, photos, 'outside', list(OUTSIDE_LEVELS),
                                                         args.cache_dir)['rows'])
        result['not_diagnosed'] = not_diagnosed(net, photos, args.cache_dir)
    if not args.skip_half:
        weight = MAP_HEAD_WEIGHT if net.diagnosis_map is not None and not args.no_penalty else 1.0
        result['half'] = half_study(net, photos, window, {} if args.no_penalty else map_penalty_for(net), weight)
    if args.polyu and not args.half_only:
        try:
            result['polyu'] = polyu_study(net, args.polyu, args.cache_dir)
        except FileNotFoundError as error:
            print(f'explain_evidence: PolyU skipped: {error}', file=sys.stderr)
    result['seconds'] = round(time.time() - start, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'evidence.json').write_text(json.dumps(result, indent=1, default=str))
    if 'half' in result:
        (out / 'evidence.md').write_text(markdown(result) + f'\n{result["seconds"]:.0f} s\n')
        print(markdown(result))
    else:
        print(json.dumps({k: result[k].get('accuracy_ge3') for k in ('library', 'outside')}))
    print(f'{result["seconds"]:.0f} s; wrote {out / "evidence.json"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
