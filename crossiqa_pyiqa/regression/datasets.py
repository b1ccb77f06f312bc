"""pyiqa datasets, checked before use and read at native resolution.

Datasets are built by pyiqa's own ``build_dataset`` from pyiqa dataset options, so
every dataset pyiqa supports works. pyiqa itself fails late and vaguely on a bad
meta-info file (a ``ValueError`` from ``float()`` with no row, a missing image only
when it is read), so the meta-info CSV is checked first and every error names the
file and the row: a benchmark must never silently run on part of a dataset.
Paths ``datasets/...`` are read under ``$CROSSIQA_HOME`` (:mod:`crossiqa_pyiqa.paths`); a
missing dataset of that layout names the command that prepares it.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
from copy import deepcopy
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from crossiqa_pyiqa.paths import dataset_of, resolve_tree


class DatasetError(ValueError):
    """A dataset's options, meta-info file or images are unusable."""


#: Augmentations change pixels (resize/crop/flip...): quality features must see the image as it is.
NATIVE_FORBIDDEN = ('augment',)


def _dataset_class(opt: Mapping[str, Any]):
    import pyiqa.data
    from pyiqa.utils.registry import DATASET_REGISTRY

    if 'type' not in opt:
        raise DatasetError(f'Dataset options {dict(opt)} have no `type` (e.g. GeneralNRDataset).')
    lazy_import = getattr(pyiqa.data, '_lazy_import_dataset', None)  # pyiqa >= 0.1.16; older ones import all
    if opt['type'] not in DATASET_REGISTRY and lazy_import is not None:
        lazy_import(opt['type'])
    try:
        return DATASET_REGISTRY.get(opt['type'])
    except KeyError:
        raise DatasetError(f"Unknown pyiqa dataset type {opt['type']!r}.") from None


def dataset_kind(opt: Mapping[str, Any]) -> str:
    """'FR' (reference, distorted, mos columns), 'NR' (image, mos) or 'other' (not checked here)."""
    from pyiqa.data.general_fr_dataset import GeneralFRDataset
    from pyiqa.data.general_nr_dataset import GeneralNRDataset

    cls = _dataset_class(opt)
    if issubclass(cls, GeneralFRDataset):
        return 'FR'
    if issubclass(cls, GeneralNRDataset):
        return 'NR'
    return 'other'


def check_meta_info(opt: Mapping[str, Any]) -> int:
    """Validate the meta-info CSV of NR/FR datasets; returns the number of rows. Errors name file and row."""
    import pandas as pd

    opt = resolve_tree(dict(opt))
    kind = dataset_kind(opt)
    if kind == 'other':
        return -1
    for key in ('meta_info_file', 'dataroot_target'):
        if not opt.get(key):
            raise DatasetError(f"Dataset {opt.get('name', '?')!r}: option `{key}` is required.")
    meta = str(opt['meta_info_file'])
    if not os.path.isfile(meta):
        name = dataset_of(meta)
        how = f': prepare the dataset with `python scripts/prepare_data.py {name}`' if name else '.'
        raise DatasetError(f'Meta-info file {meta} does not exist{how}')
    try:
        table = pd.read_csv(meta)
    except pd.errors.EmptyDataError:
        raise DatasetError(f'Meta-info file {meta} is empty (expected a header and one row per image).') from None
    except Exception as error:
        raise DatasetError(f'Meta-info file {meta} cannot be parsed as CSV: {error}') from error
    if len(table) == 0:
        raise DatasetError(f'Meta-info file {meta} has a header but no rows.')
    name_cols = (0,) if kind == 'NR' else (0, 1)
    mos_col = 1 if kind == 'NR' else 2
    if table.shape[1] <= mos_col:
        raise DatasetError(f'Meta-info file {meta} has {table.shape[1]} column(s); a {kind} dataset needs '
                           f'{"img_name, mos" if kind == "NR" else "ref_name, dist_name, mos"}.')
    roots = [opt['dataroot_target']] if kind == 'NR' else [opt.get('dataroot_ref') or opt['dataroot_target'],
                                                           opt['dataroot_target']]
    problems = []
    for i, row in enumerate(table.itertuples(index=False)):
        line = i + 2  # 1-based, after the header line
        for col, root in zip(name_cols, roots):
            name = row[col]
            if not isinstance(name, str) or not name:
                problems.append(f'{meta}, line {line}: image name {name!r} is not a file name')
            elif not os.path.isfile(os.path.join(root, name)):
                problems.append(f'{meta}, line {line}: image {os.path.join(root, name)} does not exist')
        try:
            value = float(row[mos_col])
        except (TypeError, ValueError):
            problems.append(f'{meta}, line {line}: MOS {row[mos_col]!r} is not a number')
            continue
        if not math.isfinite(value):
            problems.append(f'{meta}, line {line}: MOS {row[mos_col]!r} is not finite')
    if problems:
        more = f' (and {len(problems) - 10} more)' if len(problems) > 10 else ''
        raise DatasetError(f'{len(problems)} problem(s) in dataset {opt.get("name", meta)!r}:\n  '
                           + '\n  '.join(problems[:10]) + more)
    return len(table)


