"""Lay out the datasets the README uses under ``$CROSSIQA_HOME/datasets`` (default: ./datasets).

    python scripts/prepare_data.py NAME [NAME ...] [--from PATH ...] [--home DIR] [--force]

NAME is one of ``livec``, ``pristine``, ``pretext``, ``polyu`` or ``all``:

=========  ==========================================  ==================================================
name       written to                                  from (any ``--from`` that holds it)
=========  ==========================================  ==================================================
livec      ``datasets/livec/Images/`` +                the official ``ChallengeDB_release`` (folder, zip,
           ``meta_info_LIVEChallengeDataset.csv``      or a fetched snapshot of hqc0929/IQA-dataset)
pristine   ``datasets/pristine/{bsds500,kodak24,       a folder holding ``bsds500/``, ``kodak24/``,
           mcmaster}/``                                ``mcmaster/`` (default: ``../shared/data/pristine``)
pretext    ``datasets/pretext/imagenet/``,             snapshots of EliSchwartz/imagenet-sample-images and
           ``datasets/pretext/coco/``                  lightly-ai/coco128_yolo (short side >= 224 kept;
                                                       COCO de-duplicated by content)
polyu      ``datasets/polyu/CroppedImages/``           a snapshot of csjunxu/PolyU-Real-World-Noisy-Images-
                                                       Dataset (the ``*_real`` / ``*_mean`` pairs)
=========  ==========================================  ==================================================

A source (``--from``, repeatable) is a bare git repository as fetched (read with
``git ls-tree`` / ``git cat-file``, blob by blob, so a snapshot with some blobs missing
elsewhere still works), a folder, or a ``.zip`` / ``.tar[.gz|.bz2|.xz]`` archive. Each
dataset takes its files from the first source that holds them, found by their names.

Everything is read and checked (every image decoded, counts, pairs, CLIVE's MOS files)
in a staging folder next to the target before the dataset is moved into place, so a
broken source never leaves a partial dataset. A dataset already in place is kept unless
``--force``.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prepare_livec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAMES = ('livec', 'pristine', 'pretext', 'polyu')
IMAGE_EXT = r'\.(?:jpe?g|png|bmp|tiff?|ppm|pgm|webp)'
PRISTINE_SETS = ('bsds500', 'kodak24', 'mcmaster')
MIN_SHORT_SIDE = 224  # pretext photos: at least one 224-px crop
DEFAULT_SOURCES = {'pristine': [ROOT.parent / 'shared' / 'data' / 'pristine']}


class PrepareError(ValueError):
    """A source does not hold a complete, readable dataset (nothing has been written)."""


# ------------------------------------------------------------------------------ sources
class Source:
    """Files of a snapshot, folder or archive, by relative POSIX path."""

    label: str

    def files(self) -> list[str]:
        raise NotImplementedError

    def read(self, path: str) -> bytes | None:
        """The file's bytes, or None when the file is listed but its content is missing."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class FolderSource(Source):
    def __init__(self, folder: Path, label: str | None = None) -> None:
        self.folder, self.label = folder, label or str(folder)
        self._files: list[str] | None = None

    def files(self) -> list[str]:
        if self._files is None:
            out = []
            for dirpath, _, names in os.walk(self.folder, followlinks=True):
                for name in names:
                    out.append(Path(dirpath, name).relative_to(self.folder).as_posix())
            self._files = sorted(out)
        return self._files

    def read(self, path: str) -> bytes | None:
        try:
            return (self.folder / path).read_bytes()
        except OSError:
            return None


class ArchiveSource(FolderSource):
    """A zip or tar archive, unpacked into a temporary folder."""

    def __init__(self, archive: Path) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix='crossiqa-archive-')
        folder = Path(self._tmp.name)
        try:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as zf:
                    for member in zf.namelist():
                        if Path(member).is_absolute() or '..' in Path(member).parts:
                            raise PrepareError(f'{archive}: unsafe member path {member!r}')
                    zf.extractall(folder)
            else:
                with tarfile.open(archive) as tf:
                    members = [m for m in tf.getmembers() if m.isfile() or m.isdir()]
                    for m in members:
                        if Path(m.name).is_absolute() or '..' in Path(m.name).parts:
                            raise PrepareError(f'{archive}: unsafe member path {m.name!r}')
                    tf.extractall(folder, members=members)
        except (zipfile.BadZipFile, tarfile.TarError, OSError) as error:
            self._tmp.cleanup()
            raise PrepareError(f'{archive}: cannot unpack ({error})') from error
        super().__init__(folder, str(archive))

    def close(self) -> None:
        self._tmp.cleanup()


