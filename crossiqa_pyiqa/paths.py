"""Where data and outputs live: ``datasets/`` and ``runs/`` under ``$CROSSIQA_HOME``.

Options files, like pyiqa's own (``./datasets/<name>/...``), name data by relative
paths. Two prefixes are the plugin's layout:

- ``datasets/...``: the prepared datasets (``python scripts/prepare_data.py NAME``);
- ``runs/...``: outputs and caches (benchmarks, fitted heads, feature caches).

A path that starts with ``datasets/`` or ``runs/`` (or ``./datasets/``, ``./runs/``)
is read under the folder named by the environment variable ``CROSSIQA_HOME``; when
it is unset or empty, under the current working directory (the path stays relative,
as pyiqa's do). Every other path, absolute or relative, is left as it is.

=============================  ========================================================
``datasets/livec/``            CLIVE: ``Images/`` + ``meta_info_LIVEChallengeDataset.csv``
``datasets/pristine/``         ``bsds500/``, ``kodak24/``, ``mcmaster/`` (pristine photos)
``datasets/pretext/``          ``imagenet/``, ``coco/`` (unlabelled photos, short side >= 224)
``datasets/polyu/``            ``CroppedImages/`` (PolyU real noisy / mean pairs)
=============================  ========================================================
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ['HOME_ENV', 'PREFIXES', 'DATASETS', 'MissingDatasetError', 'crossiqa_home', 'resolve', 'resolve_tree',
           'dataset_of', 'require']

HOME_ENV = 'CROSSIQA_HOME'
PREFIXES = ('datasets', 'runs')

#: Datasets that ``scripts/prepare_data.py`` lays out, and their folder under ``datasets/``.
DATASETS = {
    'livec': 'datasets/livec',
    'pristine': 'datasets/pristine',
    'pretext': 'datasets/pretext',
    'polyu': 'datasets/polyu',
}


class MissingDatasetError(FileNotFoundError):
    """A dataset folder or file of the layout is missing (the message names the command that prepares it)."""


def crossiqa_home() -> str:
    """``$CROSSIQA_HOME`` as an absolute path, or ``''`` (the current working directory) when unset.

    Absolute, so that resolving twice changes nothing: a relative home such as ``runs/study/home``
    is itself a ``runs/...`` path and would otherwise be put under the home a second time.
    """
    home = os.environ.get(HOME_ENV, '').strip()
    return os.path.abspath(os.path.expanduser(home)) if home else ''


def _layout_relative(path: str) -> str | None:
    """``datasets/x`` for ``datasets/x`` or ``./datasets/x``; None for any other path."""
    if os.path.isabs(path):
        return None
    norm = path.replace('\\', '/')
    while norm.startswith('./'):
        norm = norm[2:]
    head = norm.split('/', 1)[0]
    if head in PREFIXES and '/' in norm:
        return norm
    return None


def resolve(path: Any) -> Any:
    """``datasets/...`` and ``runs/...`` under ``$CROSSIQA_HOME``; anything else unchanged."""
    if not isinstance(path, (str, os.PathLike)):
        return path
    text = os.fspath(path)
    rel = _layout_relative(text)
    if rel is None:
        return path
    home = crossiqa_home()
    out = os.path.join(home, rel) if home else rel
    return Path(out) if isinstance(path, Path) else out


def resolve_tree(obj: Any) -> Any:
    """:func:`resolve` applied to every string of a nested options structure (dicts and lists)."""
    if isinstance(obj, dict):
        return {k: resolve_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [resolve_tree(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(resolve_tree(v) for v in obj)
    if isinstance(obj, str):
        return resolve(obj)
    return obj


def dataset_of(path: str | os.PathLike) -> str | None:
    """The dataset of the layout (``livec``, ...) that ``path`` lies in, or None."""
    try:
        target = Path(path).resolve()
    except OSError:
        return None
    for name, folder in DATASETS.items():
        root = Path(resolve(folder)).resolve()
        if target == root or root in target.parents:
            return name
    return None


def require(path: str | os.PathLike, what: str = 'path') -> str:
    """``path`` (resolved) if it exists; else :class:`MissingDatasetError` in one line naming the prepare command."""
    resolved = os.fspath(resolve(path))
    if os.path.exists(resolved):
        return resolved
    name = dataset_of(resolved)
    if name is not None:
        raise MissingDatasetError(f'{what} {resolved} does not exist: prepare the dataset with '
                                  f'`python scripts/prepare_data.py {name}` (data under ${HOME_ENV} or the current '
                                  'directory)')
    raise FileNotFoundError(f'{what} {resolved} does not exist')