def build_iqa_dataset(opt: Mapping[str, Any]):
    """Check, then build with pyiqa's ``build_dataset``; images stay at their native size."""
    from pyiqa.data import build_dataset

    opt = resolve_tree(deepcopy(dict(opt)))  # datasets/... under $CROSSIQA_HOME, also for pyiqa's builder
    bad = [k for k in NATIVE_FORBIDDEN if opt.get(k)]
    if bad:
        raise DatasetError(f"Dataset {opt.get('name', '?')!r}: remove {bad} from its options; quality features "
                           'are computed on images at their native resolution (no resize, crop or flip).')
    opt.setdefault('name', os.path.basename(str(opt.get('meta_info_file', 'dataset'))))
    opt.setdefault('phase', 'test')
    check_meta_info(opt)
    try:
        dataset = build_dataset(opt)
    except Exception as error:
        raise DatasetError(f"pyiqa could not build dataset {opt['name']!r} ({opt['type']}): {error}") from error
    if len(dataset) == 0:
        raise DatasetError(f"Dataset {opt['name']!r} has no images after pyiqa's filtering "
                           f"(phase {opt['phase']!r}, split options).")
    return dataset


@dataclass
class DatasetRecords:
    """What the protocols need about each image, aligned with the dataset's indices."""

    name: str
    paths: list[str]
    mos: np.ndarray
    groups: list[str] | None  # reference image per row (content-disjoint splits), or None
    types: list[str] | None  # distortion type per row, or None
    identity: str  # hash of (paths, MOS, file sizes): keys the on-disk caches

    def __len__(self) -> int:
        return len(self.paths)


def _column_by_path(opt: Mapping[str, Any], column: str, path_col: int, root: str) -> dict[str, str]:
    import pandas as pd

    table = pd.read_csv(opt['meta_info_file'])
    if column not in table.columns:
        raise DatasetError(f"{opt['meta_info_file']} has no column {column!r} (columns: {list(table.columns)}).")
    return {os.path.join(root, str(r[path_col])): str(v) for r, v in zip(table.values, table[column])}


def dataset_records(dataset, opt: Mapping[str, Any]) -> DatasetRecords:
    """Paths, MOS, reference groups and distortion types of a built pyiqa dataset.

    Distortion types come from the options ``distortion_type_column`` (a meta-info column)
    or ``distortion_type_regex`` (one capture group matched against the image file name);
    groups from the reference column of FR datasets or ``group_column``.
    """
    opt = resolve_tree(dict(opt))
    kind = dataset_kind(opt)
    rows = dataset.paths_mos
    if kind == 'FR':
        paths = [str(r[1]) for r in rows]
        groups = [str(r[0]) for r in rows]
        mos = [r[2] for r in rows]
        path_col, root = 1, opt['dataroot_target']
    else:
        paths = [str(r[0]) for r in rows]
        groups = None
        mos = [r[1] for r in rows]
        path_col, root = 0, opt.get('dataroot_target', '')
    if opt.get('group_column'):
        lookup = _column_by_path(opt, opt['group_column'], path_col, root)
        groups = [lookup[p] for p in paths]
    types = None
    if opt.get('distortion_type_column'):
        lookup = _column_by_path(opt, opt['distortion_type_column'], path_col, root)
        types = [lookup[p] for p in paths]
    elif opt.get('distortion_type_regex'):
        pattern = re.compile(opt['distortion_type_regex'])
        types = []
        for p in paths:
            match = pattern.search(os.path.basename(p))
            if not match:
                raise DatasetError(f"distortion_type_regex {pattern.pattern!r} does not match image {p}")
            types.append(match.group(1) if match.groups() else match.group(0))
    mos = np.asarray(mos, dtype=np.float64)
    h = hashlib.sha256()
    for p, m in zip(paths, mos):
        size = os.path.getsize(p) if os.path.exists(p) else -1
        h.update(f'{p}\t{m!r}\t{size}\n'.encode())
    return DatasetRecords(name=str(opt.get('name', 'dataset')), paths=paths, mos=mos, groups=groups, types=types,
                          identity=h.hexdigest()[:16])