class GitSource(Source):
    """A (bare) git repository: the tree of ``rev``; blobs read one by one through ``git cat-file --batch``."""

    def __init__(self, git_dir: Path, rev: str = 'HEAD') -> None:
        self.git_dir, self.rev, self.label = git_dir, rev, f'{git_dir} ({rev})'
        out = self._git('ls-tree', '-r', '-z', '--full-tree', rev)
        self._blobs: dict[str, str] = {}
        for entry in out.split(b'\0'):
            if not entry:
                continue
            meta, path = entry.split(b'\t', 1)
            _, kind, sha = meta.split()
            if kind == b'blob':
                self._blobs[path.decode('utf-8', 'surrogateescape')] = sha.decode()
        self._proc: subprocess.Popen | None = None

    def _git(self, *args: str) -> bytes:
        result = subprocess.run(['git', f'--git-dir={self.git_dir}', *args], capture_output=True)
        if result.returncode:
            raise PrepareError(f'{self.label}: git {" ".join(args)} failed: {result.stderr.decode().strip()}')
        return result.stdout

    def files(self) -> list[str]:
        return sorted(self._blobs)

    def read(self, path: str) -> bytes | None:
        if self._proc is None:
            self._proc = subprocess.Popen(['git', f'--git-dir={self.git_dir}', 'cat-file', '--batch'],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        sha = self._blobs[path]
        self._proc.stdin.write(sha.encode() + b'\n')
        self._proc.stdin.flush()
        header = self._proc.stdout.readline().split()
        if len(header) < 3 or header[1] != b'blob':  # '<sha> missing': a blob absent from a partial snapshot
            return None
        size = int(header[2])
        data = self._proc.stdout.read(size)
        self._proc.stdout.read(1)  # the newline after the content
        return data

    def close(self) -> None:
        if self._proc is not None:
            self._proc.stdin.close()
            self._proc.wait()
            self._proc = None


def open_source(path: str | os.PathLike) -> Source:
    p = Path(path).expanduser()
    if not p.exists():
        raise PrepareError(f'--from {p}: no such file or folder')
    if p.is_dir():
        is_git = (p / 'HEAD').is_file() and (p / 'objects').is_dir()
        if is_git:
            return GitSource(p)
        if (p / '.git').exists():
            return GitSource(p / '.git')
        return FolderSource(p)
    if zipfile.is_zipfile(p) or tarfile.is_tarfile(p):
        return ArchiveSource(p)
    raise PrepareError(f'--from {p}: not a git snapshot, folder, zip or tar archive')


# ------------------------------------------------------------------------------ checks
def image_size(data: bytes, where: str) -> tuple[int, int]:
    """(width, height) of a fully decoded image; PrepareError naming the file otherwise."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.size
    except Exception as error:  # Pillow raises many types for broken files
        raise PrepareError(f'{where}: not a readable image ({error})') from error


@dataclass
class Planned:
    dest: str  # relative to the dataset folder
    source: Source
    path: str


def _matching(source: Source, pattern: str) -> list[str]:
    rx = re.compile(pattern, re.I)
    return [f for f in source.files() if rx.search(f) and '__MACOSX' not in f.split('/')]


def _pick(sources: list[Source], name: str, pattern: str, what: str) -> tuple[Source, list[str]]:
    for source in sources:
        found = _matching(source, pattern)
        if found:
            return source, found
    tried = ', '.join(s.label for s in sources) or 'no --from given'
    raise PrepareError(f'{name}: no source holds {what} (tried: {tried})')


def _read_checked(source: Source, path: str) -> bytes:
    data = source.read(path)
    if data is None:
        raise PrepareError(f'{source.label}: {path} is listed but its content is missing from the snapshot')
    return data


def _stage_files(plan: list[Planned], staging: Path, min_short_side: int = 0,
                 dedup: bool = False) -> tuple[int, int, int]:
    """Read, decode and write each planned file under ``staging``; returns (written, too small, duplicates)."""
    seen: set[str] = set()
    written = small = dups = 0
    for item in plan:
        data = _read_checked(item.source, item.path)
        digest = hashlib.sha256(data).hexdigest()
        if dedup and digest in seen:
            dups += 1
            continue
        seen.add(digest)
        w, h = image_size(data, f'{item.source.label}: {item.path}')
        if min(w, h) < min_short_side:
            small += 1
            continue
        dst = staging / item.dest
        if dst.exists():
            dst = dst.with_name(f'{Path(item.path).parent.name}_{dst.name}')
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
        written += 1
    return written, small, dups


# ------------------------------------------------------------------------------ datasets
def stage_livec(sources: list[Source], staging: Path) -> str:
    source, found = _pick(sources, 'livec', r'(^|/)ChallengeDB_release/Data/AllMOS_release\.mat$',
                          'ChallengeDB_release/Data/AllMOS_release.mat')
    prefix = min(found, key=len)[:-len('Data/AllMOS_release.mat')]
    if isinstance(source, FolderSource):
        release = source.folder / prefix
    else:
        release = staging / 'release'
        wanted = [f for f in source.files() if f.startswith(prefix) and f[len(prefix):].split('/')[0] in ('Data', 'Images')
                  and not f.endswith('.DS_Store')]
        for f in wanted:
            data = source.read(f)
            if data is None:  # a missing image is reported by read_release below, with the others
                continue
            dst = release / f[len(prefix):]
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data)
    try:
        rows = prepare_livec.read_release(release)
    except prepare_livec.ReleaseError as error:
        raise PrepareError(f'livec: {error}') from None
    for row in rows:
        image_size(Path(row['path']).read_bytes(), f"livec: {row['path']}")
    prepare_livec.write_dataset(rows, staging / 'out', mode='copy')
    shutil.rmtree(staging / 'release', ignore_errors=True)
    return (f"{len(rows)} images ({len(rows) - prepare_livec.N_TRAINING} test + {prepare_livec.N_TRAINING} "
            f"training) + {prepare_livec.META_NAME}, from {source.label}")


def stage_pristine(sources: list[Source], staging: Path) -> str:
    pattern = rf'(^|/)({"|".join(PRISTINE_SETS)})/[^/]+{IMAGE_EXT}$'
    source, found = _pick(sources, 'pristine', pattern, f'{"/, ".join(PRISTINE_SETS)}/ image folders')
    by_set: dict[str, list[str]] = {}
    for f in found:
        by_set.setdefault(f.split('/')[-2].lower(), []).append(f)
    missing = [s for s in PRISTINE_SETS if s not in by_set]
    if missing:
        raise PrepareError(f'pristine: {source.label} has no images in {missing}')
    plan = [Planned(f'{s}/{Path(f).name}', source, f) for s in PRISTINE_SETS for f in by_set[s]]
    written, _, _ = _stage_files(plan, staging / 'out')
    counts = ', '.join(f'{s} {len(by_set[s])}' for s in PRISTINE_SETS)
    return f'{written} images ({counts}), from {source.label}'


def stage_pretext(sources: list[Source], staging: Path) -> str:
    inet, inet_files = _pick(sources, 'pretext', rf'(^|/)n\d{{8}}_[^/]+{IMAGE_EXT}$',
                             'ImageNet sample photos (nXXXXXXXX_*.JPEG, EliSchwartz/imagenet-sample-images)')
    coco, coco_files = _pick(sources, 'pretext', rf'(^|/)images/(train|val)2017/[^/]+{IMAGE_EXT}$',
                             'COCO photos (images/train2017, images/val2017: lightly-ai/coco128_yolo)')
    out = staging / 'out'
    n_inet, small_inet, _ = _stage_files([Planned(f'imagenet/{Path(f).name}', inet, f) for f in inet_files], out,
                                         MIN_SHORT_SIDE)
    n_coco, small_coco, dups = _stage_files([Planned(f'coco/{Path(f).name}', coco, f) for f in coco_files], out,
                                            MIN_SHORT_SIDE, dedup=True)
    if not n_inet or not n_coco:
        raise PrepareError(f'pretext: no photo with a short side >= {MIN_SHORT_SIDE} in imagenet ({n_inet}) '
                           f'or coco ({n_coco})')
    return (f'imagenet {n_inet} of {len(inet_files)} (short side >= {MIN_SHORT_SIDE}; from {inet.label}), '
            f'coco {n_coco} of {len(coco_files)} ({dups} duplicates by content, {small_coco} too small; '
            f'from {coco.label})')


def stage_polyu(sources: list[Source], staging: Path) -> str:
    source, found = _pick(sources, 'polyu', rf'(^|/)CroppedImages/[^/]+_(real|mean){IMAGE_EXT}$',
                          'CroppedImages/*_real.* and *_mean.* (csjunxu/PolyU-Real-World-Noisy-Images-Dataset)')
    sides: dict[str, dict[str, str]] = {}
    for f in found:
        stem = Path(f).stem
        key, side = stem.rsplit('_', 1)
        sides.setdefault(key, {})[side.lower()] = f
    unpaired = sorted(Path(next(iter(v.values()))).name for v in sides.values() if len(v) != 2)
    if unpaired:
        raise PrepareError(f'polyu: {len(unpaired)} image(s) without their _real/_mean partner, e.g. {unpaired[:5]}')
    plan = [Planned(f'CroppedImages/{Path(f).name}', source, f) for f in found]
    written, _, _ = _stage_files(plan, staging / 'out')
    return f'{written} files ({len(sides)} noisy/clean pairs), from {source.label}'


STAGERS = {'livec': stage_livec, 'pristine': stage_pristine, 'pretext': stage_pretext, 'polyu': stage_polyu}


def prepare(name: str, sources: list[Source], datasets_dir: Path, force: bool = False) -> str:
    """Stage, check and move one dataset into ``datasets_dir / name``; returns a one-line summary."""
    target = datasets_dir / name
    if target.exists() and any(target.iterdir()) and not force:
        return f'{name}: {target} already exists (kept; --force rebuilds it)'
    datasets_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f'.prepare-{name}-', dir=datasets_dir))
    try:
        summary = STAGERS[name](sources, staging)
        old = None
        if target.exists() or target.is_symlink():
            old = datasets_dir / f'.old-{name}-{os.getpid()}'
            os.replace(target, old)
        os.replace(staging / 'out', target)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return f'{name}: {target}: {summary}'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('names', nargs='+', choices=NAMES + ('all',), metavar='NAME',
                        help=f'{", ".join(NAMES)} or all')
    parser.add_argument('--from', dest='sources', action='append', default=[], metavar='PATH',
                        help='a fetched git snapshot, folder or archive holding a dataset (repeatable)')
    parser.add_argument('--home', default=None,
                        help='where datasets/ is made (default: $CROSSIQA_HOME, else the current directory)')
    parser.add_argument('--force', action='store_true', help='rebuild datasets that are already in place')
    args = parser.parse_args(argv)
    names = list(NAMES) if 'all' in args.names else list(dict.fromkeys(args.names))
    home = Path(args.home or os.environ.get('CROSSIQA_HOME') or '.').expanduser()
    sources: list[Source] = []
    status = 0
    try:
        sources = [open_source(p) for p in args.sources]
        for name in names:
            extra = [FolderSource(p) for p in DEFAULT_SOURCES.get(name, []) if p.is_dir()]
            try:
                print(prepare(name, sources + extra, home / 'datasets', args.force), flush=True)
            except PrepareError as error:
                print(f'prepare_data: error: {error}', file=sys.stderr)
                status = 1
    except PrepareError as error:
        print(f'prepare_data: error: {error}', file=sys.stderr)
        status = 1
    finally:
        for source in sources:
            source.close()
    return status


if __name__ == '__main__':
    sys.exit(main())
