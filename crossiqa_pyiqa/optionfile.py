"""Reading options files, and the machinery that checks them against a schema.

- Reading: YAML through a *safe* loader (no ``!!python/...`` tag can run code), key
  order kept, and numbers read as YAML 1.2 reads them: ``1e6``, ``1.5e-4`` and ``-2E3``
  are floats (PyYAML implements YAML 1.1, where they are strings, so a learning rate
  ``1e-4`` silently became the string ``'1e-4'``). ``--set key.path=value`` overrides
  use the same rules.
- Checking: :func:`validate_schema` walks an options mapping against a schema (known keys
  per section, required keys). An unknown key (``self_weigth``, ``manual_sed``) or a
  missing required one raises :class:`OptionsError` naming the key, its section, the file,
  a close match and the valid keys.
- Paths: values that start with ``datasets/`` or ``runs/`` are read under
  ``$CROSSIQA_HOME`` (default: the current directory; :mod:`crossiqa_pyiqa.paths`),
  in files and in ``--set`` overrides alike. Other paths stay as written.

The schemas themselves belong to the layers that read each kind of file
(``train/options.py``, ``regression/options.py``, ``benchmark/metrics.py``);
:mod:`crossiqa_pyiqa.options` checks any file by kind.
"""
from __future__ import annotations

import copy
import difflib
import os
import re
from typing import Any, Callable, Iterable, Mapping

import yaml

from crossiqa_pyiqa.paths import resolve_tree

__all__ = ['OptionsError', 'SafeOrderedLoader', 'to_plain', 'parse_value', 'load_options', 'apply_overrides',
           'ANY', 'MapOf', 'Keys', 'REQUIRED', 'DATASET_KEYS', 'validate_schema']


class OptionsError(ValueError):
    """An options file (or override) holds an unknown key, misses a required one, or cannot be read."""


# ------------------------------------------------------------------------------ reading
class SafeOrderedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (plain data only) that reads YAML 1.2 numbers: ``1e6`` is a float."""


SafeOrderedLoader.add_implicit_resolver(
    'tag:yaml.org,2002:float',
    re.compile(r'''^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+
                    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?)$''', re.X),
    list('-+0123456789.'))


def to_plain(obj: Any) -> Any:
    """OrderedDicts → dicts, tuples → lists (for JSON, checkpoints and YAML dumps)."""
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def parse_value(text: str) -> Any:
    """A ``--set`` value as YAML 1.2 reads it (``1e6`` → 1000000.0, ``[1, 2]`` → a list)."""
    return yaml.load(text, Loader=SafeOrderedLoader)


def load_options(path: str | os.PathLike, schema: Any = None, resolve_paths: bool = True) -> dict[str, Any]:
    """Read an options file safely; with ``schema``, also check it (see :func:`validate_schema`).

    ``datasets/...`` and ``runs/...`` values are read under ``$CROSSIQA_HOME``
    (:mod:`crossiqa_pyiqa.paths`; ``resolve_paths=False`` keeps them as written).
    """
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'Options file {path} does not exist.')
    try:
        with open(path) as f:
            opt = yaml.load(f, Loader=SafeOrderedLoader)
    except yaml.YAMLError as error:
        raise OptionsError(f'Options file {path} is not valid plain YAML: {error}') from None
    if not isinstance(opt, dict):
        raise OptionsError(f'Options file {path} does not hold a mapping at top level.')
    opt = to_plain(opt)
    if resolve_paths:
        opt = resolve_tree(opt)
    if schema is not None:
        validate_schema(opt, schema, source=path)
    return opt


def apply_overrides(opt: dict[str, Any], assignments: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` assignments (value parsed as YAML 1.2), like pyiqa's ``--force_yml``."""
    opt = copy.deepcopy(opt)
    for item in assignments:
        if '=' not in item:
            raise OptionsError(f'Override {item!r} is not of the form key.path=value')
        key, value = item.split('=', 1)
        node = opt
        parts = key.split('.')
        if not all(parts):
            raise OptionsError(f'Override {item!r}: empty key in {key!r}')
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise OptionsError(f'Override {item!r}: {part!r} is not a mapping in the options')
        try:
            node[parts[-1]] = parse_value(value)
        except yaml.YAMLError as error:
            raise OptionsError(f'Override {item!r}: the value is not valid YAML ({error})') from None
        node[parts[-1]] = resolve_tree(node[parts[-1]])  # datasets/... and runs/... as in files
    return opt