def _subset(records: DatasetRecords, keep: np.ndarray) -> DatasetRecords:
    pick = lambda xs: None if xs is None else [xs[i] for i in keep]  # noqa: E731
    return DatasetRecords(name=records.name, paths=pick(records.paths), mos=records.mos[keep],
                          groups=pick(records.groups), types=pick(records.types), identity=records.identity)


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def fit_records(records: DatasetRecords, train_ratio: float = 0.8, cv_folds: int = 5,
                min_test: int = 5, log=print) -> tuple[DatasetRecords, np.ndarray]:
    """Rows fit to train a head on: ``(records, kept indices)``; raises :class:`DatasetError` otherwise.

    - The same image (same file, or the same bytes under another name) listed twice would
      sit in a training and a test split at once: duplicates that agree on the MOS are
      dropped (first kept, the count printed); duplicates with different MOS are an error.
    - A constant MOS cannot rank anything (SRCC is undefined); an error.
    - Too few images for the protocol (``min_test`` test images per split, two per CV fold
      in training): an error naming the numbers.
    """
    by_content: dict[str, list[int]] = {}
    for i, p in enumerate(records.paths):
        key = _file_digest(p) if os.path.isfile(p) else os.path.realpath(p)
        by_content.setdefault(key, []).append(i)
    conflicts, dropped, merged = [], [], []
    mos_merged = records.mos.copy()
    for rows in by_content.values():
        if len(rows) < 2:
            continue
        values = records.mos[rows]
        same_file = len({os.path.realpath(records.paths[i]) for i in rows}) < len(rows)
        if np.allclose(values, values[0], rtol=1e-9, atol=1e-9):
            dropped.extend(rows[1:])
        elif not same_file:
            # two files of the release with identical bytes, rated separately (CLIVE's 246.bmp and
            # 333.bmp): one image with two ratings, kept once with their mean
            mos_merged[rows[0]] = float(values.mean())
            dropped.extend(rows[1:])
            merged.append(f'{", ".join(os.path.basename(records.paths[i]) for i in rows)} '
                          f'(MOS {", ".join(f"{v:g}" for v in values)} -> {values.mean():g})')
        else:
            conflicts.append(f'{", ".join(records.paths[i] for i in rows[:4])}'
                             f'{" ..." if len(rows) > 4 else ""} (MOS {", ".join(f"{records.mos[i]:g}" for i in rows[:4])})')
    if conflicts:
        raise DatasetError(f'Dataset {records.name!r}: {len(conflicts)} image(s) listed more than once with different '
                           'MOS (the same file, or identical bytes under other names); fix the meta-info file:\n  '
                           + '\n  '.join(conflicts[:10]) + (f'\n  ... and {len(conflicts) - 10} more'
                                                             if len(conflicts) > 10 else ''))
    keep = np.asarray(sorted(set(range(len(records))) - set(dropped)), dtype=np.int64)
    if merged:
        log(f'{records.name}: {len(merged)} image(s) stored twice under different names with different MOS, kept '
            'once with the mean MOS: ' + '; '.join(merged[:5]))
        records = DatasetRecords(name=records.name, paths=records.paths, mos=mos_merged, groups=records.groups,
                                 types=records.types, identity=records.identity)
    if dropped:
        log(f'{records.name}: dropped {len(dropped)} duplicate row(s) (an image listed more than once; a duplicate '
            f'would sit in a training and a test split at once); {len(keep)} images remain.')
        records = _subset(records, keep)
    mos = records.mos
    if len(mos) and float(np.ptp(mos)) <= 1e-12 * max(1.0, float(np.abs(mos).max())):
        raise DatasetError(f'Dataset {records.name!r}: every image has the same MOS ({mos[0]:g}); a head fitted on it '
                           'cannot rank images (SRCC is undefined). Check the MOS column of the meta-info file.')
    units = len(set(records.groups)) if records.groups is not None else len(records)
    n_train = int(round(units * train_ratio))
    n_test = units - n_train
    what = 'reference images' if records.groups is not None else 'images'
    if n_test < min_test or n_train < 2 * cv_folds:
        raise DatasetError(
            f'Dataset {records.name!r} has {units} {what}: too few for the protocol ({n_train} training and {n_test} '
            f'test {what} per split; needs at least {min_test} test {what} and {2 * cv_folds} for {cv_folds}-fold '
            f'alpha selection, i.e. about {max(math.ceil(min_test / (1 - train_ratio)), math.ceil(2 * cv_folds / train_ratio))} '
            f'{what}).')
    return records, keep
