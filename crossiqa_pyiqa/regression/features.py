"""Frozen-encoder features, extracted once per (encoder, dataset, feature config) and cached.

The cache key is a content hash, so a cache entry can never be reused for other
weights or other images: the encoder's tensors (everything ``forward_features`` reads;
the head and the statistics fitted on top are excluded, so re-fitting a head reuses
the features), the dataset identity (paths, MOS, file sizes) and the inference
options. Partial results are flushed regularly so an interrupted extraction resumes.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

#: State-dict entries that do not influence ``forward_features`` (head and fitted statistics).
HEAD_KEYS = ('head.', 'feat_mean', 'feat_std', 'pristine_mean', 'pristine_cov', 'zs_', 'diagnosis.')


def progress(**kwargs: Any) -> tqdm:
    """tqdm that redraws rarely when stderr is a log file rather than a terminal."""
    return tqdm(mininterval=0.5 if sys.stderr.isatty() else 30.0, dynamic_ncols=True, **kwargs)


def default_cache_dir() -> Path:
    """``$CROSSIQA_HOME/cache`` (next to the user weights dir)."""
    from crossiqa_pyiqa.weights import user_weights_dir

    return user_weights_dir().parent / 'cache'


def encoder_fingerprint(net: torch.nn.Module) -> str:
    """sha256 of the tensors that define the features (names, shapes, dtypes, bytes)."""
    h = hashlib.sha256()
    for key, value in sorted(net.state_dict().items()):
        if key.startswith(HEAD_KEYS) or key.startswith('decoder.'):
            continue
        t = value.detach().to('cpu').contiguous()
        h.update(f'{key}:{tuple(t.shape)}:{t.dtype}'.encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b'')
    return h.hexdigest()


def feature_config(net: torch.nn.Module) -> dict[str, Any]:
    """The options that change the features of a fixed encoder (CrossIQA: its inference keys)."""
    config = getattr(net, 'config', None) or {}
    keys = getattr(net, 'INFERENCE_KEYS', None)
    if keys is not None:
        config = {k: v for k, v in config.items() if k in keys and k != 'tile_batch'}
    out = {'class': type(net).__name__, **{k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}}
    if 'photometric' in out.get('feature_tokens', ()):  # the statistics' definition, not only their name
        from crossiqa_pyiqa.archs.photometric import photometric_identity

        out['photometric'] = photometric_identity()
    return out


def cache_key(net: torch.nn.Module, identity: str) -> str:
    blob = json.dumps({'encoder': encoder_fingerprint(net), 'dataset': identity, 'config': feature_config(net)},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _save_npz(path: Path, **arrays: Any) -> None:
    tmp = path.with_name(path.name + '.tmp.npz')
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


@torch.inference_mode()
def extract(net: torch.nn.Module, n: int, read: Callable[[int], torch.Tensor], paths: Sequence[str],
            cache_file: str | os.PathLike | None = None, desc: str = 'features',
            flush_seconds: float = 30.0) -> np.ndarray:
    """``net.forward_features`` of images ``read(0..n-1)`` one at a time (native sizes), cached in ``cache_file``."""
    if not hasattr(net, 'forward_features'):
        raise TypeError(f'{type(net).__name__} has no forward_features(); it cannot be used as a feature extractor')
    cache = Path(cache_file) if cache_file else None
    if cache is not None and cache.is_file():
        data = np.load(cache, allow_pickle=False)
        if list(data['paths']) == list(paths):
            return data['features']
    partial = cache.with_name(cache.name.replace('.npz', '.partial.npz')) if cache is not None else None
    feats: list[np.ndarray] = []
    if partial is not None and partial.is_file():
        data = np.load(partial, allow_pickle=False)
        done = int(data['count'])
        if list(data['paths'][:done]) == list(paths[:done]):
            feats = list(data['features'][:done])
    net.eval()
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
    last_flush = time.time()
    bar = progress(total=n, initial=len(feats), desc=desc, unit='img')
    for i in range(len(feats), n):
        try:
            img = read(i)
        except Exception as error:
            raise RuntimeError(f'Cannot read image {paths[i]}: {error}') from error
        if img.dim() == 3:
            img = img[None]
        f = net.forward_features(img.float()).reshape(-1).double().cpu().numpy()
        if not np.isfinite(f).all():
            raise RuntimeError(f'Non-finite features for image {paths[i]}')
        feats.append(f)
        bar.update(1)
        if partial is not None and time.time() - last_flush > flush_seconds:
            _save_npz(partial, features=np.stack(feats), count=len(feats), paths=np.asarray(paths[:len(feats)]))
            last_flush = time.time()
    bar.close()
    features = np.stack(feats) if feats else np.zeros((0, 0))
    if cache is not None:
        _save_npz(cache, features=features, paths=np.asarray(list(paths)))
        if partial is not None and partial.exists():
            partial.unlink()
    return features


def dataset_features(net: torch.nn.Module, dataset, records, cache_dir: str | os.PathLike | None = None,
                     desc: str | None = None) -> np.ndarray:
    """Features (N, F) of every image of a built pyiqa dataset, aligned with ``records``."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    key = cache_key(net, records.identity)
    cache = cache_dir / 'features' / f'{records.name}-{type(net).__name__}-{key}.npz'
    return extract(net, len(dataset), lambda i: dataset[i]['img'], records.paths, cache,
                   desc=desc or f'features {records.name}')


def folder_images(folder: str | os.PathLike) -> list[str]:
    """Image files of a folder (recursively, sorted), with pyiqa's own scanner."""
    from pyiqa.utils import scandir_images

    from crossiqa_pyiqa.paths import dataset_of, resolve

    folder = resolve(folder)  # datasets/... under $CROSSIQA_HOME
    if not os.path.isdir(folder):
        name = dataset_of(folder)
        how = f': prepare it with `python scripts/prepare_data.py {name}`' if name else '.'
        raise FileNotFoundError(f'Image folder {folder} does not exist{how}')
    paths = scandir_images(str(folder))
    if not paths:
        raise FileNotFoundError(f'Image folder {folder} holds no images.')
    return paths


def folder_features(net: torch.nn.Module, folder: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                    ) -> tuple[np.ndarray, list[str]]:
    """Features of every image in a folder (e.g. pristine images for the zero-shot head)."""
    from crossiqa_pyiqa.inputs import read_image

    paths = folder_images(folder)
    h = hashlib.sha256('\n'.join(f'{p}\t{os.path.getsize(p)}' for p in paths).encode()).hexdigest()[:16]
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache = cache_dir / 'features' / f'folder-{Path(folder).name}-{cache_key(net, h)}.npz'
    feats = extract(net, len(paths), lambda i: read_image(paths[i]), paths, cache,
                    desc=f'features {Path(folder).name}')
    return feats, paths
