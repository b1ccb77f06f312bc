"""Fitting the diagnosis heads (``archs/diagnosis.py``) on synthetic crops, and adding them to a weight file.

No MOS: pristine photos (BSDS500 + McMaster; Kodak24 stays held out for the evidence) are cut
into random crops of mixed sizes and content; each photo gives ``pristine_crops`` untouched
crops (all targets 0) and, for every diagnosed library type
(``degradations/families.py``), one crop degraded at one seeded random level, whose target
is ``level / 5`` on its family's output(s) and 0 on the others. The encoder's
``forward_features`` of every crop is cached under ``cache_dir`` (a content key of encoder,
crops and levels, like the ranking pairs'), and one ridge per output is fitted on the
standardised features, its alpha by k-fold CV that keeps each photo's crops in one fold.

:func:`add_heads` writes the heads into a copy of the weight file: every other tensor, the
config and the provenance are copied as they are (so scores do not change by one bit), and
the metadata gains ``diagnosis``: outputs, the family table, data, levels, date, command.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

#: Defaults of the ``diagnosis`` section (``options/regress/crossiqa_diagnosis.yml``).
DIAGNOSIS_DEFAULTS: dict[str, Any] = {
    'pristine_dirs': None,  # folders of pristine photos (never the evaluation's Kodak24)
    'n_images': 150,  # photos drawn (seeded) from them
    'crops': [256, 384, 512],  # crop sides drawn per crop (clipped to the photo)
    'pristine_crops': 2,  # untouched crops per photo (targets 0)
    'min_family_crops': 4,  # per photo, a family of n types gets ceil(this / n) crops per type (contrast: 1 type)
    'types': 'diagnosed',  # 'diagnosed' (every type with a family) or a list of such types
    'levels': [1, 2, 3, 4, 5],  # one drawn per (photo, type)
    'seed': 0,
    'alphas': {'logspace': [-1, 5, 13]},
    'cv_folds': 5,
    # the quality map's window heads (``--map``): the same kind of crops of fewer photos, each crop read as
    # ``map_cells`` random windows of ``map_window`` x ``map_window`` cells (``archs/quality_map.py``)
    'map_images': 60,
    'map_window': 3,
    'map_cells': 12,
}


@dataclass
class DiagnosisItem:
    image: int  # index into the photo list
    dtype: str | None  # None: pristine
    level: int
    crop: tuple[int, int, int, int]  # y, x, h, w

    def key(self, path: str) -> str:
        return f'{path}|{self.dtype or "pristine"}|{self.level}|{",".join(map(str, self.crop))}'


def diagnosis_options(spec: dict[str, Any] | None) -> dict[str, Any]:
    """Checked ``diagnosis`` options (paths under ``$CROSSIQA_HOME``, types resolved)."""
    from crossiqa_pyiqa.degradations.families import DIAGNOSED_TYPES, TYPE_FAMILIES
    from crossiqa_pyiqa.paths import dataset_of, resolve
    from crossiqa_pyiqa.regression.options import alpha_grid

    spec = dict(spec or {})
    unknown = set(spec) - set(DIAGNOSIS_DEFAULTS)
    if unknown:
        raise ValueError(f'Unknown diagnosis option(s) {sorted(unknown)}; valid: {sorted(DIAGNOSIS_DEFAULTS)}')
    opts = {**DIAGNOSIS_DEFAULTS, **spec}
    dirs = opts['pristine_dirs']
    dirs = [dirs] if isinstance(dirs, (str, os.PathLike)) else list(dirs or [])
    if not dirs:
        raise ValueError('diagnosis.pristine_dirs: name the folders of pristine photos to degrade')
    dirs = [resolve(d) for d in dirs]
    for d in dirs:
        if not os.path.isdir(d):
            name = dataset_of(d)
            how = f': prepare it with `python scripts/prepare_data.py {name}`' if name else ''
            raise FileNotFoundError(f'diagnosis.pristine_dirs: {d} is not a folder{how}')
    types = opts['types']
    if types == 'diagnosed':
        types = list(DIAGNOSED_TYPES)
    else:
        types = [types] if isinstance(types, str) else list(types)
        bad = [t for t in types if t not in TYPE_FAMILIES or TYPE_FAMILIES[t].family is None]
        if bad or not types:
            raise ValueError(f'diagnosis.types: {bad or types} are not diagnosed library types; valid: '
                             f"'diagnosed' or a list of {', '.join(DIAGNOSED_TYPES)}")
    levels = [int(v) for v in opts['levels']]
    crops = [int(c) for c in opts['crops']]
    if not levels or any(not 1 <= v <= 5 for v in levels):
        raise ValueError(f"diagnosis.levels must be integers in 1..5, got {opts['levels']}")
    if not crops or min(crops) < 64:
        raise ValueError(f"diagnosis.crops must be sides of at least 64 px, got {opts['crops']}")
    if int(opts['n_images']) < int(opts['cv_folds']) or int(opts['cv_folds']) < 2:
        raise ValueError('diagnosis.n_images must be >= cv_folds >= 2')
    return {**opts, 'pristine_dirs': [str(d) for d in dirs], 'types': types, 'levels': levels, 'crops': crops,
            'n_images': int(opts['n_images']), 'pristine_crops': int(opts['pristine_crops']),
            'min_family_crops': int(opts['min_family_crops']), 'map_images': _at_least(opts, 'map_images', 2),
            'map_window': _odd_window(opts['map_window']), 'map_cells': _at_least(opts, 'map_cells', 1),
            'seed': int(opts['seed']), 'cv_folds': int(opts['cv_folds']), 'alphas': alpha_grid(opts['alphas'])}


def _at_least(opts: dict[str, Any], key: str, low: int) -> int:
    value = opts[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f'diagnosis.{key} must be an integer >= {low}, got {value!r}')
    return value


def _odd_window(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0:
        raise ValueError(f'diagnosis.map_window must be an odd number of cells (1, 3, 5, ...), got {value!r}')
    return value


def _photo_sizes(paths: Sequence[str]) -> list[tuple[int, int]]:
    """(height, width) of each photo as the plugin's reader sees it (EXIF orientation applied)."""
    from crossiqa_pyiqa.inputs import open_image

    return [open_image(p).size[::-1] for p in paths]


