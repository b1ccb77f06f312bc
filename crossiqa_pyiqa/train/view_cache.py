"""Degraded views of pretext crops with their frozen-backbone maps, computed once and reused.

In the CNN pretext (DESIGN §2.4) the backbone's early stages stay frozen with fixed
batch-norm statistics, so their output for a given degraded crop never changes during
training. The cache holds, per crop, ``views`` differently degraded versions, each as

- ``maps``: the output of the last frozen stage (float16), the input of the trainable stages;
- ``stats``: the global statistics the quality code reads (``quality_global_stages``);
- ``targets``: the statistics decoder's targets (``archs.stats_decoder.quality_statistics``);
- ``spec_types`` / ``spec_levels``: the view's degradation spec, step by step (int16 index into
  the key's ``degradation_types``, -1 past the spec's end; float32 level), so a pretext term can
  ask what was done to a view without rendering it again (format 2).

A training step then pairs two views of one crop and runs only the trainable stages, the
quality read-out and the decoder. Views of a crop give views*(views-1) ordered pairs.

The cache is written in shards (a killed build resumes at the first missing shard) under a
folder with a ``key.json`` describing everything its content depends on (backbone weights,
frozen stages, crop, degradations, targets, images, seed). A cache whose key differs from
the options is refused with the differing entries named, never silently reused.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

CACHE_FORMAT = 2  # 2: the views' degradation specs are stored (format 1 caches are refused)
SHARD_KEYS = ('maps', 'stats', 'targets', 'spec_types', 'spec_levels')


class ViewCacheError(ValueError):
    """The cache folder does not belong to these options (or is damaged)."""


def frozen_weights_digest(backbone: torch.nn.Module, first_trainable: int) -> str:
    """SHA-256 of the stem and the frozen stages' weights and batch-norm statistics."""
    h = hashlib.sha256()
    modules = [backbone.conv_stem, backbone.bn1, *backbone.stages()[:first_trainable]]
    for i, module in enumerate(modules):
        for name, t in sorted(module.state_dict().items()):
            h.update(f'{i}.{name}{tuple(t.shape)}'.encode())
            h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    """Drop every module, class and function docstring (string literals used as values stay)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def code_digest(paths: Sequence[str | os.PathLike]) -> str:
    """SHA-256 of what the Python files *do*: their syntax trees without docstrings, comments or layout.

    A docstring, comment or line-wrapping edit keeps the digest (and so keeps a cache built by the
    same code valid); any change to code, including string literals passed as arguments, changes it.
    """
    h = hashlib.sha256()
    for path in sorted(paths, key=lambda p: os.path.basename(p)):
        with open(path, 'rb') as f:
            tree = _strip_docstrings(ast.parse(f.read(), filename=str(path)))
        h.update(os.path.basename(path).encode() + b'\0' + ast.dump(tree, include_attributes=False).encode() + b'\0')
    return h.hexdigest()


def degradations_code_digest() -> str:
    """Digest of the degradation library's code (``code_digest``): a cache made by other code is another cache."""
    from pathlib import Path

    import crossiqa_pyiqa.degradations as package

    return code_digest(list(Path(package.__file__).parent.glob('*.py')))


