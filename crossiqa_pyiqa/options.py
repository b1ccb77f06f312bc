"""One reader and one validator for every options file of the plugin (the checker of every kind).

- Reading: YAML through a *safe* loader (no ``!!python/...`` tag can run code), key
  order kept, and numbers read as YAML 1.2 reads them: ``1e6``, ``1.5e-4`` and ``-2E3``
  are floats (PyYAML implements YAML 1.1, where they are strings, so a learning rate
  ``1e-4`` silently became the string ``'1e-4'``). ``--set key.path=value`` overrides
  use the same rules.
- Validation: each kind of file has a schema of known keys per section. An unknown key
  (``self_weigth``, ``manual_sed``) or a missing required one raises :class:`OptionsError`
  naming the key, its section, the file, a close match and the valid keys.
- Paths: ``datasets/...`` and ``runs/...`` values are read under ``$CROSSIQA_HOME``
  (default: the current directory; :mod:`crossiqa_pyiqa.paths`); other paths stay as written.

The reader and the checking machinery are :mod:`crossiqa_pyiqa.optionfile`; each schema
lives with the code that reads its kind of file (``train/options.py``,
``regression/options.py``, ``regression/diagnosis.py``, ``benchmark/metrics.py``). Kinds: ``pretrain``
(scripts/pretrain_crossiqa.py; per ``task``), ``regress`` (scripts/fit_regressor.py), ``diagnosis``
(scripts/fit_diagnosis.py), ``benchmark_metrics`` / ``benchmark_datasets``
(scripts/benchmark.py ``--metric_opt`` / ``--data_opt``) and ``train`` (pyiqa's own
training harness, which reads the file itself: check one with
``python -m crossiqa_pyiqa.options FILE``).
"""
from __future__ import annotations

import os
import sys
from typing import Any, Mapping

from crossiqa_pyiqa.optionfile import (DATASET_KEYS, MapOf, OptionsError, SafeOrderedLoader, apply_overrides,  # noqa: F401
                                       parse_value, to_plain, validate_schema)
from crossiqa_pyiqa.optionfile import load_options as _read_options

__all__ = ['OptionsError', 'load_options', 'apply_overrides', 'parse_value', 'to_plain', 'validate_options',
           'check_file', 'SafeOrderedLoader']

KINDS = ('benchmark_datasets', 'benchmark_metrics', 'diagnosis', 'pretrain', 'regress', 'train')


def load_options(path: str | os.PathLike, kind: str | None = None, resolve_paths: bool = True) -> dict[str, Any]:
    """Read an options file safely; with ``kind``, also validate it (see :func:`validate_options`).

    ``datasets/...`` and ``runs/...`` values are read under ``$CROSSIQA_HOME`` (:mod:`crossiqa_pyiqa.paths`).
    """
    opt = _read_options(path, resolve_paths=resolve_paths)
    if kind is not None:
        validate_options(opt, kind, source=str(path))
    return opt


def schema_for(kind: str, opt: Mapping[str, Any] | None = None) -> Any:
    if kind == 'pretrain':
        from crossiqa_pyiqa.train.options import pretrain_schema

        return pretrain_schema((opt or {}).get('task'))
    if kind == 'regress':
        from crossiqa_pyiqa.regression.options import regress_schema

        return regress_schema()
    if kind == 'diagnosis':
        from crossiqa_pyiqa.regression.diagnosis import diagnosis_schema

        return diagnosis_schema()
    if kind == 'benchmark_metrics':
        from crossiqa_pyiqa.benchmark.metrics import BENCHMARK_METRIC

        return MapOf(BENCHMARK_METRIC)
    if kind == 'benchmark_datasets':
        return MapOf(DATASET_KEYS)
    if kind == 'train':
        from crossiqa_pyiqa.train.options import train_schema

        return train_schema()
    raise ValueError(f'Unknown options kind {kind!r}; valid: {list(KINDS)}')


def validate_options(opt: Mapping[str, Any], kind: str, source: str | None = None) -> None:
    """Raise :class:`OptionsError` for any key the schema of ``kind`` does not know, or a missing required one."""
    validate_schema(opt, schema_for(kind, opt), source)


def guess_kind(path: str, opt: Mapping[str, Any]) -> str:
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
    for folder, kind in (('pretrain', 'pretrain'), ('regress', 'regress'), ('train', 'train')):
        if folder in parts[:-1]:
            return 'diagnosis' if kind == 'regress' and 'diagnosis' in opt else kind
    if 'benchmark' in parts[:-1]:
        first = next(iter(opt.values()), None)
        return 'benchmark_metrics' if isinstance(first, dict) and 'metric_opts' in first else 'benchmark_datasets'
    if 'model_type' in opt:
        return 'train'
    if 'diagnosis' in opt:
        return 'diagnosis'
    if 'regression' in opt or 'encoder' in opt:
        return 'regress'
    return 'pretrain'


def check_file(path: str, kind: str | None = None) -> str:
    """Read and validate one options file; returns the kind it was checked as."""
    opt = load_options(path)
    kind = kind or guess_kind(path, opt)
    validate_options(opt, kind, source=path)
    return kind


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog='python -m crossiqa_pyiqa.options',
                                     description='Check options files for unknown or missing keys.')
    parser.add_argument('files', nargs='+')
    parser.add_argument('--kind', default=None, help='pretrain | regress | diagnosis | benchmark_metrics | '
                        'benchmark_datasets | train (default: from the folder)')
    args = parser.parse_args(argv)
    bad = 0
    for path in args.files:
        try:
            kind = check_file(path, args.kind)
            print(f'ok ({kind}): {path}')
        except (OptionsError, FileNotFoundError) as error:
            print(f'error: {error}', file=sys.stderr)
            bad += 1
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