# ---------------------------------------------------------------------------- schemas
ANY = object()  # any value (a leaf, or a mapping checked elsewhere)


class MapOf:
    """A mapping with free keys (metric or dataset names) whose values all follow ``schema``."""

    def __init__(self, schema: Any) -> None:
        self.schema = schema


class Keys:
    """A mapping with known keys computed when needed (``valid()`` → key names; values not checked)."""

    def __init__(self, valid: Callable[[], Iterable[str]], what: str = '') -> None:
        self.valid, self.what = valid, what


REQUIRED = '__required__'

#: pyiqa dataset options (pyiqa/data/*) plus the plugin's own (distortion types, groups).
DATASET_KEYS = {k: ANY for k in (
    'name', 'type', 'dataroot_target', 'dataroot_ref', 'meta_info_file', 'split_file', 'split_index', 'split_ratio',
    'override_phase', 'phase', 'mos_range', 'mos_normalize', 'lower_better', 'img_range', 'augment', 'val_types',
    'val_num', 'list_imgs', 'mode', 'attribute', 'num_worker_per_gpu', 'batch_size_per_gpu', 'use_shuffle',
    'dataset_enlarge_ratio', 'prefetch_mode', 'pin_memory', 'persistent_workers', 'num_prefetch_queue', 'num_gpu',
    'distortion_type_column', 'distortion_type_regex', 'group_column', 'split_name', 'dist_type_regex')}


# ------------------------------------------------------------------------- validation
def _unknown(key: str, where: str, valid: Iterable[str], source: str) -> OptionsError:
    valid = sorted(str(v) for v in valid)
    close = difflib.get_close_matches(str(key), valid, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ''
    section = f'{where}.{key}' if where else str(key)
    return OptionsError(f"Unknown option '{section}'{source}{hint}; valid keys in "
                        f"{where or 'the top level'}: {valid}")


def _check(node: Any, schema: Any, where: str, source: str) -> None:
    if schema is ANY or node is None:
        return
    if isinstance(schema, MapOf):
        if not isinstance(node, dict):
            raise OptionsError(f"Option '{where}'{source} must be a mapping, got {type(node).__name__}")
        for key, value in node.items():
            _check(value, schema.schema, f'{where}.{key}' if where else str(key), source)
        return
    if isinstance(schema, Keys):
        if not isinstance(node, dict):
            raise OptionsError(f"Option '{where}'{source} must be a mapping, got {type(node).__name__}")
        valid = set(schema.valid())
        for key in node:
            if key not in valid:
                raise _unknown(key, where, valid, source)
        return
    if not isinstance(node, dict):
        raise OptionsError(f"Option '{where}'{source} must be a mapping of {sorted(k for k in schema if k != REQUIRED)},"
                           f' got {type(node).__name__} {node!r}')
    valid = [k for k in schema if k != REQUIRED]
    for key, value in node.items():
        if key not in schema or key == REQUIRED:
            raise _unknown(key, where, valid, source)
        _check(value, schema[key], f'{where}.{key}' if where else str(key), source)
    missing = sorted(k for k in schema.get(REQUIRED, ()) if k not in node or node[k] is None)
    if missing:
        raise OptionsError(f"Missing option(s) {[f'{where}.{k}' if where else k for k in missing]}{source}; "
                           f"the section {where or 'top level'} has keys {sorted(node)}")


def validate_schema(opt: Mapping[str, Any], schema: Any, source: str | None = None) -> None:
    """Raise :class:`OptionsError` for any key ``schema`` does not know, or a missing required one."""
    _check(dict(opt), schema, '', f' in {source}' if source else '')
