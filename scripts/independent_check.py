"""Pristine-vs-distorted check with distortions implemented outside this project.

The L/D tests (``benchmark.py --mode ranking``) use the project's own degradation
library, which also made the head's ranking pairs. This check uses Pillow's JPEG and
Gaussian blur and numpy's Gaussian noise on scikit-image's full-size photos, so it
shows what a metric does with distortions it never saw implemented this way:

    TORCH_HOME=../shared/data/torch_home python scripts/independent_check.py -m crossiqa niqe brisque

For each metric and distortion: on how many photos the clean version scores better.

With ``--levels`` each distortion is instead made at five strengths, the same ways (Pillow's
``ImageEnhance`` for colour, brightness and contrast, ``ImageOps.posterize``, numpy for gamma and a
colour cast), and the table gives, per distortion, the mean over photos of SRCC(score, -strength):
the L-test of ``benchmark.py --mode ranking`` on distortions the library did not make.

With ``--real_noise DIR`` the question is asked of real camera noise instead: DIR holds
(noisy, clean) pairs of the same scene, e.g. PolyU's ``CroppedImages`` (``X_real.JPG`` is a
single noisy shot, ``X_mean.JPG`` the average of many shots of the same scene):

    python scripts/independent_check.py -m crossiqa niqe brisque --real_noise datasets/polyu/CroppedImages

Pairing rule (see :func:`find_pairs`): an image file whose name without extension ends in
``--noisy_suffix`` (default ``_real``) is noisy, one ending in ``--clean_suffix`` (default
``_mean``) is clean, both compared case-insensitively; a noisy and a clean file pair when the
rest of their names is the same. Every image must be one of a pair. Images are read with the
plugin's reader (``crossiqa_pyiqa.inputs.read_image``) at native size. For each metric: on
how many pairs the clean image scores better, with a Clopper-Pearson 95% interval.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')

PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'immunohistochemistry', 'retina')
#: The camera photos among them; the other two are a stained microscope slide and a fundus image, whose
#: "quality" under a tone or contrast change is not a photo's (``--levels`` reports both means).
NATURAL_PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket')


def distortions(rgb):
    """Name -> uint8 RGB array; JPEG and blur by Pillow, noise by numpy (seeded)."""
    import numpy as np
    from PIL import Image

    pil = Image.fromarray(rgb)
    out = {f'jpeg q{quality}': np.asarray(_jpeg(pil, rgb, quality)) for quality in (30, 10)}
    rng = np.random.default_rng(0)
    for sigma in (5, 10, 25):
        out[f'noise σ{sigma}'] = np.clip(rgb + rng.normal(0, sigma, rgb.shape), 0, 255).astype(np.uint8)
    for radius in (1, 3):
        out[f'blur r{radius}'] = np.asarray(_blur(pil, rgb, radius))
    return out


def _enhance(kind: str):
    def apply(pil, rgb, factor):
        from PIL import ImageEnhance

        return getattr(ImageEnhance, kind)(pil).enhance(factor)
    return apply


def _jpeg(pil, rgb, quality):
    from PIL import Image

    buf = io.BytesIO()
    pil.save(buf, 'JPEG', quality=int(quality))
    return Image.open(buf).convert('RGB')


def _blur(pil, rgb, radius):
    from PIL import ImageFilter

    return pil.filter(ImageFilter.GaussianBlur(radius))


def _noise(pil, rgb, sigma):
    import numpy as np

    return np.clip(rgb + np.random.default_rng(0).normal(0, sigma, rgb.shape), 0, 255)


def _gamma(pil, rgb, gamma):
    return 255.0 * (rgb / 255.0) ** gamma


def _cast(pil, rgb, amount):
    import numpy as np

    return np.clip(rgb * np.array([1 + amount, 1.0, 1 - amount]), 0, 255)


def _posterize(pil, rgb, bits):
    from PIL import ImageOps

    return ImageOps.posterize(pil, int(bits))


#: ``--levels``: name -> (how, five strengths from weak to strong); none of them uses the project's library.
LADDERS = {
    'jpeg': (_jpeg, (50, 30, 20, 10, 5)),
    'blur': (_blur, (0.5, 1, 2, 3, 4)),
    'noise': (_noise, (3, 6, 10, 15, 25)),
    'desaturation': (_enhance('Color'), (0.8, 0.6, 0.4, 0.2, 0.0)),
    'oversaturation': (_enhance('Color'), (1.3, 1.6, 2.0, 2.5, 3.0)),
    'darkening': (_enhance('Brightness'), (0.85, 0.7, 0.55, 0.4, 0.25)),
    'brightening': (_enhance('Brightness'), (1.2, 1.45, 1.7, 2.0, 2.4)),
    'contrast_down': (_enhance('Contrast'), (0.8, 0.6, 0.45, 0.3, 0.2)),
    'contrast_up': (_enhance('Contrast'), (1.3, 1.6, 2.0, 2.5, 3.0)),
    'gamma': (_gamma, (1.3, 1.6, 2.0, 2.5, 3.0)),
    'colour_cast': (_cast, (0.05, 0.1, 0.15, 0.2, 0.3)),
    'posterize': (_posterize, (6, 5, 4, 3, 2)),
}


def ladder(rgb, name: str) -> list:
    """The five uint8 RGB versions of ``rgb`` for ``LADDERS[name]``, weak to strong."""
    import numpy as np
    from PIL import Image

    how, strengths = LADDERS[name]
    pil = Image.fromarray(rgb)
    return [np.asarray(how(pil, rgb.astype(np.float64), s)).round().clip(0, 255).astype(np.uint8)
            for s in strengths]


def ladder_srcc(scores) -> float:
    """SRCC(score, -strength) over one ladder's five versions (higher-better scores); 0 for a constant score."""
    import numpy as np
    from scipy.stats import spearmanr

    rho = spearmanr(scores, -np.arange(1, len(scores) + 1))[0]
    return float(rho) if np.isfinite(rho) else 0.0