def diagnosis_items(paths: Sequence[str], sizes: Sequence[tuple[int, int]], opts: dict[str, Any]
                    ) -> list[DiagnosisItem]:
    """The seeded crop list: per photo, its pristine crops then, per type, crops at random levels (one, or more
    for families of few types: ``min_family_crops``)."""
    import math

    from crossiqa_pyiqa.degradations.families import TYPE_FAMILIES

    per_family = Counter(TYPE_FAMILIES[t].family for t in opts['types'])
    repeats = {t: max(1, math.ceil(opts['min_family_crops'] / per_family[TYPE_FAMILIES[t].family]))
               for t in opts['types']}
    rng = np.random.default_rng(opts['seed'] + 1)
    items = []
    for i, (h, w) in enumerate(sizes):
        for dtype in [None] * opts['pristine_crops'] + [t for t in opts['types'] for _ in range(repeats[t])]:
            side = int(rng.choice(opts['crops']))
            ch, cw = min(side, h), min(side, w)
            y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            level = 0 if dtype is None else int(rng.choice(opts['levels']))
            items.append(DiagnosisItem(i, dtype, level, (y, x, ch, cw)))
    return items


class DiagnosisReader:
    """Reads each photo once (items are grouped by photo) and degrades its crops with a seed per item."""

    def __init__(self, paths: Sequence[str], items: Sequence[DiagnosisItem], seed: int) -> None:
        self.paths, self.items, self.seed = list(paths), list(items), seed
        self._photo: tuple[int, torch.Tensor] | None = None

    def pristine(self, k: int) -> torch.Tensor:
        from crossiqa_pyiqa.inputs import read_image

        item = self.items[k]
        if self._photo is None or self._photo[0] != item.image:
            self._photo = (item.image, read_image(self.paths[item.image]))
        y, x, h, w = item.crop
        return self._photo[1][None, :, y:y + h, x:x + w]

    def __call__(self, k: int) -> torch.Tensor:
        from crossiqa_pyiqa.degradations import apply

        item = self.items[k]
        x = self.pristine(k)
        if item.dtype is None:
            return x
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + k)
        return apply(x, item.dtype, item.level, generator=g)


def target_matrix(items: Sequence[DiagnosisItem], reader: DiagnosisReader) -> np.ndarray:
    """(N, K) targets in ``HEAD_OUTPUTS`` order; types of measured direction are degraded again to read it."""
    from crossiqa_pyiqa.degradations.families import HEAD_OUTPUTS, TYPE_FAMILIES, targets, type_direction

    rows = []
    for k, item in enumerate(items):
        direction = None
        if item.dtype is not None:
            measured = TYPE_FAMILIES[item.dtype].direction == 'measured'
            direction = type_direction(item.dtype, *((reader.pristine(k), reader(k)) if measured else ()))
        t = targets(item.dtype, item.level, direction)
        rows.append([t[o] for o in HEAD_OUTPUTS])
    return np.asarray(rows, dtype=np.float64)