def images_digest(paths: Sequence[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f'{os.path.basename(p)}:{st.st_size}\n'.encode())
    return h.hexdigest()


def encode_specs(specs: Sequence[Sequence[tuple[str, float]]], names: Sequence[str], width: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Degradation specs as tensors: (N, width) int16 index into ``names`` (-1: no step) and float32 levels."""
    index = {n: i for i, n in enumerate(names)}
    types = torch.full((len(specs), width), -1, dtype=torch.int16)
    levels = torch.zeros(len(specs), width, dtype=torch.float32)
    for i, spec in enumerate(specs):
        if len(spec) > width:
            raise ValueError(f'spec {i} has {len(spec)} steps, more than the {width} stored per view')
        for j, (name, level) in enumerate(spec):
            if name not in index:
                raise ValueError(f'spec {i}: degradation {name!r} is not one of the cached types {list(names)}')
            types[i, j], levels[i, j] = index[name], float(level)
    return types, levels


def _diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [f'{k}: cache {a.get(k, "<absent>")!r} vs options {b.get(k, "<absent>")!r}' for k in keys
            if a.get(k) != b.get(k)]


class ViewCache:
    """Shards of cached views in a folder; ``build`` fills it, ``load`` reads it back whole."""

    def __init__(self, folder: str, key: dict[str, Any], crops: int, views: int, shard_crops: int = 64) -> None:
        if crops < 1 or views < 2 or shard_crops < 1:
            raise ValueError(f'view cache needs crops >= 1, views >= 2 and shard_crops >= 1; got crops={crops}, '
                             f'views={views}, shard_crops={shard_crops}')
        self.folder = folder
        self.crops, self.views, self.shard_crops = int(crops), int(views), int(shard_crops)
        self.key = {**key, 'format': CACHE_FORMAT, 'crops': self.crops, 'views': self.views,
                    'shard_crops': self.shard_crops}
        self.n_shards = -(-self.crops // self.shard_crops)

    def _shard_path(self, i: int) -> str:
        return os.path.join(self.folder, f'shard_{i:05d}.safetensors')

    def check_key(self) -> bool:
        """True if the folder holds (part of) this cache; raises if it holds another one."""
        path = os.path.join(self.folder, 'key.json')
        if not os.path.isfile(path):
            if any(n.startswith('shard_') for n in os.listdir(self.folder)) if os.path.isdir(self.folder) else False:
                raise ViewCacheError(f'View cache folder {self.folder} has shards but no key.json; delete the folder '
                                     'or point datasets.train.view_cache.dir elsewhere.')
            return False
        with open(path) as f:
            stored = json.load(f)
        diff = _diff(stored, self.key)
        if diff:
            raise ViewCacheError(f'View cache {self.folder} was built for other options, refusing to reuse it:\n  '
                                 + '\n  '.join(diff) + '\nDelete the folder or set datasets.train.view_cache.dir '
                                 'to a new one.')
        return True

    def missing_shards(self) -> list[int]:
        return [i for i in range(self.n_shards) if not os.path.isfile(self._shard_path(i))]

    def build(self, make_shard, progress: bool = True) -> None:
        """Write every missing shard: ``make_shard(first_crop, n_crops)`` returns the ``SHARD_KEYS`` tensors."""
        from safetensors.torch import save_file

        os.makedirs(self.folder, exist_ok=True)
        if not self.check_key():
            tmp = os.path.join(self.folder, 'key.json.tmp')
            with open(tmp, 'w') as f:
                json.dump(self.key, f, indent=1, sort_keys=True)
            os.replace(tmp, os.path.join(self.folder, 'key.json'))
        missing = self.missing_shards()
        bar = tqdm(total=self.crops, initial=(self.n_shards - len(missing)) * self.shard_crops, unit='crop',
                   desc='view cache', disable=not progress, dynamic_ncols=True)
        for i in missing:
            first = i * self.shard_crops
            n = min(self.shard_crops, self.crops - first)
            tensors = make_shard(first, n)
            for name in SHARD_KEYS:
                if name not in tensors:
                    raise RuntimeError(f'shard {i}: the shard maker returned no {name!r}')
                if tensors[name].shape[:2] != (n, self.views):
                    raise RuntimeError(f'shard {i}: {name} has shape {tuple(tensors[name].shape)}, '
                                       f'expected ({n}, {self.views}, ...)')
            tmp = self._shard_path(i) + '.tmp'
            save_file({k: tensors[k].contiguous() for k in SHARD_KEYS}, tmp)
            os.replace(tmp, self._shard_path(i))  # a killed build never leaves a half shard
            bar.update(n)
        bar.close()

    def load(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        if not self.check_key() or self.missing_shards():
            raise ViewCacheError(f'View cache {self.folder} is incomplete ({len(self.missing_shards())} of '
                                 f'{self.n_shards} shards missing); build it first.')
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in SHARD_KEYS}
        for i in range(self.n_shards):
            try:
                shard = load_file(self._shard_path(i))
            except Exception as error:  # noqa: BLE001  (safetensors raises several kinds)
                raise ViewCacheError(f'View cache shard {self._shard_path(i)} cannot be read ({error}); delete it '
                                     'and run again to rebuild it.') from error
            for k in SHARD_KEYS:
                parts[k].append(shard[k])
        return {k: torch.cat(v) for k, v in parts.items()}


class CachedPairDataset(Dataset):
    """Pairs of different views of one cached crop; sample ``n`` is a pure function of ``(seed, n)``."""

    def __init__(self, cache: dict[str, torch.Tensor], seed: int = 0) -> None:
        self.cache, self.seed = cache, seed
        self.crops, self.views = cache['maps'].shape[:2]

    def __len__(self) -> int:  # the sampler decides how many samples are drawn
        return 2 ** 62

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])
        i = int(rng.integers(self.crops))
        va, vb = (int(v) for v in rng.choice(self.views, size=2, replace=False))
        out = {}
        for name in SHARD_KEYS:
            out[f'{name}_a'] = self.cache[name][i, va]
            out[f'{name}_b'] = self.cache[name][i, vb]
        return out