def levels_check(metric_names, photos, tensor, ladders=tuple(LADDERS),
                 per_photo: dict | None = None) -> list[tuple[str, dict[str, float]]]:
    """Per metric: per ladder, the mean over photos of SRCC(score, -level); 'all' is the mean of the ladders.

    ``per_photo``, when given, is filled with ``{metric: {photo: {ladder: SRCC}}}``: a mean over six photos
    hides which photo a metric fails on (docs/ABLATIONS.md, tenth round).
    """
    import numpy as np
    import pyiqa

    rows = []
    for metric_name in metric_names:
        metric = pyiqa.create_metric(metric_name, device='cpu')
        sign = -1.0 if metric.lower_better else 1.0
        result = {}
        table = {photo: {} for photo in photos}
        for name in ladders:
            for photo, rgb in photos.items():
                table[photo][name] = ladder_srcc([sign * float(metric(tensor(x))) for x in ladder(rgb, name)])
            result[name] = float(np.mean([table[photo][name] for photo in photos]))
        result['all'] = float(np.mean(list(result.values())))
        rows.append((metric_name, result))
        if per_photo is not None:
            per_photo[metric_name] = table
        print(f'{metric_name}: {result}', file=sys.stderr, flush=True)
    return rows


def print_levels_tables(rows, per_photo: dict, natural=NATURAL_PHOTOS) -> None:
    """The ``--levels`` tables: per ladder over every photo, the same over the camera photos only, and per photo."""
    import numpy as np

    names = list(rows[0][1])
    photos = list(next(iter(per_photo.values())))
    subsets = [(photos, f'Mean over {len(photos)} scikit-image photos')]
    camera = [p for p in photos if p in natural]
    if camera and len(camera) < len(photos):
        subsets.append((camera, f'Mean over the {len(camera)} camera photos ({", ".join(camera)})'))
    for subset, title in subsets:
        print(f'{title} of SRCC(score, -strength), five strengths per distortion (Pillow / numpy):\n')
        print('| metric | ' + ' | '.join(names) + ' |')
        print('|---|' + '---|' * len(names))
        for metric_name, _ in rows:
            table = per_photo[metric_name]
            values = {n: float(np.mean([table[p][n] for p in subset])) for n in names if n != 'all'}
            values['all'] = float(np.mean(list(values.values())))
            print(f'| {metric_name} | ' + ' | '.join(f'{values[n]:.2f}' for n in names) + ' |')
        print()
    print('Per photo, mean over the distortions:\n')
    print('| metric | ' + ' | '.join(photos) + ' |')
    print('|---|' + '---|' * len(photos))
    for metric_name, _ in rows:
        table = per_photo[metric_name]
        print(f'| {metric_name} | ' + ' | '.join(f'{np.mean(list(table[p].values())):.2f}' for p in photos) + ' |')


IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def find_pairs(folder, noisy_suffix: str = '_real', clean_suffix: str = '_mean') -> list[tuple[str, Path, Path]]:
    """``(key, noisy path, clean path)`` for each pair in ``folder`` (not recursive), sorted by key.

    Image files (by extension) whose stem ends in ``noisy_suffix`` / ``clean_suffix``
    (case-insensitive) are noisy / clean; the key is the stem without the suffix. Raises
    ``ValueError`` naming the files when an image is neither, has no partner, or a key is
    taken twice, and when the folder holds no pair at all. Other files are ignored.
    """
    from crossiqa_pyiqa.paths import dataset_of, resolve

    folder = Path(resolve(folder))  # datasets/... under $CROSSIQA_HOME
    if not folder.is_dir():
        name = dataset_of(folder)
        how = f' (prepare it with `python scripts/prepare_data.py {name}`)' if name else ''
        raise ValueError(f'--real_noise {folder}: not a folder{how}')
    if noisy_suffix.lower() == clean_suffix.lower() or not noisy_suffix or not clean_suffix:
        raise ValueError('the noisy and clean suffixes must differ and be non-empty, '
                         f'got {noisy_suffix!r}, {clean_suffix!r}')
    sides: dict[str, dict[str, list[Path]]] = {'noisy': {}, 'clean': {}}
    neither = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        stem = path.stem
        for side, suffix in (('noisy', noisy_suffix), ('clean', clean_suffix)):
            if stem.lower().endswith(suffix.lower()):
                sides[side].setdefault(stem[:-len(suffix)], []).append(path)
                break
        else:
            neither.append(path.name)
    problems = []
    if neither:
        problems.append(f'{len(neither)} image(s) end in neither {noisy_suffix!r} nor {clean_suffix!r}: '
                        + ', '.join(neither[:5]) + (' ...' if len(neither) > 5 else ''))
    for side, other in (('noisy', 'clean'), ('clean', 'noisy')):
        twice = [p.name for paths in sides[side].values() if len(paths) > 1 for p in paths]
        if twice:
            problems.append(f'{side} files share a name up to the extension: ' + ', '.join(twice[:6]))
        alone = [paths[0].name for key, paths in sides[side].items() if key not in sides[other]]
        if alone:
            problems.append(f'{len(alone)} {side} image(s) have no {other} partner: '
                            + ', '.join(alone[:5]) + (' ...' if len(alone) > 5 else ''))
    if problems:
        raise ValueError(f'--real_noise {folder}: ' + '; '.join(problems)
                         + f' (pairs are NAME{noisy_suffix}.EXT (noisy) and NAME{clean_suffix}.EXT (clean))')
    keys = sorted(sides['noisy'])
    if not keys:
        raise ValueError(f'--real_noise {folder}: no (noisy, clean) pair found; expected image files '
                         f'NAME{noisy_suffix}.EXT (noisy) and NAME{clean_suffix}.EXT (clean)')
    return [(key, sides['noisy'][key][0], sides['clean'][key][0]) for key in keys]


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial proportion k/n."""
    from scipy.stats import beta

    alpha = 1 - level
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def real_noise_check(metric_names, folder, noisy_suffix: str = '_real', clean_suffix: str = '_mean',
                     progress: bool = True) -> list[dict]:
    """Score every pair of :func:`find_pairs` with each metric; one result dict per metric.

    A dict holds ``metric``, ``pairs``, ``won`` (clean scored better, respecting
    ``lower_better``), ``ties``, ``fraction``, ``ci`` (95%), ``seconds``, ``scores``
    (key -> (noisy, clean) raw scores), or ``error`` when the metric cannot be built.
    """
    import pyiqa
    import torch
    from tqdm import tqdm

    import crossiqa_pyiqa  # noqa: F401  (registers the plugin's metrics)
    from crossiqa_pyiqa.inputs import read_image

    pairs = find_pairs(folder, noisy_suffix, clean_suffix)
    print(f'{len(pairs)} (noisy, clean) pairs in {folder}', file=sys.stderr, flush=True)
    results = []
    for metric_name in metric_names:
        try:
            metric = pyiqa.create_metric(metric_name, device='cpu')
        except Exception as error:  # report and go on with the other metrics
            text = (str(error).strip().splitlines() or [''])[0]
            print(f'{metric_name}: cannot be built: {type(error).__name__}: {text}', file=sys.stderr, flush=True)
            results.append({'metric': metric_name, 'error': f'{type(error).__name__}: {text}'})
            continue
        sign = -1.0 if metric.lower_better else 1.0
        scores: dict[str, tuple[float, float]] = {}
        start = time.perf_counter()
        with torch.no_grad():
            for key, noisy_path, clean_path in tqdm(pairs, desc=metric_name, unit='pair', disable=not progress):
                noisy, clean = read_image(noisy_path)[None], read_image(clean_path)[None]
                if noisy.shape != clean.shape:
                    print(f'{key}: noisy {tuple(noisy.shape[-2:])} and clean {tuple(clean.shape[-2:])} differ in size',
                          file=sys.stderr)
                scores[key] = (float(metric(noisy)), float(metric(clean)))
        seconds = time.perf_counter() - start
        won = sum(sign * c > sign * n for n, c in scores.values())
        ties = sum(c == n for n, c in scores.values())
        results.append({'metric': metric_name, 'pairs': len(pairs), 'won': won, 'ties': ties,
                        'fraction': won / len(pairs), 'ci': clopper_pearson(won, len(pairs)),
                        'seconds': seconds, 'scores': scores, 'lower_better': bool(metric.lower_better)})
        print(f'{metric_name}: clean better on {won}/{len(pairs)} pairs ({seconds:.0f} s)', file=sys.stderr, flush=True)
        del metric
    return results


def print_real_noise_table(results, folder) -> None:
    done = [r for r in results if 'error' not in r]
    n = done[0]['pairs'] if done else 0
    print(f'Clean (averaged) image scored better than the noisy shot of the same scene, of {n} pairs in {folder}:\n')
    print('| metric | clean better | fraction | 95% CI (Clopper-Pearson) | ties | seconds |')
    print('|---|---|---|---|---|---|')
    for r in results:
        if 'error' in r:
            print(f"| {r['metric']} | not built: {r['error']} | | | | |")
            continue
        lo, hi = r['ci']
        print(f"| {r['metric']} | {r['won']}/{r['pairs']} | {r['fraction']:.3f} | {lo:.3f}-{hi:.3f} | "
              f"{r['ties']} | {r['seconds']:.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('-m', nargs='+', default=['crossiqa', 'niqe', 'brisque'], help='pyiqa metric names')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--real_noise', metavar='DIR', default=None,
                        help='instead: a folder of (noisy, clean) pairs of real photos, '
                        'NAME_real.EXT and NAME_mean.EXT')
    parser.add_argument('--levels', action='store_true',
                        help='instead: five strengths per distortion, mean SRCC(score, -strength) per distortion')
    parser.add_argument('--noisy_suffix', default='_real', help='with --real_noise: stem suffix of noisy images')
    parser.add_argument('--clean_suffix', default='_mean', help='with --real_noise: stem suffix of clean images')
    args = parser.parse_args(argv)

    if args.real_noise is not None:
        from crossiqa_pyiqa.paths import resolve

        args.real_noise = resolve(args.real_noise)
        import torch

        torch.set_num_threads(args.threads)
        try:
            find_pairs(args.real_noise, args.noisy_suffix, args.clean_suffix)  # fail before any metric is built
        except ValueError as error:
            parser.error(str(error))
        results = real_noise_check(args.m, args.real_noise, args.noisy_suffix, args.clean_suffix)
        print_real_noise_table(results, args.real_noise)
        return 0 if any('error' not in r for r in results) else 1

    import numpy as np
    import pyiqa
    import torch
    from skimage import data

    import crossiqa_pyiqa  # noqa: F401  (registers the plugin's metrics)

    torch.set_num_threads(args.threads)

    def tensor(rgb: np.ndarray) -> torch.Tensor:
        # a copy: arrays from Pillow are read-only
        return torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].float() / 255

    photos = {name: getattr(data, name)() for name in PHOTOS}
    if args.levels:
        per_photo: dict = {}
        rows = levels_check(args.m, photos, tensor, per_photo=per_photo)
        print_levels_tables(rows, per_photo)
        return 0
    rows = []
    for metric_name in args.m:
        metric = pyiqa.create_metric(metric_name, device='cpu')
        sign = -1.0 if metric.lower_better else 1.0
        wins: dict[str, int] = {}
        for rgb in photos.values():
            clean = sign * float(metric(tensor(rgb)))
            for name, distorted in distortions(rgb).items():
                wins[name] = wins.get(name, 0) + int(clean > sign * float(metric(tensor(distorted))))
        rows.append((metric_name, wins))
        print(f'{metric_name}: {wins}', file=sys.stderr, flush=True)
    names = list(rows[0][1])
    print(f'Clean photo scored better than its distorted version, of {len(photos)} scikit-image photos:\n')
    print('| metric | ' + ' | '.join(names) + ' |')
    print('|---|' + '---|' * len(names))
    for metric_name, wins in rows:
        print(f'| {metric_name} | ' + ' | '.join(str(wins[n]) for n in names) + ' |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