def _pristine_photos(dirs: Sequence[str], n: int, seed: int) -> list[str]:
    from crossiqa_pyiqa.regression.features import folder_images

    paths = [p for d in dirs for p in folder_images(d)]
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(paths), min(n, len(paths)), replace=False).tolist())
    return [paths[i] for i in chosen]


def diagnosis_data(net: torch.nn.Module, opts: dict[str, Any], cache_dir: str | os.PathLike | None = None
                   ) -> dict[str, Any]:
    """Features (cached), targets and photo groups of the synthetic crops."""
    from crossiqa_pyiqa.regression.features import cache_key, default_cache_dir, extract

    paths = _pristine_photos(opts['pristine_dirs'], opts['n_images'], opts['seed'])
    items = diagnosis_items(paths, _photo_sizes(paths), opts)
    reader = DiagnosisReader(paths, items, opts['seed'])
    keys = [it.key(paths[it.image]) for it in items]
    identity = json.dumps({'items': keys, 'sizes': [os.path.getsize(p) for p in paths], 'seed': opts['seed']},
                          sort_keys=True)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    cache = Path(cache_dir or default_cache_dir()) / 'features' / f'diagnosis-{cache_key(net, digest)}.npz'
    feats = extract(net, len(items), reader, keys, cache, desc='diagnosis crops')
    return {'features': feats, 'targets': target_matrix(items, reader),
            'groups': np.array([it.image for it in items]), 'items': items, 'paths': paths, 'cache': str(cache)}


def window_data(net: torch.nn.Module, opts: dict[str, Any]) -> dict[str, Any]:
    """Window features of synthetic crops (``map_images`` photos, the crop list of :func:`diagnosis_items`): per crop,
    ``map_cells`` random cells' ``map_window`` windows (``archs.quality_map.local_features``), each with its crop's
    targets. Not cached: about 0.1 s per crop on one CPU thread."""
    from crossiqa_pyiqa.archs.quality_map import encode_maps, local_features
    from crossiqa_pyiqa.regression.features import progress

    paths = _pristine_photos(opts['pristine_dirs'], opts['map_images'], opts['seed'])
    items = diagnosis_items(paths, _photo_sizes(paths), opts)
    reader = DiagnosisReader(paths, items, opts['seed'])
    targets = target_matrix(items, reader)
    rng = np.random.default_rng(opts['seed'] + 2)
    feats, rows, groups = [], [], []
    net.eval()
    bar = progress(total=len(items), desc='map windows', unit='crop')
    for k in range(len(items)):
        with torch.inference_mode():
            encoded = encode_maps(net, net.prepare_input(reader(k)))
            local = local_features(net, encoded, opts['map_window'])[0]
        flat = local.reshape(local.shape[0], -1).T.double().numpy()
        pick = rng.choice(flat.shape[0], min(opts['map_cells'], flat.shape[0]), replace=False)
        feats.append(flat[pick])
        rows.append(np.repeat(targets[k][None], len(pick), axis=0))
        groups.append(np.full(len(pick), items[k].image))
        bar.update(1)
    bar.close()
    return {'features': np.concatenate(feats), 'targets': np.concatenate(rows), 'groups': np.concatenate(groups),
            'items': items, 'paths': paths}


def fit_heads(features: np.ndarray, targets: np.ndarray, groups: np.ndarray, opts: dict[str, Any]):
    """One ridge per output on shared standardisation (``ridge.fit_ridge_multi``, photo-grouped CV)."""
    from crossiqa_pyiqa.regression.ridge import fit_ridge_multi

    return fit_ridge_multi(features, targets, opts['alphas'], opts['cv_folds'], opts['seed'], groups)


