"""Lay out the official LIVE In-the-Wild Challenge release (CLIVE) in pyiqa's layout.

    python scripts/prepare_livec.py SRC OUT [--link | --copy]

(`python scripts/prepare_data.py livec --from SRC` does the same into the data layout,
``datasets/livec`` under ``$CROSSIQA_HOME``, also from a fetched snapshot or a zip.)

SRC is the unpacked ``ChallengeDB_release`` folder (``Images/``, ``Images/trainingImages/``,
``Data/AllImages_release.mat``, ``Data/AllMOS_release.mat``, ``Data/AllStdDev_release.mat``).
OUT receives ``Images/`` (flat: the 1162 test images and the 7 training images) and
``meta_info_LIVEChallengeDataset.csv`` (``img_name,mos,std``, in the release's own order,
which puts the 7 training images first). pyiqa's ``LIVEChallengeDataset`` drops the first 7
rows, so use it with ``dataroot_target: OUT/Images`` and ``meta_info_file: OUT/meta_info_...csv``.

Everything is checked before anything is written, so a broken release never yields a
partial dataset.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np

MAT_FILES = {  # file stem == variable name in the release
    'names': 'AllImages_release',
    'mos': 'AllMOS_release',
    'std': 'AllStdDev_release',
}
N_TRAINING = 7  # t1..t7.bmp, used to train the study's subjects; pyiqa skips them
META_NAME = 'meta_info_LIVEChallengeDataset.csv'


class ReleaseError(ValueError):
    """The release folder is not a complete, consistent LIVE Challenge release."""


def _load_mat(path: Path, var: str) -> np.ndarray:
    import scipy.io as sio

    if not path.is_file():
        raise ReleaseError(f'Missing {path} (expected in the official release under Data/).')
    try:
        mat = sio.loadmat(str(path))
    except Exception as error:  # scipy raises several types for broken files
        raise ReleaseError(f'Cannot read {path}: {error}') from error
    if var not in mat:
        found = sorted(k for k in mat if not k.startswith('__'))
        raise ReleaseError(f'{path} has no variable {var!r} (found {found}).')
    return mat[var]


def _names(arr: np.ndarray, path: Path) -> list[str]:
    """The release stores names as a (N, 1) cell array of 1-element string arrays."""
    names = []
    for i, item in enumerate(np.asarray(arr, dtype=object).ravel()):
        while isinstance(item, np.ndarray) and item.dtype == object and item.size == 1:
            item = item.ravel()[0]
        if isinstance(item, np.ndarray):
            item = ''.join(item.ravel().tolist()) if item.dtype.kind == 'U' else None
        if not isinstance(item, str) or not item.strip():
            raise ReleaseError(f'{path}: entry {i + 1} is not an image name ({item!r}).')
        names.append(item.strip())
    return names


def read_release(src: str | os.PathLike) -> list[dict]:
    """Rows ``{name, mos, std, path}`` in release order, every one checked."""
    src = Path(src)
    if not src.is_dir():
        raise ReleaseError(f'Release folder {src} does not exist.')
    data = {key: _load_mat(src / 'Data' / f'{var}.mat', var) for key, var in MAT_FILES.items()}
    names = _names(data['names'], src / 'Data' / 'AllImages_release.mat')
    mos = np.asarray(data['mos'], dtype=np.float64).ravel()
    std = np.asarray(data['std'], dtype=np.float64).ravel()
    if not (len(names) == len(mos) == len(std)):
        raise ReleaseError(f'Count mismatch in {src / "Data"}: {len(names)} image names, {len(mos)} MOS values, '
                           f'{len(std)} standard deviations.')
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ReleaseError(f'Duplicate image names in AllImages_release.mat: {dup[:10]}')
    training = [f't{i}.bmp' for i in range(1, N_TRAINING + 1)]
    if names[:N_TRAINING] != training:
        raise ReleaseError(f'The first {N_TRAINING} names must be the training images {training} '
                           f'(pyiqa drops the first {N_TRAINING} rows); got {names[:N_TRAINING]}.')
    rows, missing = [], []
    for i, (name, m, s) in enumerate(zip(names, mos, std)):
        if not (math.isfinite(m) and math.isfinite(s)):
            raise ReleaseError(f'Non-finite MOS/std for image {name} (entry {i + 1}): mos={m}, std={s}.')
        folder = src / 'Images' / ('trainingImages' if i < N_TRAINING else '')
        path = folder / name
        if not path.is_file():
            missing.append(str(path))
        rows.append({'name': name, 'mos': float(m), 'std': float(s), 'path': path})
    if missing:
        raise ReleaseError(f'{len(missing)} image(s) listed in the release are missing, e.g. {missing[:5]}')
    return rows


def write_dataset(rows: list[dict], out: str | os.PathLike, mode: str = 'link') -> Path:
    """Write ``OUT/Images/*`` (symlinks or copies) and the meta-info CSV; returns the CSV path."""
    if mode not in ('link', 'copy'):
        raise ValueError(f"mode must be 'link' or 'copy', got {mode!r}")
    out = Path(out)
    images = out / 'Images'
    images.mkdir(parents=True, exist_ok=True)
    for row in rows:
        dst = images / row['name']
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        if mode == 'link':
            os.symlink(row['path'].resolve(), dst)
        else:
            shutil.copy2(row['path'], dst)
    meta = out / META_NAME
    tmp = meta.with_suffix('.csv.tmp')
    with open(tmp, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['img_name', 'mos', 'std'])
        for row in rows:
            writer.writerow([row['name'], repr(row['mos']), repr(row['std'])])
    os.replace(tmp, meta)
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='unpacked ChallengeDB_release folder')
    parser.add_argument('out', help='output folder (Images/ + meta_info CSV)')
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--link', dest='mode', action='store_const', const='link', help='symlink images (default)')
    group.add_argument('--copy', dest='mode', action='store_const', const='copy', help='copy images')
    parser.set_defaults(mode='link')
    args = parser.parse_args(argv)
    try:
        rows = read_release(args.src)
        meta = write_dataset(rows, args.out, args.mode)
    except ReleaseError as error:
        print(f'prepare_livec: error: {error}', file=sys.stderr)
        return 1
    print(f'Wrote {len(rows)} images ({len(rows) - N_TRAINING} test + {N_TRAINING} training, {args.mode}) to '
          f'{Path(args.out) / "Images"} and {meta}.\n'
          f'pyiqa options: type: LIVEChallengeDataset, dataroot_target: {Path(args.out) / "Images"}, '
          f'meta_info_file: {meta}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