def _commit() -> str:
    import subprocess

    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(['git', 'describe', '--always', '--dirty'], cwd=root, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or 'unknown'
    except (OSError, subprocess.SubprocessError):
        return 'unknown'


def add_heads(weights: str | os.PathLike, out: str | os.PathLike, model, info: dict[str, Any],
              prefix: str | None = None) -> str:
    """Copy ``weights`` to ``out`` with the fitted heads (``MultiRidgeModel``) as ``diagnosis.*`` tensors (or
    ``prefix``: ``diagnosis_map.`` for the quality map's), their ``info`` in the metadata entry of that name.

    Every other tensor, the config and the provenance are written back unchanged.
    """
    from crossiqa_pyiqa.archs.diagnosis import DIAGNOSIS_PREFIX
    from crossiqa_pyiqa.weights import read_weights, save_weights

    prefix = prefix or DIAGNOSIS_PREFIX
    state, config, file_info = read_weights(weights, arch='CrossIQA')
    state = {k: v for k, v in state.items() if not k.startswith(prefix)}
    for name, value in (('mean', model.mean), ('std', model.std), ('coef', model.coef),
                        ('intercept', model.intercept)):
        state[prefix + name] = torch.as_tensor(np.asarray(value), dtype=torch.float32).contiguous()
    return str(save_weights(out, state, 'CrossIQA', config, {**file_info, prefix.rstrip('.'): info}))


def run_diagnosis_fit(opt: dict[str, Any], weights: str, out: str, command: str = '',
                      cache_dir: str | None = None, window_heads: bool = False) -> dict[str, Any]:
    """The whole fit: data, heads, file. Returns the provenance written to ``out``'s metadata.

    ``window_heads``: fit the quality map's heads (``diagnosis_map.*``, on window features, :func:`window_data`)
    instead of the crop heads; the file's other tensors, crop heads included, are kept as they are."""
    from crossiqa_pyiqa.archs.crossiqa_arch import CrossIQA
    from crossiqa_pyiqa.archs.diagnosis import MAP_DIAGNOSIS_PREFIX
    from crossiqa_pyiqa.degradations.families import HEAD_OUTPUTS, TYPE_FAMILIES
    from crossiqa_pyiqa.paths import crossiqa_home
    from crossiqa_pyiqa.regression.features import encoder_fingerprint
    from crossiqa_pyiqa.weights import file_sha256

    start = time.time()
    opts = diagnosis_options(opt.get('diagnosis'))
    net = CrossIQA(pretrained_model_path=weights)
    if window_heads:
        data = window_data(net, opts)
    else:
        data = diagnosis_data(net, opts, cache_dir or opt.get('cache_dir'))
    model = fit_heads(data['features'], data['targets'], data['groups'], opts)
    fitted = model.predict(data['features'])
    home = crossiqa_home()
    info = {
        'outputs': list(HEAD_OUTPUTS),
        'families': {t: (f.family, f.direction, list(f.also)) for t, f in TYPE_FAMILIES.items()},
        'types': list(opts['types']), 'levels': opts['levels'], 'crops': opts['crops'],
        'pristine_crops': opts['pristine_crops'], 'min_family_crops': opts['min_family_crops'],
        'n_images': len(data['paths']), 'n_rows': len(data['targets']),
        **({'window_cells': opts['map_window'], 'cells_per_crop': opts['map_cells'], 'n_crops': len(data['items'])}
           if window_heads else {}),
        'data': [os.path.relpath(d, home) if d.startswith(home) else d for d in opts['pristine_dirs']],
        'held_out': 'datasets/pristine/kodak24', 'seed': opts['seed'], 'target': 'level / 5 (pristine 0)',
        'alphas': {o: float(a) for o, a in zip(HEAD_OUTPUTS, model.alphas)},
        'train_rmse': {o: float(np.sqrt(((fitted[:, j] - data['targets'][:, j]) ** 2).mean()))
                       for j, o in enumerate(HEAD_OUTPUTS)},
        'encoder_file_sha256': file_sha256(weights), 'encoder_fingerprint': encoder_fingerprint(net),
        'date': datetime.now(timezone.utc).isoformat(timespec='seconds'), 'command': command, 'commit': _commit(),
        'machine': f'{os.cpu_count()} CPU threads, torch {torch.__version__}, {platform.machine()}',
        'seconds': round(time.time() - start, 1),
    }
    add_heads(weights, out, model, info, MAP_DIAGNOSIS_PREFIX if window_heads else None)
    return info


def diagnosis_schema() -> dict[str, Any]:
    """Options of ``scripts/fit_diagnosis.py`` (kind ``diagnosis``)."""
    from crossiqa_pyiqa.optionfile import ANY, REQUIRED

    return {REQUIRED: ('diagnosis',), 'name': ANY, 'diagnosis': {k: ANY for k in DIAGNOSIS_DEFAULTS}, 'cache_dir': ANY}
